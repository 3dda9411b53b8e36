"""``explain.py calibrate``: temperature, thresholds, conformal sets and selective classification of a run.

    python explain.py calibrate --run 0007 --alpha 0.1 --sensitivity 0.9 --specificity 0.9
    python -m medscope.app.explain_calibrate --run 0007        (the same, on its own)

The command layer of :func:`medscope.calibration.analysis.analyze_calibration`:
it opens the run, reads the test logits that ``train.py`` stored in
``inference_outputs.pt``, computes the validation logits with one forward pass
of ``best.pt`` (cached in ``calibration/val_outputs.pt`` and reused while
``best.pt`` is unchanged), reads the per-image MC-dropout measures of
``uncertainty/`` when they belong to the test split of ``best.pt``, and then
writes ``calibration/`` as a whole (staged, then swapped in), records its files in
run.json and prints a summary.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from medscope import atomic, checkpoints, data, limits, runs, tasks
from medscope.app import cli
from medscope.calibration import analysis, plots, report
from medscope.errors import UsageError

CREATED_BY = "explain.py calibrate"
# the files of calibration/ (named here only)
FILES = {
    "summary": "calibration_summary.json",
    "temperature": "temperature.json",
    "val_outputs": "val_outputs.pt",
    "thresholds": "thresholds.csv",
    "conformal": "conformal.csv",
    "conformal_per_class": "conformal_per_class.csv",
    "conformal_sets": "conformal_sets.csv",
    "selective": "selective.csv",
    "selective_curves": "selective_curves.csv",
    "reliability": "reliability_bins.csv",
    "reliability_png": "reliability_diagram.png",
    "risk_coverage_png": "risk_coverage.png",
    "coverage_png": "conformal_coverage.png",
    "report": "calibration_report.md",
}
# files of uncertainty/ read here; medscope.explain.uncertainty writes (and names) them
UNCERTAINTY_PER_IMAGE = "uncertainty_per_image.csv"
UNCERTAINTY_SUMMARY = "uncertainty_summary.json"
# confidence (1 - H/log K) ranks images exactly as the predictive entropy does, so it is left out
MC_COLUMNS = ("predictive_entropy", "expected_entropy", "mutual_information", "std_predicted_probability")
CACHE_VERSION = 1
RATES = analysis.RATES


# --------------------------------------------------------------------------- arguments

def _open_unit(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text}")
    return value


def _target(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def add_arguments(parser) -> None:
    """The flags of ``explain.py calibrate``."""
    cli.add_common_args(parser, run_arg="one")
    parser.add_argument("--batch-size", type=cli.int_in_range(1, limits.BATCH_SIZE_MAX), default=256,
                        help=f"images per batch of the validation pass, at most {limits.BATCH_SIZE_MAX} (default: 256)")
    parser.add_argument("--alpha", type=_open_unit, default=0.1,
                        help="conformal miscoverage: sets hold the true class for at least 1 - alpha of images "
                             "(default: 0.1)")
    parser.add_argument("--sensitivity", type=_target, default=0.9,
                        help="target sensitivity of the screening threshold, chosen on validation (default: 0.9)")
    parser.add_argument("--specificity", type=_target, default=0.9,
                        help="target specificity of the confirmation threshold, chosen on validation (default: 0.9)")
    parser.add_argument("--bins", type=cli.int_in_range(1, limits.BINS_MAX), default=15,
                        help=f"confidence bins of the ECE and the reliability diagram, at most {limits.BINS_MAX} "
                             "(default: 15)")
    parser.add_argument("--bootstrap", type=cli.int_in_range(1, limits.RESAMPLES_MAX), default=2000, metavar="N",
                        help=f"bootstrap resamples of the test split behind every interval, at most "
                             f"{limits.RESAMPLES_MAX} (default: 2000)")


def main(argv=None) -> int:
    """Parse ``argv`` (the flags of :func:`add_arguments`) and run; the entry point before registration."""
    parser = cli.ArgumentParser(prog="explain.py calibrate",
                                description="Temperature scaling, decision thresholds, conformal prediction sets "
                                            "and selective classification of a trained run.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


# --------------------------------------------------------------------------- opening the run

def _config(run: runs.Run) -> dict:
    cfg = run.info().get("config") or {}
    if "dataset" not in cfg and run.layout.best_pt.is_file():
        cfg = checkpoints.load(run.layout.best_pt).get("config") or {}
    if "dataset" not in cfg:
        raise UsageError(f"{run.path}: neither run.json nor best.pt names the dataset; is this a medscope run?")
    return cfg


def _test_outputs(run: runs.Run, info: data.DatasetInfo) -> dict:
    """Test logits and labels of ``inference_outputs.pt``, checked."""
    path = run.layout.inference_outputs
    if not path.is_file():
        raise UsageError(f"{run.path} has no {path.name}: train.py writes it when training finishes "
                         f"(finish the run with: python train.py --resume {run.path})")
    from medscope.analysis.outputs import read_outputs

    outputs = read_outputs(path, task=info.task, num_classes=info.num_classes, required=("logits", "labels"),
                           fix="recompute it with analyze_inference.py")
    if outputs.get("split", "test") != "test":
        raise UsageError(f"{path} holds the {outputs['split']} split, not test; recompute it with analyze_inference.py")
    return {"logits": outputs["logits"].double().numpy(), "labels": _labels(outputs["labels"]), "best_epoch": outputs.get("best_epoch"),
            "tta": bool(outputs.get("tta", False))}


def file_key(path: Path) -> dict:
    """What identifies a checkpoint's content: its size and SHA-256."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"bytes": path.stat().st_size, "sha256": digest}


def _read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
        return None
    ok = isinstance(cached, dict) and isinstance(cached.get("key"), dict) and all(
        isinstance(cached.get(k), torch.Tensor) for k in ("logits", "labels"))
    return cached if ok else None


def validation_outputs(run: runs.Run, info: data.DatasetInfo, cfg: dict, args, device: torch.device) -> dict:
    """Validation logits and labels of ``best.pt``: from the cache when its key matches, else one forward pass
    (``"cache"`` then holds what to save as the new cache, with the rest of ``calibration/``).

    The key holds the checkpoint's size and SHA-256, the dataset file and its
    MD5, and the precision and device kind of the pass (those of the run's own
    evaluation, :func:`medscope.train.loop.evaluation_settings`, on this
    device), so a retrained ``best.pt`` or another precision recomputes.
    """
    from medscope.activations import collect_outputs
    from medscope.train.loop import evaluation_settings

    layout = run.layout
    if not layout.best_pt.is_file():
        raise UsageError(f"{run.path} has no {layout.best_pt.name} to compute the validation outputs from; "
                         f"finish training it with: python train.py --resume {run.path}")
    settings = evaluation_settings(cfg, info, device)
    precision = str(settings["amp_dtype"]).replace("torch.", "") if settings["amp_dtype"] else "float32"
    key = {"version": CACHE_VERSION, "checkpoint": file_key(layout.best_pt), "dataset": info.file_name,
           "md5": info.md5, "precision": precision, "device": device.type}
    cache = layout.calibration_dir / FILES["val_outputs"]
    cached = _read_cache(cache)
    if cached is not None and cached["key"] == key:
        return {"logits": cached["logits"].double().numpy(), "labels": _labels(cached["labels"]),
                "epoch": cached.get("epoch"), "reused": True, "seconds": 0.0, "key": key, "path": cache,
                "cache": None}
    start = time.perf_counter()
    model, checkpoint = checkpoints.load_run_model(run, "best", device)
    if settings["memory_format"] is not None:
        model = model.to(memory_format=settings["memory_format"])
    data_dir = runs.data_dir_for(info.file_name, args.data_dir, cfg.get("data_dir"))
    split = data.load_split(info, data_dir, "val", check_md5=not cfg.get("skip_md5"))
    outputs = collect_outputs(model, split, info.task, device, batch_size=args.batch_size,
                              amp_dtype=settings["amp_dtype"], activations=False,
                              memory_format=settings["memory_format"])
    seconds = time.perf_counter() - start
    record = {"key": key, "logits": outputs["logits"], "labels": outputs["labels"], "split": "val",
              "task": info.task, "epoch": checkpoint.get("epoch")}
    return {"logits": outputs["logits"].double().numpy(), "labels": _labels(outputs["labels"]),
            "epoch": checkpoint.get("epoch"), "reused": False, "seconds": seconds, "key": key, "path": cache,
            "cache": record}


def _labels(labels: torch.Tensor) -> np.ndarray:
    """Integer labels (multi-label targets are stored as floats)."""
    return np.rint(labels.numpy()).astype(np.int64)


def mc_dropout_measures(run: runs.Run, test_labels: np.ndarray, task: str) -> tuple[dict | None, str]:
    """Per-image MC-dropout measures of the test images from ``uncertainty/``, or None and why not.

    Used only when they describe the test split of the current ``best.pt``:
    the summary says split ``test`` and checkpoint ``best``, the files are not
    older than ``best.pt``, and the per-image rows are the test images in order
    (same count, ids 0..n-1, same labels).
    """
    layout = run.layout
    folder = layout.uncertainty_dir
    per_image, summary_path = folder / UNCERTAINTY_PER_IMAGE, folder / UNCERTAINTY_SUMMARY
    hint = f"run explain.py uncertainty --run {run.name} --split test first"
    if not (per_image.is_file() and summary_path.is_file()):
        return None, f"{folder.name}/ holds no MC-dropout results ({hint})"
    try:
        summary = json.loads(summary_path.read_text())
        with open(per_image, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, ValueError) as exc:
        return None, f"{folder.name}/ could not be read ({exc}); {hint}"
    if not isinstance(summary, dict) or summary.get("split") != "test":
        split = summary.get("split") if isinstance(summary, dict) else None
        return None, f"{folder.name}/ describes the {split} split, not test ({hint})"
    if summary.get("checkpoint", "best") != "best":
        return None, f"{folder.name}/ describes {summary.get('checkpoint')}.pt, not best.pt ({hint})"
    if layout.best_pt.is_file() and per_image.stat().st_mtime < layout.best_pt.stat().st_mtime:
        return None, f"{folder.name}/ is older than best.pt ({hint})"
    kind = tasks.task(task)
    expected = [kind.label_text(row) for row in test_labels.reshape(len(test_labels), -1)]
    try:
        ids = [int(row["id"]) for row in rows]
        labels = [row["label"] for row in rows]
        values = {name: np.array([float(row[name]) for row in rows]) for name in MC_COLUMNS}
    except (KeyError, ValueError, TypeError):
        return None, f"{folder.name}/{UNCERTAINTY_PER_IMAGE} lacks the expected columns ({hint})"
    if ids != list(range(len(expected))) or labels != expected:
        return None, f"{folder.name}/{UNCERTAINTY_PER_IMAGE} does not list the {len(expected)} test images in order"
    dropout = (summary.get("dropout") or {}).get("text", "dropout")
    source = (f"`{folder.name}/{UNCERTAINTY_PER_IMAGE}` ({summary.get('passes')} passes, {dropout}; they rank "
              "the errors of the model's own prediction, made without dropout)")
    return values, source


# --------------------------------------------------------------------------- writing

def _cell(value):
    """A CSV cell: NaN (undefined) is an empty cell, as None is."""
    return None if isinstance(value, float) and np.isnan(value) else value


def _interval_columns(prefix: str, entry: dict) -> dict:
    out = {prefix: entry["estimate"], f"{prefix}_low": entry["low"], f"{prefix}_high": entry["high"]}
    if "bias_corrected" in entry:
        out[f"{prefix}_bias_corrected"] = entry["bias_corrected"]
    return {key: _cell(value) for key, value in out.items()}


def _columns(prefixes, corrected=()) -> list[str]:
    out = []
    for prefix in prefixes:
        out += [prefix] + ([f"{prefix}_bias_corrected"] if prefix in corrected else []) + [f"{prefix}_low",
                                                                                           f"{prefix}_high"]
    return out


def threshold_rows(result: dict) -> tuple[list[dict], list[str]]:
    rows = []
    for problem in result["thresholds"]["problems"]:
        for e in problem["rules"]:
            row = {"label": problem["label"], "rule": e["rule"], "threshold": e["threshold"],
                   "applicable": e["applicable"], "reason": e.get("reason")}
            if e["applicable"]:
                row.update(val_sensitivity=e["validation"]["sensitivity"],
                           val_specificity=e["validation"]["specificity"])
                for rate in RATES:
                    row.update(_interval_columns(rate, e["test"][rate]))
                row.update({k: e["test"][k] for k in ("tp", "fp", "tn", "fn", "n")})
            rows.append(row)
    columns = ["label", "rule", "threshold", "applicable", "val_sensitivity", "val_specificity", *_columns(RATES),
               "tp", "fp", "tn", "fn", "n", "reason"]
    return rows, columns


CONFORMAL_NUMBERS = ("coverage", "mean_set_size", "singleton_fraction", "empty_fraction", "abstain_fraction",
                     "all_labels_covered")


def conformal_rows(result: dict) -> tuple[list[dict], list[str], list[dict], list[str]]:
    """Rows of ``conformal.csv`` (one per method) and ``conformal_per_class.csv`` (one per method and class)."""
    cp = result["conformal"]
    numbers = [k for k in CONFORMAL_NUMBERS if k in cp["methods"][0]["test"]]
    rows, per_class = [], []
    for m in cp["methods"]:
        quantile = np.atleast_1d(np.asarray(m["quantile"], dtype=np.float64)).reshape(-1)
        row = {"method": m["name"], "score": m["score"], "class_conditional": m["class_conditional"],
               "alpha": cp["alpha"], "quantile": ";".join(repr(float(q)) for q in quantile)}
        for key in numbers:
            row.update(_interval_columns(key, m["test"][key]))
        rows.append(row)
        if cp["per_label"]:
            for label in result["class_names"]:
                per_class.append({"method": m["name"], "label": label, "value": "any",
                                  **_interval_columns("coverage", m["test"]["coverage_per_label"][label])})
                for value, entry in m["test"]["coverage_per_label_value"][label].items():
                    per_class.append({"method": m["name"], "label": label, "value": value,
                                      **_interval_columns("coverage", entry)})
        else:
            for name in result["class_names"]:
                per_class.append({"method": m["name"], "class": name, "n": m["test"]["class_count"][name],
                                  **_interval_columns("coverage", m["test"]["coverage_per_class"][name])})
    columns = ["method", "score", "class_conditional", "alpha", "quantile", *_columns(numbers)]
    per_class_columns = (["method", "label", "value"] if cp["per_label"] else ["method", "class", "n"]) + \
        _columns(["coverage"])
    return rows, columns, per_class, per_class_columns


def conformal_set_rows(result: dict) -> tuple[list[dict], list[str]]:
    per_image = result["per_image"]
    methods = list(per_image["sets"])
    multilabel = result["conformal"]["per_label"]
    parts = ("positive", "undecided", "size") if multilabel else ("set", "size")
    rows = []
    for i, image in enumerate(per_image["id"]):
        row = {"id": image, "label": per_image["label"][i], "predicted": per_image["predicted"][i],
               "correct": per_image["correct"][i]}
        for m in methods:
            row.update({f"{m}_{part}": per_image["sets"][m][part][i] for part in parts})
        rows.append(row)
    return rows, ["id", "label", "predicted", "correct", *[f"{m}_{part}" for m in methods for part in parts]]


def selective_rows(result: dict) -> tuple[list[dict], list[str], list[dict], list[str]]:
    sel = result["selective"]
    best = sel["best"].get("name")
    rows = []
    for e in sel["scores"]:
        row = {"score": e["name"], "description": e["description"], "best": e["name"] == best}
        for key in ("aurc", "eaurc", "augrc", "augrc_minus_best"):
            if key in e:
                row.update(_interval_columns(key, e[key]))
        rows.append(row)
    columns = ["score", "description", "best", *_columns(("aurc", "eaurc", "augrc", "augrc_minus_best"))]
    curve_rows = []
    for name, curve in sel["curves"].items():
        for j in range(len(curve["coverage"])):
            curve_rows.append({"score": name, **{key: curve[key][j] for key in curve}})
    return rows, columns, curve_rows, ["score", "threshold", "coverage", "selective_risk", "generalized_risk"]


def reliability_rows(result: dict) -> tuple[list[dict], list[str]]:
    rows = []
    for state in ("before", "after"):
        for b in result["calibration"][f"reliability_{state}"]:
            rows.append({"state": state, "bin": b["bin"], "lower": b["lower"], "upper": b["upper"],
                         "count": b["count"], "confidence": _cell(b["confidence"]),
                         **_interval_columns("accuracy", b["accuracy"])})
    return rows, ["state", "bin", "lower", "upper", "count", "confidence", *_columns(["accuracy"])]


def temperature_record(result: dict, run: runs.Run, key: dict) -> dict:
    """``temperature.json``: what a deployment needs to apply the fitted temperature."""
    t = result["temperature"]
    per_label = t["kind"] == "per label"
    return {"task": result["task"], "temperature": t["temperature"], "per_label": per_label,
            "class_names": result["class_names"],
            "apply": ("probabilities = sigmoid(logits / temperature), temperature[j] for label j" if per_label
                      else "probabilities = softmax(logits / temperature)"),
            "fitted_on": {"split": "val", "n": result["n_validation"]}, "at_bound": t["at_bound"],
            "run": run.name, "checkpoint_sha256": key["checkpoint"]["sha256"]}


def write_outputs(run: runs.Run, folder: Path, result: dict, key: dict) -> list[Path]:
    """Every file of calibration/ except the validation cache, into ``folder`` (its staging folder); returns the
    paths written."""
    title = run.name
    written = []
    summary = {k: v for k, v in result.items() if k != "per_image"}
    summary["selective"] = {k: v for k, v in result["selective"].items() if k != "curves"}
    summary["files"] = {"curves": FILES["selective_curves"], "per_image_sets": FILES["conformal_sets"]}
    written.append(atomic.write_json(folder / FILES["summary"], summary))
    written.append(atomic.write_json(folder / FILES["temperature"], temperature_record(result, run, key)))
    if result["thresholds"]["applicable"]:
        written.append(atomic.write_csv(folder / FILES["thresholds"], *threshold_rows(result)))
    rows, columns, per_class, per_class_columns = conformal_rows(result)
    written.append(atomic.write_csv(folder / FILES["conformal"], rows, columns))
    written.append(atomic.write_csv(folder / FILES["conformal_per_class"], per_class, per_class_columns))
    written.append(atomic.write_csv(folder / FILES["conformal_sets"], *conformal_set_rows(result)))
    rows, columns, curve_rows, curve_columns = selective_rows(result)
    written.append(atomic.write_csv(folder / FILES["selective"], rows, columns))
    written.append(atomic.write_csv(folder / FILES["selective_curves"], curve_rows, curve_columns))
    written.append(atomic.write_csv(folder / FILES["reliability"], *reliability_rows(result)))
    written.append(plots.reliability_diagram(folder / FILES["reliability_png"], result, title))
    written.append(plots.risk_coverage(folder / FILES["risk_coverage_png"], result, title))
    written.append(plots.conformal_coverage(folder / FILES["coverage_png"], result, title))
    written.append(atomic.write_text(folder / FILES["report"], report.report_markdown(result, run_name=run.name)))
    return written


# --------------------------------------------------------------------------- the command

def run(args) -> int:
    """Open the run, analyse, write ``calibration/``, record the files and print a summary."""
    the_run = cli.resolve_run(args.results_dir, args.run)
    cfg = _config(the_run)
    info = data.dataset_info(cfg["dataset"], int(cfg.get("size", 28)))
    test = _test_outputs(the_run, info)
    device = cli.resolve_device(args.device)
    val = validation_outputs(the_run, info, cfg, args, device)
    if None not in (val["epoch"], test["best_epoch"]) and val["epoch"] != test["best_epoch"]:
        raise UsageError(f"{the_run.layout.inference_outputs.name} is from epoch {test['best_epoch']} but "
                         f"{the_run.layout.best_pt.name} from epoch {val['epoch']}; finish the run "
                         f"(python train.py --resume {the_run.path}) so that both come from the same weights")
    mc, mc_note = mc_dropout_measures(the_run, test["labels"], info.task)
    result = analysis.analyze_calibration(
        info.task, val["logits"], val["labels"], test["logits"], test["labels"], class_names=info.class_names,
        alpha=args.alpha, sensitivity=args.sensitivity, specificity=args.specificity, n_bins=args.bins,
        n_resamples=args.bootstrap, seed=args.seed, mc_dropout=mc)
    if mc is None:
        result["mc_dropout"]["reason"] = mc_note
    else:
        result["mc_dropout"]["source"] = mc_note
    result["run"] = the_run.name
    result["inputs"] = {
        "test": f"{the_run.layout.inference_outputs.name} (the logits train.py stored; {len(test['labels'])} images)",
        "validation": {"file": the_run.relative(val["path"]), "reused": val["reused"], "device": str(device),
                       "precision": val["key"]["precision"], "seconds": round(val["seconds"], 3)},
        "checkpoint": {"file": the_run.layout.best_pt.name, "epoch": val["epoch"], **val["key"]["checkpoint"]}}
    if test["tta"]:
        result["inputs"]["note"] = ("the run evaluates with test-time augmentation; calibration uses the plain "
                                    "(single-view) logits, so its numbers describe predictions without TTA")
    cache_name = FILES["val_outputs"]
    keep = (lambda relative: relative.as_posix() == cache_name) if val["reused"] else None  # the cache it read
    with the_run.staged_folder(the_run.layout.calibration_dir, created_by=CREATED_BY, keep=keep) as staged:
        if val["cache"] is not None:
            atomic.save_torch(staged.path / cache_name, val["cache"])
        write_outputs(the_run, staged.path, result, val["key"])
    _print_summary(the_run, result, val, device, staged.files)
    return 0


def _print_summary(the_run, result: dict, val: dict, device, written) -> None:
    text = report.interval_text
    boot = result["bootstrap"]
    where = (f"reused from {val['path'].name}" if val["reused"] else
             f"computed in {val['seconds']:.1f}s on {device}")
    print(f"calibration of {the_run.name}: fitted on {result['n_validation']} validation images (logits {where}), "
          f"judged on {result['n_test']} test images; {100 * boot['level']:g}% intervals from "
          f"{boot['n_resamples']} bootstrap resamples")
    t, cal = result["temperature"], result["calibration"]
    temperature = (f"T = {t['temperature']:.3f} ({t['effect']})" if t["kind"] == "scalar" else
                   f"T per label {min(t['temperature']):.3f}..{max(t['temperature']):.3f}")
    print(f"temperature {temperature}; test ECE {text(cal['before']['ece'])} -> {text(cal['after']['ece'])}")
    print(f"accuracy {text(result['accuracy']['accuracy'])} ({result['accuracy']['rule']}; unchanged by T)")
    thr = result["thresholds"]
    if thr["applicable"]:
        for problem in thr["problems"]:
            youden = next(e for e in problem["rules"] if e["rule"] == "youden")
            if youden["applicable"]:
                print(f"threshold for {problem['label']}: Youden {report.threshold_text(youden['threshold'])}, "
                      f"sensitivity {text(youden['test']['sensitivity'])}, "
                      f"specificity {text(youden['test']['specificity'])}")
    else:
        print(f"thresholds: skipped ({thr['reason']})")
    lac = next(m for m in result["conformal"]["methods"] if m["name"] == "lac")
    line = (f"conformal LAC sets (alpha {result['conformal']['alpha']:g}): coverage "
            f"{text(lac['test']['coverage'], percent=True)}, mean size {text(lac['test']['mean_set_size'], 2)}")
    if "abstain_fraction" in lac["test"]:
        line += f", abstain {text(lac['test']['abstain_fraction'], percent=True)}"
    print(line)
    best = result["selective"]["best"]
    if best["applicable"]:
        print(f"lowest AUGRC: {best['description']}, {text(best['augrc'], 4)}")
    else:
        print(f"selective classification: {best['reason']}")
    mc = result["mc_dropout"]
    if not mc["used"]:
        print(f"MC dropout: not included ({mc['reason']})")
    print(f"wrote {len(written)} files to {the_run.layout.calibration_dir}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
