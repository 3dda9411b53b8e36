"""quantize.py end to end on real trained runs (2D breastmnist and 3D adrenalmnist3d ResNet-18).

Each run is exported once per module (small --runs and --calib keep it quick);
the tests then check the files against independent recomputations.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.metrics import roc_auc_score

import quantize
from medscope import checkpoints, data, runs
from medscope.app import cli
from medscope.deploy import export
from medscope.runs import RunLayout
from tests.conftest import copy_run

QUICK = ["--runs", "5", "--warmup", "1", "--throughput-runs", "1", "--threads", "1"]


def _quantize(run: Path, medmnist_dir: Path, *extra: str) -> dict:
    code = quantize.main(["--run", str(run), "--data-dir", str(medmnist_dir), *QUICK, *extra])
    assert code == 0
    return json.loads((RunLayout(run).export_dir / export.REPORT_JSON).read_text())


@pytest.fixture(scope="module")
def exported_2d(run_2d, medmnist_dir, tmp_path_factory):
    """The 2D run exported with the full test split (the default path), 16 calibration images."""
    run = copy_run(run_2d, tmp_path_factory.mktemp("quantize-2d"))
    return run, _quantize(run, medmnist_dir, "--calib", "16", "--batch-size", "8")


@pytest.fixture(scope="module")
def exported_3d(run_3d, medmnist_dir, tmp_path_factory):
    """The 3D run, evaluated on 16 test volumes to keep the test fast on a CPU."""
    run = copy_run(run_3d, tmp_path_factory.mktemp("quantize-3d"))
    return run, _quantize(run, medmnist_dir, "--calib", "8", "--batch-size", "2", "--test-subset", "16",
                          "--runs", "2")


def _test_images(run: Path, report: dict, medmnist_dir: Path) -> data.Split:
    ds = report["dataset"]
    split = data.load_split(data.dataset_info(ds["flag"], ds["size"]), medmnist_dir, "test")
    if report["test"]["indices"] is None:
        return split
    index = torch.tensor(report["test"]["indices"])
    return data.Split(split.images[index], split.labels[index])


def _onnx_logits(path: Path, images: torch.Tensor, report: dict) -> np.ndarray:
    session = export.make_session(path, threads=report["latency"]["threads"])
    return export.run_session(session, images, report["test"]["eval_batch_size"])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["exported_2d", "exported_3d"])
def test_fp32_onnx_equals_pytorch_within_1e4(which, request, medmnist_dir):
    run, report = request.getfixturevalue(which)
    images = _test_images(run, report, medmnist_dir).images[:6]
    model, _ = checkpoints.load_run_model(runs.Run(run), "best", "cpu")
    with torch.no_grad():
        expected = model(data.normalize(images)).numpy()
    session = ort.InferenceSession(str(RunLayout(run).export_dir / export.FP32_FILE), providers=["CPUExecutionProvider"])
    for batch in (images[:1], images):  # the batch axis is dynamic
        got = session.run(["logits"], {"image": batch.numpy().astype(np.float32)})[0]
        assert np.abs(got - expected[:len(batch)]).max() <= 1e-4
    assert report["exporter"] == "dynamo"
    assert report["onnx"]["checker"] == "passed" and report["onnx"]["input"]["shape"][0] == "batch"
    ver = report["verification"]
    assert ver["passed"] and ver["max_abs_diff_logits"] <= 1e-4 and ver["argmax_agreement"] == 1.0
    assert ver["n_images"] == report["test"]["n_images"]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["exported_2d", "exported_3d"])
def test_int8_models_load_run_and_are_recorded(which, request):
    run, report = request.getfixturevalue(which)
    shape = [2, report["dataset"]["n_channels"]] + [report["dataset"]["size"]] * report["dataset"]["spatial_dims"]
    x = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.float32)
    for name in ("onnx_int8_static", "onnx_int8_dynamic"):
        session = ort.InferenceSession(str(RunLayout(run).export_dir / export.MODEL_FILES[name]),
                                       providers=["CPUExecutionProvider"])
        out = session.run(["logits"], {"image": x})[0]
        assert out.shape == (2, report["model"]["num_classes"]) and np.isfinite(out).all()
        m = report["models"][name]
        assert np.isfinite(m["auc"]) and 0 <= m["acc"] <= 1 and 0 <= m["agreement"] <= 1
        assert m["size_ratio"] > 3.5  # int8 weights: a quarter of the float32 bytes, plus a little graph
    ops = report["quantization"]["ops"]
    assert ops["onnx_int8_static"]["runtime"]["int8"]["QLinearConv"] == 20  # every ResNet-18 convolution
    assert ops["onnx_int8_dynamic"]["runtime"]["int8"]["ConvInteger"] == 20
    assert ops["onnx_fp32"]["runtime"]["int8"] == {}
    static = report["quantization"]["static"]
    assert static["format"] == "QDQ" and static["per_channel"] and static["calibration_images"] in (8, 16)


@pytest.mark.slow
def test_report_numbers_equal_a_recomputation(exported_2d, medmnist_dir):
    run, report = exported_2d
    test = _test_images(run, report, medmnist_dir)
    assert report["test"]["full_split"] and report["test"]["n_images"] == len(test) == 156
    y = test.labels.numpy()[:, 0]
    reference_pred = None
    fp32_size = (RunLayout(run).export_dir / export.FP32_FILE).stat().st_size
    for name in ("onnx_fp32", "onnx_int8_static", "onnx_int8_dynamic"):
        logits = _onnx_logits(RunLayout(run).export_dir / export.MODEL_FILES[name], test.images, report)
        p1 = torch.softmax(torch.from_numpy(logits).double(), 1)[:, 1].numpy()
        pred = (p1 > 0.5).astype(int)
        reference_pred = pred if reference_pred is None else reference_pred
        m = report["models"][name]
        assert m["auc"] == pytest.approx(roc_auc_score(y, p1), abs=1e-9)  # sklearn, not medscope.metrics
        assert m["acc"] == pytest.approx((pred == y).mean(), abs=1e-12)
        size = (RunLayout(run).export_dir / m["file"]).stat().st_size
        assert m["size_bytes"] == size and m["size_ratio"] == pytest.approx(fp32_size / size)
        if name == "onnx_fp32":  # FP32 ONNX agrees with PyTorch on every test image
            assert m["agreement"] == 1.0
        else:
            assert m["agreement"] == pytest.approx((pred == reference_pred).mean(), abs=1e-12)
    torch_fp32 = report["models"]["pytorch_fp32"]
    assert torch_fp32["auc"] == pytest.approx(report["models"]["onnx_fp32"]["auc"], abs=1e-3)
    static = report["models"]["onnx_int8_static"]
    assert report["targets"]["auc"]["value"] == pytest.approx(static["auc"] - report["models"]["onnx_fp32"]["auc"])
    assert report["targets"]["size"]["value"] == pytest.approx(static["size_ratio"])
    assert report["targets"]["applicable"] is True


@pytest.mark.slow
def test_latency_is_recorded_for_every_model(exported_2d):
    _, report = exported_2d
    latency = report["latency"]
    assert latency["threads"] == 1 and latency["runs"] == 5 and latency["batch_size"] == 8
    for name in export.MODELS:
        b1, b8 = latency["cpu"][name]["batch1"], latency["cpu"][name]["batch8"]
        assert b1["runs"] == 5 and 0 < b1["min_ms"] <= b1["p50_ms"] <= b1["p95_ms"] <= b1["p99_ms"]
        assert b8["images_per_s"] == pytest.approx(8 / (b8["p50_ms"] / 1e3))
    assert latency["providers"]["cpu"]["onnx_int8_static"] == ["CPUExecutionProvider"]


@pytest.mark.slow
def test_markdown_table_and_run_json(exported_2d):
    run, report = exported_2d
    markdown = (RunLayout(run).export_dir / export.REPORT_MD).read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in markdown.splitlines() if line.startswith("| ")}
    for name in export.MODELS:
        m = report["models"][name]
        row = rows[export.MODEL_LABELS[name]]
        assert f" {m['auc']:.4f} " in row and f" {m['acc']:.4f} " in row
        assert f" {report['latency']['cpu'][name]['batch1']['p50_ms']:.2f} " in row
    assert "Normalization is baked into the graph" in markdown
    artifacts = {a["path"]: a["created_by"] for a in runs.Run(run).info()["artifacts"]}
    for name in (*export.MODEL_FILES.values(), export.REPORT_JSON, export.REPORT_MD, export.PREDICT_SCRIPT,
                 export.EXAMPLE_INPUT):
        assert artifacts[str((RunLayout(run).export_dir / name).relative_to(run))] == "quantize.py"
    assert not list(run.glob(export.WORK_PREFIX + "*"))  # the work folder is gone


def _parse(line: str) -> tuple[str, str, float]:
    """"image.npy: malignant (probability 0.655)" -> ("image.npy", "malignant", 0.655)."""
    source, _, rest = line.partition(": ")
    name, _, probability = rest.rpartition(" (probability ")
    return source, name, float(probability.rstrip(")"))


def _predict(folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(folder / export.PREDICT_SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=folder.parent)


@pytest.mark.slow
def test_predict_onnx_classifies_npy_and_png(exported_2d, medmnist_dir, tmp_path):
    from PIL import Image

    run, report = exported_2d
    folder = RunLayout(run).export_dir
    test = _test_images(run, report, medmnist_dir)
    names = report["dataset"]["class_names"]
    logits = _onnx_logits(folder / export.FP32_FILE, test.images[:3], report)
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    np.save(tmp_path / "three.npy", test.images[:3].numpy())  # (3, 1, 28, 28) uint8
    Image.fromarray(test.images[1, 0].numpy()).save(tmp_path / "one.png")

    done = _predict(folder, folder / export.EXAMPLE_INPUT, tmp_path / "three.npy", tmp_path / "one.png")
    assert done.returncode == 0, done.stderr
    printed = [_parse(line) for line in done.stdout.strip().splitlines()]
    expected_images = [0, 0, 1, 2, 1]  # example_input.npy is test image 0; the PNG holds image 1
    expected_sources = [export.EXAMPLE_INPUT, "three.npy[0]", "three.npy[1]", "three.npy[2]", "one.png"]
    assert [source for source, _, _ in printed] == expected_sources
    for (_, name, probability), i in zip(printed, expected_images):
        k = int(probs[i].argmax())
        assert name == names[k] and probability == pytest.approx(probs[i, k], abs=1.5e-3)

    int8 = _predict(folder, tmp_path / "one.png", "--model", folder / export.STATIC_FILE)
    assert int8.returncode == 0 and _parse(int8.stdout.strip())[1] in names


@pytest.mark.slow
def test_predict_onnx_3d_and_bad_inputs(exported_3d, tmp_path):
    run, report = exported_3d
    folder = RunLayout(run).export_dir
    done = _predict(folder, folder / export.EXAMPLE_INPUT)
    assert done.returncode == 0, done.stderr
    assert _parse(done.stdout.strip())[1] in report["dataset"]["class_names"]
    np.save(tmp_path / "flat.npy", np.zeros((28, 28), np.uint8))
    (tmp_path / "x.png").write_bytes(b"not a png")
    for bad, message in ((tmp_path / "flat.npy", "is not a 1-channel 28 x 28 x 28 volume"),
                         (tmp_path / "x.png", "give the volume as a .npy file"),
                         (tmp_path / "missing.npy", "not found")):
        failed = _predict(folder, bad)
        assert failed.returncode == 2
        assert failed.stderr.strip().count("\n") == 0 and message in failed.stderr


def test_bad_run_is_one_line_and_exit_2(tmp_path, capsys):
    code = cli.run(quantize.main, ["--results-dir", str(tmp_path / "results"), "--run", "0042_nothing"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "0042_nothing" in err


def test_missing_weights_is_one_line_and_exit_2(run_2d, tmp_path, capsys):
    run = copy_run(run_2d, tmp_path)
    RunLayout(run).best_pt.unlink()
    code = cli.run(quantize.main, ["--run", str(run), *QUICK])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "best.pt not found" in err
    assert not RunLayout(run).export_dir.exists() and not list(run.glob(export.WORK_PREFIX + "*"))


def test_bad_values_are_refused(run_2d, capsys):
    for argv in (["--runs", "0"], ["--calib", "-3"], ["--activation-type", "int4"]):
        assert cli.run(quantize.main, ["--run", str(run_2d), *argv]) == 2
        assert capsys.readouterr().err.count("\n") == 1
