"""Runs and studies named on the command line: by name, path, prefix or glob.

A spec is tried, in order, as

1. a run folder: a path, or a name in the results folder (``0007_breastmnist28_resnet18``);
2. a glob when it holds ``*``, ``?`` or ``[`` (``'0*_breastmnist*'``), matched against
   the run names (against paths when it holds a ``/``);
3. a prefix (``0007``): every run whose name starts with it.

Unlike the single-run scripts, a prefix that matches several runs selects them
all: comparing several runs is the point here. A spec that matches nothing is
an error. The result is in sequence-number order, each run once.
"""
from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from medscope.errors import UsageError
from medscope.runs import RUN_JSON, Run, list_runs, sequence_number

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class Selection:
    """A selected run, and whether the user named it on its own.

    ``named`` is True for a run given by its name, path or a prefix that
    matches it alone: such a run must be comparable (else the call fails);
    runs that only matched a pattern or belong to a study may be passed over
    with a note.
    """

    run: Run
    named: bool


def is_pattern(spec: str) -> bool:
    """True when ``spec`` is a glob.

    >>> is_pattern("0*_breastmnist*"), is_pattern("0007")
    (True, False)
    """
    return any(c in spec for c in GLOB_CHARACTERS)


def order_key(run: Run) -> tuple:
    """Sequence number first (runs without one last), then the name."""
    seq = sequence_number(run.name)
    return (seq is None, seq if seq is not None else 0, run.name)


def select_runs(results_dir, specs: Sequence[str]) -> list[Selection]:
    """The runs ``specs`` name, in sequence-number order, each once (module notes).

    Raises
    ------
    UsageError
        A spec that matches no run.
    """
    results_dir = Path(results_dir)
    known = list_runs(results_dir)
    chosen: dict[Path, Selection] = {}
    for spec in specs:
        for selection in _matches(results_dir, known, spec):
            key = selection.run.path.resolve()
            previous = chosen.get(key)
            chosen[key] = Selection(selection.run, selection.named or (previous is not None and previous.named))
    return sorted(chosen.values(), key=lambda s: order_key(s.run))


def _matches(results_dir: Path, known: list[Run], spec: str) -> list[Selection]:
    if not spec:
        raise UsageError("an empty run name was given")
    for path in (Path(spec), results_dir / spec):
        if (path / RUN_JSON).is_file():
            return [Selection(Run(path), named=True)]
    if is_pattern(spec):
        if os.sep in spec or "/" in spec:
            runs = [Run(Path(p)) for p in sorted(glob.glob(spec)) if (Path(p) / RUN_JSON).is_file()]
        else:
            runs = [r for r in known if fnmatch.fnmatchcase(r.name, spec)]
        if not runs:
            raise UsageError(f"no run matches {spec!r} in {results_dir}/ ({_available(known)})")
        return [Selection(r, named=False) for r in runs]
    runs = [r for r in known if r.name.startswith(spec)]
    if not runs:
        raise UsageError(f"no run named {spec!r} in {results_dir}/ ({_available(known)})")
    return [Selection(r, named=len(runs) == 1) for r in runs]


def _available(known: list[Run]) -> str:
    if not known:
        return "it holds no runs; train one with: python train.py --dataset breastmnist"
    names = sorted((r.name for r in known), key=lambda n: (sequence_number(n) is None, n))
    shown = ", ".join(names[:4]) + (f", ... ({len(names)} runs)" if len(names) > 4 else "")
    return f"runs there: {shown}"


def match_names(names: Iterable[str], spec: str) -> list[str]:
    """The names ``spec`` selects: itself if present, else a glob or prefix match.

    >>> match_names(["a1", "a2", "b1"], "a*"), match_names(["a1", "a2", "b1"], "b"), match_names(["a1"], "a1")
    (['a1', 'a2'], ['b1'], ['a1'])
    """
    names = list(names)
    if spec in names:
        return [spec]
    if is_pattern(spec):
        return [n for n in names if fnmatch.fnmatchcase(n, spec)]
    return [n for n in names if n.startswith(spec)]
