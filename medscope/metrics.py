"""Evaluation metrics, computed exactly as ``medmnist.Evaluator`` does.

AUC and ACC follow ``medmnist.evaluator.getAUC`` / ``getACC`` term for term:

* binary-class: AUC of the last column's score, ACC at threshold 0.5 on it;
* multi-class and ordinal-regression: mean one-vs-rest AUC over classes,
  ACC of the arg-max (MedMNIST evaluates ordinal regression as multi-class);
* multi-label: mean per-label AUC, mean per-label ACC at threshold 0.5.

Scores are probabilities: softmax of the logits, or sigmoid for multi-label;
scores, predictions and correctness are those of :class:`medscope.tasks.Task`.
The last section holds the calibration measures (ECE, reliability bins,
Brier score).
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from medscope import tasks
from medscope.errors import UsageError


def scores_from_logits(task: str, logits):
    """:meth:`medscope.tasks.Task.scores` of a task name (kept for the callers that pass names)."""
    return tasks.task(task).scores(logits)


def _safe_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC; NaN (not an exception) when only one class is present."""
    if np.unique(y_true).size < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def auc_score(task: str, y_true: np.ndarray, y_score: np.ndarray) -> float:
    kind = tasks.task(task)
    y_true, y_score = np.asarray(y_true).squeeze(), np.asarray(y_score).squeeze()
    if kind.is_multilabel:
        return float(sum(_safe_auc(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])) / y_score.shape[1])
    if kind.is_binary:
        return _safe_auc(y_true, y_score[:, -1] if y_score.ndim == 2 else y_score)
    return float(sum(_safe_auc((y_true == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1]))
                 / y_score.shape[1])


def predictions(task: str, y_score: np.ndarray) -> np.ndarray:
    """:meth:`medscope.tasks.Task.predictions` of a task name (kept for the callers that pass names)."""
    return tasks.task(task).predictions(y_score)


def acc_score(task: str, y_true: np.ndarray, y_score: np.ndarray) -> float:
    kind = tasks.task(task)
    y_true = np.asarray(y_true)
    pred = kind.predictions(y_score)
    if kind.is_multilabel:  # the mean of the per-label accuracies, not the share of all-correct samples
        return float(np.mean([(y_true[:, i] == pred[:, i]).mean() for i in range(y_true.shape[1])]))
    return float(kind.correct(y_true, pred).mean())


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
    kind = tasks.task(task)
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    result = {"auc": auc_score(task, y_true, y_score), "acc": acc_score(task, y_true, y_score), "n": int(len(y_true))}
    pred = kind.predictions(y_score)
    per_class = {}
    if kind.is_multilabel:
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
    result["balanced_acc"] = balanced_accuracy(task, y_true, y_score)
    result["majority_acc"] = majority_accuracy(task, y_true)
    macro = [m["f1"] for m in per_class.values() if not math.isnan(m["f1"])]
    result["macro_f1"] = float(np.mean(macro)) if macro else float("nan")
    return result


# ===================================================================== calibration: ECE, reliability bins, Brier score

CALIBRATION_BINS = 15


def predicted_confidence(task: str, probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """Confidence of each prediction and whether it was right.

    Parameters
    ----------
    task : str
        A MedMNIST task name (:data:`medscope.tasks.NAMES`).
    probabilities : array (N, K)
        Softmax outputs, or sigmoid outputs per label for multi-label tasks.
    labels : array (N, 1) of class indices, or (N, L) of 0/1 for multi-label.

    Returns
    -------
    confidence, correct : arrays (N,), or (N, L) for multi-label
        The confidence is :meth:`~medscope.tasks.Task.predicted_probability`:

        * binary: ``p = probabilities[:, -1]`` (positive class), prediction
          ``p > 0.5``, confidence ``max(p, 1 - p)`` (that of the predicted class);
        * multi-class and ordinal: top-1, confidence ``max_k p_k``;
        * multi-label: every label on its own as a binary problem, so
          ``correct`` is per label here (not :meth:`~medscope.tasks.Task.correct`,
          which asks every label of a sample to be right).

    The predictions are :meth:`medscope.tasks.Task.predictions`, so the mean of
    ``correct`` is the MedMNIST accuracy.

    >>> conf, ok = predicted_confidence("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]])
    >>> conf.round(2).tolist(), ok.tolist()
    ([0.8, 0.7], [True, False])
    """
    kind = tasks.task(task)
    probs = np.asarray(probabilities, dtype=np.float64)
    predicted = kind.predictions(probs)
    confidence = kind.predicted_probability(probs, predicted)
    if kind.is_multilabel:
        return confidence, predicted == (np.asarray(labels) > 0.5)
    return confidence, kind.correct(labels, predicted)


def bin_edges(confidence, n_bins: int = CALIBRATION_BINS, strategy: str = "uniform") -> np.ndarray:
    """``n_bins + 1`` bin edges on the confidence axis.

    * ``"uniform"``: equal width, ``e_b = b / n_bins`` on [0, 1];
    * ``"quantile"`` (equal mass, "adaptive"): ``e_b`` is the ``b / n_bins``
      quantile of the confidences (numpy's linear interpolation), the edges of
      ``sklearn.calibration.calibration_curve(strategy="quantile")``. Each bin
      then holds about ``n / n_bins`` predictions; tied confidences always
      share a bin, so with ties the bins can be unequal (or empty).

    >>> bin_edges([], 4).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise UsageError(f"the number of bins must be an integer >= 1, got {n_bins}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, int(n_bins) + 1)
    if strategy == "quantile":
        conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if conf.size == 0:
            return np.linspace(0.0, 1.0, int(n_bins) + 1)
        return np.quantile(conf, np.linspace(0.0, 1.0, int(n_bins) + 1))
    raise UsageError(f"unknown binning strategy {strategy!r}; expected 'uniform' or 'quantile'")


def reliability_bins(confidence, correct, n_bins: int = CALIBRATION_BINS, strategy: str = "uniform") -> dict:
    """Per-bin count, mean confidence and accuracy.

    Bin ``b`` holds the predictions with confidence in ``(e_b, e_{b+1}]``
    (the first bin also holds ``e_0`` and anything below it), with the edges
    of :func:`bin_edges`: the convention of Guo et al. (2017) and of
    ``sklearn.calibration.calibration_curve``.

    Returns
    -------
    dict of arrays (n_bins,)
        ``lower``, ``upper`` (edges), ``count``, ``confidence`` (mean
        confidence in the bin) and ``accuracy`` (fraction correct); the last
        two are NaN for empty bins.

    >>> b = reliability_bins([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10)
    >>> b["count"].tolist()
    [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    >>> b["accuracy"][[6, 9]].tolist()
    [1.0, 0.5]
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"confidence and correct differ in length: {conf.size} != {ok.size}")
    edges = bin_edges(conf, n_bins, strategy)
    index = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(index, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=len(edges) - 1) / count
        accuracy = np.bincount(index, weights=ok, minlength=len(edges) - 1) / count
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(confidence, correct, n_bins: int = CALIBRATION_BINS, strategy: str = "uniform") -> float:
    """Expected calibration error of one set of (confidence, correct) pairs.

    ``ECE = sum_b (n_b / n) * |acc_b - conf_b|`` over the non-empty bins of
    :func:`reliability_bins`, where ``acc_b`` is the fraction of correct
    predictions and ``conf_b`` the mean confidence in bin ``b``. With
    ``strategy="quantile"`` this is the adaptive (equal-mass) ECE of Nixon et
    al. (2019). Unitless, in [0, 1]; 0 is perfect calibration. NaN for an
    empty input.

    >>> round(expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10), 4)
    0.4
    """
    bins = reliability_bins(confidence, correct, n_bins, strategy)
    total = bins["count"].sum()
    if total == 0:
        return float("nan")
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] / total * gaps))


def brier_score(task: str, probabilities, labels) -> float:
    """Brier score: mean squared error of the predicted probabilities.

    * multi-class and ordinal: ``mean_i sum_k (p_ik - y_ik)^2`` with ``y_ik``
      one-hot (Brier 1950), in [0, 2];
    * binary: ``mean_i (p_i - y_i)^2`` on the positive-class probability
      ``p_i = probabilities[i, -1]``, in [0, 1] (half the two-class form above);
    * multi-label: the binary score averaged over samples and labels, in [0, 1].

    These are ``sklearn.metrics.brier_score_loss`` with ``scale_by_half="auto"``.

    >>> round(brier_score("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]), 4)
    0.265
    >>> round(brier_score("multi-class", [[0.5, 0.3, 0.2]], [[0]]), 4)
    0.38
    """
    kind = tasks.task(task)
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if kind.is_multilabel:
        return float(np.mean((probs - y) ** 2))
    if kind.is_binary:
        p = probs[:, -1] if probs.ndim == 2 else probs
        return float(np.mean((p - y.reshape(-1)) ** 2))
    onehot = np.eye(probs.shape[1])[y.reshape(-1).astype(np.int64)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


# --------------------------------------------------------------------------- what a majority guess scores

def majority_accuracy(task: str, y_true) -> float:
    """The ACC of always answering the most frequent class (multi-label: each label's majority value).

    An ACC at or below this number is no skill, whatever it looks like.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    if tasks.task(task).is_multilabel:
        positive = y_true.mean(axis=0)
        return float(np.mean(np.maximum(positive, 1 - positive)))
    counts = np.bincount(y_true.reshape(-1))
    return float(counts.max() / counts.sum()) if counts.size else float("nan")


COLLAPSE_SHARE = 0.95  # predictions this concentrated on one class, while the truth is not: "collapsed"


def top_class_share(task, predictions) -> float:
    """Share of the most common prediction (multi-label: mean over labels of the larger side).

    >>> top_class_share("binary-class", np.array([[1], [1], [1], [0]]))
    0.75
    """
    pred = np.asarray(predictions)
    if not len(pred):
        return float("nan")
    if tasks.task(task).is_multilabel:
        positive = pred.astype(bool).mean(axis=0)
        return float(np.mean(np.maximum(positive, 1 - positive)))
    _, counts = np.unique(pred.reshape(-1), return_counts=True)
    return float(counts.max() / counts.sum())


def collapse(task, labels, probabilities) -> dict:
    """Whether a model answers (nearly) one class whatever the image: its most common prediction
    covers at least :data:`COLLAPSE_SHARE` of the images while the truth's majority class does not.

    Returns ``{"collapsed", "top_class_share", "top_class", "majority_rate"}`` (``top_class``: the
    index of the class answered most; None for multi-label).

    >>> labels = np.array([[0]] * 80 + [[1]] * 20)
    >>> collapse("binary-class", labels, np.tile([0.9, 0.1], (100, 1)))["collapsed"]
    True
    >>> collapse("binary-class", labels, np.vstack([np.tile([0.9, 0.1], (80, 1)), np.tile([0.2, 0.8], (20, 1))]))["collapsed"]
    False
    """
    kind = tasks.task(task)
    pred = predictions(kind.name, np.asarray(probabilities))
    share = top_class_share(kind, pred)
    majority = majority_accuracy(kind.name, labels) if len(labels) else float("nan")
    top = None
    if not kind.is_multilabel and len(pred):
        values, counts = np.unique(np.asarray(pred).reshape(-1), return_counts=True)
        top = int(values[counts.argmax()])
    return {"collapsed": bool(share >= COLLAPSE_SHARE > majority), "top_class_share": share, "top_class": top,
            "majority_rate": majority}


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


# --------------------------------------------------------------------------- the error AUROC with an interval

def error_auroc_batched(uncertainty, errors) -> np.ndarray:
    """:func:`error_auroc` of every row of ``(b, n)`` arrays at once (for bootstrap resamples).

    The Mann-Whitney form: with ``R`` the average ranks of the scores in a row,
    ``AUROC = (sum_{wrong} R - n1 (n1 + 1) / 2) / (n1 n0)``, ``n1`` errors and
    ``n0`` correct predictions; NaN where a row has only one of the two.

    >>> error_auroc_batched([[0.1, 0.9, 0.4], [0.9, 0.1, 0.4]], [[False, True, False]] * 2).tolist()
    [1.0, 0.0]
    """
    from scipy.stats import rankdata

    score = np.atleast_2d(np.asarray(uncertainty, dtype=np.float64))
    wrong = np.atleast_2d(np.asarray(errors, dtype=bool))
    ranks = rankdata(score, axis=1)
    n1 = wrong.sum(axis=1).astype(np.float64)
    n0 = wrong.shape[1] - n1
    u = (ranks * wrong).sum(axis=1) - n1 * (n1 + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def error_auroc_interval(uncertainty, errors, *, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """:func:`error_auroc` with a percentile bootstrap interval, resampling within errors and correct ones.

    Stratified, so every resample keeps the numbers of errors and of correct
    predictions and the AUROC is always defined where the estimate is. Returns
    :func:`medscope.stats.bootstrap.bootstrap_statistic`'s entry
    (``estimate``, ``low``, ``high``, ``level``, ``method``, ``n_resamples``,
    ``n_dropped``); all NaN where the estimate is undefined or ``n_resamples`` is 0.

    >>> r = error_auroc_interval([0.1, 0.9, 0.4, 0.8, 0.2, 0.7], [0, 1, 0, 1, 0, 0], n_resamples=200)
    >>> r["low"] <= r["estimate"] <= r["high"]
    True
    """
    from medscope.stats.bootstrap import bootstrap_statistic

    score = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    wrong = np.asarray(errors, dtype=bool).reshape(-1)
    estimate = error_auroc(score, wrong)
    if math.isnan(estimate) or not n_resamples:
        return {"estimate": estimate, "low": float("nan"), "high": float("nan"), "level": level,
                "method": "none", "n_resamples": 0, "n_dropped": 0}
    return bootstrap_statistic(error_auroc_batched, [score, wrong], n_resamples=n_resamples, seed=seed, level=level,
                               strata=wrong, batched=True)
