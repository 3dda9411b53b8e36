"""Specification tests for medscope.analysis.complexity.

Sample Entropy is checked three ways: hand-counted tiny sequences, the exact
counts of the O(N^2) reference walk (also on heavily tied data and for both
tie rules), and antropy.sample_entropy to 1e-12 on both of antropy's code
paths (numba loop for N < 5000, sklearn KDTree for N >= 5000).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from medscope.analysis import complexity as cx
from medscope.analysis.complexity import (
    lmc_complexity,
    sample_entropy,
    sample_entropy_value,
    weight_statistics,
)

try:
    import antropy
except ImportError:  # only the comparisons with the reference implementation need it
    antropy = None
needs_antropy = pytest.mark.skipif(antropy is None, reason="antropy (the reference implementation) is not installed")

ANTROPY_KDTREE_MIN_N = 5000  # antropy 0.2.x: numba path below, KDTree path from here


def _vector(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(n)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, n)
    if kind == "laplace":
        return rng.laplace(size=n)
    if kind == "student_t3":
        return rng.standard_t(3, n)
    if kind == "lognormal":
        return rng.lognormal(size=n)
    if kind == "bimodal":
        x = np.concatenate([rng.normal(-2, 0.5, n // 2), rng.normal(2, 0.5, n - n // 2)])
        return rng.permutation(x)
    if kind == "ar1":  # strongly correlated neighbours
        e = rng.standard_normal(n)
        x = np.empty(n)
        x[0] = e[0]
        for i in range(1, n):
            x[i] = 0.9 * x[i - 1] + e[i]
        return x
    raise ValueError(kind)


def _assert_matches_antropy(x: np.ndarray, m: int) -> None:
    expected = antropy.sample_entropy(x, order=m)
    res = sample_entropy(x, m=m)
    if math.isfinite(expected):
        assert res.ok, res
        assert abs(res.value - expected) <= 1e-12, (x.size, m, res.value, expected)
    else:  # antropy: inf when A = 0, nan when B = 0
        assert not res.ok and math.isnan(res.value), res


# ---------------------------------------------------------------------------
# Hand-counted tiny sequences
# ---------------------------------------------------------------------------


def test_hand_counted_m2():
    # x = 1 2 3 1 2 4 1 2 3, N = 9, m = 2, r = 0.5 (integers: match == equal).
    # Templates start at i = 0..6 (N - m = 7) for both lengths.
    # 2-templates: (1,2) (2,3) (3,1) (1,2) (2,4) (4,1) (1,2)
    #   equal pairs: (1,2) at i = 0, 3, 6 -> {0,3} {0,6} {3,6}      -> B = 3
    # 3-templates: (1,2,3) (2,3,1) (3,1,2) (1,2,4) (2,4,1) (4,1,2) (1,2,3)
    #   equal pairs: (1,2,3) at i = 0, 6 -> {0,6}                    -> A = 1
    x = [1, 2, 3, 1, 2, 4, 1, 2, 3]
    for method in ("fast", "brute"):
        res = sample_entropy(x, m=2, r=0.5, method=method)
        assert (res.a_count, res.b_count) == (1, 3)
        assert res.value == pytest.approx(math.log(3.0), abs=1e-15)
        assert res.reason is None and res.ok
        assert (res.n, res.m, res.r) == (9, 2, 0.5)


@needs_antropy
def test_hand_counted_m2_is_antropys_value():
    x = np.array([1, 2, 3, 1, 2, 4, 1, 2, 3], float)  # test_hand_counted_m2: A = 1, B = 3
    assert antropy.sample_entropy(x, order=2, tolerance=0.5) == pytest.approx(math.log(3.0), abs=1e-15)


def test_hand_counted_ties_at_r():
    # x = 0 1 2 1 0, N = 5, m = 1, r = 1.0: every |difference| is 0, 1 or 2, so
    # many pairs sit exactly at distance r. Templates i = 0..3 (N - m = 4).
    # 1-templates: 0 1 2 1
    #   {0,1}: 1 (tie)  {0,2}: 2  {0,3}: 1 (tie)  {1,2}: 1 (tie)  {1,3}: 0  {2,3}: 1 (tie)
    #   inclusive (<= r): B = 5 (all but {0,2});  strict (< r): B = 1 ({1,3})
    # 2-templates: (0,1) (1,2) (2,1) (1,0)
    #   {0,1}: max(1,1) = 1 (tie)  {0,2}: max(2,0) = 2  {0,3}: max(1,1) = 1 (tie)
    #   {1,2}: max(1,1) = 1 (tie)  {1,3}: max(0,2) = 2  {2,3}: max(1,1) = 1 (tie)
    #   inclusive: A = 4;  strict: A = 0
    x = [0.0, 1.0, 2.0, 1.0, 0.0]
    for method in ("fast", "brute"):
        inc = sample_entropy(x, m=1, r=1.0, method=method)
        assert (inc.a_count, inc.b_count) == (4, 5)
        assert inc.value == pytest.approx(-math.log(4 / 5), abs=1e-15)
        strict = sample_entropy(x, m=1, r=1.0, inclusive=False, method=method)
        assert (strict.a_count, strict.b_count) == (0, 1)
        assert math.isnan(strict.value)
        assert strict.reason == "no (m+1)-matches (A = 0)"


@needs_antropy
def test_antropy_counts_ties_at_r_strictly_below_5000_points():
    # test_hand_counted_ties_at_r: with "< r" A = 0, and antropy's numba path (N < 5000) uses "< r" -> inf
    assert antropy.sample_entropy(np.array([0.0, 1.0, 2.0, 1.0, 0.0]), order=1, tolerance=1.0) == math.inf


def test_hand_counted_m3_periodic():
    # x = 1 2 3 4 1 2 3 4 1 2, N = 10, m = 3, r = 0.5. Templates i = 0..6.
    # 3-templates: (123) (234) (341) (412) (123) (234) (341)
    #   equal pairs {0,4} {1,5} {2,6}                             -> B = 3
    # 4-templates: (1234) (2341) (3412) (4123) (1234) (2341) (3412)
    #   equal pairs {0,4} {1,5} {2,6}                             -> A = 3
    res = sample_entropy([1, 2, 3, 4, 1, 2, 3, 4, 1, 2], m=3, r=0.5)
    assert (res.a_count, res.b_count, res.value) == (3, 3, 0.0)
    assert str(res.value) == "0.0"  # not "-0.0"


def test_no_m_matches():
    # 0 1 2 ... 9 with r = 0.5: no two samples within r, so no template pair
    # of any length matches: B = 0 (and A = 0).
    res = sample_entropy(np.arange(10.0), m=2, r=0.5)
    assert (res.a_count, res.b_count) == (0, 0)
    assert math.isnan(res.value) and res.reason == "no m-matches (B = 0)"
    assert not res.ok


def test_no_m_plus_1_matches():
    # x = 0 5 0 7 3, m = 1, r = 0.1, templates i = 0..3.
    # 1-templates 0 5 0 7: only {0,2} (0 == 0)                     -> B = 1
    # 2-templates (0,5) (5,0) (0,7) (7,3): {0,2} differs by 2 > r    -> A = 0
    res = sample_entropy([0.0, 5.0, 0.0, 7.0, 3.0], m=1, r=0.1)
    assert (res.a_count, res.b_count) == (0, 1)
    assert math.isnan(res.value)
    assert res.reason == "no (m+1)-matches (A = 0)"


def test_strict_with_zero_r_matches_nothing():
    res = sample_entropy([1.0, 1.0, 1.0, 1.0, 2.0], m=1, r=0.0, inclusive=False)
    assert (res.a_count, res.b_count) == (0, 0)
    assert res.reason == "no m-matches (B = 0)"
    # inclusive with r = 0 counts exact equality: 1-templates 1 1 1 1 -> B = 6;
    # 2-templates (1,1) (1,1) (1,1) (1,2) -> A = 3
    res = sample_entropy([1.0, 1.0, 1.0, 1.0, 2.0], m=1, r=0.0)
    assert (res.a_count, res.b_count) == (3, 6)


# ---------------------------------------------------------------------------
# Undefined inputs
# ---------------------------------------------------------------------------


def test_constant_vector():
    res = sample_entropy(np.full(50, 0.25))
    assert math.isnan(res.value)
    assert res.reason == "constant vector (std = 0)"
    assert res.r == 0.0 and (res.a_count, res.b_count) == (-1, -1)
    assert math.isnan(sample_entropy_value(np.full(50, 0.25)))
    # with an explicit r everything matches: A = B = C(N - m, 2), SampEn = 0
    res = sample_entropy(np.full(10, 3.0), m=2, r=0.1)
    assert (res.a_count, res.b_count, res.value) == (28, 28, 0.0)


@pytest.mark.parametrize(
    "n, m, reason",
    [
        (3, 2, "too short: N=3 < m+2=4"),
        (0, 2, "too short: N=0 < m+2=4"),
        (4, 3, "too short: N=4 < m+2=5"),
        (2, 1, "too short: N=2 < m+2=3"),
    ],
)
def test_too_short(n, m, reason):
    res = sample_entropy(np.arange(float(n)), m=m)
    assert math.isnan(res.value) and res.reason == reason and res.n == n


def test_nan_and_inf_weights():
    x = np.random.default_rng(0).standard_normal(100)
    x[17] = np.nan
    res = sample_entropy(x)
    assert math.isnan(res.value) and res.reason == "contains NaN"
    x[17] = np.inf
    res = sample_entropy(x)
    assert math.isnan(res.value) and res.reason == "contains inf"
    x[17] = -np.inf
    assert sample_entropy(x).reason == "contains inf"
    huge = np.array([1e308, -1e308, 1e308, -1e308, 5.0])  # finite, but std overflows
    assert sample_entropy(huge).reason == "std overflows float64"


def test_bad_arguments():
    x = np.random.default_rng(0).standard_normal(50)
    for m in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            sample_entropy(x, m=m)
    with pytest.raises(ValueError):
        sample_entropy(x, r=-0.1)
    with pytest.raises(ValueError):
        sample_entropy(x, r=float("nan"))
    with pytest.raises(ValueError):
        sample_entropy(x.reshape(5, 10))
    with pytest.raises(ValueError):
        sample_entropy(x, m=3, method="fast")
    with pytest.raises(ValueError):
        sample_entropy(x, method="kdtree")


# ---------------------------------------------------------------------------
# Exactness of the fast path: identical counts to the O(N^2) reference
# ---------------------------------------------------------------------------


def test_fast_counts_equal_reference_including_ties():
    rng = np.random.default_rng(12345)
    kinds = ("normal", "int4", "rounded", "dupes", "uniform")
    for trial in range(60):
        n = int(rng.integers(4, 1200)) if trial % 4 else int(rng.integers(1200, 3000))
        kind = kinds[trial % len(kinds)]
        if kind == "int4":  # many exact ties at any integer r
            x = rng.integers(0, 4, n).astype(float)
        elif kind == "rounded":
            x = np.round(rng.standard_normal(n), 1)
        elif kind == "dupes":
            x = rng.choice(rng.standard_normal(max(2, n // 10)), n)
        elif kind == "uniform":
            x = rng.uniform(0, 1, n)
        else:
            x = rng.standard_normal(n)
        for r in (None, 1.0, 0.1, 3.0):
            for m in (1, 2):
                for inclusive in (True, False):
                    fast = sample_entropy(x, m, r, inclusive=inclusive, method="fast")
                    ref = sample_entropy(x, m, r, inclusive=inclusive, method="brute")
                    assert (fast.a_count, fast.b_count) == (ref.a_count, ref.b_count), (
                        trial, kind, n, r, m, inclusive,
                    )
                    assert fast.reason == ref.reason
                    if fast.ok:
                        assert fast.value == ref.value


def test_rounding_at_the_boundary_uses_the_literal_comparison():
    # Values whose float64 differences land exactly on / one ulp around r.
    r = 0.1
    x = np.array([0.0, 0.1, 0.2, 0.30000000000000004, 0.7, 0.8, 0.9, 1.0, 0.1, 0.2])
    diffs = np.abs(x[:, None] - x[None, :])
    assert (diffs == r).any()  # there are exact ties in float64
    for m in (1, 2):
        for inclusive in (True, False):
            fast = sample_entropy(x, m, r, inclusive=inclusive, method="fast")
            ref = sample_entropy(x, m, r, inclusive=inclusive, method="brute")
            assert (fast.a_count, fast.b_count) == (ref.a_count, ref.b_count)


# ---------------------------------------------------------------------------
# Equality with antropy (both code paths)
# ---------------------------------------------------------------------------


KINDS = ["normal", "uniform", "laplace", "student_t3", "lognormal", "bimodal", "ar1"]


@needs_antropy
@pytest.mark.parametrize("kind", KINDS)
def test_matches_antropy_numba_path(kind):
    rng = np.random.default_rng(100 + KINDS.index(kind))
    for n in (100, 237, 1000, 4999):
        _assert_matches_antropy(_vector(kind, n, rng), m=2)


@needs_antropy
@pytest.mark.parametrize(
    "kind, n",
    [
        ("normal", 5000),
        ("uniform", 7001),
        ("laplace", 12345),
        ("student_t3", 20000),
        ("bimodal", 9000),
        ("ar1", 15000),
        ("lognormal", 30000),
    ],
)
def test_matches_antropy_kdtree_path(kind, n):
    assert n >= ANTROPY_KDTREE_MIN_N
    rng = np.random.default_rng(n)
    _assert_matches_antropy(_vector(kind, n, rng), m=2)


@needs_antropy
def test_matches_antropy_200k():
    x = np.random.default_rng(200_000).standard_normal(200_000)
    _assert_matches_antropy(x, m=2)


@needs_antropy
def test_general_m_matches_antropy():
    rng = np.random.default_rng(7)
    for n in (150, 1000, 4999):  # m = 1 exists only on antropy's numba path
        _assert_matches_antropy(rng.standard_normal(n), m=1)
    for n in (400, 3000):  # numba path
        _assert_matches_antropy(rng.uniform(size=n), m=3)
    _assert_matches_antropy(rng.standard_normal(8000), m=3)  # KDTree path
    _assert_matches_antropy(rng.standard_normal(6000), m=4)


@needs_antropy
def test_tie_rules_reproduce_each_antropy_path():
    # Integer data with an integer tolerance: lots of differences equal r.
    rng = np.random.default_rng(3)
    small = rng.integers(0, 5, 3000).astype(float)  # antropy numba path: "< r"
    expected = antropy.sample_entropy(small, order=2, tolerance=1.0)
    strict = sample_entropy(small, m=2, r=1.0, inclusive=False)
    inclusive = sample_entropy(small, m=2, r=1.0)
    assert abs(strict.value - expected) <= 1e-12
    assert abs(inclusive.value - expected) > 1e-3  # the tie rule matters here

    large = rng.integers(0, 5, 6000).astype(float)  # antropy KDTree path: "<= r"
    expected = antropy.sample_entropy(large, order=2, tolerance=1.0)
    inclusive = sample_entropy(large, m=2, r=1.0)
    strict = sample_entropy(large, m=2, r=1.0, inclusive=False)
    assert abs(inclusive.value - expected) <= 1e-12
    assert abs(strict.value - expected) > 1e-3


@needs_antropy
def test_real_resnet18_layer_matches_antropy():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    w = model.layer1[0].conv1.weight
    assert w.numel() == 36_864
    x = w.detach().numpy().ravel().astype(np.float64)
    expected = antropy.sample_entropy(x, order=2)
    res = sample_entropy(x)
    assert res.ok and abs(res.value - expected) <= 1e-12
    # float32 weights: no float64 difference equals r, so the tie rule is moot
    strict = sample_entropy(x, inclusive=False)
    assert (strict.a_count, strict.b_count) == (res.a_count, res.b_count)
    # float32 input is converted to float64 first
    res32 = sample_entropy(w.detach().numpy().ravel())
    assert res32 == res


def test_layout_and_dtype_do_not_matter():
    rng = np.random.default_rng(11)
    base = rng.standard_normal(6000)
    strided = base[::2]
    assert not strided.flags["C_CONTIGUOUS"]
    assert sample_entropy(strided) == sample_entropy(strided.copy())
    assert sample_entropy(list(strided)) == sample_entropy(strided.copy())


# ---------------------------------------------------------------------------
# LMC complexity
# ---------------------------------------------------------------------------


def test_lmc_uniform_histogram_has_zero_disequilibrium():
    for x, bins in ((np.arange(64.0), 64), (np.repeat(np.arange(8.0), 5), 8)):
        res = lmc_complexity(x, bins=bins)
        assert res.n_bins == bins
        assert res.D == pytest.approx(0.0, abs=1e-15)
        assert res.H == pytest.approx(1.0, abs=1e-12)
        assert res.C == pytest.approx(0.0, abs=1e-15)


def test_lmc_single_bin_has_zero_entropy():
    res = lmc_complexity(np.r_[np.full(99, 0.7), 1.0], bins=16)  # all but one value in the first bin
    assert res.H == pytest.approx(-(0.99 * np.log(0.99) + 0.01 * np.log(0.01)) / np.log(16))
    assert res.D == pytest.approx((0.99 - 1 / 16) ** 2 + (0.01 - 1 / 16) ** 2 + 14 / 16 ** 2)
    res = lmc_complexity(np.random.default_rng(0).standard_normal(100), bins=1)
    assert (res.H, res.D, res.C) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("value", [1.0, 0.7])
def test_lmc_and_sample_entropy_agree_that_a_constant_vector_is_undefined(value):
    constant = np.full(100, value)  # numpy's std: 0 for 1.0, 2e-16 for 0.7 (antropy: nan, then 0)
    lmc, sampen = lmc_complexity(constant, bins=16), sample_entropy(constant)
    assert lmc.reason == sampen.reason == "constant vector (std = 0)"
    assert np.isnan(lmc.H) and np.isnan(lmc.C) and np.isnan(sampen.value)


def test_lmc_hand_example():
    # 3 of 4 values in the first of 2 bins: p = (3/4, 1/4)
    # H = -(3/4 ln 3/4 + 1/4 ln 1/4) / ln 2 = 0.811278...
    # D = (3/4 - 1/2)^2 + (1/4 - 1/2)^2 = 0.125
    res = lmc_complexity([0.0, 0.0, 0.0, 1.0], bins=2)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert res.H == pytest.approx(h, abs=1e-15)
    assert res.D == pytest.approx(0.125, abs=1e-15)
    assert res.C == pytest.approx(h * 0.125, abs=1e-15)
    assert (res.lo, res.hi, res.reason) == (0.0, 1.0, None)


def test_lmc_against_numpy_histogram_and_rules():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(10_000)
    res = lmc_complexity(x)
    assert res.n_bins == cx.LMC_DEFAULT_BINS == 64
    counts, _ = np.histogram(x, bins=64, range=(x.min(), x.max()))
    p = counts / x.size
    nz = p[p > 0]
    assert res.H == pytest.approx(-(nz * np.log(nz)).sum() / np.log(64), abs=1e-12)
    assert res.D == pytest.approx(((p - 1 / 64) ** 2).sum(), abs=1e-15)
    assert 0.0 <= res.H <= 1.0 and 0.0 <= res.D <= 1.0 - 1.0 / 64
    assert lmc_complexity(x, bins="sturges").n_bins == math.ceil(math.log2(x.size)) + 1
    assert lmc_complexity(x, bins="sqrt").n_bins == 100
    q75, q25 = np.percentile(x, [75, 25])
    fd = math.ceil((x.max() - x.min()) / (2 * (q75 - q25) * x.size ** (-1 / 3)))
    assert lmc_complexity(x, bins="fd").n_bins == fd
    sparse = np.zeros(1000)
    sparse[:10] = rng.standard_normal(10)  # IQR = 0: FD falls back to Sturges
    assert lmc_complexity(sparse, bins="fd").n_bins == math.ceil(math.log2(1000)) + 1
    heavy = rng.standard_cauchy(10_000)  # FD would ask for a huge number of bins
    assert lmc_complexity(heavy, bins="fd").n_bins == cx.LMC_MAX_BINS
    assert lmc_complexity(heavy, bins="fd", max_bins=50).n_bins == 50


def test_lmc_undefined_and_bad_arguments():
    assert lmc_complexity([]).reason == "empty vector"
    res = lmc_complexity([1.0, np.nan, 2.0])
    assert res.reason == "contains NaN" and math.isnan(res.C)
    assert lmc_complexity([1.0, np.inf]).reason == "contains inf"
    for bins in (0, -3, 2.5, "scott"):
        with pytest.raises(ValueError):
            lmc_complexity([1.0, 2.0, 3.0], bins=bins)


# ---------------------------------------------------------------------------
# Weight statistics
# ---------------------------------------------------------------------------


def test_weight_statistics_against_numpy_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(9)
    x = rng.standard_t(5, 5000) * 0.05
    x[:40] = 0.0
    st = weight_statistics(x)
    assert st.count == x.size
    assert st.mean == pytest.approx(np.mean(x), rel=1e-12, abs=1e-15)
    assert st.std == pytest.approx(np.std(x, ddof=0), rel=1e-12)
    assert st.kurtosis == pytest.approx(stats.kurtosis(x, fisher=True, bias=True), rel=1e-10)
    assert st.l1_norm == pytest.approx(np.abs(x).sum(), rel=1e-12)
    assert st.l2_norm == pytest.approx(np.linalg.norm(x), rel=1e-12)
    thr = 1e-3 * np.abs(x).max()
    assert st.near_zero_threshold == thr
    assert st.frac_near_zero == np.mean(np.abs(x) <= thr)
    assert st.frac_near_zero >= 40 / x.size

    st_abs = weight_statistics(x, near_zero=0.01, relative=False)
    assert st_abs.near_zero_threshold == 0.01
    assert st_abs.frac_near_zero == np.mean(np.abs(x) <= 0.01)

    # normal data: excess kurtosis ~ 0
    assert abs(weight_statistics(rng.standard_normal(200_000)).kurtosis) < 0.05


def test_weight_statistics_edge_cases():
    st = weight_statistics(np.zeros(10))
    assert st.frac_near_zero == 1.0 and st.std == 0.0 and math.isnan(st.kurtosis)
    st = weight_statistics([])
    assert st.count == 0 and math.isnan(st.mean)
    st = weight_statistics([1.0, np.nan, 3.0])
    assert st.count == 3 and all(math.isnan(v) for v in st[1:])
    st = weight_statistics([-2.0, 0.0, 0.0, 2.0])  # two-point symmetric: kurtosis -1
    assert st.kurtosis == pytest.approx(-1.0)


# ---------------------------------------------------------------------------
# Docstring examples
# ---------------------------------------------------------------------------


def test_docstring_examples():
    result = doctest.testmod(cx, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
