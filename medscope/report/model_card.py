"""A model card for one run (Mitchell et al., 2019), from the report's data.

:func:`model_card` returns one JSON-able dict; ``model_card.json`` is that dict,
``model_card.md`` (:func:`model_card_markdown`) and the page's model-card section
are renderings of it, so the three always say the same thing.
"""
from __future__ import annotations

from ..report_text import markdown_code, markdown_code_block, markdown_text
from .build import IMBALANCE_SHARE, SMALL_TEST_SPLIT, Commands, RunReport
from .text import (
    interval_text,
    number_text,
    percent_text,
    time_text,
    title_text,
    wilson_interval,
)

MEDMNIST_CITATION = ("Jiancheng Yang, Rui Shi, Donglai Wei, Zequan Liu, Lin Zhao, Bilian Ke, Hanspeter Pfister, "
                     "Bingbing Ni. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical "
                     "image classification. Scientific Data 10, 41 (2023).")
MEDMNIST_DOI = "https://doi.org/10.1038/s41597-022-01721-8"
MEDMNIST_LICENSE = "CC BY 4.0"
MODEL_CARD_CITATION = ("Margaret Mitchell, Simone Wu, Andrew Zaldivar, Parker Barnes, Lucy Vasserman, Ben Hutchinson, "
                       "Elena Spitzer, Inioluwa Deborah Raji, Timnit Gebru. Model Cards for Model Reporting. "
                       "FAT* 2019.")
MODEL_CARD_DOI = "https://doi.org/10.1145/3287560.3287596"
SCHEMA = "medscope model card 1"


def metric_text(value, interval: dict | None) -> str:
    """A metric with its 95% interval and method, or with the note that the run has none.

    >>> metric_text(0.8123, {"estimate": 0.8123, "low": 0.75, "high": 0.86, "method": "bootstrap"})
    '0.812, 95% interval [0.750, 0.860] (bootstrap)'
    >>> metric_text(0.8123, None)
    '0.812 (no interval: re-run train.py to get one)'
    """
    if interval and interval_text(interval):
        method = f" ({interval['method']})" if interval.get("method") else ""
        return f"{number_text(value)}, 95% interval {interval_text(interval)}{method}"
    return f"{number_text(value)} (no interval: re-run train.py to get one)"


def model_card(report: RunReport, *, results_dir: str | None = None) -> dict:
    """The model card of ``report``'s run as a JSON-able dict (sections in the paper's order)."""
    verdict = report.section("verdict").data
    classes = report.section("classes").data
    training = report.section("training").data
    info = report.info
    cfg, env, spec = info.get("config") or {}, info.get("environment") or {}, info.get("model") or {}
    commands = Commands(report.name, results_dir)
    flag, size = verdict["dataset"], verdict["size"]
    dims = verdict.get("spatial_dims")
    splits = verdict.get("n_samples") or {}

    architecture = (f"{spec.get('name', cfg.get('model', '?'))}"
                    f"{f' ({dims}D)' if dims else ''}, {spec.get('in_channels', '?')} input channel(s), "
                    f"{spec.get('num_classes', '?')} outputs, dropout {spec.get('dropout', cfg.get('dropout', '?'))}"
                    f" before the classifier; {'started from pretrained weights' if cfg.get('pretrained') else 'trained from scratch'}")
    software = ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "torchvision", "numpy", "medmnist") if k in env)
    details = {
        "run": report.name, "architecture": architecture, "task": verdict.get("task"),
        "classes": list(verdict.get("class_names") or []), "input": f"{size} px {'volumes' if dims == 3 else 'images'}",
        "trained": time_text(info.get("finished") or info.get("created")), "status": info.get("status", "unknown"),
        "software": software, "device": _device_text(verdict),
    }
    intended = {
        "primary_uses": ["Research on training and inspecting small medical-image classifiers on MedMNIST.",
                         "Teaching: how such models learn, fail, and can be explained."],
        "primary_users": "Researchers, students and teachers working with the MedMNIST benchmark.",
        "out_of_scope": ["Diagnosis, triage, screening or any decision about a patient: the model is not a "
                         "medical device and was never clinically validated.",
                         f"Images other than {flag}'s: other scanners, sites, resolutions, or populations.",
                         f"Images at another size than {size} px, or preprocessed differently from MedMNIST."],
    }
    ethics = ["The images come from public, de-identified source datasets (see the citation); the model inherits their "
              "selection and labelling biases, often those of one hospital and one kind of device.",
              "A confident wrong answer on a medical image misleads; the uncertainty and robustness results show "
              "where this model's confidence is not to be trusted."]
    factors = ["MedMNIST records no patient attributes (age, sex, ethnicity, site), so the model cannot be "
               "evaluated across such groups; the only subgroups reported are the classes."]

    test_rows = [{"metric": s["label"], "value": s["value"], "interval": s["interval"],
                  "text": metric_text(s["value"], s["interval"])} for s in verdict["scores"]]
    per_class = [{k: r.get(k) for k in ("name", "support", "precision", "recall", "specificity", "f1", "auc")
                  if k in r} for r in classes.get("rows") or []]
    baseline = verdict.get("baseline")
    metrics = {
        "test": test_rows, "n_test": verdict.get("n_test"), "per_class": per_class,
        "macro_f1": classes.get("macro_f1"),
        "validation": verdict.get("val"),
        "model_selection": _selection_text(verdict),
        "baseline": None if baseline is None else {
            "dataset": baseline.dataset, "method": baseline.method, "auc": baseline.auc, "acc": baseline.acc,
            "source": baseline.source},
        "definitions": "AUC and ACC as medmnist.Evaluator computes them; per-class numbers one-vs-rest on the "
                       "test split.",
    }
    training_data = {
        "dataset": flag, "size": size, "splits": splits,
        "subset": cfg.get("subset"),
        "license": MEDMNIST_LICENSE, "citation": MEDMNIST_CITATION, "doi": MEDMNIST_DOI,
        "file": (info.get("dataset") or {}).get("url"), "md5": (info.get("dataset") or {}).get("md5"),
        "preprocessing": f"MedMNIST's own {size} px {'volumes' if dims == 3 else 'images'}; pixels scaled to "
                         f"[-1, 1]; augmentation: {cfg.get('augment', 'n/a')}",
    }
    evaluation_data = {
        "test": {"split": "test", "n": verdict.get("n_test"),
                 "class_counts": {r["name"]: r.get("support") for r in per_class}},
        "selection": {"split": "val", "n": splits.get("val"),
                      "use": f"chose the model's epoch ({verdict.get('selected_by') or 'n/a'})"},
    }
    card = {
        "schema": SCHEMA,
        "title": f"Model card: {report.name}",
        "framework": {"citation": MODEL_CARD_CITATION, "doi": MODEL_CARD_DOI},
        "model_details": details,
        "intended_use": intended,
        "factors": factors,
        "metrics": metrics,
        "training_data": training_data,
        "evaluation_data": evaluation_data,
        "calibration": _calibration(report, commands),
        "robustness": _robustness(report, commands),
        "ethical_considerations": ethics,
        "caveats": caveats(report),
        "reproduce": {"command": training.get("command"), "as_run": training.get("command_as_run"),
                      "seed": cfg.get("seed"),
                      "note": "The same seed repeats the metrics exactly on a CPU; GPUs differ in the last digits "
                              "unless --deterministic was given."},
    }
    return card


def _device_text(verdict: dict) -> str:
    device = verdict.get("device") or "unknown device"
    name = verdict.get("gpu") if str(device).startswith("cuda") else verdict.get("cpu")
    world = verdict.get("world_size") or 1
    return (f"{device}{f' ({name})' if name else ''}"
            f"{f', {world} processes' if world > 1 else ''}, {verdict.get('amp_dtype') or 'float32'}")


def _selection_text(verdict: dict) -> str:
    if verdict.get("best_epoch") is None:
        return "n/a"
    return f"epoch {verdict['best_epoch']} of {verdict.get('epochs_run')} ({verdict.get('selected_by') or 'n/a'})"


def _calibration(report: RunReport, commands: Commands) -> dict:
    section = report.section("calibration")
    result = {}
    inference = section.data.get("inference")
    if inference:
        result["uncalibrated"] = {"ece": inference.get("ece"), "brier": inference.get("brier"),
                                  "n_bins": inference.get("n_bins"), "split": inference.get("split"),
                                  "text": f"ECE {number_text(inference.get('ece'))} "
                                          f"({inference.get('n_bins')} bins), Brier score "
                                          f"{number_text(inference.get('brier'))} on the {inference.get('split')} "
                                          "split"}
    if section.data.get("calibration"):
        result["recalibration"] = dict(section.data["calibration"]["scalars"])
    result["not_run"] = [{"what": p.what, "command": p.command} for p in section.pending]
    return result


def _robustness(report: RunReport, commands: Commands) -> dict:
    section = report.section("robustness")
    if section.pending:
        return {"not_run": [{"what": p.what, "command": p.command} for p in section.pending]}
    data = section.data
    return {"n_images": data.get("n_images"), "severities": data.get("severities"),
            "limits": [robustness_sentence(row) for row in data.get("worst") or []],
            "overall": None if not data.get("overall") else {
                k: data["overall"].get(k) for k in ("mce", "mean_balanced_acc", "mean_acc", "mean_flip_rate",
                                                    "collapsed_severities")}}


def robustness_sentence(row: dict) -> str:
    """One perturbation's harm in words, from a robustness_summary.csv row (balanced accuracy: a model
    that answers one class everywhere scores chance there, while its ACC rises to the majority rate).

    >>> robustness_sentence({"perturbation": "gaussian_noise", "mce": 1.84, "mean_balanced_acc": 0.61,
    ...                      "worst_balanced_acc": 0.4, "worst_severity": 5, "first_severity_below": 2,
    ...                      "collapsed_severities": "5", "mean_flip_rate": 0.25})
    'gaussian noise: mean corruption error 1.84x the clean one, mean balanced accuracy 0.610, lowest 0.400 at severity 5; balanced accuracy drops beyond tolerance from severity 2; collapsed to one class at severity 5; 25% of predictions flip on average'
    """
    below = row.get("first_severity_below")
    drop = (f"balanced accuracy drops beyond tolerance from severity {below}" if below not in (None, "")
            else "balanced accuracy stays within tolerance at every severity tried")
    collapsed = row.get("collapsed_severities")
    collapse = f"; collapsed to one class at severity {', '.join(str(collapsed).split())}" if collapsed else ""
    return (f"{title_text(str(row.get('perturbation')))}: mean corruption error {number_text(row.get('mce'), 2)}x "
            f"the clean one, mean balanced accuracy {number_text(row.get('mean_balanced_acc'))}, lowest "
            f"{number_text(row.get('worst_balanced_acc'))} at severity {row.get('worst_severity')}; {drop}{collapse}; "
            f"{percent_text(row.get('mean_flip_rate'))} of predictions flip on average")


def caveats(report: RunReport) -> list[str]:
    """What a reader must keep in mind: unfinished run, small test split, class imbalance, subset, baseline."""
    verdict = report.section("verdict").data
    cfg = report.info.get("config") or {}
    notes = []
    if verdict.get("status") != "completed":
        notes.append(f"The run's status is '{verdict.get('status')}': the model may be unfinished.")
    n_test = verdict.get("n_test")
    if isinstance(n_test, int) and n_test < SMALL_TEST_SPLIT:
        notes.append(_small_test_text(verdict, n_test))
    majority = verdict.get("majority")
    if majority and majority["share"] > IMBALANCE_SHARE:
        notes.append(f"Class imbalance: '{majority['name']}' is {percent_text(majority['share'])} of the test split, "
                     f"so always predicting it scores ACC {number_text(majority['share'])}; read AUC, balanced "
                     "accuracy and the per-class recall beside ACC.")
    if cfg.get("subset"):
        notes.append(f"Trained on a random subset of {cfg['subset']} training images, not the whole training split.")
    splits = verdict.get("n_samples") or {}
    if isinstance(splits.get("val"), int) and splits["val"] < 200 and verdict.get("selected_by"):
        notes.append(f"The epoch was chosen on a validation split of {splits['val']} images; on so few, the choice "
                     "is noisy.")
    base = verdict.get("baseline")
    if base is not None and "auc_minus_baseline" in verdict and verdict["auc_minus_baseline"] < 0:
        notes.append(f"Test AUC is {number_text(-verdict['auc_minus_baseline'])} below the published "
                     f"{base.method} ({number_text(base.auc)}).")
    notes.append("Evaluated on MedMNIST's own test split only, at one resolution; no external data.")
    return notes


def _small_test_text(verdict: dict, n_test: int) -> str:
    """How wide a 95% interval is on this test split: the run's own intervals, or Wilson's for ACC."""
    intervals = {s["key"]: s["interval"] for s in verdict["scores"] if s.get("interval")}
    widths = [f"{s['label']} {number_text(s['interval']['high'] - s['interval']['low'])}"
              for s in verdict["scores"] if s.get("interval") and s["interval"].get("high") is not None
              and s["interval"].get("low") is not None]
    if widths:
        return (f"Small test split: {n_test} images (fewer than {SMALL_TEST_SPLIT}). The 95% intervals are "
                f"{', '.join(widths)} wide; differences smaller than that between runs mean little.")
    acc = next((s["value"] for s in verdict["scores"] if s["key"] == "acc"), None)
    if acc is None or intervals:
        return f"Small test split: {n_test} images (fewer than {SMALL_TEST_SPLIT}); its metrics are noisy."
    low, high = wilson_interval(acc, n_test)
    return (f"Small test split: {n_test} images (fewer than {SMALL_TEST_SPLIT}). At ACC {number_text(acc)} on "
            f"{n_test} images a 95% interval (Wilson) is about {number_text(high - low)} wide "
            f"([{number_text(low)}, {number_text(high)}]); differences smaller than that between runs mean little.")


# --------------------------------------------------------------------------- Markdown

def model_card_markdown(card: dict) -> str:
    """``model_card.md``: the card dict in Markdown, section by section.

    Every value goes through :func:`markdown_text` (or :func:`markdown_code` for commands): run and class
    names, paths and config strings come from run.json, which may come from someone else, and must show
    literally in a Markdown viewer.
    """
    md = markdown_text
    d, m = card["model_details"], card["metrics"]
    lines = [f"# {md(card['title'])}", "",
             f"After {md(card['framework']['citation'])} {md(card['framework']['doi'])}", "",
             "## Model details", ""]
    lines += [f"- **{md(title_text(k))}**: {_md_value(v)}" for k, v in d.items()]
    iu = card["intended_use"]
    lines += ["", "## Intended use", "", "Primary uses:", ""] + [f"- {md(u)}" for u in iu["primary_uses"]]
    lines += ["", f"Primary users: {md(iu['primary_users'])}", "", "Out of scope:", ""]
    lines += [f"- {md(u)}" for u in iu["out_of_scope"]]
    lines += ["", "## Factors", ""] + [f"- {md(f)}" for f in card["factors"]]
    lines += ["", "## Metrics", "", f"Test split, {md(m['n_test'])} images; {md(m['definitions'])}", ""]
    lines += [f"- **{md(r['metric'])}**: {md(r['text'])}" for r in m["test"]]
    lines.append(f"- **model selection**: {md(m['model_selection'])}")
    if m["baseline"]:
        b = m["baseline"]
        lines.append(f"- **published baseline** ({md(b['method'])}, {md(b['source'])}): AUC {number_text(b['auc'])}, "
                     f"ACC {number_text(b['acc'])}")
    if m["per_class"]:
        columns = [c for c in ("name", "support", "precision", "recall", "specificity", "f1", "auc")
                   if any(c in r for r in m["per_class"])]
        lines += ["", "Per class (test):", "", "| " + " | ".join(columns) + " |",
                  "| --- |" + " ---: |" * (len(columns) - 1)]
        for r in m["per_class"]:
            cells = [md(r.get(c)) if c in ("name", "support") else number_text(r.get(c)) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
    t = card["training_data"]
    splits = ", ".join(f"{k} {v}" for k, v in (t["splits"] or {}).items())
    lines += ["", "## Training data", "",
              f"- **dataset**: MedMNIST {markdown_code(t['dataset'])} at {md(t['size'])} px ({md(splits)})",
              f"- **license**: {md(t['license'])}", f"- **citation**: {md(t['citation'])} {md(t['doi'])}"]
    if t["file"]:
        lines.append(f"- **file**: {md(t['file'])} (MD5 {md(t['md5'])})")
    lines.append(f"- **preprocessing**: {md(t['preprocessing'])}")
    if t["subset"]:
        lines.append(f"- **subset**: a random {md(t['subset'])} of the training images")
    e = card["evaluation_data"]
    counts = ", ".join(f"{k}: {v}" for k, v in e["test"]["class_counts"].items())
    lines += ["", "## Evaluation data", "", f"- **test split**: {md(e['test']['n'])} images ({md(counts)})",
              f"- **validation split**: {md(e['selection']['n'])} images; {md(e['selection']['use'])}"]
    c = card["calibration"]
    lines += ["", "## Calibration", ""]
    if "uncalibrated" in c:
        lines.append(f"- as trained: {md(c['uncalibrated']['text'])}")
    for k, v in (c.get("recalibration") or {}).items():
        lines.append(f"- {md(title_text(k))}: {_md_value(v)}")
    lines += [f"- not run yet ({md(p['what'])}): {markdown_code(p['command'])}" for p in c["not_run"]]
    r = card["robustness"]
    lines += ["", "## Robustness", ""]
    if "not_run" in r:
        lines += [f"- not run yet ({md(p['what'])}): {markdown_code(p['command'])}" for p in r["not_run"]]
    else:
        severities = ", ".join(str(v) for v in r["severities"] or [])
        lines.append(f"{md(r['n_images'])} test images, severities {md(severities)}. The most harmful perturbations:")
        lines += [""] + [f"- {md(s)}" for s in r["limits"]]
    lines += ["", "## Ethical considerations", ""] + [f"- {md(x)}" for x in card["ethical_considerations"]]
    lines += ["", "## Caveats and recommendations", ""] + [f"- {md(x)}" for x in card["caveats"]]
    rep = card["reproduce"]
    lines += ["", "## Reproduce", "", *markdown_code_block(rep["command"] or "# the run records no configuration",
                                                         "bash"),
              "", md(rep["note"])]
    if rep["as_run"]:
        lines += ["", f"The command as it was typed: {markdown_code(rep['as_run'])}"]
    return "\n".join(lines) + "\n"


def _md_value(value) -> str:
    """A model-details value as Markdown text (see :func:`model_card_markdown`)."""
    if isinstance(value, list):  # class names may hold commas ("normal, benign"): quote each
        return ", ".join(f'"{markdown_text(v)}"' for v in value)
    if isinstance(value, float):
        return number_text(value)
    return markdown_text("n/a" if value is None else value)
