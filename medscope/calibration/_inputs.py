"""Checks and reshaping of (task, probabilities, labels) shared by the calibration modules.

Conventions (those of :mod:`medscope.metrics`):

* ``binary-class``: probabilities ``(n, 2)`` (softmax), labels ``(n, 1)`` in
  {0, 1}; the positive-class score is the last column;
* ``multi-class`` and ``ordinal-regression``: probabilities ``(n, K)``
  (softmax), labels ``(n, 1)`` in 0..K-1 (ordinal regression is evaluated as
  multi-class, as MedMNIST does);
* ``multi-label, binary-class``: probabilities ``(n, L)`` (sigmoid per label),
  labels ``(n, L)`` in {0, 1}.
"""
from __future__ import annotations

import numpy as np

from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL

TASKS = (TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL)
SOFTMAX_TASKS = (TASK_BINARY, TASK_MULTICLASS, TASK_ORDINAL)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; expected one of {', '.join(repr(t) for t in TASKS)}")
    return task


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    return alpha


def scores_matrix(task: str, values, name: str = "probabilities") -> np.ndarray:
    """Float64 ``(n, K)`` array of probabilities or logits, shape-checked for ``task``."""
    check_task(task)
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, K), got shape {array.shape}")
    if task == TASK_BINARY and array.shape[1] != 2:
        raise ValueError(f"{name} of a binary-class task must have 2 columns (softmax), got {array.shape[1]}")
    if task in (TASK_MULTICLASS, TASK_ORDINAL) and array.shape[1] < 2:
        raise ValueError(f"{name} of a {task} task need at least 2 columns, got {array.shape[1]}")
    if name == "probabilities" and array.size and not (array.min() >= 0.0 and array.max() <= 1.0):
        raise ValueError(f"probabilities must lie in [0, 1] (got {np.nanmin(array):.4g}..{np.nanmax(array):.4g}); "
                         "were logits passed instead?")
    return array


def label_array(task: str, labels, n: int, n_columns: int) -> np.ndarray:
    """Labels as int64: ``(n,)`` class indices, or ``(n, L)`` 0/1 for multi-label."""
    y = np.asarray(labels)
    if task == TASK_MULTILABEL:
        if y.shape != (n, n_columns):
            raise ValueError(f"multi-label labels must have shape {(n, n_columns)}, got {y.shape}")
        y = y.astype(np.int64)
        if not np.isin(y, (0, 1)).all():
            raise ValueError("multi-label labels must be 0 or 1")
        return y
    if y.size != n:
        raise ValueError(f"expected {n} labels, got an array of shape {y.shape}")
    y = y.reshape(-1).astype(np.int64)
    if n and (y.min() < 0 or y.max() >= n_columns):
        raise ValueError(f"labels must lie in 0..{n_columns - 1}, got {y.min()}..{y.max()}")
    return y


def binary_pair(p: np.ndarray) -> np.ndarray:
    """``(n,) -> (n, 2)``: a positive-class probability as the two-class vector ``[1 - p, p]``."""
    return np.stack([1.0 - p, p], axis=1)
