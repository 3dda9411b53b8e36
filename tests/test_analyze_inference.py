"""analyze_inference.py end to end on real short runs (breastmnist 2D, adrenalmnist3d 3D)."""
from __future__ import annotations

import csv
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analyze_inference
from medscope.analysis import inference
from medscope.analysis.inference import summary_columns
from medscope.analysis.inference_plots import FIGURE_SIZES, figure_pixels
from medscope.app import cli
from medscope.runs import RunLayout
from tests.conftest import ROOT, train_run, write_fake_medmnist

BLOCKS_2D = ["backbone.relu"] + [f"backbone.layer{i}.{j}" for i in range(1, 5) for j in range(2)]
BLOCKS_3D = ["backbone.stem"] + [f"backbone.layer{i}.{j}" for i in range(1, 5) for j in range(2)]
CHANNELS = [64, 64, 64, 128, 128, 256, 256, 512, 512]
TABLES = {
    inference.SUMMARY_CSV: None,  # columns depend on the number of classes
    inference.CHANNELS_CSV: ["layer", "channel", "class", "value"],
    inference.RELIABILITY_CSV: ["label", "bin", "lower", "upper", "count", "confidence", "accuracy", "gap"],
    inference.EMBEDDING_CSV: ["row", "index", "label", "prediction", "correct", "pca_1", "pca_2", "tsne_1", "tsne_2"],
    inference.OPERATING_POINTS_CSV: ["label", "positives", "negatives", "prevalence", "auc", "average_precision",
                                     "tpr", "fpr", "precision", "recall"],
}
LAST_PT, BEST_PT, OUTPUTS_PT = (getattr(RunLayout(Path()), name).name
                                for name in ("last_pt", "best_pt", "inference_outputs"))


def light_copy(run: Path, dest_root: Path, skip=(LAST_PT,)) -> Path:
    """A private copy of a run folder without the files analysis never reads (last.pt is large)."""
    dest = dest_root / "results" / run.name
    shutil.copytree(run, dest, ignore=lambda folder, names: [n for n in names if n in skip])
    return dest


def run_json(run: Path) -> dict:
    return json.loads(RunLayout(run).run_json.read_text())


def calibration_json(folder: Path) -> dict:
    return json.loads((folder / inference.CALIBRATION_JSON).read_text())


def analyze(run: Path, *args: str, data_dir: Path) -> int:
    return cli.run(analyze_inference.main, ["--run", str(run), "--data-dir", str(data_dir), *args])


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def analyzed_2d(run_2d, tmp_path_factory, medmnist_dir):
    run = light_copy(run_2d, tmp_path_factory.mktemp("inference-2d"))
    assert analyze(run, "--seed", "0", data_dir=medmnist_dir) == 0
    return run


@pytest.fixture(scope="module")
def analyzed_3d(run_3d, tmp_path_factory, medmnist_dir):
    run = light_copy(run_3d, tmp_path_factory.mktemp("inference-3d"))
    assert analyze(run, data_dir=medmnist_dir) == 0
    return run


def check_folder(run: Path, folder: Path, blocks: list[str], n: int, class_names: list[str]):
    """Every file, with the right columns and plausible values; returns the parsed tables."""
    for name, columns in TABLES.items():
        header, _ = read_csv(folder / name)
        assert header == (columns or summary_columns(len(class_names))), name
    errors = min(inference.N_ERRORS, sum(r["correct"] == "0" for r in read_csv(folder / inference.EMBEDDING_CSV)[1]))
    for name in FIGURE_SIZES:
        path = folder / name
        assert path.stat().st_size > 10_000, f"{name} looks empty"
        assert png_size(path) == figure_pixels(name, n_errors=errors), name  # confident errors: rows that hold one

    _, summary = read_csv(folder / inference.SUMMARY_CSV)
    assert [r["layer"] for r in summary] == blocks  # one row per block, network order
    assert [int(r["position"]) for r in summary] == list(range(len(blocks)))
    assert [int(r["channels"]) for r in summary] == CHANNELS
    for row in summary:
        assert int(row["samples"]) == n
        assert float(row["mean"]) >= 0 and float(row["std"]) >= 0  # ReLU outputs
        assert 0 <= float(row["min_channel_mean"]) <= float(row["mean"]) <= float(row["max_channel_mean"])
        assert 0 <= float(row["q10"]) <= float(row["median"]) <= float(row["q90"])  # the whiskers never go below 0
        assert 0 <= float(row["dead_fraction"]) <= 1
        assert int(row["dead_channels"]) == round(float(row["dead_fraction"]) * int(row["channels"]))
        for k in range(len(class_names)):
            assert float(row[f"mean_class_{k}"]) >= 0

    _, channels = read_csv(folder / inference.CHANNELS_CSV)
    assert len(channels) == sum(CHANNELS) * (1 + len(class_names))
    assert {r["class"] for r in channels} == {"all", *class_names}
    assert all(float(r["value"]) >= 0 for r in channels)

    calib = calibration_json(folder)
    assert 0 <= calib["ece"] <= 1 and 0 <= calib["brier"] <= 1 and 0 <= calib["accuracy"] <= 1
    assert calib["n"] == n and calib["n_bins"] == 15
    _, bins = read_csv(folder / inference.RELIABILITY_CSV)
    assert len(bins) == 15 and sum(int(b["count"]) for b in bins) == n
    for b in bins:
        if int(b["count"]):
            # binary: the confidence of the predicted class is at least 0.5
            assert float(b["lower"]) <= float(b["confidence"]) <= float(b["upper"]) and float(b["confidence"]) >= 0.5
            assert 0 <= float(b["accuracy"]) <= 1

    _, points = read_csv(folder / inference.EMBEDDING_CSV)
    assert len(points) == n and all(p["tsne_1"] != "" for p in points)  # n < 2000: t-SNE on every point
    wrong = sum(p["correct"] == "0" for p in points)
    assert wrong / n == pytest.approx(1 - calib["accuracy"])

    _, (operating,) = read_csv(folder / inference.OPERATING_POINTS_CSV)  # binary: the positive class against the rest
    assert operating["label"] == class_names[1] and int(operating["positives"]) + int(operating["negatives"]) == n
    # with the test split's AUC: what train.py reported (medmnist.Evaluator's number)
    assert float(operating["auc"]) == pytest.approx(run_json(run)["metrics"]["test_auc"], abs=1e-6)

    recorded = {a["path"] for a in run_json(run)["artifacts"] if a["created_by"] == "analyze_inference.py"}
    expected = {str((folder / name).relative_to(run)) for name in [*TABLES, *FIGURE_SIZES, inference.CALIBRATION_JSON]}
    assert expected <= recorded
    return summary, channels, calib


def test_2d_run_from_stored_outputs(analyzed_2d):
    run = analyzed_2d
    info = run_json(run)
    names = info["dataset"]["class_names"]
    summary, channels, calib = check_folder(run, RunLayout(run).inference_dir, BLOCKS_2D, 156, names)
    # what train.py stored agrees: accuracy, and its inference_mean.json per-layer means
    assert calib["accuracy"] == pytest.approx(info["metrics"]["test_acc"], abs=1e-12)
    means = json.loads(RunLayout(run).inference_mean.read_text())["layers"]
    for row in summary:
        assert float(row["mean"]) == pytest.approx(means[row["layer"]]["mean"], rel=1e-5)
    all_rows = [r for r in channels if r["layer"] == "backbone.layer4.1" and r["class"] == "all"]
    np.testing.assert_allclose([float(r["value"]) for r in all_rows], means["backbone.layer4.1"]["channel_means"],
                               rtol=1e-5, atol=1e-7)


def test_3d_run_from_stored_outputs(analyzed_3d):
    run = analyzed_3d
    info = run_json(run)
    _, _, calib = check_folder(run, RunLayout(run).inference_dir, BLOCKS_3D, 298, info["dataset"]["class_names"])
    assert calib["accuracy"] == pytest.approx(info["metrics"]["test_acc"], abs=1e-12)


def test_prints_every_file_and_a_short_table(run_2d, tmp_path, medmnist_dir, capsys):
    run = light_copy(run_2d, tmp_path)
    assert analyze(run, "--bins", "10", "--tsne-points", "60", "--errors", "4", data_dir=medmnist_dir) == 0
    out = capsys.readouterr().out
    folder = RunLayout(run).inference_dir
    for name in [*TABLES, *FIGURE_SIZES]:
        assert str(folder / name) in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "/" not in line}
    assert {"accuracy", "ECE", "Brier", "most", "least"} <= set(lines)
    assert "10 bins" in lines["ECE"] and len(lines["most"].split(",")) == 3 and len(lines["least"].split(",")) == 3
    assert calibration_json(folder)["n_bins"] == 10
    _, points = read_csv(folder / inference.EMBEDDING_CSV)
    assert sum(p["tsne_1"] != "" for p in points) == 60  # capped, seeded subsample


def test_split_val_is_recomputed_with_the_best_checkpoint(run_2d, tmp_path, medmnist_dir, capsys):
    run = light_copy(run_2d, tmp_path)
    assert analyze(run, "--split", "val", "--device", "cpu", "--tsne-points", "40", data_dir=medmnist_dir) == 0
    assert "computed val outputs" in capsys.readouterr().out
    layout = RunLayout(run)
    calib = calibration_json(inference.output_dir(layout, "val"))
    assert calib["split"] == "val" and calib["n"] == 78
    assert calib["accuracy"] == pytest.approx(run_json(run)["metrics"]["val_acc"], abs=1e-12)
    _, summary = read_csv(inference.output_dir(layout, "val") / inference.SUMMARY_CSV)
    assert [r["layer"] for r in summary] == BLOCKS_2D
    assert not layout.inference_summary_csv.exists()  # the test analysis is elsewhere


def test_missing_outputs_are_recomputed_from_best_pt(run_2d, tmp_path, medmnist_dir):
    run = light_copy(run_2d, tmp_path, skip=(LAST_PT, OUTPUTS_PT))
    assert analyze(run, "--device", "cpu", "--tsne-points", "40", data_dir=medmnist_dir) == 0
    layout, info = RunLayout(run), run_json(run)
    calib = calibration_json(layout.inference_dir)
    assert calib["split"] == "test" and calib["accuracy"] == pytest.approx(info["metrics"]["test_acc"], abs=1e-12)
    means = json.loads(layout.inference_mean.read_text())["layers"]
    _, summary = read_csv(layout.inference_summary_csv)
    # the recomputation runs in float32; train.py stored means under the autocast it trained with, and a
    # bfloat16 forward pass (8 significant bits) moves a mean by up to a few parts in a thousand
    rel = 1e-4 if info["environment"]["amp_dtype"] == "float32" else 1e-2
    for row in summary:
        assert float(row["mean"]) == pytest.approx(means[row["layer"]]["mean"], rel=rel)


def test_missing_outputs_and_weights_is_one_line_and_exit_2(run_2d, tmp_path, medmnist_dir, capsys):
    run = light_copy(run_2d, tmp_path, skip=(LAST_PT, BEST_PT, OUTPUTS_PT))
    assert analyze(run, data_dir=medmnist_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert OUTPUTS_PT in err and BEST_PT in err and "train.py --resume" in err
    assert not RunLayout(run).inference_dir.exists()


def test_the_script_exits_2_with_one_line_on_bad_arguments(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "analyze_inference.py"), "--bins", "0"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "--bins" in result.stderr


@pytest.mark.parametrize("case, args, message", [
    ("damaged outputs", [], "is not readable"),
    ("no weights for --split", ["--split", "val"], "no best.pt"),
    ("bad bins", ["--bins", "0"], "--bins"),
    ("too many errors", ["--errors", "99"], "at most 24"),
    ("unknown run", ["--run", "no-such-run"], "no run named"),
])
def test_bad_input_is_one_line_and_exit_2(case, args, message, run_2d, tmp_path, medmnist_dir, capsys):
    run = light_copy(run_2d, tmp_path, skip=(LAST_PT, BEST_PT))
    if case == "damaged outputs":
        RunLayout(run).inference_outputs.write_bytes(b"not a torch file")
    argv = ["--results-dir", str(run.parent), "--data-dir", str(medmnist_dir)]
    argv += args if case == "unknown run" else ["--run", str(run), *args]
    assert cli.run(analyze_inference.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not RunLayout(run).inference_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag, n_labels, channels, multilabel", [
    ("chestmnist", 14, 1, True),     # multi-label: per-label reliability
    ("bloodmnist", 8, 3, False),     # multi-class, RGB
])
def test_other_task_types(flag, n_labels, channels, multilabel, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_fake_medmnist(data_dir / f"{flag}.npz", n_channels=channels, size=28, n_labels=n_labels,
                        multilabel=multilabel, n_per_split=(64, 24, 40))
    run = train_run(tmp_path, data_dir, "--dataset", flag, "--model", "cnn", "--epochs", "1", "--skip-md5",
                    "--batch-size", "32")
    assert analyze(run, "--tsne-points", "30", data_dir=data_dir) == 0
    folder = RunLayout(run).inference_dir
    info = run_json(run)
    names = info["dataset"]["class_names"]
    _, summary = read_csv(folder / inference.SUMMARY_CSV)
    assert [r["layer"] for r in summary] == [f"backbone.stages.{i}" for i in range(3)]
    calib = calibration_json(folder)
    assert calib["accuracy"] == pytest.approx(info["metrics"]["test_acc"], abs=1e-12)
    assert 0 <= calib["ece"] <= 1 and 0 <= calib["brier"] <= (1 if multilabel else 2)
    _, bins = read_csv(folder / inference.RELIABILITY_CSV)
    if multilabel:
        assert list(calib["per_label"]) == names and len(bins) == 15 * n_labels
        assert calib["ece"] == pytest.approx(np.mean([v["ece"] for v in calib["per_label"].values()]))
        assert all(sum(int(b["count"]) for b in bins if b["label"] == name) == 40 for name in names)
    else:
        assert list(calib["per_label"]) == ["all"] and sum(int(b["count"]) for b in bins) == 40
    for name in FIGURE_SIZES:
        assert png_size(folder / name)[0] == figure_pixels(name)[0], name
