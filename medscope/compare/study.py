"""Study records: several runs (typically one configuration trained with several seeds) under one name.

``<results>/studies/<name>/`` holds

* ``study.json``: the study's name, when and by what it was written, its runs
  (names in the results folder, paths for runs elsewhere), the settings of the
  intervals, every row and the notes;
* ``study.csv``: one row per run (name, dataset, size, model, seed, status,
  test AUC / ACC / balanced accuracy with their bootstrap intervals, DeLong's
  AUC interval), one per seed group (mean ± sd, t-interval of the mean, pooled
  interval) and the published baselines -- the columns of
  :data:`medscope.compare.report.COLUMNS`, the same as ``comparison.csv``.

``python compare.py --study NAME`` compares a study's runs. The default name
is ``<first seq>-<last seq>_<dataset><size>_<model>_seeds``, e.g.
``0007-0009_breastmnist28_resnet18_seeds``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medscope import atomic
from medscope.errors import UsageError
from medscope.runs import RUN_JSON, ResultsLayout, Run, now_iso, sequence_number

from . import report
from .scores import RunScores, load_run_scores
from .select import match_names
from .tables import compare

STUDY_JSON, STUDY_CSV = "study.json", "study.csv"
_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study."""

    folder: Path
    json: Path
    csv: Path


@dataclass(frozen=True)
class Study:
    """A study as read from its ``study.json``."""

    name: str
    paths: StudyPaths
    record: dict

    @property
    def run_specs(self) -> list[str]:
        """The runs as recorded: names in the results folder, or paths."""
        return list(self.record.get("runs") or [])

    def runs(self, results_dir) -> list[Run]:
        """The study's run folders.

        Raises
        ------
        UsageError
            A run of the study is no longer in ``results_dir``.
        """
        found = []
        for spec in self.run_specs:
            path = Path(spec) if Path(spec).is_absolute() else Path(results_dir) / spec
            if not (path / RUN_JSON).is_file():
                raise UsageError(f"study {self.name} lists run {spec}, which is not in {results_dir}/ any more")
            found.append(Run(path))
        return found


def study_paths(results_dir, name: str) -> StudyPaths:
    folder = ResultsLayout(results_dir).studies_dir / name
    return StudyPaths(folder, folder / STUDY_JSON, folder / STUDY_CSV)


def default_study_name(runs: Sequence[Run | RunScores], configs: Sequence[dict] | None = None) -> str:
    """``<first seq>-<last seq>_<dataset><size>_<model>_seeds`` of the runs.

    Several datasets or models are joined with ``+``; the run names stand in
    for sequence numbers they lack.

    Parameters
    ----------
    runs : sequence of Run or RunScores
    configs : sequence of dict, optional
        The runs' run.json configurations (read from the runs when not given).

    >>> default_study_name([Run(Path("0007_x")), Run(Path("0009_x"))],
    ...                    [{"dataset": "breastmnist", "size": 28, "model": "cnn"}] * 2)
    '0007-0009_breastmnist28_cnn_seeds'
    """
    if not runs:
        raise UsageError("a study needs at least one run")
    runs = [r.run if isinstance(r, RunScores) else r for r in runs]
    if configs is None:
        configs = [r.info().get("config") or {} for r in runs]
    seqs = sorted(s for s in (sequence_number(r.name) for r in runs) if s is not None)
    if seqs:
        span = f"{seqs[0]:04d}" if seqs[0] == seqs[-1] else f"{seqs[0]:04d}-{seqs[-1]:04d}"
    else:
        span = runs[0].name
    datasets = "+".join(dict.fromkeys(f"{c.get('dataset', 'unknown')}{c.get('size', '')}" for c in configs))
    models = "+".join(dict.fromkeys(str(c.get("model", "unknown")) for c in configs))
    return f"{span}_{datasets}_{models}_seeds"


def _spec(run: Run, results_dir: Path) -> str:
    """How study.json names a run: its name when it lives in the results folder, else its absolute path."""
    if run.path.resolve().parent == results_dir.resolve():
        return run.name
    return str(run.path.resolve())


def study_record(name: str, runs: Sequence[Run], missing: dict, comparison, results_dir,
                 created_by: str | None) -> dict:
    """The content of study.json (pure: values in, dict out).

    ``missing`` maps the names of runs without scores to why (they get a row with
    their status only); ``comparison`` is :func:`medscope.compare.tables.compare`
    of ``scores`` (None when no run has scores).
    """
    rows = report.table_rows(comparison) if comparison is not None else []
    for run in runs:
        if run.name in missing:
            rows.append({"kind": "run", "name": run.name, "status": missing[run.name]["status"],
                         **{k: missing[run.name].get(k) for k in ("dataset", "size", "model", "seed")}})
    notes = list(comparison.notes) if comparison is not None else []
    notes += [f"run {n}: {m['why']}" for n, m in missing.items()]
    settings = {}
    if comparison is not None:
        s = comparison.settings
        settings = {"split": s.split, "bootstrap_resamples": s.n_resamples, "level": s.level, "seed": s.seed,
                    "interval_method": comparison.interval_method}
    return {"name": name, "created": now_iso(), "created_by": created_by,
            "runs": [_spec(r, Path(results_dir)) for r in runs], "settings": settings,
            "columns": report.COLUMNS, "rows": rows, "notes": notes}


def write_study(results_dir, name: str | None, runs: Sequence[Run], *, n_resamples: int = 2000,
                level: float = 0.95, seed: int = 0, created_by: str | None = None) -> StudyPaths:
    """Write (or refresh) the study record of ``runs`` and return its paths.

    Parameters
    ----------
    results_dir : path
        The results folder; the study goes to ``<results_dir>/studies/<name>/``.
    name : str or None
        The study's name; None: :func:`default_study_name`.
    runs : sequence of Run
        The runs, typically one configuration trained with several seeds. A run
        without test scores (interrupted, failed) gets a row with its status only.
    n_resamples, level, seed :
        Of the bootstrap intervals (:func:`medscope.stats.bootstrap.metric_intervals`).
    created_by : str, optional
        The script that writes it (e.g. ``"train.py"``), recorded in study.json.

    Returns
    -------
    StudyPaths

    Raises
    ------
    UsageError
        No runs, a bad name, or a study of that name with other runs.
    """
    runs = list(dict.fromkeys(runs))
    if not runs:
        raise UsageError("a study needs at least one run")
    results_dir = Path(results_dir)
    scores, missing, configs = [], {}, []
    for run in runs:
        info = run.info()
        config = info.get("config") or {}
        configs.append(config)
        try:
            scores.append(load_run_scores(run, "test"))
        except UsageError as exc:
            missing[run.name] = {"why": str(exc), "status": run.status(info), "dataset": config.get("dataset"),
                                 "size": config.get("size"), "model": config.get("model"), "seed": config.get("seed")}
    name = name if name is not None else default_study_name(runs, configs)
    if not _NAME_OK.fullmatch(name):
        raise UsageError(f"study name {name!r}: use letters, digits, '.', '_', '+' or '-'")
    paths = study_paths(results_dir, name)
    specs = [_spec(r, results_dir) for r in runs]
    if paths.json.is_file():
        recorded = _read_json(paths.json, name).get("runs")
        if recorded != specs:
            raise UsageError(f"study {name} already exists in {paths.folder.parent}/ with other runs; "
                             "choose another name")
    comparison = compare(scores, n_resamples=n_resamples, level=level, seed=seed, tests=False) if scores else None
    record = study_record(name, runs, missing, comparison, results_dir, created_by)
    paths.folder.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(paths.csv, record["rows"], report.COLUMNS)
    atomic.write_json(paths.json, record)
    return paths


def _read_json(path: Path, name: str) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"study {name}: {path} is not readable ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list) \
            or not all(isinstance(r, str) for r in record["runs"]):
        raise UsageError(f"study {name}: {path} is not a study record (no list of runs)")
    return record


def list_studies(results_dir) -> list[str]:
    """Names of the studies in ``results_dir``, sorted."""
    folder = ResultsLayout(results_dir).studies_dir
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / STUDY_JSON).is_file())


def read_study(results_dir, name: str) -> Study:
    """The study ``name`` (exact name).

    Raises
    ------
    UsageError
        No such study, or its study.json is damaged.
    """
    paths = study_paths(results_dir, name)
    if not name or not paths.json.is_file():
        known = list_studies(results_dir)
        shown = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "") if known else "none yet"
        raise UsageError(f"no study named {name!r} in {ResultsLayout(results_dir).studies_dir}/ "
                         f"(studies there: {shown})")
    return Study(name, paths, _read_json(paths.json, name))


def select_studies(results_dir, specs: Sequence[str]) -> list[Study]:
    """Studies by name, prefix or glob (as runs are selected), each once, in the order given.

    Raises
    ------
    UsageError
        A spec that matches no study.
    """
    known = list_studies(results_dir)
    chosen: dict[str, Study] = {}
    for spec in specs:
        names = match_names(known, spec)
        if not names:
            read_study(results_dir, spec)  # raises the one-line error naming the studies there
        for name in names:
            chosen.setdefault(name, read_study(results_dir, name))
    return list(chosen.values())
