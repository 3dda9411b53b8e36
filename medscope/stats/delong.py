"""DeLong's variance of the AUC, its normal interval and the paired DeLong test.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or
more correlated receiver operating characteristic curves: a nonparametric
approach", Biometrics 44:837-845, computed by the midrank algorithm of
Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing
the areas under correlated receiver operating characteristic curves",
IEEE Signal Processing Letters 21(11):1389-1393.

With ``m`` positives ``X_i`` and ``n`` negatives ``Y_j`` and the kernel
``psi(x, y) = 1 if x > y, 1/2 if x = y, 0 otherwise``:

.. math::

    \\hat\\theta = \\frac{1}{mn}\\sum_i\\sum_j \\psi(X_i, Y_j), \\qquad
    V_{10}(X_i) = \\frac1n \\sum_j \\psi(X_i, Y_j), \\qquad
    V_{01}(Y_j) = \\frac1m \\sum_i \\psi(X_i, Y_j),

    S_{10} = \\widehat{\\mathrm{cov}}(V_{10}), \\quad
    S_{01} = \\widehat{\\mathrm{cov}}(V_{01}) \\quad (\\text{denominator } m-1,\\ n-1), \\qquad
    S = \\frac{S_{10}}{m} + \\frac{S_{01}}{n}.

For ``k`` score vectors on the same samples ``S`` is a ``k x k``
covariance matrix.  Sun & Xu obtain the structural components from
midranks in ``O((m + n) log(m + n))``: with ``T_Z`` the midranks in the
pooled sample, ``T_X`` within the positives and ``T_Y`` within the
negatives, ``V10_i = (T_Z(X_i) - T_X(X_i)) / n`` and
``V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m``.

The paired test of ``theta_a = theta_b`` uses
``z = (theta_a - theta_b) / sqrt(S_aa + S_bb - 2 S_ab)`` and the
two-sided normal p-value ``2 (1 - Phi(|z|))``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm, rankdata

from medscope.errors import UsageError


def _binary_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UsageError(f"labels must have shape (n,) or (n, 1), got {labels.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise UsageError("labels must be 0 (negative) or 1 (positive)")
    positive = labels.astype(bool)
    if positive.all() or not positive.any():
        raise UsageError("AUC needs at least one positive and one negative sample")
    return positive


def _score_matrix(scores, n: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2 or scores.shape[1] != n:
        raise UsageError(f"scores must have shape ({n},) or (models, {n}), got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise UsageError("scores contain NaN or infinite values")
    return scores


def delong_covariance(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and DeLong's covariance matrix of one or more score vectors.

    Parameters
    ----------
    labels : array (n,) or (n, 1) of 0/1
        1 marks a positive.
    scores : array (n,) or (k, n)
        Higher score = more likely positive; ``k`` models on the same samples.

    Returns
    -------
    aucs : array (k,)
    covariance : array (k, k)
        ``S = S10 / m + S01 / n`` (module notes).  NaN when there is a
        single positive or a single negative (a sample covariance needs two).

    >>> aucs, cov = delong_covariance([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> float(aucs[0]), float(cov[0, 0])
    (0.75, 0.125)
    """
    positive = _binary_labels(labels)
    scores = _score_matrix(scores, positive.size)
    x, y = scores[:, positive], scores[:, ~positive]
    m, n = x.shape[1], y.shape[1]
    tx = rankdata(x, axis=1)
    ty = rankdata(y, axis=1)
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    aucs = v10.mean(axis=1)
    if m < 2 or n < 2:
        return aucs, np.full((scores.shape[0],) * 2, np.nan)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong_interval(labels, scores, level: float = 0.95, transform: str = "none") -> dict:
    """Normal confidence interval of the AUC with DeLong's standard error.

    ``transform="none"`` (default): ``theta +- z se``, clipped to
    ``[0, 1]`` (as ``pROC::ci.auc(method="delong")``);
    ``z = Phi^{-1}((1 + level) / 2)``.

    ``transform="logit"``: the interval of ``logit(theta)`` with the delta
    method's ``se / (theta (1 - theta))``, mapped back with the logistic
    function; it stays inside (0, 1) without clipping and is asymmetric
    near 0 and 1.  It is ``[theta, theta]`` when ``theta`` is 0 or 1.

    A perfect (or perfectly wrong) classifier has ``se = 0`` and the
    interval ``[theta, theta]``.

    Returns
    -------
    dict
        ``{"estimate", "low", "high", "se", "level", "method"}``.

    >>> r = delong_interval([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    >>> r["estimate"], r["low"], r["high"], r["se"]
    (1.0, 1.0, 1.0, 0.0)
    """
    if not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1 (exclusive), got {level!r}")
    if transform not in ("none", "logit"):
        raise UsageError(f"transform must be 'none' or 'logit', got {transform!r}")
    aucs, cov = delong_covariance(labels, np.asarray(scores, dtype=np.float64).reshape(-1))
    theta, variance = float(aucs[0]), float(cov[0, 0])
    se = math.sqrt(max(variance, 0.0)) if not math.isnan(variance) else math.nan
    z = float(norm.ppf((1 + level) / 2))
    if transform == "none":
        low, high = max(0.0, theta - z * se), min(1.0, theta + z * se)
        method = "DeLong normal interval, clipped to [0, 1]"
    elif theta in (0.0, 1.0):
        low = high = theta
        method = "DeLong logit interval"
    else:
        centre, spread = float(logit(theta)), z * se / (theta * (1 - theta))
        low, high = float(expit(centre - spread)), float(expit(centre + spread))
        method = "DeLong logit interval"
    return {"estimate": theta, "low": float(low), "high": float(high), "se": se, "level": level, "method": method}


def delong_test(labels, scores_a, scores_b) -> dict:
    """DeLong's test of equal AUC for two models scored on the same samples.

    ``z = (theta_a - theta_b) / sqrt(var_a + var_b - 2 cov_ab)``, two-sided
    ``p = 2 (1 - Phi(|z|))``.  When the variance of the difference is 0:
    ``z = 0, p = 1`` for equal AUCs (as ``pROC::roc.test``), otherwise
    ``z = +-inf, p = 0``.

    Returns
    -------
    dict
        ``{"auc_a", "auc_b", "difference", "z", "p_value", "covariance",
        "variance_difference"}`` with ``covariance`` the 2 x 2 matrix as
        nested lists and ``difference = auc_a - auc_b``.

    >>> r = delong_test([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [0.1, 0.4, 0.35, 0.8])
    >>> r["z"], r["p_value"]
    (0.0, 1.0)
    """
    scores_a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    scores_b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    if scores_a.shape != scores_b.shape:
        raise UsageError(f"the two score vectors differ in length: {scores_a.size} and {scores_b.size}")
    aucs, cov = delong_covariance(labels, np.stack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if variance < 0:  # rounding; a variance of a difference is never negative
        variance = 0.0
    if math.isnan(variance):
        z = p = math.nan
    elif variance == 0.0:
        z, p = (0.0, 1.0) if difference == 0 else (math.copysign(math.inf, difference), 0.0)
    else:
        z = difference / math.sqrt(variance)
        p = float(2 * norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": difference, "z": float(z),
            "p_value": float(p), "covariance": cov.tolist(), "variance_difference": variance}
