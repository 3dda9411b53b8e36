"""medscope.calibration.plots and .report: the figures draw the analysed curves, the report reads in plain words."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
from PIL import Image

from medscope.calibration import analysis, plots, report, selective
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL, ORDINAL
from tests.calibration.test_analysis import case

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", params=[BINARY, MULTICLASS, MULTILABEL, ORDINAL])
def analysed(request):
    task = request.param
    val_z, val_y, test_z, test_y, names = case(task, k=5)
    rng = np.random.default_rng(0)
    mc = {"mutual_information": rng.random(len(test_z)), "predictive_entropy": rng.random(len(test_z))}
    return task, analysis.analyze_calibration(task, val_z, val_y, test_z, test_y, class_names=names,
                                              n_resamples=100, mc_dropout=mc)


def test_exact_curve_is_the_curve_whose_areas_are_aurc_and_augrc():
    rng = np.random.default_rng(4)
    confidence = rng.integers(0, 8, 90) / 7.0  # long tie blocks
    errors = (rng.random(90) < 0.25).astype(float)
    coverage, risk, generalized = plots.exact_curve(selective.risk_coverage_curve(confidence, errors), 90)
    assert coverage[0] == 0.0 and coverage[-1] == 1.0 and len(coverage) == 91
    # the per-sample AURC averages the risk at every accepted count; AUGRC is the trapezoid of the generalized risk
    assert np.mean(risk[1:]) == pytest.approx(selective.aurc(confidence, errors, "per-sample"), rel=1e-12)
    assert np.trapezoid(generalized, coverage) == pytest.approx(selective.augrc(confidence, errors), rel=1e-12)


def test_figures_are_written_for_every_task(analysed, tmp_path):
    _, result = analysed
    paths = [plots.reliability_diagram(tmp_path / "reliability.png", result, "a run"),
             plots.risk_coverage(tmp_path / "risk.png", result, "a run"),
             plots.conformal_coverage(tmp_path / "coverage.png", result, "a run")]
    for path in paths:
        assert path.read_bytes()[:8] == PNG
        width, height = Image.open(path).size
        assert 600 < width < 4000 and 400 < height < 2000
    assert not list(tmp_path.glob("*.tmp"))


def test_legend_labels_carry_the_estimate_and_interval():
    entry = {"estimate": 0.05, "low": 0.01, "high": 0.08}
    assert plots.interval_label(entry) == "0.050 [0.010, 0.080]"
    assert plots.interval_label(dict(entry, bias_corrected=0.03)) == "0.050, bias-corrected 0.030 [0.010, 0.080]"


def test_report_reads_in_plain_words_for_every_task(analysed):
    task, result = analysed
    text = report.report_markdown(result, run_name="0007_example")
    assert text.startswith("# Calibration, thresholds and prediction sets — 0007_example")
    for heading in ("## In short", "## 1. Temperature scaling", "## 2. Decision thresholds",
                    "## 3. Conformal prediction sets", "## 4. Which uncertainty score ranks errors best"):
        assert heading in text
    ece = result["calibration"]["after"]["ece"]
    assert report.interval_text(ece, 4) in text  # the number with its interval
    assert "bias-corrected" in text and "95% CI" in text
    if task in (MULTICLASS, ORDINAL):
        assert "Not applicable: a " + task + " task predicts the class with the highest probability" in text
    else:
        assert "| Youden |" in text and "> 0.5" in text
    if task == BINARY:
        assert "abstention: refer the case to a person" in text
    if task == MULTILABEL:
        assert "| label | T | validation NLL before | after |" in text and "all labels covered" in text
    best = result["selective"]["best"]
    assert f"the {best['description']} sets errors apart best" in text
    assert "MC-dropout" in text and "nan" not in text.lower().replace("nans", "")


def test_a_skipped_mc_dropout_and_a_tta_note_are_stated():
    val_z, val_y, test_z, test_y, names = case(BINARY)
    result = analysis.analyze_calibration(BINARY, val_z, val_y, test_z, test_y, class_names=names, n_resamples=30)
    result["inputs"] = {"note": "the run evaluates with test-time augmentation"}
    text = report.report_markdown(result)
    assert "MC-dropout measures are not included: no MC-dropout results were given" in text
    assert "**Note:** The run evaluates with test-time augmentation." in text


def test_threshold_text_names_the_rule_that_is_never_positive():
    assert report.threshold_text(float("inf")) == report.threshold_text(None) == "∞ (never positive)"
    assert report.threshold_text(0.123456) == "0.1235"


def test_docstring_examples():
    outcome = doctest.testmod(report)
    assert outcome.attempted > 0 and outcome.failed == 0
