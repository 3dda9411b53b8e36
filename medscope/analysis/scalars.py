"""TensorBoard scalars -> tidy and wide tables, read with TensorBoard's own reader.

Event files are parsed by ``tensorboard``'s own loader
(``LegacyEventFileLoader``: record framing, CRC checks, its ``Event`` proto),
and a table holds what TensorBoard's scalar dashboard shows:

- a value is a scalar when it is a legacy ``simple_value`` (float32; what
  ``SummaryWriter.add_scalar`` writes) or a tensor whose tag's first summary
  metadata names the ``scalars`` plugin (new-style, float32 or float64) —
  the same rule as TensorBoard's ``data_compat`` migration, applied only to
  scalars so histograms are never converted (about 3x faster than
  TensorBoard's accumulator on a histogram-heavy log, see
  bench/bench_export_scalars.py); histograms, text and hparams are skipped;
- event files of one folder are read in file-name order (their names start
  with the creation time), as TensorBoard reads them;
- a ``SessionLog.START`` event at step ``s`` — what ``SummaryWriter(purge_step=s)``
  writes when a run resumes — drops every earlier point with step >= ``s``.
  That is what TensorBoard's default loader does; its older Python
  ``EventAccumulator`` ignores the first START of a folder and would keep the
  orphaned points of a run interrupted after logging an epoch it never saved.

Values keep every bit. A float32 scalar is widened to float64 (exact) and
written with ``repr`` (the shortest text that parses back to that float64), so
``numpy.float32(float(text))`` gives back the logged float32 bit for bit;
double-precision scalars keep their float64 value.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medscope import atomic
from medscope.errors import UsageError
from medscope.runs import DEFAULT_RUNS_DIR, Run, list_runs

TIDY_COLUMNS = ("run", "tag", "step", "wall_time", "value")
SCALARS_PLUGIN = "scalars"


@dataclass(frozen=True)
class ScalarPoint:
    """One logged scalar: what TensorBoard's scalar dashboard plots."""

    run: str
    tag: str
    step: int
    wall_time: float  # seconds since the UNIX epoch, as logged
    value: float  # the logged float32 (or float64) value, widened exactly to a Python float

    def as_row(self) -> dict:
        return {"run": self.run, "tag": self.tag, "step": self.step, "wall_time": self.wall_time,
                "value": self.value}


def is_event_file(path: str | os.PathLike) -> bool:
    """TensorBoard's own test for an event file name (``*tfevents*``)."""
    from tensorboard.backend.event_processing import io_wrapper

    return io_wrapper.IsSummaryEventsFile(str(path))


def event_dirs(logdir: str | os.PathLike) -> list[Path]:
    """Folders under ``logdir`` (itself included) that hold event files, sorted.

    TensorBoard treats each such folder as one run; a sub-folder (for example
    one written by ``SummaryWriter.add_hparams``) becomes the run ``<run>/<sub>``.
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        return []
    found = []
    for folder, _dirs, files in os.walk(logdir):
        if any(is_event_file(name) for name in files):
            found.append(Path(folder))
    return sorted(found)


def damaged_records(path: str | os.PathLike) -> str | None:
    """What is wrong with an event file's records, or None when every record is whole.

    An event file is a sequence of TFRecords: ``uint64 length``, ``uint32
    masked CRC-32C of the length``, ``length`` bytes of data and ``uint32
    masked CRC-32C of the data`` (little-endian). TensorBoard's reader stops
    silently at the first bad record; this says how many records were whole
    and what follows them (a truncated record, a checksum that does not match),
    so that an export of part of a file is never mistaken for the whole.
    """
    import struct

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = Path(path).read_bytes()
    offset, whole = 0, 0
    while offset < len(data):
        if len(data) - offset < 12:
            return f"{whole} whole record(s), then {len(data) - offset} byte(s) of a truncated record"
        header = data[offset:offset + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[offset + 8:offset + 12])
        if masked_crc32c(header) != length_crc:
            return f"{whole} whole record(s), then a record whose length fails its checksum"
        end = offset + 12 + length + 4
        if end > len(data):
            return f"{whole} whole record(s), then a truncated record ({len(data) - offset} of {end - offset} bytes)"
        payload = data[offset + 12:offset + 12 + length]
        if masked_crc32c(payload) != struct.unpack("<I", data[end - 4:end])[0]:
            return f"{whole} whole record(s), then a record whose data fails its checksum"
        whole += 1
        offset = end
    return None


def damaged_files(logdir: str | os.PathLike) -> list[str]:
    """One line per damaged event file directly inside ``logdir`` (empty when all are whole)."""
    return [f"{path}: {problem}" for path in sorted(Path(logdir).iterdir())
            if path.is_file() and is_event_file(path.name) and (problem := damaged_records(path))]


def read_scalars(logdir: str | os.PathLike, run: str) -> list[ScalarPoint]:
    """Every scalar point in the event files directly inside ``logdir``.

    Parameters
    ----------
    logdir : path
        A folder of ``events.out.tfevents.*`` files (one TensorBoard run).
    run : str
        The name written in the ``run`` column.

    Returns
    -------
    list of ScalarPoint
        Tags in the order they were first logged; within a tag, points in the
        order they were logged, orphaned points of a resumed run removed.
    """
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    files = sorted(p for p in Path(logdir).iterdir() if p.is_file() and is_event_file(p.name))
    plugin_of: dict[str, str] = {}  # tag -> plugin named by its first metadata
    points: list[ScalarPoint] = []
    for path in files:
        for event in event_file_loader.LegacyEventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                points = [p for p in points if p.step < event.step]
                continue
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField("metadata") and value.tag not in plugin_of:
                    plugin_of[value.tag] = value.metadata.plugin_data.plugin_name
                kind = value.WhichOneof("value")
                if kind == "simple_value":  # a float32 field; Python widens it to float64 exactly
                    number = value.simple_value
                elif kind == "tensor" and plugin_of.get(value.tag) == SCALARS_PLUGIN:
                    number = tensor_util.make_ndarray(value.tensor).item()  # float32 or float64, exact
                else:
                    continue
                points.append(ScalarPoint(run, value.tag, int(event.step), float(event.wall_time), float(number)))
    first_seen = {tag: i for i, tag in enumerate(dict.fromkeys(p.tag for p in points))}
    return sorted(points, key=lambda p: first_seen[p.tag])  # stable: logging order within a tag


def tensorboard_logdir(run: Run, runs_dir: str | os.PathLike | None) -> Path:
    """The folder of ``run``'s event files.

    ``<runs_dir>/<run name>`` first; failing that, the folder ``train.py``
    recorded in run.json (so ``--runs-dir`` may be left out for a run trained
    elsewhere). ``runs_dir`` None (``--runs-dir`` left out): the recorded
    folder first, then ``runs/<run name>``, which may hold another run of the
    same name. Raises UsageError when no candidate holds an event file.
    """
    candidates = [run.layout.tensorboard_dir(runs_dir)] if runs_dir is not None else []
    info = run.info()
    if info.get("tensorboard_dir"):
        candidates.append(Path(info["tensorboard_dir"]))
    config_runs_dir = (info.get("config") or {}).get("runs_dir")
    if config_runs_dir:
        candidates.append(run.layout.tensorboard_dir(config_runs_dir))
    if runs_dir is None:
        candidates.append(run.layout.tensorboard_dir(DEFAULT_RUNS_DIR))
    for candidate in candidates:
        if event_dirs(candidate):
            return candidate
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise UsageError(f"run {run.name} has no TensorBoard event files (looked in {looked}); "
                     "train.py writes them under --runs-dir, pass the one it used")


def read_run(run: Run, runs_dir: str | os.PathLike) -> list[ScalarPoint]:
    """All scalars of one run folder (its sub-runs named ``<run>/<sub>``)."""
    logdir = tensorboard_logdir(run, runs_dir)
    points = []
    for folder in event_dirs(logdir):
        rel = folder.relative_to(logdir)
        name = run.name if rel == Path(".") else f"{run.name}/{rel.as_posix()}"
        points += read_scalars(folder, name)
    if not points:
        raise UsageError(f"the event files of run {run.name} in {logdir} hold no scalars")
    return points


def wide_table(points: Sequence[ScalarPoint]) -> tuple[list[dict], list[str]]:
    """One row per (run, step), one column per tag; returns ``(rows, columns)``.

    A tag logged twice at one step keeps its later value (by wall time), which
    is the point TensorBoard draws last. A tag not logged at a step is an empty
    cell.

    >>> pts = [ScalarPoint("r", "loss", 1, 10.0, 0.5), ScalarPoint("r", "auc", 2, 11.0, 0.75),
    ...        ScalarPoint("r", "loss", 2, 11.0, 0.25)]
    >>> rows, columns = wide_table(pts)
    >>> columns
    ['run', 'step', 'loss', 'auc']
    >>> rows
    [{'run': 'r', 'step': 1, 'loss': 0.5}, {'run': 'r', 'step': 2, 'auc': 0.75, 'loss': 0.25}]
    """
    tags = list(dict.fromkeys(p.tag for p in points))
    latest: dict[tuple, ScalarPoint] = {}
    for point in points:
        key = (point.run, point.step, point.tag)
        if key not in latest or point.wall_time >= latest[key].wall_time:
            latest[key] = point
    rows: dict[tuple, dict] = {}
    run_order = {run: i for i, run in enumerate(dict.fromkeys(p.run for p in points))}
    for (run, step, tag), point in sorted(latest.items(), key=lambda kv: (run_order[kv[0][0]], kv[0][1])):
        rows.setdefault((run, step), {"run": run, "step": step})[tag] = point.value
    return list(rows.values()), ["run", "step", *tags]


def write_tables(points: Sequence[ScalarPoint], tidy_path: Path, wide_path: Path) -> list[Path]:
    """Write the tidy and the wide CSV (atomically); returns the two paths."""
    rows, columns = wide_table(points)
    return [atomic.write_csv(tidy_path, (p.as_row() for p in points), TIDY_COLUMNS),
            atomic.write_csv(wide_path, rows, columns)]


def tag_count(points: Sequence[ScalarPoint]) -> int:
    """How many different tags ``points`` hold."""
    return len({p.tag for p in points})


@dataclass(frozen=True)
class Collected:
    """The scalars of every run of a results folder (:func:`read_all`)."""

    runs: tuple[str, ...]  # the runs whose scalars are in ``points``, oldest first
    points: tuple[ScalarPoint, ...]
    skipped: tuple[str, ...]  # one line per run without scalars, saying why


def read_all(results_dir: str | os.PathLike, runs_dir: str | os.PathLike) -> Collected:
    """The scalars of every run in ``results_dir``, oldest run first.

    Runs without event files (for example one that failed before its first
    epoch) are skipped and listed in ``skipped``; no run with scalars at all
    is a UsageError.
    """
    runs = list_runs(results_dir)
    if not runs:
        raise UsageError(f"no runs in {results_dir}/; train one first: python train.py --dataset breastmnist")
    points, read, skipped = [], [], []
    for run in reversed(runs):  # oldest first: the combined table reads in training order
        try:
            run_points = read_run(run, runs_dir)
        except UsageError as exc:
            skipped.append(f"skipped: {exc}")
            continue
        points += run_points
        read.append(run.name)
    if not points:
        where = f" in {runs_dir}/" if runs_dir is not None else ""
        raise UsageError(f"none of the {len(runs)} runs in {results_dir}/ has TensorBoard scalars{where}")
    return Collected(tuple(read), tuple(points), tuple(skipped))


def read_tidy_csv(path: str | os.PathLike) -> list[dict]:
    """Read a tidy file back (values as Python floats, steps as ints)."""
    import csv

    with open(path, newline="") as fh:
        return [{"run": r["run"], "tag": r["tag"], "step": int(r["step"]), "wall_time": float(r["wall_time"]),
                 "value": float(r["value"])} for r in csv.DictReader(fh)]
