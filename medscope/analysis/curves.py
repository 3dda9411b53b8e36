"""ROC and precision–recall curves of one split's outputs, with the model's operating point on each.

One curve per class scored against the rest (the positive class of a binary
task; each class of a multi-class task; each label of a multi-label task).
The operating point is where the model's own decision sits: the predicted
class (argmax) for single-label tasks, probability >= 0.5 per label for
multi-label tasks. For a multi-class task that decision is not a threshold on
one class's score, so its point may lie off that class's curve (never above
it by more than the curve's step).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from medscope import tasks

OPERATING_POINT_COLUMNS = ["label", "positives", "negatives", "prevalence", "auc", "average_precision",
                           "tpr", "fpr", "precision", "recall"]


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def one_vs_rest(task: str, probabilities, labels, class_names) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, is_positive, score, decided_positive)`` per curve, as the module docstring says.

    >>> [name for name, *_ in one_vs_rest("binary-class", [[0.8, 0.2], [0.3, 0.7]], [[0], [1]], ["a", "b"])]
    ['b']
    """
    kind = tasks.task(task)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    predicted = kind.predictions(probabilities)
    if kind.is_multilabel:
        return [(class_names[k], labels[:, k] == 1, probabilities[:, k], predicted[:, k] == 1)
                for k in range(probabilities.shape[1])]
    truth = labels.reshape(-1)
    classes = [1] if kind.is_binary else range(probabilities.shape[1])
    return [(class_names[k], truth == k, probabilities[:, k], predicted == k) for k in classes]


def roc_pr_curves(task: str, probabilities, labels, class_names) -> list[dict]:
    """Per curve: the ROC and PR curves (sklearn's), AUC, average precision and the operating point.

    Returns
    -------
    list of dict
        ``label``, ``positives``, ``negatives``, ``prevalence`` (positives / n),
        ``fpr_curve``, ``tpr_curve``, ``precision_curve``, ``recall_curve``
        (arrays), ``auc`` (``sklearn.metrics.roc_auc_score``, the AUC of
        ``medmnist.Evaluator`` for that class), ``average_precision``, and the
        operating point ``tpr``, ``fpr``, ``precision``, ``recall``. A class
        with no positive or no negative has no curves (NaN numbers, empty arrays).
    """
    curves = []
    for name, positive, score, decided in one_vs_rest(task, probabilities, labels, class_names):
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        tp, fp = int((decided & positive).sum()), int((decided & ~positive).sum())
        entry = {"label": name, "positives": n_pos, "negatives": n_neg, "prevalence": _ratio(n_pos, len(positive)),
                 "tpr": _ratio(tp, n_pos), "fpr": _ratio(fp, n_neg), "precision": _ratio(tp, tp + fp),
                 "recall": _ratio(tp, n_pos)}
        if n_pos and n_neg:
            fpr, tpr, _ = roc_curve(positive, score)
            precision, recall, _ = precision_recall_curve(positive, score)
            entry.update(fpr_curve=fpr, tpr_curve=tpr, precision_curve=precision, recall_curve=recall,
                         auc=float(roc_auc_score(positive, score)),
                         average_precision=float(average_precision_score(positive, score)))
        else:
            empty = np.empty(0)
            entry.update(fpr_curve=empty, tpr_curve=empty, precision_curve=empty, recall_curve=empty,
                         auc=float("nan"), average_precision=float("nan"))
        curves.append(entry)
    return curves


def operating_point_rows(curves: list[dict]) -> list[dict]:
    """The rows of ``operating_points.csv``: :data:`OPERATING_POINT_COLUMNS` per curve."""
    return [{key: curve[key] for key in OPERATING_POINT_COLUMNS} for curve in curves]
