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
import errno
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
DEFAULT_RUNS_DIR = "runs"  # TensorBoard folders, beside results/ (--runs-dir)


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


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as ``<boot id>:<clock ticks after boot>``; None where this cannot be read.

    A process id is reused once its process is gone: the id alone cannot tell a
    run's trainer from a newer process that got the same number. Linux gives the
    start time in field 22 of ``/proc/<pid>/stat`` (the boot id makes it unique
    across reboots); elsewhere there is no cheap equivalent and the id alone is compared.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        # the name (field 2) is in parentheses and may hold spaces: fields 3.. follow the last ")"
        ticks = int(stat.rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return f"{boot}:{ticks}"


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


TRAINING_LOCK = ".training.lock"  # held (flock) by the process that trains the run, for as long as it trains


@contextlib.contextmanager
def training_lock(run: "Run"):
    """Hold ``run``'s training lock for the duration: one trainer per run at a time.

    The lock is an exclusive ``flock`` on a file in the run folder, taken without
    waiting; the kernel drops it when the process ends, however it ends. The
    holder writes its pid into the file for the message a second trainer gets
    (UsageError: "RUN is being trained by pid N") and removes the file when it
    is done, so that only a trainer that is alive, or one that was killed,
    leaves it there.
    """
    path = run.path / TRAINING_LOCK
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fh)
            fh.close()
            raise UsageError(f"{run.name} is being trained by {f'pid {holder}' if holder else 'another process'}; "
                             "wait for it to end, or stop it first") from None
        try:
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()  # the previous holder removed the file as we locked it: lock the one there now
    _held_locks.add(path.resolve())
    try:
        with contextlib.suppress(OSError):  # a full disk: the lock holds without its note
            fh.truncate(0)
            fh.write(f"{os.getpid()}\n")
            fh.flush()
        yield
    finally:
        _held_locks.discard(path.resolve())
        with contextlib.suppress(OSError):
            path.unlink()  # while still held: a newcomer that opened it sees it is gone (the check above)
        fcntl.flock(fh, fcntl.LOCK_UN)  # explicitly: forked loader workers share the open file
        fh.close()


def _lock_holder(fh) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        fh.seek(0)
        return int(fh.read().strip())
    return None


_held_locks: set[Path] = set()  # the training locks this process holds


def _training_lock_state(run: "Run") -> str | None:
    """Who holds ``run``'s training lock: "this process", "another process" or "nobody"; None where there
    is no lock file (no trainer since the last one ended normally) or it cannot be checked."""
    path = run.path / TRAINING_LOCK
    with contextlib.suppress(OSError):
        if path.resolve() in _held_locks:
            return "this process"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "another process"
    except OSError:
        return None
    finally:
        os.close(fd)  # also releases the lock just taken
    return "nobody"


def read_json(path: Path, what: str = "file"):
    """The JSON value in ``path``; an unreadable, invalid or absurdly nested file is a UsageError."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"{path} is not a medscope {what}: its JSON is nested too deeply to read") from None


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
            info = read_json(self.json_path, "run record")
        except FileNotFoundError:
            raise UsageError(f"{self.path} is not a run folder (no {RUN_JSON}); "
                             "train one with: python train.py --dataset breastmnist") from None
        except OSError as exc:
            raise UsageError(f"cannot read {self.json_path}: {exc.strerror or exc}") from None
        check_run_record(info, self.json_path)
        return info

    def update(self, **fields) -> dict:
        """Merge ``fields`` into run.json (atomically, serialised across processes); return the new content.

        Setting ``status="running"`` also records this process (``pid``, ``host`` and, where
        the system tells, ``pid_start``), so that a later reader can tell a run in progress
        from one whose process was killed, also once its process id is reused.

        On a full disk, where no temporary file can be made beside run.json, the
        record is written over run.json's own blocks instead (compact, so it fits):
        a run that stops because the disk is full must still say so.
        """
        if fields.get("status") == "running":
            fields.setdefault("pid", os.getpid())
            fields.setdefault("host", socket.gethostname())
            fields.setdefault("pid_start", process_start(os.getpid()))
        with _locked(self.json_path):
            info = self.info()
            info.update(fields)
            if info.get("status") != "running":
                info.pop("pid_start", None)  # it identifies a live trainer only; pid and host stay as history
            try:
                atomic.write_json(self.json_path, info)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                atomic.overwrite_in_place(self.json_path, atomic.json_bytes(info, compact=True))
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

    def record_folder(self, folder, written, kept=(), *, created_by: str) -> None:
        """Make run.json's records of ``folder`` exactly its files: ``written`` (recorded as new, by
        ``created_by``) and ``kept`` (files carried over, whose records stay as they were)."""
        prefix = self.relative(folder).rstrip("/") + "/"
        new = {self.relative(p) for p in written}
        kept = {self.relative(p) for p in kept}
        stamp = now_iso()
        with _locked(self.json_path):
            info = self.info()
            artifacts = [a for a in info.get("artifacts", [])
                         if not a.get("path", "").startswith(prefix) or a.get("path") in kept - new]
            recorded = {a["path"] for a in artifacts}
            artifacts += [{"path": rel, "created_by": created_by, "created": stamp}
                          for rel in sorted(new | (kept - recorded))]
            info["artifacts"] = artifacts
            atomic.write_json(self.json_path, info)

    def staged_folder(self, folder, *, created_by: str, keep=None):
        """Write the analysis folder ``folder`` of this run as a whole (:func:`medscope.atomic.staged_folder`).

        Once the new folder is in place, run.json records exactly its files (the
        records of the previous folder's files go); an interrupted call leaves the
        previous folder and its records as they were.

            with run.staged_folder(run.layout.robustness_dir, created_by="explain.py") as staged:
                atomic.write_csv(staged.path / "robustness_results.csv", rows, columns)
            staged.files  # the files now in robustness/
        """
        return atomic.staged_folder(folder, keep=keep, commit=lambda written, kept: self.record_folder(
            folder, written, kept, created_by=created_by))

    def relative(self, path) -> str:
        """A path inside the run folder as run.json records it (relative, '/'-separated)."""
        path = Path(path)
        if path.is_absolute() or path.parts[:len(self.path.parts)] == self.path.parts:
            return Path(path).resolve().relative_to(self.path.resolve()).as_posix()
        return path.as_posix()

    def status(self, info: dict | None = None) -> str:
        """The run's true status: run.json's, except that a ``running`` run of this machine
        whose trainer is gone is ``killed``.

        The trainer is gone when its process id names no process, or a process that
        started at another time than the one recorded (the id was reused), or when
        it does not hold the run's training lock (every trainer holds it while it
        trains: a lock file that nobody, or this very reader, holds was left by a
        trainer that was killed).
        """
        info = self.info() if info is None else info
        status = info.get("status", "created")
        if status != "running" or info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
            return status
        pid, recorded_start = info["pid"], info.get("pid_start")
        if not process_alive(pid):
            return "killed"
        if isinstance(recorded_start, str) and process_start(pid) not in (None, recorded_start):
            return "killed"  # the id now belongs to another process
        if pid != os.getpid() and _training_lock_state(self) in ("nobody", "this process"):
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


_NUMBER = (int, float)
# run.json: the type of each field scripts rely on (checked where present and not null)
_RUN_FIELDS = {"artifacts": list, "config": dict, "metrics": dict, "status": str, "environment": dict,
               "dataset": dict, "model": dict, "pid": int, "host": str, "pid_start": str, "epochs_completed": int,
               "tensorboard_dir": str}
_DATASET_FIELDS = {"flag": str, "size": int, "task": str, "n_channels": int, "class_names": list,
                   "spatial_dims": int, "n_samples": dict}


def _kind_name(kind) -> str:
    return "number" if kind is _NUMBER else kind.__name__


def _check_fields(record: dict, expected: dict, path: Path, prefix: str = "") -> None:
    for key, kind in expected.items():
        value = record.get(key)
        wrong_bool = isinstance(value, bool) and kind in (int, _NUMBER)
        if value is not None and (wrong_bool or not isinstance(value, kind)):
            raise UsageError(f"{path}: '{prefix}{key}' should be a JSON {_kind_name(kind)}, found "
                             f"{type(value).__name__}; the file was edited or damaged")


def check_run_record(info, path: Path) -> None:
    """The parts of run.json that scripts rely on have the right types (UsageError naming the first that does not)."""
    if not isinstance(info, dict):
        raise UsageError(f"{path} is not a run record (expected a JSON object, found {type(info).__name__})")
    _check_fields(info, _RUN_FIELDS, path)
    for entry in info.get("artifacts") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UsageError(f"{path}: an 'artifacts' entry is not a {{path, created_by, created}} record")
    dataset = info.get("dataset") or {}
    _check_fields(dataset, _DATASET_FIELDS, path, "dataset.")
    if not all(isinstance(name, str) for name in dataset.get("class_names") or []):
        raise UsageError(f"{path}: 'dataset.class_names' should be a list of texts; the file was edited or damaged")
    for key, value in (info.get("metrics") or {}).items():
        if isinstance(value, str):
            raise UsageError(f"{path}: 'metrics.{key}' should be a number, found {type(value).__name__}; "
                             "the file was edited or damaged")


# metrics.json: the keys whose values are text; every other value is a number, true/false or null
_METRICS_TEXT = {"method", "source", "selected_by", "task"}


def check_metrics(metrics, path: Path) -> dict:
    """``metrics`` (metrics.json's content) as train.py writes it: an object whose values are numbers,
    true/false or null, except the texts of :data:`_METRICS_TEXT` and ``class_names``. Returns it."""
    if not isinstance(metrics, dict):
        raise UsageError(f"{path} is not a metrics record (expected a JSON object, found {type(metrics).__name__})")

    def walk(value, where: str, text_allowed: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else key, key in _METRICS_TEXT)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]", text_allowed)
        elif isinstance(value, str) and not text_allowed:
            raise UsageError(f"{path}: '{where}' should be a number, found the text {value[:20]!r}; "
                             "the file was edited or damaged")

    class_names = metrics.get("class_names")
    if class_names is not None and not (isinstance(class_names, list) and all(isinstance(n, str) for n in class_names)):
        raise UsageError(f"{path}: 'class_names' should be a list of texts; the file was edited or damaged")
    walk({k: v for k, v in metrics.items() if k != "class_names"}, "", False)
    return metrics


def read_metrics(path: Path) -> dict:
    """metrics.json, read and checked (:func:`check_metrics`); any fault is a UsageError naming the file."""
    try:
        return check_metrics(read_json(path, "metrics record"), path)
    except FileNotFoundError:
        raise UsageError(f"{path} not found; the run has no final metrics (did training complete?)") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


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

    Both folders are checked to be writable before anything is made, and
    whatever this call made is removed again when it fails (a disk full as
    run.json is written): a failed start leaves no folder behind.
    """
    results_dir = Path(results_dir)
    folders = {"--results-dir": results_dir} | ({"--runs-dir": Path(runs_dir)} if runs_dir is not None else {})
    for flag, folder in folders.items():
        check_writable(folder, flag)
    made = [p for folder in folders.values() for p in _missing_folders(folder)]
    try:
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        if run_name is not None:
            if not _NAME_OK.fullmatch(run_name):
                raise UsageError(f"--run-name {run_name!r}: use letters, digits, '.', '_', '+' or '-'")
            if run_name in _taken_names(results_dir, runs_dir) or not _reserve(results_dir, runs_dir, run_name):
                raise UsageError(f"--run-name {run_name!r} is already used in {results_dir} or {runs_dir}; "
                                 "run names are never reused")
            return _initialized(Run(results_dir / run_name), runs_dir)
        while True:
            taken = _taken_names(results_dir, runs_dir)
            seq = max((sequence_number(n) or 0 for n in taken), default=0) + 1
            name = f"{seq:04d}_{description}"
            if _reserve(results_dir, runs_dir, name):
                return _initialized(Run(results_dir / name), runs_dir)
            # another process (or another results folder) took it first: try the next number
    except BaseException:
        for folder in reversed(made):  # innermost first; a folder another process filled meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def check_writable(folder: str | os.PathLike, flag: str) -> None:
    """UsageError unless ``folder`` (or, where it does not exist yet, the folder it would be made in)
    can be written: a read-only file system or a folder without write permission, found before
    anything is created."""
    folder = Path(folder)
    existing = _existing_parent(folder)
    if not existing.is_dir() or os.access(existing, os.W_OK | os.X_OK):
        return  # not a folder: mkdir says so in its own words
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    what = os.strerror(errno.EROFS if read_only else errno.EACCES)
    raise UsageError(f"{flag} {folder}: {what}" + (f" ({existing})" if existing != folder else "")
                     + f"; choose another {flag}" + ("" if read_only else " or check its permissions"))


def _existing_parent(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``folder.mkdir(parents=True)`` would make, outermost first."""
    missing = []
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing.append(path)
    return missing[::-1]


def _reserve(results_dir: Path, runs_dir, name: str) -> bool:
    """Create ``results_dir/name`` and ``runs_dir/name``; False (and nothing left) if either exists."""
    try:
        (results_dir / name).mkdir()
    except FileExistsError:
        return False
    if runs_dir is not None:
        try:
            (Path(runs_dir) / name).mkdir()
        except BaseException as exc:
            (results_dir / name).rmdir()
            if isinstance(exc, FileExistsError):
                return False
            raise
    return True


def _initialized(run: Run, runs_dir) -> Run:
    try:
        atomic.write_json(run.json_path, {"name": run.name, "created": now_iso(), "status": "created",
                                          "artifacts": []})
    except BaseException:
        discard_run(run, runs_dir)
        raise
    return run


def discard_run(run: Run, runs_dir=None) -> None:
    """Remove a run folder that never got a usable result (bad input found late, a failed start)."""
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
