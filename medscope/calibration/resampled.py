"""The calibration statistics of many bootstrap resamples at once.

Each function takes per-sample arrays with a leading resample axis,
``(b, m)``, and returns one value per resample, ``(b,)``: the value the
one-sample function named in its docstring gives on that row, computed for
all rows together (a bootstrap of 2000 resamples is then a handful of numpy
calls instead of 2000 Python calls per statistic). The tests hold every
function equal to its one-sample counterpart, row by row.
"""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from .measures import bin_edges


def _divide(num, den) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=np.asarray(den) != 0)


def _bin_index(confidence: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin of each confidence, ``(b, m)``: the bins of :func:`medscope.calibration.measures.reliability_bins`."""
    if strategy == "uniform":
        return np.searchsorted(bin_edges(confidence, n_bins, "uniform")[1:-1], confidence, side="left")
    bin_edges(confidence[:0], n_bins, strategy)  # checks n_bins and the strategy name
    inner = np.quantile(confidence, np.linspace(0.0, 1.0, int(n_bins) + 1), axis=1).T[:, 1:-1]
    # searchsorted(edges, x, side="left") is the number of edges strictly below x
    return (confidence[:, :, None] > inner[:, None, :]).sum(axis=2)


def reliability_bins(confidence, correct, n_bins: int, strategy: str = "uniform") -> dict:
    """Per resample and bin: count, mean confidence and accuracy (``(b, n_bins)`` each; NaN when empty).

    Row ``r`` equals :func:`medscope.calibration.measures.reliability_bins` of
    ``confidence[r], correct[r]``.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    b = conf.shape[0]
    n_bins = int(n_bins)
    flat = (_bin_index(conf, n_bins, strategy) + n_bins * np.arange(b)[:, None]).ravel()
    count = np.bincount(flat, minlength=b * n_bins).reshape(b, n_bins)
    return {"count": count,
            "confidence": _divide(np.bincount(flat, weights=conf.ravel(), minlength=b * n_bins).reshape(b, n_bins),
                                  count),
            "accuracy": _divide(np.bincount(flat, weights=ok.ravel(), minlength=b * n_bins).reshape(b, n_bins), count)}


def expected_calibration_error(confidence, correct, n_bins: int, strategy: str = "uniform") -> np.ndarray:
    """ECE per resample: :func:`medscope.calibration.measures.expected_calibration_error` of each row.

    ``ECE = sum_b (n_b / n) |acc_b - conf_b|`` over the non-empty bins.
    """
    return ece_from_bins(reliability_bins(confidence, correct, n_bins, strategy))


def ece_from_bins(bins: dict) -> np.ndarray:
    """ECE per resample from the bins of :func:`reliability_bins`."""
    total = bins["count"].sum(axis=1, keepdims=True)
    gaps = np.where(bins["count"] > 0, np.abs(bins["accuracy"] - bins["confidence"]), 0.0)
    return np.sum(_divide(bins["count"], total) * gaps, axis=1)


def task_ece(confidence, correct, n_bins: int, strategy: str = "uniform") -> np.ndarray:
    """:func:`medscope.calibration.measures.ece` per resample: ``(b, m)`` inputs, or ``(b, m, L)`` for multi-label
    (the mean over labels of the per-label ECE)."""
    conf = np.asarray(confidence)
    if conf.ndim == 2:
        return expected_calibration_error(conf, correct, n_bins, strategy)
    ok = np.asarray(correct)
    return np.mean([expected_calibration_error(conf[:, :, j], ok[:, :, j], n_bins, strategy)
                    for j in range(conf.shape[2])], axis=0)


def risk_areas(confidence, errors) -> dict:
    """AURC (interpolated estimator) and AUGRC per resample, ties handled as one block.

    Row ``r`` equals :func:`medscope.calibration.selective.aurc` and
    :func:`~medscope.calibration.selective.augrc` of ``confidence[r], errors[r]``.
    Sorted by decreasing confidence, a block of equal confidences ends at
    position ``k`` with ``C_b = k + 1`` accepted and ``E_b`` their summed loss;
    ``(C_a, E_a)`` is the end of the previous block (``(0, 0)`` for the first).
    Per block, with ``s = (E_b - E_a) / (C_b - C_a)``:
    AURC adds ``[s (C_b - C_a) + (E_a - s C_a) ln(C_b / C_a)] / n`` (no log term
    when ``C_a = 0``) and AUGRC adds ``(C_b - C_a)(E_a + E_b) / (2 n^2)``.

    >>> areas = risk_areas([[0.9, 0.8, 0.7, 0.6], [0.9, 0.9, 0.9, 0.9]], [[0, 1, 0, 1], [0, 1, 0, 1]])
    >>> areas["augrc"].tolist()  # the second row is one tie block: a random ranking, r / 2
    [0.1875, 0.25]
    """
    conf = np.asarray(confidence, dtype=np.float64)
    loss = np.asarray(errors, dtype=np.float64)
    b, n = conf.shape
    order = np.argsort(-conf, axis=1, kind="stable")
    conf = np.take_along_axis(conf, order, axis=1)
    cumulative = np.cumsum(np.take_along_axis(loss, order, axis=1), axis=1)
    ends = np.ones((b, n), dtype=bool)
    ends[:, :-1] = conf[:, :-1] != conf[:, 1:]
    positions = np.arange(n)
    previous = np.full((b, n), -1)
    previous[:, 1:] = np.maximum.accumulate(np.where(ends, positions, -1), axis=1)[:, :-1]
    count_b = (positions + 1.0)[None, :]
    count_a = previous + 1.0
    loss_b = cumulative
    loss_a = np.where(previous >= 0, np.take_along_axis(cumulative, np.maximum(previous, 0), axis=1), 0.0)
    width = count_b - count_a  # >= 1
    slope = (loss_b - loss_a) / width
    intercept = loss_a - slope * count_a
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(count_a > 0, intercept * np.log(count_b / count_a), 0.0)
    aurc = np.sum(np.where(ends, slope * width + log_term, 0.0), axis=1) / n
    augrc = np.sum(np.where(ends, width * (loss_a + loss_b), 0.0), axis=1) / (2.0 * n * n)
    return {"aurc": aurc, "augrc": augrc}


def optimal_risk_areas(errors) -> dict:
    """AURC and AUGRC of 0/1 errors in the best order, per resample: exact closed forms of the error rate ``r``.

    Row ``r`` equals :func:`medscope.calibration.selective.aurc_optimal` and
    :func:`~medscope.calibration.selective.augrc_optimal`: ranking every right
    prediction first makes two blocks, so AURC is ``r + (1 - r) ln(1 - r)``
    and AUGRC ``r^2 / 2``.
    """
    e = np.asarray(errors, dtype=np.float64)
    if not np.isin(e, (0.0, 1.0)).all():
        raise ValueError("the closed forms hold for 0/1 errors only")
    r = e.mean(axis=1)
    return {"aurc": r + xlogy(1.0 - r, 1.0 - r), "augrc": r * r / 2.0}


def binary_rates(scores, labels, threshold: float) -> dict:
    """Rates of the rule ``score >= threshold`` per resample.

    Row ``r`` equals :func:`medscope.calibration.thresholds.evaluate_threshold`
    of ``scores[r], labels[r]``: ``sensitivity``, ``specificity``, ``ppv``,
    ``npv``, ``balanced_accuracy`` and ``accuracy`` (NaN where a denominator
    is 0).

    >>> binary_rates([[0.9, 0.6, 0.4, 0.1]], [[1, 0, 1, 0]], 0.5)["ppv"].tolist()
    [0.5]
    """
    positive = np.asarray(scores, dtype=np.float64) >= threshold
    y = np.asarray(labels).astype(bool)
    tp = np.sum(positive & y, axis=1)
    fp = np.sum(positive & ~y, axis=1)
    fn = np.sum(~positive & y, axis=1)
    tn = np.sum(~positive & ~y, axis=1)
    sensitivity, specificity = _divide(tp, tp + fn), _divide(tn, tn + fp)
    return {"sensitivity": sensitivity, "specificity": specificity, "ppv": _divide(tp, tp + fp),
            "npv": _divide(tn, tn + fn), "balanced_accuracy": (sensitivity + specificity) / 2.0,
            "accuracy": _divide(tp + tn, positive.shape[1])}
