"""Reading a run's ``inference_outputs.pt``: one reader, every part checked before use.

``train.py`` stores the test split's outputs there: ``logits`` and
``probabilities`` (N, K), ``labels`` (N, 1) class indices or (N, L) 0/1 for
multi-label, and, for the analyses, ``embeddings``, ``layer_names`` and
``activations``. analyze_inference, ``explain.py calibrate``, compare.py and
the report all read it through :func:`read_outputs`, so a damaged or foreign
file is refused alike, in one line that names the part at fault
(:class:`~medscope.errors.UsageError`), and never reaches NumPy or
scikit-learn half-checked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medscope import tasks
from medscope.errors import UsageError

SCORE_KEYS = ("logits", "probabilities")
PROBABILITY_TOLERANCE = 1e-3  # softmax rows sum to 1 within float32 rounding


def read_outputs(path, *, task: str | None = None, num_classes: int | None = None,
                 required: tuple[str, ...] = ("logits", "probabilities", "labels"), fix: str = "") -> dict:
    """The dict ``inference_outputs.pt`` holds, with its score and label parts checked.

    Parameters
    ----------
    path : path of the file
    task, num_classes : what the run's dataset says (its MedMNIST task and output
        width: 2 for a binary task, one column per label for multi-label); the
        stored ``task`` and the width of ``logits`` / ``probabilities`` must agree.
    required : the parts the caller uses; each must be present.
    fix : what to tell the user to do about a bad file (appended after ``;``).

    Checks, in order: readable with ``weights_only=True``; a dict; the required
    parts present; each of ``logits``, ``probabilities`` a floating tensor
    (N, K) with N >= 1, finite, both of the same shape, K = ``num_classes``;
    ``probabilities`` in [0, 1], rows summing to 1 for single-label tasks;
    ``labels`` an integer or 0/1 tensor with N rows: (N, 1) class indices in
    [0, K) or, for multi-label, (N, K) of 0 and 1.

    Raises
    ------
    FileNotFoundError
        The file does not exist (callers say what writes it).
    UsageError
        Anything else: one line naming the file and the part.
    """
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        outputs = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{path} is not readable ({first}){hint}") from None
    if not isinstance(outputs, dict):
        raise UsageError(f"{path} is not a medscope inference file (it holds a {type(outputs).__name__}){hint}")
    missing = [key for key in required if key not in outputs]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}{hint}")
    stored_task = outputs.get("task", task)
    if task is not None and stored_task != task:
        raise UsageError(f"{path} is for a {stored_task} task, but the run's dataset is {task}{hint}")
    if stored_task is not None and stored_task not in tasks.NAMES:
        raise UsageError(f"{path} names an unknown task {stored_task!r}{hint}")
    shape = None
    for key in SCORE_KEYS:
        if key in outputs:
            shape = _check_scores(outputs[key], key, path, hint, shape, num_classes)
    if "probabilities" in outputs:
        _check_probabilities(outputs["probabilities"], stored_task, path, hint)
    if "labels" in outputs:
        _check_labels(outputs["labels"], stored_task, shape, path, hint)
    return outputs


def _check_scores(value, key: str, path: Path, hint: str, shape, num_classes: int | None):
    if not isinstance(value, torch.Tensor):
        raise UsageError(f"{path}: {key} is a {type(value).__name__}, not a tensor{hint}")
    if not value.is_floating_point() or value.ndim != 2 or value.shape[0] < 1:
        raise UsageError(f"{path}: {key} must be a floating-point matrix with one row per image, not "
                         f"{str(value.dtype).removeprefix('torch.')} of shape {tuple(value.shape)}{hint}")
    if shape is not None and tuple(value.shape) != shape:
        raise UsageError(f"{path}: {key} has shape {tuple(value.shape)} but the logits {shape}{hint}")
    if num_classes is not None and value.shape[1] != num_classes:
        raise UsageError(f"{path}: {key} has {value.shape[1]} columns; the run's dataset has {num_classes} "
                         f"outputs{hint}")
    if not torch.isfinite(value).all():
        raise UsageError(f"{path}: {key} holds NaN or infinite values{hint}")
    return tuple(value.shape)


def _check_probabilities(value: torch.Tensor, task: str | None, path: Path, hint: str) -> None:
    p = value.double()
    if (p < 0).any() or (p > 1).any():
        raise UsageError(f"{path}: probabilities outside [0, 1] (logits stored as probabilities?){hint}")
    if task is not None and not tasks.task(task).is_multilabel:
        worst = float((p.sum(dim=1) - 1).abs().max())
        if worst > PROBABILITY_TOLERANCE:
            raise UsageError(f"{path}: probability rows do not sum to 1 (off by up to {worst:.3g}){hint}")


def _check_labels(value, task: str | None, shape, path: Path, hint: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise UsageError(f"{path}: labels is a {type(value).__name__}, not a tensor{hint}")
    labels = value.reshape(-1, 1) if value.ndim == 1 else value
    n, k = shape if shape is not None else (labels.shape[0], None)
    if labels.ndim != 2 or labels.shape[0] != n:
        raise UsageError(f"{path}: labels of shape {tuple(value.shape)} do not give one row per image ({n}){hint}")
    as_float = labels.double()
    if not torch.isfinite(as_float).all() or not torch.equal(as_float, as_float.round()):
        raise UsageError(f"{path}: labels must be whole numbers{hint}")
    if task is None or k is None:
        return
    if tasks.task(task).is_multilabel:
        if labels.shape[1] != k or not bool(((as_float == 0) | (as_float == 1)).all()):
            raise UsageError(f"{path}: multi-label labels must be 0/1 with {k} columns, not shape "
                             f"{tuple(labels.shape)}{hint}")
    elif labels.shape[1] != 1 or int(as_float.min()) < 0 or int(as_float.max()) >= k:
        raise UsageError(f"{path}: labels must be one class index in [0, {k}) per image{hint}")


def as_numpy(outputs: dict, key: str, dtype=np.float64) -> np.ndarray:
    """One checked part of :func:`read_outputs`' dict as a NumPy array."""
    return outputs[key].detach().cpu().numpy().astype(dtype)
