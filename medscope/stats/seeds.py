"""Across training seeds: mean +- sd, a t-interval, and tests between two configurations.

A study trains each configuration with several seeds; each seed gives one
number (say test AUC).  With the same seeds used for both configurations the
values are *paired* by seed (same initialisation and data order).

Which paired test (:func:`paired_seed_test`):

* ``n <= 16`` paired seeds: :func:`sign_flip_test`, the exact sign-flip
  permutation test of the mean difference (all ``2^n`` sign patterns).  It
  uses the sizes of the differences, not only their ranks, and is exact
  for any ``n``; with few seeds its smallest p-value is ``2 / 2^n``
  (``1/16`` for 5 seeds), which no test can beat.
* ``n > 16``: :func:`wilcoxon_test`, the Wilcoxon signed-rank test of
  ``scipy.stats.wilcoxon`` (zero differences dropped; exact null
  distribution for ``n <= 50`` without ties or zeros, the normal
  approximation otherwise), cheap for any ``n``.

Both test "the differences are symmetric about 0"; neither assumes normality.
Two groups of seeds that are *not* paired: :func:`unpaired_permutation_test`.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats
from scipy.special import comb

from medscope.errors import UsageError

MAX_EXACT_PAIRED = 16  # paired_seed_test: exact sign flips up to 2^16 patterns
MAX_SIGN_FLIP = 24  # sign_flip_test refuses more (2^24 subset sums = 128 MiB)


def _values(values, name: str = "values") -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise UsageError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise UsageError(f"{name} contain NaN or infinite values")
    return values


def _pair(a, b) -> np.ndarray:
    a, b = _values(a, "a"), _values(b, "b")
    if a.size != b.size:
        raise UsageError(f"paired values need equal lengths, got {a.size} and {b.size}")
    return a - b


def _at_least(null: np.ndarray, observed: float, scale: float) -> int:
    """How many null values have ``|T| >= |observed|``, equal up to rounding counted as equal."""
    tolerance = 1e-12 * scale  # far above summation rounding, far below real differences
    return int(np.count_nonzero(np.abs(null) >= abs(observed) - tolerance))


def seed_summary(values, level: float = 0.95) -> dict:
    """Mean, standard deviation and t-interval of the mean across seeds.

    ``sd`` uses the ``n - 1`` denominator; the interval is
    ``mean +- t_{n-1, (1 + level)/2} sd / sqrt(n)``.  With one seed ``sd``
    and the interval are NaN.

    >>> r = seed_summary([0.90, 0.92, 0.94])
    >>> round(r["mean"], 4), round(r["sd"], 4), round(r["low"], 4), round(r["high"], 4)
    (0.92, 0.02, 0.8703, 0.9697)
    """
    if not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1 (exclusive), got {level!r}")
    values = _values(values)
    n, mean = values.size, float(values.mean())
    if n < 2:
        sd = low = high = math.nan
    else:
        sd = float(values.std(ddof=1))
        half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    return {"mean": mean, "sd": sd, "n": n, "low": low, "high": high, "level": level,
            "method": "t interval of the mean"}


def sign_flip_test(differences) -> dict:
    """Exact two-sided sign-flip permutation test of a mean paired difference.

    Under H0 (differences symmetric about 0) each of the ``2^n`` sign
    patterns is equally likely; with ``T(s) = sum_i s_i d_i``,

    .. math::  p = \\#\\{s : |T(s)| \\ge |T(1)|\\} / 2^n,

    the identity pattern included (so ``p >= 2 / 2^n`` when ``T != 0``).
    ``T(s)`` for all patterns is built as subset sums, ``O(2^n)``; ``n`` is
    limited to 24.

    >>> sign_flip_test([0.01, 0.02, 0.03])["p_value"]
    0.25
    """
    d = _values(differences, "differences")
    if d.size > MAX_SIGN_FLIP:
        raise UsageError(f"exact sign-flip test enumerates 2^n patterns; n = {d.size} > {MAX_SIGN_FLIP}, "
                         "use wilcoxon_test")
    flipped = np.zeros(1)
    for value in d:  # subset sums: the total of the flipped elements for every subset
        flipped = np.concatenate([flipped, flipped + value])
    null = d.sum() - 2 * flipped
    count = _at_least(null, float(d.sum()), float(np.abs(d).sum()))
    return {"statistic": float(d.mean()), "p_value": count / null.size, "n": int(d.size),
            "method": "exact sign-flip permutation test of the mean difference"}


def wilcoxon_test(a, b) -> dict:
    """Wilcoxon signed-rank test of paired values (``scipy.stats.wilcoxon``, two-sided).

    ``statistic`` is scipy's (the smaller rank sum); zero differences are
    dropped (``zero_method="wilcox"``); scipy's ``method="auto"`` takes the
    exact null distribution for ``n <= 50`` without ties or zeros, and the
    normal approximation otherwise.  All-zero differences give ``p = 1``.
    """
    d = _pair(a, b)
    if not np.any(d):
        return {"statistic": 0.0, "p_value": 1.0, "n": int(d.size), "method": "Wilcoxon signed-rank test"}
    result = stats.wilcoxon(d)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "n": int(d.size),
            "method": "Wilcoxon signed-rank test"}


def paired_seed_test(a, b, *, max_exact: int = MAX_EXACT_PAIRED) -> dict:
    """Paired test across seeds: exact sign flips for ``n <= max_exact``, Wilcoxon above (module notes).

    ``a[i]`` and ``b[i]`` are the two configurations' values for seed ``i``.
    Returns the chosen test's dict plus ``"mean_difference"`` (mean of a - b).

    >>> r = paired_seed_test([0.91, 0.93, 0.92, 0.95, 0.94], [0.90, 0.91, 0.90, 0.92, 0.93])
    >>> r["method"], r["p_value"]
    ('exact sign-flip permutation test of the mean difference', 0.0625)
    """
    d = _pair(a, b)
    result = sign_flip_test(d) if d.size <= max_exact else wilcoxon_test(a, b)
    return result | {"mean_difference": float(d.mean())}


def unpaired_permutation_test(a, b, *, max_exact: int = 200_000, n_resamples: int = 99_999,
                              seed: int = 0) -> dict:
    """Two-sided permutation test of equal means for two unpaired groups of seeds.

    Statistic ``T = mean(a) - mean(b)``; the null distribution re-splits
    the pooled values into groups of the same sizes.  Exact (all
    ``C(n_a + n_b, n_a)`` splits, ``p = #{|T*| >= |T|} / C``) when there are
    at most ``max_exact`` splits (10 + 10 seeds: 184,756); otherwise
    ``n_resamples`` random splits from ``numpy.random.default_rng(seed)``
    and ``p = (1 + #{|T*| >= |T|}) / (1 + n_resamples)``.

    >>> unpaired_permutation_test([3.0, 4.0], [1.0, 2.0])["p_value"]
    0.3333333333333333
    """
    a, b = _values(a, "a"), _values(b, "b")
    pooled = np.concatenate([a, b])
    n_a, total = a.size, pooled.sum()
    observed = float(a.mean() - b.mean())
    scale = float(np.abs(pooled).sum())
    splits = int(comb(pooled.size, n_a, exact=True))
    if splits <= max_exact:
        members = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(pooled.size), n_a)),
                              dtype=np.intp, count=splits * n_a).reshape(splits, n_a)
        sums = pooled[members].sum(axis=1)
        null = sums / n_a - (total - sums) / b.size
        p = _at_least(null, observed, scale) / splits
        method = "exact permutation test of the mean difference"
    else:
        rng = np.random.default_rng(seed)
        keys = rng.random((n_resamples, pooled.size))
        members = np.argpartition(keys, n_a - 1, axis=1)[:, :n_a]  # a uniform random subset of size n_a
        sums = pooled[members].sum(axis=1)
        null = sums / n_a - (total - sums) / b.size
        p = (1 + _at_least(null, observed, scale)) / (1 + n_resamples)
        method = f"Monte Carlo permutation test of the mean difference ({n_resamples} splits)"
    return {"statistic": observed, "p_value": float(p), "n_a": int(a.size), "n_b": int(b.size), "method": method}
