"""The command layer of ``report.py``: build the page and the card, write them into the run, record them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from medscope.runs import Run, now_iso

from .. import atomic
from .build import build_run_report
from .images import MAX_WIDTH
from .model_card import model_card, model_card_markdown
from .render import embed_figures, render_run_page


@dataclass(frozen=True)
class WrittenReport:
    """What :func:`write_run_report` wrote, and what it took."""

    html: Path
    model_card_md: Path
    model_card_json: Path
    n_bytes: int  # size of report.html
    n_figures: int
    build_seconds: float  # reading the run, embedding the figures, making the card
    total_seconds: float  # ... and rendering and writing the three files


def write_run_report(run: Run, *, results_dir: str | None = None, max_width: int = MAX_WIDTH) -> WrittenReport:
    """Write ``report.html``, ``model_card.md`` and ``model_card.json`` into ``run`` (atomically) and record them."""
    started = time.perf_counter()
    report = build_run_report(run.path, results_dir=results_dir)
    images = embed_figures([f.path for f in report.figures], max_width=max_width)
    card = model_card(report, results_dir=results_dir)
    build_seconds = time.perf_counter() - started
    html = render_run_page(report, card, images, generated=now_iso(), build_seconds=build_seconds)
    layout = report.layout
    written = [atomic.write_text(layout.report_html, html),
               atomic.write_text(layout.model_card_md, model_card_markdown(card)),
               atomic.write_json(layout.model_card_json, card)]
    run.add_artifacts([p.name for p in written], created_by="report.py")
    return WrittenReport(html=layout.report_html, model_card_md=layout.model_card_md,
                         model_card_json=layout.model_card_json, n_bytes=len(html.encode("utf-8")),
                         n_figures=len(images), build_seconds=build_seconds,
                         total_seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class WrittenComparison:
    """What :func:`write_comparison_report` wrote, and what it took."""

    html: Path
    folder: Path  # the study's folder, or the new comparison folder
    files: tuple  # names of every file written into ``folder``
    n_runs: int
    n_bytes: int  # size of report.html
    total_seconds: float


def write_comparison_report(chosen, *, results_dir, metric: str = "auc", n_resamples: int = 2000,
                            level: float = 0.95, seed: int = 0, max_width: int = MAX_WIDTH) -> WrittenComparison:
    """Compare ``chosen`` (:func:`medscope.report.comparison.choose`) and write its page.

    One study alone: ``<results>/studies/<name>/report.html`` (replaced when it
    exists). Otherwise a new folder ``<results>/comparisons/<stamp>_<short name>/``
    holding ``report.html`` and compare.py's files (Markdown, CSV, JSON and the
    forest plot), renamed into place when complete.
    """
    import shutil
    import tempfile

    from medscope.compare import paths, plots
    from medscope.compare import report as compare_report
    from medscope.compare.tables import compare

    from .comparison import page_title, run_lines
    from .render import render_comparison_page

    started = time.perf_counter()
    scores, studies = chosen.scores, chosen.studies
    comparison = compare(scores, metric=metric, n_resamples=n_resamples, level=level, seed=seed,
                         baseline=chosen.baseline)
    comparison.notes[:0] = list(chosen.skipped)
    name = paths.short_name([s.name for s in scores], [t.label for t in comparison.tables],
                            [s.name for s in studies])
    title = page_title(studies, name)
    figure_name = paths.forest_png(metric)
    one_study = len(studies) == 1 and all(s.run.path.resolve() in
                                           {r.path.resolve() for r in studies[0].runs(results_dir)} for s in scores)
    if one_study:
        folder = studies[0].paths.folder
        staging = Path(tempfile.mkdtemp(prefix="medscope-study-figure-"))
    else:
        folder = paths.comparisons_dir(results_dir) / f"{paths.stamp()}_{name}"
        staging = atomic.temporary_dir(folder.parent, folder.name)
    try:
        figure_path = atomic.save_figure(staging / figure_name, plots.forest_plot(comparison, metric))
        images = embed_figures([figure_path], max_width=max_width)
        # links are relative to where the page ends up, not to the staging folder
        lines = run_lines(comparison, scores, folder, results_dir)
        html = render_comparison_page(comparison, title=title, lines=lines, figure=figure_path, images=images,
                                      studies=[s.name for s in studies], generated=now_iso(),
                                      build_seconds=time.perf_counter() - started)
        if one_study:
            written = atomic.write_text(folder / "report.html", html)
            files = (written.name,)
        else:
            written_files = [
                atomic.write_text(staging / "report.html", html),
                atomic.write_text(staging / paths.MD, compare_report.markdown(comparison, title=title,
                                                                            figure=figure_name)),
                atomic.write_csv(staging / paths.CSV, compare_report.table_rows(comparison), compare_report.COLUMNS),
                atomic.write_csv(staging / paths.TESTS_CSV, compare_report.rows_of_tests(comparison),
                                 compare_report.TEST_COLUMNS),
                atomic.write_json(staging / paths.JSON, compare_report.to_json(comparison) | {
                    "name": name, "runs": [s.name for s in scores], "studies": [s.name for s in studies]}),
            ]
            files = tuple(p.name for p in written_files) + (figure_name,)
            folder = paths.move_into_place(staging, folder, numbered=True)
            written = folder / "report.html"
    finally:
        if one_study or staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return WrittenComparison(html=written, folder=folder, files=files, n_runs=len(scores),
                             n_bytes=len(html.encode("utf-8")), total_seconds=time.perf_counter() - started)
