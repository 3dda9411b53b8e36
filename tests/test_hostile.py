"""Hostile input and a hostile machine: signals sent to real training processes, a diverging run.

Every case ends in a truthful run.json status, a message that says what exists, and no
temporary file left behind (see docs/RELIABILITY.md).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medscope import runs
from medscope.app import cli
from tests.conftest import ROOT

TRAIN = ["--dataset", "breastmnist", "--model", "cnn", "--subset", "64", "--epochs", "30", "--device", "cpu"]


def _start(tmp_path, medmnist_dir):
    args = [sys.executable, "-u", str(ROOT / "train.py"), *TRAIN, "--data-dir", str(medmnist_dir),
            "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _after_first_epoch(proc) -> list[str]:
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"train.py ended early: {proc.stderr.read()}"
        lines.append(line)
        if line.startswith("epoch   1/"):
            return lines
    raise AssertionError("no epoch finished in 300 s")


def _temporaries(folder):
    return [p for p in folder.rglob("*.tmp")]


@pytest.mark.slow
def test_sigterm_stops_training_like_ctrl_c_with_a_resumable_checkpoint(tmp_path, medmnist_dir):
    proc = _start(tmp_path, medmnist_dir)
    _after_first_epoch(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_TERMINATED and err.strip().endswith("terminated")
    (run,) = runs.list_runs(tmp_path / "results")
    info = run.info()
    assert info["status"] == "interrupted" and info["epochs_completed"] >= 1
    assert f"train.py --resume {run.path}" in out and run.layout.last_pt.is_file()
    assert _temporaries(tmp_path) == []
    assert "stopped: interrupted" in run.unfinished_note()


@pytest.mark.slow
def test_a_killed_run_is_reported_as_killed_by_every_later_reader(tmp_path, medmnist_dir, capsys):
    proc = _start(tmp_path, medmnist_dir)
    _after_first_epoch(proc)
    proc.kill()  # SIGKILL: no handler runs, run.json still says "running"
    proc.wait(timeout=60)
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "running" and run.status() == "killed"
    assert cli.resolve_run(tmp_path / "results", run.name) == run
    err = capsys.readouterr().err
    assert "was killed (its process is gone)" in err and "--resume" in err
    # stale temporaries of the killed process are removable by the next writer
    stale = run.path / f".metrics.json.{proc.pid}.x.tmp"
    stale.write_text("half")
    from medscope import atomic

    assert stale in atomic.remove_stale_temporaries(run.path)


def test_ctrl_c_before_the_first_epoch_does_not_promise_a_checkpoint(tmp_path, medmnist_dir, monkeypatch, capsys):
    from tests.conftest import interrupted_run

    run, _ = interrupted_run(tmp_path, medmnist_dir, monkeypatch, 1, *TRAIN[:6], "--epochs", "2")
    out = capsys.readouterr().out
    assert "no checkpoint to resume from" in out and "--resume" not in out
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_a_diverging_run_stops_with_status_failed(tmp_path, medmnist_dir, capsys):
    import train

    code = cli.run(train.main, [*TRAIN[:6], "--epochs", "2", "--optimizer", "sgd", "--lr", "1e6",
                                "--data-dir", str(medmnist_dir), "--results-dir", str(tmp_path / "results"),
                                "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE and err.startswith("failed: the ") and err.count("\n") == 1
    assert "Try a lower --lr" in err
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "failed" and "loss" in run.info()["failure"]


def test_os_errors_while_training_end_in_one_line_and_status_failed(tmp_path, medmnist_dir, monkeypatch, capsys):
    import errno

    import train
    from medscope import atomic

    real = atomic.write_csv

    def full_disk(path, *args, **kwargs):
        if str(path).endswith("history.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(atomic, "write_csv", full_disk)
    code = cli.run(train.main, [*TRAIN[:6], "--epochs", "1", "--data-dir", str(medmnist_dir),
                                "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT and err.startswith("error: No space left on device") and err.count("\n") == 1
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "failed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; run as a normal user")
def test_a_read_only_results_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code = cli.run(lambda argv: runs.create_run(folder, tmp_path / "runs", "x") and 0, [])
    finally:
        folder.chmod(0o700)
    assert code == cli.EXIT_BAD_INPUT and "Permission denied" in capsys.readouterr().err


# ---------------------------------------------------------------- Ctrl-C while a script starts

SCRIPT_ARGS = {
    "train.py": ["--dataset", "breastmnist", "--model", "cnn", "--epochs", "30"],
    "analyze_inference.py": [], "analyze_complexity.py": [], "explain.py": ["gradcam"], "quantize.py": [],
    "export_scalars.py": [], "compare.py": ["0001"], "report.py": [],
    "run_tool.py": ["--pipeline", "--dataset", "breastmnist"],
}


@pytest.mark.parametrize("script", sorted(SCRIPT_ARGS))
def test_every_script_imports_the_error_boundary_before_anything_else_of_its_own(script):
    """What makes Ctrl-C during the imports one line: ``medscope.app.cli`` installs its handlers when imported,
    so it must be the script's first import beyond the standard library (the test below sends the signal)."""
    import ast

    tree = ast.parse((ROOT / script).read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    own = [node for node in imports if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
           and (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name).split(".")[0]
           not in sys.stdlib_module_names]
    first = own[0]
    assert isinstance(first, ast.ImportFrom) and first.module == "medscope.app" and first.names[0].name == "cli"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "explain.py", "report.py"])  # the heaviest imports, and the lightest
def test_ctrl_c_while_a_script_imports_is_one_line_and_130(tmp_path, script):
    """SIGINT during the seconds of importing torch and the analysis modules: no traceback.

    (Python's own start-up, before the script's first line runs, is not covered: about 20 ms.)
    """
    for delay in (0.4, 1.2):
        proc = subprocess.Popen([sys.executable, str(ROOT / script), *SCRIPT_ARGS[script],
                                 "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (delay, err)
        if proc.returncode == cli.EXIT_INTERRUPTED:
            assert err.strip().splitlines()[-1] == "interrupted"
        else:  # it got as far as saying what is wrong with its (empty) results folder
            assert err.startswith("error: ") and err.endswith("\n"), (delay, err)
            # exit 2, or, when the signal lands while the interpreter shuts down (Python restores the
            # default handler there), death by SIGINT, which a shell reports as 130
            assert proc.returncode in (cli.EXIT_BAD_INPUT, -signal.SIGINT), (delay, proc.returncode, err)
        assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.tmp"))


# ---------------------------------------------------------------- a read-only or full results folder, per script

def _script_cases(name: str) -> dict:
    """Each script's command on run ``name`` (small settings: the point is where it writes)."""
    run = ["--run", name]
    return {
        "train.py": ["--dataset", "breastmnist", "--model", "cnn", "--epochs", "1", "--subset", "32"],
        "analyze_inference.py": [*run, "--tsne-points", "5"],
        "analyze_complexity.py": run,
        "explain.py gradcam": ["gradcam", *run, "--n", "2", "--steps", "2"],
        "explain.py saliency": ["saliency", *run, "--n", "2", "--steps", "2", "--samples", "2"],
        "explain.py uncertainty": ["uncertainty", *run, "--passes", "2"],
        "explain.py robustness": ["robustness", *run, "--perturbations", "gaussian_noise", "--severities", "1",
                                  "--n-saliency", "0", "--n-examples", "0"],
        "explain.py calibrate": ["calibrate", *run, "--bootstrap", "50"],
        "quantize.py": [*run, "--calib", "4", "--test-subset", "8", "--runs", "1", "--warmup", "1",
                        "--throughput-runs", "1"],
        "export_scalars.py": run,
        "compare.py": [name, "--bootstrap", "50"],
        "report.py": run,
    }


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, medmnist_dir):
    from tests.conftest import train_run

    return train_run(tmp_path_factory.mktemp("disk"), medmnist_dir, "--dataset", "breastmnist", "--model", "cnn",
                     "--epochs", "1", "--subset", "32", "--bootstrap", "50")


def _mount_small_filesystem(where, size_kb: int) -> None:
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small file system here ({done.stderr.strip() or 'mount failed'}); "
                    "run as root to test a full and a read-only disk")


def _folder_size_kb(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024


@pytest.fixture(params=["read-only", "full"])
def hostile_disk(request, small_run, tmp_path):
    """The run (and its TensorBoard folder) on a file system that is read-only, or full to the last byte."""
    import shutil

    mount = tmp_path / "disk"
    events = small_run.parent.parent / "runs" / small_run.name
    _mount_small_filesystem(mount, _folder_size_kb(small_run) + _folder_size_kb(events) + 512)
    try:
        shutil.copytree(small_run, mount / "results" / small_run.name)
        shutil.copytree(events, mount / "runs" / small_run.name)
        if request.param == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        else:
            with open(mount / "filler", "wb") as fh:  # take every byte left
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass
            try:
                with open(mount / "filler", "ab") as fh:
                    while True:
                        fh.write(b"\0")
                        fh.flush()
            except OSError:
                pass
        yield request.param, mount / "results", mount / "runs", small_run.name
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_every_script_on_a_read_only_or_full_disk_ends_in_one_line(hostile_disk, medmnist_dir, capsys):
    import importlib

    kind, results, runs_dir, name = hostile_disk
    expected = {"read-only": "Read-only file system", "full": "No space left on device"}[kind]
    before = (results / name / "run.json").read_text()
    for label, argv in _script_cases(name).items():
        main = importlib.import_module(label.split()[0].removesuffix(".py")).main
        code = cli.run(main, [*argv, "--results-dir", str(results), "--runs-dir", str(runs_dir),
                              "--data-dir", str(medmnist_dir), "--device", "cpu"])
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
        assert code == cli.EXIT_BAD_INPUT, (label, err)
        assert "Traceback" not in err and len(lines) == 1 and expected in lines[0], (label, err)
        assert (results / name / "run.json").read_text() == before, label  # the run's record is intact
        leftovers = [p for p in results.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".export-")]
        assert leftovers == [], (label, leftovers)
