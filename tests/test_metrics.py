"""medscope.metrics: AUC and ACC identical to medmnist.Evaluator for all four task types."""
import numpy as np
import pytest
from medmnist.evaluator import Evaluator, getACC, getAUC

from medscope import data, metrics


def _random_case(task, n=300, k=4, seed=0):
    rng = np.random.default_rng(seed)
    if task == data.TASK_MULTILABEL:
        y_true = (rng.random((n, k)) < 0.3).astype(np.uint8)
        y_score = rng.random((n, k))
    else:
        k = 2 if task == data.TASK_BINARY else k
        y_true = rng.integers(0, k, size=(n, 1)).astype(np.uint8)
        logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y_true[:, 0]]
        y_score = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y_true, y_score


@pytest.mark.parametrize("task", [data.TASK_BINARY, data.TASK_MULTICLASS, data.TASK_MULTILABEL, data.TASK_ORDINAL])
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
    ours = metrics.evaluate(data.TASK_BINARY, evaluator.labels, y_score, ["malignant", "benign"])
    assert (ours["auc"], ours["acc"]) == (auc, acc)


def test_per_class_metrics_and_confusion_matrix_by_hand():
    # true: 0 0 1 1 1 ; predicted: 0 1 1 1 0
    y_true = np.array([[0], [0], [1], [1], [1]])
    y_score = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    result = metrics.evaluate(data.TASK_BINARY, y_true, y_score, ["neg", "pos"])
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]
    pos = result["per_class"]["pos"]
    assert pos["precision"] == pytest.approx(2 / 3) and pos["recall"] == pytest.approx(2 / 3)
    assert pos["specificity"] == pytest.approx(1 / 2) and pos["f1"] == pytest.approx(2 / 3)
    assert result["acc"] == pytest.approx(3 / 5)


def test_multilabel_has_one_confusion_matrix_per_label():
    y_true = np.array([[1, 0], [0, 1], [1, 1]])
    y_score = np.array([[0.9, 0.2], [0.7, 0.8], [0.6, 0.1]])
    result = metrics.evaluate(data.TASK_MULTILABEL, y_true, y_score, ["a", "b"])
    assert result["confusion_matrix"]["a"] == [[0, 1], [0, 2]]
    assert result["confusion_matrix"]["b"] == [[1, 0], [1, 1]]
    assert result["per_class"]["b"]["recall"] == pytest.approx(0.5)


def test_auc_is_nan_not_an_exception_when_one_class_is_missing():
    y_true = np.zeros((4, 1))
    assert np.isnan(metrics.auc_score(data.TASK_BINARY, y_true, np.random.rand(4, 2)))
