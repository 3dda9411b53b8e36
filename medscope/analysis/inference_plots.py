"""Figures of ``analyze_inference.py``, written atomically as PNG.

Every figure has a fixed size (:data:`FIGURE_SIZES` inches at :data:`DPI`,
saved without a tight bounding box), so a file's pixel size is known in
advance: ``FIGURE_SIZES[name] * DPI``. The numbers come from
:mod:`medscope.analysis.inference`; this module only draws them.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medscope import atomic  # noqa: E402
from medscope.plots import display_image, wrap_name  # noqa: E402

# The figures of an inference/ folder (its tables are named in medscope.analysis.inference).
LAYER_MEAN_ACTIVATION_PNG = "layer_mean_activation.png"
NEURON_HEATMAP_CLASSES_PNG = "neuron_heatmap_classes.png"
NEURON_HEATMAP_SAMPLES_PNG = "neuron_heatmap_samples.png"
EMBEDDING_2D_PNG = "embedding_2d.png"
RELIABILITY_DIAGRAM_PNG = "reliability_diagram.png"
CONFIDENT_ERRORS_PNG = "confident_errors.png"
ROC_PR_PNG = "roc_pr_curves.png"

DPI = 100
FIGURE_SIZES = {  # inches
    LAYER_MEAN_ACTIVATION_PNG: (10, 5),
    NEURON_HEATMAP_CLASSES_PNG: (12, 10),
    NEURON_HEATMAP_SAMPLES_PNG: (10, 8),
    EMBEDDING_2D_PNG: (14, 6),
    RELIABILITY_DIAGRAM_PNG: (10, 8),
    CONFIDENT_ERRORS_PNG: (13, 6.5),  # three rows of images; fewer rows are ERROR_ROW_HEIGHT less each
    ROC_PR_PNG: (12, 6),
}
ERROR_COLUMNS = 8
MAX_ERRORS = 24  # three rows of eight fill the full figure
ERROR_ROW_HEIGHT = 2.0  # inches per row of confident errors


def error_rows(n_errors: int) -> int:
    """Rows of the confident-errors grid for ``n_errors`` images: only rows that hold one (at least one row)."""
    return max(1, int(np.ceil(min(n_errors, MAX_ERRORS) / ERROR_COLUMNS)))


def figure_pixels(name: str, n_errors: int = MAX_ERRORS) -> tuple[int, int]:
    """(width, height) in pixels of the figure file ``name`` (``n_errors``: images in the confident-errors grid)."""
    width, height = _inches(name, n_errors)
    return int(round(width * DPI)), int(round(height * DPI))


def _inches(name: str, n_errors: int = MAX_ERRORS) -> tuple[float, float]:
    width, height = FIGURE_SIZES[name]
    if name == CONFIDENT_ERRORS_PNG:
        height -= ERROR_ROW_HEIGHT * (error_rows(MAX_ERRORS) - error_rows(n_errors))
    return width, height


def _figure(path, n_errors: int = MAX_ERRORS) -> plt.Figure:
    return plt.figure(figsize=_inches(Path(path).name, n_errors), dpi=DPI, layout="constrained")


def _save(path, fig) -> Path:
    return atomic.save_figure(path, fig, dpi=DPI, tight=False)


def short_layer(name: str) -> str:
    """``backbone.layer1.0`` -> ``layer1.0``."""
    return name.removeprefix("backbone.")


def _colours(k: int):
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def layer_activation_bars(path, summary: list[dict], title: str) -> Path:
    """One bar per block (network order): mean activation, whiskers from its 10th to 90th percentile.

    Percentiles, not ± std: activations after a ReLU are never negative, and a
    symmetric error bar on their skewed distribution would reach below zero.
    """
    fig = _figure(path)
    ax = fig.add_subplot()
    x = np.arange(len(summary))
    means = np.array([row["mean"] for row in summary])
    low, high = np.array([row["q10"] for row in summary]), np.array([row["q90"] for row in summary])
    ax.bar(x, means, color="tab:blue", alpha=0.85)
    ax.errorbar(x, means, yerr=np.vstack([np.maximum(means - low, 0), np.maximum(high - means, 0)]), fmt="none",
                ecolor="black", elinewidth=1, capsize=3)
    for i, row in enumerate(summary):
        ax.annotate(f"{row['dead_fraction']:.0%} dead", (i, max(means[i], high[i])), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=7, color="dimgray")
    ax.set_xticks(x, [short_layer(row["layer"]) for row in summary], rotation=35, ha="right")
    ax.set_ylabel("activation (bar: mean; whiskers: 10th–90th percentile)")
    ax.set_xlabel("block (network order)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _save(path, fig)


def class_channel_heatmaps(path, layer_names: list[str], selectivity: list[np.ndarray], class_names: list[str],
                           title: str) -> Path:
    """Per block, classes x channels: how much each class raises or lowers each channel (z units)."""
    fig = _figure(path)
    n = max(1, len(layer_names))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    finite = [np.abs(z[np.isfinite(z)]) for z in selectivity]
    vmax = max([float(a.max()) for a in finite if a.size] + [1e-6])
    image = None
    for ax, name, z in zip(axes, layer_names, selectivity):
        image = ax.imshow(z, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_yticks(range(len(class_names)), [wrap_name(c, 14) for c in class_names], fontsize=6)
        ax.set_ylabel(short_layer(name), rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    axes[-1].set_xlabel("channel")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.6,
                     label="(class mean − mean) / std over samples")
    fig.suptitle(title, fontsize=10)
    return _save(path, fig)


def sample_channel_heatmap(path, activations: np.ndarray, groups: np.ndarray, group_names: list[str],
                           title: str) -> Path:
    """Samples (rows, sorted by class) x channels (sorted by preferred class), z-scored per channel."""
    fig = _figure(path)
    ax = fig.add_subplot()
    acts = np.asarray(activations, dtype=np.float64)
    std = acts.std(axis=0)
    z = (acts - acts.mean(axis=0)) / np.where(std > 0, std, 1.0)
    image = ax.imshow(z, aspect="auto", cmap="magma", vmin=-2, vmax=3, interpolation="nearest")
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if len(groups) else np.array([], int)
    ends = np.r_[starts[1:], len(groups)]
    for start in starts[1:]:
        ax.axhline(start - 0.5, color="cyan", lw=0.8)
    ax.set_yticks((starts + ends - 1) / 2, [f"{wrap_name(group_names[g], 14)} ({e - s})"
                                           for g, s, e in zip(groups[starts], starts, ends)], fontsize=7)
    ax.set_xlabel("channel (grouped by the class that raises it most)")
    ax.set_ylabel("samples, sorted by class")
    fig.colorbar(image, ax=ax, label="activation, z-scored per channel (clipped to [−2, 3])")
    ax.set_title(title, fontsize=10)
    return _save(path, fig)


def embedding_map(path, projection: dict, groups: np.ndarray, group_names: list[str], wrong: np.ndarray,
                  title: str) -> Path:
    """PCA (all points) and t-SNE (subsample) side by side, coloured by label; errors ringed."""
    fig = _figure(path)
    ax_pca, ax_tsne = fig.subplots(1, 2)
    colours = _colours(len(group_names))
    n = len(groups)

    def scatter(ax, coords, rows):
        size = 14 if len(rows) <= 1000 else 6
        for g, name in enumerate(group_names):
            mine = groups[rows] == g
            if mine.any():
                ax.scatter(coords[mine, 0], coords[mine, 1], s=size, color=colours[g], alpha=0.7, linewidths=0,
                           label=f"{wrap_name(name, 20)} ({int(mine.sum())})")
        bad = wrong[rows]
        if bad.any():
            # a ring around the point keeps its label colour visible
            ax.scatter(coords[bad, 0], coords[bad, 1], s=size * 3.5, marker="o", facecolors="none",
                       edgecolors="black", linewidths=0.8, label=f"wrong prediction ({int(bad.sum())})")
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
        ax.set_xticks([])
        ax.set_yticks([])

    explained = projection["pca_explained"]
    scatter(ax_pca, projection["pca"], np.arange(n))
    ax_pca.set_title(f"PCA, all {n} points (PC1 {explained[0]:.1%}, PC2 {explained[1]:.1%} of variance)",
                     fontsize=9)
    if projection["tsne"] is None:
        ax_tsne.text(0.5, 0.5, "too few points for t-SNE", ha="center", va="center", transform=ax_tsne.transAxes)
        ax_tsne.set_axis_off()
    else:
        rows = projection["tsne_rows"]
        scatter(ax_tsne, projection["tsne"], rows)
        subset = (f"seeded random {len(rows)} of {n} points" if len(rows) < n else f"all {n} points")
        ax_tsne.set_title(f"t-SNE, {subset} (PCA to ≤50 dims first, perplexity {projection['perplexity']:.0f})",
                          fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(path, fig)


def _reliability_axes(ax, bins: dict, label: str, show_legend: bool, fontsize: int = 8):
    centers = (bins["lower"] + bins["upper"]) / 2
    width = bins["upper"] - bins["lower"]
    filled = bins["count"] > 0
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfect calibration")
    ax.bar(centers[filled], bins["accuracy"][filled], width=width[filled], color="tab:blue", alpha=0.8,
           edgecolor="black", linewidth=0.5, label="accuracy")
    gap_bottom = np.minimum(bins["accuracy"], bins["confidence"])[filled]
    gap_height = np.abs(bins["accuracy"] - bins["confidence"])[filled]
    ax.bar(centers[filled], gap_height, bottom=gap_bottom, width=width[filled], color="tab:red", alpha=0.3,
           edgecolor="tab:red", hatch="//", linewidth=0.5, label="gap to mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(label, fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 1)
    if show_legend:
        ax.legend(fontsize=fontsize, loc="upper left")


def reliability_diagram(path, calib: dict, title: str) -> Path:
    """Accuracy against confidence per bin, with ECE and Brier (multi-label: one panel per label)."""
    fig = _figure(path)
    curves = calib["curves"]
    headline = (f"ECE {calib['ece']:.4f} ({calib['n_bins']} equal-width bins) · Brier {calib['brier']:.4f} · "
                f"accuracy {calib['accuracy']:.4f}")
    if len(curves) == 1:
        top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
        bins = curves[0]["bins"]
        _reliability_axes(top, bins, headline, show_legend=True, fontsize=10)
        top.set_ylabel("accuracy")
        centers = (bins["lower"] + bins["upper"]) / 2
        bottom.bar(centers, bins["count"], width=bins["upper"] - bins["lower"], color="gray", edgecolor="black",
                   linewidth=0.5)
        bottom.set_ylabel("predictions")
        bottom.set_xlabel("confidence of the predicted class")
        fig.suptitle(title, fontsize=10)
        return _save(path, fig)
    cols = int(np.ceil(np.sqrt(len(curves))))
    rows = int(np.ceil(len(curves) / cols))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    for i, (ax, curve) in enumerate(zip(axes, curves)):
        _reliability_axes(ax, curve["bins"], f"{wrap_name(curve['label'], 30)}: ECE {curve['ece']:.3f}",
                          show_legend=i == 0, fontsize=7)
    for ax in axes[len(curves):]:
        ax.set_axis_off()
    fig.supxlabel("confidence of the predicted value (each label on its own)", fontsize=9)
    fig.supylabel("accuracy", fontsize=9)
    fig.suptitle(f"{title}\nper label; mean {headline}", fontsize=10)
    return _save(path, fig)


def error_grid(path, images: np.ndarray, truths: list[str], predictions: list[str], confidences, title: str,
               sample_ids=None) -> Path:
    """The most confident wrong predictions: image, true label, prediction and its confidence.

    ``sample_ids`` (index of each image in its split) head each caption when given.
    """
    n = min(len(images), MAX_ERRORS)
    fig = _figure(path, n)
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no wrong predictions on this split", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        fig.suptitle(title, fontsize=10)
        return _save(path, fig)
    axes = fig.subplots(error_rows(n), ERROR_COLUMNS, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for i in range(n):
        image = display_image(images[i])
        axes[i].imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        head = f"#{sample_ids[i]} " if sample_ids is not None else ""
        axes[i].set_title(f"{head}T: {wrap_name(truths[i])}\nP: {wrap_name(predictions[i])} {confidences[i]:.2f}",
                          fontsize=7, color="tab:red")
    fig.suptitle(title, fontsize=10)
    return _save(path, fig)


def roc_pr_curves(path, curves: list[dict], title: str) -> Path:
    """ROC (left) and precision–recall (right) curves, one per class against the rest, operating points marked.

    ``curves``: :func:`medscope.analysis.curves.roc_pr_curves`. The legend
    (class, AUC, average precision) sits below the axes, covering no curve.
    """
    fig = _figure(path)
    roc_ax, pr_ax = fig.subplots(1, 2)
    colours = _colours(len(curves))
    for curve, colour in zip(curves, colours):
        if not len(curve["fpr_curve"]):
            continue
        label = f"{wrap_name(curve['label'], 24)}: AUC {curve['auc']:.3f}, AP {curve['average_precision']:.3f}"
        roc_ax.plot(curve["fpr_curve"], curve["tpr_curve"], color=colour, lw=1.5, label=label)
        pr_ax.plot(curve["recall_curve"], curve["precision_curve"], color=colour, lw=1.5, drawstyle="steps-post")
        roc_ax.plot([curve["fpr"]], [curve["tpr"]], "o", color=colour, mec="black", ms=6)
        pr_ax.plot([curve["recall"]], [curve["precision"]], "o", color=colour, mec="black", ms=6)
        pr_ax.axhline(curve["prevalence"], color=colour, lw=0.8, ls=":")
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    roc_ax.set(xlabel="false positive rate (1 − specificity)", ylabel="true positive rate (sensitivity)",
               xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    pr_ax.set(xlabel="recall (sensitivity)", ylabel="precision (positive predictive value)", xlim=(0, 1),
              ylim=(0, 1.01), title="precision–recall (dotted: prevalence, a random model)")
    for ax in (roc_ax, pr_ax):
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    handles, labels = roc_ax.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="none", marker="o", color="grey", mec="black"))
    labels.append("operating point: the model's decision (argmax; 0.5 per label for multi-label)")
    fig.legend(handles, labels, loc="outside lower center", ncols=2 if len(labels) > 4 else 1, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(path, fig)
