"""Figures of a robustness sweep, written atomically as PNG.

Each measure against severity (one line per perturbation, severity 0 being
the clean images), a perturbation x severity heatmap of balanced accuracy
anchored at chance, and for a few
images a grid of the perturbed inputs with their saliency overlays at every
severity (3D: the three middle slices side by side).
"""
from __future__ import annotations

import numpy as np

from medscope import atomic
from medscope.explain.plots import overlay_heatmap, show_image
from medscope.plots import display_image, plt

MEASURES = (("acc", "ACC"), ("auc", "AUC"), ("balanced_acc", "balanced accuracy"), ("ece", "ECE"),
            ("flip_rate", "fraction of predictions flipped"), ("saliency_rmse", "saliency RMSE (0 = unchanged)"),
            ("saliency_pearson", "saliency Pearson r (1 = unchanged)"),
            ("saliency_iou", "top-10% saliency IoU (1 = unchanged)"))


def _by_perturbation(rows: list[dict]) -> tuple[dict, dict]:
    clean = rows[0]
    groups: dict[str, list[dict]] = {}
    for row in rows[1:]:
        groups.setdefault(row["perturbation"], []).append(row)
    return clean, groups


def measures_vs_severity(path, rows: list[dict], title: str):
    """One panel per measure: its value against severity, a line per perturbation starting at the clean value."""
    clean, groups = _by_perturbation(rows)
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(1, len(groups)), endpoint=False))
    for ax, (key, label) in zip(axes.ravel(), MEASURES):
        for color, (name, group) in zip(colors, groups.items()):
            x = [0] + [r["severity"] for r in group]
            y = [clean.get(key, np.nan)] + [r.get(key, np.nan) for r in group]
            y = [np.nan if v is None else v for v in y]
            ax.plot(x, y, "o-", ms=3, lw=1.2, color=color, label=name.replace("_", " "))
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_xticks(range(0, 6))
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    return atomic.save_figure(path, fig)


def balanced_accuracy_heatmap(path, rows: list[dict], title: str, chance: float):
    """Perturbation x severity, coloured and annotated with balanced accuracy; the clean value is the first column.

    The colour scale starts at ``chance`` (a guess that ignores the image, e.g.
    0.5 for a binary task): a model that answers one class everywhere scores
    chance and is drawn in the scale's darkest colour, never as a good cell, as
    an ACC scale would draw it on imbalanced data. Cells where the model
    collapsed to one class are marked with a dagger.
    """
    clean, groups = _by_perturbation(rows)
    severities = sorted({r["severity"] for r in rows[1:]})
    names = list(groups)
    grid = np.full((max(1, len(names)), len(severities) + 1), np.nan)
    collapsed = np.zeros_like(grid, dtype=bool)
    for i, name in enumerate(names):
        grid[i, 0], collapsed[i, 0] = clean["balanced_acc"], bool(clean.get("collapsed"))
        for r in groups[name]:
            grid[i, severities.index(r["severity"]) + 1] = r["balanced_acc"]
            collapsed[i, severities.index(r["severity"]) + 1] = bool(r.get("collapsed"))
    low = chance if np.isfinite(chance) else 0.0
    fig, ax = plt.subplots(figsize=(max(6.5, 2.4 + 0.9 * (len(severities) + 1)), 1.6 + 0.42 * len(grid)))
    image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            bright = value > low + 0.6 * (1 - low)  # dark text on the light end of viridis
            ax.text(j, i, f"{value:.2f}" + ("†" if collapsed[i, j] else ""), ha="center", va="center", fontsize=8,
                    color="black" if bright else "white")
    ax.set_xticks(range(len(severities) + 1), ["clean"] + [str(s) for s in severities])
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_xlabel("severity")
    ax.set_ylabel("perturbation")
    bar = fig.colorbar(image, ax=ax, fraction=0.05)
    bar.set_label("balanced accuracy")
    notes = [f"colour scale from chance ({low:.2g}) to 1"]
    if collapsed.any():
        notes.append("† collapsed: one class for at least 95% of images")
    import textwrap

    ax.set_title(textwrap.fill(title, 70) + "\n" + "; ".join(notes), fontsize=8)
    fig.tight_layout()
    return atomic.save_figure(path, fig)


def example_grid(path, examples: dict, index: int, names: list[str], severities: list[int], title: str):
    """One image: a row per perturbation, and per severity (0 = clean) the input and its saliency overlay.

    ``examples[(name, severity)]`` holds (images, maps, prediction texts,
    flipped flags) of every example image; ``index`` picks this one. A red
    caption marks a prediction that flipped.
    """
    columns = [0] + list(severities)
    fig, axes = plt.subplots(len(names), 2 * len(columns), figsize=(1.25 * 2 * len(columns), 1.45 * len(names) + 0.8),
                             squeeze=False)
    for i, name in enumerate(names):
        for j, severity in enumerate(columns):
            key = ("clean", 0) if severity == 0 else (name, severity)
            images, maps, texts, flips = examples[key]
            image = display_image(images[index])
            ax_image, ax_map = axes[i, 2 * j], axes[i, 2 * j + 1]
            show_image(ax_image, image, frame=True)  # the frame keeps the first column's y label
            overlay_heatmap(ax_map, image, maps[index], frame=True)
            ax_image.set_title("clean" if severity == 0 else f"severity {severity}", fontsize=6)
            ax_map.set_title(texts[index], fontsize=6, color="red" if flips[index] else "black")
            if j == 0:
                ax_image.set_ylabel(name.replace("_", " "), fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return atomic.save_figure(path, fig, dpi=110)
