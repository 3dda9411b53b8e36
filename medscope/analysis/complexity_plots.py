"""Figures of ``analyze_complexity.py``, written atomically as PNG.

The numbers come from :mod:`medscope.analysis.weights` (rows of
:data:`medscope.analysis.weights.COLUMNS`, undefined values as ``None``); this module
only draws them. Undefined values are drawn as grey crosses on the axis and
counted in the legend, so a gap is never mistaken for a zero.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medscope import atomic  # noqa: E402

LMC_PER_LAYER = "lmc_per_layer.png"
SAMPEN_PER_LAYER = "sampen_per_layer.png"
LMC_BY_TYPE = "lmc_by_type.png"
DPI = 110

STATE_COLOURS = {"trained": "tab:blue", "initial": "tab:gray"}
TYPE_COLOURS = {"conv1d": "tab:olive", "conv2d": "tab:blue", "conv3d": "tab:purple", "linear": "tab:red",
                "norm": "tab:green"}
UNDEFINED_COLOUR = "dimgray"


def short_name(row: dict) -> str:
    """``backbone.layer1.0.conv1`` + ``weight`` -> ``layer1.0.conv1`` (biases keep ``.bias``)."""
    name = row["layer"].removeprefix("backbone.")
    return name if row["param"] == "weight" else f"{name}.{row['param']}"


def _save(path, fig) -> Path:
    return atomic.save_figure(path, fig, dpi=DPI, tight=False)


def _states(rows) -> list[str]:
    return list(dict.fromkeys(r["state"] for r in rows))


def _values(rows, key) -> np.ndarray:
    return np.array([np.nan if r[key] is None else float(r[key]) for r in rows])


def _layer_axis(ax, names: list[str], n: int) -> None:
    ax.set_xticks(np.arange(n), names, rotation=90, fontsize=7 if n <= 60 else 5)
    ax.set_xlim(-0.7, n - 0.3)
    ax.grid(axis="y", alpha=0.3)


def _per_layer_bars(ax, rows, key: str, states: list[str], label_undefined: bool = True) -> None:
    """Bars per tensor (network order), one per state side by side; undefined -> grey cross at 0."""
    width = 0.8 / len(states)
    for k, state in enumerate(states):
        of_state = [r for r in rows if r["state"] == state]
        x = np.arange(len(of_state)) + (k - (len(states) - 1) / 2) * width
        y = _values(of_state, key)
        ok = np.isfinite(y)
        ax.bar(x[ok], y[ok], width=width, color=STATE_COLOURS.get(state, f"C{k}"), label=state)
        if label_undefined and (~ok).any():
            ax.plot(x[~ok], np.zeros((~ok).sum()), "x", color=UNDEFINED_COLOUR, ms=5,
                    label=f"{state}: undefined ({(~ok).sum()})")


def _headroom(ax, factor: float = 1.18) -> None:
    """Room above the tallest bar for a legend in one row."""
    low, high = ax.get_ylim()
    ax.set_ylim(low, low + (high - low) * factor)


def _figure(n_tensors: int, rows: int, height_per_row: float):
    width = max(10.0, 0.22 * n_tensors + 2.5)
    return plt.subplots(rows, 1, figsize=(width, height_per_row * rows + 1.6), sharex=True, squeeze=False,
                        layout="constrained")


def lmc_per_layer(path, rows: Sequence[dict], title: str) -> Path:
    """LMC complexity C = H * D per tensor in network order, with H and D below."""
    states = _states(rows)
    names = [short_name(r) for r in rows if r["state"] == states[0]]
    fig, axes = _figure(len(names), 3, 2.4)
    for ax, key, label in zip(axes[:, 0], ("lmc_C", "lmc_H", "lmc_D"),
                              ("C = H·D", "H (normalised entropy)", "D (disequilibrium)")):
        _per_layer_bars(ax, rows, key, states, label_undefined=key == "lmc_C")
        ax.set_ylabel(label)
    _headroom(axes[0, 0])
    axes[0, 0].legend(fontsize=8, loc="upper left", ncol=4)
    bins = sorted({r["lmc_bins"] for r in rows if r["lmc_bins"] is not None})
    axes[0, 0].set_title(f"LMC complexity per weight tensor — {title}\n"
                         f"histogram of each tensor's weights, {_bins_text(bins)}", fontsize=10)
    _layer_axis(axes[-1, 0], names, len(names))
    axes[-1, 0].set_xlabel("weight tensor (network order)")
    return _save(path, fig)


def _bins_text(bins: list[int]) -> str:
    if not bins:
        return "no defined histogram"
    if len(bins) == 1:
        return f"{bins[0]} equal-width bins over [min, max]"
    return f"{bins[0]}–{bins[-1]} equal-width bins over [min, max]"


def sampen_per_layer(path, rows: Sequence[dict], title: str, *, m: int = 2, r_factor: float = 0.2) -> Path:
    """Exact Sample Entropy per tensor in network order; undefined tensors are
    crossed and their reasons listed."""
    states = _states(rows)
    names = [short_name(r) for r in rows if r["state"] == states[0]]
    fig, axes = _figure(len(names), 1, 4.2)
    ax = axes[0, 0]
    _per_layer_bars(ax, rows, "sampen", states)
    ax.set_ylabel(f"SampEn (m={m}, r={r_factor:g}·std), nats")
    reasons = sorted({r["sampen_reason"] for r in rows if r["sampen_reason"]})
    note = ("\nundefined: " + "; ".join(reasons)) if reasons else ""
    ax.set_title(f"Sample Entropy per weight tensor (exact, all weights) — {title}{note}", fontsize=10)
    _headroom(ax)
    ax.legend(fontsize=8, loc="upper left", ncol=4)
    _layer_axis(ax, names, len(names))
    ax.set_xlabel("weight tensor (network order)")
    return _save(path, fig)


def lmc_by_type(path, rows: Sequence[dict], title: str) -> Path:
    """H, D and C by layer type: a box per type (and state) with every tensor as a point."""
    states = _states(rows)
    types = list(dict.fromkeys(r["type"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 4.6), layout="constrained")
    rng = np.random.default_rng(0)  # fixed jitter: the same rows give the same figure
    width = 0.8 / len(states)
    for ax, key, label in zip(axes, ("lmc_C", "lmc_H", "lmc_D"), ("C = H·D", "H", "D")):
        for k, state in enumerate(states):
            for j, kind in enumerate(types):
                group = [r for r in rows if r["state"] == state and r["type"] == kind]
                y = _values(group, key)
                y = y[np.isfinite(y)]
                pos = j + (k - (len(states) - 1) / 2) * width
                if y.size:
                    ax.boxplot(y, positions=[pos], widths=width * 0.85, showfliers=False, patch_artist=True,
                               boxprops={"facecolor": "white", "edgecolor": STATE_COLOURS.get(state, "black")},
                               medianprops={"color": STATE_COLOURS.get(state, "black")})
                    ax.scatter(pos + rng.uniform(-0.25, 0.25, y.size) * width, y, s=10, alpha=0.7,
                               color=TYPE_COLOURS.get(kind, "black"), zorder=3)
        ax.set_xticks(np.arange(len(types)), [
            f"{t}\n({sum(1 for r in rows if r['type'] == t and r['state'] == states[0])})" for t in types])
        ax.set_xlim(-0.6, len(types) - 0.4)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    if len(states) > 1:
        handles = [plt.Line2D([], [], color=STATE_COLOURS.get(s, "black"), label=f"box: {s}") for s in states]
        axes[0].legend(handles=handles, fontsize=8)
    fig.suptitle(f"LMC complexity by layer type (tensors per type in brackets) — {title}", fontsize=10)
    return _save(path, fig)


def comparison(path, rows: Sequence[dict], summaries: Sequence[Sequence[dict]], run_names: Sequence[str]) -> Path:
    """Several runs side by side: SampEn and LMC C against relative depth
    (trained solid, initial dashed), and per run the size-weighted mean SampEn
    and the mean C over all tensors."""
    fig, axes = plt.subplots(2, 2, figsize=(15, 9), layout="constrained")
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(run_names))]
    for colour, name in zip(colours, run_names):
        of_run = [r for r in rows if r["run"] == name]
        for state in _states(of_run):
            part = [r for r in of_run if r["state"] == state]
            depth = np.array([r["depth"] for r in part])
            style = "-" if state == "trained" else "--"
            # lines join the conv / linear weights (the layers); norm weights and biases are hollow points
            main = np.array([r["param"] == "weight" and r["type"] != "norm" for r in part])
            for ax, key in ((axes[0, 0], "sampen"), (axes[0, 1], "lmc_C")):
                y = _values(part, key)
                ok = np.isfinite(y)
                ax.plot(depth[ok & main], y[ok & main], style, marker="o", ms=3, lw=1, color=colour,
                        label=f"{name} ({state})")
                ax.plot(depth[ok & ~main], y[ok & ~main], "o", ms=4, mfc="none", mew=0.8, color=colour,
                        alpha=0.6 if state == "trained" else 0.35)
    axes[0, 0].set_ylabel("SampEn (defined tensors), nats")
    axes[0, 1].set_ylabel("LMC C = H·D")
    for ax in axes[0]:
        ax.set_xlabel("relative depth (first tensor 0, last 1)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_title("Sample Entropy per weight tensor (line: conv / linear; hollow: norm, bias)")
    axes[0, 1].set_title("LMC complexity per weight tensor (line: conv / linear; hollow: norm, bias)")

    states = list(dict.fromkeys(s["state"] for summary in summaries for s in summary))
    width = 0.8 / max(1, len(states))
    x = np.arange(len(run_names))
    for ax, key, label in ((axes[1, 0], "sampen_weighted", "SampEn, size-weighted mean"),
                           (axes[1, 1], "lmc_C_mean", "LMC C, mean over tensors")):
        for k, state in enumerate(states):
            values = []
            for summary in summaries:
                match = [s for s in summary if s["state"] == state and s["type"] == "all"]
                values.append(np.nan if not match or match[0][key] is None else match[0][key])
            pos = x + (k - (len(states) - 1) / 2) * width
            ax.bar(pos, values, width=width, color=STATE_COLOURS.get(state, f"C{k}"), label=state)
            for p, v in zip(pos, values):
                if np.isfinite(v):
                    ax.annotate(f"{v:.3g}", (p, v), xytext=(0, 2), textcoords="offset points", ha="center",
                                fontsize=7)
        ax.set_xticks(x, run_names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Weight complexity of {len(run_names)} runs", fontsize=11)
    return _save(path, fig)
