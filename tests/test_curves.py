"""medscope.analysis.curves: ROC and precision–recall curves per class, and the model's operating point."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medscope import metrics
from medscope.analysis.curves import operating_point_rows, roc_pr_curves
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL


def random_probabilities(n: int, k: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, k))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_a_binary_task_has_one_curve_for_the_positive_class_with_the_evaluators_auc():
    probabilities = random_probabilities(200, 2)
    labels = (np.random.default_rng(1).random(200) < probabilities[:, 1]).astype(int)[:, None]
    (curve,) = roc_pr_curves(BINARY, probabilities, labels, ["benign", "malignant"])
    assert curve["label"] == "malignant" and curve["positives"] == labels.sum()
    assert curve["auc"] == pytest.approx(metrics.auc_score(BINARY, labels, probabilities), abs=1e-12)
    assert curve["average_precision"] == average_precision_score(labels[:, 0], probabilities[:, 1])
    decided = probabilities[:, 1] > probabilities[:, 0]
    positive = labels[:, 0] == 1
    assert curve["tpr"] == (decided & positive).sum() / positive.sum()
    assert curve["fpr"] == (decided & ~positive).sum() / (~positive).sum()
    assert curve["precision"] == (decided & positive).sum() / decided.sum()
    # the decision at 0.5 is a point of the ROC curve
    assert np.min(np.hypot(curve["fpr_curve"] - curve["fpr"], curve["tpr_curve"] - curve["tpr"])) < 1e-12


def test_a_multi_class_task_has_a_curve_per_class_and_its_decision_is_the_confusion_matrix():
    probabilities = random_probabilities(300, 4, seed=2)
    labels = np.random.default_rng(3).integers(0, 4, size=(300, 1))
    curves = roc_pr_curves(MULTICLASS, probabilities, labels, list("abcd"))
    matrix = metrics.confusion_matrix(labels[:, 0], probabilities.argmax(axis=1), 4)
    for k, curve in enumerate(curves):
        assert curve["auc"] == roc_auc_score(labels[:, 0] == k, probabilities[:, k])
        assert curve["tpr"] == pytest.approx(matrix[k, k] / matrix[k].sum())
        assert curve["precision"] == pytest.approx(matrix[k, k] / matrix[:, k].sum())
    # the macro mean of the per-class AUCs is the task's AUC (medmnist.Evaluator's one-vs-rest average)
    assert np.mean([c["auc"] for c in curves]) == pytest.approx(metrics.auc_score(MULTICLASS, labels, probabilities))


def test_multi_label_curves_decide_at_one_half_and_a_label_without_positives_has_no_curve():
    rng = np.random.default_rng(4)
    probabilities = rng.random((100, 3))
    labels = (rng.random((100, 3)) < 0.3).astype(int)
    labels[:, 2] = 0
    curves = roc_pr_curves(MULTILABEL, probabilities, labels, ["x", "y", "z"])
    decided = probabilities[:, 0] >= 0.5
    assert curves[0]["tpr"] == (decided & (labels[:, 0] == 1)).sum() / labels[:, 0].sum()
    assert np.isnan(curves[2]["auc"]) and len(curves[2]["fpr_curve"]) == 0 and curves[2]["prevalence"] == 0
    rows = operating_point_rows(curves)
    assert [r["label"] for r in rows] == ["x", "y", "z"] and "fpr_curve" not in rows[0]
