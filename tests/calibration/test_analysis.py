"""medscope.calibration.analysis: every number equals the library function it comes from, for all four tasks."""
from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from medscope import atomic, metrics
from medscope.calibration import analysis, conformal, measures, resampled, selective, temperature, thresholds
from medscope.errors import UsageError
from medscope.stats.bootstrap import bootstrap_statistic
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL, ORDINAL

TASKS = [BINARY, MULTICLASS, MULTILABEL, ORDINAL]
RESAMPLES = 200


def logits_and_labels(task, n, k, seed):
    """Over-confident logits with a real signal (so that T > 1 and there are errors to rank)."""
    rng = np.random.default_rng(seed)
    if task == MULTILABEL:
        y = (rng.random((n, k)) < 0.35).astype(np.int64)
        return 3.0 * (rng.normal(size=(n, k)) + 1.4 * y - 0.7), y
    k = 2 if task == BINARY else k
    y = rng.integers(0, k, size=(n, 1))
    return 3.0 * (rng.normal(size=(n, k)) + 1.3 * np.eye(k)[y[:, 0]]), y


def case(task, k=4, n_val=160, n_test=240, seed=0):
    val_z, val_y = logits_and_labels(task, n_val, k, seed)
    test_z, test_y = logits_and_labels(task, n_test, k, seed + 1)
    names = [f"class {j}" for j in range(val_z.shape[1])]
    return val_z, val_y, test_z, test_y, names


@pytest.fixture(scope="module", params=TASKS)
def analysed(request):
    task = request.param
    val_z, val_y, test_z, test_y, names = case(task)
    result = analysis.analyze_calibration(task, val_z, val_y, test_z, test_y, class_names=names,
                                          n_resamples=RESAMPLES, seed=3)
    return task, (val_z, val_y, test_z, test_y, names), result


# --------------------------------------------------------------------------- per-sample terms and batched statistics

@pytest.mark.parametrize("task", TASKS)
def test_per_sample_terms_average_to_the_brier_score_and_nll(task):
    _, _, z, y, _ = case(task)
    probs = temperature.apply_temperature(task, z, 1.7)
    labels = y if task == MULTILABEL else y[:, 0]
    assert analysis.brier_terms(task, probs, labels).mean() == pytest.approx(measures.brier_score(task, probs, y),
                                                                              rel=1e-12)
    assert analysis.nll_terms(task, probs, labels).mean() == pytest.approx(
        measures.negative_log_likelihood(task, probs, y), rel=1e-12)


def resamples(n, b=60, seed=0):
    return np.random.default_rng(seed).integers(0, n, size=(b, n))


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_batched_ece_and_bins_equal_the_library_on_every_resample(strategy):
    rng = np.random.default_rng(1)
    conf = np.round(rng.uniform(0.5, 1.0, 150), 2)  # rounded: ties and shared bin edges
    correct = rng.random(150) < conf
    index = resamples(150)
    batched = resampled.expected_calibration_error(conf[index], correct[index], 10, strategy)
    bins = resampled.reliability_bins(conf[index], correct[index], 10, strategy)
    for row, r in enumerate(index):
        assert batched[row] == pytest.approx(measures.expected_calibration_error(conf[r], correct[r], 10, strategy),
                                             abs=1e-15)
        reference = measures.reliability_bins(conf[r], correct[r], 10, strategy)
        assert bins["count"][row].tolist() == reference["count"].tolist()
        np.testing.assert_allclose(bins["accuracy"][row], reference["accuracy"], rtol=1e-12, equal_nan=True)


def test_batched_task_ece_of_multilabel_is_the_mean_of_the_per_label_eces():
    _, _, z, y, _ = case(MULTILABEL, k=3)
    conf, correct = measures.predicted_confidence(MULTILABEL, temperature.apply_temperature(MULTILABEL, z, 1.0), y)
    index = resamples(len(y), b=20)
    batched = resampled.task_ece(conf[index], correct[index], 15, "quantile")
    for row, r in enumerate(index):
        probs = temperature.apply_temperature(MULTILABEL, z[r], 1.0)
        assert batched[row] == pytest.approx(measures.ece(MULTILABEL, probs, y[r], 15, "quantile"), abs=1e-15)


def test_batched_risk_areas_equal_aurc_and_augrc_with_ties():
    rng = np.random.default_rng(2)
    conf = rng.integers(0, 12, 200) / 11.0  # a dozen distinct values: long tie blocks, mixed errors
    errors = (rng.random(200) < 0.3).astype(float)
    index = resamples(200)
    areas = resampled.risk_areas(conf[index], errors[index])
    optimal = resampled.optimal_risk_areas(errors[index])
    for row, r in enumerate(index):
        assert areas["aurc"][row] == pytest.approx(selective.aurc(conf[r], errors[r]), abs=1e-14)
        assert areas["augrc"][row] == pytest.approx(selective.augrc(conf[r], errors[r]), abs=1e-15)
        assert optimal["aurc"][row] == pytest.approx(selective.aurc_optimal(errors[r]), abs=1e-14)
        assert optimal["augrc"][row] == pytest.approx(selective.augrc_optimal(errors[r]), abs=1e-15)


def test_optimal_areas_of_all_errors_and_no_errors():
    optimal = resampled.optimal_risk_areas(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert optimal["aurc"].tolist() == [1.0, 0.0] and optimal["augrc"].tolist() == [0.5, 0.0]
    assert selective.aurc_optimal([1.0, 1.0, 1.0]) == pytest.approx(1.0)


def test_batched_binary_rates_equal_evaluate_threshold():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(120), 2)
    labels = (rng.random(120) < scores).astype(int)
    index = resamples(120)
    rates = resampled.binary_rates(scores[index], labels[index], 0.41)
    for row, r in enumerate(index):
        reference = thresholds.evaluate_threshold(scores[r], labels[r], 0.41)
        for key in analysis.RATES:
            assert rates[key][row] == pytest.approx(reference[key], abs=1e-15, nan_ok=True)


# --------------------------------------------------------------------------- the analysis, task by task

def test_temperature_is_the_one_fitted_on_validation(analysed):
    task, (val_z, val_y, *_), result = analysed
    fit = temperature.fit_temperature(task, val_z, val_y)
    assert np.allclose(result["temperature"]["temperature"], fit.temperature, rtol=0, atol=0)
    assert result["temperature"]["kind"] == ("per label" if task == MULTILABEL else "scalar")
    assert result["temperature"]["nll_validation_after"] == fit.nll_after <= fit.nll_before


def test_calibration_measures_before_and_after_equal_the_library(analysed):
    task, (val_z, val_y, test_z, test_y, _), result = analysed
    t = temperature.fit_temperature(task, val_z, val_y).temperature
    for state, temp in (("before", 1.0), ("after", t)):
        probs = temperature.apply_temperature(task, test_z, temp)
        reference = measures.calibration_summary(task, probs, test_y, 15)
        for key in analysis.MEASURE_NAMES:
            assert result["calibration"][state][key]["estimate"] == pytest.approx(reference[key], rel=1e-12)
        conf, correct = measures.predicted_confidence(task, probs, test_y)
        bins = measures.reliability_bins(conf.reshape(-1), correct.reshape(-1), 15)
        entries = result["calibration"][f"reliability_{state}"]
        assert [e["count"] for e in entries] == bins["count"].tolist()
        np.testing.assert_allclose([e["accuracy"]["estimate"] for e in entries], bins["accuracy"], equal_nan=True)
    assert result["calibration"]["after"]["nll"]["estimate"] < result["calibration"]["before"]["nll"]["estimate"]


def test_ece_intervals_are_basic_bootstrap_around_the_bias_corrected_value(analysed):
    _, _, result = analysed
    for state in ("before", "after"):
        ece = result["calibration"][state]["ece"]
        assert ece["method"].startswith("basic bootstrap")
        assert 0.0 <= ece["low"] <= ece["bias_corrected"] <= ece["high"]
        assert ece["bias_corrected"] <= ece["estimate"]  # the plug-in ECE is biased upward
        assert result["calibration"][state]["brier"]["method"].startswith("percentile bootstrap")


def test_accuracy_is_medmnists_and_unchanged_by_temperature(analysed):
    task, (_, _, test_z, test_y, _), result = analysed
    expected = metrics.acc_score(task, test_y, temperature.apply_temperature(task, test_z, 1.0))
    assert result["accuracy"]["accuracy"]["estimate"] == pytest.approx(expected, rel=1e-12)


def test_thresholds_are_chosen_on_validation_and_evaluated_on_test(analysed):
    task, (val_z, val_y, test_z, test_y, names), result = analysed
    part = result["thresholds"]
    if task in (MULTICLASS, ORDINAL):
        assert part["applicable"] is False and "highest probability" in part["reason"]
        return
    t = temperature.fit_temperature(task, val_z, val_y).temperature
    val_p, test_p = (temperature.apply_temperature(task, z, t) for z in (val_z, test_z))
    chosen = thresholds.choose_thresholds(task, val_p, val_y)
    assert len(part["problems"]) == (1 if task == BINARY else len(names))
    for problem, rules in zip(part["problems"], chosen):
        by_rule = {e["rule"]: e for e in problem["rules"]}
        for rule in ("youden", "sensitivity", "specificity"):
            assert by_rule[rule]["threshold"] == rules[rule]["threshold"]
        assert by_rule["medmnist"]["threshold"] == thresholds.MEDMNIST_THRESHOLD
    for rule in analysis.RULES:
        values = [next(e for e in p["rules"] if e["rule"] == rule)["threshold"] for p in part["problems"]]
        for problem, reference in zip(part["problems"], thresholds.evaluate_thresholds(task, test_p, test_y, values)):
            entry = next(e for e in problem["rules"] if e["rule"] == rule)
            for rate in analysis.RATES:
                assert entry["test"][rate]["estimate"] == pytest.approx(reference[rate], nan_ok=True)
            assert entry["test"]["tp"] == reference["tp"] and entry["test"]["fn"] == reference["fn"]


def test_conformal_sets_are_those_of_calibrate_and_prediction_sets(analysed):
    task, (val_z, val_y, test_z, test_y, names), result = analysed
    t = temperature.fit_temperature(task, val_z, val_y).temperature
    val_p, test_p = (temperature.apply_temperature(task, z, t) for z in (val_z, test_z))
    for method in result["conformal"]["methods"]:
        calibration = conformal.calibrate(task, val_p, val_y, alpha=0.1, score=method["score"],
                                          class_conditional=method["class_conditional"], seed=3)
        np.testing.assert_array_equal(method["quantile"], calibration.quantile)
        sets = conformal.prediction_sets(calibration, test_p)
        reference = conformal.evaluate_sets(task, sets, test_y)
        prefix = "mean_" if task == MULTILABEL else ""
        for key in ("coverage", "mean_set_size", "singleton_fraction", "empty_fraction"):
            assert method["test"][key]["estimate"] == pytest.approx(reference[prefix + key], rel=1e-12)
        shown = result["per_image"]["sets"][method["name"]]
        if task == MULTILABEL:
            assert shown["size"] == sets.sum(axis=(1, 2)).tolist()
            assert method["test"]["all_labels_covered"]["estimate"] == pytest.approx(reference["all_labels_covered"])
            for j, name in enumerate(names):
                assert method["test"]["coverage_per_label"][name]["estimate"] == pytest.approx(reference["coverage"][j])
        else:
            assert shown["set"] == [";".join(str(k) for k in np.flatnonzero(row)) for row in sets]
            for k, name in enumerate(names):
                assert method["test"]["coverage_per_class"][name]["estimate"] == pytest.approx(
                    reference["coverage_per_class"][k], nan_ok=True)
            assert method["test"]["set_size_counts"] == reference["set_size_counts"].tolist()
        assert ("abstain_fraction" in method["test"]) == (task in (BINARY, MULTILABEL))


def test_selective_scores_equal_the_library_areas_and_the_best_has_the_lowest_augrc(analysed):
    task, (val_z, val_y, test_z, test_y, _), result = analysed
    t = temperature.fit_temperature(task, val_z, val_y).temperature
    test_p = temperature.apply_temperature(task, test_z, t)
    sets = {"lac": conformal.prediction_sets(
        conformal.calibrate(task, temperature.apply_temperature(task, val_z, t), val_y, alpha=0.1), test_p)}
    scores = analysis.confidence_scores(task, test_p, sets, {})
    from medscope.tasks import task as task_of
    kind = task_of(task)
    errors = ~kind.correct(test_y if task == MULTILABEL else test_y[:, 0], kind.predictions(test_p))
    sel = result["selective"]
    assert [e["name"] for e in sel["scores"]] == ["max_probability", "conformal_set_size"]
    for entry in sel["scores"]:
        assert entry["aurc"]["estimate"] == pytest.approx(selective.aurc(scores[entry["name"]], errors), rel=1e-12)
        assert entry["augrc"]["estimate"] == pytest.approx(selective.augrc(scores[entry["name"]], errors), rel=1e-12)
        assert entry["eaurc"]["estimate"] == pytest.approx(selective.eaurc(scores[entry["name"]], errors), abs=1e-12)
    best = min(sel["scores"], key=lambda e: e["augrc"]["estimate"])
    assert sel["best"]["name"] == best["name"] and best["augrc_minus_best"]["estimate"] == 0.0
    assert sel["n_errors"] == int(errors.sum())
    if task == BINARY:  # the maximum probability is max(p, 1 - p) of the positive-class probability
        np.testing.assert_allclose(scores["max_probability"], np.maximum(test_p[:, 1], 1 - test_p[:, 1]))
    if task == MULTILABEL:  # the probability that every predicted value is right (labels independent)
        np.testing.assert_allclose(scores["max_probability"], np.prod(np.where(test_p > 0.5, test_p, 1 - test_p), 1))


def test_every_interval_comes_from_one_bootstrap_of_the_test_samples(analysed):
    task, (_, _, test_z, test_y, _), result = analysed
    kind_correct = result["accuracy"]["accuracy"]
    from medscope.tasks import task as task_of
    kind = task_of(task)
    probs = temperature.apply_temperature(task, test_z, 1.0)
    pred = kind.predictions(probs)
    per_sample = (pred == test_y).mean(axis=1) if task == MULTILABEL else (pred == test_y[:, 0]).astype(float)
    strata = None if task == MULTILABEL else test_y[:, 0]
    reference = bootstrap_statistic(lambda a: a.mean(axis=1), [per_sample], n_resamples=RESAMPLES, seed=3,
                                    strata=strata, batched=True)
    assert (kind_correct["low"], kind_correct["high"]) == (reference["low"], reference["high"])
    assert result["bootstrap"]["n_resamples"] == RESAMPLES and result["bootstrap"]["seed"] == 3


def test_the_result_is_json_ready(analysed, tmp_path):
    _, _, result = analysed
    path = atomic.write_json(tmp_path / "r.json", result)
    assert json.loads(path.read_text())["task"] == result["task"]


def test_mc_dropout_measures_rank_errors_and_an_informative_one_wins():
    val_z, val_y, test_z, test_y, names = case(BINARY)
    fit = temperature.fit_temperature(BINARY, val_z, val_y)
    probs = temperature.apply_temperature(BINARY, test_z, fit.temperature)
    errors = (probs[:, 1] > 0.5).astype(int) != test_y[:, 0]
    noise = np.random.default_rng(0).random(len(errors))
    mc = {"mutual_information": errors + 0.1 * noise, "predictive_entropy": noise}
    result = analysis.analyze_calibration(BINARY, val_z, val_y, test_z, test_y, class_names=names, mc_dropout=mc,
                                          n_resamples=RESAMPLES)
    sel = result["selective"]
    entries = {e["name"]: e for e in sel["scores"]}
    assert entries["mc_predictive_entropy"]["augrc"]["estimate"] == pytest.approx(selective.augrc(-noise, errors))
    assert sel["best"]["name"] == "mc_mutual_information"  # it puts every error last
    assert entries["mc_mutual_information"]["augrc"]["estimate"] == pytest.approx(selective.augrc_optimal(errors))
    assert entries["mc_predictive_entropy"]["augrc_minus_best"]["low"] > 0
    assert result["mc_dropout"] == {"used": True, "measures": ["mutual_information", "predictive_entropy"]}


def test_no_errors_leaves_nothing_to_rank():
    val_z, val_y, test_z, test_y, names = case(BINARY)
    test_z = np.where(np.eye(2)[test_y[:, 0]] == 1, 20.0, -20.0)  # every test prediction right
    result = analysis.analyze_calibration(BINARY, val_z, val_y, test_z, test_y, class_names=names,
                                          n_resamples=50)
    assert result["selective"]["best"]["applicable"] is False
    assert "no errors" in result["selective"]["best"]["reason"]


@pytest.mark.parametrize("change, message", [
    ({"class_names": ["a"]}, "1 class names for 2 output columns"),
    ({"alpha": 1.0}, "alpha must lie strictly between 0 and 1"),
    ({"sensitivity": 0.0}, "target sensitivity must lie in (0, 1]"),
    ({"n_bins": 0}, "bins must be an integer >= 1"),
    ({"mc_dropout": {"mutual_information": np.zeros(3)}}, "3 values for 240 test images"),
    ({"n_resamples": 0}, "n_resamples must be a positive integer"),
])
def test_bad_input_is_a_usage_error(change, message):
    val_z, val_y, test_z, test_y, names = case(BINARY)
    kwargs = {"class_names": names, "n_resamples": 20, **change}
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        analysis.analyze_calibration(BINARY, val_z, val_y, test_z, test_y, **kwargs)


def test_validation_and_test_must_have_the_same_columns():
    val_z, val_y, _, _, _ = case(MULTICLASS, k=4)
    test_z, test_y, *_ = case(MULTICLASS, k=3)
    with pytest.raises(UsageError, match="4 columns, test logits 3"):
        analysis.analyze_calibration(MULTICLASS, val_z, val_y, test_z, test_y, class_names=list("abcd"))


@pytest.mark.parametrize("module", [analysis, resampled], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    outcome = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted > 0 and outcome.failed == 0
