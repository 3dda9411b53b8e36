"""Paired bootstrap of the difference of a metric between two models on one test split.

Both models are evaluated on the *same* resamples (the same counts per
sample, drawn as in :mod:`medscope.stats.bootstrap`, stratified by true
class by default), so the bootstrap distribution of the difference

.. math::

    d^*_b = m_A(\\text{resample } b) - m_B(\\text{resample } b)

keeps the correlation between the two models' errors on shared images.  The
interval is the percentile interval of ``d*``.  The two-sided p-value of
"no difference" inverts that interval:

.. math::

    p = \\min\\Big(1,\\; 2\\,\\frac{1 + \\min(\\#\\{d^*_b \\le 0\\},\\,
        \\#\\{d^*_b \\ge 0\\})}{B + 1}\\Big),

the smallest ``alpha`` at which the ``1 - alpha`` percentile interval
(nearly) excludes 0; the ``+1`` counts the observed difference as one
resample, so ``p`` is never 0 (at least ``2 / (B + 1)``, the resolution of
``B`` resamples).  Resamples in which a metric is undefined for either
model are left out (``n_dropped``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medscope.errors import UsageError
from .bootstrap import _check_resampling, bootstrap_distributions, method_name, nest, percentile_interval, point_metrics


def bootstrap_p_value(differences) -> float:
    """Two-sided bootstrap p-value of "difference = 0" (module notes); NaN values left out.

    >>> bootstrap_p_value([0.1, 0.2, 0.3, -0.1])
    0.8
    >>> bootstrap_p_value([0.1, 0.2, 0.3, 0.4])
    0.4
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    extreme = min(int(np.count_nonzero(d <= 0)), int(np.count_nonzero(d >= 0)))
    return float(min(1.0, 2 * (1 + extreme) / (d.size + 1)))


def paired_bootstrap(task: str, labels, scores_a, scores_b, *, n_resamples: int = 2000, level: float = 0.95,
                     seed: int = 0, stratified: bool = True, class_names: Sequence[str] | None = None) -> dict:
    """Paired percentile bootstrap of metric differences between two models (A - B).

    Parameters
    ----------
    task, labels : as :func:`medscope.stats.bootstrap.metric_intervals`
    scores_a, scores_b : arrays (n, K)
        The two models' probabilities on the same samples, same order.
    n_resamples, level, seed, stratified, class_names :
        as :func:`medscope.stats.bootstrap.metric_intervals`.

    Returns
    -------
    dict
        Same layout as ``metric_intervals`` (``"auc"``, ``"acc"``,
        ``"balanced_acc"``, ``"per_class"``); each entry is
        ``{"estimate_a", "estimate_b", "difference", "low", "high",
        "p_value", "level", "method", "n_resamples", "n_dropped"}`` with
        ``difference = estimate_a - estimate_b`` on the data as given and
        ``low``/``high`` the percentile interval of the paired differences.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> labels = rng.integers(0, 2, size=(300, 1))
    >>> good = np.clip(0.5 * labels[:, 0] + 0.5 * rng.random(300), 0, 1)
    >>> weak = np.clip(0.1 * labels[:, 0] + 0.9 * rng.random(300), 0, 1)
    >>> r = paired_bootstrap("binary-class", labels, np.stack([1 - good, good], 1),
    ...                      np.stack([1 - weak, weak], 1), n_resamples=500)
    >>> r["auc"]["low"] > 0, r["auc"]["p_value"] < 0.01
    (True, True)
    """
    _check_resampling(n_resamples, level, seed)
    if np.shape(scores_a) != np.shape(scores_b):
        raise UsageError(f"the two models' scores differ in shape: {np.shape(scores_a)} and {np.shape(scores_b)}")
    estimates_a = point_metrics(task, labels, scores_a)
    estimates_b = point_metrics(task, labels, scores_b)
    values_a, values_b = bootstrap_distributions(task, labels, [scores_a, scores_b], n_resamples=n_resamples,
                                                 seed=seed, stratified=stratified)
    method = "paired " + method_name(task, stratified)
    flat = {}
    for key in estimates_a:
        differences = values_a[key] - values_b[key]
        low, high, dropped = percentile_interval(differences, level)
        flat[key] = {"estimate_a": estimates_a[key], "estimate_b": estimates_b[key],
                     "difference": estimates_a[key] - estimates_b[key], "low": low, "high": high,
                     "p_value": bootstrap_p_value(differences), "level": level, "method": method,
                     "n_resamples": n_resamples, "n_dropped": dropped}
    n_classes = sum(1 for key in estimates_a if key.startswith("sensitivity/"))
    return nest(flat, class_names, n_classes)
