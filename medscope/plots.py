"""Figures of a training run, written atomically as PNG.

matplotlib runs on the Agg backend: no display is needed.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medscope import atomic  # noqa: E402


def training_curves(path, history: list[dict], title: str):
    """Loss, AUC, ACC (train and val) and learning rate per epoch."""
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, key, label in zip(axes[:3], ("loss", "auc", "acc"), ("loss", "AUC", "ACC")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train", ms=3)
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "o-", label="val", ms=3)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[3].plot(epochs, [r["lr"] for r in history], "o-", ms=3, color="tab:green")
    axes[3].set_title("learning rate (end of epoch)")
    axes[3].set_xlabel("epoch")
    axes[3].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return atomic.save_figure(path, fig)


def confusion_matrix(path, matrix, class_names: list[str], title: str):
    """Counts with row-normalized colour (recall per true class)."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * k, 1.0 + 0.8 * k))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=9)
    short = [name if len(name) <= 18 else name[:16] + "…" for name in class_names]
    ax.set_xticks(range(k), short, rotation=45, ha="right")
    ax.set_yticks(range(k), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
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

    ``truth`` and ``predicted`` are the labels as text (``Task.label_text``);
    ``correct`` says per image whether the prediction is right.
    """
    n = len(images)
    rows = max(1, int(np.ceil(n / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for i, ax in enumerate(np.atleast_1d(axes).ravel()[:n]):
        image = display_image(images[i])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"T:{truth[i]}\nP:{predicted[i]} {confidences[i]:.2f}", fontsize=7,
                     color="black" if correct[i] else "red")
    fig.suptitle(title)
    fig.tight_layout()
    return atomic.save_figure(path, fig)


def short_name(name: str, width: int = 12) -> str:
    """``name``, cut to ``width`` characters with an ellipsis where longer (a tile's title).

    >>> short_name("malignant"), short_name("adenocarcinoma tissue")
    ('malignant', 'adenocarcin…')
    """
    return name if len(name) <= width else name[:width - 1] + "…"
