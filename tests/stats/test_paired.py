"""medscope.stats.paired: the paired bootstrap of metric differences between two models on one split."""
import doctest

import numpy as np
import pytest

from medscope.errors import UsageError
from medscope.stats import bootstrap, paired


def softmax(z):
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def models(n=400, seed=0, task="binary-class"):
    """A model and a slightly worse one whose scores are strongly correlated with it."""
    rng = np.random.default_rng(seed)
    if task == "multi-class":
        labels = rng.integers(0, 3, size=(n, 1))
        logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels[:, 0]]
        noisy = logits + 0.7 * rng.normal(size=(n, 3))
        return labels, softmax(logits), softmax(noisy)
    labels = rng.integers(0, 2, size=(n, 1))
    base = labels[:, 0] + rng.normal(size=n)
    a = 1 / (1 + np.exp(-base))
    b = 1 / (1 + np.exp(-(base + 0.5 * rng.normal(size=n))))
    return labels, np.stack([1 - a, a], 1), np.stack([1 - b, b], 1)


def test_doctests():
    assert doctest.testmod(paired).failed == 0


def test_p_value_by_hand():
    # 2 of 9 differences <= 0, 7 >= 0: p = 2 (1 + 2) / (9 + 1)
    assert paired.bootstrap_p_value([0.3, -0.1, 0.2, 0.0, 0.5, 0.1, 0.4, 0.2, 0.3]) == pytest.approx(0.6)
    assert paired.bootstrap_p_value([0.0] * 5) == 1.0
    assert paired.bootstrap_p_value([np.nan, 0.1, 0.2, 0.3]) == pytest.approx(2 / 4)
    assert np.isnan(paired.bootstrap_p_value([np.nan]))


@pytest.mark.parametrize("task", ["binary-class", "multi-class"])
def test_both_models_see_the_same_resamples(task):
    labels, a, b = models(seed=1, task=task)
    result = paired.paired_bootstrap(task, labels, a, b, n_resamples=500, seed=3)
    values_a, values_b = bootstrap.bootstrap_distributions(task, labels, [a, b], n_resamples=500, seed=3)
    alone, = bootstrap.bootstrap_distributions(task, labels, [a], n_resamples=500, seed=3)
    np.testing.assert_array_equal(values_a["auc"], alone["auc"])  # the resamples do not depend on the models
    for key, entry in [("auc", result["auc"]), ("acc", result["acc"]),
                       ("sensitivity/1", result["per_class"]["1"]["sensitivity"])]:
        differences = values_a[key] - values_b[key]
        assert (entry["low"], entry["high"], entry["n_dropped"]) == bootstrap.percentile_interval(differences)
        assert entry["p_value"] == paired.bootstrap_p_value(differences)
    point_a = bootstrap.point_metrics(task, labels, a)
    point_b = bootstrap.point_metrics(task, labels, b)
    assert result["auc"]["estimate_a"] == point_a["auc"] and result["auc"]["estimate_b"] == point_b["auc"]
    assert result["auc"]["difference"] == point_a["auc"] - point_b["auc"]


def test_identical_models_differ_by_exactly_zero():
    labels, a, _ = models(seed=2)
    result = paired.paired_bootstrap("binary-class", labels, a, a, n_resamples=300)
    for key in ("auc", "acc", "balanced_acc"):
        entry = result[key]
        assert (entry["difference"], entry["low"], entry["high"], entry["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_a_clearly_better_model_gets_the_smallest_p_value():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(500, 1))
    good = 1 / (1 + np.exp(-(3 * labels[:, 0] - 1.5 + rng.normal(size=500))))
    chance = rng.random(500)
    result = paired.paired_bootstrap("binary-class", labels, np.stack([1 - good, good], 1),
                                     np.stack([1 - chance, chance], 1), n_resamples=400)
    assert result["auc"]["low"] > 0.2
    assert result["auc"]["p_value"] == pytest.approx(2 / 401)


def test_pairing_narrows_the_interval_of_correlated_models():
    """Resampling the two models independently (different seeds) ignores their correlation and gives a
    far wider spread of differences than the paired bootstrap."""
    labels, a, b = models(n=600, seed=4)
    values_a, values_b = bootstrap.bootstrap_distributions("binary-class", labels, [a, b], n_resamples=1000)
    unpaired_b, = bootstrap.bootstrap_distributions("binary-class", labels, [b], n_resamples=1000, seed=99)
    paired_sd = np.std(values_a["auc"] - values_b["auc"])
    unpaired_sd = np.std(values_a["auc"] - unpaired_b["auc"])
    assert paired_sd < 0.5 * unpaired_sd
    result = paired.paired_bootstrap("binary-class", labels, a, b, n_resamples=1000)
    assert result["auc"]["high"] - result["auc"]["low"] == pytest.approx(
        np.diff(np.quantile(values_a["auc"] - values_b["auc"], [0.025, 0.975]))[0])


def test_multilabel_differences_drop_resamples_undefined_for_either_model():
    rng = np.random.default_rng(5)
    labels = (rng.random((30, 2)) < 0.5).astype(int)
    labels[:, 1] = 0
    labels[:2, 1] = 1  # 2 positives in 30: some resamples have none
    a, b = rng.random((30, 2)), rng.random((30, 2))
    result = paired.paired_bootstrap("multi-label, binary-class", labels, a, b, n_resamples=1000)
    values_a, _ = bootstrap.bootstrap_distributions("multi-label, binary-class", labels, [a, b],
                                                    n_resamples=1000)
    assert result["auc"]["n_dropped"] == np.isnan(values_a["auc"]).sum() > 0
    assert result["auc"]["method"] == "paired percentile bootstrap (rows resampled, not stratified)"


def test_layout_of_the_result():
    labels, a, b = models(seed=6, task="multi-class")
    result = paired.paired_bootstrap("multi-class", labels, a, b, n_resamples=100, class_names=["x", "y", "z"])
    assert list(result) == ["auc", "acc", "balanced_acc", "per_class"]
    assert set(result["per_class"]["z"]) == {"auc", "sensitivity", "specificity"}
    assert set(result["acc"]) == {"estimate_a", "estimate_b", "difference", "low", "high", "p_value", "level",
                                  "method", "n_resamples", "n_dropped"}


def test_scores_of_different_shapes_are_a_usage_error():
    labels, a, _ = models(seed=7)
    with pytest.raises(UsageError, match="differ in shape"):
        paired.paired_bootstrap("binary-class", labels, a, a[:-1])
