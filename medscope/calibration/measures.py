"""How well predicted probabilities match observed frequencies: ECE, Brier score, NLL.

Confidence and correctness (the inputs of the ECE) follow
:func:`predicted_confidence`:

* binary-class: ``p = probabilities[:, -1]``, prediction ``p > 0.5``,
  confidence ``max(p, 1 - p)`` (that of the predicted class);
* multi-class and ordinal-regression: top-1, confidence ``max_k p_k``;
* multi-label: every label on its own as a binary problem (as binary above);
  task-level numbers are the mean over labels of the per-label numbers.

The equal-width ECE is the one :mod:`medscope.analysis.inference` reports (same bins,
same formula; a test holds the two equal). All numbers are unitless.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_expit, log_softmax

from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTILABEL
from ._inputs import label_array, scores_matrix

DEFAULT_BINS = 15
THRESHOLD = 0.5  # the decision threshold of medscope.metrics (binary and multi-label)
STRATEGIES = ("uniform", "quantile")


def predicted_confidence(task: str, probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """Confidence of each prediction and whether it was right.

    Parameters
    ----------
    task : str
        A MedMNIST task (``medscope.data.TASK_*``).
    probabilities : array (n, K)
        Softmax outputs, or sigmoid outputs per label for multi-label tasks.
    labels : array (n, 1) of class indices, or (n, L) of 0/1 for multi-label.

    Returns
    -------
    confidence, correct : arrays (n,), or (n, L) for multi-label
        See the module docstring. The predictions are those of
        :func:`medscope.metrics.predictions`, so the mean of ``correct`` is the
        MedMNIST accuracy.

    >>> conf, ok = predicted_confidence("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]])
    >>> conf.round(2).tolist(), ok.tolist()
    ([0.8, 0.7], [True, False])
    """
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    if task == TASK_MULTILABEL:
        pred = probs > THRESHOLD
        return np.where(pred, probs, 1.0 - probs), pred == (y == 1)
    if task == TASK_BINARY:
        p = probs[:, -1]
        pred = p > THRESHOLD
        return np.where(pred, p, 1.0 - p), pred.astype(np.int64) == y
    return probs.max(axis=1), probs.argmax(axis=1) == y


def bin_edges(confidence, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> np.ndarray:
    """``n_bins + 1`` bin edges on the confidence axis.

    * ``"uniform"``: equal width, ``e_b = b / n_bins`` on [0, 1];
    * ``"quantile"`` (equal mass, "adaptive"): ``e_b`` is the ``b / n_bins``
      quantile of the confidences (numpy's linear interpolation), the edges of
      ``sklearn.calibration.calibration_curve(strategy="quantile")``. Each bin
      then holds about ``n / n_bins`` predictions; tied confidences always
      share a bin, so with ties the bins can be unequal (or empty).
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


def reliability_bins(confidence, correct, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> dict:
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


def expected_calibration_error(confidence, correct, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> float:
    """Expected calibration error of one set of (confidence, correct) pairs.

    ``ECE = sum_b (n_b / n) * |acc_b - conf_b|`` over the non-empty bins of
    :func:`reliability_bins`, where ``acc_b`` is the fraction of correct
    predictions and ``conf_b`` the mean confidence in bin ``b``. With
    ``strategy="quantile"`` this is the adaptive (equal-mass) ECE of Nixon et
    al. (2019). In [0, 1]; 0 is perfect calibration. NaN for an empty input.

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


def ece(task: str, probabilities, labels, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> float:
    """ECE of a task's predictions: one ECE, or the mean of the per-label ECEs for multi-label.

    >>> round(ece("multi-class", [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]], [[0], [1]], n_bins=10), 4)
    0.45
    """
    conf, ok = predicted_confidence(task, probabilities, labels)
    if task == TASK_MULTILABEL:
        return float(np.mean([expected_calibration_error(conf[:, j], ok[:, j], n_bins, strategy)
                              for j in range(conf.shape[1])]))
    return expected_calibration_error(conf, ok, n_bins, strategy)


def brier_score(task: str, probabilities, labels) -> float:
    """Brier score: mean squared error of the predicted probabilities.

    * multi-class and ordinal: ``mean_i sum_k (p_ik - y_ik)^2`` with ``y_ik``
      one-hot (Brier 1950), in [0, 2];
    * binary: ``mean_i (p_i - y_i)^2`` on the positive-class probability
      ``p_i = probabilities[i, -1]``, in [0, 1] (half the two-class sum above);
    * multi-label: the binary score averaged over samples and labels, in [0, 1].

    These are ``sklearn.metrics.brier_score_loss`` with ``scale_by_half="auto"``
    and the values :func:`medscope.analysis.inference.brier_score` reports.

    >>> round(brier_score("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]), 4)
    0.265
    >>> round(brier_score("multi-class", [[0.5, 0.3, 0.2]], [[0]]), 4)
    0.38
    """
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    if task == TASK_MULTILABEL:
        return float(np.mean((probs - y) ** 2))
    if task == TASK_BINARY:
        return float(np.mean((probs[:, -1] - y) ** 2))
    onehot = np.eye(probs.shape[1])[y]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def negative_log_likelihood(task: str, probabilities, labels) -> float:
    """Mean negative log-likelihood (natural log, nats per sample) of the labels.

    * multi-class and ordinal: ``mean_i -log p_{i, y_i}``;
    * binary: ``mean_i -[y_i log p_i + (1 - y_i) log(1 - p_i)]`` with
      ``p_i = probabilities[i, -1]`` (equal to the multi-class form when the
      two columns sum to 1);
    * multi-label: the binary form averaged over samples and labels.

    Probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the float64
    machine epsilon, as ``sklearn.metrics.log_loss`` does, so a confident
    mistake costs at most ``-log(eps) = 36.04`` nats. From logits,
    :func:`nll_from_logits` is exact and needs no clipping.

    >>> round(negative_log_likelihood("multi-class", [[0.5, 0.25, 0.25]], [[1]]), 4)
    1.3863
    """
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    eps = np.finfo(np.float64).eps
    if task in (TASK_MULTILABEL, TASK_BINARY):
        p = np.clip(probs if task == TASK_MULTILABEL else probs[:, -1], eps, 1.0 - eps)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p))))
    p_true = np.clip(probs[np.arange(len(y)), y], eps, 1.0 - eps)
    return float(np.mean(-np.log(p_true)))


def nll_from_logits(task: str, logits, labels, temperature=1.0) -> float:
    """Mean negative log-likelihood of the labels under ``logits / temperature``.

    Softmax tasks: ``mean_i -log softmax(z_i / T)_{y_i}``; multi-label:
    ``mean_{i,j} -[y_ij log s(z_ij / T_j) + (1 - y_ij) log(1 - s(z_ij / T_j))]``
    with ``s`` the sigmoid and ``T`` a scalar or one temperature per label.
    Computed with log-softmax / log-sigmoid, so it is exact for any logits.

    >>> round(nll_from_logits("multi-class", [[0.0, 0.0]], [[1]]), 4)  # log 2
    0.6931
    """
    z = scores_matrix(task, logits, "logits")
    y = label_array(task, labels, len(z), z.shape[1])
    z = z / np.asarray(temperature, dtype=np.float64)
    if task == TASK_MULTILABEL:
        return float(np.mean(-(y * log_expit(z) + (1 - y) * log_expit(-z))))
    return float(np.mean(-log_softmax(z, axis=1)[np.arange(len(y)), y]))


def calibration_summary(task: str, probabilities, labels, n_bins: int = DEFAULT_BINS) -> dict:
    """ECE (equal-width and equal-mass bins), Brier score and NLL of one split.

    Returns
    -------
    dict
        ``ece``, ``adaptive_ece``, ``brier``, ``nll``, ``n_bins`` and ``n``.
    """
    probs = scores_matrix(task, probabilities)
    return {"ece": ece(task, probs, labels, n_bins, "uniform"),
            "adaptive_ece": ece(task, probs, labels, n_bins, "quantile"),
            "brier": brier_score(task, probs, labels), "nll": negative_log_likelihood(task, probs, labels),
            "n_bins": int(n_bins), "n": len(probs)}
