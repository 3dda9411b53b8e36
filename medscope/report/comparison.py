"""The page of a comparison or a study: compare.py's numbers, its forest plot, and one line per run.

The numbers are those of :func:`medscope.compare.tables.compare` on the runs'
stored test scores (the data ``compare.py`` reads; nothing is recomputed from
images). Each run gets a verdict line -- its test AUC and ACC with the
comparison's intervals -- linked to the run's own page when that page exists,
or else the ``report.py`` command that writes it.

Where the page goes (:func:`comparison_target`): a single study's page is
``<results>/studies/<name>/report.html``; any other selection gets a new folder
``<results>/comparisons/<YYYYMMDD-HHMMSS>_<short name>/``, named as compare.py
names its folders (:mod:`medscope.compare.paths`).
"""
from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medscope.compare.choice import Chosen, choose  # noqa: F401 - what a comparison page is about
from medscope.compare.scores import RunScores
from medscope.compare.study import Study
from medscope.compare.tables import Comparison
from medscope.runs import RunLayout

DEFAULT_RESULTS = "results"


@dataclass(frozen=True)
class RunLine:
    """One run's verdict on the page: test AUC and ACC with intervals, and where its own page is.

    ``auc_interval`` / ``acc_interval`` are ``(low, high, method)`` or None;
    ``link`` is the relative address of the run's ``report.html`` (None when it
    has none yet), ``command`` the ``report.py`` line that writes it.
    """

    name: str
    split_label: str
    status: str
    auc: float
    acc: float
    auc_interval: tuple | None
    acc_interval: tuple | None
    link: str | None
    command: str


def report_command(run_name: str, results_dir=None) -> str:
    """The command that writes a run's own page.

    >>> report_command("0007_breastmnist28_cnn", "/tmp/r")
    'python report.py --run 0007_breastmnist28_cnn --results-dir /tmp/r'
    >>> report_command("0007_breastmnist28_cnn")
    'python report.py --run 0007_breastmnist28_cnn'
    """
    extra = ["--results-dir", str(results_dir)] if results_dir not in (None, DEFAULT_RESULTS) else []
    return shlex.join(["python", "report.py", "--run", run_name, *extra])


def report_link(run_path: Path, page_dir: Path) -> str | None:
    """The address of ``run_path``'s report.html relative to a page in ``page_dir``; None when it has none.

    From ``results/studies/<name>/`` a run of ``results/`` is ``../../<run>/report.html``.
    """
    target = RunLayout(Path(run_path)).report_html
    if not target.is_file():
        return None
    return Path(os.path.relpath(target.resolve(), Path(page_dir).resolve())).as_posix()


def _interval(bounds, method: str):
    if not bounds or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bounds):
        return None
    return (float(bounds[0]), float(bounds[1]), method)


def run_lines(comparison: Comparison, scores: Sequence[RunScores], page_dir: Path, results_dir=None) -> list[RunLine]:
    """One :class:`RunLine` per run of ``comparison``, in table order.

    The intervals are the comparison's: the stratified bootstrap percentile
    interval when it has one, else DeLong's for a binary AUC.
    """
    paths = {s.name: s.run.path for s in scores}
    lines = []
    for table in comparison.tables:
        for r in table.runs:
            auc = _interval(r.bootstrap.get("auc"), "bootstrap") or _interval(r.delong, "DeLong")
            acc = _interval(r.bootstrap.get("acc"), "bootstrap")
            lines.append(RunLine(r.name, table.label, r.status, r.estimates["auc"], r.estimates["acc"], auc, acc,
                                 report_link(paths[r.name], page_dir), report_command(r.name, results_dir)))
    return lines


def page_title(studies: Sequence[Study], name: str) -> str:
    """``Study <name>`` for one study, else ``Comparison <name>``."""
    return f"Study {studies[0].name}" if len(studies) == 1 and name == studies[0].name else f"Comparison {name}"
