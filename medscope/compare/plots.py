"""The forest plot of a comparison: every run's and seed group's metric with its interval.

One panel per test split, one row per run, seed group and published baseline.
A run shows its estimate and bootstrap interval (DeLong's for a binary AUC
when there is no bootstrap); a seed group its mean with the t-interval of the
mean (thin, with caps) and the pooled bootstrap interval (thick); a published
baseline is a diamond, with a dotted line across the panel. Labels are full
names, never shortened: the figure grows with them (save with a tight
bounding box, as :func:`medscope.atomic.save_figure` does).

matplotlib runs on the Agg backend: no display is needed.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .tables import METRIC_NAMES, PUBLISHED_METRICS, Comparison  # noqa: E402

RUN_COLOR, GROUP_COLOR, BASELINE_COLOR = "tab:blue", "tab:orange", "tab:gray"
ROW_HEIGHT_IN = 0.34  # inches per row: 9-10 pt labels stay apart


def forest_rows(comparison: Comparison, metric: str) -> list[list[dict]]:
    """Per split, the rows of the plot top to bottom: ``{"label", "kind", "estimate", "intervals"}``.

    ``intervals`` is a list of ``(low, high, style)`` with style ``"bootstrap"``,
    ``"delong"``, ``"t"`` or ``"pooled"``.
    """
    panels = []
    for table in comparison.tables:
        rows = []
        for r in table.runs:
            if r.bootstrap:
                intervals = [(*r.bootstrap[metric], "bootstrap")]
            elif metric == "auc" and r.delong:
                intervals = [(*r.delong, "delong")]
            else:
                intervals = []
            rows.append({"label": r.name, "kind": "run", "estimate": r.estimates[metric], "intervals": intervals})
        for g in table.groups:
            s = g.summary[metric]
            intervals = [(s["low"], s["high"], "t")] + ([(*g.pooled[metric], "pooled")] if g.pooled else [])
            rows.append({"label": g.label, "kind": "group", "estimate": s["mean"], "intervals": intervals})
        if metric in PUBLISHED_METRICS:
            for b in table.baselines:
                rows.append({"label": f"paper: {b.method}", "kind": "baseline", "estimate": getattr(b, metric),
                             "intervals": []})
        panels.append(rows)
    return panels


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _limits(rows: list[dict]) -> tuple[float, float]:
    """The x range: every estimate and interval end, kept inside [0, 1], with a margin."""
    values = [r["estimate"] for r in rows if _finite(r["estimate"])]
    values += [v for r in rows for low, high, _ in r["intervals"] for v in (low, high) if _finite(v)]
    if not values:
        return 0.0, 1.0
    low, high = max(0.0, min(values)), min(1.0, max(values))
    margin = max(0.02, 0.05 * (high - low))
    # a little room past 0 and 1 so that a marker on the bound stays whole
    return max(-0.01, low - margin), min(1.01, high + margin)


def forest_plot(comparison: Comparison, metric: str | None = None):
    """Draw the forest plot and return the figure (not saved, not closed).

    Parameters
    ----------
    comparison : Comparison
    metric : {"auc", "acc", "balanced_acc"}, optional
        Default: the comparison's test metric.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per split (``fig.axes``, in the order of ``comparison.tables``),
        y tick labels the row labels of :func:`forest_rows`.
    """
    metric = metric or comparison.settings.metric
    panels = forest_rows(comparison, metric)
    level = comparison.settings.level
    n_rows = [max(len(rows), 1) for rows in panels]
    height = 0.9 * len(panels) + ROW_HEIGHT_IN * sum(n_rows) + 0.8
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.5, height), squeeze=False,
                             gridspec_kw={"height_ratios": [n + 1.5 for n in n_rows]})
    for ax, table, rows in zip(axes[:, 0], comparison.tables, panels):
        _panel(ax, rows)
        ax.set_title(f"{table.label} ({comparison.settings.split} split, {table.n} images)", fontsize=10,
                     loc="left")
        ax.set_xlim(*_limits(rows))
        ax.set_xlabel(f"{METRIC_NAMES[metric]} ({level:.0%} intervals)")
        if metric not in PUBLISHED_METRICS:
            ax.text(1.0, -0.02, "the paper publishes AUC and ACC only", transform=ax.transAxes, ha="right",
                    va="top", fontsize=7, color=BASELINE_COLOR)
    _legend(axes[0, 0], panels, comparison)
    fig.tight_layout()
    return fig


def _panel(ax, rows: list[dict]) -> None:
    positions = list(range(len(rows)))[::-1]  # the first row at the top
    for y, row in zip(positions, rows):
        estimate = row["estimate"]
        if row["kind"] == "baseline":
            if _finite(estimate):
                ax.axvline(estimate, color=BASELINE_COLOR, lw=0.8, ls=":", zorder=1)
                ax.plot([estimate], [y], marker="D", color=BASELINE_COLOR, ms=6, ls="none", zorder=3)
            continue
        color = GROUP_COLOR if row["kind"] == "group" else RUN_COLOR
        for low, high, style in row["intervals"]:
            if not (_finite(low) and _finite(high)):
                continue
            if style == "pooled":
                ax.plot([low, high], [y, y], color=color, lw=5, alpha=0.35, solid_capstyle="butt", zorder=2)
            else:
                ax.plot([low, high], [y, y], color=color, lw=1.4, zorder=2)
                ax.plot([low, high], [y, y], color=color, marker="|", ms=8, ls="none", zorder=2)
        if _finite(estimate):
            ax.plot([estimate], [y], marker="s" if row["kind"] == "group" else "o", color=color, ms=6,
                    ls="none", zorder=3)
    ax.set_yticks(positions, [row["label"] for row in rows], fontsize=9)
    ax.set_ylim(-0.75, len(rows) - 0.25)
    ax.grid(axis="x", alpha=0.3)


def _legend(ax, panels, comparison: Comparison) -> None:
    kinds = {(row["kind"], style) for rows in panels for row in rows for _, _, style in row["intervals"]}
    kinds |= {(row["kind"], None) for rows in panels for row in rows}
    handles = []
    if ("run", "bootstrap") in kinds:
        handles.append(Line2D([], [], color=RUN_COLOR, marker="o", label="run: bootstrap interval"))
    if ("run", "delong") in kinds:
        handles.append(Line2D([], [], color=RUN_COLOR, marker="o", label="run: DeLong interval"))
    if ("run", None) in kinds and not any(k == "run" and s for k, s in kinds):
        handles.append(Line2D([], [], color=RUN_COLOR, marker="o", ls="none", label="run"))
    if ("group", "t") in kinds:
        handles.append(Line2D([], [], color=GROUP_COLOR, marker="s", label="seed mean: t-interval"))
    if ("group", "pooled") in kinds:
        handles.append(Line2D([], [], color=GROUP_COLOR, lw=5, alpha=0.35, label="seed mean: pooled bootstrap"))
    if ("baseline", None) in kinds:
        handles.append(Line2D([], [], color=BASELINE_COLOR, marker="D", ls="none", label="published (MedMNIST v2)"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  frameon=False)
