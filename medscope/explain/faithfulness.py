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


BASELINE_WORDS = {"background": "the background", "blur": "a blurred copy", "grey": "mid-grey"}
DELETION_BASELINES = {  # "auto" (explain.py's default) picks one with choose_deletion_baseline
    "background": "deleted pixels set to the background: the median of the split's border pixels, per channel",
    "blur": "deleted pixels replaced by the image blurred with a Gaussian, sigma = smallest side / 10",
    "grey": "deleted pixels set to mid-grey (0 in the model's input range)",
}


UNIFORM_BORDER_SHARE = 0.9  # "the images have a background": this share of border pixels equals their median
UNIFORM_BORDER_TOLERANCE = 2 * 2.0 / 255.0  # "equals": within 2 grey levels of 255, in the model's input range


def border_values(x: torch.Tensor) -> torch.Tensor:
    """The border pixels (voxels) of a batch ``(N, C, *spatial)``, per channel: (C, N * border size).

    The border is every pixel on the outermost row or column (2D) or face (3D) of each image.
    """
    n, c, *spatial = x.shape
    border = torch.zeros(spatial, dtype=torch.bool, device=x.device)
    for axis, length in enumerate(spatial):
        edge = [slice(None)] * len(spatial)
        for position in (0, length - 1):
            edge[axis] = position
            border[tuple(edge)] = True
    return x.movedim(1, 0)[:, :, border].reshape(c, -1)


def background_value(x: torch.Tensor) -> torch.Tensor:
    """Per-channel median of the border pixels (voxels) of a batch ``(N, C, *spatial)``: (C,), in the units of ``x``.

    Medical images framed by a background (the empty space around a
    segmented organ, the black surround of an ultrasound fan) show it on
    their border, so the border median is what "nothing there" looks like in
    this data. A constant such as mid-grey is not: on 0/255 masks it adds a
    grey block, i.e. signal.

    >>> x = torch.zeros(2, 1, 5, 5); x[:, :, 1:4, 1:4] = 1.0
    >>> background_value(x).tolist()
    [0.0]
    """
    return border_values(x).float().median(dim=1).values.to(x.dtype)


def uniform_border_share(x: torch.Tensor) -> float:
    """Share of border pixels within :data:`UNIFORM_BORDER_TOLERANCE` of their channel's median (x in [-1, 1]).

    Near 1 for masks and images on a flat background; a few per cent for
    crops whose anatomy runs to the edge (28 px chest X-rays: 3%).
    """
    values = border_values(x).float()
    median = values.median(dim=1, keepdim=True).values
    return float(((values - median).abs() <= UNIFORM_BORDER_TOLERANCE).float().mean())


def choose_deletion_baseline(x: torch.Tensor) -> tuple[str, str]:
    """``("background", why)`` when the images have a flat background, else ``("blur", why)``.

    Deleting a pixel should remove what it shows and add nothing. Where the
    images lie on a flat background, setting it to that background does; on
    crops with anatomy up to the edge there is no such value (any constant
    paints a flat patch, which on a chest X-ray reads as an opacity), and a
    blurred copy removes the detail while keeping the local intensity (RISE's
    choice for natural images). ``x``: a sample of the split, in the model's
    input range.
    """
    share = uniform_border_share(x)
    if share >= UNIFORM_BORDER_SHARE:
        return "background", (f"{share:.0%} of the images' border pixels are one value (a flat background, "
                              f"at least {UNIFORM_BORDER_SHARE:.0%})")
    return "blur", (f"only {share:.0%} of the images' border pixels are one value (anatomy up to the edge, "
                    f"no flat background; {UNIFORM_BORDER_SHARE:.0%} needed)")


def deletion_canvas(x: torch.Tensor, baseline: str = "background", background: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """What deleted pixels become (see :data:`DELETION_BASELINES`).

    ``background``: the per-channel value of :func:`background_value`, best
    measured on the whole split; by default on ``x`` itself.
    """
    if baseline == "background":
        value = background_value(x) if background is None else background.to(device=x.device, dtype=x.dtype)
        return value.view(1, -1, *([1] * (x.ndim - 2))).expand_as(x)
    if baseline == "blur":
        return insertion_canvas(x)
    if baseline == "grey":
        return torch.zeros_like(x)
    raise ValueError(f"unknown deletion baseline {baseline!r}; expected one of {', '.join(DELETION_BASELINES)}")


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
    baseline: str = "background"  # what deleted pixels became (DELETION_BASELINES)
    background: np.ndarray | None = None  # (C,) the background value, in the model's input range
    baseline_reason: str | None = None  # why this baseline (choose_deletion_baseline), or None: given


def faithfulness(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, task: str | Task,
                 *, steps: int = 20, generator: torch.Generator | None = None, chunk: int = 256,
                 baseline: str = "background", background: torch.Tensor | None = None) -> Faithfulness:
    """Deletion and insertion AUC of ``maps`` and of a random pixel order, for one batch.

    ``baseline`` and ``background``: what deleted pixels become (:func:`deletion_canvas`;
    ``"auto"``: :func:`choose_deletion_baseline` on ``x``).
    """
    n = x.shape[0]
    pixels = math.prod(x.shape[2:])
    orders = {"map": salience_order(maps, generator), "random": random_order(n, pixels, generator)}
    reason = None
    if baseline == "auto":
        baseline, reason = choose_deletion_baseline(x)
    canvases = {"deletion": deletion_canvas(x, baseline, background), "insertion": insertion_canvas(x)}
    aucs, curves = {}, {}
    for order_name, order in orders.items():
        for mode, canvas in canvases.items():
            curve = perturbation_curves(model, x, order, targets, task, mode=mode, canvas=canvas, steps=steps,
                                        chunk=chunk)
            key = mode if order_name == "map" else f"random_{mode}"
            aucs[key] = curve_auc(curve, pixels)
            curves[key] = curve
    return Faithfulness(aucs["deletion"], aucs["insertion"], aucs["random_deletion"], aucs["random_insertion"],
                        curves, step_counts(pixels, steps) / pixels, baseline,
                        None if background is None else background.float().cpu().numpy(), reason)


def concat_faithfulness(parts: list[Faithfulness]) -> Faithfulness:
    """Join per-batch results; curves become (N, steps + 1) stacks."""
    return Faithfulness(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                          ("deletion", "insertion", "random_deletion", "random_insertion")),
                        {k: np.concatenate([p.curves[k] for p in parts]) for k in parts[0].curves},
                        parts[0].fractions, parts[0].baseline, parts[0].background, parts[0].baseline_reason)


def gains_over_random(fa: Faithfulness, *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """How much better than a random pixel order the maps are, with bootstrap intervals over images.

    Per image, the deletion gain is ``random deletion AUC - deletion AUC`` and
    the insertion gain ``insertion AUC - random insertion AUC`` (both in units
    of target-class probability; positive when the map beats the random order).
    The estimates are their means over images, with percentile bootstrap
    intervals that resample images (the two gains from the same resamples).

    Returns
    -------
    dict
        ``{"deletion_gain": {...}, "insertion_gain": {...}}``, each with
        ``estimate``, ``low``, ``high`` (as :func:`medscope.stats.bootstrap.bootstrap_statistic`).
    """
    from medscope.stats.bootstrap import bootstrap_statistic

    deletion_gain = fa.random_deletion - fa.deletion
    insertion_gain = fa.insertion - fa.random_insertion
    return bootstrap_statistic(
        lambda d, i: {"deletion_gain": d.mean(axis=1), "insertion_gain": i.mean(axis=1)},
        [deletion_gain, insertion_gain], n_resamples=n_resamples, seed=seed, level=level, batched=True)


def verdict(gain: dict) -> str:
    """``better than``, ``worse than`` or ``no different from`` a random order, by where the interval lies.

    >>> verdict({"low": 0.01, "high": 0.2}), verdict({"low": -0.1, "high": 0.2})
    ('better than', 'no different from')
    """
    if gain["low"] > 0:
        return "better than"
    if gain["high"] < 0:
        return "worse than"
    return "no different from"


def faithfulness_summary(fa: Faithfulness, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """The dataset-level numbers of a :class:`Faithfulness`, and how the curves were made, for a summary file.

    Means over images of each AUC, the fraction of images whose map beats
    the random order (deletion AUC below it, insertion AUC above it), and the
    mean gains over the random order with 95% bootstrap intervals
    (:func:`gains_over_random`).
    """
    summary = {
        "steps": int(len(fa.fractions) - 1),
        "deletion_baseline": fa.baseline,
        "deletion_baseline_meaning": DELETION_BASELINES[fa.baseline],
        "deletion_baseline_reason": fa.baseline_reason or "given (--deletion-baseline)",
        "insertion_canvas": "the image blurred with a Gaussian, sigma = smallest side / 10",
        "deletion_auc": float(fa.deletion.mean()), "random_deletion_auc": float(fa.random_deletion.mean()),
        "insertion_auc": float(fa.insertion.mean()), "random_insertion_auc": float(fa.random_insertion.mean()),
        "fraction_deletion_below_random": float((fa.deletion < fa.random_deletion).mean()),
        "fraction_insertion_above_random": float((fa.insertion > fa.random_insertion).mean()),
    }
    if fa.background is not None:
        summary["background_uint8"] = [round(float(v), 2) for v in (fa.background + 1.0) * 127.5]
    for name, gain in gains_over_random(fa, n_resamples=n_resamples, seed=seed).items():
        summary[name] = gain["estimate"]
        summary[f"{name}_low"], summary[f"{name}_high"] = gain["low"], gain["high"]
        summary[f"{name}_verdict"] = verdict(gain)
    return summary


def faithfulness_text(label: str, fa: Faithfulness, *, n_resamples: int = 2000, seed: int = 0) -> str:
    """Two lines: the mean deletion and insertion AUCs of ``label``'s maps against the random order, with intervals."""
    gains = gains_over_random(fa, n_resamples=n_resamples, seed=seed)
    deletion, insertion = gains["deletion_gain"], gains["insertion_gain"]
    return (f"{label}: deletion AUC {fa.deletion.mean():.3f} against {fa.random_deletion.mean():.3f} for a random "
            f"order (lower is better; deleted pixels become {BASELINE_WORDS[fa.baseline]}): {deletion['estimate']:+.3f} "
            f"[{deletion['low']:+.3f}, {deletion['high']:+.3f}], {verdict(deletion)} random at 95%\n"
            f"{' ' * len(label)}  insertion AUC {fa.insertion.mean():.3f} against {fa.random_insertion.mean():.3f} "
            f"(higher is better): {insertion['estimate']:+.3f} [{insertion['low']:+.3f}, {insertion['high']:+.3f}], "
            f"{verdict(insertion)} random at 95%")
