"""explain.py calibrate on real run folders: values from the library, files, the validation cache, bad input."""
from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
import torch

from medscope import data, runs
from medscope.app import explain_calibrate, cli
from medscope.calibration import conformal, measures, selective, temperature
from medscope.tasks import task as task_of
from tests.conftest import copy_run, one_line_error

BOOTSTRAP = "200"  # resamples in these tests: enough for intervals, quick


def calibrate(*argv) -> int:
    """The command as a test calls it before explain.py registers it: a parser from add_arguments, then run."""
    parser = cli.ArgumentParser(prog="explain.py calibrate")
    explain_calibrate.add_arguments(parser)
    return cli.run(lambda args: explain_calibrate.run(parser.parse_args(args)), list(argv))


def read_json(path):
    return json.loads(path.read_text())


def read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


@pytest.fixture
def run2d(run_2d, tmp_path):
    return copy_run(run_2d, tmp_path)


@pytest.fixture
def run3d(run_3d, tmp_path):
    return copy_run(run_3d, tmp_path)


def stored_logits(run):
    """Test logits and labels of inference_outputs.pt, validation ones of the command's cache."""
    layout = runs.RunLayout(run)
    test = torch.load(layout.inference_outputs, weights_only=True)
    val = torch.load(layout.calibration_dir / explain_calibrate.FILES["val_outputs"], weights_only=True)
    return (val["logits"].double().numpy(), val["labels"].numpy(), test["logits"].double().numpy(),
            test["labels"].numpy())


def test_2d_run_values_come_from_the_library_and_every_file_is_written(run2d, capsys):
    start = time.perf_counter()
    code = calibrate("--run", str(run2d), "--bootstrap", BOOTSTRAP)
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == 0, err
    layout = runs.RunLayout(run2d)
    folder = layout.calibration_dir
    assert {p.name for p in folder.iterdir()} == set(explain_calibrate.FILES.values())
    val_z, val_y, test_z, test_y = stored_logits(run2d)

    # the validation logits are best.pt's on the whole validation split
    info = data.dataset_info("breastmnist")
    assert np.array_equal(val_y, data.load_split(info, runs.default_data_dir(), "val").labels.numpy())

    # temperature, ECE and conformal sets are the library's on those logits
    task = read_json(layout.metrics_json)["task"]
    fit = temperature.fit_temperature(task, val_z, val_y)
    record = read_json(folder / "temperature.json")
    assert record["temperature"] == fit.temperature and record["task"] == task and record["per_label"] is False
    summary = read_json(folder / "calibration_summary.json")
    after = temperature.apply_temperature(task, test_z, fit.temperature)
    assert summary["calibration"]["after"]["ece"]["estimate"] == pytest.approx(measures.ece(task, after, test_y),
                                                                               rel=1e-12)
    before = temperature.apply_temperature(task, test_z, 1.0)
    assert summary["calibration"]["before"]["ece"]["estimate"] == pytest.approx(measures.ece(task, before, test_y),
                                                                                rel=1e-12)
    assert summary["accuracy"]["accuracy"]["estimate"] == pytest.approx(read_json(layout.metrics_json)["test"]["acc"])
    val_p = temperature.apply_temperature(task, val_z, fit.temperature)
    columns, rows = read_csv(folder / "conformal_sets.csv")
    for method, score, class_conditional in [("lac", "lac", False), ("aps_class_conditional", "aps", True)]:
        sets = conformal.prediction_sets(conformal.calibrate(task, val_p, val_y, alpha=0.1, score=score,
                                                             class_conditional=class_conditional), after)
        assert [r[f"{method}_set"] for r in rows] == [";".join(map(str, np.flatnonzero(s))) for s in sets]
        assert [int(r[f"{method}_size"]) for r in rows] == sets.sum(axis=1).tolist()
    assert columns[:4] == ["id", "label", "predicted", "correct"] and len(rows) == len(test_y)

    # the tables
    columns, rows = read_csv(folder / "thresholds.csv")
    assert [r["rule"] for r in rows] == ["youden", "sensitivity", "specificity", "medmnist"]
    assert {"threshold", "sensitivity", "sensitivity_low", "sensitivity_high", "ppv", "npv", "balanced_accuracy",
            "tp", "fn"} <= set(columns)
    columns, rows = read_csv(folder / "selective.csv")
    assert [r["score"] for r in rows] == ["max_probability", "conformal_set_size"]
    assert {"aurc", "aurc_low", "aurc_high", "augrc", "augrc_low", "augrc_high", "eaurc",
            "augrc_minus_best"} <= set(columns)
    errors = ~task_of(task).correct(test_y, task_of(task).predictions(after))
    msp = np.maximum(after[:, 1], after[:, 0])
    assert float(rows[0]["augrc"]) == pytest.approx(selective.augrc(msp, errors), rel=1e-12)
    columns, rows = read_csv(folder / "conformal.csv")
    assert [r["method"] for r in rows] == ["lac", "aps", "lac_class_conditional", "aps_class_conditional"]
    assert {"coverage", "coverage_low", "coverage_high", "mean_set_size", "abstain_fraction"} <= set(columns)
    columns, rows = read_csv(folder / "conformal_per_class.csv")
    assert columns == ["method", "class", "n", "coverage", "coverage_low", "coverage_high"] and len(rows) == 8
    columns, rows = read_csv(folder / "reliability_bins.csv")
    assert len(rows) == 30 and {"accuracy_low", "accuracy_high"} <= set(columns)
    columns, rows = read_csv(folder / "selective_curves.csv")
    assert columns == ["score", "threshold", "coverage", "selective_risk", "generalized_risk"]
    assert float(rows[-1]["coverage"]) == 1.0

    # the report, the figures, run.json and the printed summary
    report = (folder / "calibration_report.md").read_text()
    assert f"T = {fit.temperature:.3f}" in report and "95% CI" in report and "MC-dropout measures are not" in report
    for name in ("reliability_diagram.png", "risk_coverage.png", "conformal_coverage.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = {a["path"]: a["created_by"] for a in read_json(layout.run_json)["artifacts"]}
    assert all(recorded.get(f"calibration/{name}") == "explain.py calibrate"
               for name in explain_calibrate.FILES.values())
    assert f"temperature T = {fit.temperature:.3f}" in out and "95% CI" in out
    assert f"wrote {len(explain_calibrate.FILES)} files to {folder}" in out
    with capsys.disabled():
        print(f"\n2D 28px calibrate (first call, bootstrap {BOOTSTRAP}): {seconds:.2f}s")


def test_the_validation_pass_is_cached_while_best_pt_is_unchanged(run2d, monkeypatch, capsys):
    assert calibrate("--run", str(run2d), "--bootstrap", "50") == 0
    first = read_json(run2d / "calibration" / "calibration_summary.json")

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("the validation logits should have come from the cache")

    monkeypatch.setattr("medscope.activations.collect_outputs", no_forward_pass)
    start = time.perf_counter()
    assert calibrate("--run", str(run2d), "--bootstrap", "2000") == 0, capsys.readouterr().err
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "reused from val_outputs.pt" in out
    second = read_json(run2d / "calibration" / "calibration_summary.json")
    assert second["temperature"] == first["temperature"] and second["inputs"]["validation"]["reused"] is True
    with capsys.disabled():
        print(f"\n2D 28px calibrate (cached validation logits, bootstrap 2000): {seconds:.2f}s")

    # new weights in best.pt: the cache no longer matches, so the command must run a forward pass
    checkpoint = torch.load(run2d / "best.pt", weights_only=True)
    name = next(k for k, v in checkpoint["model"].items() if v.dtype.is_floating_point)
    checkpoint["model"][name] = checkpoint["model"][name] * 1.01
    torch.save(checkpoint, run2d / "best.pt")
    assert calibrate("--run", str(run2d), "--bootstrap", "50") == 1  # the forward pass was attempted
    assert "should have come from the cache" in capsys.readouterr().err


def test_mc_dropout_results_of_the_test_split_join_the_ranking(run2d, capsys):
    import explain

    assert cli.run(explain.main, ["uncertainty", "--run", str(run2d), "--passes", "3"]) == 0
    capsys.readouterr()
    assert calibrate("--run", str(run2d), "--bootstrap", BOOTSTRAP) == 0, capsys.readouterr().err
    summary = read_json(run2d / "calibration" / "calibration_summary.json")
    assert summary["mc_dropout"]["used"] is True and "3 passes" in summary["mc_dropout"]["source"]
    scores = {e["name"]: e for e in summary["selective"]["scores"]}
    assert set(scores) == {"max_probability", "conformal_set_size", "mc_predictive_entropy", "mc_expected_entropy",
                           "mc_mutual_information", "mc_std_predicted_probability"}
    _, rows = read_csv(run2d / "uncertainty" / "uncertainty_per_image.csv")
    mutual_information = np.array([float(r["mutual_information"]) for r in rows])
    _, _, test_z, test_y = stored_logits(run2d)
    task = summary["task"]
    after = temperature.apply_temperature(task, test_z, summary["temperature"]["temperature"])
    errors = ~task_of(task).correct(test_y, task_of(task).predictions(after))
    assert scores["mc_mutual_information"]["augrc"]["estimate"] == pytest.approx(
        selective.augrc(-mutual_information, errors), rel=1e-12)
    best = min(scores.values(), key=lambda e: e["augrc"]["estimate"])
    assert summary["selective"]["best"]["name"] == best["name"]
    assert "MC-dropout measures come from" in (run2d / "calibration" / "calibration_report.md").read_text()


def test_mc_dropout_results_of_another_split_are_left_out_with_the_reason(run2d, capsys):
    import explain

    assert cli.run(explain.main, ["uncertainty", "--run", str(run2d), "--passes", "2", "--split", "val"]) == 0
    assert calibrate("--run", str(run2d), "--bootstrap", "50") == 0
    summary = read_json(run2d / "calibration" / "calibration_summary.json")
    assert summary["mc_dropout"]["used"] is False and "val split, not test" in summary["mc_dropout"]["reason"]
    assert "MC dropout: not included" in capsys.readouterr().out


@pytest.mark.slow
def test_3d_run_works(run3d, capsys):
    start = time.perf_counter()
    code = calibrate("--run", str(run3d), "--bootstrap", "2000")
    seconds = time.perf_counter() - start
    assert code == 0, capsys.readouterr().err
    folder = runs.RunLayout(run3d).calibration_dir
    assert {p.name for p in folder.iterdir()} == set(explain_calibrate.FILES.values())
    val_z, val_y, _, _ = stored_logits(run3d)
    assert val_z.shape == (data.dataset_info("adrenalmnist3d").n_samples["val"], 2)
    fit = temperature.fit_temperature("binary-class", val_z, val_y)
    assert read_json(folder / "temperature.json")["temperature"] == fit.temperature
    with capsys.disabled():
        print(f"\n3D 28^3 calibrate (first call, bootstrap 2000): {seconds:.2f}s")


@pytest.mark.parametrize("argv, message", [
    (["--alpha", "1.5"], "strictly between 0 and 1"),
    (["--alpha", "0"], "strictly between 0 and 1"),
    (["--sensitivity", "0"], "expected a number in (0, 1]"),
    (["--bins", "0"], "positive integer"),
    (["--bootstrap", "-3"], "positive integer"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, at most 4294967295, got -1"),
])
def test_bad_values_are_one_line_and_exit_2_with_nothing_written(run2d, capsys, argv, message):
    assert calibrate("--run", str(run2d), *argv) == 2
    one_line_error(capsys, message)
    assert not runs.RunLayout(run2d).calibration_dir.exists()


def test_an_unknown_run_is_exit_2(tmp_path, capsys):
    assert calibrate("--results-dir", str(tmp_path), "--run", "0042") == 2
    one_line_error(capsys, "no run")


def test_a_run_without_test_outputs_is_exit_2(run2d, capsys):
    runs.RunLayout(run2d).inference_outputs.unlink()
    assert calibrate("--run", str(run2d)) == 2
    one_line_error(capsys, "has no inference_outputs.pt")


def test_test_outputs_of_other_weights_are_refused(run2d, capsys):
    path = runs.RunLayout(run2d).inference_outputs
    outputs = torch.load(path, weights_only=True)
    outputs["best_epoch"] = 99
    torch.save(outputs, path)
    assert calibrate("--run", str(run2d), "--bootstrap", "20") == 2
    one_line_error(capsys, "is from epoch 99 but best.pt from epoch")


def test_the_module_runs_on_its_own(run2d, capsys):
    assert cli.run(explain_calibrate.main, ["--run", str(run2d), "--bootstrap", "20", "--alpha", "0.2"]) == 0
    summary = read_json(run2d / "calibration" / "calibration_summary.json")
    assert summary["conformal"]["alpha"] == 0.2 and summary["bootstrap"]["n_resamples"] == 20
