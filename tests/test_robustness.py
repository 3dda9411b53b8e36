"""medscope.explain.robustness and ``explain.py robustness``: the measures by hand and against sklearn, and whole sweeps on
real 2D and 3D runs whose clean row is the run's own test metrics."""
from __future__ import annotations

import csv
import doctest
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

import explain
from medscope import data, metrics
from medscope.app import cli, menu
from medscope.explain import perturbations as pt
from medscope.explain import robustness
from medscope.models import build_model
from medscope.runs import RunLayout
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL
from tests.conftest import ROOT, copy_run, one_line_error


def run_explain(*argv) -> int:
    return cli.run(explain.main, list(argv))


def read_csv(path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def number(text: str) -> float:
    return float("nan") if text in ("", "nan") else float(text)


# ------------------------------------------------------------------ measures

def test_balanced_accuracy_equals_sklearn_on_the_project_predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(50, 1))
    probs = rng.dirichlet(np.ones(3), size=50)
    assert metrics.balanced_accuracy(MULTICLASS, labels, probs) == pytest.approx(
        balanced_accuracy_score(labels[:, 0], probs.argmax(axis=1)))
    labels = rng.integers(0, 2, size=(40, 1))
    p1 = rng.random(40)
    probs = np.stack([1 - p1, p1], axis=1)
    assert metrics.balanced_accuracy(BINARY, labels, probs) == pytest.approx(
        balanced_accuracy_score(labels[:, 0], (p1 > 0.5).astype(int)))


def test_multilabel_balanced_accuracy_is_the_mean_over_labels():
    labels = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    probs = np.array([[0.9, 0.2], [0.6, 0.1], [0.8, 0.4], [0.1, 0.7]])  # label 0: 1 false positive; label 1: 1 miss
    expected = np.mean([(1.0 + 0.5) / 2, (1.0 + 0.5) / 2])
    assert metrics.balanced_accuracy(MULTILABEL, labels, probs) == pytest.approx(expected)
    assert robustness.flipped(MULTILABEL, labels, labels[[0, 1, 3, 2]]).tolist() == [False, False, True, True]


def test_saliency_shift_by_hand_and_against_numpy():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.random((4, 6, 5)))
    b = torch.from_numpy(rng.random((4, 6, 5)))
    same = robustness.saliency_shift(a, a.clone())
    assert np.allclose(same["rmse"], 0) and np.allclose(same["pearson"], 1) and np.allclose(same["iou"], 1)
    s = robustness.saliency_shift(a, b)
    flat_a, flat_b = a.reshape(4, -1).numpy(), b.reshape(4, -1).numpy()
    np.testing.assert_allclose(s["rmse"], np.sqrt(((flat_a - flat_b) ** 2).mean(axis=1)))
    np.testing.assert_allclose(s["pearson"], [np.corrcoef(x, y)[0, 1] for x, y in zip(flat_a, flat_b)])
    k = math.ceil(0.1 * 30)  # 3 of 30 pixels
    for i in range(4):
        top_a, top_b = set(np.argsort(-flat_a[i])[:k]), set(np.argsort(-flat_b[i])[:k])
        assert s["iou"][i] == pytest.approx(len(top_a & top_b) / len(top_a | top_b))
    # zero is never salient: two blank maps share their (empty) hot spot, a blank and a hot one do not
    blank, hot = torch.zeros(1, 6, 5), torch.zeros(1, 6, 5).index_fill_(2, torch.tensor([4]), 1.0)
    assert robustness.saliency_shift(blank, blank)["iou"][0] == 1
    assert robustness.saliency_shift(blank, hot)["iou"][0] == 0


def test_constant_maps_have_no_pattern_to_correlate():
    zero, ramp = torch.zeros(1, 4, 4), torch.linspace(0, 1, 16).view(1, 4, 4)
    assert robustness.saliency_shift(zero, zero)["pearson"].tolist() == [1.0]
    assert robustness.saliency_shift(zero, ramp)["pearson"].tolist() == [0.0]


def test_flip_auroc_is_sklearns_and_says_why_when_undefined():
    score, flips = np.array([0.3, 0.1, 0.8, 0.5, 0.2]), np.array([False, False, True, False, True])
    assert robustness.flip_auroc(score, flips) == (pytest.approx(roc_auc_score(flips, score)), "")
    value, note = robustness.flip_auroc(score, np.ones(5, dtype=bool))
    assert math.isnan(value) and note == "every prediction flipped among the 5 explained images"


def test_mean_corruption_error_is_relative_to_the_clean_error():
    assert robustness.mean_corruption_error([0.7, 0.5, 0.4], 0.8) == pytest.approx((0.3 + 0.5 + 0.6) / 3 / 0.2)
    assert math.isnan(robustness.mean_corruption_error([0.7], 1.0))


def test_docstring_examples():
    assert doctest.testmod(robustness).failed == 0


def test_example_titles_and_captions_name_labels_one_way():
    assert robustness.example_title(BINARY, np.array([1]), ["benign", "malignant"]) == "malignant"
    assert robustness.example_title(MULTILABEL, np.array([0, 1, 1]), ["a", "b", "c"]) == "0;1;1"
    assert robustness.prediction_caption(MULTICLASS, np.array([0.2, 0.5, 0.3]), ["a", "a very long class name", "c"]) \
        == "a very long… 0.50"
    assert robustness.prediction_caption(MULTILABEL, np.array([0.2, 0.4]), ["a", "b"]) == "pred: none"


# ------------------------------------------------------------------ the sweep as a library call

@pytest.fixture(scope="module")
def small_sweep(medmnist_dir):
    """A seeded untrained CNN on 40 breastmnist test images: one perturbation at two severities."""
    info = data.dataset_info("breastmnist")
    split = data.subset(data.load_split(info, medmnist_dir, "test"), 40, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", 1, 2, spatial_dims=2, size=28, dropout=0.0).eval()
    sweep = robustness.run_sweep(model, split, info.task, info.class_names, "cpu",
                                 [pt.PERTURBATIONS["gaussian_noise"]], [1, 5], seed=3, n_saliency=8, n_examples=1,
                                 batch_size=16)
    return model, info, split, sweep


def test_run_sweep_takes_values_and_its_clean_row_is_a_plain_evaluation(small_sweep):
    from medscope.activations import collect_outputs
    from medscope.explain.cam import auto_layer

    model, info, split, sweep = small_sweep
    assert sweep.layer == auto_layer(model, (1, 28, 28)) and sweep.method == "gradcam"
    assert [(r["perturbation"], r["severity"]) for r in sweep.rows] == [("clean", 0), ("gaussian_noise", 1),
                                                                       ("gaussian_noise", 5)]
    probs = collect_outputs(model, split, info.task, torch.device("cpu"), activations=False)["probabilities"].numpy()
    clean = sweep.rows[0]
    assert clean["auc"] == metrics.auc_score(info.task, split.labels.numpy(), probs)
    assert clean["balanced_acc"] == metrics.balanced_accuracy(info.task, split.labels.numpy(), probs)
    assert clean["flip_rate"] == 0 and clean["saliency_iou"] == 1
    assert len(sweep.per_image) == 8 * 3 and len(sweep.example_ids) == 1
    assert set(sweep.examples) == {("clean", 0), ("gaussian_noise", 1), ("gaussian_noise", 5)}


def test_summary_record_and_report_are_built_from_the_sweep(small_sweep):
    _, _, _, sweep = small_sweep
    rows = [dict(r) for r in sweep.rows]
    robustness.add_relative_errors(rows)
    summary = robustness.summarize(rows, sweep.per_image, tolerance=0.05)
    assert [s["perturbation"] for s in summary] == ["gaussian_noise", "overall"]
    info = robustness.sweep_record(sweep, summary, run="r", split="test", checkpoint="best", tolerance=0.05,
                                   run_metrics={"auc": rows[0]["auc"], "acc": rows[0]["acc"]})
    assert info["clean_matches_run_metrics"] is True and info["severities"] == [1, 5]
    assert info["perturbations"]["gaussian_noise"]["parameters"] == [0.04, 0.26]
    assert info["saliency"] == {"method": "Grad-CAM", "layer": sweep.layer, "n_images": 8, "top_fraction": 0.1,
                                "target": "the class predicted on the clean image"}
    other = robustness.sweep_record(sweep, summary, run="r", split="test", checkpoint="best", tolerance=0.05,
                                    run_metrics={"auc": 0.5, "acc": None})
    assert other["clean_matches_run_metrics"] is False
    report = robustness.report_markdown(info, rows)
    assert "# How robust is the model? — r" in report and "additive Gaussian noise (`gaussian_noise`)" in report


# ------------------------------------------------------------------ end to end

@pytest.fixture
def run2d(run_2d, tmp_path):
    return copy_run(run_2d, tmp_path)


@pytest.fixture
def run3d(run_3d, tmp_path):
    return copy_run(run_3d, tmp_path)


FILES = robustness.FILES  # what the folder holds: every name but the examples', one example figure per image


def check_sweep(run, perturbations, severities, n_saliency, n_examples):
    """Every file present and recorded, values in range, and the clean row equal to the run's own test metrics."""
    layout = RunLayout(run)
    folder = layout.robustness_dir
    names = {p.name for p in folder.iterdir()}
    examples = {n for n in names if robustness.EXAMPLES_PATTERN.match(n)}
    assert names - examples == {name for key, name in FILES.items() if key != "examples"}
    assert len(examples) == n_examples
    recorded = {a["path"]: a["created_by"] for a in json.loads(layout.run_json.read_text())["artifacts"]}
    assert all(recorded.get((folder / n).relative_to(run).as_posix()) == "explain.py" for n in names)

    rows = read_csv(folder / FILES["results"])
    assert [(r["perturbation"], int(r["severity"])) for r in rows] == [("clean", 0)] + [
        (p, s) for p in perturbations for s in severities]
    clean = rows[0]
    test_metrics = json.loads(layout.metrics_json.read_text())["test"]
    assert float(clean["auc"]) == test_metrics["auc"] and float(clean["acc"]) == test_metrics["acc"]  # exactly
    assert float(clean["flip_rate"]) == 0 and float(clean["image_rmse"]) == 0
    assert (float(clean["saliency_rmse"]), float(clean["saliency_pearson"]), float(clean["saliency_iou"])) == (0, 1, 1)
    for r in rows:
        assert int(r["n"]) == test_metrics["n"] and int(r["n_saliency"]) == n_saliency
        for key in ("auc", "acc", "balanced_acc", "ece", "flip_rate", "saliency_rmse", "saliency_iou"):
            assert 0 <= float(r[key]) <= 1, (key, r)
        assert -1 <= float(r["saliency_pearson"]) <= 1
        assert float(r["corruption_error"]) == pytest.approx(1 - float(r["balanced_acc"]))
        for key in ("rmse", "pearson", "iou"):
            value = number(r[f"flip_auroc_{key}"])
            assert (0 <= value <= 1) if not math.isnan(value) else r["flip_auroc_note"]
    for p in perturbations:  # the images move further from the clean ones with every severity
        distances = [float(r["image_rmse"]) for r in rows if r["perturbation"] == p]
        assert all(a < b for a, b in zip(distances, distances[1:]))

    per_image = read_csv(folder / FILES["per_image"])
    assert len(per_image) == n_saliency * len(rows)
    for r in rows:  # each row's AUROC is the one of its own explained images
        mine = [p for p in per_image if (p["perturbation"], p["severity"]) == (r["perturbation"], r["severity"])]
        flips = np.array([p["flipped"] == "True" for p in mine])
        assert int(r["n_flipped_saliency"]) == flips.sum()
        assert float(r["saliency_rmse"]) == pytest.approx(np.mean([float(p["rmse"]) for p in mine]))
        if 0 < flips.sum() < len(flips):
            assert float(r["flip_auroc_iou"]) == pytest.approx(
                roc_auc_score(flips, [1 - float(p["iou"]) for p in mine]))

    summary = read_csv(folder / FILES["summary_csv"])
    assert [s["perturbation"] for s in summary] == list(perturbations) + ["overall"]
    clean_error = 1 - float(clean["balanced_acc"])
    for s in summary[:-1]:
        errors = [1 - float(r["balanced_acc"]) for r in rows if r["perturbation"] == s["perturbation"]]
        assert number(s["mce"]) == pytest.approx(np.mean(errors) / clean_error)
    perturbed = [p for p in per_image if p["perturbation"] != "clean"]  # the pooled pairs: clean ones are no pairs
    assert int(summary[-1]["n_saliency_pairs"]) == len(perturbed) == n_saliency * (len(rows) - 1)
    info = json.loads((folder / FILES["summary"]).read_text())
    assert info["clean_matches_run_metrics"] is True
    report = (folder / FILES["report"]).read_text()
    assert "How robust is the model?" in report and "hurts most" in report and "the same as in the run's" in report
    return rows


def test_a_2d_sweep_writes_every_file_and_its_clean_row_is_the_runs_test_metrics(run2d, capsys):
    code = run_explain("robustness", "--run", str(run2d), "--perturbations", "gaussian_noise,contrast_down",
                       "--severities", "5", "2", "--n-saliency", "24", "--n-examples", "2", "--seed", "4")
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"equal to the run's {RunLayout(run2d).metrics_json.name}" in out
    rows = check_sweep(run2d, ["gaussian_noise", "contrast_down"], [2, 5], 24, 2)
    assert float(rows[-1]["image_rmse"]) > 30  # contrast 0.35 flattens a breast ultrasound by ~30 grey levels

    # the same seed gives the same images and predictions, whatever the batch size; vanilla gradients instead of
    # Grad-CAM; figures of images no longer shown are removed (and their records)
    code = run_explain("robustness", "--run", str(run2d), "--perturbations", "contrast_down", "--severities", "5",
                       "--n-saliency", "24", "--n-examples", "1", "--seed", "4", "--batch-size", "100",
                       "--saliency", "gradient")
    assert code == 0, capsys.readouterr().err
    again = check_sweep(run2d, ["contrast_down"], [5], 24, 1)
    same = ("auc", "acc", "balanced_acc", "ece", "flip_rate", "image_rmse")
    assert [again[-1][k] for k in same] == [rows[-1][k] for k in same]
    assert again[-1]["saliency_rmse"] != rows[-1]["saliency_rmse"]
    info = json.loads((RunLayout(run2d).robustness_dir / FILES["summary"]).read_text())
    assert info["saliency"]["method"] == "vanilla gradient" and info["saliency"]["layer"] is None


def test_a_3d_sweep_shows_middle_slices(run3d, capsys):
    code = run_explain("robustness", "--run", str(run3d), "--perturbations", "motion_blur", "--severities", "3",
                       "--n-saliency", "6", "--n-examples", "1")
    assert code == 0, capsys.readouterr().err
    check_sweep(run3d, ["motion_blur"], [3], 6, 1)
    folder = RunLayout(run3d).robustness_dir
    info = json.loads((folder / FILES["summary"]).read_text())
    assert info["saliency"]["layer"] == "backbone.layer1.1"  # 7x7x7 at 28^3
    assert info["perturbations"]["motion_blur"]["parameters"] == [3.5]
    assert "the middle axial, coronal and sagittal slices" in (folder / FILES["report"]).read_text()


@pytest.mark.parametrize("argv, message", [
    (["--perturbations", "fog"], "unknown perturbation 'fog'; for 2D images choose from: gaussian_noise"),
    (["--severities", "6"], "expected a severity from 1 to 5, got '6'"),
    (["--severities", "0"], "expected a severity from 1 to 5, got '0'"),
    (["--saliency", "gradient", "--layer", "backbone.layer3.1"], "--layer applies to --saliency gradcam only"),
    (["--layer", "backbone.layer9"], "is not a layer of this model"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(run2d, capsys, argv, message):
    assert run_explain("robustness", "--run", str(run2d), *argv) == 2
    one_line_error(capsys, message)
    assert not RunLayout(run2d).robustness_dir.exists()


def test_a_2d_only_perturbation_on_a_3d_run_is_refused(run3d, capsys):
    assert run_explain("robustness", "--run", str(run3d), "--perturbations", "jpeg") == 2
    err = capsys.readouterr().err
    assert "'jpeg' applies to 2D images only; for 3D images choose from: gaussian_noise" in err
    assert not RunLayout(run3d).robustness_dir.exists()


def test_the_menu_offers_robustness_among_the_explain_subcommands():
    session = menu.Session(script_dir=ROOT)
    session.current_script = "explain"
    options = [o.value for o in menu.subcommand_choices(session, {}).options]
    assert options == ["gradcam", "saliency", "uncertainty", "robustness", "calibrate"]


# ------------------------------------------------------------------ honest on imbalanced and mask-like data

class MajorityModel(torch.nn.Module):
    """Answers the negative class for every image, as a collapsed classifier does (medscope's model API:
    ``features`` gives the embedding, ``head`` the logits)."""

    def __init__(self, spatial_dims: int):
        super().__init__()
        conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
        pool = torch.nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else torch.nn.AdaptiveAvgPool3d(1)
        self.body = torch.nn.Sequential(conv(1, 2, 3, padding=1), torch.nn.ReLU(), pool, torch.nn.Flatten())
        self.linear = torch.nn.Linear(2, 2)

    def features(self, x):
        return self.body(x)

    def head(self, z):
        return self.linear(z) * 0 + torch.tensor([4.0, -4.0])  # depends on x (for the graph), not on its value

    def forward(self, x):
        return self.head(self.features(x))

    def blocks(self):
        return [("body", self.body)]


def _imbalanced_split(spatial_dims: int, masks: bool, n: int = 60, positives: int = 7, seed: int = 0) -> data.Split:
    """11% positive (as the held-out 3D set); mask-like: every voxel 0 or 255."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1) + (12,) * spatial_dims
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    if masks:
        images = (images > 200).to(torch.uint8) * 255
    labels = torch.zeros((n, 1), dtype=torch.int64)
    labels[:positives] = 1
    return data.Split(images, labels)


@pytest.mark.parametrize("spatial_dims,masks", [(2, False), (3, False), (3, True)])
def test_a_model_answering_the_majority_class_is_reported_collapsed_not_robust(spatial_dims, masks, monkeypatch):
    split = _imbalanced_split(spatial_dims, masks)
    model = MajorityModel(spatial_dims).eval()
    blur = "gaussian_blur" if "gaussian_blur" in pt.PERTURBATIONS else next(iter(pt.PERTURBATIONS))
    chosen = pt.select(["gaussian_noise", blur], spatial_dims)
    sweep = robustness.run_sweep(model, split, BINARY, ["negative", "positive"], "cpu", chosen, [1, 3], seed=0,
                                 method="gradient", n_saliency=10, n_examples=0, n_resamples=200)
    for row in sweep.rows:
        assert row["balanced_acc"] == 0.5 and row["acc"] == pytest.approx(53 / 60) == row["majority_rate"]
        assert row["collapsed"] is True and row["top_class_share"] == 1.0
    rows = [dict(r) for r in sweep.rows]
    robustness.add_relative_errors(rows)
    summary = robustness.summarize(rows, sweep.per_image, tolerance=0.05, n_resamples=200)
    assert all(s["collapsed_severities"] for s in summary[:-1])
    info = robustness.sweep_record(sweep, summary, run="r", split="test", checkpoint="best", tolerance=0.05,
                                   run_metrics=None)
    report = robustness.report_markdown(info, rows)
    assert "**Collapsed to one class**" in report and "it is not robustness" in report
    assert "balanced accuracy 0.500" in report and "would score ACC 0.883" in report
    # the heatmap is coloured by balanced accuracy on a scale that starts at chance: collapse is its darkest colour
    drawn = {}
    monkeypatch.setattr(robustness_plots_module().atomic, "save_figure",
                        lambda path, fig, **kw: drawn.setdefault("fig", fig) and path)
    robustness_plots_module().balanced_accuracy_heatmap("unused.png", rows, "t", info["chance_balanced_acc"])
    image = drawn["fig"].axes[0].images[0]
    assert image.get_clim() == (0.5, 1) and np.all(image.get_array() == 0.5)
    assert "†" in "".join(t.get_text() for t in drawn["fig"].axes[0].texts)


def robustness_plots_module():
    from medscope.explain import robustness_plots

    return robustness_plots


def test_each_condition_has_the_bootstrap_intervals_of_its_metrics(small_sweep):
    from medscope.stats.bootstrap import metric_intervals

    model, info, split, sweep = small_sweep
    clean = sweep.rows[0]
    probs = sweep_probabilities(model, split, info)
    ref = metric_intervals(info.task, split.labels.numpy(), probs, n_resamples=2000, seed=3)
    for key in robustness.INTERVAL_METRICS:
        assert (clean[f"{key}_low"], clean[f"{key}_high"]) == (ref[key]["low"], ref[key]["high"])
        assert clean[f"{key}_low"] <= clean[key] <= clean[f"{key}_high"]


def sweep_probabilities(model, split, info) -> np.ndarray:
    from medscope.activations import collect_outputs

    return collect_outputs(model, split, info.task, torch.device("cpu"), activations=False)["probabilities"].numpy()


def test_flip_aurocs_are_given_per_perturbation_with_intervals_before_any_pooled_one(small_sweep):
    _, _, _, sweep = small_sweep
    rows = [dict(r) for r in sweep.rows]
    robustness.add_relative_errors(rows)
    summary = robustness.summarize(rows, sweep.per_image, tolerance=0.05, n_resamples=500)
    noise = summary[0]
    images = [p for p in sweep.per_image if p["perturbation"] == "gaussian_noise"]
    flips = np.array([p["flipped"] for p in images])
    if flips.any() and not flips.all():
        assert noise["flip_auroc_rmse"] == roc_auc_score(flips, [p["rmse"] for p in images])
        assert noise["flip_auroc_rmse_low"] <= noise["flip_auroc_rmse"] <= noise["flip_auroc_rmse_high"]
    else:
        assert math.isnan(noise["flip_auroc_rmse"]) and math.isnan(noise["flip_auroc_rmse_low"])
    assert robustness._auroc_words(0.62, 0.45) == "no better than chance at 95% confidence"
    assert robustness._auroc_words(0.62, 0.55) == "a weak warning sign"
