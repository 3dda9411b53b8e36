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
