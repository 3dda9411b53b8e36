"""Where a model looks: Grad-CAM, Grad-CAM++, gradient saliency, and how faithful the maps are.

Everything works on batches and on 2D images ``(N, C, H, W)`` as well as 3D
volumes ``(N, C, D, H, W)``.

Class activation maps follow pytorch-grad-cam's design: one small base class
(:class:`BaseCAM`) that captures a layer's output and the gradient of the
target scores with respect to it, and one short subclass per method that only
says how to weight the channels. Hooks live only inside a ``with`` block.

Unlike a plain ``loss.backward()``, the gradient is taken with
``torch.autograd.grad`` with respect to the layer output alone, with every
parameter frozen: the forward pass records no graph before the layer, and the
backward pass computes no weight gradients. The maps are the same; the work
is a fraction.

Faithfulness is measured with the deletion and insertion curves of RISE
(Petsiuk et al., 2018): remove (or add) the most salient pixels first and
follow the target-class probability; a faithful map makes it fall fast (low
deletion AUC) and rise fast (high insertion AUC), compared with a random order.
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medscope import atomic
from medscope.app import cli
from medscope.data import TASK_MULTILABEL, gather, normalize
from medscope.errors import UsageError
from medscope.metrics import predictions, scores_from_logits
from medscope.report_text import label_text

EPS = 1e-7  # same guard as pytorch-grad-cam's min-max normalisation


# --------------------------------------------------------------------------- helpers

def spatial_dims_of(tensor: torch.Tensor) -> tuple[int, ...]:
    """Indices of the spatial dimensions of an ``(N, C, *spatial)`` tensor."""
    return tuple(range(2, tensor.ndim))


def normalize_maps(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Min-max scale each map of a batch to [0, 1].

    ``m' = (m - min m) / (max m - min m + eps)`` over every pixel (voxel) of
    one sample; with the default ``eps = 1e-7`` exactly as pytorch-grad-cam's
    ``scale_cam_image`` does before it resizes.

    Parameters
    ----------
    maps : Tensor of shape (N, *spatial)
    eps : guard against a constant map (which becomes all zeros)

    >>> normalize_maps(torch.tensor([[[0.0, 2.0], [1.0, 4.0]]])).tolist()
    [[[0.0, 0.5], [0.25, 1.0]]]
    """
    flat = maps.reshape(maps.shape[0], -1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (flat.max(dim=1, keepdim=True).values + eps)
    return flat.reshape(maps.shape)


def upsample_maps(maps: torch.Tensor, size) -> torch.Tensor:
    """(N, *layer_spatial) -> (N, *size) by bilinear (2D) or trilinear (3D) interpolation."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[1:]) == size:
        return maps
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(maps[:, None].float(), size=size, mode=mode, align_corners=False)[:, 0]


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Evaluation mode and no parameter gradients for the duration; both restored on exit.

    Gradients are then only computed for what the caller asks (a layer output
    or the input), never for the weights.
    """
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


def target_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each sample's target logit (its gradient is per-sample)."""
    return logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()


# --------------------------------------------------------------------------- targets

def parse_target(text: str, class_names: list[str]):
    """``pred``, ``true``, a class index or a class name -> ``"pred"``, ``"true"`` or an int."""
    lowered = str(text).strip().lower()
    if lowered in ("pred", "true"):
        return lowered
    if re.fullmatch(r"\d+", lowered) and int(lowered) < len(class_names):
        return int(lowered)
    names = [name.lower() for name in class_names]
    if lowered in names:
        return names.index(lowered)
    choices = ", ".join(f"{i} ({name})" for i, name in enumerate(class_names))
    raise UsageError(f"--target {text!r}: expected pred, true, or a class: {choices}")


def select_targets(target, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The class each map explains, per sample.

    ``pred``: the predicted class (multi-label: the highest-scoring label).
    ``true``: the true class (multi-label: the highest-scoring positive label,
    or the highest-scoring label when none is positive). An int: that class.
    """
    n = logits.shape[0]
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long)
    logits = logits.detach().float().cpu()
    if task == TASK_MULTILABEL:
        if target == "pred":
            return logits.argmax(dim=1)
        positive = labels.cpu() > 0.5
        masked = torch.where(positive, logits, torch.full_like(logits, -math.inf))
        return torch.where(positive.any(dim=1), masked.argmax(dim=1), logits.argmax(dim=1))
    if target == "pred":
        probs = scores_from_logits(task, logits).numpy()
        return torch.from_numpy(np.asarray(predictions(task, probs), dtype=np.int64))
    return labels.cpu().view(n, -1)[:, 0].long()


# --------------------------------------------------------------------------- layers

def probe_blocks(model: nn.Module, input_shape, names=None, device="cpu") -> list[tuple[str, tuple]]:
    """(name, output shape) of each block for one dummy input of ``input_shape`` (C, *spatial)."""
    modules = dict(model.named_modules())
    names = [name for name, _ in model.blocks()] if names is None else list(names)
    shapes: dict[str, tuple] = {}

    def hook_for(name):
        def hook(_module, _inputs, output):
            shapes[name] = tuple(output.shape) if torch.is_tensor(output) else None
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [(name, shapes.get(name)) for name in names]


def auto_layer(model: nn.Module, input_shape, device="cpu") -> str:
    """The last block whose output is still larger than one pixel (voxel).

    The deepest layer has the most class-specific features; a 1x1 map says
    nothing about where, so the search steps back until it finds space.
    """
    spatial_ndim = len(input_shape) - 1
    chosen = None
    for name, shape in probe_blocks(model, input_shape, device=device):
        if shape is not None and len(shape) == 2 + spatial_ndim and math.prod(shape[2:]) > 1:
            chosen = name
    if chosen is None:
        raise UsageError(f"no block of this model keeps a spatial output for inputs of shape {tuple(input_shape)}")
    return chosen


def resolve_layer(model: nn.Module, name: str | None, input_shape, device="cpu") -> str:
    """``name`` checked (it must exist and keep a spatial output), or the automatic choice."""
    if name is None:
        return auto_layer(model, input_shape, device)
    valid = [block for block, _ in model.blocks()]
    if name not in dict(model.named_modules()) or not name:
        raise UsageError(f"--layer {name!r} is not a layer of this model; valid names: {', '.join(valid)}")
    ((_, shape),) = probe_blocks(model, input_shape, [name], device)
    if shape is None or len(shape) != len(input_shape) + 1:
        raise UsageError(f"--layer {name!r} has no spatial output (shape {shape}); "
                         f"choose one of: {', '.join(valid)}")
    return name


# --------------------------------------------------------------------------- CAM

@dataclass
class MapBatch:
    """What one explained batch gives: maps, the model's logits and the targets explained."""

    maps: torch.Tensor  # (N, *input spatial), in [0, 1]
    logits: torch.Tensor  # (N, K)
    targets: torch.Tensor  # (N,)
    layer_maps: torch.Tensor | None = None  # (N, *layer spatial), in [0, 1]


class BaseCAM:
    """Class activation map of one layer: ``ReLU(sum_c w_c A_c)``, min-max scaled per sample.

    Subclasses define :meth:`channel_weights`. Use as a context manager: the
    forward hook and the frozen parameters exist only inside the block.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> with GradCAM(net, "1") as cam:
    ...     out = cam(torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 0]))
    >>> tuple(out.maps.shape), len(net[1]._forward_hooks)
    ((3, 8, 8), 0)
    """

    def __init__(self, model: nn.Module, layer: str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise UsageError(f"layer {layer!r} is not in the model")
        self.model, self.layer_name, self.layer = model, layer, modules[layer]
        self.activations: torch.Tensor | None = None
        self._handle = None
        self._stack = contextlib.ExitStack()
        self._recording = False

    def __enter__(self) -> "BaseCAM":
        self._stack.enter_context(frozen(self.model))
        self._handle = self.layer.register_forward_hook(self._capture)
        self._stack.callback(self._handle.remove)
        return self

    def __exit__(self, *exc) -> None:
        self._handle, self.activations = None, None
        self._stack.close()

    def _capture(self, _module, _inputs, output):
        if not self._recording:  # other forward passes inside the block (e.g. faithfulness) are left alone
            return None
        # A fresh leaf: the graph (and the backward pass) starts here, not at the input.
        self.activations = output.detach().requires_grad_(True)
        return self.activations

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """(N, C) weight of each channel, from the layer's activations and gradients."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, targets=None) -> MapBatch:
        """Maps for a batch; ``targets``: None (predicted class), (N,) ints, or a function of the logits."""
        if self._handle is None:
            name = type(self).__name__
            raise RuntimeError(f"use {name} as a context manager: with {name}(model, layer) as cam: ...")
        self._recording = True
        try:
            with torch.enable_grad():
                logits = self.model(x)
                if targets is None:
                    targets = logits.detach().argmax(dim=1)
                elif callable(targets):
                    targets = targets(logits.detach())
                activations = self.activations
                (gradients,) = torch.autograd.grad(target_scores(logits, targets), activations)
        finally:
            self._recording = False
            self.activations = None
        activations = activations.detach()
        weights = self.channel_weights(activations, gradients)
        weighted = weights.view(*weights.shape, *([1] * (activations.ndim - 2))) * activations
        layer_maps = normalize_maps(weighted.sum(dim=1).clamp_min(0))
        maps = upsample_maps(layer_maps, x.shape[2:])
        return MapBatch(maps, logits.detach(), targets.cpu().long(), layer_maps)


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., 2017): ``w_c = mean over space of dS/dA_c``."""

    def channel_weights(self, activations, gradients):
        return gradients.mean(dim=spatial_dims_of(gradients))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhay et al., 2018, eq. 19): positive gradients weighted by alpha.

    ``alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6)`` (0 where g = 0) and
    ``w_c = sum over space of alpha * ReLU(g)``.
    """

    def channel_weights(self, activations, gradients):
        dims = spatial_dims_of(gradients)
        g2 = gradients.pow(2)
        total = activations.sum(dim=dims, keepdim=True)
        alpha = g2 / (2 * g2 + total * g2 * gradients + 1e-6)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return (gradients.clamp_min(0) * alpha).sum(dim=dims)


CAM_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}


# --------------------------------------------------------------------------- saliency

def input_gradients(model: nn.Module, x: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dS_target/dx, logits, targets) for a batch, with frozen parameters."""
    with frozen(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        if targets is None:
            targets = logits.detach().argmax(dim=1)
        elif callable(targets):
            targets = targets(logits.detach())
        (grad,) = torch.autograd.grad(target_scores(logits, targets), x)
    return grad, logits.detach(), targets.cpu().long()


def saliency_from_gradients(grad: torch.Tensor) -> torch.Tensor:
    """``max over channels of |g|`` (Simonyan et al., 2014), min-max scaled per sample: (N, *spatial).

    Input gradients can be tiny (1e-8 and less), so the guard is far below
    Grad-CAM's 1e-7: the largest value always maps to 1.
    """
    return normalize_maps(grad.abs().amax(dim=1), eps=1e-30)


def vanilla_gradient(model: nn.Module, x: torch.Tensor, targets=None) -> MapBatch:
    """Gradient saliency: how much each pixel (voxel) moves the target logit."""
    grad, logits, targets = input_gradients(model, x, targets)
    return MapBatch(saliency_from_gradients(grad), logits, targets)


def smoothgrad(model: nn.Module, x: torch.Tensor, targets=None, *, samples: int = 25, noise: float = 0.15,
               generator: torch.Generator | None = None, chunk: int = 256) -> MapBatch:
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

    ``M(x) = 1/n sum_i dS/dx (x + e_i)``, ``e_i ~ N(0, sigma^2)`` with
    ``sigma = noise * (max x - min x)`` of the model's input range ([-1, 1],
    so ``sigma = 2 noise``), then the same reduction as the vanilla map.
    Targets are fixed on the clean image. ``chunk`` bounds the images per pass.
    """
    with torch.no_grad(), frozen(model):
        logits = model(x)
    if targets is None:
        targets = logits.argmax(dim=1)
    elif callable(targets):
        targets = targets(logits)
    targets = targets.cpu().long()
    sigma = noise * 2.0
    n = x.shape[0]
    total = torch.zeros_like(x)
    per_pass = max(1, chunk // max(1, n))
    done = 0
    while done < samples:
        k = min(per_pass, samples - done)
        noisy = x.repeat(k, *([1] * (x.ndim - 1)))
        noisy = noisy + sigma * torch.randn(noisy.shape, generator=generator, device=x.device, dtype=x.dtype)
        grad, _, _ = input_gradients(model, noisy, targets.repeat(k))
        total += grad.view(k, *x.shape).sum(dim=0)
        done += k
    return MapBatch(saliency_from_gradients(total / samples), logits, targets)


SALIENCY_METHODS = ("vanilla", "smoothgrad")


# --------------------------------------------------------------------------- faithfulness

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
def perturbation_curves(model: nn.Module, x: torch.Tensor, order: torch.Tensor, targets: torch.Tensor, task: str,
                        *, mode: str, canvas: torch.Tensor, steps: int = 20, chunk: int = 256) -> np.ndarray:
    """Target-class probability as pixels change in ``order``: (N, steps + 1).

    ``deletion``: step k replaces the first ``round(k P / steps)`` pixels of
    the order (all channels) with ``canvas``. ``insertion``: starts from
    ``canvas`` and puts those pixels of ``x`` back.
    """
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
            scores = scores_from_logits(task, logits)
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


def faithfulness(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, task: str,
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


# --------------------------------------------------------------------------- batches over a split

@dataclass
class Explained:
    """Maps and outputs for a set of images of a split (numpy, on the CPU)."""

    ids: np.ndarray
    maps: np.ndarray  # (N, *spatial) float32 in [0, 1]
    probabilities: np.ndarray  # (N, K)
    targets: np.ndarray  # (N,)
    labels: np.ndarray  # (N, 1) or (N, L)
    layer_maps: np.ndarray | None
    faithfulness: Faithfulness | None


def explain_split(explain_batch, model, split, ids: np.ndarray, task: str, device, *, batch_size: int = 32,
                  target="pred", steps: int | None = 20, seed: int = 0) -> Explained:
    """Run ``explain_batch(x, targets) -> MapBatch`` over ``split[ids]`` in batches.

    With ``steps``, the deletion/insertion faithfulness of the maps is measured
    too (random orders drawn from ``seed``).
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    maps, layer_maps, probs, targets, parts = [], [], [], [], []
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    for start in cli.progress(range(0, len(ids_t), batch_size), desc="explaining", unit="batch"):
        index = ids_t[start:start + batch_size]
        images, labels = gather(split, index, device)
        x = normalize(images)
        out = explain_batch(x, lambda logits, labels=labels: select_targets(target, task, logits, labels))
        maps.append(out.maps.float().cpu())
        if out.layer_maps is not None:
            layer_maps.append(out.layer_maps.float().cpu())
        probs.append(scores_from_logits(task, out.logits).float().cpu())
        targets.append(out.targets)
        if steps:
            parts.append(faithfulness(model, x, out.maps, out.targets, task, steps=steps, generator=generator,
                                      chunk=max(64, 4 * batch_size)))
    return Explained(
        ids=np.asarray(ids, dtype=np.int64), maps=torch.cat(maps).numpy(),
        probabilities=torch.cat(probs).numpy(), targets=torch.cat(targets).numpy(),
        labels=split.labels[ids_t].numpy(),
        layer_maps=torch.cat(layer_maps).numpy() if layer_maps else None,
        faithfulness=concat_faithfulness(parts) if parts else None)


def choose_ids(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """``n`` image ids of a split drawn with ``seed`` (sorted), or all of them when ``n`` is None."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=generator)[:n].sort().values.numpy()


# --------------------------------------------------------------------------- run folders and the CLI

@dataclass
class RunContext:
    """A run opened for analysis: its model (eval mode), dataset and split."""

    run: object
    model: nn.Module
    checkpoint: dict
    info: object
    split: object
    split_name: str
    device: torch.device

    @property
    def input_shape(self) -> tuple:
        return tuple(self.split.images.shape[1:])


def add_run_arguments(parser, *, batch_size: int) -> None:
    """Flags every explain subcommand shares."""
    cli.add_common_args(parser, run_arg="one")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="which split to explain (default: test)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="weights to explain (default: best)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=batch_size,
                        help=f"images per batch (default: {batch_size})")


def open_run(args) -> RunContext:
    """Resolve the run, load its model and the requested split (all checked; bad input is a UsageError)."""
    from medscope import checkpoints, data, runs

    run = runs.resolve_run(args.results_dir, args.run)
    device = cli.resolve_device(args.device)
    model, checkpoint = checkpoints.load_run_model(run, args.checkpoint, device)
    cfg = checkpoint.get("config") or run.info().get("config") or {}
    if "dataset" not in cfg:
        raise UsageError(f"{run.path}: the checkpoint does not name its dataset; is this a medscope run?")
    info = data.dataset_info(cfg["dataset"], int(cfg.get("size", 28)))
    data_dir = runs.data_dir_for(info.file_name, args.data_dir, cfg.get("data_dir"))
    split = data.load_split(info, data_dir, args.split, check_md5=not cfg.get("skip_md5"))
    return RunContext(run, model, checkpoint, info, split, args.split, device)


def save_npz(path, **arrays) -> Path:
    """np.savez_compressed, atomically (np.savez would append '.npz' to a temporary name)."""
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return Path(path)


def _prediction_and_probability(task: str, probabilities: np.ndarray):
    pred = predictions(task, probabilities)
    if task == TASK_MULTILABEL:
        return pred, probabilities
    return pred, probabilities[np.arange(len(pred)), pred]


def write_explanations(ctx: RunContext, folder: Path, stem: str, explained: Explained, *, method_label: str,
                       layer: str | None, target, max_figures: int, extra: dict | None = None) -> list[Path]:
    """Figures, ``<stem>_maps.npz``, ``<stem>_metrics.csv``, faithfulness plot and summary JSON."""
    from medscope.explain import plots as explain_plots

    info, task = ctx.info, ctx.info.task
    names = info.class_names
    pred, pred_prob = _prediction_and_probability(task, explained.probabilities)
    target_prob = explained.probabilities[np.arange(len(explained.targets)), explained.targets]
    written = []
    arrays = dict(ids=explained.ids, maps=explained.maps.astype(np.float32), targets=explained.targets,
                  target_names=np.array([names[t] for t in explained.targets]),
                  target_probability=target_prob.astype(np.float32),
                  probabilities=explained.probabilities.astype(np.float32), labels=explained.labels,
                  predictions=np.asarray(pred), class_names=np.array(names), method=np.array(method_label),
                  split=np.array(ctx.split_name))
    if explained.layer_maps is not None:
        arrays.update(layer_maps=explained.layer_maps.astype(np.float32), layer=np.array(layer))
    written.append(save_npz(folder / f"{stem}_maps.npz", **arrays))

    images = ctx.split.images[torch.as_tensor(explained.ids[:max_figures], dtype=torch.long)].numpy()
    shown = slice(0, len(images))
    titles = explain_plots.titles(explained.labels[shown], pred[shown], pred_prob[shown], explained.targets[shown],
                                  names, multilabel=task == TASK_MULTILABEL)
    is_wrong = explain_plots.wrong(explained.labels[shown], np.asarray(pred)[shown])
    heading = f"{method_label}{f' at {layer}' if layer else ''} — {ctx.run.name} ({ctx.split_name})"
    if len(images):
        if info.spatial_dims == 2:
            written += explain_plots.heatmap_pages(folder, stem, images, explained.maps[shown], titles, is_wrong,
                                                  heading)
        else:
            for i, image_id in enumerate(explained.ids[shown]):
                written.append(explain_plots.volume_figure(folder / f"{stem}_volume_{image_id:05d}.png", images[i],
                                                           explained.maps[i], f"{titles[i]}\n{heading}, id {image_id}",
                                                           is_wrong=bool(is_wrong[i])))
    summary = {"method": method_label, "layer": layer, "target": target, "split": ctx.split_name,
               "n_images": int(len(explained.ids)), "n_figures": int(len(images)), **(extra or {})}
    fa = explained.faithfulness
    if fa is not None:
        rows = [dict(row="image", id=int(i), label=label_text(explained.labels[k]), target=int(explained.targets[k]),
                     target_name=names[explained.targets[k]], target_probability=float(target_prob[k]),
                     deletion_auc=float(fa.deletion[k]), insertion_auc=float(fa.insertion[k]),
                     random_deletion_auc=float(fa.random_deletion[k]),
                     random_insertion_auc=float(fa.random_insertion[k]))
                for k, i in enumerate(explained.ids)]
        for stat, fn in (("mean", np.mean), ("std", np.std)):
            rows.append(dict(row=stat, deletion_auc=float(fn(fa.deletion)), insertion_auc=float(fn(fa.insertion)),
                             random_deletion_auc=float(fn(fa.random_deletion)),
                             random_insertion_auc=float(fn(fa.random_insertion)),
                             target_probability=float(fn(target_prob))))
        columns = ["row", "id", "label", "target", "target_name", "target_probability", "deletion_auc",
                   "insertion_auc", "random_deletion_auc", "random_insertion_auc"]
        written.append(atomic.write_csv(folder / f"{stem}_metrics.csv", rows, columns))
        written.append(explain_plots.faithfulness_curves(folder / f"{stem}_faithfulness.png", fa, heading))
        summary["faithfulness"] = {
            "steps": int(len(fa.fractions) - 1),
            "deletion_baseline": "deleted pixels set to 0 in the model's input range (mid-grey)",
            "insertion_canvas": "the image blurred with a Gaussian, sigma = smallest side / 10",
            "deletion_auc": float(fa.deletion.mean()), "random_deletion_auc": float(fa.random_deletion.mean()),
            "insertion_auc": float(fa.insertion.mean()), "random_insertion_auc": float(fa.random_insertion.mean()),
            "fraction_deletion_below_random": float((fa.deletion < fa.random_deletion).mean()),
            "fraction_insertion_above_random": float((fa.insertion > fa.random_insertion).mean()),
        }
    written.append(atomic.write_json(folder / f"{stem}_summary.json", summary))
    _drop_stale_outputs(ctx.run, folder, stem, keep={Path(p).name for p in written})
    return written


def _drop_stale_outputs(run, folder: Path, stem: str, keep: set[str]) -> None:
    """Remove files an earlier call wrote under the same stem but this one did not (and their records).

    Otherwise a page, volume figure or metrics file of other images would sit
    beside the new maps as if it belonged to them.
    """
    pattern = re.compile(rf"^{re.escape(stem)}_(page\d+\.png|volume_\d+\.png|metrics\.csv|faithfulness\.png)$")
    run.remove_artifacts(p for p in folder.glob(f"{stem}_*") if pattern.match(p.name) and p.name not in keep)


def _common_checks(args, ctx: RunContext):
    target = parse_target(args.target, ctx.info.class_names)
    ids = choose_ids(len(ctx.split), None if args.all else args.n, args.seed)
    return target, ids


def _report_written(ctx: RunContext, folder: Path, written: list[Path]) -> None:
    ctx.run.add_artifacts([Path(p).resolve() for p in written], created_by="explain.py")
    print(f"wrote {len(written)} files to {folder}")


def _add_selection_arguments(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--n", type=cli.positive_int, default=16, help="images to explain (default: 16)")
    group.add_argument("--all", action="store_true", help="explain the whole split")
    parser.add_argument("--target", default="pred",
                        help="class to explain: pred (default), true, or a class index or name")
    parser.add_argument("--steps", type=cli.non_negative_int, default=20,
                        help="steps of the deletion/insertion curves; 0 skips the faithfulness metrics (default: 20)")
    parser.add_argument("--max-figures", type=int, default=64, metavar="N",
                        help="draw figures for at most N images (maps and metrics cover all; default: 64)")


def add_gradcam_arguments(parser) -> None:
    add_run_arguments(parser, batch_size=32)
    _add_selection_arguments(parser)
    parser.add_argument("--method", choices=tuple(CAM_METHODS), default="gradcam",
                        help="gradcam (default) or gradcam++")
    parser.add_argument("--layer", default=None, metavar="NAME",
                        help="layer to explain (default: the last block whose output is larger than 1 pixel)")


def run_gradcam(args) -> int:
    ctx = open_run(args)
    target, ids = _common_checks(args, ctx)
    layer = resolve_layer(ctx.model, args.layer, ctx.input_shape, ctx.device)
    cam_class = CAM_METHODS[args.method]
    print(f"{args.method} of {len(ids)} {ctx.split_name} images of {ctx.run.name} at {layer} "
          f"(target: {target}) on {ctx.device}")

    with cam_class(ctx.model, layer) as cam:
        explained = explain_split(cam, ctx.model, ctx.split, ids, ctx.info.task, ctx.device,
                                  batch_size=args.batch_size, target=target, steps=args.steps, seed=args.seed)
    folder = ctx.run.layout.gradcam_dir
    stem = "gradcam" if args.method == "gradcam" else "gradcampp"
    label = "Grad-CAM" if args.method == "gradcam" else "Grad-CAM++"
    written = write_explanations(ctx, folder, stem, explained, method_label=label, layer=layer, target=target,
                                 max_figures=max(0, args.max_figures))
    _print_faithfulness(label, explained.faithfulness)
    _report_written(ctx, folder, written)
    return 0


def add_saliency_arguments(parser) -> None:
    add_run_arguments(parser, batch_size=32)
    _add_selection_arguments(parser)
    parser.add_argument("--method", choices=SALIENCY_METHODS + ("both",), default="both",
                        help="vanilla, smoothgrad or both (default)")
    parser.add_argument("--samples", type=cli.positive_int, default=25, help="SmoothGrad noisy copies (default: 25)")
    parser.add_argument("--noise", type=cli.non_negative_float, default=0.15,
                        help="SmoothGrad noise level: sigma as a fraction of the input range (default: 0.15)")


def run_saliency(args) -> int:
    ctx = open_run(args)
    target, ids = _common_checks(args, ctx)
    methods = SALIENCY_METHODS if args.method == "both" else (args.method,)
    folder = ctx.run.layout.saliency_dir
    written = []
    for method in methods:
        if method == "vanilla":
            explain_batch, label = (lambda x, t: vanilla_gradient(ctx.model, x, t)), "vanilla gradient"
            extra = {}
        else:
            generator = torch.Generator(device=ctx.device).manual_seed(args.seed)
            explain_batch = (lambda x, t: smoothgrad(ctx.model, x, t, samples=args.samples, noise=args.noise,
                                                     generator=generator, chunk=2 * args.batch_size))
            label = f"SmoothGrad (n={args.samples}, noise={args.noise:g})"
            extra = {"samples": args.samples, "noise": args.noise, "sigma": 2.0 * args.noise}
        print(f"{label} of {len(ids)} {ctx.split_name} images of {ctx.run.name} (target: {target}) on {ctx.device}")
        explained = explain_split(explain_batch, ctx.model, ctx.split, ids, ctx.info.task, ctx.device,
                                  batch_size=args.batch_size, target=target, steps=args.steps, seed=args.seed)
        written += write_explanations(ctx, folder, f"saliency_{method}", explained, method_label=label, layer=None,
                                      target=target, max_figures=max(0, args.max_figures), extra=extra)
        _print_faithfulness(label, explained.faithfulness)
    _report_written(ctx, folder, written)
    return 0


def _print_faithfulness(label: str, fa: Faithfulness | None) -> None:
    if fa is None:
        return
    print(f"{label}: deletion AUC {fa.deletion.mean():.3f} (random order {fa.random_deletion.mean():.3f}, "
          f"lower is better); insertion AUC {fa.insertion.mean():.3f} "
          f"(random order {fa.random_insertion.mean():.3f}, higher is better)")
