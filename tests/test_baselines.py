"""Published MedMNIST v2 baselines: the table, the reference rule and the paper-style text."""
import dataclasses
import doctest

import medmnist
import pytest

from medscope import baselines
from medscope.baselines import (Baseline, baselines_for, best_baseline, comparison_text,
                                reference_baseline)
from medscope.errors import UsageError


def test_the_documented_examples_hold():
    assert doctest.testmod(baselines).failed == 0


def test_the_flags_are_exactly_those_medmnist_knows_and_each_has_a_reference():
    assert baselines.FLAGS == tuple(medmnist.INFO)
    for flag in medmnist.INFO:
        sizes = (28, 64) if flag.endswith("3d") else (28, 64, 128, 224)
        for size in sizes:
            for model in ("resnet18", "cnn"):
                ref = reference_baseline(flag, size=size, model=model)
                assert isinstance(ref, Baseline) and ref.dataset == flag


def test_the_anchor_numbers_of_the_design_hold():
    breast, pneumonia = reference_baseline("breastmnist"), reference_baseline("pneumoniamnist")
    assert (breast.method, breast.auc, breast.acc) == ("ResNet-18 (28)", 0.901, 0.863)
    assert (pneumonia.method, pneumonia.auc, pneumonia.acc) == ("ResNet-18 (28)", 0.944, 0.854)
    adrenal = {b.method: (b.auc, b.acc) for b in baselines_for("adrenalmnist3d")}
    assert adrenal["ResNet-18+3D"] == (0.827, 0.721) and adrenal["ResNet-18+ACS"] == (0.839, 0.754)
    assert reference_baseline("adrenalmnist3d").method == "ResNet-18+3D"
    best = {flag: best_baseline(flag) for flag in ("breastmnist", "pneumoniamnist", "adrenalmnist3d")}
    assert (best["breastmnist"].method, best["breastmnist"].auc, best["breastmnist"].acc) == \
        ("Google AutoML Vision", 0.919, 0.861)
    assert (best["pneumoniamnist"].method, best["pneumoniamnist"].auc, best["pneumoniamnist"].acc) == \
        ("Google AutoML Vision", 0.991, 0.946)
    assert (best["adrenalmnist3d"].method, best["adrenalmnist3d"].auc) == ("ResNet-18+ACS", 0.839)


def test_every_flag_has_every_method_of_its_table_once_with_three_decimal_values():
    for flag in baselines.FLAGS:
        rows = baselines_for(flag)
        methods = baselines.METHODS_3D if flag.endswith("3d") else baselines.METHODS_2D
        assert [b.method for b in rows] == list(methods)
        table = "Table 4" if flag.endswith("3d") else "Table 3"
        for b in rows:
            assert b.dataset == flag and table in b.source
            for value in (b.auc, b.acc):
                assert 0 < value <= 1 and round(value, 3) == value
    assert sum(len(baselines_for(flag)) for flag in baselines.FLAGS) == 12 * 7 + 6 * 8
    assert all(part in baselines.SOURCE for part in ("Table 3", "Table 4", "Scientific Data 10, 41"))


def test_a_few_cells_far_from_the_anchors_read_as_the_paper_prints_them():
    cell = {(b.dataset, b.method): (b.auc, b.acc) for f in baselines.FLAGS for b in baselines_for(f)}
    assert cell["chestmnist", "auto-sklearn"] == (0.649, 0.779)
    assert cell["organsmnist", "AutoKeras"] == (0.974, 0.813)
    assert cell["pathmnist", "ResNet-50 (28)"] == (0.990, 0.911)
    assert cell["nodulemnist3d", "ResNet-18+3D"] == (0.863, 0.844)  # after the NoduleMNIST3D fix
    assert cell["vesselmnist3d", "ResNet-50+3D"] == (0.907, 0.918)
    assert cell["synapsemnist3d", "AutoKeras"] == (0.538, 0.724)


def test_the_reference_follows_the_input_size_and_not_the_model():
    assert reference_baseline("dermamnist", size=28).method == "ResNet-18 (28)"
    assert reference_baseline("dermamnist", size=64).method == "ResNet-18 (28)"
    assert reference_baseline("dermamnist", size=128).method == "ResNet-18 (224)"
    assert reference_baseline("dermamnist", size=224) == Baseline(
        "dermamnist", "ResNet-18 (224)", 0.920, 0.754, reference_baseline("dermamnist").source)
    for size in (28, 64):
        assert reference_baseline("synapsemnist3d", size=size).method == "ResNet-18+3D"
    for flag in baselines.FLAGS:
        assert reference_baseline(flag, model="cnn") == reference_baseline(flag, model="resnet18")


def test_unknown_flags_have_no_reference_and_no_rows_but_bad_sizes_and_models_are_errors():
    assert reference_baseline("mnist") is None and reference_baseline("adrenalmnist3d_64") is None
    assert baselines_for("mnist") == []
    with pytest.raises(UsageError, match="no results"):
        best_baseline("mnist")
    with pytest.raises(UsageError, match="28, 64, 128, 224"):
        reference_baseline("breastmnist", size=32)
    with pytest.raises(UsageError, match="28, 64"):
        reference_baseline("adrenalmnist3d", size=224)
    with pytest.raises(UsageError):
        reference_baseline("breastmnist", size=True)
    with pytest.raises(UsageError, match="model"):
        reference_baseline("breastmnist", model="")


def test_best_is_the_highest_auc_with_ties_broken_by_acc_then_table_order():
    for flag in baselines.FLAGS:
        rows, best = baselines_for(flag), best_baseline(flag)
        assert best.auc == max(b.auc for b in rows)
        assert best.acc == max(b.acc for b in rows if b.auc == best.auc)
        assert best == next(b for b in rows if (b.auc, b.acc) == (best.auc, best.acc))
    blood = best_baseline("bloodmnist")  # AUC .998 for four methods
    assert (blood.method, blood.acc) == ("Google AutoML Vision", 0.966)
    assert best_baseline("organamnist").method == "ResNet-18 (224)"  # .998/.951 beats ResNet-50 (224) .998/.947
    assert best_baseline("nodulemnist3d").method == "auto-sklearn"


def test_the_comparison_line_uses_the_papers_three_decimal_style():
    assert comparison_text(reference_baseline("breastmnist")) == "paper ResNet-18 (28): AUC .901 / ACC .863"
    assert comparison_text(Baseline("x", "m", 1.0, 0.05, "s")) == "paper m: AUC 1.000 / ACC .050"
    assert comparison_text(reference_baseline("organcmnist", size=224)) == \
        "paper ResNet-18 (224): AUC .994 / ACC .920"


def test_rows_are_immutable_and_callers_get_their_own_lists():
    row = reference_baseline("breastmnist")
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.auc = 0.5
    rows = baselines_for("breastmnist")
    rows.clear()
    assert len(baselines_for("breastmnist")) == 7
