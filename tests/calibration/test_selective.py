"""medscope.calibration.selective: risk-coverage curves, AURC, e-AURC and AUGRC."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import expit, softmax

from medscope.calibration import measures, selective
from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL

CONF = [0.9, 0.8, 0.7, 0.6]
ERRORS = [0, 1, 0, 1]


def test_risk_coverage_curve_with_a_tie_block():
    curve = selective.risk_coverage_curve([0.9, 0.8, 0.8, 0.3, 0.3], [0, 1, 0, 1, 1])
    # accept 0.9 -> 1 of 5, no error; accept the 0.8 block -> 3, 1 error; everything -> 5, 3 errors
    np.testing.assert_array_equal(curve["threshold"], [0.9, 0.8, 0.3])
    np.testing.assert_array_equal(curve["accepted"], [1, 3, 5])
    np.testing.assert_allclose(curve["coverage"], [0.2, 0.6, 1.0])
    np.testing.assert_allclose(curve["selective_risk"], [0.0, 1 / 3, 3 / 5])
    np.testing.assert_allclose(curve["generalized_risk"], [0.0, 1 / 5, 3 / 5])


def test_aurc_hand_example():
    # counts (accepted C, errors E): (1, 0), (2, 1), (3, 1), (4, 2); n = 4
    # segment from 0 to C=1: risk 0                                     -> 0
    # (1, 0) -> (2, 1): slope 1, int_1^2 (x - 1)/x dx = 1 - ln 2          -> (1 - ln 2) / 4
    # (2, 1) -> (3, 1): slope 0, int_2^3 1/x dx = ln(3/2)                 -> ln(3/2) / 4
    # (3, 1) -> (4, 2): slope 1, int_3^4 (x - 2)/x dx = 1 - 2 ln(4/3)     -> (1 - 2 ln(4/3)) / 4
    expected = (1 - math.log(2) + math.log(1.5) + 1 - 2 * math.log(4 / 3)) / 4
    assert selective.aurc(CONF, ERRORS) == pytest.approx(expected, rel=1e-14)
    # per-sample: risks of the top 1, 2, 3, 4 are 0, 1/2, 1/3, 2/4
    assert selective.aurc(CONF, ERRORS, "per-sample") == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4, rel=1e-14)


def test_augrc_hand_example():
    # generalized risk E/n at coverage 0, 1/4, 2/4, 3/4, 1: 0, 0, 1/4, 1/4, 2/4; trapezoids of width 1/4:
    # (0 + 0)/2 + (0 + 1/4)/2 + (1/4 + 1/4)/2 + (1/4 + 2/4)/2 = 3/4, times 1/4
    assert selective.augrc(CONF, ERRORS) == pytest.approx(3 / 16, rel=1e-14)


def test_interpolated_aurc_is_the_integral_of_the_interpolated_curve():
    rng = np.random.default_rng(0)
    conf = np.round(rng.random(40), 1)  # ties
    errors = (rng.random(40) < 0.3).astype(float)
    curve = selective.risk_coverage_curve(conf, errors)
    n = 40
    counts = np.concatenate([[0], curve["accepted"]])
    losses = np.concatenate([[0.0], curve["loss"]])

    def risk(c):
        accepted = c * n
        return np.interp(accepted, counts, losses) / accepted

    breakpoints = list(curve["coverage"][:-1])
    integral = quad(risk, 1e-12, 1.0, points=breakpoints, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    assert selective.aurc(conf, errors) == pytest.approx(integral, rel=1e-9)


def test_per_sample_aurc_without_ties_is_the_mean_top_k_risk():
    rng = np.random.default_rng(1)
    conf = rng.random(300)
    errors = (rng.random(300) < 0.2).astype(float)
    order = np.argsort(-conf)
    top_k_risk = np.cumsum(errors[order]) / np.arange(1, 301)
    assert selective.aurc(conf, errors, "per-sample") == pytest.approx(top_k_risk.mean(), rel=1e-12)


def test_every_area_is_the_mean_over_the_orderings_of_tied_predictions():
    conf = np.array([0.9, 0.7, 0.7, 0.7, 0.4, 0.4, 0.1])
    errors = np.array([0, 1, 0, 1, 0, 1, 1], dtype=float)
    blocks = [[0], [1, 2, 3], [4, 5], [6]]
    results = {"interpolated": [], "per-sample": [], "augrc": []}
    for orders in itertools.product(*[itertools.permutations(b) for b in blocks]):
        rank = np.empty(7)
        rank[np.concatenate(orders)] = -np.arange(7)  # distinct confidences in this order
        results["interpolated"].append(selective.aurc(rank, errors))
        results["per-sample"].append(selective.aurc(rank, errors, "per-sample"))
        results["augrc"].append(selective.augrc(rank, errors))
    assert selective.aurc(conf, errors) == pytest.approx(np.mean(results["interpolated"]), rel=1e-12)
    assert selective.aurc(conf, errors, "per-sample") == pytest.approx(np.mean(results["per-sample"]), rel=1e-12)
    assert selective.augrc(conf, errors) == pytest.approx(np.mean(results["augrc"]), rel=1e-12)


@pytest.mark.parametrize("n, n_errors", [(10, 3), (1000, 137), (57, 1), (20, 19)])
def test_perfect_random_and_worst_rankings(n, n_errors):
    rng = np.random.default_rng(n)
    errors = np.zeros(n)
    errors[rng.choice(n, n_errors, replace=False)] = 1
    r = n_errors / n
    perfect = -errors + rng.random(n) * 0.5  # every right prediction more confident than every error
    # perfect ranking: R(c) = 0 up to c = 1 - r, then (c - (1 - r)) / c: area r + (1 - r) ln(1 - r) (Geifman et al.);
    # G(c) = 0 up to 1 - r, then c - (1 - r): area r^2 / 2 (Traub et al.)
    assert selective.aurc(perfect, errors) == pytest.approx(r + (1 - r) * math.log(1 - r), rel=1e-12)
    assert selective.aurc_optimal(errors) == pytest.approx(r + (1 - r) * math.log(1 - r), rel=1e-12)
    assert selective.eaurc(perfect, errors) == pytest.approx(0.0, abs=1e-14)
    assert selective.augrc(perfect, errors) == pytest.approx(r * r / 2, rel=1e-12)
    assert selective.augrc_optimal(errors) == pytest.approx(r * r / 2, rel=1e-12)
    # one constant confidence: R = r everywhere, G(c) = r c
    assert selective.aurc(np.ones(n), errors) == pytest.approx(r, rel=1e-12)
    assert selective.aurc(np.ones(n), errors, "per-sample") == pytest.approx(r, rel=1e-12)
    assert selective.augrc(np.ones(n), errors) == pytest.approx(r / 2, rel=1e-12)
    # worst ranking (errors first): G(c) = c up to r, then r
    assert selective.augrc(errors + rng.random(n) * 0.5, errors) == pytest.approx(r - r * r / 2, rel=1e-12)


def test_excess_aurc_is_positive_for_imperfect_rankings():
    rng = np.random.default_rng(5)
    errors = (rng.random(500) < 0.25).astype(float)
    conf = rng.random(500) - 0.3 * errors  # informative but imperfect
    assert 0 < selective.eaurc(conf, errors) < selective.eaurc(rng.random(500), errors)
    assert selective.eaurc(conf, errors, "per-sample") > 0


def test_selective_summary_per_task():
    rng = np.random.default_rng(6)
    probs = softmax(rng.normal(size=(300, 4)) * 2, axis=1)
    labels = rng.integers(0, 4, size=(300, 1))
    summary = selective.selective_summary(TASK_MULTICLASS, probs, labels)
    errors = (probs.argmax(1) != labels[:, 0]).astype(float)
    assert summary["aurc"] == selective.aurc(probs.max(1), errors)
    assert summary["augrc"] == selective.augrc(probs.max(1), errors)
    assert summary["error_rate"] == pytest.approx(errors.mean()) and summary["n"] == 300
    entropy = -(probs * np.log(probs)).sum(1)
    assert selective.selective_summary(TASK_MULTICLASS, probs, labels, -entropy)["aurc"] == selective.aurc(
        -entropy, errors)
    binary = softmax(rng.normal(size=(300, 2)), axis=1)
    conf, ok = measures.predicted_confidence(TASK_BINARY, binary, labels % 2)
    assert selective.selective_summary(TASK_BINARY, binary, labels % 2)["eaurc"] == selective.eaurc(conf, ~ok)
    multi = expit(rng.normal(size=(300, 3)))
    multi_labels = rng.integers(0, 2, size=(300, 3))
    per_label = selective.selective_summary(TASK_MULTILABEL, multi, multi_labels)
    assert per_label["aurc"].shape == (3,) and per_label["mean_aurc"] == pytest.approx(per_label["aurc"].mean())


def test_bad_input_is_refused():
    with pytest.raises(UsageError, match="at least one"):
        selective.aurc([], [])
    with pytest.raises(ValueError, match="differ in length"):
        selective.augrc([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="non-negative"):
        selective.aurc([0.1], [-1])
    with pytest.raises(UsageError, match="estimator"):
        selective.aurc([0.1], [1], estimator="trapezoid")
