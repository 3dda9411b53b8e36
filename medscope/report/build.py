"""Read a run folder into the plain data its report page and model card show.

:func:`build_run_report` only reads: it opens the files :mod:`.layout` names,
keeps their numbers as they are (formatting is the templates' job) and notes,
for every analysis that has not been run, the one command that adds it. A file
that exists but cannot be read becomes a note in its section, not an error:
a half-finished run still gets a page that says what is missing.
"""
from __future__ import annotations

import csv
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medscope.baselines import reference_baseline
from medscope.errors import UsageError

from .layout import (
    ANALYSIS_FILES,
    PAGE_SIZE,
    RunLayout,
    analysis_file,
    explanation_file,
)

MULTILABEL = "multi-label, binary-class"
SMALL_TEST_SPLIT = 500  # below this many test images the model card warns about interval width
IMBALANCE_SHARE = 0.70  # a majority class above this share of the test split gets a caveat
WORST_SHOWN = 3  # perturbations described in words


# --------------------------------------------------------------------------- the data

@dataclass(frozen=True)
class Figure:
    """A figure file of the run and what a reader should look for in it."""

    path: Path
    title: str
    caption: str


@dataclass(frozen=True)
class Pending:
    """An analysis that has not been run, and the one command that adds it."""

    what: str
    command: str


@dataclass
class Section:
    """One section of the page: its numbers (``data``), figures, and what is missing."""

    key: str
    title: str
    data: dict = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # files that exist but could not be read


@dataclass
class RunReport:
    """Everything the page shows about one run, in reading order (``sections``)."""

    name: str
    path: Path
    layout: RunLayout
    info: dict  # run.json
    metrics: dict | None  # metrics.json (None when training did not finish)
    sections: list[Section]
    warnings: list[str]

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]


# --------------------------------------------------------------------------- reading files

class _Reader:
    """Reads the run's files; remembers what it could not read, per section.

    Inside the analysis folders it sees only the files run.json records: each
    analysis records exactly the files of its folder once the folder is
    complete, so a file no call recorded is not a result of this run. train.py's
    own files at the top of the run folder are read as they are (it records them
    only when training completes, and an unfinished run still gets a page).
    """

    def __init__(self, root: Path):
        self.root = root
        self.recorded: set[str] | None = None  # run.json's artifact paths, once it is read
        self.notes: list[str] = []

    def record(self, info: dict) -> None:
        """Take the artifact records of run.json (``info``)."""
        artifacts = info.get("artifacts") if isinstance(info.get("artifacts"), list) else []
        self.recorded = {a["path"] for a in artifacts if isinstance(a, dict) and isinstance(a.get("path"), str)}

    def has(self, path: Path) -> bool:
        """Whether ``path`` is a file of the run the report may show."""
        if not path.is_file():
            return False
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return False
        return len(relative.parts) == 1 or self.recorded is None or relative.as_posix() in self.recorded

    def figure(self, path: Path, title: str, caption: str) -> list[Figure]:
        return [Figure(path, title, caption)] if self.has(path) else []

    def glob(self, pattern: Path) -> list[Path]:
        return [path for path in sorted(pattern.parent.glob(pattern.name)) if self.has(path)]

    def json(self, path: Path):
        if not self.has(path):
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.notes.append(f"could not read {path.name}: {exc}")
            return None
        except RecursionError:  # thousands of nested brackets: not a file medscope wrote
            self.notes.append(f"could not read {path.name}: its JSON is nested too deeply")
            return None

    def metrics(self, path: Path) -> dict | None:
        """metrics.json, or None (with a note) when it is absent, unreadable or not as train.py writes it."""
        from medscope.runs import check_metrics

        metrics = self.json(path)
        if metrics is None:
            return None
        try:
            return check_metrics(metrics, path)
        except UsageError as exc:
            self.notes.append(f"could not read {path.name}: {str(exc).removeprefix(f'{path}: ')}")
            return None

    def csv(self, path: Path) -> list[dict] | None:
        if not self.has(path):
            return None
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self.notes.append(f"could not read {path.name}: {exc}")
            return None

    def npz(self, path: Path) -> dict | None:
        if not self.has(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files if k != "maps" and k != "layer_maps"}
        except (OSError, ValueError, KeyError) as exc:
            self.notes.append(f"could not read {path.name}: {exc}")
            return None

    def text(self, path: Path) -> str | None:
        if not self.has(path):
            return None
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.notes.append(f"could not read {path.name}: {exc}")
            return None

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes


def _cell(text: str | None):
    """A CSV cell as a number where it is one; '' as None; other text unchanged."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return {"True": True, "False": False}.get(text, text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- commands

@dataclass(frozen=True)
class Commands:
    """The command lines the page offers, for one run."""

    run: str
    results_dir: str | None = None  # added as --results-dir when it is not the default

    def line(self, script: str, *args: str) -> str:
        extra = ["--results-dir", self.results_dir] if self.results_dir not in (None, "results") else []
        return shlex.join(["python", script, *args, "--run", self.run, *extra])

    def resume(self) -> str:
        extra = ["--results-dir", self.results_dir] if self.results_dir not in (None, "results") else []
        return shlex.join(["python", "train.py", "--resume", self.run, *extra])

    def pending(self, what: str, script: str, *args: str) -> Pending:
        return Pending(what, self.line(script, *args))


# train.py flags in the order a reader scans them: (config key, flag, kind)
_TRAIN_FLAGS = (
    ("dataset", "--dataset", "value"), ("size", "--size", "value"), ("model", "--model", "value"),
    ("epochs", "--epochs", "value"), ("batch_size", "--batch-size", "value"),
    ("optimizer", "--optimizer", "value"), ("lr", "--lr", "value"), ("weight_decay", "--weight-decay", "value"),
    ("schedule", "--schedule", "value"), ("warmup_epochs", "--warmup-epochs", "value"),
    ("label_smoothing", "--label-smoothing", "value"), ("mixup", "--mixup", "value"),
    ("clip_grad", "--clip-grad", "value"), ("dropout", "--dropout", "value"), ("select", "--select", "value"),
    ("patience", "--patience", "value"), ("augment", "--augment", "value"), ("tta", "--tta", "switch"),
    ("pretrained", "--pretrained", "switch"), ("weights", "--weights", "value"), ("subset", "--subset", "value"),
    ("amp", "--no-amp", "inverted"), ("deterministic", "--deterministic", "switch"),
    ("skip_md5", "--skip-md5", "switch"), ("seed", "--seed", "value"),
)


def reproduce_command(config: dict, environment: dict | None = None) -> str:
    """The train.py command that repeats the run: every setting that shapes the model, spelled out.

    Every recipe value is written explicitly, so a later change of the default
    recipes does not change what the command trains. Folders are left to the
    defaults (they do not change the result). Under torchrun the launcher and
    the process count come first (the global batch keeps the schedule the same
    for any count, but BatchNorm statistics are per process).

    >>> reproduce_command({"dataset": "breastmnist", "size": 28, "model": "resnet18", "epochs": 6,
    ...                    "lr": 0.001, "tta": False, "amp": True, "seed": 0, "weights": None})
    'python train.py --dataset breastmnist --size 28 --model resnet18 --epochs 6 --lr 0.001 --seed 0'
    """
    words = ["python", "train.py"]
    world = int(config.get("world_size") or 1)
    if world > 1:
        words = ["torchrun", "--standalone", f"--nproc_per_node={world}", "train.py"]
    for key, flag, kind in _TRAIN_FLAGS:
        value = config.get(key)
        if kind == "switch":
            words += [flag] if value else []
        elif kind == "inverted":
            words += [flag] if value is False else []
        elif value is not None:
            words += [flag, _flag_value(value)]
    device = (environment or {}).get("device") or config.get("device")
    if device and device != "auto":
        words += ["--device", str(device).split(":")[0] if world > 1 else str(device)]
    return shlex.join(words)


def _flag_value(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- the builder

def build_run_report(path, *, results_dir: str | None = None) -> RunReport:
    """Read the run folder ``path`` into a :class:`RunReport` (reads only; writes nothing).

    Parameters
    ----------
    path : path-like
        The run folder (the one holding ``run.json``).
    results_dir : str, optional
        The ``--results-dir`` the user gave; the commands the page offers repeat
        it when it is not the default ``results``.

    Raises
    ------
    UsageError
        When ``path`` holds no readable run.json.
    """
    layout = RunLayout(Path(path))
    if not layout.run_json.is_file():
        raise UsageError(f"{layout.root} is not a run folder (no {layout.run_json.name}); "
                         "train one with: python train.py --dataset breastmnist")
    reader = _Reader(layout.root)
    info = reader.json(layout.run_json)
    if not isinstance(info, dict):
        raise UsageError(f"{layout.run_json} is not valid JSON: {'; '.join(reader.take_notes())}")
    from medscope.runs import check_run_record

    check_run_record(info, layout.run_json)  # the types the page relies on, as every script checks them
    reader.record(info)
    name = info.get("name") or layout.root.name
    commands = Commands(name, results_dir)
    metrics = reader.metrics(layout.metrics_json)
    warnings = _run_warnings(info, metrics, reader.take_notes(), commands)

    sections = [
        _verdict(layout, info, metrics, reader),
        _training(layout, info, metrics, reader),
        _classes(layout, info, metrics, reader),
        _calibration(layout, reader, commands),
        _explanations(layout, info, reader, commands),
        _uncertainty(layout, reader, commands),
        _robustness(layout, reader, commands),
        _inside(layout, reader, commands),
        _export(layout, reader, commands),
    ]
    others = _other_figures(layout, {f.path for s in sections for f in s.figures}, reader)
    if others.figures:
        sections.append(others)
    return RunReport(name=name, path=layout.root, layout=layout, info=info, metrics=metrics, sections=sections,
                     warnings=warnings)


def _run_warnings(info: dict, metrics: dict | None, notes: list[str], commands: Commands) -> list[str]:
    """What the banner at the top says: a run that did not complete, or has no test metrics."""
    warnings = []
    status = info.get("status", "unknown")
    if status != "completed":
        cfg = info.get("config") or {}
        done = info.get("epochs_completed")
        progress = f" after {done} of {cfg.get('epochs', '?')} epochs" if done is not None else ""
        failure = f": {info['failure']}" if info.get("failure") else ""
        advice = ""
        if status in ("interrupted", "failed", "running"):
            advice = f" Resume it with: {commands.resume()}"
        warnings.append(f"This run's status is '{status}'{progress}{failure}; its numbers may be those of an "
                        f"unfinished model.{advice}")
    if metrics is None:
        warnings.append("metrics.json is missing or unreadable: there are no test metrics to report"
                        + (f" ({'; '.join(notes)})" if notes else "") + ".")
    return warnings


def _reference_baseline(flag: str, size: int, model: str):
    """The published MedMNIST v2 number for this setting, or None."""
    return reference_baseline(flag, size, model)


def _verdict(layout: RunLayout, info: dict, metrics: dict | None, reader: _Reader) -> Section:
    cfg, env, dataset = info.get("config") or {}, info.get("environment") or {}, info.get("dataset") or {}
    test = (metrics or {}).get("test") or {}
    intervals = test.get("intervals") or {}
    flag, size, model = cfg.get("dataset") or dataset.get("flag"), cfg.get("size") or dataset.get("size"), cfg.get(
        "model")
    baseline = _reference_baseline(flag, int(size), model) if flag and size and model else None
    scores = []
    for key, label in (("auc", "AUC"), ("acc", "ACC"), ("balanced_acc", "balanced accuracy")):
        if key in test or key in intervals:
            scores.append({"key": key, "label": label, "value": test.get(key), "interval": intervals.get(key)})
    data = {
        "dataset": flag, "size": size, "task": dataset.get("task") or (metrics or {}).get("task"),
        "spatial_dims": dataset.get("spatial_dims"), "class_names": dataset.get("class_names") or
        (metrics or {}).get("class_names") or [], "n_samples": dataset.get("n_samples") or {},
        "model": model, "pretrained": bool(cfg.get("pretrained")),
        "scores": scores, "n_test": test.get("n"), "has_intervals": bool(intervals),
        "val": {k: ((metrics or {}).get("val") or {}).get(k) for k in ("auc", "acc")},
        "best_epoch": (metrics or {}).get("best_epoch"), "epochs_run": (metrics or {}).get("epochs_run"),
        "selected_by": (metrics or {}).get("selected_by"),
        "baseline": baseline,
        "wall_seconds": (info.get("metrics") or {}).get("wall_seconds"),
        "created": info.get("created"), "finished": info.get("finished"),
        "device": env.get("device"), "gpu": env.get("gpu"), "cpu": env.get("cpu"),
        "amp_dtype": env.get("amp_dtype"), "threads": env.get("threads"),
        "world_size": env.get("world_size") or cfg.get("world_size") or 1,
        "status": info.get("status", "unknown"),
    }
    data["majority"] = majority_class(test.get("per_class") or {}, (metrics or {}).get("task"))
    if baseline is not None and _finite(test.get("auc")):
        data["auc_minus_baseline"] = test["auc"] - baseline.auc
    if baseline is not None and _finite(test.get("acc")):
        data["acc_minus_baseline"] = test["acc"] - baseline.acc
    return Section("verdict", "The verdict", data=data, notes=reader.take_notes())


def majority_class(per_class: dict, task: str | None) -> dict | None:
    """The most common class of a split and the accuracy of always predicting it (single-label tasks).

    >>> majority_class({"a": {"support": 30}, "b": {"support": 90}}, "binary-class")
    {'name': 'b', 'support': 90, 'n': 120, 'share': 0.75}
    """
    if task == MULTILABEL or not per_class:
        return None
    supports = {name: int(values.get("support") or 0) for name, values in per_class.items()}
    total = sum(supports.values())
    if not total:
        return None
    name = max(supports, key=supports.get)
    return {"name": name, "support": supports[name], "n": total, "share": supports[name] / total}


def _training(layout: RunLayout, info: dict, metrics: dict | None, reader: _Reader) -> Section:
    cfg = info.get("config") or {}
    history = reader.csv(layout.history_csv) or []
    recipe_keys = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_epochs",
                   "label_smoothing", "mixup", "augment", "dropout", "select", "patience")
    data = {
        "status": info.get("status", "unknown"), "failure": info.get("failure"),
        "epochs_completed": info.get("epochs_completed"), "epochs": cfg.get("epochs"),
        "stopped_early": (metrics or {}).get("stopped_early"),
        "recipe_source": cfg.get("recipe"), "recipe": [(k, cfg.get(k)) for k in recipe_keys if k in cfg],
        "config": list(cfg.items()), "environment": list((info.get("environment") or {}).items()),
        "history": history, "history_columns": list(history[0]) if history else [],
        "command": reproduce_command(cfg, info.get("environment")) if cfg else None,
        "command_as_run": cfg.get("command"),
        "tensorboard_dir": info.get("tensorboard_dir"),
    }
    figures = reader.figure(layout.training_curves_png, "Training curves",
                            "Loss, AUC and accuracy per epoch on the training and validation splits, and the learning "
                            "rate. Look for validation curves that turn away from the training ones (overfitting) and "
                            "for the epoch whose weights were kept.")
    return Section("training", "Training", data=data, figures=figures, notes=reader.take_notes())


def _classes(layout: RunLayout, info: dict, metrics: dict | None, reader: _Reader) -> Section:
    test = (metrics or {}).get("test") or {}
    task = (metrics or {}).get("task")
    per_class = test.get("per_class") or {}
    rows = [{"name": name, **values} for name, values in per_class.items()]
    matrix = test.get("confusion_matrix")
    data = {"task": task, "rows": rows, "macro_f1": test.get("macro_f1"), "n": test.get("n"),
            "has_auc": any("auc" in r for r in rows), "multilabel": task == MULTILABEL,
            "class_names": (metrics or {}).get("class_names") or list(per_class)}
    if isinstance(matrix, list):
        data["matrix"] = matrix
    elif isinstance(matrix, dict):  # multi-label: one 2x2 [[TN, FP], [FN, TP]] per label
        data["label_matrices"] = [{"name": k, "tn": m[0][0], "fp": m[0][1], "fn": m[1][0], "tp": m[1][1]}
                                  for k, m in matrix.items()]
    figures = reader.figure(layout.confusion_matrix_png, "Confusion matrix (test)",
                            "Rows are the true classes, columns the predicted ones; the diagonal holds the right "
                            "answers. Look for a class the model rarely predicts, or two classes it confuses.")
    figures += reader.figure(analysis_file(layout, "inference_dir", "roc_pr_png"),
                             "ROC and precision–recall curves (test)",
                             "Each class against the rest; the dot is where the model's own decision sits. The "
                             "precision–recall panel is the one to read for a rare class: its dotted line is the "
                             "precision of a random model (the prevalence).")
    figures += reader.figure(layout.sample_predictions_png, "Sample test predictions",
                             "An evenly spaced sample of test images with the true label, the prediction and its "
                             "confidence; wrong predictions are marked. Look at what the wrong ones have in common.")
    return Section("classes", "Per class", data=data, figures=figures, notes=reader.take_notes())


def _calibration(layout: RunLayout, reader: _Reader, commands: Commands) -> Section:
    section = Section("calibration", "Calibration")
    files = ANALYSIS_FILES["calibration_dir"]
    if layout.calibration_dir.is_dir():
        summary = reader.json(analysis_file(layout, "calibration_dir", "summary_json"))
        section.data["calibration"] = {
            "scalars": _scalars(summary) if isinstance(summary, dict) else [],
            "report_md": reader.text(analysis_file(layout, "calibration_dir", "report_md")),
        }
        for path in reader.glob(layout.calibration_dir / files["figures_glob"]):
            section.figures.append(Figure(path, path.stem.replace("_", " ").capitalize(),
                                          "From explain.py calibrate. Look at how far the curve strays from the "
                                          "diagonal: there, the stated confidence is not the observed accuracy."))
    else:
        section.pending.append(commands.pending("recalibration and its report", "explain.py", "calibrate"))
    if layout.inference_dir.is_dir():
        record = reader.json(analysis_file(layout, "inference_dir", "calibration_json"))
        if isinstance(record, dict):
            section.data["inference"] = {k: record.get(k) for k in ("split", "n", "accuracy", "ece", "brier",
                                                                   "n_bins")}
        section.figures += reader.figure(analysis_file(layout, "inference_dir", "reliability_png"),
                                         "Reliability diagram",
                                         "Accuracy against confidence in equal-width bins, as the model came out of "
                                         "training. Bars below the diagonal mean over-confidence; the gap, weighted "
                                         "by how many images fall in each bin, is the ECE.")
    else:
        section.pending.append(commands.pending("ECE, Brier score and the reliability diagram",
                                                "analyze_inference.py"))
    section.notes += reader.take_notes()
    return section


def _scalars(record: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Numbers, strings and booleans of a JSON object (one level of nesting), as (key, value) rows."""
    rows = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, (int, float, str, bool)) or value is None:
            rows.append((name, value))
        elif isinstance(value, dict) and not prefix:
            rows += _scalars(value, prefix=f"{name}.")
    return rows


def _explanations(layout: RunLayout, info: dict, reader: _Reader, commands: Commands) -> Section:
    section = Section("explanations", "Explanations")
    methods = []
    for folder, what, subcommand in (("gradcam_dir", "Grad-CAM heatmaps", "gradcam"),
                                     ("saliency_dir", "saliency maps", "saliency")):
        found = [_explanation_method(layout, folder, stem, reader) for stem in ANALYSIS_FILES[folder]["stems"]]
        found = [m for m in found if m is not None]
        if not found:
            section.pending.append(commands.pending(what, "explain.py", subcommand))
        methods += found
    section.data["methods"] = methods
    for method in methods:
        section.figures += method["gallery"] + ([method["faithfulness_figure"]] if method["faithfulness_figure"] else [])
    if layout.inference_dir.is_dir():
        errors = reader.figure(analysis_file(layout, "inference_dir", "confident_errors_png"),
                               "The most confident errors",
                               "Test images the model got wrong with the highest confidence. Look for a pattern: a "
                               "label that may be wrong, an artefact, a kind of image the training split lacks.")
        section.figures += errors
        section.data["confident_errors"] = errors[0] if errors else None
    else:
        section.pending.append(commands.pending("the most confident errors", "analyze_inference.py"))
    section.notes += reader.take_notes()
    return section


def _explanation_method(layout: RunLayout, folder: str, stem: str, reader: _Reader) -> dict | None:
    """One method's summary and figures; gallery figures with confident errors first."""
    summary = reader.json(explanation_file(layout, folder, "summary_json", stem))
    pages = reader.glob(explanation_file(layout, folder, "pages_glob", stem))
    volumes = reader.glob(explanation_file(layout, folder, "volumes_glob", stem))
    if summary is None and not pages and not volumes:
        return None
    summary = summary if isinstance(summary, dict) else {}
    label = summary.get("method") or stem.replace("_", " ")
    maps = reader.npz(explanation_file(layout, folder, "maps_npz", stem))
    errors = _errors_by_image(maps)
    gallery = []
    if pages:
        for number, path in enumerate(pages):
            shown = errors[number * PAGE_SIZE:(number + 1) * PAGE_SIZE] if errors is not None else None
            gallery.append(_gallery_entry(path, shown, f"{label}, page {number + 1} of {len(pages)}"))
    else:
        by_id = dict(zip(maps["ids"].tolist(), errors)) if errors is not None else {}
        for path in volumes:
            image_id = int(path.stem.rsplit("_", 1)[-1])
            shown = [by_id[image_id]] if image_id in by_id else None
            gallery.append(_gallery_entry(path, shown, f"{label}, volume {image_id}"))
    # confident errors first, then the other figures in their own order
    gallery.sort(key=lambda g: (-(g["top_error"] if g["top_error"] is not None else -1.0)))
    faithfulness = reader.figure(explanation_file(layout, folder, "faithfulness_png", stem), f"{label}: faithfulness",
                                 "Deletion (left): the score of the explained class as the most salient pixels are "
                                 "removed first; insertion (right): as they are added back. A faithful map falls "
                                 "faster and rises faster than the random order drawn beside it.")
    return {"stem": stem, "label": label, "summary": summary, "faithfulness": summary.get("faithfulness"),
            "n_wrong": int(sum(1 for e in errors if e[0])) if errors is not None else None,
            "ordered_by_errors": errors is not None, "primary": folder == "gradcam_dir",
            "gallery": [Figure(g["path"], g["title"], g["caption"]) for g in gallery],
            "faithfulness_figure": faithfulness[0] if faithfulness else None}


def _errors_by_image(maps: dict | None) -> list[tuple[bool, float]] | None:
    """(wrong, confidence) per explained image, in the order of its figures; None when unknown."""
    if not maps or not {"ids", "labels", "predictions", "probabilities"} <= set(maps):
        return None
    labels = np.asarray(maps["labels"]).reshape(len(maps["ids"]), -1)
    pred = np.asarray(maps["predictions"]).reshape(len(maps["ids"]), -1)
    probs = np.asarray(maps["probabilities"], dtype=np.float64)
    wrong = (labels != pred).any(axis=1)
    if labels.shape[1] > 1:  # multi-label: mean confidence of the 0/1 decisions
        confidence = np.where(pred == 1, probs, 1 - probs).mean(axis=1)
    else:  # the predicted class's probability (binary: the last column decides at 0.5, so this is its side)
        confidence = probs[np.arange(len(pred)), pred[:, 0]]
    return [(bool(w), float(c)) for w, c in zip(wrong, confidence)]


def _gallery_entry(path: Path, shown: list[tuple[bool, float]] | None, title: str) -> dict:
    if shown is None:
        caption = ("Each image beside its heatmap and the overlay; warm colours mark the regions that raised the "
                   "explained class's score. Titles in red are wrong predictions.")
        return {"path": path, "title": title, "caption": caption, "top_error": None}
    wrong = [c for w, c in shown if w]
    if wrong:
        caption = (f"{len(wrong)} of {len(shown)} predictions here are wrong (red titles), the most confident at "
                   f"{100 * max(wrong):.0f}%. Check whether the heat sits on the lesion or on borders, text or "
                   "background.")
    else:
        caption = (f"All {len(shown)} predictions here are right. Check that the heat sits on the anatomy that "
                   "decides the class, not on borders or background.")
    return {"path": path, "title": title, "caption": caption, "top_error": max(wrong) if wrong else None}


def _uncertainty(layout: RunLayout, reader: _Reader, commands: Commands) -> Section:
    section = Section("uncertainty", "Uncertainty")
    if not layout.uncertainty_dir.is_dir():
        section.pending.append(commands.pending("MC-dropout uncertainty", "explain.py", "uncertainty"))
        return section
    summary = reader.json(analysis_file(layout, "uncertainty_dir", "summary_json"))
    if isinstance(summary, dict):
        aurocs = summary.get("error_auroc") or {}
        finite = {k: v for k, v in aurocs.items() if _finite(v)}
        section.data = {
            "summary": summary, "dropout": (summary.get("dropout") or {}).get("text"),
            "error_auroc": [(k, v, (summary.get("error_auroc_interval") or {}).get(k) or {}) for k, v in aurocs.items()],
            "threshold_choice": summary.get("threshold_choice") or {},
            "best_measure": max(finite, key=finite.get) if finite else None,
            "per_class": summary.get("per_class") or [],
        }
    section.figures += reader.figure(analysis_file(layout, "uncertainty_dir", "accuracy_coverage_png"),
                                     "Accuracy against coverage",
                                     "Accuracy on the most confident share of images, as less confident ones are set "
                                     "aside. A curve that rises as coverage falls means the confidence is worth "
                                     "trusting; a flat one means it is not.")
    section.figures += reader.figure(analysis_file(layout, "uncertainty_dir", "distributions_png"),
                                     "Uncertainty of right and wrong predictions",
                                     "Each measure's distribution for right and for wrong predictions. The more the "
                                     "two separate, the better that measure flags the mistakes.")
    section.notes += reader.take_notes()
    return section


def _robustness(layout: RunLayout, reader: _Reader, commands: Commands) -> Section:
    section = Section("robustness", "Robustness")
    if not layout.robustness_dir.is_dir():
        section.pending.append(commands.pending("perturbation sweeps", "explain.py", "robustness"))
        return section
    rows = reader.csv(analysis_file(layout, "robustness_dir", "summary_csv")) or []
    info = reader.json(analysis_file(layout, "robustness_dir", "summary_json"))
    info = info if isinstance(info, dict) else {}
    per_perturbation = [r for r in rows if r.get("perturbation") != "overall"]
    overall = next((r for r in rows if r.get("perturbation") == "overall"), None)

    def harm(row):  # the larger the mean corruption error, the worse; ties by the lower mean balanced accuracy
        mce = row.get("mce")
        return (mce if _finite(mce) else -math.inf, -(row.get("mean_balanced_acc") or 0.0))

    ranked = sorted(per_perturbation, key=harm, reverse=True)
    section.data = {"rows": ranked, "overall": overall, "worst": ranked[:WORST_SHOWN],
                    "clean": info.get("clean"), "tolerance": info.get("tolerance"),
                    "n_images": info.get("n_images"), "severities": info.get("severities"),
                    "clean_matches_run_metrics": info.get("clean_matches_run_metrics"),
                    "descriptions": {k: v.get("description") for k, v in (info.get("perturbations") or {}).items()}}
    section.figures += reader.figure(analysis_file(layout, "robustness_dir", "heatmap_png"),
                                     "Balanced accuracy per perturbation and severity",
                                     "Each row a perturbation, each column a severity (1 mild to 5 strong); the "
                                     "colour scale starts at chance, so a model answering one class everywhere is "
                                     "dark (†: collapsed). Look for rows that darken early: the model fails there at "
                                     "perturbations a scanner could produce.")
    section.figures += reader.figure(analysis_file(layout, "robustness_dir", "measures_png"),
                                     "Every measure against severity",
                                     "AUC, accuracy, calibration error, prediction flips and saliency shift as each "
                                     "perturbation grows. Steep curves are the fragile directions.")
    examples = []
    for path in reader.glob(analysis_file(layout, "robustness_dir", "examples_glob")):
        image_id = path.stem.rsplit("_", 1)[-1].lstrip("0") or "0"
        examples.append(Figure(path, f"Image {image_id} at every severity",
                               "One test image under each perturbation from mild to strong, with its saliency. Look "
                               "at whether the map stays on the same region as the image degrades."))
    section.data["examples"] = examples
    section.figures += examples
    section.notes += reader.take_notes()
    return section


def _inside(layout: RunLayout, reader: _Reader, commands: Commands) -> Section:
    section = Section("inside", "Inside the network")
    if layout.inference_dir.is_dir():
        for key, title, caption in (
                ("embedding_png", "Test embeddings in 2D",
                 "The penultimate-layer features projected to two dimensions, coloured by class, wrong predictions "
                 "marked. Separate clusters mean the features tell the classes apart."),
                ("layer_activation_png", "Mean activation per layer",
                 "The mean activation of each block on the test split. Look for a block whose activations "
                 "collapse toward zero (dead channels)."),
                ("neuron_classes_png", "Channel selectivity per class",
                 "How much each channel's mean activation differs between classes, block by block. Bright "
                 "rows are channels that respond to one class."),
                ("neuron_samples_png", "Last block's channels per image",
                 "Per-image activations of the last block's channels, images grouped by class. Banded "
                 "structure means class-specific channels.")):
            section.figures += reader.figure(analysis_file(layout, "inference_dir", key), title, caption)
    else:
        section.pending.append(commands.pending("activations and embeddings", "analyze_inference.py"))
    if layout.complexity_dir.is_dir():
        record = reader.json(analysis_file(layout, "complexity_dir", "summary_json"))
        if isinstance(record, dict):
            section.data["complexity"] = {
                "rows": record.get("summary") or [], "tensors": record.get("tensors"),
                "weights": record.get("weights"), "checkpoint": record.get("checkpoint"),
                "epoch": record.get("epoch"), "settings": record.get("settings") or {},
                "initial_weights": record.get("initial_weights")}
        for key, title, caption in (
                ("lmc_per_layer_png", "LMC complexity per layer",
                 "López-Ruiz–Mancini–Calbet complexity (entropy × disequilibrium) of each weight tensor's "
                 "histogram, in network order. Low values are either near-uniform or near-constant weights."),
                ("sampen_per_layer_png", "Sample Entropy per layer",
                 "Exact Sample Entropy of each flattened weight tensor. Lower means more regular, repeating "
                 "structure; training usually lowers it from the random start."),
                ("lmc_by_type_png", "LMC complexity by layer type",
                 "The same complexity grouped by convolution, linear and normalization weights.")):
            section.figures += reader.figure(analysis_file(layout, "complexity_dir", key), title, caption)
    else:
        section.pending.append(commands.pending("weight complexity (LMC, Sample Entropy)", "analyze_complexity.py"))
    section.notes += reader.take_notes()
    return section


_EXPORT_LABELS = {"pytorch_fp32": "PyTorch FP32 (eager)", "onnx_fp32": "ONNX FP32",  # as deploy.MODEL_LABELS
                  "onnx_int8_static": "ONNX INT8 static", "onnx_int8_dynamic": "ONNX INT8 dynamic"}


def _export(layout: RunLayout, reader: _Reader, commands: Commands) -> Section:
    section = Section("export", "Export")
    report = reader.json(analysis_file(layout, "export_dir", "report_json"))
    if not isinstance(report, dict):
        section.pending.append(commands.pending("ONNX export, INT8 quantization and latency", "quantize.py"))
        section.notes += reader.take_notes()
        return section
    latency = report.get("latency") or {}
    batch = latency.get("batch_size")
    rows = []
    for key, model in (report.get("models") or {}).items():
        cpu = (latency.get("cpu") or {}).get(key) or {}
        one = cpu.get("batch1") or {}
        rows.append({"label": _EXPORT_LABELS.get(key, key), "file": model.get("file"),
                     "size_mb": model.get("size_mb"), "size_ratio": model.get("size_ratio"),
                     "auc": model.get("auc"), "acc": model.get("acc"), "auc_delta": model.get("auc_delta"),
                     "agreement": model.get("agreement"), "p50_ms": one.get("p50_ms"), "p95_ms": one.get("p95_ms"),
                     "p99_ms": one.get("p99_ms"),
                     "throughput": (cpu.get(f"batch{batch}") or {}).get("images_per_s")})
    env = report.get("environment") or {}
    section.data = {"rows": rows, "verification": report.get("verification") or {}, "test": report.get("test") or {},
                    "batch_size": batch, "threads": latency.get("threads"), "runs": latency.get("runs"),
                    "cpu": env.get("cpu"), "gpu": latency.get("gpu"), "checkpoint": report.get("checkpoint"),
                    "notes": (report.get("targets") or {}).get("notes") or [],
                    "opset": (report.get("onnx") or {}).get("opset")}
    section.notes += reader.take_notes()
    return section


def _other_figures(layout: RunLayout, shown: set[Path], reader: _Reader) -> Section:
    """Figures in the run folder that no section above places (e.g. an analysis of another split)."""
    section = Section("more", "More figures")
    for path in sorted(layout.root.rglob("*.png")):
        relative = path.relative_to(layout.root)
        if path in shown or any(part.startswith(".") for part in relative.parts) or not reader.has(path):
            continue
        section.figures.append(Figure(path, relative.as_posix(),
                                      "A figure of the run folder that the sections above do not discuss; see the "
                                      "script that wrote it (run.json lists it under artifacts)."))
    return section
