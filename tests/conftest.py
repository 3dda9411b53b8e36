"""Shared fixtures: the real MedMNIST files and short real training runs.

Runs are trained once per test session (session-scoped; once for all
pytest-xdist workers, :func:`trained_once`) into a temporary results folder
and shared by every test that only reads them. Tests that modify a run copy
it first with :func:`copy_run`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medscope.runs import RunLayout

ROOT = Path(__file__).resolve().parents[1]


REAL_FILES = ("breastmnist", "pneumoniamnist", "adrenalmnist3d", "adrenalmnist3d_64")


def _medmnist_dir() -> Path:
    """Where the suite finds the real MedMNIST files: as the scripts do, MEDMNIST_DIR or ~/.medmnist."""
    from medscope.runs import default_data_dir

    return Path(default_data_dir()).expanduser().resolve()


def _fetch_missing_files(folder: Path) -> str | None:
    """Download (MD5-checked, as the scripts do) the real files the suite needs; None, or why not."""
    from medscope import data
    from medscope.errors import UsageError

    for name in REAL_FILES:
        flag, _, size = name.partition("_")
        info = data.dataset_info(flag, int(size or 28))
        if not (folder / info.file_name).is_file():
            try:
                data.locate(info, folder)
            except UsageError as exc:
                return str(exc)
    return None


@pytest.fixture(scope="session")
def medmnist_dir() -> Path:
    return _medmnist_dir()


@pytest.fixture(scope="session", autouse=True)
def away_from_the_users_folders(tmp_path_factory) -> Path:
    """Every test process works in an empty folder of its own: a script a test calls without
    --results-dir or --runs-dir (their defaults are results/ and runs/ of the working folder) writes
    there, never into the results/ and runs/ of the folder pytest was started from."""
    previous = os.getcwd()
    folder = tmp_path_factory.mktemp("cwd")
    os.chdir(folder)
    yield folder
    os.chdir(previous)


def pytest_configure(config):
    """Keep the MD5 memo and memory-map cache out of the user's home; find (or fetch) the real files."""
    import tempfile

    os.environ["MEDSCOPE_CACHE"] = tempfile.mkdtemp(prefix="medscope-cache-")
    folder = _medmnist_dir()
    problem = _fetch_missing_files(folder)
    if problem is not None:
        pytest.exit(f"the tests need the real MedMNIST files ({', '.join(n + '.npz' for n in REAL_FILES)}) "
                    f"in {folder}: {problem}. Set MEDMNIST_DIR to a folder that holds them.", returncode=2)
    # absolute, so subprocesses started in another folder find the files too
    os.environ["MEDMNIST_DIR"] = str(folder)


def train_run(workdir: Path, medmnist_dir: Path, *args: str) -> Path:
    """Train with train.main() into ``workdir`` and return the single run folder."""
    import train

    results, runs = workdir / "results", workdir / "runs"
    before = set(results.iterdir()) if results.is_dir() else set()
    code = train.main(["--data-dir", str(medmnist_dir), "--results-dir", str(results), "--runs-dir", str(runs),
                       *args])
    assert code == 0
    (new,) = set(results.iterdir()) - before
    return new


def one_line_error(capsys, message: str) -> str:
    """Assert stderr is one line holding ``message`` and no traceback; return it."""
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def history(run: Path) -> list[dict]:
    """history.csv's rows without the timing columns, which differ between identical runs."""
    import csv

    with open(RunLayout(run).history_csv, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in ("images_per_s", "epoch_seconds")}
                for row in csv.DictReader(fh)]


def interrupt_epoch(monkeypatch, n: int):
    """Make the run's ``n``-th epoch end with KeyboardInterrupt, as Ctrl-C would; returns the undo."""
    from medscope.train import loop

    real_epoch = loop.train_one_epoch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr("medscope.train.experiment.train_one_epoch", interrupted)
    return lambda: monkeypatch.setattr("medscope.train.experiment.train_one_epoch", real_epoch)


def interrupted_run(workdir: Path, medmnist_dir: Path, monkeypatch, epoch: int, *args: str):
    """Train until Ctrl-C in ``epoch``; returns the run folder and the folder flags to resume it with."""
    import train
    from medscope.app import cli

    undo = interrupt_epoch(monkeypatch, epoch)
    results = workdir / "results"
    folders = ["--data-dir", str(medmnist_dir), "--results-dir", str(results), "--runs-dir", str(workdir / "runs")]
    assert cli.run(train.main, [*args, *folders]) == cli.EXIT_INTERRUPTED
    undo()
    (run,) = list(results.iterdir())
    return run, folders


def xdist_worker(request) -> str:
    """``gw0``, ``gw1``, ... under pytest-xdist; ``master`` without it (also with ``-p no:xdist``)."""
    return getattr(request.config, "workerinput", {}).get("workerid", "master")


def trained_once(tmp_path_factory, worker_id: str, name: str, medmnist_dir: Path, *args: str) -> Path:
    """:func:`train_run` once per test session, however many pytest-xdist workers ask; each gets a private copy.

    The first worker to ask trains into a folder beside the workers' own
    (``<session basetemp>/shared-runs/<name>``) under a file lock; the others
    wait for it and copy its results and TensorBoard folders. Paths recorded
    in the copy's run.json are rewritten to the copy, so no test can reach
    (and change) the shared original. Without xdist it simply trains.
    """
    import fcntl
    import json

    mine = tmp_path_factory.mktemp(name)
    if worker_id == "master":
        return train_run(mine, medmnist_dir, *args)
    shared = tmp_path_factory.getbasetemp().parent / "shared-runs"
    shared.mkdir(exist_ok=True)
    original = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if training fails
        if not (original / "complete").is_file():
            shutil.rmtree(original, ignore_errors=True)
            train_run(original, medmnist_dir, *args)
            (original / "complete").touch()
    for part in ("results", "runs"):
        shutil.copytree(original / part, mine / part, symlinks=True)
    (run,) = [p for p in (mine / "results").iterdir() if p.is_dir()]
    run_json = RunLayout(run).run_json
    text = run_json.read_text().replace(json.dumps(str(original))[1:-1], json.dumps(str(mine))[1:-1])
    run_json.write_text(text)
    return run


@pytest.fixture(scope="session")
def run_2d(tmp_path_factory, request, medmnist_dir) -> Path:
    """breastmnist, ResNet-18, 2 short epochs: a real 2D run folder."""
    return trained_once(tmp_path_factory, xdist_worker(request), "run_2d", medmnist_dir, "--dataset", "breastmnist",
                        "--model", "resnet18", "--epochs", "2", "--subset", "256", "--seed", "1")


@pytest.fixture(scope="session")
def run_3d(tmp_path_factory, request, medmnist_dir) -> Path:
    """adrenalmnist3d, 3D ResNet-18, 1 short epoch: a real 3D run folder."""
    return trained_once(tmp_path_factory, xdist_worker(request), "run_3d", medmnist_dir, "--dataset", "adrenalmnist3d",
                        "--model", "resnet18", "--epochs", "1", "--subset", "96", "--batch-size", "32",
                        "--seed", "1")


@pytest.fixture(scope="session")
def reported_run(run_2d, tmp_path_factory, medmnist_dir):
    """A copy of run_2d with inference, Grad-CAM and uncertainty analyses, reported by report.py.

    Attributes: ``path`` (the run folder), ``results`` (its results folder), ``seconds``
    (how long report.main took) and ``html`` (report.html's text).
    """
    import time
    import types

    import analyze_inference
    import explain
    import report

    run = copy_run(run_2d, tmp_path_factory.mktemp("report"))
    results = str(run.parent)
    common = ["--run", run.name, "--results-dir", results, "--runs-dir", str(run.parent.parent / "runs"),
              "--data-dir", str(medmnist_dir), "--device", "cpu"]
    assert analyze_inference.main([*common, "--tsne-points", "200"]) == 0
    assert explain.main(["gradcam", *common, "--n", "12", "--steps", "5"]) == 0
    assert explain.main(["uncertainty", *common, "--passes", "5"]) == 0
    started = time.perf_counter()
    assert report.main(["--run", run.name, "--results-dir", results]) == 0
    return types.SimpleNamespace(path=run, results=results, seconds=time.perf_counter() - started,
                                 html=(run / "report.html").read_text(encoding="utf-8"))


def copy_run(run: Path, dest_root: Path) -> Path:
    """A private copy of a run folder (and nothing else) for tests that change it."""
    dest = dest_root / "results" / run.name
    shutil.copytree(run, dest)
    return dest


def write_fake_medmnist(path: Path, *, n_channels: int, size: int, n_labels: int, multilabel: bool = False,
                        n_per_split=(96, 32, 32), seed: int = 0, is_3d: bool = False) -> Path:
    """A small .npz in the official MedMNIST format, with a learnable signal.

    Class k images are brighter in a k-dependent quadrant, so a short training
    run learns something and metrics are not degenerate.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), n_per_split):
        shape = (n,) + ((size,) * (3 if is_3d else 2)) + ((3,) if n_channels == 3 else ())
        images = rng.integers(0, 90, size=shape, dtype=np.uint8)
        if multilabel:
            labels = (rng.random((n, n_labels)) < 0.4).astype(np.uint8)
            for j in range(n_labels):
                rows = labels[:, j] == 1
                images[rows, (j * 3) % size: (j * 3) % size + 3] = 230
        else:
            labels = np.arange(n, dtype=np.uint8)[:, None] % n_labels
            for k in range(n_labels):
                rows = labels[:, 0] == k
                lo = (k * size) // n_labels
                images[rows, lo: lo + max(2, size // n_labels)] = 220
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    np.savez_compressed(path, **arrays)
    return path


# The files that take minutes of one worker each start first: under ``--dist loadfile`` a worker
# takes a whole file, and a long file handed out last keeps the suite waiting for it alone.
LONG_FILES = ("test_readme_commands.py", "test_hostile.py", "test_menu.py", "test_report.py")


def pytest_collection_modifyitems(session, config, items):
    order = {name: rank for rank, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: order.get(item.path.name, len(LONG_FILES)))  # stable: the rest keep their order
