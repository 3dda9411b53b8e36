"""Figures of a training run, written atomically as PNG.

matplotlib runs on the Agg backend: no display is needed.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medscope import atomic  # noqa: E402


def wrap_name(name: str, width: int = 16) -> str:
    """A name on lines of about ``width`` characters, whole: figures wrap names, they never cut them.

    >>> print(wrap_name("normal, benign and malignant", 16))
    normal, benign
    and malignant
    """
    import textwrap

    return "\n".join(textwrap.wrap(str(name), width, break_long_words=False, break_on_hyphens=False)) or str(name)


def training_curves(path, history: list[dict], title: str, kept_epoch: int | None = None):
    """Loss, AUC, ACC (train and val) and learning rate per epoch.

    Whole-number epoch ticks; the loss on a log scale when it spans more than
    a factor of 30 (a first epoch far above the rest would flatten the others);
    ``kept_epoch`` (the epoch whose weights the run keeps) marked in every panel.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, key, label in zip(axes[:3], ("loss", "auc", "acc"), ("loss", "AUC", "ACC")):
        train = [r[f"train_{key}"] for r in history]
        val = [r[f"val_{key}"] for r in history]
        ax.plot(epochs, train, "o-", label="train", ms=3)
        ax.plot(epochs, val, "o-", label="val", ms=3)
        values = [v for v in train + val if v is not None and np.isfinite(v)]
        if key == "loss" and values and min(values) > 0 and max(values) / min(values) > 30:
            ax.set_yscale("log")
            label += " (log scale)"
        ax.set_ylabel(label)
        ax.set_title(label)
    axes[3].plot(epochs, [r["lr"] for r in history], "o-", ms=3, color="tab:green")
    axes[3].set_title("learning rate (end of epoch)")
    axes[3].set_ylabel("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if kept_epoch is not None:
            ax.axvline(kept_epoch, color="0.4", ls="--", lw=1, label=f"kept (epoch {kept_epoch})")
    for ax in axes[:3]:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return atomic.save_figure(path, fig)


def confusion_matrix(path, matrix, class_names: list[str], title: str):
    """The counts, and beside them the row-normalized matrix (recall per true class), class names whole."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    names = [wrap_name(name) for name in class_names]
    side = 1.6 + 0.75 * k
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.2, side + 0.6))
    panels = ((matrix, "counts", lambda v: str(int(v))), (rates, "share of each true class (rows sum to 1)",
                                                          lambda v: f"{v:.2f}"))
    for column, (ax, (values, label, text)) in enumerate(zip(axes, panels)):
        image = ax.imshow(rates, cmap="viridis", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, text(values[i, j]), ha="center", va="center", fontsize=9,
                        color="black" if rates[i, j] > 0.6 else "white")
        ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center", fontsize=8)
        ax.set_yticks(range(k), names if column == 0 else [], fontsize=8)  # the rows are the same classes
        ax.set_xlabel("predicted")
        if column == 0:
            ax.set_ylabel("true")
        ax.set_title(label, fontsize=9)
    fig.colorbar(image, ax=axes, fraction=0.03, label="share of the true class")
    fig.suptitle(title)
    return atomic.save_figure(path, fig)


def display_image(volume_or_image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (C, D, H, W) uint8 -> an image to show (3D: middle axial slice)."""
    array = np.asarray(volume_or_image)
    if array.ndim == 4:
        array = array[:, array.shape[1] // 2]
    if array.shape[0] == 1:
        return array[0]
    return np.moveaxis(array, 0, -1)


def prediction_grid(path, images: np.ndarray, truth: list[str], predicted: list[str], confidences, correct,
                    title: str, columns: int = 8):
    """Sample images with their true label, the prediction and its probability (red: wrong).

    ``truth`` and ``predicted`` are the labels as text (``Task.label_text``),
    shown whole: a long name wraps onto another line instead of being cut.
    ``correct`` says per image whether the prediction is right. The tiles are
    one mosaic drawn on one axes, pixel for pixel (no interpolation), which
    draws in a fraction of the time 32 separate axes take.
    """
    import textwrap

    n = len(images)
    rows = max(1, int(np.ceil(n / columns)))
    tiles = [display_image(image) for image in images]
    side = max(max(t.shape[:2]) for t in tiles) if tiles else 28
    titles = [f"T: {truth[i]}\nP: {predicted[i]} {confidences[i]:.2f}" for i in range(n)]
    wrapped = ["\n".join(textwrap.fill(line, 22, subsequent_indent="   ") for line in t.split("\n")) for t in titles]
    lines = max((t.count("\n") + 1 for t in wrapped), default=2)
    tile_in, gap_in, head_in = 1.5, 0.1, 0.13 * lines + 0.06  # inches
    px = side / tile_in  # mosaic pixels per inch
    gap, head = int(round(gap_in * px)), int(round(head_in * px))
    colour = tiles[0].ndim == 3 if tiles else False
    shape = (rows * (side + head + gap), columns * (side + gap)) + ((3,) if colour else ())
    mosaic = np.full(shape, 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = r * (side + head + gap) + head, c * (side + gap)
        mosaic[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    top = 0.45 + 0.18 * title.count("\n")
    width, height = shape[1] / px + 0.2, shape[0] / px + top + 0.1
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.1 / width, 0.1 / height, shape[1] / px / width, shape[0] / px / height))
    ax.imshow(mosaic, cmap=None if colour else "gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    for i, text in enumerate(wrapped):
        r, c = divmod(i, columns)
        ax.text(c * (side + gap), r * (side + head + gap) + head - 1, text, fontsize=7, va="bottom", ha="left",
                color="black" if correct[i] else "red")
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    return atomic.save_figure(path, fig, tight=False)
