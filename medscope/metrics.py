"""Evaluation metrics, computed exactly as ``medmnist.Evaluator`` does.

AUC and ACC follow ``medmnist.evaluator.getAUC`` / ``getACC`` term for term:

* binary-class: AUC of the last column's score, ACC at threshold 0.5 on it;
* multi-class and ordinal-regression: mean one-vs-rest AUC over classes,
  ACC of the arg-max (MedMNIST evaluates ordinal regression as multi-class);
* multi-label: mean per-label AUC, mean per-label ACC at threshold 0.5.

Scores are probabilities: softmax of the logits, or sigmoid for multi-label.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medscope.data import TASK_BINARY, TASK_MULTILABEL

THRESHOLD = 0.5


def scores_from_logits(task: str, logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return torch.sigmoid(logits) if task == TASK_MULTILABEL else torch.softmax(logits, dim=1)


def _safe_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC; NaN (not an exception) when only one class is present."""
    if np.unique(y_true).size < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def auc_score(task: str, y_true: np.ndarray, y_score: np.ndarray) -> float:
    y_true, y_score = np.asarray(y_true).squeeze(), np.asarray(y_score).squeeze()
    if task == TASK_MULTILABEL:
        return float(sum(_safe_auc(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])) / y_score.shape[1])
    if task == TASK_BINARY:
        return _safe_auc(y_true, y_score[:, -1] if y_score.ndim == 2 else y_score)
    return float(sum(_safe_auc((y_true == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1]))
                 / y_score.shape[1])


def predictions(task: str, y_score: np.ndarray) -> np.ndarray:
    """Predicted class per sample, or a 0/1 matrix for multi-label."""
    y_score = np.asarray(y_score)
    if task == TASK_MULTILABEL:
        return (y_score > THRESHOLD).astype(np.int64)
    if task == TASK_BINARY:
        return (y_score[:, -1] > THRESHOLD).astype(np.int64)
    return np.argmax(y_score, axis=-1)


def acc_score(task: str, y_true: np.ndarray, y_score: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    pred = predictions(task, y_score)
    if task == TASK_MULTILABEL:
        return float(np.mean([(y_true[:, i] == pred[:, i]).mean() for i in range(y_true.shape[1])]))
    return float((y_true.reshape(-1) == pred).mean())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)), 1)
    return matrix


def _ratio(num, den) -> float:
    return float(num / den) if den else float("nan")


def per_class_metrics(tp, fp, fn, tn) -> dict:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return dict(precision=precision, recall=recall, sensitivity=recall,
                specificity=_ratio(tn, tn + fp), f1=f1, support=int(tp + fn))


def evaluate(task: str, y_true: np.ndarray, y_score: np.ndarray, class_names: list[str]) -> dict:
    """AUC, ACC, per-class (or per-label) metrics and confusion matrices."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    result = {"auc": auc_score(task, y_true, y_score), "acc": acc_score(task, y_true, y_score), "n": int(len(y_true))}
    pred = predictions(task, y_score)
    per_class = {}
    if task == TASK_MULTILABEL:
        matrices = {}
        for i, name in enumerate(class_names):
            cm = confusion_matrix(y_true[:, i].astype(np.int64), pred[:, i], 2)
            tn, fp, fn, tp = cm.ravel()
            per_class[name] = per_class_metrics(tp, fp, fn, tn) | {"auc": _safe_auc(y_true[:, i], y_score[:, i])}
            matrices[name] = cm.tolist()
        result["confusion_matrix"] = matrices
    else:
        labels = y_true.reshape(-1).astype(np.int64)
        cm = confusion_matrix(labels, pred, len(class_names))
        total = cm.sum()
        for i, name in enumerate(class_names):
            tp = cm[i, i]
            fp, fn = cm[:, i].sum() - tp, cm[i, :].sum() - tp
            per_class[name] = per_class_metrics(tp, fp, fn, total - tp - fp - fn)
        result["confusion_matrix"] = cm.tolist()
    result["per_class"] = per_class
    macro = [m["f1"] for m in per_class.values() if m["f1"] == m["f1"]]
    result["macro_f1"] = float(np.mean(macro)) if macro else float("nan")
    return result


# --------------------------------------------------------------------------- robustness and uncertainty
# Balanced accuracy (robustness sweeps) and the error AUROC of an uncertainty score (MC dropout).

def _mean_recall(y: np.ndarray, pred: np.ndarray) -> float:
    classes = np.unique(y)
    if not len(classes):
        return float("nan")
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def balanced_accuracy(task, labels, probabilities) -> float:
    """Mean recall over the classes present in ``labels``, with the task's own predictions.

    ``BA = 1/|K| sum_{k in K} #(pred = k and y = k) / #(y = k)`` over the set
    ``K`` of true classes (``sklearn.metrics.balanced_accuracy_score``);
    binary: the mean of sensitivity and specificity. Multi-label: each label
    is its own binary problem and the result is the mean over labels of their
    balanced accuracies. Predictions are :meth:`medscope.tasks.Task.predictions`
    (threshold 0.5 for binary and multi-label, arg-max otherwise). In [0, 1].

    Parameters
    ----------
    task : a task name or :class:`medscope.tasks.Task`
    labels : (N, 1) class indices, or (N, L) 0/1 for multi-label tasks
    probabilities : (N, K) scores

    >>> balanced_accuracy("binary-class", [[0], [1], [1], [1]], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    0.6666666666666666
    """
    from medscope.tasks import task as as_task

    task = as_task(task)
    y = np.asarray(labels)
    pred = task.predictions(np.asarray(probabilities, dtype=np.float64))
    if task.is_multilabel:
        y = y.astype(np.int64)
        return float(np.mean([_mean_recall(y[:, j], pred[:, j]) for j in range(y.shape[1])]))
    return _mean_recall(y.reshape(-1).astype(np.int64), np.asarray(pred).reshape(-1))


def error_auroc(uncertainty, errors) -> float:
    """AUROC of an uncertainty score (higher = less sure) for telling wrong predictions from right ones.

    ``P(u_wrong > u_right)`` (ties count one half), i.e.
    ``sklearn.metrics.roc_auc_score(errors, uncertainty)``. 0.5: no better than
    chance; 1: every error is more uncertain than every correct prediction.
    NaN when there are no errors or no correct predictions.

    Parameters
    ----------
    uncertainty : (N,) score, larger meaning less sure
    errors : (N,) bool, True where the prediction is wrong

    >>> error_auroc([0.1, 0.9, 0.4], [False, True, False])
    1.0
    >>> error_auroc([0.1, 0.9], [False, False])
    nan
    """
    errors = np.asarray(errors, dtype=bool)
    if errors.all() or not errors.any():
        return float("nan")
    return float(roc_auc_score(errors, np.asarray(uncertainty)))
