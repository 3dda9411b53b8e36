"""medscope.analysis.inference: calibration, activation statistics and projections."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from medscope.activations import collect_outputs
from medscope.analysis import inference
from medscope.data import TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL, Split, normalize
from medscope.metrics import acc_score
from medscope.models import build_model


def test_docstring_examples_hold():
    result = doctest.testmod(inference, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


# ------------------------------------------------------------------ ECE, hand-computed

def test_ece_of_two_filled_bins():
    # bin (0.9, 1.0]: confidence .95, accuracy .5 -> |gap| .45, weight 2/4
    # bin (0.6, 0.7]: confidence .65, accuracy 1  -> |gap| .35, weight 2/4
    ece = inference.expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10)
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)


def test_ece_is_zero_when_accuracy_equals_confidence_in_every_bin():
    conf = [0.75] * 4 + [0.55] * 20
    correct = [1, 1, 1, 0] + [1] * 11 + [0] * 9
    assert inference.expected_calibration_error(conf, correct, n_bins=15) == pytest.approx(0.0, abs=1e-12)


def test_binary_ece_uses_the_confidence_of_the_predicted_class():
    probs = [[0.25, 0.75], [0.65, 0.35], [0.45, 0.55], [0.95, 0.05]]
    labels = [[1], [1], [0], [0]]
    conf, correct = inference.predicted_confidence(TASK_BINARY, probs, labels)
    assert conf.tolist() == pytest.approx([0.75, 0.65, 0.55, 0.95])
    assert correct.tolist() == [True, False, False, True]
    # 5 bins: (.6,.8] holds .75 and .65 (conf .70, acc .5): .2 * 2/4; (.4,.6] holds .55 (acc 0): .55 * 1/4;
    # (.8,1] holds .95 (acc 1): .05 * 1/4
    expected = 0.2 * 0.5 + 0.55 * 0.25 + 0.05 * 0.25
    assert inference.calibration(TASK_BINARY, probs, labels, ["a", "b"], n_bins=5)["ece"] == pytest.approx(expected)


def test_multiclass_ece_uses_the_top1_confidence():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]]
    labels = [[0], [0], [1]]
    conf, correct = inference.predicted_confidence(TASK_MULTICLASS, probs, labels)
    assert conf.tolist() == pytest.approx([0.7, 0.6, 0.4])
    assert correct.tolist() == [True, False, True]
    # 2 bins: [0, .5] holds .4 (right): .6 * 1/3; (.5, 1] holds .7, .6 (conf .65, acc .5): .15 * 2/3
    calib = inference.calibration(TASK_MULTICLASS, probs, labels, ["a", "b", "c"], n_bins=2)
    assert calib["ece"] == pytest.approx(0.6 / 3 + 0.15 * 2 / 3)
    assert calib["accuracy"] == pytest.approx(2 / 3)


def test_ece_is_nan_without_predictions():
    assert np.isnan(inference.expected_calibration_error([], [], n_bins=15))


def test_reliability_bins_agree_with_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 500)
    correct = rng.random(500) < conf ** 2
    bins = inference.reliability_bins(conf, correct, n_bins=15)
    accuracy, confidence = calibration_curve(correct, conf, n_bins=15, strategy="uniform")
    filled = bins["count"] > 0
    np.testing.assert_allclose(bins["accuracy"][filled], accuracy)
    np.testing.assert_allclose(bins["confidence"][filled], confidence)
    assert bins["count"].sum() == 500 and np.isnan(bins["accuracy"][~filled]).all()
    gaps = np.abs(accuracy - confidence) * bins["count"][filled] / 500
    assert inference.expected_calibration_error(conf, correct, 15) == pytest.approx(gaps.sum())


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    bins = inference.reliability_bins([0.5, 1.0, 0.0], [1, 1, 1], n_bins=2)
    assert bins["count"].tolist() == [2, 1]


# ------------------------------------------------------------------ Brier, hand-computed

def test_brier_binary_is_on_the_positive_class_probability():
    assert inference.brier_score(TASK_BINARY, [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]) == pytest.approx(
        (0.2 ** 2 + 0.7 ** 2) / 2)


def test_brier_multiclass_sums_over_classes():
    probs = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]
    expected = ((0.5 ** 2 + 0.3 ** 2 + 0.2 ** 2) + (0.1 ** 2 + 0.9 ** 2 + 0.8 ** 2)) / 2
    assert inference.brier_score(TASK_MULTICLASS, probs, [[0], [1]]) == pytest.approx(expected)
    assert inference.brier_score(TASK_ORDINAL, probs, [[0], [1]]) == pytest.approx(expected)


def test_brier_multilabel_averages_samples_and_labels():
    probs = [[0.9, 0.2], [0.4, 0.6]]
    labels = [[1, 0], [1, 1]]
    assert inference.brier_score(TASK_MULTILABEL, probs, labels) == pytest.approx(
        (0.1 ** 2 + 0.2 ** 2 + 0.6 ** 2 + 0.4 ** 2) / 4)


def test_brier_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=(300, 1))
    assert inference.brier_score(TASK_MULTICLASS, probs, labels) == pytest.approx(
        brier_score_loss(labels[:, 0], probs, labels=range(4)))
    binary = probs[:, :2] / probs[:, :2].sum(axis=1, keepdims=True)
    y = labels % 2
    assert inference.brier_score(TASK_BINARY, binary, y) == pytest.approx(brier_score_loss(y[:, 0], binary[:, 1]))


@pytest.mark.parametrize("task", [TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL])
def test_calibration_accuracy_is_the_medmnist_accuracy(task):
    rng = np.random.default_rng(2)
    if task == TASK_MULTILABEL:
        probs, labels = rng.random((200, 5)), (rng.random((200, 5)) < 0.3).astype(float)
    else:
        k = 2 if task == TASK_BINARY else 6
        logits = rng.normal(size=(200, k))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels = rng.integers(0, k, size=(200, 1))
    names = [f"c{i}" for i in range(probs.shape[1])]
    calib = inference.calibration(task, probs, labels, names)
    assert calib["accuracy"] == pytest.approx(acc_score(task, labels, probs))
    assert 0 <= calib["ece"] <= 1


# ------------------------------------------------------------------ multi-label: per-label reliability

def test_multilabel_reliability_is_one_binary_curve_per_label():
    rng = np.random.default_rng(3)
    probs = rng.random((150, 3))
    labels = (rng.random((150, 3)) < probs).astype(np.float32)
    calib = inference.calibration(TASK_MULTILABEL, probs, labels, ["lung", "heart", "bone"], n_bins=10)
    assert [c["label"] for c in calib["curves"]] == ["lung", "heart", "bone"]
    for j, curve in enumerate(calib["curves"]):
        as_binary = inference.calibration(TASK_BINARY, np.stack([1 - probs[:, j], probs[:, j]], axis=1),
                                          labels[:, j:j + 1].astype(np.int64), ["no", "yes"], n_bins=10)
        assert curve["ece"] == pytest.approx(as_binary["ece"])
        assert curve["accuracy"] == pytest.approx(as_binary["accuracy"])
        np.testing.assert_array_equal(curve["bins"]["count"], as_binary["curves"][0]["bins"]["count"])
    assert calib["ece"] == pytest.approx(np.mean([c["ece"] for c in calib["curves"]]))


def test_multilabel_ece_hand_computed():
    probs = [[0.9, 0.3], [0.8, 0.1]]
    labels = [[1, 1], [0, 0]]
    # label 0: confidences .9 (right) and .8 (wrong); 2 bins -> one bin (.5, 1]: conf .85, acc .5 -> .35
    # label 1: confidences .7 (wrong) and .9 (right) -> conf .8, acc .5 -> .3
    calib = inference.calibration(TASK_MULTILABEL, probs, labels, ["a", "b"], n_bins=2)
    assert [c["ece"] for c in calib["curves"]] == pytest.approx([0.35, 0.3])
    assert calib["ece"] == pytest.approx(0.325)


# ------------------------------------------------------------------ activations

def test_dead_channels_are_never_active_on_any_sample():
    acts = np.array([[0.0, 0.0, 2.0, 0.0], [0.0, 1e-3, 0.0, 1e-9], [0.0, 0.0, 0.0, 0.0]])
    assert inference.dead_channels(acts).tolist() == [True, False, False, True]
    assert inference.dead_channels(acts, threshold=1e-2).tolist() == [True, True, False, True]


def test_class_membership_for_every_task():
    assert inference.class_membership(TASK_MULTICLASS, [[2], [0]], 3).astype(int).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert inference.class_membership(TASK_MULTILABEL, [[1, 0, 1], [0, 0, 0]], 3).astype(int).tolist() == \
        [[1, 0, 1], [0, 0, 0]]


def test_class_channel_means_of_an_absent_class_are_nan():
    means = inference.class_channel_means([[1.0, 2.0], [3.0, 4.0]], [[1, 0], [1, 0]])
    assert means[0].tolist() == [2.0, 3.0] and np.isnan(means[1]).all()


def _small_split(spatial_dims: int, n: int, num_classes: int) -> Split:
    generator = torch.Generator().manual_seed(5)
    shape = (n, 1) + (12,) * spatial_dims
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    labels = (torch.arange(n) % num_classes).reshape(-1, 1)
    return Split(images, labels)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_per_channel_means_match_a_direct_computation(spatial_dims):
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=3, spatial_dims=spatial_dims, size=28).eval()
    stage0_norm = model.backbone.stages[0][4]  # second BatchNorm of stage 0, before its ReLU
    with torch.no_grad():  # make channel 5 of stage 0 dead: its ReLU input is always negative
        stage0_norm.weight[5] = 0.0
        stage0_norm.bias[5] = -1.0
    split = _small_split(spatial_dims, n=17, num_classes=3)
    outputs = collect_outputs(model, split, TASK_MULTICLASS, torch.device("cpu"), batch_size=5)

    # direct: run the stages by hand, average the full feature maps, then loop over classes
    with torch.no_grad():
        x = normalize(split.images)
        maps = {}
        for i, stage in enumerate(model.backbone.stages):
            x = stage(x)
            maps[f"backbone.stages.{i}"] = x.mean(dim=tuple(range(2, x.ndim))).double()
    labels = split.labels[:, 0]
    member = inference.class_membership(TASK_MULTICLASS, split.labels.numpy(), 3)
    acts = {name: outputs["activations"][name].numpy() for name in outputs["layer_names"]}
    summary = inference.layer_summary(outputs["layer_names"], acts, member)
    rows = inference.channel_rows(outputs["layer_names"], acts, member, ["a", "b", "c"])
    table = {(r["layer"], r["channel"], r["class"]): r["value"] for r in rows}

    assert [r["layer"] for r in summary] == list(maps)
    for row in summary:
        direct = maps[row["layer"]]
        assert row["channels"] == direct.shape[1] and row["samples"] == 17
        assert row["mean"] == pytest.approx(float(direct.mean()), abs=1e-5)
        assert row["std"] == pytest.approx(float(direct.std(unbiased=False)), abs=1e-5)
        for k in range(3):
            assert row[f"mean_class_{k}"] == pytest.approx(float(direct[labels == k].mean()), abs=1e-5)
        for c in range(direct.shape[1]):
            assert table[(row["layer"], c, "all")] == pytest.approx(float(direct[:, c].mean()), abs=1e-5)
            for k, name in enumerate("abc"):
                assert table[(row["layer"], c, name)] == pytest.approx(float(direct[labels == k, c].mean()), abs=1e-5)
    assert summary[0]["dead_channels"] >= 1
    assert inference.dead_channels(acts["backbone.stages.0"])[5]
    assert summary[0]["dead_fraction"] == pytest.approx(summary[0]["dead_channels"] / summary[0]["channels"])


def test_layer_summary_keeps_network_order_and_finds_extremes():
    acts = {"b": np.array([[1.0, 0.0], [3.0, 0.0]]), "a": np.array([[0.5], [0.5]])}
    member = np.array([[1, 0], [0, 1]], dtype=bool)
    summary = inference.layer_summary(["b", "a"], acts, member)
    assert [r["layer"] for r in summary] == ["b", "a"] and [r["position"] for r in summary] == [0, 1]
    expected = {"mean": 1.0, "min_channel_mean": 0.0, "max_channel_mean": 2.0, "dead_channels": 1,
                "dead_fraction": 0.5, "mean_class_0": 0.5, "mean_class_1": 1.5, "channels": 2, "samples": 2}
    assert {k: summary[0][k] for k in expected} == expected
    assert summary[0]["std"] == pytest.approx(np.std([1.0, 0.0, 3.0, 0.0]))
    most, least = inference.most_and_least_active(summary, k=1)
    assert most[0]["layer"] == "b" and least[0]["layer"] == "a"


def test_class_selectivity_is_zero_for_constant_channels():
    z = inference.class_selectivity([[0.0, 1.0], [0.0, 3.0]], [[1, 0], [0, 1]])
    assert z[:, 0].tolist() == [0.0, 0.0] and z[:, 1].tolist() == [-1.0, 1.0]


def test_samples_sorted_by_class_and_channels_by_preferred_class():
    acts = np.array([[0.0, 5.0], [1.0, 0.0], [0.0, 4.0], [2.0, 0.0]])
    groups = np.array([1, 0, 1, 0])
    member = inference.class_membership(TASK_BINARY, groups[:, None], 2)
    samples, channels = inference.sorted_by_group(groups, acts, member)
    assert samples.tolist() == [1, 3, 0, 2] and channels.tolist() == [0, 1]


# ------------------------------------------------------------------ errors and embeddings

def test_confident_errors_most_confident_first():
    probs = [[0.1, 0.9], [0.4, 0.6], [0.8, 0.2], [0.02, 0.98]]
    rows, conf = inference.confident_errors(TASK_BINARY, probs, [[0], [0], [0], [1]], n=5)
    assert rows.tolist() == [0, 1] and conf.tolist() == pytest.approx([0.9, 0.6])
    assert inference.confident_errors(TASK_BINARY, probs, [[0], [0], [0], [1]], n=1)[0].tolist() == [0]


def test_confident_errors_multilabel_takes_the_surest_wrong_label():
    probs = [[0.9, 0.3], [0.6, 0.05], [0.2, 0.2]]
    rows, conf = inference.confident_errors(TASK_MULTILABEL, probs, [[0, 1], [0, 1], [0, 0]], n=5)
    assert rows.tolist() == [1, 0] and conf.tolist() == pytest.approx([0.95, 0.9])


def test_projections_cap_tsne_points_with_a_seeded_subsample():
    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(0, 1, (60, 80)), rng.normal(6, 1, (60, 80))])
    result = inference.embedding_projections(x, max_tsne_points=50, seed=3)
    assert result["pca"].shape == (120, 2) and result["tsne"].shape == (50, 2)
    assert np.array_equal(result["tsne_rows"], inference.tsne_subsample(120, 50, 3))
    assert len(np.unique(result["tsne_rows"])) == 50 and 0.5 < result["pca_explained"][0] <= 1
    # two well separated clusters lie on opposite sides of PC1
    first = result["pca"][:, 0]
    assert (np.sign(first[:60]) == -np.sign(first[60:].mean())).all()
    assert result["perplexity"] == pytest.approx(min(30, 49 / 3))


def test_projections_of_very_few_points_skip_tsne():
    result = inference.embedding_projections(np.eye(3), seed=0)
    assert result["pca"].shape == (3, 2) and result["tsne"] is None
