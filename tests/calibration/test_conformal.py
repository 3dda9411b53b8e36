"""medscope.calibration.conformal: split-conformal sets equal MAPIE's and cover as the theory says."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin

from medscope.calibration import conformal
from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL

mapie_classification = pytest.importorskip("mapie.classification")


class StoredProbabilities(ClassifierMixin, BaseEstimator):
    """A 'prefit' classifier whose only feature is a row index into fixed probabilities."""

    def __init__(self, probabilities=None):
        self.probabilities = probabilities

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return self.probabilities[np.asarray(X)[:, 0].astype(int)]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def mapie_sets(probs, labels, n_cal, alpha, score, include_last_label=True, seed=0, cal_rows=None):
    """MAPIE's SplitConformalClassifier on the same scores: calibrate on ``cal_rows`` (default the first n_cal)."""
    estimator = StoredProbabilities(probs)
    estimator.classes_ = np.arange(probs.shape[1])
    estimator.n_features_in_ = 1
    cal_rows = np.arange(n_cal) if cal_rows is None else cal_rows
    rows = np.arange(len(probs))[:, None]
    classifier = mapie_classification.SplitConformalClassifier(
        estimator, confidence_level=1 - alpha, conformity_score=score, prefit=True, random_state=seed)
    classifier.conformalize(rows[cal_rows], labels[cal_rows, 0])
    params = {"include_last_label": include_last_label} if score == "aps" else None
    _, sets = classifier.predict_set(rows[n_cal:], conformity_score_params=params)
    return sets[:, :, 0], float(classifier._mapie_classifier.conformity_score_function_.quantiles_[0])


def synthetic(seed: int, n: int, k: int, sharpness: float = 2.0, label_sharpness: float = 1.0):
    """Softmax scores and labels drawn from a (deliberately different) softmax: exchangeable samples."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    probs = softmax(sharpness * logits, axis=1)
    cumulative = np.cumsum(softmax(label_sharpness * sharpness * logits, axis=1), axis=1)
    labels = (rng.random((n, 1)) > cumulative).sum(axis=1, keepdims=True)
    return probs, np.minimum(labels, k - 1)


DATASETS = [(0, 2, 600, 0.1), (1, 3, 999, 0.1), (2, 4, 500, 0.05), (3, 7, 1500, 0.2), (4, 11, 2000, 0.1)]


@pytest.mark.parametrize("seed, k, n_cal, alpha", DATASETS)
def test_lac_sets_equal_mapie(seed, k, n_cal, alpha):
    probs, labels = synthetic(seed, n_cal + 700, k)
    task = TASK_BINARY if k == 2 else TASK_MULTICLASS
    expected, q = mapie_sets(probs, labels, n_cal, alpha, "lac")
    calibration = conformal.calibrate(task, probs[:n_cal], labels[:n_cal], alpha=alpha, score="lac")
    assert float(calibration.quantile) == q
    np.testing.assert_array_equal(conformal.prediction_sets(calibration, probs[n_cal:]), expected)


@pytest.mark.parametrize("seed, k, n_cal, alpha", [d for d in DATASETS if d[1] > 2])  # MAPIE: APS needs K > 2
@pytest.mark.parametrize("mode", ["include-last", "randomized"])
def test_aps_sets_equal_mapie(seed, k, n_cal, alpha, mode):
    probs, labels = synthetic(seed, n_cal + 700, k, label_sharpness=0.7)
    expected, q = mapie_sets(probs, labels, n_cal, alpha, "aps", True if mode == "include-last" else "randomized",
                             seed=seed + 100)
    calibration = conformal.calibrate(TASK_MULTICLASS, probs[:n_cal], labels[:n_cal], alpha=alpha, score="aps",
                                      aps_mode=mode, seed=seed + 100)
    assert float(calibration.quantile) == pytest.approx(q, rel=1e-12)
    # MAPIE draws its test-time uniforms from a fresh RandomState(seed); pass the same ones
    u = np.random.RandomState(seed + 100).uniform(size=700) if mode == "randomized" else None
    np.testing.assert_array_equal(conformal.prediction_sets(calibration, probs[n_cal:], u=u), expected)


@pytest.mark.filterwarnings("ignore:WARNING. your conformalization dataset has less labels:UserWarning")
def test_class_conditional_quantiles_are_mapies_fitted_on_each_class():
    probs, labels = synthetic(5, 3000, 4, label_sharpness=0.5)
    n_cal = 2000
    calibration = conformal.calibrate(TASK_MULTICLASS, probs[:n_cal], labels[:n_cal], alpha=0.1,
                                      class_conditional=True)
    sets = conformal.prediction_sets(calibration, probs[n_cal:])
    for c in range(4):
        rows = np.flatnonzero(labels[:n_cal, 0] == c)
        mapie_set, q = mapie_sets(probs, labels, n_cal, 0.1, "lac", cal_rows=rows)
        assert calibration.quantile[c] == q and calibration.n_calibration[c] == len(rows)
        np.testing.assert_array_equal(sets[:, c], mapie_set[:, c])


def test_conformal_quantile_is_the_kth_smallest_score():
    scores = np.random.default_rng(0).random(99)
    k = math.ceil(100 * 0.9)  # 90
    assert conformal.conformal_quantile(scores, 0.1) == np.sort(scores)[k - 1]
    assert conformal.conformal_quantile(scores, 0.1) == np.quantile(scores, k / 99, method="inverted_cdf")
    assert conformal.conformal_quantile(scores[:8], 0.1) == math.inf  # ceil(9 * 0.9) = 9 > 8
    assert conformal.conformal_quantile(scores[:9], 0.1) == scores[:9].max()  # ceil(10 * 0.9) = 9


def test_aps_treats_tied_classes_as_one_block():
    p = [[0.4, 0.3, 0.3]]
    at_least, above = conformal.class_masses(p)
    np.testing.assert_allclose(at_least, [[0.4, 1.0, 1.0]])
    np.testing.assert_allclose(above, [[0.0, 0.4, 0.4]])
    # the first class alone (0.4) is below q = 0.65, so the next block joins, both tied classes at once
    assert conformal.sets_from_quantile(p, 0.65, "aps").tolist() == [[True, True, True]]
    assert conformal.sets_from_quantile(p, 0.35, "aps").tolist() == [[True, False, False]]
    # deterministic APS: S_k <= q
    assert conformal.sets_from_quantile(p, 0.65, "aps", "deterministic").tolist() == [[True, False, False]]
    # randomized: S_k - u p_k <= q with u = 0.5: 0.2, 0.85, 0.85
    assert conformal.sets_from_quantile(p, 0.9, "aps", "randomized", u=[0.5]).tolist() == [[True, True, True]]
    assert conformal.sets_from_quantile(p, 0.1, "aps", "randomized", u=[0.5]).tolist() == [[False, False, False]]


def split_coverages(task, probs, labels, n_cal, n_splits, seed, **options):
    """Test coverage (overall, and per class for class-conditional sets) over random calibration/test splits."""
    rng = np.random.default_rng(seed)
    overall, per_class = [], []
    for split in range(n_splits):
        order = rng.permutation(len(probs))
        cal, test = order[:n_cal], order[n_cal:]
        calibration = conformal.calibrate(task, probs[cal], labels[cal], seed=split, **options)
        result = conformal.evaluate_sets(task, conformal.prediction_sets(calibration, probs[test]), labels[test])
        overall.append(result["coverage"])
        per_class.append(result["coverage_per_class"])
    return np.array(overall), np.array(per_class)


@pytest.mark.parametrize("score, mode", [("lac", "include-last"), ("aps", "randomized"), ("aps", "deterministic")])
def test_coverage_lies_within_the_finite_sample_bounds(score, mode):
    # with continuous scores, E[coverage] = k / (n + 1) exactly, k = ceil((n + 1)(1 - alpha)),
    # which lies in [1 - alpha, 1 - alpha + 1 / (n + 1)); checked to within Monte-Carlo error
    alpha, n_cal = 0.1, 199
    probs, labels = synthetic(21, 1000, 5, label_sharpness=0.6)
    coverages, _ = split_coverages(TASK_MULTICLASS, probs, labels, n_cal, 400, seed=1, alpha=alpha, score=score,
                                   aps_mode=mode)
    mean, se = coverages.mean(), coverages.std(ddof=1) / np.sqrt(len(coverages))
    k = math.ceil((n_cal + 1) * (1 - alpha))  # 180: k / (n + 1) = 0.9 exactly
    assert 1 - alpha <= k / (n_cal + 1) < 1 - alpha + 1 / (n_cal + 1)
    assert abs(mean - k / (n_cal + 1)) < 3.5 * se
    assert 1 - alpha - 3.5 * se <= mean <= 1 - alpha + 1 / (n_cal + 1) + 3.5 * se


def test_include_last_aps_over_covers_and_never_gives_empty_sets():
    probs, labels = synthetic(22, 1000, 5, label_sharpness=0.6)
    coverages, _ = split_coverages(TASK_MULTICLASS, probs, labels, 200, 100, seed=2, alpha=0.1, score="aps")
    assert coverages.mean() >= 0.9
    calibration = conformal.calibrate(TASK_MULTICLASS, probs[:200], labels[:200], alpha=0.1, score="aps")
    assert conformal.evaluate_sets(TASK_MULTICLASS, conformal.prediction_sets(calibration, probs), labels)[
        "empty_fraction"] == 0.0


def test_class_conditional_sets_cover_every_class():
    # a rare class (10 %) that the scores barely separate: marginal sets cover it far below 1 - alpha,
    # class-conditional sets cover every class at 1 - alpha (to within Monte-Carlo error)
    rng = np.random.default_rng(8)
    labels = rng.choice(3, size=(2000, 1), p=[0.45, 0.45, 0.1])
    probs = softmax(rng.normal(size=(2000, 3)) + np.eye(3)[labels[:, 0]] * [2.0, 2.0, 0.5], axis=1)
    _, marginal = split_coverages(TASK_MULTICLASS, probs, labels, 1000, 100, seed=3, alpha=0.1)
    assert marginal.mean(axis=0)[2] < 0.7
    _, per_class = split_coverages(TASK_MULTICLASS, probs, labels, 1000, 100, seed=3, alpha=0.1,
                                   class_conditional=True)
    mean, se = per_class.mean(axis=0), per_class.std(axis=0, ddof=1) / np.sqrt(len(per_class))
    assert np.all(mean >= 0.9 - 3.5 * se)


def test_a_class_with_too_few_calibration_samples_is_always_in_the_set():
    probs, labels = synthetic(9, 300, 3)
    labels[:, 0] = np.where(labels[:, 0] == 2, 1, labels[:, 0])
    labels[:5, 0] = 2  # 5 samples: ceil(6 * 0.9) = 6 > 5
    calibration = conformal.calibrate(TASK_MULTICLASS, probs, labels, alpha=0.1, class_conditional=True)
    assert calibration.quantile[2] == math.inf and calibration.n_calibration[2] == 5
    assert conformal.prediction_sets(calibration, probs)[:, 2].all()


def test_multilabel_is_one_binary_problem_per_label():
    rng = np.random.default_rng(4)
    probs = expit(rng.normal(size=(800, 3)) * 2)
    labels = (rng.random((800, 3)) < probs ** 1.3).astype(np.int64)
    for options in ({"score": "lac"}, {"score": "aps", "aps_mode": "randomized"},
                    {"score": "lac", "class_conditional": True}):
        calibration = conformal.calibrate(TASK_MULTILABEL, probs[:500], labels[:500], alpha=0.1, **options)
        sets = conformal.prediction_sets(calibration, probs[500:])
        assert sets.shape == (300, 3, 2)
        for j in range(3):
            pair = np.stack([1 - probs[:, j], probs[:, j]], axis=1)
            single = conformal.calibrate(TASK_BINARY, pair[:500], labels[:500, [j]], alpha=0.1, **options)
            np.testing.assert_array_equal(calibration.quantile[j], single.quantile)
            np.testing.assert_array_equal(sets[:, j], conformal.prediction_sets(single, pair[500:]))
        result = conformal.evaluate_sets(TASK_MULTILABEL, sets, labels[500:])
        assert result["coverage"].shape == (3,) and result["coverage_per_class"].shape == (3, 2)
        assert result["mean_coverage"] == pytest.approx(result["coverage"].mean())
        covered = np.take_along_axis(sets, labels[500:, :, None], axis=2)[:, :, 0]
        np.testing.assert_allclose(result["coverage"], covered.mean(axis=0))
        assert result["all_labels_covered"] == pytest.approx(covered.all(axis=1).mean())


def test_evaluate_sets_hand_example():
    sets = np.array([[True, False, False], [True, True, False], [False, False, False], [False, True, True]])
    labels = np.array([[0], [2], [1], [2]])
    r = conformal.evaluate_sets(TASK_ORDINAL, sets, labels)
    # covered: yes, no, no, yes
    assert r["coverage"] == 0.5
    np.testing.assert_array_equal(r["coverage_per_class"], [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(r["class_count"], [1, 1, 2])
    assert r["mean_set_size"] == (1 + 2 + 0 + 2) / 4
    assert (r["singleton_fraction"], r["empty_fraction"]) == (0.25, 0.25)
    np.testing.assert_array_equal(r["set_size_counts"], [1, 1, 2, 0])
    assert "abstain_fraction" not in r
    binary = conformal.evaluate_sets(TASK_BINARY, [[True, False], [True, True], [False, False]], [[0], [1], [0]])
    assert binary["abstain_fraction"] == pytest.approx(2 / 3)


def test_bad_input_is_refused():
    probs, labels = synthetic(0, 50, 3)
    with pytest.raises(UsageError, match="alpha"):
        conformal.calibrate(TASK_MULTICLASS, probs, labels, alpha=1.0)
    with pytest.raises(UsageError, match="conformity score"):
        conformal.calibrate(TASK_MULTICLASS, probs, labels, score="raps")
    with pytest.raises(UsageError, match="APS mode"):
        conformal.calibrate(TASK_MULTICLASS, probs, labels, score="aps", aps_mode="naive")
    with pytest.raises(ValueError, match="logits"):
        conformal.calibrate(TASK_MULTICLASS, probs * 3, labels)
    calibration = conformal.calibrate(TASK_MULTICLASS, probs, labels, class_conditional=True)
    with pytest.raises(ValueError, match="calibrated on 3 columns"):
        conformal.prediction_sets(calibration, np.full((2, 4), 0.25))
