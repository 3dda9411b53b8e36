"""medscope.tasks: scores, predictions, correctness and label text for the four MedMNIST task types."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medscope import metrics, tasks
from medscope.tasks import task


@pytest.mark.parametrize("name", tasks.NAMES)
def test_scores_are_softmax_or_sigmoid_in_torch_and_numpy(name):
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    expected = torch.sigmoid(logits) if name == tasks.MULTILABEL else torch.softmax(logits, dim=1)
    assert torch.allclose(task(name).scores(logits), expected)
    np.testing.assert_allclose(task(name).scores(logits.numpy()), expected.numpy(), rtol=1e-6)


def test_predictions_follow_medmnist():
    probs = np.array([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])
    assert task(tasks.BINARY).predictions(probs).tolist() == [1, 0, 0]  # last column > 0.5
    probs3 = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert task(tasks.MULTICLASS).predictions(probs3).tolist() == [1, 0]
    assert task(tasks.ORDINAL).predictions(probs3).tolist() == [1, 0]
    assert task(tasks.MULTILABEL).predictions(np.array([[0.51, 0.5]])).tolist() == [[1, 0]]


def test_accuracy_from_correct_equals_metrics_acc_for_single_label_tasks():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, size=(50, 1))
    t = task(tasks.MULTICLASS)
    assert t.correct(labels, t.predictions(probs)).mean() == pytest.approx(
        metrics.acc_score(tasks.MULTICLASS, labels, probs))


def test_a_multilabel_sample_is_correct_only_when_every_label_is():
    t = task(tasks.MULTILABEL)
    assert t.correct(np.array([[1, 0], [1, 1]]), np.array([[1, 0], [1, 0]])).tolist() == [True, False]


def test_predicted_probability_is_the_side_of_the_prediction():
    assert task(tasks.BINARY).predicted_probability(np.array([[0.3, 0.7], [0.8, 0.2]])).tolist() == \
        pytest.approx([0.7, 0.8])
    assert task(tasks.MULTILABEL).predicted_probability(np.array([[0.9, 0.2]])).tolist() == \
        [pytest.approx([0.9, 0.8])]
    assert task(tasks.MULTICLASS).predicted_probability(np.array([[0.1, 0.6, 0.3]])).tolist() == [0.6]


def test_label_text_has_one_separator():
    names = ["atelectasis", "cardiomegaly", "effusion"]
    assert task(tasks.MULTILABEL).label_text(np.array([1, 0, 1]), names) == "atelectasis;effusion"
    assert task(tasks.MULTILABEL).label_text(np.array([0, 0, 0]), names) == "none"
    assert task(tasks.MULTILABEL).label_text(np.array([1, 0, 1])) == "1;0;1"
    assert task(tasks.MULTICLASS).label_text(np.array([2]), names) == "effusion"
    assert task(tasks.ORDINAL).label_text(np.array([2])) == "2"


def test_unknown_task_names_are_refused_and_tasks_pass_through():
    with pytest.raises(ValueError, match="unknown task type"):
        task("regression")
    t = task(tasks.BINARY)
    assert task(t) is t and t.is_binary and t.is_single_label and not t.is_multilabel
