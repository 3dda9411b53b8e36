"""One run's stored scores and labels on a split, with what the comparison needs from run.json.

``train.py`` keeps the test split's probabilities in ``inference_outputs.pt``
(its ``split`` entry says which split, ``"test"``); nothing is recomputed here,
so a comparison needs neither the data files nor the checkpoints. The file is
read with ``weights_only=True`` (a results folder may come from someone else)
and memory-mapped, so its large parts (embeddings, activations) are not read.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from medscope.errors import UsageError
from medscope.runs import Run
from medscope.tasks import NAMES as TASKS

SPLITS = ("test", "val")

# run.json configuration entries that say where or how a run was executed, not what was trained:
# runs that differ only in these (and the seed) are seeds of one configuration.
EXECUTION_KEYS = frozenset({"seed", "device", "data_dir", "results_dir", "runs_dir", "run_name", "command",
                            "workers", "memmap", "skip_md5", "deterministic"})


@dataclass(frozen=True, eq=False)
class RunScores:
    """A run's scores and labels on one split, and its configuration.

    Attributes
    ----------
    run : Run
    split : str
        ``"test"`` or ``"val"``.
    dataset, size, model : str, int, str
        From run.json's configuration.
    seed : int or None
        The training seed (None when run.json does not record one).
    status : str
        The run's true status (:meth:`medscope.runs.Run.status`).
    task : str
        MedMNIST task name.
    class_names : tuple of str
    labels : ndarray
        ``(n, 1)`` class indices, or ``(n, L)`` 0/1 for multi-label tasks.
    probabilities : ndarray (n, K) float64
        Exactly the stored float32 values, widened (as ``metrics.evaluate`` does).
    indices : ndarray (n,) or None
        Row positions in the split, when stored.
    recorded : dict
        ``metrics.json``'s entry for the split (``auc``, ``acc``, ...), or ``{}``.
    config : dict
        run.json's configuration.
    note : str or None
        One sentence for a reader when the run did not complete.
    """

    run: Run
    split: str
    dataset: str
    size: int
    model: str
    seed: int | None
    status: str
    task: str
    class_names: tuple
    labels: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    indices: np.ndarray | None = field(repr=False)
    recorded: dict = field(repr=False)
    config: dict = field(repr=False)
    note: str | None = None

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def split_key(self) -> tuple[str, int]:
        """Runs with equal keys were evaluated on the same split of the same dataset file."""
        return (self.dataset, self.size)

    @property
    def dataset_label(self) -> str:
        """``breastmnist28``, as run names write it."""
        return f"{self.dataset}{self.size}"

    @property
    def configuration(self) -> tuple:
        """What was trained, without the seed and where it ran (:data:`EXECUTION_KEYS`)."""
        return configuration_key(self.config)


def configuration_key(config: dict) -> tuple:
    """A hashable key of a run configuration without its execution entries.

    >>> configuration_key({"model": "cnn", "seed": 3, "lr": 0.1}) == configuration_key({"lr": 0.1, "model": "cnn"})
    True
    """
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in config.items() if k not in EXECUTION_KEYS))


def _load_outputs(path, name: str, task: str | None, num_classes: int | None) -> dict:
    """The checked outputs (:func:`medscope.analysis.outputs.read_outputs`); the run's name leads the message."""
    from medscope.analysis.outputs import read_outputs

    try:
        return read_outputs(path, task=task, num_classes=num_classes, required=("probabilities", "labels"))
    except UsageError as exc:
        raise UsageError(f"run {name}: {exc}") from None


def _array(value, what: str, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001
        raise UsageError(f"run {name}: {what} in inference_outputs.pt is not an array") from None


def load_run_scores(run: Run, split: str = "test") -> RunScores:
    """Read a run's scores, labels and configuration for ``split``.

    Parameters
    ----------
    run : Run
    split : {"test", "val"}

    Returns
    -------
    RunScores

    Raises
    ------
    UsageError
        The run has no scores for ``split`` (only test scores are stored by
        ``train.py``), or its files are damaged or inconsistent.
    """
    if split not in SPLITS:
        raise UsageError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    info = run.info()
    name = run.name
    config = info.get("config") or {}
    dataset_record = info.get("dataset") or {}
    dataset = config.get("dataset") or dataset_record.get("flag")
    size = config.get("size") or dataset_record.get("size")
    model = config.get("model") or (info.get("model") or {}).get("name")
    if not dataset or not size or not model:
        raise UsageError(f"run {name}: run.json does not say which dataset, size and model it trained "
                         "(it never started training?)")
    status = run.status(info)
    layout = run.layout
    try:
        from medscope.data import dataset_info

        expected = dataset_info(str(dataset), int(size))
    except (UsageError, TypeError, ValueError):
        expected = None  # a dataset this version does not know: the file's own task is checked below
    try:
        outputs = _load_outputs(layout.inference_outputs, name, expected.task if expected else None,
                                expected.num_classes if expected else None)
    except FileNotFoundError:
        raise UsageError(f"run {name} has no {layout.inference_outputs.name} (status: {status}); "
                         "it has no scores to compare yet") from None
    stored = outputs.get("split", "test")
    if stored != split:
        raise UsageError(f"run {name} stores no {split} scores ({layout.inference_outputs.name} holds the "
                         f"{stored} split; train.py keeps only test-split scores); compare with --split {stored}")
    for key in ("probabilities", "labels"):
        if key not in outputs:
            raise UsageError(f"run {name}: {layout.inference_outputs.name} lacks {key!r}")
    task = outputs.get("task") or dataset_record.get("task")
    if task not in TASKS:
        raise UsageError(f"run {name}: unknown task {task!r} in {layout.inference_outputs.name}")
    probabilities = _array(outputs["probabilities"], "probabilities", name).astype(np.float64)
    labels = _array(outputs["labels"], "labels", name)
    if labels.ndim == 1:
        labels = labels[:, None]
    if probabilities.ndim != 2 or labels.ndim != 2 or probabilities.shape[0] != labels.shape[0] \
            or probabilities.shape[0] == 0:
        raise UsageError(f"run {name}: {layout.inference_outputs.name} holds probabilities of shape "
                         f"{probabilities.shape} and labels of shape {labels.shape}; expected one row per image")
    if not np.all(np.isfinite(probabilities)):
        raise UsageError(f"run {name}: its stored probabilities contain NaN or infinite values")
    indices = outputs.get("indices")
    indices = None if indices is None else _array(indices, "indices", name).reshape(-1)
    class_names = tuple(outputs.get("class_names") or dataset_record.get("class_names") or ())
    recorded = _recorded_metrics(layout.metrics_json, split)
    seed = config.get("seed")
    return RunScores(run=run, split=split, dataset=str(dataset), size=int(size), model=str(model),
                     seed=int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None,
                     status=status, task=task, class_names=class_names, labels=labels.astype(np.int64),
                     probabilities=probabilities, indices=indices, recorded=recorded, config=dict(config),
                     note=run.unfinished_note(info))


def _recorded_metrics(path, split: str) -> dict:
    """metrics.json's entry for ``split`` ({} when absent or unreadable: the scores are what count)."""
    try:
        entry = json.loads(path.read_text()).get(split)
    except (OSError, ValueError, AttributeError, RecursionError):
        return {}
    if not isinstance(entry, dict):
        return {}
    return {k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (not isinstance(v, float) or not math.isnan(v))}
