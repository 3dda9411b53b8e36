"""The run folder: the contract between scripts (see DESIGN.md).

``results/<run>/`` holds everything about one trained model and ``runs/<run>/``
its TensorBoard events. Names look like ``0007_breastmnist28_resnet18``: a
four-digit sequence number keeps them sortable, and a name is reserved with an
atomic ``mkdir`` so two processes can never get the same one.

:class:`RunLayout` is the one place that names the files and folders of the
contract; every script, library module and test asks it. Files inside an
analysis folder (``gradcam/``, ``robustness/``, ...) other than the ones
listed here are named by the module that writes that folder.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from medscope import atomic
from medscope.errors import UsageError

RUN_JSON = "run.json"
DEFAULT_DATA_DIR = Path.home() / ".medmnist"


class RunLayout:
    """Every file and folder of one run folder, as paths (nothing is created or read)."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        self.root = root
        # written by train.py
        self.run_json = root / RUN_JSON
        self.history_csv = root / "history.csv"
        self.summary_csv = root / "summary.csv"
        self.metrics_json = root / "metrics.json"
        self.best_pt = root / "best.pt"
        self.last_pt = root / "last.pt"
        self.inference_outputs = root / "inference_outputs.pt"
        self.inference_mean = root / "inference_mean.json"
        self.training_curves_png = root / "training_curves.png"
        self.confusion_matrix_png = root / "confusion_matrix.png"
        self.sample_predictions_png = root / "sample_predictions.png"
        # export_scalars.py
        self.tensorboard_scalars_csv = root / "tensorboard_scalars.csv"
        self.tensorboard_scalars_wide_csv = root / "tensorboard_scalars_wide.csv"
        # one folder per analysis, with its main table
        self.inference_dir = root / "inference"
        self.inference_summary_csv = self.inference_dir / "inference_summary.csv"
        self.complexity_dir = root / "complexity"
        self.complexity_results_csv = self.complexity_dir / "weights_entropy_results.csv"
        self.gradcam_dir = root / "gradcam"
        self.saliency_dir = root / "saliency"
        self.uncertainty_dir = root / "uncertainty"
        self.robustness_dir = root / "robustness"
        self.calibration_dir = root / "calibration"
        self.export_dir = root / "export"
        # report.py
        self.report_html = root / "report.html"
        self.model_card_md = root / "model_card.md"
        self.model_card_json = root / "model_card.json"

    def checkpoint(self, which: str) -> Path:
        """``best.pt`` or ``last.pt``."""
        if which not in ("best", "last"):
            raise UsageError(f"checkpoint {which!r}: expected best or last")
        return self.best_pt if which == "best" else self.last_pt

    def tensorboard_dir(self, runs_dir: str | os.PathLike) -> Path:
        """The run's TensorBoard folder: ``<runs_dir>/<run name>``."""
        return Path(runs_dir) / self.root.name


class ResultsLayout:
    """Files at the top of a results folder, beside the run folders."""

    def __init__(self, results_dir: str | os.PathLike):
        self.root = Path(results_dir)
        self.tensorboard_scalars_all_csv = self.root / "tensorboard_scalars_all.csv"
        self.tensorboard_scalars_all_wide_csv = self.root / "tensorboard_scalars_all_wide.csv"
        self.studies_dir = self.root / "studies"
        self.comparisons_dir = self.root / "comparisons"

    def complexity_comparison(self, stamp: str) -> tuple[Path, Path]:
        """The multi-run complexity table and figure of one ``analyze_complexity.py`` call."""
        return (self.root / f"complexity_comparison_{stamp}.csv", self.root / f"complexity_comparison_{stamp}.png")


def default_data_dir() -> str:
    """Where MedMNIST files live unless ``--data-dir`` says otherwise: ``$MEDMNIST_DIR`` or ``~/.medmnist``."""
    return os.environ.get("MEDMNIST_DIR") or str(DEFAULT_DATA_DIR)


def data_dir_for(file_name: str, given: str | os.PathLike | None, recorded: str | os.PathLike | None) -> str:
    """The data folder an analysis of a run reads from.

    The folder the user gave, if it holds ``file_name``; else the one the run
    recorded at training time, if it holds it; else the one given (so that
    the error, or the download, names the folder the user asked for).
    """
    for folder in (given, recorded):
        if folder and (Path(folder).expanduser() / file_name).is_file():
            return str(folder)
    return str(given if given else default_data_dir())
_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_SEQ = re.compile(r"^(\d{4,})_")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


STATUSES = ("created", "running", "completed", "interrupted", "failed", "killed")
FINISHED = "completed"


def process_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine (signal 0 only checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock (``<path>.lock``) around a read-modify-write of ``path``, across processes."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Run:
    """An existing run folder."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    @property
    def json_path(self) -> Path:
        return self.path / RUN_JSON

    def info(self) -> dict:
        try:
            info = json.loads(self.json_path.read_text())
        except FileNotFoundError:
            raise UsageError(f"{self.path} is not a run folder (no {RUN_JSON}); "
                             "train one with: python train.py --dataset breastmnist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{self.json_path} is not valid JSON ({exc})") from None
        except OSError as exc:
            raise UsageError(f"cannot read {self.json_path}: {exc.strerror or exc}") from None
        _check_schema(info, self.json_path)
        return info

    def update(self, **fields) -> dict:
        """Merge ``fields`` into run.json (atomically, serialised across processes); return the new content.

        Setting ``status="running"`` also records this process (``pid``, ``host``), so that
        a later reader can tell a run in progress from one whose process was killed.
        """
        if fields.get("status") == "running":
            fields.setdefault("pid", os.getpid())
            fields.setdefault("host", socket.gethostname())
        with _locked(self.json_path):
            info = self.info()
            info.update(fields)
            atomic.write_json(self.json_path, info)
        return info

    def add_artifacts(self, paths, *, created_by: str) -> None:
        """Record files a script wrote (relative to the run folder) in run.json."""
        stamp = now_iso()
        with _locked(self.json_path):
            info = self.info()
            artifacts = list(info.get("artifacts", []))
            known = {a["path"]: i for i, a in enumerate(artifacts)}
            for p in paths:
                rel = self.relative(p)
                entry = {"path": rel, "created_by": created_by, "created": stamp}
                if rel in known:
                    artifacts[known[rel]] = entry
                else:
                    known[rel] = len(artifacts)
                    artifacts.append(entry)
            info["artifacts"] = artifacts
            atomic.write_json(self.json_path, info)

    def remove_artifacts(self, paths) -> None:
        """Delete files an earlier call wrote into this run and drop their records from run.json."""
        paths = [Path(p) for p in paths]
        if not paths:
            return
        for path in paths:
            path.unlink(missing_ok=True)
        gone = {self.relative(p) for p in paths}
        with _locked(self.json_path):
            info = self.info()
            info["artifacts"] = [a for a in info.get("artifacts", []) if a.get("path") not in gone]
            atomic.write_json(self.json_path, info)

    def relative(self, path) -> str:
        """A path inside the run folder as run.json records it (relative, '/'-separated)."""
        path = Path(path)
        if path.is_absolute() or path.parts[:len(self.path.parts)] == self.path.parts:
            return Path(path).resolve().relative_to(self.path.resolve()).as_posix()
        return path.as_posix()

    def status(self, info: dict | None = None) -> str:
        """The run's true status: run.json's, except that a ``running`` run whose process
        (on this machine) is gone is ``killed``."""
        info = self.info() if info is None else info
        status = info.get("status", "created")
        if status == "running" and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
                and not process_alive(info["pid"]):
            return "killed"
        return status

    def unfinished_note(self, info: dict | None = None) -> str | None:
        """One sentence for a reader of a run that did not complete, or None when it did."""
        info = self.info() if info is None else info
        status = self.status(info)
        if status == FINISHED:
            return None
        done, planned = info.get("epochs_completed"), (info.get("config") or {}).get("epochs")
        epochs = f" after {done}/{planned} epochs" if done is not None and planned else ""
        what = {"running": "is still training", "killed": "was killed (its process is gone)",
                "created": "never started training"}.get(status, f"stopped: {status}")
        resume = (f"; resume it with: python train.py --resume {self.path}" if self.layout.last_pt.is_file()
                  and status != "running" else "")
        return f"note: run {self.name} {what}{epochs}; its results are not final{resume}"


def _check_schema(info, path: Path) -> None:
    """The parts of run.json that scripts rely on have the right types."""
    if not isinstance(info, dict):
        raise UsageError(f"{path} is not a run record (expected a JSON object, found {type(info).__name__})")
    expected = {"artifacts": list, "config": dict, "metrics": dict, "status": str, "environment": dict,
                "dataset": dict, "model": dict}
    for key, kind in expected.items():
        if key in info and info[key] is not None and not isinstance(info[key], kind):
            raise UsageError(f"{path}: '{key}' should be a JSON {kind.__name__}, found {type(info[key]).__name__}; "
                             "the file was edited or damaged")
    for entry in info.get("artifacts") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UsageError(f"{path}: an 'artifacts' entry is not a {{path, created_by, created}} record")


def sequence_number(name: str) -> int | None:
    match = _SEQ.match(name)
    return int(match.group(1)) if match else None


def _taken_names(*dirs) -> set[str]:
    names = set()
    for d in dirs:
        if d and Path(d).is_dir():
            names.update(p.name for p in Path(d).iterdir())
    return names


def create_run(results_dir, runs_dir, description: str, run_name: str | None = None) -> Run:
    """Reserve a new, never-used run folder under ``results_dir``.

    ``description`` is the readable part (``breastmnist28_resnet18``); the
    sequence number is one more than the largest in use in either folder.
    An explicit ``run_name`` that is already taken is refused. The name is
    reserved with ``mkdir`` in both folders, so neither two processes nor two
    results folders sharing one TensorBoard folder can get the same one.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if run_name is not None:
        if not _NAME_OK.fullmatch(run_name):
            raise UsageError(f"--run-name {run_name!r}: use letters, digits, '.', '_', '+' or '-'")
        if run_name in _taken_names(results_dir, runs_dir) or not _reserve(results_dir, runs_dir, run_name):
            raise UsageError(f"--run-name {run_name!r} is already used in {results_dir} or {runs_dir}; "
                             "run names are never reused")
        return _initialized(Run(results_dir / run_name))
    while True:
        taken = _taken_names(results_dir, runs_dir)
        seq = max((sequence_number(n) or 0 for n in taken), default=0) + 1
        name = f"{seq:04d}_{description}"
        if _reserve(results_dir, runs_dir, name):
            return _initialized(Run(results_dir / name))
        # another process (or another results folder) took it first: try the next number


def _reserve(results_dir: Path, runs_dir, name: str) -> bool:
    """Create ``results_dir/name`` and ``runs_dir/name``; False (and nothing left) if either exists."""
    try:
        (results_dir / name).mkdir()
    except FileExistsError:
        return False
    if runs_dir is not None:
        try:
            Path(runs_dir).mkdir(parents=True, exist_ok=True)
            (Path(runs_dir) / name).mkdir()
        except FileExistsError:
            (results_dir / name).rmdir()
            return False
    return True


def _initialized(run: Run) -> Run:
    atomic.write_json(run.json_path, {"name": run.name, "created": now_iso(), "status": "created", "artifacts": []})
    return run


def discard_run(run: Run, runs_dir=None) -> None:
    """Remove a run folder that never got a usable result (bad input found late)."""
    shutil.rmtree(run.path, ignore_errors=True)
    if runs_dir is not None:
        shutil.rmtree(Path(runs_dir) / run.name, ignore_errors=True)


def list_runs(results_dir) -> list[Run]:
    """Run folders (those with a run.json), newest first."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    runs = [Run(p) for p in results_dir.iterdir() if (p / RUN_JSON).is_file()]

    def key(run: Run):
        seq = sequence_number(run.name)
        return (seq if seq is not None else -1, run.json_path.stat().st_mtime)

    return sorted(runs, key=key, reverse=True)


def newest_completed(runs: list[Run]) -> Run | None:
    """The first completed run of a newest-first list (unreadable run.json files are passed over)."""
    for run in runs:
        try:
            if run.status() == FINISHED:
                return run
        except UsageError:
            continue
    return None


def resolve_run(results_dir, spec: str | None) -> Run:
    """A run by name, by path, by unique prefix, or (``spec`` None) the newest completed one
    (the newest of all when none has completed)."""
    if spec is None:
        runs = list_runs(results_dir)
        if not runs:
            raise UsageError(f"no runs in {results_dir}/; train one first: python train.py --dataset breastmnist")
        return newest_completed(runs) or runs[0]
    candidates = [Path(spec), Path(results_dir) / spec]
    for path in candidates:
        if (path / RUN_JSON).is_file():
            return Run(path.resolve() if path.is_absolute() else path)
    # a unique prefix such as "0007" is accepted too
    matches = [r for r in list_runs(results_dir) if r.name.startswith(spec)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(r.name for r in matches[:5])
        raise UsageError(f"run {spec!r} is ambiguous in {results_dir}/: {names}")
    raise UsageError(f"no run named {spec!r} in {results_dir}/ (list them with: ls {results_dir})")
