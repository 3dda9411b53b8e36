"""Which runs a comparison is about: runs named by name, prefix or glob, the runs of studies, a baseline.

Shared by ``compare.py`` and ``report.py``'s comparison pages, so both choose
and pass over runs by the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medscope.errors import UsageError
from medscope.runs import resolve_run

from . import select
from .scores import load_run_scores
from .study import select_studies


@dataclass(frozen=True)
class Chosen:
    """What a comparison page is about: the runs' scores, the studies they came from, runs passed over."""

    scores: list  # RunScores, in sequence-number order
    studies: list  # Study
    skipped: list  # one sentence per run left out (no test scores)
    baseline: str | None = None  # name of the run every other run is tested against



def choose(results_dir, run_specs: Sequence[str], study_specs: Sequence[str], split: str = "test",
           baseline: str | None = None) -> Chosen:
    """The runs named (names, prefixes, globs as compare.py takes them) and the studies' runs, with their scores.

    ``baseline`` (a run name, path or unique prefix, as ``compare.py --baseline``)
    is added to the runs when it is not among them.

    A run named on its own must have scores; one that only matched a pattern or
    belongs to a study is left out with a sentence in ``skipped``, for the test
    split only: every run compared on another split must have its scores.

    Raises
    ------
    UsageError
        A spec or study that matches nothing, a named run without scores, or no scores at all.
    """
    chosen = select.select_runs(results_dir, run_specs) if run_specs else []
    studies = select_studies(results_dir, study_specs) if study_specs else []
    for study in studies:
        chosen += [select.Selection(run, named=False) for run in study.runs(results_dir)]
    base_name = None
    if baseline is not None:
        base_run = resolve_run(results_dir, baseline)
        base_name = base_run.name
        chosen.append(select.Selection(base_run, named=True))
    selections: dict[Path, select.Selection] = {}
    for selection in chosen:  # each run once; named if it was named anywhere
        key = selection.run.path.resolve()
        named = selection.named or (key in selections and selections[key].named)
        selections[key] = select.Selection(selections.get(key, selection).run, named)
    scores, skipped = [], []
    for selection in sorted(selections.values(), key=lambda s: select.order_key(s.run)):
        try:
            scores.append(load_run_scores(selection.run, split))
        except UsageError as exc:
            if selection.named or split != "test":
                raise
            skipped.append(f"{selection.run.name} left out: {exc}")
    if not scores:
        raise UsageError(f"none of the selected runs has {split} scores to compare")
    return Chosen(scores, studies, skipped, base_name)
