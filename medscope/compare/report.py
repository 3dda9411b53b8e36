"""A comparison as table rows (CSV), a JSON record and Markdown; nothing is written here.

Row columns (:data:`COLUMNS`), one row per run, seed group and published baseline:

* ``kind``: ``run``, ``group`` or ``baseline``; ``name``: the run name, the
  group's label or the published method.
* ``<metric>``: the estimate (run), the mean across seeds (group) or the
  published number (baseline; AUC and ACC only).
* ``<metric>_low`` / ``_high``: the stratified bootstrap percentile interval
  (run), or the pooled bootstrap interval of the seed mean (group) -- both the
  uncertainty due to the finite test split.
* ``auc_delong_low`` / ``_high``: DeLong's interval of a run's binary AUC.
* ``<metric>_sd``, ``<metric>_t_low`` / ``_t_high``: a group's sd across seeds
  and the t-interval of its mean.

Test columns (:data:`TEST_COLUMNS`): one row per test, ``difference = a - b``,
``low``/``high`` its interval where the test has one, ``p_holm`` the
Holm-adjusted p-value over every test of the comparison.
"""
from __future__ import annotations

import math

from medscope import baselines as published
from medscope.report_text import markdown_code, markdown_text

from .tables import METRIC_NAMES, METRICS, PUBLISHED_METRICS, Comparison, SplitTable

SEPARATOR = ";"
COLUMNS = (["kind", "dataset", "size", "name", "model", "seed", "runs", "status", "task", "n"]
           + [c for m in METRICS for c in (m, f"{m}_low", f"{m}_high")]
           + ["auc_delong_low", "auc_delong_high"]
           + [c for m in METRICS for c in (f"{m}_sd", f"{m}_t_low", f"{m}_t_high")]
           + ["level", "source"])
TEST_COLUMNS = ["dataset", "size", "between", "a", "b", "metric", "method", "estimate_a", "estimate_b", "difference",
                "low", "high", "statistic", "p_value", "p_holm", "n"]


def _clean(value):
    """NaN as an empty cell (None)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def table_rows(comparison: Comparison) -> list[dict]:
    """Every run, group and baseline row of the comparison, in table order (columns: :data:`COLUMNS`)."""
    level = comparison.settings.level
    rows = []
    for table in comparison.tables:
        common = {"dataset": table.dataset, "size": table.size, "task": table.task, "n": table.n, "level": level}
        for r in table.runs:
            row = dict(common, kind="run", name=r.name, model=r.model, seed=r.seed, status=r.status)
            for m in METRICS:
                row[m] = r.estimates[m]
                if r.bootstrap:
                    row[f"{m}_low"], row[f"{m}_high"] = r.bootstrap[m]
            if r.delong:
                row["auc_delong_low"], row["auc_delong_high"] = r.delong
            rows.append(row)
        for g in table.groups:
            row = dict(common, kind="group", name=g.label, model=g.model,
                       seed=SEPARATOR.join("" if s is None else str(s) for s in g.seeds),
                       runs=SEPARATOR.join(g.runs))
            for m in METRICS:
                s = g.summary[m]
                row[m], row[f"{m}_sd"], row[f"{m}_t_low"], row[f"{m}_t_high"] = s["mean"], s["sd"], s["low"], s["high"]
                if g.pooled:
                    row[f"{m}_low"], row[f"{m}_high"] = g.pooled[m]
            rows.append(row)
        for b in table.baselines:
            rows.append({"kind": "baseline", "dataset": table.dataset, "size": table.size, "task": table.task,
                         "name": b.method, "auc": b.auc, "acc": b.acc, "source": b.source})
    return [{k: _clean(v) for k, v in row.items()} for row in rows]


def rows_of_tests(comparison: Comparison) -> list[dict]:
    """Every test of the comparison (columns: :data:`TEST_COLUMNS`)."""
    return [{k: _clean(getattr(t, k)) for k in TEST_COLUMNS} for t in comparison.tests]


def to_json(comparison: Comparison) -> dict:
    """Settings, rows, tests and notes: what ``comparison.json`` holds."""
    s = comparison.settings
    return {"settings": {"split": s.split, "metric": s.metric, "bootstrap_resamples": s.n_resamples,
                         "level": s.level, "seed": s.seed, "baseline": s.baseline,
                         "interval_method": comparison.interval_method,
                         "multiplicity": "Holm over every test of the comparison"},
            "splits": [{"dataset": t.dataset, "size": t.size, "task": t.task, "n": t.n,
                        "class_counts": t.class_counts} for t in comparison.tables],
            "rows": table_rows(comparison), "tests": rows_of_tests(comparison), "notes": list(comparison.notes),
            "baseline_source": published.SOURCE}


# ---------------------------------------------------------------- text


def number(value, digits: int = 3) -> str:
    """A metric with ``digits`` decimals; ``-`` when undefined.

    >>> number(0.91234), number(float("nan")), number(None)
    ('0.912', '-', '-')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def interval(low, high, digits: int = 3) -> str:
    """``[0.812, 0.934]``; ``-`` when either end is undefined."""
    if number(low) == "-" or number(high) == "-":
        return "-"
    return f"[{number(low, digits)}, {number(high, digits)}]"


def p_text(p) -> str:
    """A p-value with three significant digits; ``< 0.0001`` below that.

    >>> p_text(0.04321), p_text(3e-7), p_text(1.0), p_text(float("nan"))
    ('0.0432', '< 0.0001', '1', '-')
    """
    if p is None or not math.isfinite(p):
        return "-"
    return "< 0.0001" if p < 1e-4 else f"{p:.3g}"


_SHORT_METHODS = (("DeLong", "DeLong"), ("paired", "paired bootstrap"), ("exact sign-flip", "sign-flip"),
                  ("Wilcoxon", "Wilcoxon"), ("exact permutation", "permutation"),
                  ("Monte Carlo permutation", "permutation (Monte Carlo)"))


def short_method(method: str) -> str:
    """A test's name in a word or two, for the terminal.

    >>> short_method("exact sign-flip permutation test of the mean difference")
    'sign-flip'
    """
    return next((short for start, short in _SHORT_METHODS if method.startswith(start)), method)


def _row(cells) -> str:
    """A table row; the cells are Markdown already (every interpolated value through :func:`markdown_text`)."""
    return "| " + " | ".join(cells) + " |"


def markdown(comparison: Comparison, *, title: str = "Comparison", figure: str | None = None) -> str:
    """The comparison as a Markdown page: per split, runs, seed groups, baselines and tests; then methods.

    Run, group and class names come from run folders that may come from someone else: each goes through
    :func:`markdown_text` (plain text, also in table cells) or :func:`markdown_code`, so it shows literally.
    """
    md = markdown_text
    s = comparison.settings
    level = f"{s.level:.0%}"
    lines = [f"# {md(title)}", ""]
    boot = f"{s.n_resamples} stratified bootstrap resamples (seed {s.seed})" if s.n_resamples else "no bootstrap"
    lines += [f"{md(s.split)} split; tests on {METRIC_NAMES[s.metric]}; {level} intervals; {boot}"
              + (f"; every run tested against {markdown_code(s.baseline)}" if s.baseline else "") + ".", ""]
    if figure:
        lines += [f"![forest plot of {METRIC_NAMES[s.metric]}]({figure})", ""]
    for table in comparison.tables:
        lines += _split_section(table, s, level)
    if comparison.notes:
        lines += ["## Notes", ""] + [f"- {md(n)}" for n in comparison.notes] + [""]
    lines += _methods(comparison, level)
    return "\n".join(lines).rstrip() + "\n"


def _split_section(table: SplitTable, s, level: str) -> list[str]:
    md = markdown_text
    counts = ", ".join(f"{n} of class {k}" for k, n in table.class_counts.items())
    lines = [f"## {md(table.label)} ({md(table.task)}, {md(s.split)} split: {table.n} images; {md(counts)})", ""]
    delong = any(r.delong for r in table.runs)
    header = ["run", "model", "seed", "status", f"AUC [{level} bootstrap]"] + (["AUC [DeLong]"] if delong else []) \
        + ["ACC", "balanced accuracy"]
    lines += [_row(header), "|" + "---|" * len(header)]
    for r in table.runs:
        cells = [md(r.name), md(r.model), "-" if r.seed is None else md(r.seed), md(r.status)]
        for m in METRICS:
            cells.append(f"{number(r.estimates[m])} {interval(*r.bootstrap[m])}" if r.bootstrap
                         else number(r.estimates[m]))
            if m == "auc" and delong:
                cells.append(interval(*r.delong) if r.delong else "-")
        lines.append(_row(cells))
    lines.append("")
    if table.groups:
        lines += [f"Seed groups: mean ± sd across seeds, the {level} t-interval of the mean (training randomness) "
                  f"and the {level} pooled bootstrap interval of the mean (the finite test split).", "",
                  "| group | runs | metric | mean ± sd | t-interval | pooled interval |", "|---|---|---|---|---|---|"]
        for g in table.groups:
            for m in METRICS:
                x = g.summary[m]
                pooled = interval(*g.pooled[m]) if g.pooled else "-"
                cells = [md(g.label), ", ".join(md(n) for n in g.runs), METRIC_NAMES[m],
                         f"{number(x['mean'])} ± {number(x['sd'])}", interval(x["low"], x["high"]), pooled]
                lines.append(_row(cells))
        lines.append("")
    if table.baselines:
        lines += ["Published (MedMNIST v2, test split):", "", "| method | AUC | ACC | source |", "|---|---|---|---|"]
        for b in table.baselines:
            lines.append(_row([md(b.method), number(b.auc), number(b.acc), md(b.source)]))
        lines.append("")
    if table.tests:
        lines += [f"Tests of {METRIC_NAMES[s.metric]} (difference = a - b, two-sided; Holm over all "
                  "tests of this comparison):", "",
                  "| a | b | test | value a | value b | a - b | interval | p | p (Holm) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in table.tests:
            cells = [md(t.a), md(t.b), md(t.method), number(t.estimate_a), number(t.estimate_b),
                     f"{t.difference:+.3f}" if math.isfinite(t.difference) else "-", interval(t.low, t.high),
                     p_text(t.p_value), p_text(t.p_holm)]
            lines.append(_row(cells))
        lines.append("")
    return lines


def _methods(comparison: Comparison, level: str) -> list[str]:
    s = comparison.settings
    lines = ["## Methods", ""]
    lines.append("- Estimates: AUC and ACC as medmnist.Evaluator computes them (the numbers of metrics.json); "
                 "balanced accuracy is the mean recall over classes.")
    if s.n_resamples:
        lines.append(f"- Intervals: {level} percentile intervals over {s.n_resamples} bootstrap resamples of the "
                     f"test split ({comparison.interval_method}); every run of a split is evaluated on the same "
                     "resamples. A binary AUC also has DeLong's normal interval.")
    else:
        lines.append("- Intervals: none from the bootstrap (--bootstrap 0); a binary AUC has DeLong's normal interval.")
    lines.append("- Seed groups: runs of one configuration (same run.json configuration but for the seed); "
                 "t-interval: mean ± t(n-1) sd/√n (not clipped to [0, 1]); pooled interval: percentile "
                 "interval of the seeds' mean metric over the same test resamples.")
    lines.append("- Tests: DeLong's test of two correlated AUCs (binary AUC); paired bootstrap of the "
                 "difference (p from inverting the percentile interval); across seeds, the exact sign-flip "
                 "test (up to 16 paired seeds, Wilcoxon signed-rank above) or, for seeds that do not match, "
                 "the permutation test of the mean difference. p-values adjusted with Holm's method over "
                 "every test of this comparison.")
    lines.append(f"- Published baselines: {published.SOURCE}")
    return lines + [""]


def summary_lines(comparison: Comparison) -> list[str]:
    """A few lines for the terminal: per split the runs and groups on the test metric, then the tests."""
    s = comparison.settings
    name = METRIC_NAMES[s.metric]
    lines = []
    for table in comparison.tables:
        lines.append(f"{table.label} ({s.split}, {table.n} images): {name}, {s.level:.0%} "
                     f"{'bootstrap ' if s.n_resamples else ''}interval")
        width = max([len(r.name) for r in table.runs] + [len(g.label) for g in table.groups]
                    + [len("paper " + b.method) for b in table.baselines])
        for r in table.runs:
            ci = interval(*r.bootstrap[s.metric]) if r.bootstrap else ""
            lines.append(f"  {r.name:<{width}}  {number(r.estimates[s.metric])} {ci}".rstrip())
        for g in table.groups:
            x = g.summary[s.metric]
            lines.append(f"  {g.label:<{width}}  {number(x['mean'])} ± {number(x['sd'])} "
                         f"t {interval(x['low'], x['high'])}")
        if s.metric in PUBLISHED_METRICS:
            for b in table.baselines:
                lines.append(f"  {'paper ' + b.method:<{width}}  {number(getattr(b, s.metric))}")
        if table.tests:
            lines.append("  tests (a - b; p, Holm-adjusted p):")
        for t in table.tests:
            lines.append(f"  {t.a} vs {t.b}: {t.difference:+.3f}  p {p_text(t.p_value)}  "
                         f"Holm {p_text(t.p_holm)}  {short_method(t.method)}")
    return lines
