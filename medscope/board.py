"""What a run shows in TensorBoard besides its scalars: its figures as images, its metrics as a table.

Users open ``tensorboard --logdir runs``. Every key figure a script writes into
the run folder is also logged into the run's TensorBoard folder (IMAGES tab,
tag ``figures/<file stem>``), and train.py logs the test metrics with their
95% intervals and the published baseline as a Markdown table (TEXT tab, tag
``metrics/test``). Each script adds its own event file to the folder;
TensorBoard reads all event files of a folder as one run.

Logging to TensorBoard is a convenience beside the run folder, which stays
the record: a TensorBoard folder that cannot be written costs a one-line
warning, never the analysis.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from medscope.runs import DEFAULT_RUNS_DIR

FIGURE_TAG = "figures/{stem}"
METRICS_TAG = "metrics/test"
EVENT_FILE_MARK = ".medscope-"  # event files of the analysis scripts end with .medscope-<script>


def read_png(path) -> np.ndarray:
    """A PNG file as an (H, W, 3) uint8 array (alpha dropped: TensorBoard shows it on white anyway)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def figure_tag(path) -> str:
    """``figures/<file stem>``: one image series per figure file."""
    return FIGURE_TAG.format(stem=Path(path).stem)


def log_figures(writer, paths, step: int) -> list[str]:
    """Add each PNG of ``paths`` as an image at ``step``; returns the tags."""
    tags = []
    for path in paths:
        tag = figure_tag(path)
        writer.add_image(tag, read_png(path), step, dataformats="HWC")
        tags.append(tag)
    return tags


def _number(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def metrics_table(test: dict, baseline: dict | None) -> str:
    """The test metrics as a Markdown table: value, 95% interval, and the published baseline where there is one.

    >>> print(metrics_table({"auc": 0.9, "acc": 0.8, "intervals": {"auc": {"low": 0.85, "high": 0.95}}},
    ...                     {"method": "ResNet-18 (28)", "auc": 0.901, "acc": 0.863}))
    | metric | test | 95% interval | ResNet-18 (28), published |
    |---|---|---|---|
    | AUC | 0.900 | [0.850, 0.950] | 0.901 |
    | ACC | 0.800 | – | 0.863 |
    """
    intervals = test.get("intervals") or {}
    published = f"{baseline['method']}, published" if baseline else "published baseline"
    lines = [f"| metric | test | 95% interval | {published} |", "|---|---|---|---|"]
    for key, label in (("auc", "AUC"), ("acc", "ACC"), ("balanced_acc", "balanced accuracy"),
                       ("macro_f1", "macro F1")):
        if key not in test and key not in intervals:
            continue
        entry = intervals.get(key)
        interval = f"[{_number(entry['low'])}, {_number(entry['high'])}]" if entry else "–"
        reference = _number(baseline[key]) if baseline and key in baseline else "–"
        lines.append(f"| {label} | {_number(test.get(key, float('nan')))} | {interval} | {reference} |")
    return "\n".join(lines)


def log_to_run_folder(tensorboard_dir, *, figures=(), text: dict[str, str] | None = None, step: int = 0,
                      suffix: str = "") -> str | None:
    """Open the run's TensorBoard folder, add ``figures`` (PNG paths) and ``text`` ({tag: Markdown}), close.

    Returns None, or a one-line warning when the folder cannot be written
    (the figures are in the run folder either way).
    """
    from torch.utils.tensorboard import SummaryWriter

    try:
        os.makedirs(tensorboard_dir, exist_ok=True)
        writer = SummaryWriter(log_dir=str(tensorboard_dir), filename_suffix=suffix)
        try:
            log_figures(writer, figures, step)
            for tag, markdown in (text or {}).items():
                writer.add_text(tag, markdown, step)
        finally:
            writer.close()
    except OSError as exc:
        return f"warning: the figures were not added to TensorBoard ({tensorboard_dir}: {exc.strerror or exc})"
    return None


def run_tensorboard_dir(run, runs_dir=None) -> Path:
    """The TensorBoard folder of ``run``.

    ``<runs_dir>/<run name>`` when ``runs_dir`` is given (the user named it).
    Otherwise the folder train.py wrote the run's events into, as run.json
    records it (``tensorboard_dir``, else ``<config runs_dir>/<run name>``),
    whatever the working folder: a ``runs/<run name>`` there may belong to
    another run of the same name (another results folder). When neither exists
    any more: ``runs/<run name>``, the default of DESIGN.md.
    """
    if runs_dir is not None:
        return run.layout.tensorboard_dir(runs_dir)
    info = run.info()
    recorded = [Path(info["tensorboard_dir"])] if info.get("tensorboard_dir") else []
    config_runs_dir = (info.get("config") or {}).get("runs_dir")
    if config_runs_dir:
        recorded.append(run.layout.tensorboard_dir(config_runs_dir))
    return next((folder for folder in recorded if folder.is_dir()), run.layout.tensorboard_dir(DEFAULT_RUNS_DIR))


def log_run_figures(run, runs_dir, figures, *, script: str) -> str | None:
    """An analysis script's PNG figures into the run's TensorBoard folder (:func:`run_tensorboard_dir`; ``runs_dir``
    None: the one run.json records), at the run's last epoch."""
    step = int(run.info().get("epochs_completed") or 0)
    pngs = [path for path in figures if Path(path).suffix == ".png"]
    if not pngs:
        return None
    return log_to_run_folder(run_tensorboard_dir(run, runs_dir), figures=pngs, step=step,
                             suffix=f"{EVENT_FILE_MARK}{script}")
