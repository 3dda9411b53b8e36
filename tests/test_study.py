"""medscope.compare.study: study records under <results>/studies/<name>/.

Run folders are made by hand here (run.json, metrics.json, inference_outputs.pt
in train.py's format) so the record's rules are checked in milliseconds;
tests/test_compare.py writes studies of real trained runs.
"""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from medscope import atomic
from medscope.compare import report
from medscope.compare.study import (STUDY_CSV, STUDY_JSON, default_study_name, list_studies, read_study,
                                    select_studies, study_paths, write_study)
from medscope.errors import UsageError
from medscope.metrics import acc_score, auc_score
from medscope.runs import ResultsLayout, Run, create_run
from medscope.stats.bootstrap import metric_intervals
from medscope.stats.seeds import seed_summary

N = 80


def made_run(results, seed: int, *, model="cnn", scores=True, status="completed", run_name=None) -> Run:
    """A run folder as train.py leaves it (the parts a study reads), with random but fixed scores."""
    run = create_run(results, None, f"breastmnist28_{model}", run_name=run_name)
    run.update(status=status, config={"dataset": "breastmnist", "size": 28, "model": model, "seed": seed,
                                      "epochs": 1, "results_dir": str(results)},
               dataset={"flag": "breastmnist", "size": 28, "task": "binary-class",
                        "class_names": ["malignant", "normal, benign"]})
    if scores:
        labels = (np.arange(N) % 3 != 0).astype(np.int64)[:, None]
        rng = np.random.default_rng(seed)
        p = np.clip(0.35 * labels[:, 0] + 0.65 * rng.random(N), 0, 1).astype(np.float32)
        probabilities = np.stack([1 - p, p], axis=1)
        atomic.save_torch(run.layout.inference_outputs, {
            "probabilities": torch.from_numpy(probabilities), "labels": torch.from_numpy(labels),
            "logits": torch.from_numpy(np.log(probabilities + 1e-6)), "task": "binary-class", "split": "test",
            "class_names": ["malignant", "normal, benign"], "indices": torch.arange(N)})
        atomic.write_json(run.layout.metrics_json, {"test": {
            "auc": auc_score("binary-class", labels, probabilities.astype(np.float64)),
            "acc": acc_score("binary-class", labels, probabilities.astype(np.float64)), "n": N}})
    return run


@pytest.fixture
def three(tmp_path) -> tuple:
    results = tmp_path / "results"
    return results, [made_run(results, seed) for seed in (0, 1, 2)]


def rows_of(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_default_name_is_sequence_range_dataset_model_seeds(three):
    results, runs = three
    paths = write_study(results, None, runs, n_resamples=100)
    assert paths.folder == ResultsLayout(results).studies_dir / "0001-0003_breastmnist28_cnn_seeds"
    assert paths.json.name == STUDY_JSON and paths.csv.name == STUDY_CSV
    assert default_study_name(runs) == paths.folder.name
    assert default_study_name(runs + [made_run(results, 0, model="resnet18")]) == \
        "0001-0004_breastmnist28_cnn+resnet18_seeds"


def test_study_csv_holds_one_row_per_run_the_group_and_the_baselines(three):
    results, runs = three
    paths = write_study(results, "mystudy", runs, n_resamples=200, seed=5, created_by="train.py")
    rows = rows_of(paths.csv)
    with open(paths.csv, newline="") as fh:
        assert next(csv.reader(fh)) == report.COLUMNS
    assert [r["kind"] for r in rows] == ["run"] * 3 + ["group", "baseline", "baseline"]
    aucs = []
    for row, run in zip(rows, runs):
        outputs = torch.load(run.layout.inference_outputs, weights_only=True)
        labels, p = outputs["labels"].numpy(), outputs["probabilities"].numpy().astype(np.float64)
        direct = metric_intervals("binary-class", labels, p, n_resamples=200, seed=5)
        assert row["name"] == run.name and row["status"] == "completed"
        assert float(row["auc"]) == json.loads(run.layout.metrics_json.read_text())["test"]["auc"]
        assert (float(row["auc_low"]), float(row["auc_high"])) == (direct["auc"]["low"], direct["auc"]["high"])
        assert (float(row["balanced_acc_low"]), float(row["balanced_acc_high"])) == \
            (direct["balanced_acc"]["low"], direct["balanced_acc"]["high"])
        aucs.append(float(row["auc"]))
    group = rows[3]
    expected = seed_summary(aucs)
    assert (float(group["auc"]), float(group["auc_sd"]), float(group["auc_t_low"]), float(group["auc_t_high"])) == \
        (expected["mean"], expected["sd"], expected["low"], expected["high"])
    assert group["seed"] == "0;1;2" and group["runs"] == ";".join(r.name for r in runs)
    assert group["auc_low"] and group["auc_high"]  # the pooled interval
    record = json.loads(paths.json.read_text())
    assert record["runs"] == [r.name for r in runs] and record["created_by"] == "train.py"
    assert record["settings"]["bootstrap_resamples"] == 200 and record["settings"]["seed"] == 5
    assert record["rows"][0]["auc"] == float(rows[0]["auc"])


def test_a_run_without_scores_is_listed_with_its_status(three):
    results, runs = three
    interrupted = made_run(results, 3, scores=False, status="interrupted")
    paths = write_study(results, None, runs + [interrupted], n_resamples=50)
    rows = {r["name"]: r for r in rows_of(paths.csv) if r["kind"] == "run"}
    assert rows[interrupted.name]["status"] == "interrupted" and rows[interrupted.name]["auc"] == ""
    assert rows[interrupted.name]["seed"] == "3"
    assert any(interrupted.name in note for note in json.loads(paths.json.read_text())["notes"])


def test_rewriting_refreshes_and_other_runs_under_the_name_are_refused(three):
    results, runs = three
    write_study(results, "s", runs, n_resamples=50)
    write_study(results, "s", runs, n_resamples=60)  # same runs: refreshed
    assert json.loads(study_paths(results, "s").json.read_text())["settings"]["bootstrap_resamples"] == 60
    with pytest.raises(UsageError, match="already exists .* with other runs"):
        write_study(results, "s", runs[:2])
    with pytest.raises(UsageError, match="study name"):
        write_study(results, "bad name/", runs)
    with pytest.raises(UsageError, match="at least one run"):
        write_study(results, "empty", [])


def test_read_list_and_select_studies(three):
    results, runs = three
    write_study(results, "alpha_seeds", runs, n_resamples=20)
    write_study(results, "beta_seeds", runs[:2], n_resamples=20)
    assert list_studies(results) == ["alpha_seeds", "beta_seeds"]
    study = read_study(results, "alpha_seeds")
    assert [r.name for r in study.runs(results)] == [r.name for r in runs]
    assert [s.name for s in select_studies(results, ["*_seeds"])] == ["alpha_seeds", "beta_seeds"]
    assert [s.name for s in select_studies(results, ["beta", "alpha_seeds"])] == ["beta_seeds", "alpha_seeds"]
    with pytest.raises(UsageError, match=r"no study named 'gamma'.*alpha_seeds, beta_seeds"):
        select_studies(results, ["gamma"])
    shutil.rmtree(runs[0].path)
    with pytest.raises(UsageError, match=f"lists run {runs[0].name}, which is not in"):
        study.runs(results)


def test_runs_outside_the_results_folder_are_recorded_by_path(three, tmp_path):
    results, runs = three
    elsewhere = made_run(tmp_path / "elsewhere", 9, run_name="0042_breastmnist28_cnn")
    paths = write_study(results, "mixed", [runs[0], elsewhere], n_resamples=20)
    specs = json.loads(paths.json.read_text())["runs"]
    assert specs == [runs[0].name, str(elsewhere.path.resolve())]
    assert [r.path.resolve() for r in read_study(results, "mixed").runs(results)] == \
        [runs[0].path.resolve(), elsewhere.path.resolve()]
    namesake = made_run(tmp_path / "other", 4)  # 0001_breastmnist28_cnn, as runs[0]
    with pytest.raises(UsageError, match="two runs are named 0001_breastmnist28_cnn"):
        write_study(results, "namesakes", [runs[0], namesake])
