"""On a CUDA GPU: training with mixed precision, deterministic kernels, resume, and the analyses.

Skipped where torch sees no GPU (CI has none); run on a GPU machine with
``MEDMNIST_DIR=../shared/medmnist python -m pytest tests/test_cuda.py``.
"""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from medmnist.evaluator import getACC, getAUC

import train
from medscope import checkpoints, data, runs
from medscope.app import cli
from medscope.explain import cam as explain
from tests.conftest import ROOT, copy_run, history, interrupted_run, train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RUN_FILES = ["run.json", "history.csv", "summary.csv", "metrics.json", "best.pt", "last.pt",
             "inference_outputs.pt", "inference_mean.json", "training_curves.png", "confusion_matrix.png",
             "sample_predictions.png"]


def _short(*extra):
    return ["--dataset", "breastmnist", "--epochs", "2", "--subset", "256", "--device", "cuda", *extra]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, medmnist_dir):
    return train_run(tmp_path_factory.mktemp("gpu"), medmnist_dir, *_short())


def test_a_gpu_run_uses_mixed_precision_and_writes_the_whole_folder(gpu_run):
    for name in RUN_FILES:
        assert (gpu_run / name).is_file(), name
    info = json.loads((gpu_run / "run.json").read_text())
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert info["environment"]["amp_dtype"] == expected
    assert info["environment"]["gpu"] == torch.cuda.get_device_name(0)
    assert info["status"] == "completed"


def test_gpu_test_metrics_equal_medmnist_on_the_saved_predictions(gpu_run):
    outputs = torch.load(gpu_run / "inference_outputs.pt", weights_only=True)
    metrics = json.loads((gpu_run / "metrics.json").read_text())
    labels, probs = outputs["labels"].numpy(), outputs["probabilities"].numpy()
    assert metrics["test"]["auc"] == getAUC(labels, probs, "binary-class")
    assert metrics["test"]["acc"] == getACC(labels, probs, "binary-class")


def test_a_gpu_checkpoint_loads_and_predicts_on_the_cpu(gpu_run, medmnist_dir):
    """best.pt holds plain CPU-loadable tensors; fp32 on the CPU agrees with bf16/fp16 on the GPU."""
    model, _ = checkpoints.load_run_model(runs.Run(gpu_run), "best", "cpu")
    split = data.load_split(data.dataset_info("breastmnist"), medmnist_dir, "test")
    with torch.no_grad():
        probs = torch.softmax(model(data.normalize(split.images)), dim=1)
    saved = torch.load(gpu_run / "inference_outputs.pt", weights_only=True)["probabilities"]
    assert (probs - saved).abs().max() < 0.05
    assert (probs.argmax(1) == saved.argmax(1)).float().mean() > 0.97


def test_fp16_trains_with_a_gradient_scaler_whose_state_is_checkpointed(tmp_path, medmnist_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    run = train_run(tmp_path, medmnist_dir, *_short("--model", "cnn"))
    info = json.loads((run / "run.json").read_text())
    assert info["environment"]["amp_dtype"] == "float16"
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["scaler"] is not None and last["scaler"]["scale"] > 0
    assert np.isfinite(info["metrics"]["test_auc"])


def test_no_amp_trains_in_float32(tmp_path, medmnist_dir):
    run = train_run(tmp_path, medmnist_dir, *_short("--model", "cnn", "--no-amp"))
    assert json.loads((run / "run.json").read_text())["environment"]["amp_dtype"] == "float32"


def test_deterministic_gpu_runs_repeat_exactly(tmp_path, medmnist_dir):
    args = _short("--deterministic", "--seed", "3")
    a = train_run(tmp_path / "a", medmnist_dir, *args)
    b = train_run(tmp_path / "b", medmnist_dir, *args)
    assert history(a) == history(b)
    assert json.loads((a / "metrics.json").read_text())["test"] == json.loads((b / "metrics.json").read_text())["test"]


def test_resume_on_the_gpu_equals_an_uninterrupted_run(tmp_path, medmnist_dir, monkeypatch):
    args = _short("--deterministic", "--model", "cnn", "--epochs", "3")
    whole = train_run(tmp_path / "whole", medmnist_dir, *args)

    cut, folders = interrupted_run(tmp_path / "cut", medmnist_dir, monkeypatch, 2, *args)
    assert cli.run(train.main, ["--resume", cut.name, "--deterministic", *folders]) == 0
    assert history(cut) == history(whole)
    final_a = torch.load(whole / "last.pt", weights_only=True)["model"]
    final_b = torch.load(cut / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_3d_training_on_the_gpu(tmp_path, medmnist_dir):
    run = train_run(tmp_path, medmnist_dir, "--dataset", "adrenalmnist3d", "--epochs", "1", "--subset", "96",
                    "--device", "cuda")
    outputs = torch.load(run / "inference_outputs.pt", weights_only=True)
    assert outputs["logits"].shape == (298, 2) and torch.isfinite(outputs["logits"]).all()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_on_the_gpu_equals_the_cpu_and_pytorch_grad_cam(gpu_run, medmnist_dir, method):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    model, _ = checkpoints.load_run_model(runs.Run(gpu_run), "best", "cpu")
    split = data.load_split(data.dataset_info("breastmnist"), medmnist_dir, "test")
    x = data.normalize(split.images[:32])
    layer = explain.auto_layer(model, x.shape[1:])
    targets = torch.zeros(32, dtype=torch.long)
    with explain.CAM_METHODS[method](model, layer) as cam:
        on_cpu = cam(x, targets).maps
    model_gpu = model.to("cuda")
    with explain.CAM_METHODS[method](model_gpu, layer) as cam:
        on_gpu = cam(x.cuda(), targets.cuda()).maps.cpu()
    assert (on_cpu - on_gpu).abs().max() < 1e-3
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reference_cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    module = dict(model_gpu.named_modules())[layer]
    with reference_cls(model=model_gpu, target_layers=[module]) as reference:
        expected = reference(input_tensor=x.cuda(), targets=[ClassifierOutputTarget(0)] * 32)
    assert np.abs(on_gpu.numpy() - expected).max() < 1e-3


@pytest.mark.parametrize("command", [
    ["explain.py", "uncertainty", "--passes", "10"],
    ["explain.py", "gradcam", "--n", "8"],
    ["explain.py", "robustness", "--perturbations", "gaussian_noise", "jpeg", "--severities", "1", "5",
     "--n-saliency", "32"],
    ["analyze_inference.py"],
])
def test_analysis_scripts_run_on_the_gpu(gpu_run, tmp_path, command):
    run = copy_run(gpu_run, tmp_path)
    proc = subprocess.run([sys.executable, *command, "--run", str(run), "--device", "cuda"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert len(info["artifacts"]) > len(RUN_FILES) - 1


def test_robustness_clean_row_on_the_gpu_equals_the_runs_metrics(gpu_run, tmp_path):
    run = copy_run(gpu_run, tmp_path)
    proc = subprocess.run([sys.executable, "explain.py", "robustness", "--run", str(run), "--device", "cuda",
                           "--perturbations", "gaussian_blur", "--severities", "2", "--n-saliency", "16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(run / "robustness" / "robustness_results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    clean = next(r for r in rows if r["perturbation"] == "clean")
    test = json.loads((run / "metrics.json").read_text())["test"]
    # On the CPU the two are equal bit for bit (tests/test_robustness.py). On a GPU, bf16 autocast
    # with cuDNN's autotuned kernels (train.py) and its defaults (explain.py) round differently:
    # measured on an H100, |delta AUC| = 1.0e-4.
    assert float(clean["auc"]) == pytest.approx(test["auc"], abs=2e-3)
    assert float(clean["acc"]) == pytest.approx(test["acc"], abs=2e-2)


def test_mc_dropout_on_the_gpu_is_reproducible(gpu_run, medmnist_dir):
    from medscope.explain import uncertainty

    model, _ = checkpoints.load_run_model(runs.Run(gpu_run), "best", "cuda")
    split = data.load_split(data.dataset_info("breastmnist"), medmnist_dir, "test")
    a = uncertainty.mc_predict(model, split, "binary-class", "cuda", passes=8, seed=5)
    b = uncertainty.mc_predict(model, split, "binary-class", "cuda", passes=8, seed=5)
    assert np.array_equal(a.samples, b.samples) and a.samples.shape[:2] == (8, 156)
