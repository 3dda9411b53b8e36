"""medscope.explain.uncertainty: MC-dropout sampling, per-image statistics and dataset-level summaries."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score

from medscope import checkpoints, data, metrics, runs
from medscope.data import Split
from medscope.errors import UsageError
from medscope.explain import uncertainty
from medscope.models import Classifier
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL, task


def _h(*p):
    """Entropy in nats, written out by hand for the expected values."""
    return -sum(x * math.log(x) for x in p if x > 0)


def tiny_split(n=5, seed=0, shape=(1, 2, 2)) -> Split:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
    return Split(images, (torch.arange(n) % 2).view(n, 1).long())


def linear_head_model(p=0.5) -> Classifier:
    """Features = the 4 normalized pixels; head = Dropout(p) + a Linear with known weights."""
    model = Classifier(nn.Flatten(), feature_dim=4, num_classes=2, dropout=p, blocks=[])
    with torch.no_grad():
        model.head[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, -1.0, 3.0]]))
        model.head[1].bias.copy_(torch.tensor([0.1, -0.2]))
    return model.eval()


class BackboneDropout(nn.Module):
    """A model with BatchNorm and Dropout in the backbone: only full stochastic passes apply."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 2))

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.backbone(x))


# ------------------------------------------------------------------ per-image statistics by hand

def test_categorical_stats_match_hand_computed_values():
    samples = np.array([  # (T=2, N=3, K=3)
        [[0.9, 0.1, 0.0], [1.0, 0.0, 0.0], [0.5, 0.25, 0.25]],
        [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.25, 0.25]],
    ])
    s = uncertainty.categorical_stats(samples)
    assert s["predicted"].tolist() == [0, 0, 0]
    np.testing.assert_allclose(s["mean_probability"][0], [0.7, 0.3, 0.0])
    h0 = _h(0.7, 0.3)
    eh0 = (_h(0.9, 0.1) + _h(0.5, 0.5)) / 2
    np.testing.assert_allclose(s["predictive_entropy"], [h0, 0.0, _h(0.5, 0.25, 0.25)], atol=1e-12)
    np.testing.assert_allclose(s["expected_entropy"], [eh0, 0.0, _h(0.5, 0.25, 0.25)], atol=1e-12)
    np.testing.assert_allclose(s["mutual_information"], [h0 - eh0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s["std_predicted_probability"], [0.2, 0.0, 0.0], atol=1e-12)  # std of (0.9, 0.5)
    np.testing.assert_allclose(s["confidence"], [0.7, 1.0, 0.5], atol=1e-12)  # mean p of the predicted class
    np.testing.assert_allclose(s["normalised_entropy"],
                               [h0 / math.log(3), 0.0, _h(0.5, 0.25, 0.25) / math.log(3)], atol=1e-12)


def test_predictive_stats_use_the_project_prediction_rule_for_binary_tasks():
    samples = np.array([[[0.6, 0.4]], [[0.6, 0.4]]])
    s = uncertainty.predictive_stats(samples, BINARY)
    assert s["predicted"].tolist() == [0]
    np.testing.assert_allclose(s["confidence"], [0.6])
    np.testing.assert_allclose(s["normalised_entropy"], [_h(0.6, 0.4) / math.log(2)])


def test_multilabel_statistics_average_per_label_binary_entropies():
    samples = np.array([[[0.9, 0.5]], [[0.7, 0.5]]])  # (T=2, N=1, L=2) sigmoid outputs
    s = uncertainty.predictive_stats(samples, MULTILABEL)
    assert s["predicted"].tolist() == [[1, 0]]  # 0.8 > 0.5; 0.5 is not
    per_label_h = [_h(0.8, 0.2), _h(0.5, 0.5)]
    np.testing.assert_allclose(s["per_label_predictive_entropy"][0], per_label_h)
    np.testing.assert_allclose(s["predictive_entropy"], [np.mean(per_label_h)])
    np.testing.assert_allclose(s["per_label_std_predicted_probability"][0], [0.1, 0.0], atol=1e-12)


# ------------------------------------------------------------------ sampling

def test_mc_samples_of_a_known_head_equal_the_masks_replayed_by_hand():
    model, split, passes, p = linear_head_model(0.5), tiny_split(5), 3, 0.5
    result = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=passes, seed=7, batch_size=2)
    assert result.path == "cached" and result.samples.shape == (passes, 5, 2)

    weight, bias = model.head[1].weight.detach(), model.head[1].bias.detach()
    generator = torch.Generator().manual_seed(7)
    features = data.normalize(split.images).flatten(1)
    expected = np.zeros((passes, 5, 2))
    for start in range(0, 5, 2):  # masks are drawn batch by batch, then pass by pass
        feats = features[start:start + 2]
        for t in range(passes):
            keep = (torch.rand(feats.shape, generator=generator) >= p).float() / (1 - p)
            logits = (feats * keep) @ weight.T + bias
            expected[t, start:start + 2] = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(result.samples, expected, atol=1e-6)
    deterministic = torch.softmax(features @ weight.T + bias, dim=1).numpy()
    np.testing.assert_allclose(result.deterministic, deterministic, atol=1e-6)
    assert not np.allclose(result.samples[0], result.samples[1])  # the passes really differ


def test_same_seed_same_numbers_and_another_seed_other_numbers():
    model, split = linear_head_model(0.5), tiny_split(6)
    a = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=4, seed=3)
    b = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=4, seed=3)
    c = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=4, seed=4)
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


@pytest.fixture(scope="module")
def real_models(run_2d, run_3d):
    """The session's trained 2D model and a seeded 3D ResNet-18 (the 1-epoch 3D run saturates at p = 1,
    where every pass looks alike), each with a few real test images."""
    out = {}
    for key, path, n in (("2d", run_2d, 8), ("3d", run_3d, 4)):
        model, checkpoint = checkpoints.load_run_model(runs.Run(path), "best", "cpu")
        if key == "3d":
            model = checkpoints.initial_model(checkpoint["spec"], seed=0).eval()
        cfg = checkpoint["config"]
        info = data.dataset_info(cfg["dataset"], cfg["size"])
        split = data.subset(data.load_split(info, cfg["data_dir"], "test"), n, seed=0)
        out[key] = (model, info, split)
    return out


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_cached_path_equals_full_stochastic_passes_bit_for_bit(real_models, dims):
    model, info, split = real_models[dims]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cached = uncertainty.mc_predict(model, split, info.task, "cpu", passes=3, seed=11, batch_size=8, path="cached")
    full = uncertainty.mc_predict(model, split, info.task, "cpu", passes=3, seed=11, batch_size=8, path="full")
    assert (cached.path, full.path) == ("cached", "full")
    assert np.array_equal(cached.samples, full.samples)
    assert np.array_equal(cached.deterministic, full.deterministic)
    assert not np.array_equal(cached.samples[0], cached.samples[1])
    # normalization stayed in evaluation mode: no running statistic moved
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.head[0], nn.Dropout) and not model.training


def test_dropout_in_the_backbone_takes_full_passes_with_normalization_in_eval_mode():
    torch.manual_seed(0)
    model = BackboneDropout()
    model.backbone[1].running_mean.fill_(0.3)
    seen = {"bn": [], "dropout": []}
    model.backbone[1].register_forward_pre_hook(lambda m, i: seen["bn"].append(m.training))
    split = tiny_split(4, shape=(1, 3, 3))
    assert not uncertainty.head_only(model)
    with pytest.raises(UsageError, match="outside its head"):
        uncertainty.mc_predict(model, split, BINARY, "cpu", passes=2, path="cached")
    result = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=4, seed=0)
    assert result.path == "full"
    assert seen["bn"] and not any(seen["bn"])
    assert torch.equal(model.backbone[1].running_mean, torch.full((4,), 0.3))
    assert type(model.backbone[3]) is nn.Dropout and type(model.head[0]) is nn.Dropout  # originals are back
    assert result.rates == {"backbone.3": 0.3, "head.0": 0.2}
    assert not np.allclose(result.samples[0], result.samples[1])


def test_rate_override_enables_dropout_in_a_model_trained_without():
    model, split = linear_head_model(0.0), tiny_split(4)
    plain = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=3)
    assert np.array_equal(plain.samples[0], plain.samples[1])  # p = 0: every pass is the same
    sampled = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=3, rate=0.4)
    assert sampled.rates == {"head.0": 0.4}
    assert not np.array_equal(sampled.samples[0], sampled.samples[1])
    label = uncertainty.dropout_label({"head.0": 0.0}, 0.4)
    assert label["source"] == "test-time" and "trained without dropout" in label["text"]
    assert uncertainty.dropout_label({"head.0": 0.2}, None)["source"] == "trained"


def test_channel_dropout_drops_whole_channels():
    sampler = uncertainty.MaskSampler(0)
    layer = uncertainty.SampledDropout(0.5, channelwise=True, sampler=sampler).train()
    out = layer(torch.ones(3, 8, 4, 4))
    per_channel = out.flatten(2)
    assert torch.equal(per_channel.amin(dim=2), per_channel.amax(dim=2))  # constant within a channel
    assert set(per_channel.unique().tolist()) <= {0.0, 2.0}


# ------------------------------------------------------------------ dataset level

def test_dataset_summary_on_a_hand_example():
    # confidence order (high -> low): images 0, 1, 2, 3 ; image 2 is wrong
    samples = np.array([[[0.99, 0.01], [0.02, 0.98], [0.70, 0.30], [0.45, 0.55]]] * 2)
    samples[1, 3] = [0.55, 0.45]  # image 3 is torn between the classes: mean (0.5, 0.5) -> predicted 0
    labels = np.array([[0], [1], [1], [0]])
    stats = uncertainty.predictive_stats(samples, MULTICLASS)
    summary = uncertainty.dataset_summary(stats, labels, MULTICLASS, ["a", "b"], threshold=0.85)
    correct = np.array([True, True, False, True])
    assert summary["n"] == 4 and summary["n_errors"] == 1
    assert summary["accuracy_all"] == pytest.approx(0.75)
    assert summary["n_confident"] == 2 and summary["coverage"] == pytest.approx(0.5)  # only images 0 and 1
    assert summary["accuracy_confident"] == pytest.approx(1.0)
    assert summary["accuracy_uncertain"] == pytest.approx(0.5)
    curve = summary["accuracy_coverage"]
    np.testing.assert_allclose(curve["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve["accuracy"], [1.0, 1.0, 2 / 3, 3 / 4])  # image 3 is least confident
    assert summary["error_auroc"]["predictive_entropy"] == pytest.approx(
        roc_auc_score(~correct, stats["predictive_entropy"]))
    by_class = {row["name"]: row for row in summary["per_class"]}
    assert by_class["a"]["n"] == 2 and by_class["a"]["accuracy"] == pytest.approx(1.0)
    assert by_class["b"]["accuracy"] == pytest.approx(0.5)
    assert by_class["b"]["fraction_uncertain"] == pytest.approx(0.5) and by_class["b"]["n_flagged"] == 1
    assert summary["flagged_fraction"] == pytest.approx(0.5)
    interval = summary["error_auroc_interval"]["predictive_entropy"]
    assert interval["method"] == "percentile bootstrap stratified"


def test_the_error_auroc_interval_is_a_stratified_percentile_bootstrap_of_sklearns_auroc():
    from medscope.stats.bootstrap import resample_indices

    rng = np.random.default_rng(1)
    errors = rng.random(80) < 0.3
    score = rng.random(80) + 0.4 * errors
    got = metrics.error_auroc_interval(score, errors, n_resamples=300, seed=4)
    assert got["estimate"] == pytest.approx(roc_auc_score(errors, score))
    # the same resamples, by a plain loop over sklearn
    values = []
    for chunk in resample_indices(len(score), 300, seed=4, strata=errors):
        values += [roc_auc_score(errors[i], score[i]) for i in chunk]
    low, high = np.percentile(values, [2.5, 97.5])
    assert (got["low"], got["high"]) == pytest.approx((low, high), abs=1e-12)
    assert got["low"] <= got["estimate"] <= got["high"]


def test_the_threshold_is_chosen_where_flagging_errors_has_the_largest_youden_j():
    confidence = np.array([0.52, 0.58, 0.61, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995])
    correct = np.array([False, False, True, False, True, True, True, True, True, True])
    choice = uncertainty.choose_threshold(confidence, correct)
    # flagging below 0.75 catches all 3 errors and 1 of 7 right answers: J = 1 - 1/7, the best there is
    assert choice["threshold"] == pytest.approx(0.75) and choice["youden_j"] == pytest.approx(1 - 1 / 7)
    assert choice["flagged_fraction"] == pytest.approx(0.4) and choice["error_recall"] == 1.0
    for t in np.linspace(0.5, 1.0, 51):  # no other threshold does better
        flagged = confidence < t
        assert flagged[~correct].mean() - flagged[correct].mean() <= choice["youden_j"] + 1e-12
    nothing = uncertainty.choose_threshold(confidence, np.ones(10, dtype=bool))
    assert nothing["flagged_fraction"] == 0.0 and "nothing to learn" in nothing["rule"]


def test_error_auroc_is_sklearns_and_undefined_without_errors():
    score, errors = np.array([0.3, 0.1, 0.8, 0.5, 0.2]), np.array([False, False, True, False, True])
    assert metrics.error_auroc(score, errors) == pytest.approx(roc_auc_score(errors, score))
    assert math.isnan(metrics.error_auroc(np.array([0.1, 0.2]), np.array([False, False])))
    assert math.isnan(metrics.error_auroc(np.array([0.1, 0.2]), np.array([True, True])))


def test_report_reads_in_plain_words():
    samples = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]] * 3)
    stats = uncertainty.predictive_stats(samples, BINARY)
    summary = uncertainty.dataset_summary(stats, np.array([[0], [1], [1]]), BINARY, ["neg", "pos"], 0.5)
    summary.update(run="r", split="test", passes=3, seed=0, path="cached",
                   dropout=uncertainty.dropout_label({"head.0": 0.0}, 0.3))
    text = uncertainty.report_markdown(summary)
    assert "enabled at test time" in text and "not the model as it was trained" in text
    assert "| neg | 1 |" in text and "accuracy" in text


# ------------------------------------------------------------------ a whole split, as values

def test_analyze_uncertainty_is_mc_predict_then_the_statistics():
    model, split = linear_head_model(0.5), tiny_split(6)
    result = uncertainty.analyze_uncertainty(model, split, BINARY, "cpu", class_names=["neg", "pos"], passes=4,
                                             seed=3, threshold=0.6, batch_size=4)
    mc = uncertainty.mc_predict(model, split, BINARY, "cpu", passes=4, seed=3, batch_size=4)
    assert np.array_equal(result.mc.samples, mc.samples)
    stats = uncertainty.predictive_stats(mc.samples, BINARY)
    np.testing.assert_array_equal(result.stats["confidence"], stats["confidence"])
    expected = uncertainty.dataset_summary(stats, mc.labels, BINARY, ["neg", "pos"], 0.6, mc.deterministic)
    assert json.dumps(result.summary) == json.dumps(expected)  # NaN (no confident image of a class) included
    assert result.dropout == uncertainty.dropout_label({"head.0": 0.5}, None)
    record = uncertainty.summary_record(result, run="r", split="test", checkpoint="best")
    assert list(record)[:4] == ["run", "split", "checkpoint", "task"] and record["task"] == BINARY
    assert record["n"] == 6 and record["passes"] == 4 and record["path"] == "cached"


def multilabel_result() -> uncertainty.UncertaintyResult:
    """Three images, two labels ("a", "b"); T = 2 passes that agree (no mutual information)."""
    samples = np.array([[[0.9, 0.8], [0.1, 0.4], [0.6, 0.45]]] * 2)
    labels = np.array([[1, 1], [0, 1], [1, 0]])
    stats = uncertainty.predictive_stats(samples, MULTILABEL)
    summary = uncertainty.dataset_summary(stats, labels, MULTILABEL, ["a", "b"], 0.5, samples[0])
    mc = uncertainty.MCResult(samples, samples[0], labels, "cached", {"head.0": 0.2})
    return uncertainty.UncertaintyResult(task(MULTILABEL), ["a", "b"], 2, 0, 0.5, mc, stats, summary,
                                         uncertainty.dropout_label({"head.0": 0.2}, None))


def test_per_image_rows_and_cases_write_multilabel_labels_one_way():
    result = multilabel_result()
    rows, columns = uncertainty.per_image_table(result)
    assert "probability" not in columns and columns[-2:] == ["prob_0", "prob_1"]
    assert [(r["label"], r["label_name"], r["predicted"], r["predicted_name"], r["correct"]) for r in rows] == [
        ("1;1", "a;b", "1;1", "a;b", True), ("0;1", "b", "0;0", "none", False), ("1;0", "a", "1;0", "a", True)]
    # confidence is the mean over labels of the probability of each label's predicted side
    expected = [np.mean([max(a, 1 - a), max(b, 1 - b)]) for a, b in ((0.9, 0.8), (0.1, 0.4), (0.6, 0.45))]
    np.testing.assert_allclose([r["confidence"] for r in rows], expected)
    record = uncertainty.summary_record(result, run="r", split="test", checkpoint="best")
    cases = uncertainty.uncertain_cases(result, record)
    flagged = [i for i, c in enumerate(expected) if c < 0.5]
    assert [c["id"] for c in cases["cases"]] == sorted(flagged, key=lambda i: expected[i])
    assert cases["n_flagged"] == len(flagged) and cases["n_images"] == 3
