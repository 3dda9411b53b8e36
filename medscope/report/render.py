"""HTML from the report's data: Jinja2 templates, autoescaped, figures embedded.

The templates live in ``templates/``: ``base.html.j2`` holds the page's frame
(head, inline CSS, header, navigation, footer) as blocks, and each page kind
extends it (``run.html.j2`` for one run, one include per section). A page that
compares runs or studies extends the same base and reuses ``macros.html.j2``.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from . import text
from .images import MAX_WIDTH, EmbeddedImage, embed_image

TEMPLATES = Path(__file__).with_name("templates")


def p_value_text(p) -> str:
    """compare.py's text for a p-value (``< 0.0001`` below that), so the page and comparison.md agree.

    >>> p_value_text(0.04321), p_value_text(3e-7)
    ('0.0432', '< 0.0001')
    """
    from medscope.compare.report import p_text  # imported late: the run page does not need the statistics

    return p_text(p)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment: autoescaping on for every template, undefined names are errors."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(number=text.number_text, percent=text.percent_text, interval=text.interval_text,
                       duration=text.duration_text, size=text.size_text, words=text.title_text,
                       when=text.time_text, p_value=p_value_text)
    env.tests["finite"] = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return env


def embed_figures(paths, *, max_width: int = MAX_WIDTH, workers: int | None = None) -> dict[Path, EmbeddedImage]:
    """Every figure as an :class:`EmbeddedImage`, encoded in parallel threads (Pillow releases the GIL)."""
    paths = list(dict.fromkeys(Path(p) for p in paths))
    workers = workers or min(len(paths), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        encoded = list(pool.map(lambda p: embed_image(p, max_width), paths))
    return dict(zip(paths, encoded))


def render_page(template: str, **context) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)


def render_run_page(report, card: dict, images: dict[Path, EmbeddedImage], *, generated: str,
                    build_seconds: float) -> str:
    """The HTML of one run's report.

    Parameters
    ----------
    report : RunReport
        From :func:`medscope.report.build.build_run_report`.
    card : dict
        From :func:`medscope.report.model_card.model_card`.
    images : dict
        Every figure of ``report`` (by path) embedded, from :func:`embed_figures`.
    generated : str
        When the page was made (ISO 8601).
    build_seconds : float
        Seconds spent reading the run and embedding its figures (shown in the footer).
    """
    return render_page("run.html.j2", report=report, card=card, images=images, generated=generated,
                       build_seconds=build_seconds)


@dataclass(frozen=True)
class ComparisonFigure:
    """A figure of a comparison page (the shape :func:`macros.figure` reads)."""

    path: Path
    title: str
    caption: str


def render_comparison_page(comparison, *, title: str, lines, figure: Path, images: dict[Path, EmbeddedImage],
                           studies, generated: str, build_seconds: float) -> str:
    """The HTML of a comparison or study page.

    Parameters
    ----------
    comparison : Comparison
        From :func:`medscope.compare.tables.compare`.
    title : str
        ``Study <name>`` or ``Comparison <name>``.
    lines : list of RunLine
        From :func:`medscope.report.comparison.run_lines`.
    figure : Path
        The forest plot's file, embedded in ``images``.
    studies : list of str
        Names of the studies the runs came from.
    generated : str
        When the page was made (ISO 8601).
    build_seconds : float
        Seconds spent comparing and drawing (shown in the footer).
    """
    from medscope import baselines
    from medscope.compare.tables import BETWEEN_RUNS, METRIC_NAMES, METRICS

    metric_name = METRIC_NAMES[comparison.settings.metric]
    level = f"{comparison.settings.level:.0%}"
    forest = ComparisonFigure(Path(figure), f"Forest plot of {metric_name}",
                              f"Each run's {metric_name} with its {level} interval (circles), each seed group's mean "
                              "with the t-interval across seeds (squares, thin) and the pooled bootstrap interval "
                              "(thick), and the published MedMNIST v2 numbers (diamonds, dotted).")
    return render_page("comparison.html.j2", comparison=comparison, title=title, lines=lines, forest=forest,
                       images=images, studies=list(studies), generated=generated, build_seconds=build_seconds,
                       metrics=METRICS, metric_names=METRIC_NAMES, between_runs=BETWEEN_RUNS, level=level,
                       baseline_source=baselines.SOURCE)
