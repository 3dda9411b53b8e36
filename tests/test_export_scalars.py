"""export_scalars.py end to end, against real training runs and a real TensorBoard server."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import export_scalars
from medscope import board
from medscope.analysis import scalars
from medscope.app import cli
from medscope.runs import ResultsLayout, Run, RunLayout
from tests.conftest import ROOT, copy_run
from tests.test_scalars import wait_for_the_next_second

# history.csv column of each per-epoch tag train.py logs
TAG_COLUMNS = {"loss/train": "train_loss", "loss/val": "val_loss", "auc/train": "train_auc", "auc/val": "val_auc",
               "acc/train": "train_acc", "acc/val": "val_acc", "lr": "lr", "speed/images_per_s": "images_per_s"}


def copy_with_events(run: Path, dest_root: Path, name: str | None = None) -> Path:
    """A private copy of a run folder and of its TensorBoard folder, optionally under another name."""
    name = name or run.name
    copied = dest_root / "results" / name
    shutil.copytree(run, copied)
    shutil.copytree(RunLayout(run).tensorboard_dir(run.parent.parent / "runs"),
                    RunLayout(copied).tensorboard_dir(dest_root / "runs"))
    return copied


def run_json(run: Path) -> dict:
    return json.loads(RunLayout(run).run_json.read_text())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def f32(text_or_number) -> np.float32:
    return np.float32(float(text_or_number))


def export(tmp_path, *args) -> int:
    return cli.run(export_scalars.main, ["--results-dir", str(tmp_path / "results"),
                                         "--runs-dir", str(tmp_path / "runs"), *args])


def test_export_writes_tidy_and_wide_files_equal_to_the_logged_history(run_2d, tmp_path, capsys):
    run = copy_with_events(run_2d, tmp_path)
    assert export(tmp_path) == 0  # default: the newest (only) run
    layout = RunLayout(run)
    tidy = read_csv(layout.tensorboard_scalars_csv)
    assert list(tidy[0]) == ["run", "tag", "step", "wall_time", "value"]
    assert {r["run"] for r in tidy} == {run.name}
    history = read_csv(layout.history_csv)
    for tag, column in TAG_COLUMNS.items():
        logged = [r for r in tidy if r["tag"] == tag]
        assert [int(r["step"]) for r in logged] == [int(h["epoch"]) for h in history]
        # add_scalar stores float32: the export must give back exactly that float32 ...
        assert [f32(r["value"]) for r in logged] == [f32(h[column]) for h in history]
        # ... and the text is the float32 widened to float64, nothing rounded away or invented
        assert all(float(r["value"]) == float(f32(r["value"])) for r in logged)
    metrics = run_json(run)["metrics"]
    (test_auc,) = [r for r in tidy if r["tag"] == "hparam/test_auc"]
    assert f32(test_auc["value"]) == f32(metrics["test_auc"])

    wide = read_csv(layout.tensorboard_scalars_wide_csv)
    assert [int(r["step"]) for r in wide] == [int(h["epoch"]) for h in history]  # one row per epoch
    assert [f32(r["auc/val"]) for r in wide] == [f32(h["val_auc"]) for h in history]
    assert wide[-1]["hparam/test_auc"] == test_auc["value"] and wide[0]["hparam/test_auc"] == ""

    artifacts = {a["path"]: a["created_by"] for a in run_json(run)["artifacts"]}
    tidy_name, wide_name = layout.tensorboard_scalars_csv.name, layout.tensorboard_scalars_wide_csv.name
    assert artifacts[tidy_name] == artifacts[wide_name] == "export_scalars.py"
    assert artifacts[layout.history_csv.name] == "train.py"  # train.py's records are kept
    assert f"{run.name}: " in capsys.readouterr().out


def test_several_runs_by_name_each_get_their_own_files(run_2d, tmp_path):
    first = copy_with_events(run_2d, tmp_path)
    second = copy_with_events(run_2d, tmp_path, name="0999_copy")
    assert export(tmp_path, "--run", first.name, "0999") == 0  # a unique prefix works too
    for run in (first, second):
        assert {r["run"] for r in read_csv(RunLayout(run).tensorboard_scalars_csv)} == {run.name}


def test_all_writes_one_combined_file_under_results(run_2d, tmp_path):
    first = copy_with_events(run_2d, tmp_path)
    copy_with_events(run_2d, tmp_path, name="0999_copy")
    assert export(tmp_path, "--all") == 0
    results = ResultsLayout(tmp_path / "results")
    combined = read_csv(results.tensorboard_scalars_all_csv)
    single = scalars.read_run(Run(first), tmp_path / "runs")
    assert [r["run"] for r in combined] == [first.name] * len(single) + ["0999_copy"] * len(single)  # oldest first
    assert [float(r["value"]) for r in combined[:len(single)]] == [p.value for p in single]
    wide = read_csv(results.tensorboard_scalars_all_wide_csv)
    assert [(r["run"], r["step"]) for r in wide] == [(first.name, "1"), (first.name, "2"),
                                                    ("0999_copy", "1"), ("0999_copy", "2")]
    assert not RunLayout(first).tensorboard_scalars_csv.exists()  # --all writes only the combined files


def run_script(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "export_scalars.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_unknown_run_and_run_without_events_are_one_line_and_exit_2(run_2d, tmp_path):
    run = copy_run(run_2d, tmp_path)  # the run folder only: no runs/<name>/ beside it
    info = run_json(run)
    info["tensorboard_dir"] = str(tmp_path / "gone")  # and not where training left it either
    info["config"]["runs_dir"] = str(tmp_path / "gone")
    RunLayout(run).run_json.write_text(json.dumps(info))
    cases = {("--run", "no_such_run"): "no run named 'no_such_run'",
             ("--run", run.name): f"run {run.name} has no TensorBoard event files",
             ("--all",): "none of the 1 runs",
             ("--all", "--run", run.name): "--run and --all exclude each other"}
    for args, message in cases.items():
        done = run_script("--results-dir", "results", "--runs-dir", "runs", *args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and message in done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in run_2d.iterdir())  # nothing written


def test_a_bad_name_among_good_ones_writes_nothing(run_2d, tmp_path):
    run = copy_with_events(run_2d, tmp_path)
    assert export(tmp_path, "--run", run.name, "typo") == 2
    assert not RunLayout(run).tensorboard_scalars_csv.exists()


# --------------------------------------------------------------------------- a real TensorBoard server

def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def scalars_from_server(base: str, run: str, tag: str):
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return get_json(f"{base}/data/plugin/scalars/scalars?{query}")


SERVING = re.compile(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/")


@pytest.fixture
def tensorboard(tmp_path):
    """Start ``tensorboard`` on loopback; yields ``start(logdir) -> base URL``; always stopped.

    TensorBoard binds a port the system picks (``--port 0``) and says which one
    in its log, so no other process can take the port between a choice and the bind.
    """
    processes = []

    def start(logdir: Path, timeout: float = 90.0) -> str:
        log_path = tmp_path / f"tensorboard-{len(processes)}.log"
        with open(log_path, "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", "0",
                 "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)))
        deadline = time.monotonic() + timeout
        while not (found := SERVING.search(log_path.read_text())):
            if processes[-1].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"TensorBoard did not start within {timeout}s:\n{log_path.read_text()}")
            time.sleep(0.2)
        return found.group(1)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_points(base: str, run: str, tag: str, count: int, timeout: float = 90.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        try:
            points = scalars_from_server(base, run, tag)
            if len(points) >= count:
                return points
        except (OSError, ValueError):  # not listening yet, or the run not loaded yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"TensorBoard did not serve {count} points of {run}/{tag} within {timeout}s")
        time.sleep(0.5)


def test_tensorboard_server_serves_the_values_the_export_holds(run_2d, tmp_path, tensorboard):
    from torch.utils.tensorboard import SummaryWriter

    run = copy_with_events(run_2d, tmp_path)
    # beside it, a resumed run with orphaned points: the export must drop what TensorBoard drops
    resumed = tmp_path / "runs" / "resumed"  # a TensorBoard run of its own, beside the run folders
    first = SummaryWriter(log_dir=str(resumed))
    for step in range(1, 5):
        first.add_scalar("loss", 1.0 / step, step)
    first.close()
    wait_for_the_next_second()
    second = SummaryWriter(log_dir=str(resumed), purge_step=3)
    for step in (3, 4):
        second.add_scalar("loss", 0.1 / step, step)
    second.close()

    base = tensorboard(tmp_path / "runs")
    history = read_csv(RunLayout(run).history_csv)
    served = wait_for_points(base, run.name, "auc/val", len(history))
    assert [step for _, step, _ in served] == [int(h["epoch"]) for h in history]
    assert [f32(value) for _, _, value in served] == [f32(h["val_auc"]) for h in history]

    assert export(tmp_path, "--run", run.name) == 0
    exported = read_csv(RunLayout(run).tensorboard_scalars_csv)
    served_tags = get_json(f"{base}/data/plugin/scalars/tags")[run.name]
    assert set(served_tags) == {r["tag"] for r in exported}
    for tag in served_tags:
        mine = [(float(r["wall_time"]), int(r["step"]), float(r["value"])) for r in exported if r["tag"] == tag]
        assert [tuple(p) for p in scalars_from_server(base, run.name, tag)] == mine  # every bit, wall time too

    served = wait_for_points(base, "resumed", "loss", 4)
    mine = scalars.read_scalars(resumed, "resumed")
    assert [(p.wall_time, p.step, p.value) for p in mine] == [tuple(p) for p in served]
    assert [p.step for p in mine] == [1, 2, 3, 4]


@pytest.mark.parametrize("damage, problem", [
    (lambda data: data[:-7], "then a truncated record"),
    (lambda data: data[:-30] + bytes([data[-30] ^ 0xFF]) + data[-29:], "fails its checksum"),
])
def test_damaged_event_files_are_refused_or_exported_in_part_with_a_warning(run_2d, tmp_path, capsys, damage,
                                                                          problem):
    run = copy_with_events(run_2d, tmp_path)
    (events,) = [p for p in RunLayout(run).tensorboard_dir(tmp_path / "runs").iterdir()
                 if "tfevents" in p.name and board.EVENT_FILE_MARK not in p.name]  # train.py's, not the analyses'

    whole = events.read_bytes()
    assert scalars.damaged_records(events) is None
    events.write_bytes(damage(whole))
    assert problem in scalars.damaged_records(events)
    assert export(tmp_path, "--run", run.name) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and "--best-effort" in err
    assert not RunLayout(run).tensorboard_scalars_csv.exists()
    assert export(tmp_path, "--run", run.name, "--best-effort") == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and problem in err
    assert len(read_csv(RunLayout(run).tensorboard_scalars_csv)) > 0
