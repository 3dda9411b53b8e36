"""compare.py and medscope.compare: runs side by side, with intervals and paired tests.

Four real short runs (breastmnist, ResNet-18 and the small CNN, seeds 1 and 2) are
trained once for the module; every number of the comparison is checked against
the files train.py wrote and against the statistics functions called directly.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import compare
from medscope import atomic
from medscope.app import cli
from medscope.baselines import SOURCE, best_baseline, reference_baseline
from medscope.compare import paths, plots, report, select, tables
from medscope.compare.scores import load_run_scores
from medscope.errors import UsageError
from medscope.runs import Run, RunLayout, list_runs
from medscope.stats.bootstrap import bootstrap_distributions, metric_intervals, percentile_interval
from medscope.stats.delong import delong_interval, delong_test
from medscope.stats.multiplicity import holm
from medscope.stats.paired import paired_bootstrap
from medscope.stats.seeds import paired_seed_test, seed_summary, unpaired_permutation_test
from tests.conftest import one_line_error, train_run

N_RESAMPLES = 500  # enough to check identities, quick on two cores
MODELS, SEEDS = ("resnet18", "cnn"), ("1", "2")


@pytest.fixture(scope="module")
def results(tmp_path_factory, medmnist_dir) -> Path:
    """0001/0002: ResNet-18 seeds 1, 2; 0003/0004: CNN seeds 1, 2 (one epoch, 128 training images)."""
    work = tmp_path_factory.mktemp("compare")
    for model in MODELS:
        for seed in SEEDS:
            train_run(work, medmnist_dir, "--dataset", "breastmnist", "--model", model, "--epochs", "1",
                      "--subset", "128", "--seed", seed, "--no-amp")
    return work / "results"


@pytest.fixture(scope="module")
def names(results) -> list[str]:
    return sorted(r.name for r in list_runs(results))


def stored(results: Path, name: str) -> dict:
    """What train.py wrote for a run, read here without medscope.compare."""
    layout = RunLayout(results / name)
    outputs = torch.load(layout.inference_outputs, map_location="cpu", weights_only=True)
    metrics = json.loads(layout.metrics_json.read_text())
    config = json.loads(layout.run_json.read_text())["config"]
    return {"labels": outputs["labels"].numpy(), "probabilities": outputs["probabilities"].numpy().astype(np.float64),
            "task": outputs["task"], "test": metrics["test"], "seed": config["seed"], "model": config["model"]}


def copy_scores(results: Path, name: str, dest: Path) -> Run:
    """A run folder with only what a comparison reads (run.json, metrics.json, inference_outputs.pt)."""
    import shutil

    source, target = RunLayout(results / name), RunLayout(dest / name)
    target.root.mkdir(parents=True)
    for attr in ("run_json", "metrics_json", "inference_outputs"):
        shutil.copy2(getattr(source, attr), getattr(target, attr))
    return Run(target.root)


def run_compare(capsys, *args) -> tuple[int, str, str]:
    code = cli.run(compare.main, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def full(results, names, tmp_path_factory) -> dict:
    """``compare.py`` on all four runs, into a fresh --out folder."""
    out = tmp_path_factory.mktemp("compare-out") / "all"
    code = cli.run(compare.main, ["--results-dir", str(results), *names, "--bootstrap", str(N_RESAMPLES),
                                  "--seed", "3", "--out", str(out)])
    assert code == 0
    with open(out / paths.CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(out / paths.TESTS_CSV, newline="") as fh:
        tests = list(csv.DictReader(fh))
    return {"out": out, "rows": rows, "tests": tests, "json": json.loads((out / paths.JSON).read_text())}


def by_name(rows, kind="run") -> dict:
    return {r["name"]: r for r in rows if r["kind"] == kind}


# ---------------------------------------------------------------- the table


def test_the_estimates_are_metrics_json_numbers_exactly(full, results, names):
    rows = by_name(full["rows"])
    assert list(rows) == names
    for name in names:
        truth = stored(results, name)
        assert float(rows[name]["auc"]) == truth["test"]["auc"]
        assert float(rows[name]["acc"]) == truth["test"]["acc"]
        assert rows[name]["model"] == truth["model"] and int(rows[name]["seed"]) == truth["seed"]
        assert rows[name]["status"] == "completed" and int(rows[name]["n"]) == truth["test"]["n"] == 156


def test_the_intervals_are_metric_intervals_and_delong_called_directly(full, results, names):
    rows = by_name(full["rows"])
    for name in names:
        truth = stored(results, name)
        direct = metric_intervals(truth["task"], truth["labels"], truth["probabilities"], n_resamples=N_RESAMPLES,
                                  seed=3)
        for metric in tables.METRICS:
            assert float(rows[name][f"{metric}_low"]) == direct[metric]["low"]
            assert float(rows[name][f"{metric}_high"]) == direct[metric]["high"]
        assert float(rows[name]["balanced_acc"]) == direct["balanced_acc"]["estimate"]
        delong = delong_interval(truth["labels"], truth["probabilities"][:, -1], 0.95)
        assert float(rows[name]["auc_delong_low"]) == delong["low"]
        assert float(rows[name]["auc_delong_high"]) == delong["high"]


def test_seed_groups_hold_mean_sd_t_interval_and_pooled_interval(full, results, names):
    groups = by_name(full["rows"], "group")
    assert len(groups) == 2
    for model in MODELS:
        (label,) = [g for g in groups if g.startswith(model + ":")]
        row = groups[label]
        members = [n for n in names if stored(results, n)["model"] == model]
        assert row["runs"].split(";") == members and row["seed"] == "1;2"
        truth = [stored(results, n) for n in members]
        for metric in ("auc", "acc"):
            expected = seed_summary([t["test"][metric] for t in truth], 0.95)
            assert float(row[metric]) == expected["mean"] and float(row[f"{metric}_sd"]) == expected["sd"]
            assert float(row[f"{metric}_t_low"]) == expected["low"]
            assert float(row[f"{metric}_t_high"]) == expected["high"]
        draws = bootstrap_distributions(truth[0]["task"], truth[0]["labels"], [t["probabilities"] for t in truth],
                                        n_resamples=N_RESAMPLES, seed=3)
        low, high, _ = percentile_interval(np.mean([d["auc"] for d in draws], axis=0), 0.95)
        assert (float(row["auc_low"]), float(row["auc_high"])) == (low, high)
        assert "mean of 2 seeds (1, 2)" in label


def test_baseline_rows_hold_the_paper_numbers_and_their_source(full):
    baselines = by_name(full["rows"], "baseline")
    assert list(baselines) == ["ResNet-18 (28)", "Google AutoML Vision"]
    assert (float(baselines["ResNet-18 (28)"]["auc"]), float(baselines["ResNet-18 (28)"]["acc"])) == (0.901, 0.863)
    best = best_baseline("breastmnist")
    assert (float(baselines[best.method]["auc"]), float(baselines[best.method]["acc"])) == (0.919, 0.861)
    assert all("MedMNIST v2" in b["source"] and "Table 3" in b["source"] for b in baselines.values())
    assert full["json"]["baseline_source"] == SOURCE
    assert reference_baseline("breastmnist", 28, "cnn").method == "ResNet-18 (28)"  # one row for both models


def test_csv_columns_and_values_round_trip(full):
    with open(full["out"] / paths.CSV, newline="") as fh:
        assert next(csv.reader(fh)) == report.COLUMNS
    with open(full["out"] / paths.TESTS_CSV, newline="") as fh:
        assert next(csv.reader(fh)) == report.TEST_COLUMNS
    # the JSON record holds the same rows, numbers written exactly (repr round-trips)
    for csv_row, json_row in zip(full["rows"], full["json"]["rows"]):
        for key, value in json_row.items():
            if isinstance(value, float):
                assert float(csv_row[key]) == value
    assert [r["kind"] for r in full["rows"]] == ["run"] * 4 + ["group"] * 2 + ["baseline"] * 2


# ---------------------------------------------------------------- the tests


def test_run_pairs_are_seed_matched_and_delong_and_bootstrap_match_direct_calls(full, results, names):
    r1, r2, c1, c2 = names  # resnet18 seeds 1, 2; cnn seeds 1, 2
    run_tests = [t for t in full["tests"] if t["between"] == "runs"]
    pairs = {(t["a"], t["b"]) for t in run_tests}
    assert pairs == {(r1, c1), (r2, c2)}  # equal seeds only: both models ran seeds 1 and 2
    for t in run_tests:
        a, b = stored(results, t["a"]), stored(results, t["b"])
        if t["method"].startswith("DeLong"):
            direct = delong_test(a["labels"], a["probabilities"][:, -1], b["probabilities"][:, -1])
            assert float(t["p_value"]) == direct["p_value"] and float(t["statistic"]) == direct["z"]
            assert float(t["difference"]) == direct["difference"]
        else:
            direct = paired_bootstrap(a["task"], a["labels"], a["probabilities"], b["probabilities"],
                                      n_resamples=N_RESAMPLES, seed=3)["auc"]
            assert float(t["p_value"]) == direct["p_value"]
            assert (float(t["low"]), float(t["high"])) == (direct["low"], direct["high"])
            assert float(t["difference"]) == pytest.approx(direct["difference"], abs=1e-12)
    assert sorted(t["method"].split()[0] for t in run_tests) == ["DeLong's", "DeLong's", "paired", "paired"]


def test_the_seed_groups_are_tested_with_paired_seed_test(full, results, names):
    (seed_row,) = [t for t in full["tests"] if t["between"] == "seed groups"]
    r1, r2, c1, c2 = names
    a = [stored(results, n)["test"]["auc"] for n in (r1, r2)]
    b = [stored(results, n)["test"]["auc"] for n in (c1, c2)]
    direct = paired_seed_test(a, b)
    assert float(seed_row["p_value"]) == direct["p_value"] and seed_row["method"] == direct["method"]
    assert float(seed_row["difference"]) == direct["mean_difference"]
    assert seed_row["a"].startswith("resnet18") and seed_row["b"].startswith("cnn")


def test_holm_adjusts_every_p_value_of_the_call_together(full):
    raw = [float(t["p_value"]) for t in full["tests"]]
    assert len(raw) == 5  # 2 pairs x (DeLong + bootstrap) + 1 seed test
    assert [float(t["p_holm"]) for t in full["tests"]] == holm(raw)


def test_unmatched_seeds_use_the_unpaired_permutation_test(results, names):
    scores = [load_run_scores(Run(results / n)) for n in names]
    scores[2] = dataclasses.replace(scores[2], seed=7)  # the CNN ran seeds 7 and 2, ResNet-18 1 and 2
    comparison = tables.compare(scores, n_resamples=0)
    (seed_test,) = [t for t in comparison.tests if t.between == tables.BETWEEN_GROUPS]
    a = [s.recorded["auc"] for s in scores[:2]]
    b = [scores[3].recorded["auc"], scores[2].recorded["auc"]]  # by seed: 2, 7
    direct = unpaired_permutation_test(a, b, seed=0)
    assert seed_test.p_value == direct["p_value"] and seed_test.method == direct["method"]
    # without matching seeds every run of one model is tested against every run of the other
    assert len([t for t in comparison.tests if t.between == tables.BETWEEN_RUNS]) == 4


def test_baseline_run_is_tested_against_every_other_run(results, names, capsys, tmp_path):
    code, out, _ = run_compare(capsys, "--results-dir", results, *names, "--baseline", names[0], "--metric", "acc",
                               "--bootstrap", "200", "--out", tmp_path / "b")
    assert code == 0
    with open(tmp_path / "b" / paths.TESTS_CSV, newline="") as fh:
        tests = list(csv.DictReader(fh))
    run_tests = [t for t in tests if t["between"] == "runs"]
    assert [(t["a"], t["b"]) for t in run_tests] == [(n, names[0]) for n in names[1:]]
    assert all(t["metric"] == "acc" and t["method"].startswith("paired") for t in run_tests)  # DeLong is AUC only
    (group_test,) = [t for t in tests if t["between"] == "seed groups"]
    assert group_test["b"].startswith("resnet18")  # the group holding the baseline run


def test_bootstrap_zero_leaves_out_bootstrap_intervals_but_keeps_delong(results, names, capsys, tmp_path):
    code, _, _ = run_compare(capsys, "--results-dir", results, names[0], names[2], "--bootstrap", "0",
                             "--out", tmp_path / "z")
    assert code == 0
    with open(tmp_path / "z" / paths.CSV, newline="") as fh:
        rows = by_name(list(csv.DictReader(fh)))
    assert rows[names[0]]["auc_low"] == "" and rows[names[0]]["auc_delong_low"] != ""
    with open(tmp_path / "z" / paths.TESTS_CSV, newline="") as fh:
        assert [t["method"] for t in csv.DictReader(fh)] == [tables.RUN_TEST_DELONG]
    assert "--bootstrap 0" in (tmp_path / "z" / paths.MD).read_text()


# ---------------------------------------------------------------- files and figure


def test_the_output_folder_holds_every_file_and_the_markdown_names_them(full, names):
    out = full["out"]
    for name in (paths.MD, paths.CSV, paths.TESTS_CSV, paths.JSON, paths.forest_png("auc")):
        assert (out / name).is_file(), name
    text = (out / paths.MD).read_text()
    assert all(f"| {n} |" in text for n in names) and "ResNet-18 (28)" in text and "Holm" in text
    assert "forest_auc.png" in text and SOURCE in text
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_forest_plot_labels_every_row_in_full(results, names):
    comparison = tables.compare([load_run_scores(Run(results / n)) for n in names], n_resamples=200)
    fig = plots.forest_plot(comparison, "auc")
    try:
        (ax,) = fig.axes[:1]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        groups = [g.label for g in comparison.tables[0].groups]
        assert labels == names + groups + ["paper: ResNet-18 (28)", "paper: Google AutoML Vision"]
        assert ax.get_xlabel() == "AUC (95% intervals)"
        assert "breastmnist28" in ax.get_title(loc="left")
        fig.canvas.draw()  # every label lies inside the saved (tight) figure: nothing cut off
        renderer = fig.canvas.get_renderer()
        tight = fig.get_tightbbox(renderer)
        for text in ax.get_yticklabels():
            box = text.get_window_extent(renderer).transformed(fig.dpi_scale_trans.inverted())
            assert tight.x0 <= box.x0 + 1e-6 and box.x1 <= tight.x1 + 1e-6
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "published (MedMNIST v2)" in legend and "seed mean: t-interval" in legend
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    fig = plots.forest_plot(comparison, "balanced_acc")  # no published numbers: no baseline rows
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == groups[-1]
    assert fig.axes[0].get_xlabel().startswith("balanced accuracy")


def test_default_folder_is_new_every_time(results, names, capsys):
    outs = []
    for _ in range(2):
        code, out, _ = run_compare(capsys, "--results-dir", results, names[0], names[2], "--bootstrap", "50")
        assert code == 0
        outs.append(next(line.split(": ", 1)[1].rstrip("/") for line in out.splitlines()
                         if line.startswith("comparison of")))
    assert outs[0] != outs[1]
    for out in map(Path, outs):
        assert out.parent == paths.comparisons_dir(results) and "_0001-0003_breastmnist28" in out.name
        assert (out / paths.CSV).is_file()


def test_an_existing_out_folder_is_never_overwritten(results, names, capsys, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code, _, _ = run_compare(capsys, "--results-dir", results, names[0], names[1], "--out", tmp_path / "taken")
    assert code == 2
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------- selection


def test_runs_are_selected_by_name_prefix_glob_and_path(results, names):
    def chosen(*specs):
        return [s.run.name for s in select.select_runs(results, specs)]

    assert chosen("0001", "0003") == [names[0], names[2]]
    assert chosen("0*_breastmnist28_cnn") == names[2:]
    assert chosen("000") == names  # a prefix selects every run it starts
    assert chosen(str(results / names[3]), names[1]) == [names[1], names[3]]
    assert chosen("0002", "0*2_*") == [names[1]]  # each run once
    assert [s.named for s in select.select_runs(results, ["0001", "0*cnn"])] == [True, False, False]


def test_compare_selects_by_glob_on_the_command_line(results, names, capsys, tmp_path):
    code, out, _ = run_compare(capsys, "--results-dir", results, "0*_breastmnist28_resnet18", "--bootstrap", "50",
                               "--out", tmp_path / "g")
    assert code == 0
    with open(tmp_path / "g" / paths.CSV, newline="") as fh:
        assert list(by_name(list(csv.DictReader(fh)))) == names[:2]
    assert "seeds of one configuration" in out  # no pairs of different models: said, not silently empty


# ---------------------------------------------------------------- bad input


def test_no_match_is_one_line_and_exit_2(results, capsys):
    assert cli.run(compare.main, ["--results-dir", str(results), "0099"]) == 2
    one_line_error(capsys, "no run named '0099'")
    assert cli.run(compare.main, ["--results-dir", str(results), "*pneumonia*"]) == 2
    one_line_error(capsys, "no run matches '*pneumonia*'")
    assert cli.run(compare.main, ["--results-dir", str(results)]) == 2
    one_line_error(capsys, "nothing to compare")


def test_one_run_still_gives_a_table_but_no_tests(results, names, capsys, tmp_path):
    code, out, _ = run_compare(capsys, "--results-dir", results, names[0], "--bootstrap", "50", "--out", tmp_path / "o")
    assert code == 0 and "one run only, nothing to test" in out
    with open(tmp_path / "o" / paths.TESTS_CSV, newline="") as fh:
        assert list(csv.DictReader(fh)) == []
    with open(tmp_path / "o" / paths.CSV, newline="") as fh:
        assert [r["name"] for r in csv.DictReader(fh)][0] == names[0]


def test_runs_on_different_test_splits_are_not_paired(results, names, capsys, tmp_path):
    other = tmp_path / "results"
    for name in names[:2]:
        copy_scores(results, name, other)
    layout = RunLayout(other / names[1])
    outputs = torch.load(layout.inference_outputs, map_location="cpu", weights_only=True)
    outputs["labels"] = outputs["labels"].flip(0)  # the same images in another order
    atomic.save_torch(layout.inference_outputs, outputs)
    assert cli.run(compare.main, ["--results-dir", str(other), names[0], names[1]]) == 2
    err = one_line_error(capsys, "were not evaluated on the same test split")
    assert names[0] in err and names[1] in err and "cannot be paired" in err


def test_val_split_without_stored_scores_is_one_line(results, names, capsys):
    assert cli.run(compare.main, ["--results-dir", str(results), names[0], names[1], "--split", "val"]) == 2
    one_line_error(capsys, "stores no val scores")


def test_an_unknown_baseline_run_is_one_line(results, names, capsys):
    assert cli.run(compare.main, ["--results-dir", str(results), names[0], "--baseline", "0099"]) == 2
    one_line_error(capsys, "no run named '0099'")


def test_bad_settings_are_one_line(results, names, capsys):
    for args, message in ((["--metric", "f1"], "invalid choice"), (["--bootstrap", "-1"], "an integer >= 0"),
                          (["--level", "1.5"], "between 0 and 1")):
        assert cli.run(compare.main, ["--results-dir", str(results), names[0], *args]) == 2
        one_line_error(capsys, message)


# ---------------------------------------------------------------- pure parts


def test_multiclass_runs_compare_without_delong():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(90, 1))
    run_scores = []
    for k, seed in enumerate((1, 2)):
        logits = rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[labels[:, 0]]
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        run_scores.append(_fake(f"000{k + 1}_x", labels, p, model=("cnn", "resnet18")[k], seed=seed))
    comparison = tables.compare(run_scores, n_resamples=200, seed=1)
    (table,) = comparison.tables
    assert all(r.delong is None for r in table.runs)
    (test,) = comparison.tests
    direct = paired_bootstrap("multi-class", labels, run_scores[0].probabilities, run_scores[1].probabilities,
                              n_resamples=200, seed=1)["auc"]
    assert test.p_value == direct["p_value"] and (test.low, test.high) == (direct["low"], direct["high"])
    assert table.baselines == []  # no published numbers for a made-up dataset


def test_labels_must_be_identical_to_pair(tmp_path):
    labels = np.array([[0], [1], [0], [1]])
    p = np.array([[.8, .2], [.3, .7], [.6, .4], [.1, .9]])
    a, b = _fake("0001_x", labels, p), _fake("0002_x", labels[::-1].copy(), p)
    with pytest.raises(UsageError, match="their labels differ, first at row 0"):
        tables.compare([a, b])
    with pytest.raises(UsageError, match="--baseline 0003_x: not among"):
        tables.compare([a], baseline="0003_x")
    other = _fake("0003_y", labels, p, dataset="othermnist")
    with pytest.raises(UsageError, match="on another test split, and cannot be compared with it"):
        tables.compare([a, other], baseline="0001_x")


def test_short_names_and_the_comparisons_folder(tmp_path):
    assert paths.comparisons_dir(tmp_path) == tmp_path / "comparisons"
    assert paths.short_name(["0001_a", "0004_b"], ["breastmnist28", "pneumoniamnist28"]) == \
        "0001-0004_breastmnist28+pneumoniamnist28"
    assert len(paths.short_name(["0001_a"], ["x" * 200])) <= paths.MAX_SHORT_NAME


def test_documented_examples_hold():
    import doctest

    from medscope.compare import scores, select as select_module, study

    for module in (tables, report, paths, select_module, scores, study):
        assert doctest.testmod(module).failed == 0, module.__name__


def _fake(name, labels, probabilities, *, model="cnn", seed=1, dataset="madeupmnist"):
    """RunScores for the pure tests (no run folder is read)."""
    from medscope.compare.scores import RunScores

    task = "binary-class" if probabilities.shape[1] == 2 else "multi-class"
    config = {"dataset": dataset, "size": 28, "model": model, "seed": seed}
    return RunScores(run=Run(Path(name)), split="test", dataset=dataset, size=28, model=model, seed=seed,
                     status="completed", task=task, class_names=tuple(str(k) for k in range(probabilities.shape[1])),
                     labels=np.asarray(labels, dtype=np.int64), probabilities=np.asarray(probabilities, float),
                     indices=None, recorded={}, config=config)


# ---------------------------------------------------------------- studies


def test_compare_study_compares_the_runs_of_one_or_more_studies(results, names, full, capsys, tmp_path):
    from medscope.compare.study import read_study, write_study

    resnet = write_study(results, None, [Run(results / n) for n in names[:2]], n_resamples=N_RESAMPLES, seed=3,
                         created_by="test")
    cnn = write_study(results, None, [Run(results / n) for n in names[2:]], n_resamples=N_RESAMPLES, seed=3)
    assert resnet.folder.name == "0001-0002_breastmnist28_resnet18_seeds"
    assert cnn.folder.name == "0003-0004_breastmnist28_cnn_seeds"
    assert read_study(results, resnet.folder.name).run_specs == names[:2]
    # the study's rows are the comparison's rows for the same runs and settings
    with open(resnet.csv, newline="") as fh:
        study_rows = by_name(list(csv.DictReader(fh)))
    assert study_rows == {n: r for n, r in by_name(full["rows"]).items() if n in names[:2]}

    code, out, _ = run_compare(capsys, "--results-dir", results, "--study", "0001-0002*", cnn.folder.name,
                               "--bootstrap", N_RESAMPLES, "--seed", 3, "--out", tmp_path / "s")
    assert code == 0
    with open(tmp_path / "s" / paths.CSV, newline="") as fh:
        assert list(csv.DictReader(fh)) == full["rows"]  # the same four runs, the same numbers
    assert json.loads((tmp_path / "s" / paths.JSON).read_text())["studies"] == [resnet.folder.name,
                                                                                cnn.folder.name]


def test_an_unknown_study_is_one_line(results, capsys):
    assert cli.run(compare.main, ["--results-dir", str(results), "--study", "nosuchstudy"]) == 2
    one_line_error(capsys, "no study named 'nosuchstudy'")


def test_holm_runs_over_every_split_of_the_call():
    rng = np.random.default_rng(4)
    run_scores = []
    for dataset in ("breastmnist", "pneumoniamnist"):
        labels = (rng.random((60, 1)) < 0.6).astype(int)
        for model in ("cnn", "resnet18"):
            p = np.clip(0.3 * labels[:, 0] + 0.7 * rng.random(60), 0, 1)
            run_scores.append(_fake(f"{len(run_scores) + 1:04d}_{dataset}", labels, np.stack([1 - p, p], 1),
                                    model=model, dataset=dataset))
    comparison = tables.compare(run_scores, n_resamples=100)
    assert [len(t.tests) for t in comparison.tables] == [2, 2]
    assert [t.p_holm for t in comparison.tests] == holm([t.p_value for t in comparison.tests])
    assert [b.method for b in comparison.tables[1].baselines] == ["ResNet-18 (28)", "Google AutoML Vision"]


def test_a_run_without_scores_is_left_out_of_a_pattern_but_not_when_named(results, names, capsys, tmp_path):
    other = tmp_path / "results"
    for name in names[:3]:
        copy_scores(results, name, other)
    unfinished = Run(other / names[2])
    unfinished.layout.inference_outputs.unlink()
    unfinished.update(status="interrupted")
    code, out, _ = run_compare(capsys, "--results-dir", other, "0*", "--bootstrap", "20", "--out", tmp_path / "p")
    assert code == 0 and f"note: {names[2]} left out: run {names[2]} has no inference_outputs.pt" in out
    assert cli.run(compare.main, ["--results-dir", str(other), names[0], names[2]]) == 2
    one_line_error(capsys, f"run {names[2]} has no inference_outputs.pt (status: interrupted)")
