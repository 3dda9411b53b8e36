"""Figures of a calibration analysis (:func:`medscope.calibration.analysis.analyze_calibration`), as PNG.

* :func:`reliability_diagram`: accuracy against confidence per bin, before and
  after temperature scaling, with bootstrap intervals and the ECE in the legend;
* :func:`risk_coverage`: selective and generalized risk against coverage for
  every confidence score, with the best possible ranking for reference;
* :func:`conformal_coverage`: test coverage per class (per label) of every
  conformal method against the target ``1 - alpha``.

Every figure takes the analysis result as it is returned (with its curves)
and writes with :func:`medscope.atomic.save_figure`. Legends sit outside the
axes, so they cover no data.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medscope import atomic
from medscope.plots import plt, wrap_name

STATE_TITLES = {"before": "before temperature scaling", "after": "after temperature scaling"}
METHOD_LABELS = {"lac": "LAC", "aps": "APS", "lac_class_conditional": "LAC, class-conditional",
                 "aps_class_conditional": "APS, class-conditional"}
SCORE_LABELS = {"max_probability": "maximum probability", "conformal_set_size": "conformal set size",
                "mc_confidence": "MC-dropout confidence", "mc_predictive_entropy": "MC-dropout predictive entropy",
                "mc_expected_entropy": "MC-dropout expected entropy",
                "mc_mutual_information": "MC-dropout mutual information",
                "mc_std_predicted_probability": "MC-dropout spread of p"}


def interval_label(entry: dict, digits: int = 3) -> str:
    """``0.046 [0.010, 0.080]``: an interval entry for a legend (NaN as n/a)."""
    def number(value):
        return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"

    interval = f"[{number(entry['low'])}, {number(entry['high'])}]"
    if "bias_corrected" in entry:  # a basic-bootstrap interval is around the bias-corrected value
        return f"{number(entry['estimate'])}, bias-corrected {number(entry['bias_corrected'])} {interval}"
    return f"{number(entry['estimate'])} {interval}"


def reliability_diagram(path, result: dict, title: str) -> Path:
    """Accuracy per equal-width confidence bin before | after, with 95% intervals and images per bin below."""
    calibration = result["calibration"]
    level = round(100 * result["bootstrap"]["level"])
    pooled = calibration.get("reliability_pooled_over_labels", False)
    fig = plt.figure(figsize=(11, 6.4))
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 1), hspace=0.08, wspace=0.18)
    handles = {}
    for column, state in enumerate(("before", "after")):
        bins = calibration[f"reliability_{state}"]
        ax = fig.add_subplot(grid[0, column])
        counts_ax = fig.add_subplot(grid[1, column], sharex=ax)
        lower = np.array([b["lower"] for b in bins])
        upper = np.array([b["upper"] for b in bins])
        width, centre = upper - lower, (lower + upper) / 2
        accuracy = np.array([_value(b["accuracy"]["estimate"]) for b in bins])
        low = np.array([_value(b["accuracy"]["low"]) for b in bins])
        high = np.array([_value(b["accuracy"]["high"]) for b in bins])
        confidence = np.array([_value(b["confidence"]) for b in bins])
        count = np.array([b["count"] for b in bins])
        filled = count > 0
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        ax.bar(centre[filled], accuracy[filled], width[filled], color="tab:blue", alpha=0.75, edgecolor="white",
               label="accuracy per bin")
        ax.bar(centre[filled], (confidence - accuracy)[filled], width[filled], bottom=accuracy[filled],
               color="tab:red", alpha=0.25, hatch="//", edgecolor="tab:red", lw=0.5,
               label="gap to the mean confidence")
        ax.errorbar(centre[filled], accuracy[filled],
                    yerr=np.abs(np.vstack([accuracy - low, high - accuracy])[:, filled]),
                    fmt="none", ecolor="black", elinewidth=1, capsize=2, label=f"{level}% interval")
        ece = calibration[state]["ece"]
        mean = " (mean over labels)" if pooled else ""
        ax.plot([], [], " ", label=f"ECE{mean} {state} {interval_label(ece)}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(STATE_TITLES[state])
        ax.set_ylabel("accuracy" if column == 0 else "")
        ax.tick_params(labelbottom=False)
        ax.grid(alpha=0.3)
        counts_ax.bar(centre, count, width, color="tab:grey", edgecolor="white")
        predicted = "value, every label" if pooled else "class"
        counts_ax.set_xlabel(f"confidence (probability of the predicted {predicted})")
        counts_ax.set_ylabel(("predictions" if pooled else "images") + " per bin" if column == 0 else "")
        counts_ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    ece_first = sorted(handles, key=lambda label: not label.startswith("ECE"))
    fig.legend([handles[label] for label in ece_first], ece_first, loc="upper center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 0.05), handlelength=1.6)
    note = " (labels pooled)" if pooled else ""
    fig.suptitle(f"{title}\nreliability on the test split, {calibration['n_bins']} equal-width bins{note}")
    return atomic.save_figure(path, fig)


def _value(value) -> float:
    return float("nan") if value is None else float(value)


def risk_coverage(path, result: dict, title: str) -> Path:
    """Selective risk and generalized risk against coverage, one line per confidence score."""
    selective = result["selective"]
    curves = selective["curves"]
    rate = selective["error_rate"]["estimate"]
    fig, (risk_ax, general_ax) = plt.subplots(1, 2, figsize=(12, 5.2))
    n = int(result["n_test"])
    for entry in selective["scores"]:
        coverage, selective_risk, generalized = exact_curve(curves[entry["name"]], n)
        label = SCORE_LABELS.get(entry["name"], entry["name"])
        risk_ax.plot(coverage, selective_risk, lw=1.6, label=f"{label}: AURC {interval_label(entry['aurc'])}")
        general_ax.plot(coverage, generalized, lw=1.6, label=f"{label}: AUGRC {interval_label(entry['augrc'])}")
    # the best possible ranking: every right prediction accepted before any error
    grid = np.linspace(0.0, 1.0, 401)
    excess = np.clip(grid - (1.0 - rate), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        oracle_risk = np.where(grid > 0, excess / grid, 0.0)
    risk_ax.plot(grid, oracle_risk, ":", color="black", lw=1.2, label="best possible ranking")
    general_ax.plot(grid, excess, ":", color="black", lw=1.2, label="best possible ranking")
    for ax, ylabel in ((risk_ax, "selective risk (errors among the accepted)"),
                       (general_ax, "generalized risk (accepted errors / all)")):
        ax.axhline(rate, color="grey", lw=1, ls="--", label=f"error rate without abstaining ({rate:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("coverage (fraction of images accepted, most confident first)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False, fontsize=9)
    fig.suptitle(f"{title}\nrisk against coverage on the test split ({selective['errors']})")
    fig.tight_layout()
    return atomic.save_figure(path, fig)


def exact_curve(curve: dict, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage, selective risk and generalized risk at every accepted count ``k = 0..n``.

    Between two points of :func:`medscope.calibration.selective.risk_coverage_curve`
    (a block of tied confidences) the accepted loss grows linearly, so the
    selective risk ``E(k) / k`` is a curve, not a straight line: these are the
    curves whose areas AURC and AUGRC are. At ``k = 0`` the selective risk is
    its limit, the risk of the first block.
    """
    count_b = np.rint(np.asarray(curve["coverage"]) * n)
    loss_b = np.asarray(curve["generalized_risk"]) * n
    count_a = np.concatenate([[0.0], count_b[:-1]])
    loss_a = np.concatenate([[0.0], loss_b[:-1]])
    k = np.arange(0, n + 1, dtype=np.float64)
    block = np.minimum(np.searchsorted(count_b, k, side="left"), len(count_b) - 1)
    loss = loss_a[block] + (loss_b[block] - loss_a[block]) * (k - count_a[block]) / (count_b[block] - count_a[block])
    risk = np.empty_like(k)
    risk[1:] = loss[1:] / k[1:]
    risk[0] = loss_b[0] / count_b[0]
    return k / n, risk, loss / n


def conformal_coverage(path, result: dict, title: str) -> Path:
    """Test coverage per class (per label for multi-label tasks) of each conformal method, with the target."""
    conformal = result["conformal"]
    level = round(100 * result["bootstrap"]["level"])
    per_label = conformal["per_label"]
    key = "coverage_per_label" if per_label else "coverage_per_class"
    names = result["class_names"]
    methods = conformal["methods"]
    x = np.arange(len(names))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(names) * len(methods) * 0.45 + 3), 4.8))
    lowest = 1.0
    for i, method in enumerate(methods):
        entries = [method["test"][key][name] for name in names]
        estimate = np.array([_value(e["estimate"]) for e in entries])
        low = np.array([_value(e["low"]) for e in entries])
        high = np.array([_value(e["high"]) for e in entries])
        lowest = min(lowest, np.nanmin(np.r_[low, estimate, 1.0]))
        overall = method["test"]["coverage"]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, estimate, width * 0.95,
               yerr=np.abs(np.vstack([estimate - low, high - estimate])), capsize=2, ecolor="black",
               label=f"{METHOD_LABELS.get(method['name'], method['name'])} (overall {interval_label(overall)})")
    target = conformal["target_coverage"]
    ax.axhline(target, color="tab:red", ls="--", lw=1.3, label=f"target 1 - alpha = {target:g}")
    ax.set_xticks(x, [wrap_name(name, 14) for name in names], rotation=30 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center")
    ax.set_xlabel("true label" if per_label else "true class")
    ax.set_ylabel("coverage on test (set holds the true " + ("value)" if per_label else "class)"))
    ax.set_ylim(max(0.0, min(lowest, target) - 0.05), 1.01)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9,
              title=f"bars: {level}% intervals")
    fig.suptitle(f"{title}\nconformal coverage per {'label' if per_label else 'class'} "
                 f"(alpha = {conformal['alpha']:g})")
    fig.tight_layout()
    return atomic.save_figure(path, fig)
