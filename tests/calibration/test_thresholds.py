"""medscope.calibration.thresholds: Youden, target sensitivity/specificity, and test-set counts."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_curve

from medscope import metrics
from medscope.calibration import thresholds
from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL


def scores_with_ties(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    scores = np.round(np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(scale=0.25, size=n), 0, 1), 2)  # many ties
    return scores, y


@pytest.mark.parametrize("seed", range(5))
def test_youden_threshold_is_sklearns_argmax_of_tpr_minus_fpr(seed):
    scores, y = scores_with_ties(seed)
    for drop_intermediate in (True, False):
        fpr, tpr, cut = roc_curve(y, scores, drop_intermediate=drop_intermediate)
        best = int(np.argmax(tpr - fpr))
        point = thresholds.youden_threshold(scores, y)
        assert point["threshold"] == cut[best]
        assert point["youden_j"] == pytest.approx(tpr[best] - fpr[best])


def test_operating_curve_is_the_full_roc_curve():
    scores, y = scores_with_ties(11)
    fpr, tpr, cut = roc_curve(y, scores, drop_intermediate=False)
    curve = thresholds.operating_curve(scores, y)
    np.testing.assert_array_equal(curve["threshold"], cut)
    np.testing.assert_allclose(curve["sensitivity"], tpr)
    np.testing.assert_allclose(curve["specificity"], 1 - fpr)


def brute_force(scores, y, rule):
    """Every candidate threshold tried directly with score >= t."""
    candidates = np.concatenate([[np.inf], np.unique(scores)])
    sens = np.array([np.mean(scores[y == 1] >= t) for t in candidates])
    spec = np.array([np.mean(scores[y == 0] < t) for t in candidates])
    return rule(candidates, sens, spec)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_target_thresholds_against_brute_force(seed, target):
    scores, y = scores_with_ties(seed, 150)
    highest_sensitive = brute_force(scores, y, lambda t, sens, spec: t[sens >= target].max())
    lowest_specific = brute_force(scores, y, lambda t, sens, spec: t[spec >= target].min())
    assert thresholds.threshold_for_sensitivity(scores, y, target)["threshold"] == highest_sensitive
    assert thresholds.threshold_for_specificity(scores, y, target)["threshold"] == lowest_specific


def test_target_thresholds_hand_example():
    scores = [0.9, 0.8, 0.7, 0.7, 0.4, 0.3, 0.2, 0.1]
    y = [1, 1, 0, 1, 1, 0, 0, 0]
    # positives 0.9, 0.8, 0.7, 0.4: sensitivity 3/4 at t = 0.7, 1 at t = 0.4 -> target 0.9 needs t = 0.4
    point = thresholds.threshold_for_sensitivity(scores, y, 0.9)
    assert (point["threshold"], point["sensitivity"], point["specificity"]) == (0.4, 1.0, 0.75)
    # negatives 0.7, 0.3, 0.2, 0.1: specificity (share below t) 3/4 at t = 0.7 and t = 0.4, 1/2 at 0.3
    point = thresholds.threshold_for_specificity(scores, y, 0.75)
    assert (point["threshold"], point["sensitivity"], point["specificity"]) == (0.4, 1.0, 0.75)
    # Youden: J = 1 + 0.75 - 1 at t = 0.4 is the best
    assert thresholds.youden_threshold(scores, y)["threshold"] == 0.4


def test_evaluate_threshold_counts_ties_as_positive():
    scores = [0.9, 0.5, 0.5, 0.2, 0.1]
    y = [1, 1, 0, 1, 0]
    r = thresholds.evaluate_threshold(scores, y, 0.5)
    # positive: 0.9 (tp), 0.5 (tp), 0.5 (fp); negative: 0.2 (fn), 0.1 (tn)
    assert (r["tp"], r["fp"], r["fn"], r["tn"], r["n"]) == (2, 1, 1, 1, 5)
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(1 / 2)
    assert r["ppv"] == pytest.approx(2 / 3) and r["npv"] == pytest.approx(1 / 2)
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2) and r["accuracy"] == pytest.approx(3 / 5)


def test_evaluate_threshold_agrees_with_sklearn_confusion_matrix():
    scores, y = scores_with_ties(3)
    r = thresholds.evaluate_threshold(scores, y, 0.55)
    tn, fp, fn, tp = confusion_matrix(y, scores >= 0.55).ravel()
    assert (r["tn"], r["fp"], r["fn"], r["tp"]) == (tn, fp, fn, tp)


def test_medmnist_threshold_reproduces_the_default_prediction():
    probs = np.array([[0.5, 0.5], [0.4, 0.6], [0.7, 0.3], [0.49, 0.51]])
    labels = np.array([[1], [1], [0], [0]])
    (r,) = thresholds.evaluate_thresholds(TASK_BINARY, probs, labels, [thresholds.MEDMNIST_THRESHOLD])
    assert r["accuracy"] == metrics.acc_score(TASK_BINARY, labels, probs)  # 0.5 itself is negative, as > 0.5
    assert (r["tp"], r["fn"]) == (1, 1)


def test_one_class_validation_labels_give_nan():
    point = thresholds.youden_threshold([0.2, 0.8], [1, 1])
    assert np.isnan(point["threshold"]) and np.isnan(point["youden_j"])
    assert np.isnan(thresholds.threshold_for_sensitivity([0.2, 0.8], [0, 0])["threshold"])
    with pytest.raises(UsageError, match="NaN threshold"):
        thresholds.evaluate_threshold([0.2], [1], float("nan"))


def test_multilabel_gets_one_set_of_thresholds_per_label():
    rng = np.random.default_rng(0)
    probs = rng.random((200, 3))
    labels = (rng.random((200, 3)) < probs).astype(int)
    chosen = thresholds.choose_thresholds(TASK_MULTILABEL, probs, labels, target_sensitivity=0.8)
    assert len(chosen) == 3
    for j, point in enumerate(chosen):
        assert point["youden"] == thresholds.youden_threshold(probs[:, j], labels[:, j])
        assert point["sensitivity"]["threshold"] == thresholds.threshold_for_sensitivity(
            probs[:, j], labels[:, j], 0.8)["threshold"]
    results = thresholds.evaluate_thresholds(TASK_MULTILABEL, probs, labels, [p["youden"]["threshold"] for p in chosen])
    assert [r["sensitivity"] for r in results] == [p["youden"]["sensitivity"] for p in chosen]


@pytest.mark.parametrize("task", [TASK_MULTICLASS, TASK_ORDINAL])
def test_multiclass_tasks_are_refused(task):
    with pytest.raises(UsageError, match="binary-class or multi-label"):
        thresholds.choose_thresholds(task, [[0.2, 0.3, 0.5]], [[1]])


def test_bad_targets_are_refused():
    with pytest.raises(UsageError, match="target sensitivity"):
        thresholds.threshold_for_sensitivity([0.1, 0.9], [0, 1], 1.5)
    with pytest.raises(UsageError, match="target specificity"):
        thresholds.threshold_for_specificity([0.1, 0.9], [0, 1], 0.0)
