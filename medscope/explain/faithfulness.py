"""How faithful a saliency map is: the deletion and insertion curves of RISE (Petsiuk et al., 2018).

Remove (or add) the most salient pixels first and follow the target-class
probability; a faithful map makes it fall fast (low deletion AUC) and rise
fast (high insertion AUC), compared with a random order. Works on batches of
2D images ``(N, C, H, W)`` and 3D volumes ``(N, C, D, H, W)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medscope.explain.cam import frozen
from medscope.tasks import Task
from medscope.tasks import task as as_task


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur over the spatial dimensions of (N, C, *spatial), edges replicated."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c, *spatial = x.shape
    out = x.reshape(n * c, 1, *spatial)
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    for axis in range(len(spatial)):
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * len(spatial)
        pad[2 * (len(spatial) - 1 - axis)] = radius  # F.pad lists the last dimension first
        pad[2 * (len(spatial) - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out.reshape(x.shape)


def salience_order(maps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, P) pixel indices, most salient first; ties in random order (seeded)."""
    flat = maps.reshape(maps.shape[0], -1).float().cpu()
    shuffle = torch.rand(flat.shape, generator=generator).argsort(dim=1)
    ranked = torch.argsort(-flat.gather(1, shuffle), dim=1, stable=True)
    return shuffle.gather(1, ranked)


def random_order(n: int, pixels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, P) random pixel orders: the baseline a useful map must beat."""
    return torch.rand((n, pixels), generator=generator).argsort(dim=1)


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """Pixels changed after each of ``steps + 1`` steps: ``round(k P / steps)``, k = 0..steps."""
    return np.round(np.arange(steps + 1) * pixels / steps).astype(np.int64)


@torch.no_grad()
def perturbation_curves(model: nn.Module, x: torch.Tensor, order: torch.Tensor, targets: torch.Tensor,
                        task: str | Task, *, mode: str, canvas: torch.Tensor, steps: int = 20,
                        chunk: int = 256) -> np.ndarray:
    """Target-class probability as pixels change in ``order``: (N, steps + 1).

    ``deletion``: step k replaces the first ``round(k P / steps)`` pixels of
    the order (all channels) with ``canvas``. ``insertion``: starts from
    ``canvas`` and puts those pixels of ``x`` back.
    """
    task = as_task(task)
    n, c, *spatial = x.shape
    pixels = math.prod(spatial)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels).expand(n, pixels).contiguous())
    rank = rank.to(x.device).view(n, 1, *spatial)
    counts = torch.as_tensor(step_counts(pixels, steps), device=x.device)
    variants = []
    for count in counts:
        changed = rank < count
        variants.append(torch.where(changed, canvas, x) if mode == "deletion" else torch.where(changed, x, canvas))
    stacked = torch.stack(variants, dim=1).reshape(n * (steps + 1), c, *spatial)  # sample-major
    target_rows = targets.to(x.device).repeat_interleave(steps + 1)
    probs = []
    with frozen(model):
        for start in range(0, stacked.shape[0], chunk):
            logits = model(stacked[start:start + chunk])
            scores = task.scores(logits)
            probs.append(scores.gather(1, target_rows[start:start + chunk, None]).squeeze(1).float().cpu())
    return torch.cat(probs).view(n, steps + 1).numpy()


def curve_auc(curves: np.ndarray, pixels: int) -> np.ndarray:
    """Area under each curve over the fraction of pixels changed (trapezoid rule, x in [0, 1]).

    >>> curve_auc(np.array([[1.0, 0.5, 0.0]]), pixels=4).tolist()
    [0.5]
    """
    steps = curves.shape[1] - 1
    fractions = step_counts(pixels, steps) / pixels
    return np.trapezoid(curves, fractions, axis=1)


def deletion_baseline(x: torch.Tensor) -> torch.Tensor:
    """What deleted pixels become: 0 in the model's input range, i.e. mid-grey (uint8 127.5)."""
    return torch.zeros_like(x)


def insertion_canvas(x: torch.Tensor) -> torch.Tensor:
    """Where insertion starts: the image blurred with sigma = 1/10 of its smallest side (as in RISE)."""
    return gaussian_blur(x, max(1.0, min(x.shape[2:]) / 10.0))


@dataclass
class Faithfulness:
    """Per-image AUCs (N,) and mean curves (steps + 1,) for the map's order and a random order."""

    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    curves: dict  # name -> mean curve over images
    fractions: np.ndarray


def faithfulness(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, task: str | Task,
                 *, steps: int = 20, generator: torch.Generator | None = None, chunk: int = 256) -> Faithfulness:
    """Deletion and insertion AUC of ``maps`` and of a random pixel order, for one batch."""
    n = x.shape[0]
    pixels = math.prod(x.shape[2:])
    orders = {"map": salience_order(maps, generator), "random": random_order(n, pixels, generator)}
    canvases = {"deletion": deletion_baseline(x), "insertion": insertion_canvas(x)}
    aucs, curves = {}, {}
    for order_name, order in orders.items():
        for mode, canvas in canvases.items():
            curve = perturbation_curves(model, x, order, targets, task, mode=mode, canvas=canvas, steps=steps,
                                        chunk=chunk)
            key = mode if order_name == "map" else f"random_{mode}"
            aucs[key] = curve_auc(curve, pixels)
            curves[key] = curve
    return Faithfulness(aucs["deletion"], aucs["insertion"], aucs["random_deletion"], aucs["random_insertion"],
                        curves, step_counts(pixels, steps) / pixels)


def concat_faithfulness(parts: list[Faithfulness]) -> Faithfulness:
    """Join per-batch results; curves become (N, steps + 1) stacks."""
    return Faithfulness(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                          ("deletion", "insertion", "random_deletion", "random_insertion")),
                        {k: np.concatenate([p.curves[k] for p in parts]) for k in parts[0].curves},
                        parts[0].fractions)


def faithfulness_summary(fa: Faithfulness) -> dict:
    """The dataset-level numbers of a :class:`Faithfulness`, and how the curves were made, for a summary file.

    Means over images of each AUC, and the fraction of images whose map beats
    the random order (deletion AUC below it, insertion AUC above it).
    """
    return {
        "steps": int(len(fa.fractions) - 1),
        "deletion_baseline": "deleted pixels set to 0 in the model's input range (mid-grey)",
        "insertion_canvas": "the image blurred with a Gaussian, sigma = smallest side / 10",
        "deletion_auc": float(fa.deletion.mean()), "random_deletion_auc": float(fa.random_deletion.mean()),
        "insertion_auc": float(fa.insertion.mean()), "random_insertion_auc": float(fa.random_insertion.mean()),
        "fraction_deletion_below_random": float((fa.deletion < fa.random_deletion).mean()),
        "fraction_insertion_above_random": float((fa.insertion > fa.random_insertion).mean()),
    }


def faithfulness_text(label: str, fa: Faithfulness) -> str:
    """One line: the mean deletion and insertion AUCs of ``label``'s maps against the random order."""
    return (f"{label}: deletion AUC {fa.deletion.mean():.3f} (random order {fa.random_deletion.mean():.3f}, "
            f"lower is better); insertion AUC {fa.insertion.mean():.3f} "
            f"(random order {fa.random_insertion.mean():.3f}, higher is better)")
