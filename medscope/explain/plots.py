"""Figures for explanations and uncertainty, written atomically as PNG.

2D: pages of ``image | heatmap | overlay``, each image titled with its true
label, the prediction and its probability (red when wrong). 3D: per volume,
the three orthogonal slices through the heatmap's peak and a montage of axial
slices with the overlay. Uncertainty: accuracy-coverage curve and the
distributions of each measure for correct and wrong predictions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from medscope import atomic
from medscope.plots import display_image, plt, wrap_name
from medscope.tasks import Task
from medscope.tasks import task as as_task

# perceptually uniform and monotone in lightness (jet is neither: its bright bands in the middle read as
# peaks that are not there), and legible in grey print
HEATMAP_CMAP = "inferno"
OVERLAY_ALPHA = 0.5
MAP_SCALE_LABEL = "map value (each map scaled to [0, 1])"


def titles(labels, predictions, probabilities, targets, class_names, task: str | Task) -> list[str]:
    """``true: A / pred: B 0.87`` per image (and the explained class when it is not the prediction).

    ``probabilities`` (N, K): the probability shown is the predicted class's,
    or for multi-label tasks the explained label's.
    """
    multilabel = as_task(task).is_multilabel
    out = []
    for i in range(len(labels)):
        if multilabel:
            # label indices: a row of names would be wider than the page
            true = ",".join(str(j) for j in np.flatnonzero(labels[i])) or "none"
            pred = ",".join(str(j) for j in np.flatnonzero(predictions[i])) or "none"
            prob = float(probabilities[i][targets[i]])
            text = f"true: {true}\npred: {pred}\nmap: {wrap_name(class_names[targets[i]])} {prob:.2f}"
        else:
            true, pred = int(np.asarray(labels[i]).reshape(-1)[0]), int(predictions[i])
            prob = float(probabilities[i][pred])
            text = f"true: {wrap_name(class_names[true])}\npred: {wrap_name(class_names[pred])} {prob:.2f}"
            if int(targets[i]) != pred:
                text += f"\nmap for: {wrap_name(class_names[int(targets[i])])}"
        out.append(text)
    return out


def show_image(ax, image: np.ndarray, *, frame: bool = False) -> None:
    """A uint8 image (grey or RGB) with no ticks; ``frame=True`` keeps the box (and room for a y label)."""
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    if frame:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.axis("off")


def draw_heatmap(ax, heat: np.ndarray, *, alpha: float | None = None):
    """``heat`` in [0, 1] in the colours of every explain figure, pixel for pixel; returns the image artist.

    Nearest-neighbour drawing: a 28 px saliency map is a per-pixel quantity,
    and smoothing it on screen would show structure the method did not find.
    """
    return ax.imshow(heat, cmap=HEATMAP_CMAP, vmin=0, vmax=1, alpha=alpha, interpolation="nearest")


def overlay_heatmap(ax, image: np.ndarray, heat: np.ndarray, *, frame: bool = False):
    """``heat`` drawn over ``image``; returns the heat map's artist."""
    show_image(ax, image, frame=frame)
    return draw_heatmap(ax, heat, alpha=OVERLAY_ALPHA)


def add_map_colorbar(fig, axes) -> None:
    """One colour bar for every map of a figure (opaque, as the heatmap panels show it), with what its values mean."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = ScalarMappable(norm=Normalize(0, 1), cmap=HEATMAP_CMAP)
    bar = fig.colorbar(scale, ax=axes, fraction=0.02, pad=0.01)
    bar.set_label(MAP_SCALE_LABEL, fontsize=7)
    bar.ax.tick_params(labelsize=6)


def heatmap_pages(folder, page_name: Callable[[int], str], images: np.ndarray, maps: np.ndarray,
                  image_titles: list[str], is_wrong: np.ndarray, heading: str, *, per_page: int = 8,
                  per_row: int = 2) -> list[Path]:
    """2D: pages ``folder / page_name(1)``, ... with ``per_page`` images, each as image | heatmap | overlay."""
    folder = Path(folder)
    written = []
    pages = int(np.ceil(len(images) / per_page))
    for page in range(pages):
        chunk = range(page * per_page, min(len(images), (page + 1) * per_page))
        rows = int(np.ceil(len(chunk) / per_row))
        fig, axes = plt.subplots(rows, 3 * per_row, figsize=(2.1 * 3 * per_row, 2.5 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for slot, i in enumerate(chunk):
            row, col = divmod(slot, per_row)
            ax_image, ax_heat, ax_overlay = axes[row, 3 * col: 3 * col + 3]
            image = display_image(images[i])
            show_image(ax_image, image)
            ax_image.set_title(image_titles[i], fontsize=7, color="red" if is_wrong[i] else "black")
            draw_heatmap(ax_heat, maps[i])
            ax_heat.set_title("heatmap" + (" (empty)" if is_empty_map(maps[i]) else ""), fontsize=7)
            overlay_heatmap(ax_overlay, image, maps[i])
            ax_overlay.set_title("overlay", fontsize=7)
        fig.suptitle(f"{heading} — page {page + 1}/{pages}", fontsize=9)
        fig.tight_layout(rect=(0, 0, 0.94, 1))
        add_map_colorbar(fig, axes.ravel().tolist())
        written.append(atomic.save_figure(folder / page_name(page + 1), fig))
    return written


def _slice_image(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """(C, D, H, W) uint8 -> the 2D slice at ``index`` along spatial ``axis`` (0 axial, 1 coronal, 2 sagittal)."""
    plane = np.take(volume, index, axis=axis + 1)
    return plane[0] if plane.shape[0] == 1 else np.moveaxis(plane, 0, -1)


def peak_location(heat: np.ndarray) -> tuple[int, ...]:
    """Index of the map's maximum (the first one when several tie)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(heat)), heat.shape))


def is_empty_map(heat: np.ndarray) -> bool:
    """A map with nothing to show: constant (all zero after the ReLU of Grad-CAM, typically).

    >>> is_empty_map(np.zeros((4, 4))), is_empty_map(np.eye(4))
    (True, False)
    """
    heat = np.asarray(heat)
    return heat.size == 0 or float(heat.max() - heat.min()) <= 1e-8


def volume_figure(path, volume: np.ndarray, heat: np.ndarray, title: str, *, is_wrong: bool = False,
                  montage: int = 12) -> Path:
    """3D: axial, coronal and sagittal slices through the peak (image and overlay) + an axial montage.

    An empty map has no peak: the slices go through the middle and the title says "empty map".
    """
    empty = is_empty_map(heat)
    peak = tuple(side // 2 for side in heat.shape) if empty else peak_location(heat)
    columns = 6
    montage_rows = int(np.ceil(montage / columns))
    fig, axes = plt.subplots(1 + montage_rows, columns, figsize=(1.9 * columns, 2.1 * (1 + montage_rows)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for axis, name in enumerate(("axial", "coronal", "sagittal")):
        image = _slice_image(volume, axis, peak[axis])
        heat_slice = np.take(heat, peak[axis], axis=axis)
        show_image(axes[0, 2 * axis], image)
        axes[0, 2 * axis].set_title(f"{name} {peak[axis]}", fontsize=7)
        overlay_heatmap(axes[0, 2 * axis + 1], image, heat_slice)
        axes[0, 2 * axis + 1].set_title(f"{name} overlay", fontsize=7)
    depth = heat.shape[0]
    for k, d in enumerate(np.unique(np.linspace(0, depth - 1, montage).round().astype(int))):
        ax = axes[1 + k // columns, k % columns]
        overlay_heatmap(ax, _slice_image(volume, 0, d), heat[d])
        ax.set_title(f"axial {d}" + (" (peak)" if d == peak[0] and not empty else ""), fontsize=7)
    where = (f"EMPTY MAP (nothing highlighted): middle slices (d, h, w) = {peak}" if empty
             else f"peak at (d, h, w) = {peak}")
    fig.suptitle(f"{title}\n{where}", fontsize=8, color="red" if is_wrong else "black")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    add_map_colorbar(fig, axes.ravel().tolist())
    return atomic.save_figure(path, fig)


def faithfulness_curves(path, fa, heading: str) -> Path:
    """Mean deletion and insertion curves of the map's order against a random order."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    x = fa.fractions
    for ax, mode, better in zip(axes, ("deletion", "insertion"), ("lower", "higher")):
        for key, style, label in ((mode, "-", "map order"), (f"random_{mode}", "--", "random order")):
            auc = getattr(fa, key).mean()
            ax.plot(x, fa.curves[key].mean(axis=0), style, label=f"{label} (AUC {auc:.3f})")
        ax.set_xlabel(f"fraction of pixels {'removed' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("target-class probability")
        ax.set_title(f"{mode} ({better} AUC is better)", fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    return atomic.save_figure(path, fig)


def accuracy_coverage(path, coverage: np.ndarray, accuracy: np.ndarray, *, threshold_coverage: float,
                      threshold_accuracy: float, overall_accuracy: float, title: str) -> Path:
    """Accuracy of the most confident fraction of predictions, for every fraction kept."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.plot(coverage, accuracy, "-", color="tab:blue", label="most confident first")
    ax.axhline(overall_accuracy, color="grey", ls="--", lw=1, label=f"all images ({overall_accuracy:.3f})")
    if threshold_coverage > 0:
        ax.plot([threshold_coverage], [threshold_accuracy], "o", color="tab:red",
                label=f"confident at threshold ({threshold_coverage:.0%} kept, acc {threshold_accuracy:.3f})")
    ax.set_xlabel("coverage (fraction of images kept)")
    ax.set_ylabel("accuracy on the kept images")
    ax.set_xlim(0, 1)
    ax.set_ylim(max(0.0, min(accuracy.min(), overall_accuracy) - 0.05), 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return atomic.save_figure(path, fig)


MEASURE_AXIS_LABELS = {  # what each measure is, in its units (the x axis of its histogram)
    "confidence": "confidence: mean probability of the predicted class",
    "normalised_entropy": "normalised entropy H / log K (0 certain, 1 uniform)",
    "predictive_entropy": "predictive entropy H(mean p), nats",
    "expected_entropy": "expected entropy, mean of H(p_t), nats",
    "mutual_information": "mutual information, nats",
    "std_predicted_probability": "std over passes of the predicted probability",
}


def uncertainty_distributions(path, measures: dict[str, np.ndarray], correct: np.ndarray, title: str) -> Path:
    """One histogram per measure, correct and wrong predictions overlaid (each as a density).

    Each panel's x axis names the measure and its units; one legend for the
    figure sits below the panels, covering no bar.
    """
    names = list(measures)
    columns = min(3, len(names))
    rows = int(np.ceil(len(names) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.1 * rows + 0.7), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    correct = np.asarray(correct, dtype=bool)
    groups = ((correct, "correct", "tab:green"), (~correct, "wrong", "tab:red"))
    for ax, name in zip(axes.ravel(), names):
        values = np.asarray(measures[name], dtype=np.float64)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 25)
        for mask, label, color in groups:
            if mask.any():
                ax.hist(values[mask], bins=bins, density=True, alpha=0.55, color=color)
                ax.axvline(values[mask].mean(), color=color, lw=1.2, ls="--")
        ax.set_xlabel(MEASURE_AXIS_LABELS.get(name, name.replace("_", " ")), fontsize=8)
        ax.set_ylabel("density (per group)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=color, alpha=0.55) for mask, _, color in groups if mask.any()]
    labels = [f"{label} predictions (n={int(mask.sum())}); dashed: their mean" for mask, label, _ in groups
              if mask.any()]
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    fig.suptitle(title, fontsize=9)
    return atomic.save_figure(path, fig)
