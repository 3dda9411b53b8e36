"""Where a comparison is written: ``<results>/comparisons/<YYYYMMDD-HHMMSS>_<short name>/``, never reused.

The files of one comparison are written into a hidden temporary folder beside
the target and the folder is renamed into place at the end, so an interrupted
call leaves no half comparison, and two calls never write into one folder.
"""
from __future__ import annotations

import datetime as _dt
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

from medscope.errors import UsageError
from medscope.runs import ResultsLayout, sequence_number

MD, CSV, TESTS_CSV, JSON = "comparison.md", "comparison.csv", "comparison_tests.csv", "comparison.json"
MAX_SHORT_NAME = 60
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def forest_png(metric: str) -> str:
    """File name of the forest plot of ``metric``.

    >>> forest_png("auc")
    'forest_auc.png'
    """
    return f"forest_{metric}.png"


def comparisons_dir(results_dir) -> Path:
    """``<results_dir>/comparisons``: every comparison's folder lives here."""
    return ResultsLayout(results_dir).comparisons_dir


def short_name(run_names: Sequence[str], split_labels: Sequence[str], studies: Sequence[str] = ()) -> str:
    """A short readable name: the study's, or the runs' sequence range and datasets.

    >>> short_name(["0007_breastmnist28_cnn", "0012_breastmnist28_resnet18"], ["breastmnist28"])
    '0007-0012_breastmnist28'
    >>> short_name(["0007_a"], ["breastmnist28"], studies=["0007-0009_breastmnist28_cnn_seeds"])
    '0007-0009_breastmnist28_cnn_seeds'
    """
    if len(studies) == 1:
        text = studies[0]
    else:
        seqs = sorted(s for s in (sequence_number(n) for n in run_names) if s is not None)
        if seqs:
            span = f"{seqs[0]:04d}" if seqs[0] == seqs[-1] else f"{seqs[0]:04d}-{seqs[-1]:04d}"
        else:
            span = run_names[0] if run_names else "runs"
        text = f"{span}_{'+'.join(dict.fromkeys(split_labels))}"
    text = _UNSAFE.sub("-", text).strip("-.") or "comparison"
    return text[:MAX_SHORT_NAME].rstrip("-._+")


def stamp(now: _dt.datetime | None = None) -> str:
    return (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")


def check_out_dir(out) -> Path:
    """A ``--out`` folder must be new (or empty): a comparison never overwrites another."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists and is not an empty folder; comparisons never overwrite: "
                         "choose a new folder")
    return out


def move_into_place(staging: Path, target: Path, *, numbered: bool) -> Path:
    """Rename the finished ``staging`` folder to ``target`` and return where it went.

    ``numbered``: if ``target`` is taken, use ``target-2``, ``target-3``, ...;
    otherwise a taken (non-empty) ``target`` is an error. The rename is atomic.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = target, 1
    while True:
        try:
            if candidate.exists() and candidate.is_dir() and not any(candidate.iterdir()) and not numbered:
                candidate.rmdir()  # an empty --out folder the user made for us
            if candidate.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(candidate))
            os.rename(staging, candidate)
            return candidate
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not numbered:
                shutil.rmtree(staging, ignore_errors=True)
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise UsageError(f"{candidate} already exists; comparisons never overwrite: "
                                     "choose a new folder") from None
                raise
            n += 1
            candidate = target.with_name(f"{target.name}-{n}")
