"""medscope.runs: the run folder, the contract between scripts (DESIGN.md)."""
from __future__ import annotations

import json
import re

import pytest

from medscope import atomic, runs
from medscope.errors import UsageError
from medscope.runs import ResultsLayout, RunLayout


def test_layout_names_every_file_of_the_contract(tmp_path):
    layout = RunLayout(tmp_path / "0001_breastmnist28_resnet18")
    names = {
        layout.run_json: "run.json", layout.history_csv: "history.csv", layout.summary_csv: "summary.csv",
        layout.metrics_json: "metrics.json", layout.best_pt: "best.pt", layout.last_pt: "last.pt",
        layout.inference_outputs: "inference_outputs.pt", layout.inference_mean: "inference_mean.json",
        layout.training_curves_png: "training_curves.png", layout.confusion_matrix_png: "confusion_matrix.png",
        layout.sample_predictions_png: "sample_predictions.png",
        layout.tensorboard_scalars_csv: "tensorboard_scalars.csv",
        layout.report_html: "report.html", layout.model_card_md: "model_card.md",
        layout.model_card_json: "model_card.json",
    }
    for path, name in names.items():
        assert path == layout.root / name
    folders = {layout.inference_dir: "inference", layout.complexity_dir: "complexity",
               layout.gradcam_dir: "gradcam", layout.saliency_dir: "saliency",
               layout.uncertainty_dir: "uncertainty", layout.robustness_dir: "robustness",
               layout.calibration_dir: "calibration", layout.export_dir: "export"}
    for path, name in folders.items():
        assert path == layout.root / name
    assert layout.inference_summary_csv == layout.root / "inference" / "inference_summary.csv"
    assert layout.complexity_results_csv == layout.root / "complexity" / "weights_entropy_results.csv"


def test_layout_checkpoint_and_tensorboard_folder(tmp_path):
    layout = RunLayout(tmp_path / "0003_x")
    assert layout.checkpoint("best") == layout.best_pt and layout.checkpoint("last") == layout.last_pt
    with pytest.raises(UsageError, match="best or last"):
        layout.checkpoint("worst")
    assert layout.tensorboard_dir(tmp_path / "runs") == tmp_path / "runs" / "0003_x"


def test_results_layout(tmp_path):
    layout = ResultsLayout(tmp_path)
    assert layout.tensorboard_scalars_all_csv.name == "tensorboard_scalars_all.csv"
    assert layout.studies_dir == tmp_path / "studies"
    csv, png = layout.complexity_comparison("20261123-101500")
    assert (csv.name, png.name) == ("complexity_comparison_20261123-101500.csv",
                                    "complexity_comparison_20261123-101500.png")


def test_create_run_numbers_runs_and_never_reuses_a_name(tmp_path):
    results, tb = tmp_path / "results", tmp_path / "runs"
    first = runs.create_run(results, tb, "breastmnist28_resnet18")
    second = runs.create_run(results, tb, "breastmnist28_cnn")
    assert (first.name, second.name) == ("0001_breastmnist28_resnet18", "0002_breastmnist28_cnn")
    info = json.loads(first.layout.run_json.read_text())
    assert info["name"] == first.name and info["status"] == "created" and info["artifacts"] == []
    # a TensorBoard folder alone also takes its number
    (tb / "0007_old").mkdir(parents=True)
    assert runs.create_run(results, tb, "x").name == "0008_x"


def test_explicit_run_names_are_checked(tmp_path):
    results, tb = tmp_path / "results", tmp_path / "runs"
    assert runs.create_run(results, tb, "x", run_name="baseline").name == "baseline"
    with pytest.raises(UsageError, match="already used"):
        runs.create_run(results, tb, "x", run_name="baseline")
    for bad in ("../up", "with space", "", "-dash", "x\n"):
        with pytest.raises(UsageError):
            runs.create_run(results, tb, "x", run_name=bad)


def test_resolve_run_by_name_path_prefix_or_newest(tmp_path):
    results, tb = tmp_path / "results", tmp_path / "runs"
    a = runs.create_run(results, tb, "breastmnist28_resnet18")
    b = runs.create_run(results, tb, "pneumoniamnist28_resnet18")
    assert runs.resolve_run(results, None).name == b.name  # newest
    assert runs.resolve_run(results, a.name).name == a.name
    assert runs.resolve_run(results, str(a.path)).name == a.name
    assert runs.resolve_run(results, "0001").name == a.name
    with pytest.raises(UsageError, match="ambiguous"):
        runs.resolve_run(results, "000")
    with pytest.raises(UsageError, match="no run named"):
        runs.resolve_run(results, "0099")
    with pytest.raises(UsageError, match="no runs in"):
        runs.resolve_run(tmp_path / "empty", None)


def test_run_json_updates_and_artifact_records(tmp_path):
    run = runs.create_run(tmp_path / "results", tmp_path / "runs", "x")
    run.update(status="running", config={"lr": 0.001})
    run.add_artifacts(["metrics.json", run.path / "gradcam" / "a.png"], created_by="train.py")
    run.add_artifacts(["metrics.json"], created_by="train.py")  # recorded once, refreshed
    info = run.info()
    assert info["status"] == "running" and info["config"] == {"lr": 0.001}
    assert [a["path"] for a in info["artifacts"]] == ["metrics.json", "gradcam/a.png"]
    (run.path / "gradcam").mkdir()
    (run.path / "gradcam" / "a.png").write_bytes(b"png")
    run.remove_artifacts([run.path / "gradcam" / "a.png"])
    assert not (run.path / "gradcam" / "a.png").exists()
    assert [a["path"] for a in run.info()["artifacts"]] == ["metrics.json"]


def test_a_staged_analysis_folder_is_recorded_exactly_as_it_is(tmp_path):
    """Once in place, run.json records exactly the folder's files: the old call's records go, a carried-over
    file keeps its own, and other folders (a nested analysis of another split, too) are left alone."""
    run = runs.create_run(tmp_path / "results", tmp_path / "runs", "x")
    folder = run.layout.inference_dir
    with run.staged_folder(folder, created_by="first") as staged:
        for name in ("summary.csv", "errors_old.png", "val/summary.csv"):
            atomic.write_text(staged.path / name, name)
    run.add_artifacts(["metrics.json", "inference_other/a.csv"], created_by="train.py")
    carried = {a["path"]: a for a in run.info()["artifacts"]}["inference/val/summary.csv"]
    with run.staged_folder(folder, created_by="second", keep=lambda relative: relative.parts[0] == "val") as staged:
        atomic.write_text(staged.path / "summary.csv", "new")
    records = {a["path"]: a for a in run.info()["artifacts"]}
    assert sorted(records) == ["inference/summary.csv", "inference/val/summary.csv", "inference_other/a.csv",
                               "metrics.json"]
    assert records["inference/summary.csv"]["created_by"] == "second"
    assert records["inference/val/summary.csv"] == carried
    assert sorted(p.relative_to(run.path).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "inference/summary.csv", "inference/val/summary.csv"]


def test_unreadable_run_json_is_a_usage_error(tmp_path):
    folder = tmp_path / "results" / "0001_x"
    folder.mkdir(parents=True)
    with pytest.raises(UsageError, match="not a run folder"):
        runs.Run(folder).info()
    (folder / "run.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        runs.Run(folder).info()


def test_data_dir_for_prefers_the_given_folder_then_the_recorded_one(tmp_path, monkeypatch):
    given, recorded = tmp_path / "given", tmp_path / "recorded"
    given.mkdir(), recorded.mkdir()
    (recorded / "breastmnist.npz").write_bytes(b"")
    assert runs.data_dir_for("breastmnist.npz", given, recorded) == str(recorded)
    (given / "breastmnist.npz").write_bytes(b"")
    assert runs.data_dir_for("breastmnist.npz", given, recorded) == str(given)
    # neither holds it: the given folder, so the error (or the download) names it
    assert runs.data_dir_for("pathmnist.npz", given, recorded) == str(given)
    monkeypatch.setenv("MEDMNIST_DIR", str(tmp_path / "env"))
    assert runs.data_dir_for("pathmnist.npz", None, None) == str(tmp_path / "env")


def test_default_data_dir_is_the_environment_or_home(monkeypatch):
    monkeypatch.setenv("MEDMNIST_DIR", "/data/medmnist")
    assert runs.default_data_dir() == "/data/medmnist"
    monkeypatch.delenv("MEDMNIST_DIR")
    assert runs.default_data_dir() == str(runs.DEFAULT_DATA_DIR)


def _add_many(run_path: str, prefix: str, n: int) -> None:
    run = runs.Run(__import__("pathlib").Path(run_path))
    for i in range(n):
        run.add_artifacts([f"{prefix}_{i}.csv"], created_by="test")


def test_concurrent_writers_lose_no_record(tmp_path):
    import multiprocessing

    run = runs.create_run(tmp_path / "results", tmp_path / "runs", "x")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_add_many, args=(str(run.path), name, 100)) for name in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(run.info()["artifacts"]) == 200


def test_two_results_folders_sharing_one_runs_folder_get_different_names(tmp_path):
    tb = tmp_path / "runs"
    a = runs.create_run(tmp_path / "results_a", tb, "x")
    b = runs.create_run(tmp_path / "results_b", tb, "x")
    assert a.name != b.name and (tb / a.name).is_dir() and (tb / b.name).is_dir()


def test_a_running_run_whose_process_is_gone_is_killed(tmp_path):
    import subprocess
    import sys

    run = runs.create_run(tmp_path / "results", tmp_path / "runs", "x")
    run.update(status="running", config={"epochs": 6}, epochs_completed=2)
    assert run.status() == "running" and run.info()["pid"] > 0  # this process is alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.update(pid=int(dead.stdout))
    assert run.status() == "killed"
    note = run.unfinished_note()
    assert "was killed" in note and "after 2/6 epochs" in note and "--resume" not in note  # no last.pt
    run.layout.last_pt.write_bytes(b"")
    assert f"python train.py --resume {run.path}" in run.unfinished_note()
    run.update(status="completed")
    assert run.unfinished_note() is None


def test_the_default_run_is_the_newest_completed_one(tmp_path):
    results, tb = tmp_path / "results", tmp_path / "runs"
    done = runs.create_run(results, tb, "x")
    done.update(status="completed")
    runs.create_run(results, tb, "y").update(status="interrupted")
    assert runs.resolve_run(results, None).name == done.name


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "not a run record"),
    ('{"artifacts": {"a": 1}}', "'artifacts' should be a JSON list"),
    ('{"config": "lr=1"}', "'config' should be a JSON dict"),
    ('{"artifacts": [3]}', "not a {path, created_by, created} record"),
])
def test_malformed_run_json_is_one_clear_error(tmp_path, content, message):
    folder = tmp_path / "0001_x"
    folder.mkdir()
    (folder / "run.json").write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        runs.Run(folder).info()
