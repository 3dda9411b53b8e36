"""Decision thresholds for binary problems, chosen on validation scores and judged on test scores.

A threshold ``t`` predicts positive when ``score >= t`` (ties go to the
positive side). The score is the positive-class probability: the last
softmax column of a binary-class task, or each label's sigmoid output of a
multi-label task (one threshold per label). Multi-class and ordinal tasks
have no single positive class and are refused.

Candidates are the distinct validation scores and ``+inf`` (nothing
positive): every (sensitivity, specificity) pair a threshold can reach on the
validation set is reached by one of them, and each returned threshold is a
validation score (or ``+inf``), as in ``sklearn.metrics.roc_curve``.

* Youden: the candidate maximising ``J = sensitivity + specificity - 1``;
  among equal ``J`` the highest threshold (the first maximum along the ROC
  curve, as ``thresholds[argmax(tpr - fpr)]`` of ``roc_curve`` picks).
* target sensitivity: the highest threshold whose validation sensitivity is
  ``>= target`` (the most specific such rule);
* target specificity: the lowest threshold whose validation specificity is
  ``>= target`` (the most sensitive such rule).

MedMNIST's own rule is ``score > 0.5``; with ``>=`` that is the threshold
:data:`MEDMNIST_THRESHOLD` (the next float above 0.5).
"""
from __future__ import annotations

import numpy as np

from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTILABEL
from ._inputs import label_array, scores_matrix

MEDMNIST_THRESHOLD = float(np.nextafter(0.5, 1.0))
DEFAULT_TARGET = 0.9


def _ratio(num, den) -> float:
    return float(num / den) if den else float("nan")


def _check_binary(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} != {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("binary labels must be 0 or 1")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y.astype(bool)


def _check_target(target: float, what: str) -> float:
    target = float(target)
    if not 0.0 < target <= 1.0:
        raise UsageError(f"target {what} must lie in (0, 1], got {target}")
    return target


def operating_curve(scores, labels) -> dict:
    """True/false positive counts at every candidate threshold, highest threshold first.

    Returns
    -------
    dict of arrays (m + 1,)
        ``threshold`` (``+inf``, then the distinct scores in decreasing
        order), ``tp``, ``fp`` (positives / negatives with ``score >= t``),
        ``sensitivity`` ``tp / P`` and ``specificity`` ``1 - fp / N`` (NaN
        when the validation labels have no positive, or no negative).

    >>> c = operating_curve([0.9, 0.4, 0.4, 0.1], [1, 1, 0, 0])
    >>> c["threshold"].tolist(), c["tp"].tolist(), c["fp"].tolist()
    ([inf, 0.9, 0.4, 0.1], [0, 1, 2, 2], [0, 0, 1, 2])
    """
    s, y = _check_binary(scores, labels)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    positives, negatives = np.sort(s[y]), np.sort(s[~y])
    tp = len(positives) - np.searchsorted(positives, thresholds, side="left")
    fp = len(negatives) - np.searchsorted(negatives, thresholds, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = tp / len(positives) if len(positives) else np.full(len(tp), np.nan)
        specificity = 1.0 - fp / len(negatives) if len(negatives) else np.full(len(fp), np.nan)
    return {"threshold": thresholds, "tp": tp, "fp": fp, "sensitivity": sensitivity, "specificity": specificity}


def _point(curve: dict, index: int | None, rule: str) -> dict:
    if index is None:
        return {"rule": rule, "threshold": float("nan"), "sensitivity": float("nan"),
                "specificity": float("nan"), "youden_j": float("nan")}
    sens, spec = float(curve["sensitivity"][index]), float(curve["specificity"][index])
    return {"rule": rule, "threshold": float(curve["threshold"][index]), "sensitivity": sens,
            "specificity": spec, "youden_j": sens + spec - 1.0}


def _undefined(curve: dict) -> bool:
    return bool(np.isnan(curve["sensitivity"][0]) or np.isnan(curve["specificity"][0]))


def youden_threshold(scores, labels) -> dict:
    """Threshold maximising Youden's ``J = sensitivity + specificity - 1`` on (validation) scores.

    Returns ``{"rule", "threshold", "sensitivity", "specificity", "youden_j"}``
    (validation values); NaN throughout when the labels hold only one class.

    >>> youden_threshold([0.9, 0.6, 0.4, 0.1], [1, 1, 0, 0])["threshold"]
    0.6
    """
    curve = operating_curve(scores, labels)
    if _undefined(curve):
        return _point(curve, None, "youden")
    return _point(curve, int(np.argmax(curve["sensitivity"] + curve["specificity"])), "youden")


def threshold_for_sensitivity(scores, labels, target: float = DEFAULT_TARGET) -> dict:
    """The highest threshold whose (validation) sensitivity reaches ``target``.

    >>> threshold_for_sensitivity([0.9, 0.6, 0.4, 0.1], [1, 1, 0, 1], target=0.6)["threshold"]
    0.6
    """
    target = _check_target(target, "sensitivity")
    curve = operating_curve(scores, labels)
    if _undefined(curve):
        return _point(curve, None, f"sensitivity>={target:g}")
    # sensitivity grows as the threshold falls; a tiny slack absorbs the rounding of tp / P
    index = int(np.argmax(curve["sensitivity"] >= target - 1e-12))
    return _point(curve, index, f"sensitivity>={target:g}")


def threshold_for_specificity(scores, labels, target: float = DEFAULT_TARGET) -> dict:
    """The lowest threshold whose (validation) specificity reaches ``target``.

    >>> threshold_for_specificity([0.9, 0.6, 0.4, 0.1], [1, 0, 0, 0], target=0.6)["threshold"]
    0.6
    """
    target = _check_target(target, "specificity")
    curve = operating_curve(scores, labels)
    if _undefined(curve):
        return _point(curve, None, f"specificity>={target:g}")
    reached = np.flatnonzero(curve["specificity"] >= target - 1e-12)  # never empty: +inf has specificity 1
    return _point(curve, int(reached[-1]), f"specificity>={target:g}")


def evaluate_threshold(scores, labels, threshold: float) -> dict:
    """Confusion counts and rates of the rule ``score >= threshold`` on (test) data.

    Returns
    -------
    dict
        ``threshold``, ``tp``, ``fp``, ``tn``, ``fn``, ``n``, ``sensitivity``
        ``tp/(tp+fn)``, ``specificity`` ``tn/(tn+fp)``, ``ppv``
        ``tp/(tp+fp)``, ``npv`` ``tn/(tn+fn)``, ``balanced_accuracy``
        (mean of sensitivity and specificity) and ``accuracy``
        ``(tp+tn)/n``; a rate with a zero denominator is NaN.

    >>> r = evaluate_threshold([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0], 0.5)
    >>> r["tp"], r["fp"], r["tn"], r["fn"], r["ppv"]
    (1, 1, 1, 1, 0.5)
    """
    s, y = _check_binary(scores, labels)
    if np.isnan(threshold):
        raise UsageError("cannot evaluate a NaN threshold (the validation labels held only one class)")
    positive = s >= threshold
    tp, fp = int(np.sum(positive & y)), int(np.sum(positive & ~y))
    fn, tn = int(np.sum(~positive & y)), int(np.sum(~positive & ~y))
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": len(s),
            "sensitivity": sens, "specificity": spec, "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "balanced_accuracy": (sens + spec) / 2.0, "accuracy": _ratio(tp + tn, len(s))}


def positive_scores(task: str, probabilities, labels) -> list[tuple[np.ndarray, np.ndarray]]:
    """(score, 0/1 label) pairs of a task's binary problems: one (binary) or one per label (multi-label).

    Raises UsageError for multi-class and ordinal tasks, which have no single
    positive class.
    """
    if task not in (TASK_BINARY, TASK_MULTILABEL):
        raise UsageError(f"decision thresholds need a binary-class or multi-label task, not {task!r} "
                         "(its prediction is the arg-max over classes)")
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    if task == TASK_BINARY:
        return [(probs[:, -1], y)]
    return [(probs[:, j], y[:, j]) for j in range(probs.shape[1])]


def choose_thresholds(task: str, probabilities, labels, *, target_sensitivity: float = DEFAULT_TARGET,
                      target_specificity: float = DEFAULT_TARGET) -> list[dict]:
    """The three thresholds of a task's validation predictions, per binary problem.

    Returns
    -------
    list of dict
        One entry (binary) or one per label (multi-label), each
        ``{"youden": ..., "sensitivity": ..., "specificity": ...}`` with the
        dicts of :func:`youden_threshold`, :func:`threshold_for_sensitivity`
        and :func:`threshold_for_specificity`.
    """
    return [{"youden": youden_threshold(s, y), "sensitivity": threshold_for_sensitivity(s, y, target_sensitivity),
             "specificity": threshold_for_specificity(s, y, target_specificity)}
            for s, y in positive_scores(task, probabilities, labels)]


def evaluate_thresholds(task: str, probabilities, labels, thresholds) -> list[dict]:
    """:func:`evaluate_threshold` of one threshold per binary problem (a list as long as the labels)."""
    problems = positive_scores(task, probabilities, labels)
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if len(thresholds) != len(problems):
        raise ValueError(f"expected {len(problems)} thresholds, got {len(thresholds)}")
    return [evaluate_threshold(s, y, t) for (s, y), t in zip(problems, thresholds)]
