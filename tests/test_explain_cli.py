"""explain.py end to end on real run folders: files written, recorded in run.json, bad input refused."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import explain
from medscope.app import cli
from medscope.explain import maps, uncertainty
from medscope.runs import RunLayout
from tests.conftest import copy_run, one_line_error


def run_explain(*argv) -> int:
    return cli.run(explain.main, list(argv))


def read_json(path):
    return json.loads(path.read_text())


def artifacts(run):
    return {a["path"]: a["created_by"] for a in read_json(RunLayout(run).run_json)["artifacts"]}


def assert_recorded(run, folder):
    """Every file in ``folder`` (an analysis folder of ``run``) is listed in run.json as written by explain.py."""
    recorded = artifacts(run)
    files = sorted(p.relative_to(run).as_posix() for p in folder.iterdir())
    assert files and all(recorded.get(f) == "explain.py" for f in files), (files, recorded)
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())


@pytest.fixture
def run2d(run_2d, tmp_path):
    return copy_run(run_2d, tmp_path)


@pytest.fixture
def run3d(run_3d, tmp_path):
    return copy_run(run_3d, tmp_path)


# ------------------------------------------------------------------ the command line

def test_help_lists_every_subcommand(capsys):
    assert run_explain("--help") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("gradcam", "saliency", "uncertainty", "robustness", "calibrate"))


def test_no_command_is_a_usage_error(capsys):
    assert run_explain() == 2
    assert "choose a command" in capsys.readouterr().err


def test_a_new_subcommand_is_one_registry_entry():
    def add_arguments(parser):
        parser.add_argument("--severity", type=int, default=1)

    registry = dict(explain.SUBCOMMANDS, fog=explain.Subcommand("fog checks", add_arguments,
                                                                lambda args: 40 + args.severity))
    args = explain.get_args_parser(registry).parse_args(["fog", "--severity", "2"])
    assert args.command == "fog" and args.handler(args) == 42
    assert "fog checks" in explain.get_args_parser(registry).format_help()


# ------------------------------------------------------------------ gradcam

def test_gradcam_2d_writes_maps_metrics_and_figures(run2d, capsys):
    # a first call on 9 images (two pages, no metrics) whose pages must not outlive the second
    assert run_explain("gradcam", "--run", str(run2d), "--n", "9", "--steps", "0") == 0
    folder = RunLayout(run2d).gradcam_dir

    def page(k):
        return folder / maps.file_name("page", "gradcam", page=k)

    assert page(2).is_file() and not (folder / maps.file_name("metrics", "gradcam")).exists()
    code = run_explain("gradcam", "--run", str(run2d), "--n", "5", "--steps", "2", "--batch-size", "3")
    assert code == 0, capsys.readouterr().err
    with np.load(folder / maps.file_name("maps", "gradcam")) as npz:
        assert npz["maps"].shape == (5, 28, 28) and np.isfinite(npz["maps"]).all()
        assert npz["layer_maps"].shape == (5, 7, 7) and str(npz["layer"]) == "backbone.layer3.1"
        assert npz["ids"].shape == (5,) and len(set(npz["ids"].tolist())) == 5
        np.testing.assert_allclose(npz["probabilities"].sum(axis=1), 1, atol=1e-5)
        assert np.array_equal(npz["targets"], npz["predictions"])  # default target: the prediction
        np.testing.assert_allclose(npz["target_probability"],
                                   npz["probabilities"][np.arange(5), npz["targets"]])
    with open(folder / maps.file_name("metrics", "gradcam")) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["row"] for r in rows] == ["image"] * 5 + ["mean", "std"]
    aucs = np.array([float(r["deletion_auc"]) for r in rows[:5]])
    assert ((0 <= aucs) & (aucs <= 1)).all()
    assert float(rows[5]["random_deletion_auc"]) == pytest.approx(
        np.mean([float(r["random_deletion_auc"]) for r in rows[:5]]))
    assert page(1).is_file() and not page(2).exists()
    assert page(2).relative_to(run2d).as_posix() not in artifacts(run2d)
    summary = read_json(folder / maps.file_name("summary", "gradcam"))
    assert summary["layer"] == "backbone.layer3.1" and summary["n_images"] == 5
    assert_recorded(run2d, folder)


def test_gradcam_plus_plus_with_a_chosen_layer_and_class(run2d, capsys):
    code = run_explain("gradcam", "--run", str(run2d), "--n", "2", "--steps", "0", "--method", "gradcam++",
                       "--layer", "backbone.layer4.1", "--target", "malignant")
    assert code == 0, capsys.readouterr().err
    with np.load(RunLayout(run2d).gradcam_dir / maps.file_name("maps", "gradcampp")) as npz:
        assert npz["layer_maps"].shape == (2, 4, 4) and npz["targets"].tolist() == [0, 0]
        assert str(npz["method"]) == "Grad-CAM++"


@pytest.mark.slow
def test_gradcam_and_saliency_3d_write_volume_figures(run3d, capsys):
    code = run_explain("gradcam", "--run", str(run3d), "--n", "2", "--steps", "1", "--target", "true")
    assert code == 0, capsys.readouterr().err
    layout = RunLayout(run3d)
    folder = layout.gradcam_dir
    with np.load(folder / maps.file_name("maps", "gradcam")) as npz:
        assert npz["maps"].shape == (2, 28, 28, 28) and np.isfinite(npz["maps"]).all()
        assert npz["targets"].tolist() == npz["labels"][:, 0].tolist()
        ids = npz["ids"].tolist()
    assert sorted(p.name for p in folder.glob("*.png") if "volume" in p.name) == [
        maps.file_name("volume", "gradcam", id=i) for i in ids]
    assert_recorded(run3d, folder)

    code = run_explain("saliency", "--run", str(run3d), "--n", "1", "--steps", "0", "--method", "vanilla")
    assert code == 0, capsys.readouterr().err
    folder = layout.saliency_dir
    with np.load(folder / maps.file_name("maps", "saliency_vanilla")) as npz:
        assert npz["maps"].shape == (1, 28, 28, 28) and np.isfinite(npz["maps"]).all()
        (image_id,) = npz["ids"].tolist()
    assert (folder / maps.file_name("volume", "saliency_vanilla", id=image_id)).is_file()
    assert_recorded(run3d, folder)


@pytest.mark.parametrize("argv, message", [
    (["--layer", "backbone.layer9"], "valid names: backbone.relu, backbone.layer1.0"),
    (["--target", "tumour"], "expected pred, true, or a class"),
    (["--n", "0"], "positive integer"),
    (["--n", "3", "--all"], "not allowed with argument"),
])
def test_bad_gradcam_input_is_one_line_and_exit_2_with_nothing_written(run2d, capsys, argv, message):
    assert run_explain("gradcam", "--run", str(run2d), *argv) == 2
    one_line_error(capsys, message)
    assert not RunLayout(run2d).gradcam_dir.exists()


def test_an_unknown_run_is_exit_2(tmp_path, capsys):
    assert run_explain("uncertainty", "--results-dir", str(tmp_path), "--run", "0042") == 2
    assert "no run" in capsys.readouterr().err


# ------------------------------------------------------------------ saliency

def test_saliency_2d_writes_both_methods(run2d, capsys):
    code = run_explain("saliency", "--run", str(run2d), "--n", "2", "--steps", "0", "--samples", "3")
    assert code == 0, capsys.readouterr().err
    folder = RunLayout(run2d).saliency_dir
    for stem in ("saliency_vanilla", "saliency_smoothgrad"):
        with np.load(folder / maps.file_name("maps", stem)) as npz:
            assert npz["maps"].shape == (2, 28, 28) and "layer_maps" not in npz.files
        assert (folder / maps.file_name("page", stem, page=1)).is_file()
    assert read_json(folder / maps.file_name("summary", "saliency_smoothgrad"))["samples"] == 3
    assert_recorded(run2d, folder)


# ------------------------------------------------------------------ uncertainty

FILES = uncertainty.FILES


def test_uncertainty_2d_files_agree_with_each_other(run2d, capsys):
    code = run_explain("uncertainty", "--run", str(run2d), "--passes", "5", "--threshold", "0.5")
    assert code == 0, capsys.readouterr().err
    layout = RunLayout(run2d)
    folder = layout.uncertainty_dir
    assert {p.name for p in folder.iterdir()} == set(FILES.values())
    summary = read_json(folder / FILES["summary"])
    with open(folder / FILES["per_image"]) as fh:
        rows = list(csv.DictReader(fh))
    cases = read_json(folder / FILES["cases"])
    n_test = read_json(layout.run_json)["dataset"]["n_samples"]["test"]
    assert summary["n"] == len(rows) == n_test and summary["path"] == "cached" and summary["passes"] == 5
    correct = np.array([r["correct"] == "True" for r in rows])
    assert summary["accuracy_all"] == pytest.approx(correct.mean())
    uncertain = np.array([r["uncertain"] == "True" for r in rows])
    assert cases["n_flagged"] == len(cases["cases"]) == uncertain.sum() == summary["n_uncertain"]
    confidence = [c["confidence"] for c in cases["cases"]]
    assert confidence == sorted(confidence) and all(c < 0.5 for c in confidence)
    assert summary["dropout"] == {"rate": 0.2, "source": "trained", "text": "dropout p=0.2 as trained"}
    # the MC accuracy uses the same predictions as the saved inference outputs when dropout is averaged out
    outputs = torch.load(layout.inference_outputs, weights_only=True)
    assert summary["accuracy_deterministic"] == pytest.approx(
        float(((outputs["probabilities"][:, 1] > 0.5).long() == outputs["labels"][:, 0]).float().mean()))
    assert "How sure is the model" in (folder / FILES["report"]).read_text()
    assert_recorded(run2d, folder)


def without_dropout(run):
    """The run's checkpoints rewritten as if trained with --dropout 0 (Dropout has no weights)."""
    layout = RunLayout(run)
    for path in (layout.best_pt, layout.last_pt):
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["spec"]["dropout"] = 0.0
        torch.save(checkpoint, path)
    return run


def test_a_model_without_dropout_needs_an_explicit_test_time_rate(run2d, capsys):
    without_dropout(run2d)
    assert run_explain("uncertainty", "--run", str(run2d), "--passes", "3", "--split", "val") == 2
    err = capsys.readouterr().err
    assert "trained without dropout" in err and "--dropout-rate" in err and err.count("\n") == 1
    folder = RunLayout(run2d).uncertainty_dir
    assert not folder.exists()

    assert run_explain("uncertainty", "--run", str(run2d), "--passes", "3", "--split", "val",
                       "--dropout-rate", "0.3") == 0
    summary = read_json(folder / FILES["summary"])
    assert summary["dropout"]["source"] == "test-time" and summary["dropout"]["rate"] == 0.3
    assert summary["dropout_layers"] == {"head.0": 0.3}
    report = (folder / FILES["report"]).read_text()
    assert "enabled at test time" in report
    assert read_json(folder / FILES["cases"])["dropout"]["source"] == "test-time"


def test_uncertainty_chooses_its_threshold_on_the_validation_split_by_default(run2d, capsys):
    from medscope import data
    from medscope.app.run_context import open_run

    code = run_explain("uncertainty", "--run", str(run2d), "--passes", "5", "--bootstrap", "200")
    assert code == 0, capsys.readouterr().err
    summary = read_json(RunLayout(run2d).uncertainty_dir / FILES["summary"])
    choice = summary["threshold_choice"]
    ctx = open_run(run2d.parent, str(run2d), split="val", device="cpu")
    val = uncertainty.analyze_uncertainty(ctx.model, ctx.split, ctx.task, "cpu", class_names=ctx.info.class_names,
                                          passes=5, seed=0, n_resamples=0)
    expected = uncertainty.choose_threshold(val.stats["confidence"], val.correct)
    assert choice["split"] == "val" and choice["n"] == len(ctx.split) == data.dataset_info("breastmnist").n_samples["val"]
    assert summary["threshold"] == expected["threshold"] == choice["threshold"]
    flagged = sum(row["n_flagged"] for row in summary["per_class"])
    assert flagged == summary["n_uncertain"] and summary["flagged_fraction"] == pytest.approx(flagged / summary["n"])
    for name, ci in summary["error_auroc_interval"].items():
        value = summary["error_auroc"][name]
        assert value != value or ci["low"] <= value <= ci["high"]
    out = capsys.readouterr().out
    assert "(chosen on val)" in out and "flagged (" in out


def test_gradcam_shows_the_ids_asked_for_and_records_how_images_were_picked(run2d, capsys):
    folder = RunLayout(run2d).gradcam_dir
    assert run_explain("gradcam", "--run", str(run2d), "--ids", "7", "3", "150", "--steps", "0") == 0
    with np.load(folder / maps.file_name("maps", "gradcam")) as npz:
        assert npz["ids"].tolist() == [3, 7, 150]
    summary = read_json(folder / maps.file_name("summary", "gradcam"))
    assert summary["picked"] == "given (--ids)"
    assert summary["n_empty_maps"] == len(summary["empty_map_ids"])
    assert run_explain("gradcam", "--run", str(run2d), "--n", "4", "--steps", "0") == 0
    summary = read_json(folder / maps.file_name("summary", "gradcam"))
    assert summary["picked"].startswith("stratified: every true class present")
    with np.load(folder / maps.file_name("maps", "gradcam")) as npz:
        assert len(set(npz["labels"].reshape(-1).tolist())) == 2  # both classes among 4 images
    assert run_explain("gradcam", "--run", str(run2d), "--ids", "999") == 2
    assert "the test split has ids 0 to 155" in capsys.readouterr().err
