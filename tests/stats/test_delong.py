"""medscope.stats.delong: DeLong's AUC covariance by midranks (Sun & Xu), its interval and the paired test."""
import doctest
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medscope.errors import UsageError
from medscope.stats import bootstrap, delong


def slow_delong(labels, scores):
    """DeLong et al. (1988) from the definition: the kernel psi for every (positive, negative) pair,
    O(m n) explicit comparisons; structural components V10 (per positive) and V01 (per negative);
    S = S10 / m + S01 / n with sample covariances (denominators m - 1 and n - 1)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    k = scores.shape[0]
    v10, v01 = [], []
    for r in range(k):
        x, y = scores[r, labels], scores[r, ~labels]
        psi = np.zeros((x.size, y.size))
        for i in range(x.size):
            for j in range(y.size):
                psi[i, j] = 1.0 if x[i] > y[j] else 0.5 if x[i] == y[j] else 0.0
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    aucs = v10.mean(axis=1)

    def cov(v):
        centred = v - v.mean(axis=1, keepdims=True)
        return centred @ centred.T / (v.shape[1] - 1)

    return aucs, cov(v10) / m + cov(v01) / n


def two_models(n=150, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    a = labels * 0.8 + rng.normal(size=n)
    b = 0.6 * a + labels * 0.3 + rng.normal(size=n)
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)
    return labels, a, b


def test_doctests():
    assert doctest.testmod(delong).failed == 0


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_fast_covariance_equals_the_definition(decimals):
    labels, a, b = two_models(seed=1, decimals=decimals)  # decimals=0: a handful of values, many ties
    aucs, cov = delong.delong_covariance(labels, np.stack([a, b]))
    ref_aucs, ref_cov = slow_delong(labels, np.stack([a, b]))
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-15)
    assert aucs[0] == pytest.approx(roc_auc_score(labels, a), abs=1e-12)


def test_test_statistic_and_p_value_equal_the_definition():
    labels, a, b = two_models(seed=2, decimals=1)
    result = delong.delong_test(labels, a, b)
    aucs, cov = slow_delong(labels, np.stack([a, b]))
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result["z"] == pytest.approx(z, rel=1e-10)
    assert result["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-10)
    assert result["difference"] == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    np.testing.assert_allclose(result["covariance"], cov, rtol=1e-10)


def test_hanley_mcneil_1982_rating_data():
    """Hanley & McNeil (1982), Radiology 143:29-36, Table 1: CT ratings 1-5 of 58 normal and 51 abnormal
    patients.  The paper gives the Wilcoxon area 0.893 (and the Hanley-McNeil approximate standard error
    0.032, a different estimator).  DeLong's standard error from the definition is 0.0307."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    labels = np.r_[np.zeros(normal.size), np.ones(abnormal.size)]
    ratings = np.r_[normal, abnormal].astype(float)
    result = delong.delong_interval(labels, ratings)
    assert round(result["estimate"], 3) == 0.893
    _, ref_cov = slow_delong(labels, ratings)
    assert result["se"] == pytest.approx(math.sqrt(ref_cov[0, 0]), rel=1e-12)
    assert round(result["se"], 4) == 0.0307


def test_third_party_worked_example():
    """The example in the README of the `pauc` package (PyPI, version 0.1.5), a separate implementation
    of the same interval: AUC 0.708, 95% CI (0.378, 1.000), the upper end clipped at 1."""
    labels = [0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.35, 0.24, 0.8, 0.2, 0.85, 0.13, 0.85, 0.74, 0.58, 0.71, 0.25]
    result = delong.delong_interval(labels, scores)
    assert (round(result["estimate"], 3), round(result["low"], 3), round(result["high"], 3)) == (0.708, 0.378, 1.0)


def test_perfect_classifier_has_zero_variance_and_a_point_interval():
    labels = np.r_[np.zeros(30), np.ones(20)]
    scores = np.r_[np.linspace(0, 0.4, 30), np.linspace(0.6, 1, 20)]
    for transform in ("none", "logit"):
        result = delong.delong_interval(labels, scores, transform=transform)
        assert (result["estimate"], result["low"], result["high"], result["se"]) == (1.0, 1.0, 1.0, 0.0)


def test_plain_interval_is_symmetric_and_clipped():
    labels, a, _ = two_models(n=40, seed=3)
    result = delong.delong_interval(labels, a, level=0.9)
    z = stats.norm.ppf(0.95)
    assert result["low"] == pytest.approx(max(0, result["estimate"] - z * result["se"]))
    assert result["high"] == pytest.approx(min(1, result["estimate"] + z * result["se"]))
    assert result["method"] == "DeLong normal interval, clipped to [0, 1]"


def test_logit_interval_is_the_back_transformed_delta_method_interval():
    labels, a, _ = two_models(n=60, seed=4)
    plain = delong.delong_interval(labels, a)
    result = delong.delong_interval(labels, a, transform="logit")
    theta, se = plain["estimate"], plain["se"]
    centre, half = math.log(theta / (1 - theta)), 1.959963984540054 * se / (theta * (1 - theta))
    assert result["low"] == pytest.approx(1 / (1 + math.exp(-(centre - half))), rel=1e-9)
    assert result["high"] == pytest.approx(1 / (1 + math.exp(-(centre + half))), rel=1e-9)
    assert 0 < result["low"] < theta < result["high"] < 1


def test_variance_agrees_with_the_stratified_bootstrap_variance():
    """DeLong's variance is the large-sample variance of the AUC; the stratified bootstrap estimates the
    same quantity.  With n = 2,000 and B = 2,000 the bootstrap variance has about 3% relative Monte Carlo
    error (sqrt(2 / B)); tolerance 12%."""
    labels, a, _ = two_models(n=2000, seed=5)
    scores = np.stack([1 - a, a], 1)  # any monotone scores: AUC is rank-based
    values, = bootstrap.bootstrap_distributions("binary-class", labels, [scores], n_resamples=2000, seed=6)
    _, cov = delong.delong_covariance(labels, a)
    assert values["auc"].var(ddof=1) == pytest.approx(cov[0, 0], rel=0.12)


def test_identical_models_give_z_0_and_p_1():
    labels, a, _ = two_models(seed=7)
    result = delong.delong_test(labels, a, a)
    assert (result["difference"], result["z"], result["p_value"]) == (0.0, 0.0, 1.0)


def test_single_positive_has_undefined_variance():
    aucs, cov = delong.delong_covariance([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert aucs[0] == 1.0 and np.isnan(cov[0, 0])
    assert math.isnan(delong.delong_interval([0, 0, 1, 0], [0.1, 0.5, 0.3, 0.4])["se"])


@pytest.mark.parametrize("call, message", [
    (lambda: delong.delong_interval([0, 0, 0], [0.1, 0.2, 0.3]), "one positive and one negative"),
    (lambda: delong.delong_interval([0, 2, 1], [0.1, 0.2, 0.3]), "0 .negative. or 1"),
    (lambda: delong.delong_interval([0, 1], [0.1, 0.2, 0.3]), "shape"),
    (lambda: delong.delong_interval([0, 1], [0.1, np.nan]), "NaN"),
    (lambda: delong.delong_interval([0, 1], [0.1, 0.2], level=0), "level"),
    (lambda: delong.delong_interval([0, 1], [0.1, 0.2], transform="probit"), "transform"),
    (lambda: delong.delong_test([0, 1], [0.1, 0.2], [0.1, 0.2, 0.3]), "length"),
])
def test_bad_input_is_a_usage_error(call, message):
    with pytest.raises(UsageError, match=message):
        call()
