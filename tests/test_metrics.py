"""medscope.metrics: AUC and ACC identical to medmnist.Evaluator for all four task types; ECE, reliability
bins and Brier score against hand-computed examples and scikit-learn."""
import doctest
import math

import numpy as np
import pytest
import torch
from medmnist.evaluator import Evaluator, getACC, getAUC
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from medscope import metrics, tasks
from medscope.errors import UsageError
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL, ORDINAL


def _random_case(task, n=300, k=4, seed=0):
    rng = np.random.default_rng(seed)
    if task == MULTILABEL:
        y_true = (rng.random((n, k)) < 0.3).astype(np.uint8)
        y_score = rng.random((n, k))
    else:
        k = 2 if task == BINARY else k
        y_true = rng.integers(0, k, size=(n, 1)).astype(np.uint8)
        logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y_true[:, 0]]
        y_score = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y_true, y_score


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, MULTILABEL, ORDINAL])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_acc_equal_medmnist(task, seed):
    y_true, y_score = _random_case(task, seed=seed)
    assert metrics.auc_score(task, y_true, y_score) == getAUC(y_true, y_score, task)
    assert metrics.acc_score(task, y_true, y_score) == getACC(y_true, y_score, task)


def test_equal_to_evaluator_on_real_test_labels(medmnist_dir):
    evaluator = Evaluator("breastmnist", "test", root=str(medmnist_dir))
    rng = np.random.default_rng(5)
    score = rng.random(len(evaluator.labels))
    y_score = np.stack([1 - score, score], axis=1)
    auc, acc = evaluator.evaluate(y_score)
    ours = metrics.evaluate(BINARY, evaluator.labels, y_score, ["malignant", "benign"])
    assert (ours["auc"], ours["acc"]) == (auc, acc)


def test_per_class_metrics_and_confusion_matrix_by_hand():
    # true: 0 0 1 1 1 ; predicted: 0 1 1 1 0
    y_true = np.array([[0], [0], [1], [1], [1]])
    y_score = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    result = metrics.evaluate(BINARY, y_true, y_score, ["neg", "pos"])
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]
    pos = result["per_class"]["pos"]
    assert pos["precision"] == pytest.approx(2 / 3) and pos["recall"] == pytest.approx(2 / 3)
    assert pos["specificity"] == pytest.approx(1 / 2) and pos["f1"] == pytest.approx(2 / 3)
    assert result["acc"] == pytest.approx(3 / 5)


def test_multilabel_has_one_confusion_matrix_per_label():
    y_true = np.array([[1, 0], [0, 1], [1, 1]])
    y_score = np.array([[0.9, 0.2], [0.7, 0.8], [0.6, 0.1]])
    result = metrics.evaluate(MULTILABEL, y_true, y_score, ["a", "b"])
    assert result["confusion_matrix"]["a"] == [[0, 1], [0, 2]]
    assert result["confusion_matrix"]["b"] == [[1, 0], [1, 1]]
    assert result["per_class"]["b"]["recall"] == pytest.approx(0.5)


def test_auc_is_nan_not_an_exception_when_one_class_is_missing():
    y_true = np.zeros((4, 1))
    assert np.isnan(metrics.auc_score(BINARY, y_true, np.random.rand(4, 2)))


def test_macro_f1_leaves_out_classes_whose_f1_is_undefined():
    # class 2 never occurs and is never predicted: its F1 is 0/0, not 0
    y_true = np.array([[0], [1], [1]])
    y_score = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    result = metrics.evaluate(MULTICLASS, y_true, y_score, ["a", "b", "c"])
    assert math.isnan(result["per_class"]["c"]["f1"])
    assert result["macro_f1"] == pytest.approx(np.mean([result["per_class"][k]["f1"] for k in "ab"]))


@pytest.mark.parametrize("task", tasks.NAMES)
def test_scores_and_predictions_are_those_of_the_task(task):
    logits = torch.tensor([[2.0, -1.0], [-3.0, 4.0], [0.0, 0.0]])
    kind = tasks.task(task)
    assert torch.equal(metrics.scores_from_logits(task, logits), kind.scores(logits))
    probs = kind.scores(logits).numpy()
    np.testing.assert_array_equal(metrics.predictions(task, probs), kind.predictions(probs))


def test_module_doctests():
    result = doctest.testmod(metrics)
    assert result.attempted >= 8 and result.failed == 0


# ------------------------------------------------------------------ confidence of a prediction

def test_binary_confidence_is_that_of_the_predicted_class():
    probs = [[0.25, 0.75], [0.65, 0.35], [0.45, 0.55], [0.95, 0.05]]
    conf, correct = metrics.predicted_confidence(BINARY, probs, [[1], [1], [0], [0]])
    assert conf.tolist() == pytest.approx([0.75, 0.65, 0.55, 0.95])
    assert correct.tolist() == [True, False, False, True]


def test_multiclass_confidence_is_the_top1_probability():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]]
    conf, correct = metrics.predicted_confidence(MULTICLASS, probs, [[0], [0], [1]])
    assert conf.tolist() == pytest.approx([0.7, 0.6, 0.4])
    assert correct.tolist() == [True, False, True]


def test_multilabel_confidence_and_correctness_are_per_label():
    conf, correct = metrics.predicted_confidence(MULTILABEL, [[0.9, 0.3], [0.8, 0.1]], [[1, 1], [0, 0]])
    assert conf.tolist() == [pytest.approx([0.9, 0.7]), pytest.approx([0.8, 0.9])]
    assert correct.tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, MULTILABEL, ORDINAL])
def test_mean_correctness_is_the_medmnist_accuracy(task):
    y_true, y_score = _random_case(task, seed=7)
    _, correct = metrics.predicted_confidence(task, y_score, y_true)
    assert correct.mean() == pytest.approx(getACC(y_true, y_score, task), abs=1e-12)


# ------------------------------------------------------------------ ECE and reliability bins, hand-computed

def test_ece_of_two_filled_bins():
    # bin (0.9, 1.0]: confidence .95, accuracy .5 -> |gap| .45, weight 2/4
    # bin (0.6, 0.7]: confidence .65, accuracy 1  -> |gap| .35, weight 2/4
    ece = metrics.expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10)
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)


def test_ece_is_zero_when_accuracy_equals_confidence_in_every_bin():
    conf = [0.75] * 4 + [0.55] * 20
    correct = [1, 1, 1, 0] + [1] * 11 + [0] * 9
    assert metrics.expected_calibration_error(conf, correct, n_bins=15) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_nan_without_predictions():
    assert np.isnan(metrics.expected_calibration_error([], [], n_bins=15))


def test_reliability_bins_agree_with_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 500)
    correct = rng.random(500) < conf ** 2
    bins = metrics.reliability_bins(conf, correct, n_bins=15)
    accuracy, confidence = calibration_curve(correct, conf, n_bins=15, strategy="uniform")
    filled = bins["count"] > 0
    np.testing.assert_allclose(bins["accuracy"][filled], accuracy)
    np.testing.assert_allclose(bins["confidence"][filled], confidence)
    assert bins["count"].sum() == 500 and np.isnan(bins["accuracy"][~filled]).all()
    gaps = np.abs(accuracy - confidence) * bins["count"][filled] / 500
    assert metrics.expected_calibration_error(conf, correct, 15) == pytest.approx(gaps.sum())


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    bins = metrics.reliability_bins([0.5, 1.0, 0.0], [1, 1, 1], n_bins=2)
    assert bins["count"].tolist() == [2, 1]


def test_bins_must_be_a_whole_number_at_least_one():
    for bad in (0, 2.5):
        with pytest.raises(UsageError, match="number of bins"):
            metrics.bin_edges([], bad)


# ------------------------------------------------------------------ Brier score, hand-computed

def test_brier_binary_is_on_the_positive_class_probability():
    assert metrics.brier_score(BINARY, [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]) == pytest.approx(
        (0.2 ** 2 + 0.7 ** 2) / 2)


def test_brier_multiclass_sums_over_classes():
    probs = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]
    expected = ((0.5 ** 2 + 0.3 ** 2 + 0.2 ** 2) + (0.1 ** 2 + 0.9 ** 2 + 0.8 ** 2)) / 2
    assert metrics.brier_score(MULTICLASS, probs, [[0], [1]]) == pytest.approx(expected)
    assert metrics.brier_score(ORDINAL, probs, [[0], [1]]) == pytest.approx(expected)


def test_brier_multilabel_averages_samples_and_labels():
    probs = [[0.9, 0.2], [0.4, 0.6]]
    labels = [[1, 0], [1, 1]]
    assert metrics.brier_score(MULTILABEL, probs, labels) == pytest.approx(
        (0.1 ** 2 + 0.2 ** 2 + 0.6 ** 2 + 0.4 ** 2) / 4)


def test_brier_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=(300, 1))
    assert metrics.brier_score(MULTICLASS, probs, labels) == pytest.approx(
        brier_score_loss(labels[:, 0], probs, labels=range(4)))
    binary = probs[:, :2] / probs[:, :2].sum(axis=1, keepdims=True)
    y = labels % 2
    assert metrics.brier_score(BINARY, binary, y) == pytest.approx(brier_score_loss(y[:, 0], binary[:, 1]))
