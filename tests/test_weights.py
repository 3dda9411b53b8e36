"""Specification tests for medscope.analysis.weights: which tensors, in which order,
flattened how, and every column of a row against a direct computation with
medscope.analysis.complexity (itself checked against antropy in test_complexity.py)."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from medscope.analysis import weights
from medscope.analysis.complexity import lmc_complexity, sample_entropy, weight_statistics
from medscope.analysis.weights import COLUMNS, Settings, WeightTensor, tensor_row, weight_tensors
from medscope.errors import UsageError
from medscope.checkpoints import initial_model
from medscope.models import build_model
from medscope.runs import Run

KINDS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
         nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def expected_names(model: nn.Module, include_bias: bool) -> list[str]:
    """The reference: named_parameters() filtered to conv / linear / norm weights (and biases)."""
    modules = dict(model.named_modules())
    names = []
    for name, _ in model.named_parameters():
        owner, _, param = name.rpartition(".")
        if isinstance(modules[owner], KINDS) and (param == "weight" or include_bias and param == "bias"):
            names.append(name)
    return names


@pytest.mark.parametrize("include_bias", [False, True])
@pytest.mark.parametrize("model_name, dims, first, n_weights", [
    ("resnet18", 2, "backbone.conv1.weight", 41),  # 20 conv + 20 batch norm + fc
    ("resnet18", 3, "backbone.stem.0.weight", 41),
    ("cnn", 3, "backbone.stages.0.0.weight", 13),  # 6 conv + 6 batch norm + fc
])
def test_every_weight_tensor_in_network_order(model_name, dims, first, n_weights, include_bias):
    torch.manual_seed(0)
    model = build_model(model_name, 1, 2, dims, 28)
    tensors = weight_tensors(model, include_bias)
    assert [t.name for t in tensors] == expected_names(model, include_bias)
    assert tensors[0].name == first and tensors[-1].name == ("head.1.bias" if include_bias else "head.1.weight")
    assert sum(t.param == "weight" for t in tensors) == n_weights
    conv = f"conv{dims}d"
    assert {t.type for t in tensors} == {conv, "norm", "linear"}
    for t in tensors:
        module = dict(model.named_modules())[t.layer]
        assert t.tensor is getattr(module, t.param)
        assert t.type == {nn.Linear: "linear"}.get(type(module), conv if "Conv" in type(module).__name__ else "norm")
        assert t.count == t.tensor.numel() and t.shape == tuple(t.tensor.shape)


def test_layer_types():
    assert weights.layer_type(nn.Conv2d(1, 2, 3)) == "conv2d"
    assert weights.layer_type(nn.Conv3d(1, 2, 3)) == "conv3d"
    assert weights.layer_type(nn.Conv1d(1, 2, 3)) == "conv1d"
    assert weights.layer_type(nn.Linear(3, 2)) == "linear"
    for norm in (nn.BatchNorm2d(4), nn.BatchNorm3d(4), nn.GroupNorm(2, 4), nn.LayerNorm(4), nn.InstanceNorm3d(4)):
        assert weights.layer_type(norm) == "norm"
    for other in (nn.ReLU(), nn.Dropout(), nn.MaxPool2d(2), nn.Sequential(), nn.Embedding(3, 2)):
        assert weights.layer_type(other) is None


def test_shared_and_missing_parameters():
    """A tied weight is listed once; bias=False and affine=False leave nothing to list."""
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2, affine=False))
    assert [t.name for t in weight_tensors(model, include_bias=True)] == ["0.weight", "0.bias", "3.weight"]


def test_flatten_is_pytorch_memory_order_as_float64():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    x = weights.flatten(w)
    assert x.dtype == np.float64 and x.shape == (24,)
    assert x.tolist() == list(range(24))  # row-major over (out, in, kh, kw)
    # a channels-last copy (how 2D models run) holds the same weights: same vector
    assert np.array_equal(weights.flatten(w.to(memory_format=torch.channels_last)), x)
    assert np.array_equal(weights.flatten(w.permute(1, 0, 2, 3)), w.permute(1, 0, 2, 3).reshape(-1).double().numpy())
    assert np.array_equal(weights.flatten(w.to(torch.bfloat16)), x)  # exact small integers


def direct_row(tensor: torch.Tensor, m=2, r_factor=0.2, bins=64) -> dict:
    """The same numbers computed without medscope.analysis.weights."""
    x = tensor.detach().numpy().astype(np.float64).ravel()
    st = weight_statistics(x)
    lmc = lmc_complexity(x, bins)
    se = sample_entropy(x, m, r=r_factor * np.std(x))
    return {"count": st.count, "mean": st.mean, "std": st.std, "kurtosis": st.kurtosis, "l1": st.l1_norm,
            "l2": st.l2_norm, "frac_near_zero": st.frac_near_zero, "lmc_H": lmc.H, "lmc_D": lmc.D, "lmc_C": lmc.C,
            "lmc_bins": lmc.n_bins, "sampen": se.value, "sampen_A": se.a_count, "sampen_B": se.b_count,
            "sampen_r": se.r}


def test_row_equals_direct_computation():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    row = tensor_row(WeightTensor("features.conv", "weight", "conv2d", conv.weight), "trained")
    assert list(row) == COLUMNS
    assert row["layer"] == "features.conv" and row["param"] == "weight" and row["type"] == "conv2d"
    assert row["shape"] == "16x8x3x3" and row["state"] == "trained"
    assert row["sampen_reason"] == "" and row["lmc_reason"] == ""
    expected = direct_row(conv.weight)
    assert {k: row[k] for k in expected} == expected
    assert row["sampen_r"] == 0.2 * row["std"]


def test_settings_change_r_bins_and_m():
    torch.manual_seed(1)
    w = nn.Linear(40, 30).weight
    settings = Settings(m=1, r_factor=0.35, bins="sturges")
    row = tensor_row(WeightTensor("fc", "weight", "linear", w), "initial", settings)
    expected = direct_row(w, m=1, r_factor=0.35, bins="sturges")
    assert {k: row[k] for k in expected} == expected
    assert row["lmc_bins"] == math.ceil(math.log2(1200)) + 1
    assert tensor_row(WeightTensor("fc", "weight", "linear", w), "trained", Settings(bins=7))["lmc_bins"] == 7


@pytest.mark.parametrize("values, sampen_reason, lmc_reason", [
    (torch.ones(64), "constant vector (std = 0)", "constant vector (std = 0)"),  # a fresh batch-norm weight
    (torch.tensor([0.5, -0.5]), "too short: N=2 < m+2=4", ""),  # a 2-class fc bias
    (torch.tensor([0.1, float("nan"), 0.3, 0.2, 0.5]), "contains NaN", "contains NaN"),
    (torch.tensor([0.1, float("inf"), 0.3, 0.2, 0.5]), "contains inf", "contains inf"),
])
def test_undefined_values_are_empty_with_a_reason(values, sampen_reason, lmc_reason):
    row = tensor_row(WeightTensor("bn", "weight", "norm", nn.Parameter(values)), "initial")
    assert row["sampen"] is None and row["sampen_reason"] == sampen_reason
    assert row["lmc_reason"] == lmc_reason
    if lmc_reason:
        assert row["lmc_H"] is row["lmc_D"] is row["lmc_C"] is row["lmc_bins"] is None
    for key in COLUMNS:  # never a silent inf / nan anywhere in the row
        assert not (isinstance(row[key], float) and not math.isfinite(row[key])), key
    if values.numel() == 2:  # too short for templates; its tolerance is still known
        assert row["sampen_r"] == 0.2 * 0.5 and row["sampen_A"] is row["sampen_B"] is None
    if values.isfinite().all() and values.numel() > 2:  # constant: kurtosis undefined too
        assert row["kurtosis"] is None and row["std"] == 0.0


def test_threads_give_the_same_rows_in_the_same_order():
    torch.manual_seed(2)
    model = build_model("cnn", 1, 3, 2, 28)
    jobs = [(t, "trained") for t in weight_tensors(model, include_bias=True)]
    done = []
    sequential = weights.analyze_tensors(jobs, workers=1)
    threaded = weights.analyze_tensors(jobs, workers=3, on_done=lambda t, s: done.append(t.name))
    assert threaded == sequential
    assert [(r["layer"], r["param"]) for r in threaded] == [(t.layer, t.param) for t, _ in jobs]
    assert sorted(done) == sorted(t.name for t, _ in jobs)


def test_summary_per_state_and_type():
    def row(state, kind, count, sampen, c):
        return {"state": state, "type": kind, "count": count, "sampen": sampen, "lmc_H": 0.5, "lmc_D": 0.1,
                "lmc_C": c}

    rows = [row("trained", "conv2d", 100, 2.0, 0.02), row("trained", "norm", 10, None, 0.0),
            row("trained", "conv2d", 300, 1.0, 0.04), row("initial", "conv2d", 100, 2.2, 0.03)]
    summary = {(s["state"], s["type"]): s for s in weights.summarize(rows)}
    assert list(summary) == [("trained", "conv2d"), ("trained", "norm"), ("trained", "all"),
                             ("initial", "conv2d"), ("initial", "all")]
    conv = summary["trained", "conv2d"]
    assert conv["tensors"] == 2 and conv["weights"] == 400 and conv["sampen_defined"] == 2
    assert conv["sampen_mean"] == pytest.approx(1.5) and conv["sampen_weighted"] == pytest.approx(1.25)
    assert conv["sampen_min"] == 1.0 and conv["sampen_max"] == 2.0 and conv["lmc_C_mean"] == pytest.approx(0.03)
    norm = summary["trained", "norm"]
    assert norm["sampen_defined"] == 0 and norm["sampen_mean"] is None and norm["sampen_weighted"] is None
    assert summary["trained", "all"]["weights"] == 410 and summary["trained", "all"]["lmc_C_max"] == 0.04


def test_comparison_names_are_never_reused(tmp_path):
    from datetime import datetime

    when = datetime(2024, 5, 6, 7, 8, 9)
    png, csv = weights.comparison_paths(tmp_path, when)
    assert (png.name, csv.name) == ("complexity_comparison_20240506-070809.png",
                                    "complexity_comparison_20240506-070809.csv")
    csv.write_text("taken")
    png2, csv2 = weights.comparison_paths(tmp_path, when)
    assert csv2.name == "complexity_comparison_20240506-070809-2.csv" and png2.stem == csv2.stem
    png2.write_bytes(b"taken")
    assert weights.comparison_paths(tmp_path, when)[0].name == "complexity_comparison_20240506-070809-3.png"


SPEC = dict(name="resnet18", in_channels=1, num_classes=2, spatial_dims=2, size=28, dropout=0.2)


def test_initial_model_from_seed_and_from_local_pretrained_weights(tmp_path):
    run = Run(tmp_path / "0001_x")
    model, source = weights.initial_model_for(run, SPEC, {"seed": 5})
    expected = initial_model(SPEC, 5)
    assert source == "seed 5"
    for (name, a), b in zip(model.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(a, b), name

    torch.manual_seed(9)
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model, source = weights.initial_model_for(run, SPEC, {"seed": 5, "pretrained": True, "weights": str(path)})
    expected = initial_model(SPEC, 5, pretrained_state=state)
    assert source == f"pretrained ({path}), seed 5"
    assert torch.equal(model.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    for (name, a), b in zip(model.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(a, b), name


def test_initial_weights_that_cannot_be_rebuilt_offline(tmp_path, monkeypatch):
    run = Run(tmp_path / "0001_x")
    with pytest.raises(UsageError, match="is not a file here"):
        weights.initial_model_for(run, SPEC, {"seed": 0, "pretrained": True, "weights": str(tmp_path / "gone.pth")})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(UsageError, match="not in the local cache .* cannot be rebuilt offline"):
        weights.initial_model_for(run, SPEC, {"seed": 0, "pretrained": True, "weights": None})
    with pytest.raises(UsageError, match="no config.seed"):
        weights.initial_model_for(run, SPEC, {})


def test_docstring_examples():
    result = doctest.testmod(weights, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
