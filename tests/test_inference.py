"""medscope.analysis.inference: calibration, activation statistics, projections, the analysis and its folder.

The calibration measures themselves (ECE, reliability bins, Brier score) are specified in tests/test_metrics.py.
"""
from __future__ import annotations

import csv
import doctest
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medscope.activations import collect_outputs
from medscope.analysis import inference
from medscope.analysis import inference_plots as iplots
from medscope.data import Split, normalize
from medscope.metrics import acc_score
from medscope.models import build_model
from medscope.runs import RunLayout
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL, task


def test_docstring_examples_hold():
    result = doctest.testmod(inference, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


# ------------------------------------------------------------------ calibration of a split, hand-computed


def test_binary_ece_uses_the_confidence_of_the_predicted_class():
    probs = [[0.25, 0.75], [0.65, 0.35], [0.45, 0.55], [0.95, 0.05]]
    labels = [[1], [1], [0], [0]]
    # 5 bins: (.6,.8] holds .75 and .65 (conf .70, acc .5): .2 * 2/4; (.4,.6] holds .55 (acc 0): .55 * 1/4;
    # (.8,1] holds .95 (acc 1): .05 * 1/4
    expected = 0.2 * 0.5 + 0.55 * 0.25 + 0.05 * 0.25
    assert inference.calibration(BINARY, probs, labels, ["a", "b"], n_bins=5)["ece"] == pytest.approx(expected)


def test_multiclass_ece_uses_the_top1_confidence():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]]
    labels = [[0], [0], [1]]
    # 2 bins: [0, .5] holds .4 (right): .6 * 1/3; (.5, 1] holds .7, .6 (conf .65, acc .5): .15 * 2/3
    calib = inference.calibration(MULTICLASS, probs, labels, ["a", "b", "c"], n_bins=2)
    assert calib["ece"] == pytest.approx(0.6 / 3 + 0.15 * 2 / 3)
    assert calib["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, MULTILABEL])
def test_calibration_accuracy_is_the_medmnist_accuracy(task):
    rng = np.random.default_rng(2)
    if task == MULTILABEL:
        probs, labels = rng.random((200, 5)), (rng.random((200, 5)) < 0.3).astype(float)
    else:
        k = 2 if task == BINARY else 6
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
    calib = inference.calibration(MULTILABEL, probs, labels, ["lung", "heart", "bone"], n_bins=10)
    assert [c["label"] for c in calib["curves"]] == ["lung", "heart", "bone"]
    for j, curve in enumerate(calib["curves"]):
        as_binary = inference.calibration(BINARY, np.stack([1 - probs[:, j], probs[:, j]], axis=1),
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
    calib = inference.calibration(MULTILABEL, probs, labels, ["a", "b"], n_bins=2)
    assert [c["ece"] for c in calib["curves"]] == pytest.approx([0.35, 0.3])
    assert calib["ece"] == pytest.approx(0.325)


# ------------------------------------------------------------------ activations

def test_dead_channels_are_never_active_on_any_sample():
    acts = np.array([[0.0, 0.0, 2.0, 0.0], [0.0, 1e-3, 0.0, 1e-9], [0.0, 0.0, 0.0, 0.0]])
    assert inference.dead_channels(acts).tolist() == [True, False, False, True]
    assert inference.dead_channels(acts, threshold=1e-2).tolist() == [True, True, False, True]


def test_class_membership_for_every_task():
    assert inference.class_membership(MULTICLASS, [[2], [0]], 3).astype(int).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert inference.class_membership(MULTILABEL, [[1, 0, 1], [0, 0, 0]], 3).astype(int).tolist() == \
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
    outputs = collect_outputs(model, split, MULTICLASS, torch.device("cpu"), batch_size=5)

    # direct: run the stages by hand, average the full feature maps, then loop over classes
    with torch.no_grad():
        x = normalize(split.images)
        maps = {}
        for i, stage in enumerate(model.backbone.stages):
            x = stage(x)
            maps[f"backbone.stages.{i}"] = x.mean(dim=tuple(range(2, x.ndim))).double()
    labels = split.labels[:, 0]
    member = inference.class_membership(MULTICLASS, split.labels.numpy(), 3)
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
    member = inference.class_membership(BINARY, groups[:, None], 2)
    samples, channels = inference.sorted_by_group(groups, acts, member)
    assert samples.tolist() == [1, 3, 0, 2] and channels.tolist() == [0, 1]


# ------------------------------------------------------------------ errors and embeddings

def test_confident_errors_most_confident_first():
    probs = [[0.1, 0.9], [0.4, 0.6], [0.8, 0.2], [0.02, 0.98]]
    rows, conf = inference.confident_errors(BINARY, probs, [[0], [0], [0], [1]], n=5)
    assert rows.tolist() == [0, 1] and conf.tolist() == pytest.approx([0.9, 0.6])
    assert inference.confident_errors(BINARY, probs, [[0], [0], [0], [1]], n=1)[0].tolist() == [0]


def test_confident_errors_multilabel_takes_the_surest_wrong_label():
    probs = [[0.9, 0.3], [0.6, 0.05], [0.2, 0.2]]
    rows, conf = inference.confident_errors(MULTILABEL, probs, [[0, 1], [0, 1], [0, 0]], n=5)
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


# ------------------------------------------------------------------ the analysis as values, and its folder

def _outputs_of(model, split: Split, task_name: str) -> dict:
    outputs = collect_outputs(model, split, task_name, torch.device("cpu"), batch_size=8)
    return dict(outputs, split="test", task=task_name, indices=torch.arange(len(split)))


@pytest.fixture(scope="module")
def multiclass_analysis():
    torch.manual_seed(1)
    model = build_model("cnn", in_channels=1, num_classes=3, spatial_dims=2, size=28).eval()
    split = _small_split(2, n=30, num_classes=3)
    info = SimpleNamespace(task=MULTICLASS, class_names=["a", "b", "c"], is_3d=False)
    outputs = _outputs_of(model, split, MULTICLASS)
    return outputs, split, inference.analyze(outputs, info, split.images, n_bins=5, tsne_points=12, n_errors=4)


def test_analyze_returns_every_number_and_writes_nothing(multiclass_analysis, tmp_path, monkeypatch):
    outputs, split, analysis = multiclass_analysis
    probs, labels = outputs["probabilities"].double().numpy(), outputs["labels"].numpy()
    kind = task(MULTICLASS)
    predicted = kind.predictions(probs)
    assert (analysis.split, analysis.n, analysis.source, analysis.task) == ("test", 30, "stored", MULTICLASS)
    assert analysis.errors == int((predicted != labels[:, 0]).sum())
    assert analysis.calibration["accuracy"] == pytest.approx(acc_score(MULTICLASS, labels, probs), abs=1e-12)
    assert [r["layer"] for r in analysis.summary] == list(outputs["layer_names"])
    assert len(analysis.channels) == sum(outputs["activations"][n].shape[1] for n in outputs["layer_names"]) * 4
    # the embedding table: one row per sample, label and prediction as class names, t-SNE on 12 of them
    assert [r["label"] for r in analysis.embedding] == [["a", "b", "c"][int(y)] for y in labels[:, 0]]
    assert [r["prediction"] for r in analysis.embedding] == [["a", "b", "c"][int(k)] for k in predicted]
    assert sum(r["tsne_1"] is not None for r in analysis.embedding) == 12
    # confident errors: wrong, most confident first, with their own images
    errors = analysis.confident
    assert len(errors.rows) == min(4, analysis.errors) and np.all(np.diff(errors.confidence) <= 0)
    assert all(predicted[r] != labels[r, 0] for r in errors.rows)
    np.testing.assert_array_equal(errors.images, split.images[errors.sample_ids].numpy())
    assert errors.confidence.tolist() == pytest.approx(probs[errors.rows].max(axis=1).tolist())
    assert list(tmp_path.iterdir()) == []  # analyze has no folder to write into


def test_write_analysis_writes_the_folder_it_names(multiclass_analysis, tmp_path):
    _, _, analysis = multiclass_analysis
    layout = RunLayout(tmp_path / "0001_x")
    files = inference.write_analysis(analysis, inference.output_dir(layout, "test"), title="0001_x")
    assert files[0] == layout.inference_summary_csv
    expected = [inference.SUMMARY_CSV, inference.CHANNELS_CSV, inference.CALIBRATION_JSON, inference.RELIABILITY_CSV,
                iplots.LAYER_MEAN_ACTIVATION_PNG, iplots.NEURON_HEATMAP_CLASSES_PNG, iplots.NEURON_HEATMAP_SAMPLES_PNG,
                inference.EMBEDDING_CSV, iplots.EMBEDDING_2D_PNG, inference.OPERATING_POINTS_CSV, iplots.ROC_PR_PNG,
                iplots.RELIABILITY_DIAGRAM_PNG, iplots.CONFIDENT_ERRORS_PNG]
    assert [f.name for f in files] == expected and all(f.parent == layout.inference_dir for f in files)
    assert sorted(p.name for p in layout.inference_dir.iterdir()) == sorted(expected)
    assert {*iplots.FIGURE_SIZES} == {name for name in expected if name.endswith(".png")}
    assert inference.output_dir(layout, "val") == layout.inference_dir / "val"
    with open(layout.inference_dir / inference.EMBEDDING_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == [r["label"] for r in analysis.embedding]


def test_multilabel_labels_are_joined_by_the_one_separator():
    torch.manual_seed(2)
    model = build_model("cnn", in_channels=1, num_classes=3, spatial_dims=2, size=28).eval()
    generator = torch.Generator().manual_seed(6)
    images = torch.randint(0, 256, (12, 1, 12, 12), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0]] * 4)
    split = Split(images, labels)
    info = SimpleNamespace(task=MULTILABEL, class_names=["lung", "heart", "bone"], is_3d=False)
    analysis = inference.analyze(_outputs_of(model, split, MULTILABEL), info, split.images, tsne_points=5)
    assert [r["label"] for r in analysis.embedding[:3]] == ["lung;bone", "none", "heart"]
    assert analysis.group_names == ["lung", "heart", "bone", "none"]
    assert analysis.groups[:3].tolist() == [0, 3, 1]
