"""medscope.calibration.measures: ECE, Brier score and NLL against hand-computed values and references."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from medscope.analysis import inference
from medscope.calibration import measures
from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL


def random_split(task: str, seed: int, n: int = 500):
    rng = np.random.default_rng(seed)
    if task == TASK_MULTILABEL:
        probs = expit(rng.normal(size=(n, 4)) * 2)
        return probs, (rng.random((n, 4)) < probs ** 1.5).astype(np.int64)
    k = {TASK_BINARY: 2, TASK_MULTICLASS: 6, TASK_ORDINAL: 5}[task]
    probs = softmax(rng.normal(size=(n, k)) * 2, axis=1)
    return probs, rng.integers(0, k, size=(n, 1))


@pytest.mark.parametrize("task", [TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL])
def test_equal_width_ece_and_brier_are_those_of_medscope_inference(task):
    probs, labels = random_split(task, seed=7)
    names = [f"c{j}" for j in range(probs.shape[1])]
    reported = inference.calibration(task, probs, labels, names, n_bins=15)
    assert measures.ece(task, probs, labels, n_bins=15) == reported["ece"]
    assert measures.brier_score(task, probs, labels) == reported["brier"]
    conf, ok = measures.predicted_confidence(task, probs, labels)
    conf_ref, ok_ref = inference.predicted_confidence(task, probs, labels)
    np.testing.assert_array_equal(conf, conf_ref)
    np.testing.assert_array_equal(ok, ok_ref)
    bins = measures.reliability_bins(conf.reshape(-1), ok.reshape(-1), 15)
    bins_ref = inference.reliability_bins(conf.reshape(-1), ok.reshape(-1), 15)
    for key in bins_ref:
        np.testing.assert_array_equal(bins[key], bins_ref[key])


def test_ece_hand_example():
    # bins of width 0.1: {0.65, 0.65} in (0.6, 0.7] all right -> gap 0.35; {0.95, 0.95} half right -> gap 0.45
    assert measures.expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10) == pytest.approx(
        0.5 * 0.35 + 0.5 * 0.45)


def test_binary_ece_uses_the_confidence_of_the_predicted_class():
    # p1 = 0.8 -> predicts 1 at confidence 0.8; p1 = 0.3 -> predicts 0 at confidence 0.7
    probs, labels = [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]
    # 10 bins: 0.8 in (0.7, 0.8] right (gap 0.2); 0.7 in (0.6, 0.7] wrong (gap 0.7)
    assert measures.ece(TASK_BINARY, probs, labels, n_bins=10) == pytest.approx(0.5 * 0.2 + 0.5 * 0.7)


def test_adaptive_ece_hand_example():
    conf = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    correct = [0, 0, 1, 0, 1, 1, 1, 0]
    # two equal-mass bins split at the median 0.5: {0.1..0.4} acc 1/4, mean conf 0.25 -> gap 0;
    # {0.6..0.9} acc 3/4, mean conf 0.75 -> gap 0
    assert measures.expected_calibration_error(conf, correct, 2, "quantile") == pytest.approx(0.0, abs=1e-15)
    correct = [1, 1, 1, 1, 0, 0, 0, 0]
    # gaps |1 - 0.25| = 0.75 and |0 - 0.75| = 0.75
    assert measures.expected_calibration_error(conf, correct, 2, "quantile") == pytest.approx(0.75)
    # equal-width bins (15) put every confidence in its own bin
    assert measures.expected_calibration_error(conf, correct, 15) == pytest.approx(np.mean(
        np.abs(np.array(correct) - np.array(conf))))


def test_adaptive_bins_are_sklearn_quantile_bins():
    rng = np.random.default_rng(3)
    conf = rng.beta(5, 2, size=997)
    correct = rng.random(997) < conf ** 1.3
    bins = measures.reliability_bins(conf, correct, 10, "quantile")
    accuracy, confidence = calibration_curve(correct, conf, n_bins=10, strategy="quantile")
    filled = bins["count"] > 0
    np.testing.assert_allclose(bins["accuracy"][filled], accuracy)
    np.testing.assert_allclose(bins["confidence"][filled], confidence)
    assert abs(bins["count"] - 99.7).max() <= 1  # equal mass


def test_adaptive_bins_keep_ties_together():
    conf = [0.5] * 6 + [0.9, 0.9]
    bins = measures.reliability_bins(conf, [1, 0, 1, 0, 1, 0, 1, 1], 4, "quantile")
    assert sorted(bins["count"].tolist()) == [0, 0, 2, 6]


def test_multilabel_ece_is_the_mean_of_per_label_binary_ece():
    probs, labels = random_split(TASK_MULTILABEL, seed=11)
    per_label = [measures.ece(TASK_BINARY, np.stack([1 - probs[:, j], probs[:, j]], 1), labels[:, [j]], 15, "quantile")
                 for j in range(4)]
    assert measures.ece(TASK_MULTILABEL, probs, labels, 15, "quantile") == pytest.approx(np.mean(per_label))


def test_brier_hand_examples():
    # binary: (0.8 - 1)^2 and (0.3 - 1)^2
    assert measures.brier_score(TASK_BINARY, [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]) == pytest.approx((0.04 + 0.49) / 2)
    # multi-class: (0.5 - 1)^2 + 0.3^2 + 0.2^2 = 0.25 + 0.09 + 0.04
    assert measures.brier_score(TASK_MULTICLASS, [[0.5, 0.3, 0.2]], [[0]]) == pytest.approx(0.38)
    # multi-label: mean over the 4 cells of (0.9-1)^2, (0.2-0)^2, (0.6-0)^2, (0.5-1)^2
    assert measures.brier_score(TASK_MULTILABEL, [[0.9, 0.2], [0.6, 0.5]], [[1, 0], [0, 1]]) == pytest.approx(
        (0.01 + 0.04 + 0.36 + 0.25) / 4)


@pytest.mark.parametrize("task", [TASK_BINARY, TASK_MULTICLASS, TASK_ORDINAL])
def test_brier_and_nll_agree_with_sklearn(task):
    probs, labels = random_split(task, seed=5)
    k = probs.shape[1]
    if task == TASK_BINARY:
        assert measures.brier_score(task, probs, labels) == pytest.approx(brier_score_loss(labels[:, 0], probs[:, 1]))
    else:
        assert measures.brier_score(task, probs, labels) == pytest.approx(
            brier_score_loss(labels[:, 0], probs, labels=range(k)))
    assert measures.negative_log_likelihood(task, probs, labels) == pytest.approx(
        log_loss(labels[:, 0], probs, labels=range(k)), rel=1e-12)


def test_nll_hand_examples():
    # multi-class: -log 0.25
    assert measures.negative_log_likelihood(TASK_MULTICLASS, [[0.5, 0.25, 0.25]], [[1]]) == pytest.approx(np.log(4))
    # binary on the last column: -(log 0.8 + log(1 - 0.3)) / 2
    assert measures.negative_log_likelihood(TASK_BINARY, [[0.2, 0.8], [0.7, 0.3]], [[1], [0]]) == pytest.approx(
        -(np.log(0.8) + np.log(0.7)) / 2)
    # multi-label: mean over cells of -log 0.9, -log 0.8, -log 0.4, -log 0.5
    assert measures.negative_log_likelihood(TASK_MULTILABEL, [[0.9, 0.2], [0.6, 0.5]], [[1, 0], [0, 1]]) == \
        pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.5])))
    # a certain mistake costs -log(eps), not infinity
    assert measures.negative_log_likelihood(TASK_MULTICLASS, [[1.0, 0.0]], [[1]]) == pytest.approx(
        -np.log(np.finfo(float).eps))


@pytest.mark.parametrize("task", [TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL])
def test_nll_from_logits_equals_nll_of_the_probabilities(task):
    rng = np.random.default_rng(2)
    k = 2 if task == TASK_BINARY else 4
    logits = rng.normal(size=(300, k)) * 3
    labels = rng.integers(0, 2, size=(300, k)) if task == TASK_MULTILABEL else rng.integers(0, k, size=(300, 1))
    probs = expit(logits / 1.7) if task == TASK_MULTILABEL else softmax(logits / 1.7, axis=1)
    assert measures.nll_from_logits(task, logits, labels, 1.7) == pytest.approx(
        measures.negative_log_likelihood(task, probs, labels), rel=1e-9)


def test_calibration_summary_keys_and_values():
    probs, labels = random_split(TASK_MULTICLASS, seed=9)
    summary = measures.calibration_summary(TASK_MULTICLASS, probs, labels, n_bins=10)
    assert summary["ece"] == measures.ece(TASK_MULTICLASS, probs, labels, 10)
    assert summary["adaptive_ece"] == measures.ece(TASK_MULTICLASS, probs, labels, 10, "quantile")
    assert summary["nll"] == measures.negative_log_likelihood(TASK_MULTICLASS, probs, labels)
    assert summary["n"] == 500 and summary["n_bins"] == 10


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="logits passed"):
        measures.ece(TASK_MULTICLASS, [[2.0, -1.0]], [[0]])
    with pytest.raises(ValueError, match="2 columns"):
        measures.brier_score(TASK_BINARY, [[0.2, 0.3, 0.5]], [[0]])
    with pytest.raises(ValueError, match="labels must lie"):
        measures.negative_log_likelihood(TASK_MULTICLASS, [[0.5, 0.5]], [[2]])
    with pytest.raises(UsageError, match="binning strategy"):
        measures.expected_calibration_error([0.5], [1], 10, "log")
    with pytest.raises(UsageError, match="bins"):
        measures.expected_calibration_error([0.5], [1], 0)
    assert np.isnan(measures.expected_calibration_error([], [], 10, "quantile"))
