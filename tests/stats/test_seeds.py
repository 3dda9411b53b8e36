"""medscope.stats.seeds: mean +- sd and t-interval across seeds, sign-flip, Wilcoxon and permutation tests."""
import doctest
import math

import numpy as np
import pytest
from scipy import stats

from medscope.errors import UsageError
from medscope.stats import seeds


def test_doctests():
    assert doctest.testmod(seeds).failed == 0


def test_seed_summary_equals_scipys_one_sample_t_interval():
    values = np.array([0.912, 0.905, 0.921, 0.899, 0.915, 0.908])
    result = seeds.seed_summary(values, level=0.9)
    reference = stats.ttest_1samp(values, 0).confidence_interval(0.9)
    assert result["mean"] == pytest.approx(values.mean())
    assert result["sd"] == pytest.approx(np.std(values, ddof=1))
    assert (result["low"], result["high"]) == pytest.approx((reference.low, reference.high), rel=1e-12)
    assert result["n"] == 6


def test_seed_summary_of_one_seed_has_no_spread():
    result = seeds.seed_summary([0.9])
    assert result["mean"] == 0.9 and math.isnan(result["sd"]) and math.isnan(result["low"])


def test_sign_flip_p_values_by_hand():
    # d = (1, 2, 4): the 8 sign patterns give T = +-1 +-2 +-4 = -7, -5, -3, -1, 1, 3, 5, 7
    assert seeds.sign_flip_test([1, 2, 4])["p_value"] == 2 / 8  # |T| >= 7
    assert seeds.sign_flip_test([1, -2, 4])["p_value"] == 6 / 8  # |T| >= 3
    assert seeds.sign_flip_test([1, 2, -3])["p_value"] == 1.0  # T = 0
    assert seeds.sign_flip_test([0, 0, 5])["p_value"] == 1.0  # zeros flip to themselves: 4 of 8 patterns each way


@pytest.mark.parametrize("n, seed", [(5, 0), (8, 1), (11, 2), (12, 3)])
def test_sign_flip_equals_scipys_exact_permutation_test(n, seed):
    d = np.random.default_rng(seed).normal(0.3, 1, n)
    d[0] = 0.0  # a zero difference, as two seeds can tie exactly
    reference = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                       alternative="two-sided")
    assert seeds.sign_flip_test(d)["p_value"] == pytest.approx(reference.pvalue, abs=1e-12)


def test_wilcoxon_equals_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.9, 0.01, 20), rng.normal(0.895, 0.01, 20)
    reference = stats.wilcoxon(a, b)
    result = seeds.wilcoxon_test(a, b)
    assert (result["statistic"], result["p_value"]) == (reference.statistic, reference.pvalue)


def test_wilcoxon_exact_p_value_by_hand():
    # 20 positive, distinct differences: only the all-positive and all-negative sign patterns are as extreme
    a = 0.9 + np.arange(1, 21) * 1e-3
    assert seeds.wilcoxon_test(a, np.full(20, 0.9))["p_value"] == pytest.approx(2 / 2**20)


def test_paired_seed_test_switches_to_wilcoxon_above_16_seeds():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=17), rng.normal(size=17)
    assert seeds.paired_seed_test(a[:16], b[:16])["method"] == "exact sign-flip permutation test of the mean difference"
    assert seeds.paired_seed_test(a[:16], b[:16])["p_value"] == seeds.sign_flip_test(a[:16] - b[:16])["p_value"]
    result = seeds.paired_seed_test(a, b)
    assert result["method"] == "Wilcoxon signed-rank test"
    assert result["p_value"] == stats.wilcoxon(a, b).pvalue
    assert result["mean_difference"] == pytest.approx(np.mean(a - b))


def test_identical_configurations_give_p_1():
    assert seeds.paired_seed_test([0.9, 0.8, 0.85], [0.9, 0.8, 0.85])["p_value"] == 1.0
    assert seeds.wilcoxon_test([0.9] * 20, [0.9] * 20)["p_value"] == 1.0


def test_unpaired_permutation_p_values_by_hand():
    # a = (5), b = (1, 2, 3): T = 5 - 2 = 3; the 4 splits give T = 3, 1 - 10/3, 2 - 3, 3 - 8/3
    assert seeds.unpaired_permutation_test([5.0], [1.0, 2.0, 3.0])["p_value"] == 1 / 4
    assert seeds.unpaired_permutation_test([3.0, 4.0], [1.0, 2.0])["p_value"] == 2 / 6


@pytest.mark.parametrize("n, seed", [(4, 0), (6, 1), (8, 2)])
def test_unpaired_equals_scipys_exact_permutation_test_for_equal_group_sizes(n, seed):
    # equal sizes make the null distribution symmetric, where scipy's two-sided rule (twice the smaller
    # tail) and ours (|T*| >= |T|) coincide
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.5, 1, n), rng.normal(0, 1, n)
    reference = stats.permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), n_resamples=np.inf,
                                       permutation_type="independent", alternative="two-sided")
    assert seeds.unpaired_permutation_test(a, b)["p_value"] == pytest.approx(reference.pvalue, abs=1e-12)


def test_unpaired_monte_carlo_when_there_are_too_many_splits():
    rng = np.random.default_rng(6)
    a, b = rng.normal(0.6, 1, 8), rng.normal(0, 1, 8)  # 12,870 splits
    exact = seeds.unpaired_permutation_test(a, b)
    sampled = seeds.unpaired_permutation_test(a, b, max_exact=1000, n_resamples=20_000, seed=1)
    assert sampled["method"].startswith("Monte Carlo") and exact["method"].startswith("exact")
    # Monte Carlo standard error sqrt(p (1 - p) / R) < 0.0036; 5 of them
    assert sampled["p_value"] == pytest.approx(exact["p_value"], abs=0.018)
    assert seeds.unpaired_permutation_test(a, b, max_exact=1000, n_resamples=20_000, seed=1) == sampled


@pytest.mark.parametrize("call, message", [
    (lambda: seeds.seed_summary([]), "non-empty"),
    (lambda: seeds.seed_summary([0.9, np.nan]), "NaN"),
    (lambda: seeds.paired_seed_test([0.9, 0.8], [0.9]), "equal lengths"),
    (lambda: seeds.sign_flip_test(np.ones(25)), "wilcoxon_test"),
    (lambda: seeds.seed_summary([0.9, 0.8], level=1.5), "level"),
])
def test_bad_input_is_a_usage_error(call, message):
    with pytest.raises(UsageError, match=message):
        call()
