"""Where a model looks: Grad-CAM and Grad-CAM++, and what every map of :mod:`medscope.explain` shares.

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

Gradient saliency is in :mod:`medscope.explain.saliency`, the deletion and
insertion faithfulness of a map in :mod:`medscope.explain.faithfulness`, and
maps over a whole split in :mod:`medscope.explain.maps`.
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medscope.errors import UsageError
from medscope.tasks import Task
from medscope.tasks import task as as_task

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


def select_targets(target, task: str | Task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The class each map explains, per sample.

    ``pred``: the predicted class (multi-label: the highest-scoring label).
    ``true``: the true class (multi-label: the highest-scoring positive label,
    or the highest-scoring label when none is positive). An int: that class.

    >>> select_targets("pred", "binary-class", torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[1], [1]]))
    tensor([0, 1])
    """
    task = as_task(task)
    n = logits.shape[0]
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long)
    logits = logits.detach().float().cpu()
    if task.is_multilabel:  # one map per sample: a single label has to be chosen
        if target == "pred":
            return logits.argmax(dim=1)
        positive = labels.cpu() > 0.5
        masked = torch.where(positive, logits, torch.full_like(logits, -math.inf))
        return torch.where(positive.any(dim=1), masked.argmax(dim=1), logits.argmax(dim=1))
    if target == "pred":
        return torch.from_numpy(np.asarray(task.predictions(task.scores(logits).numpy()), dtype=np.int64))
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


MIN_MAP_SIDE = 7  # pixels (voxels) per axis: chosen on 2D runs, checked on a held-out 3D one (BENCHMARKS_explain.md)


def auto_layer(model: nn.Module, input_shape, device="cpu") -> str:
    """The deepest block whose output is at least :data:`MIN_MAP_SIDE` pixels (voxels) along every axis.

    Deeper blocks carry more class-specific features but say less about
    where: a 2x2x2 map of a 28^3 volume can only point at a corner (on a
    trained 3D ResNet-18, 61% of its peaks lay on a corner, and deleting in its
    order removed the signal more slowly than a random order). At 7 a side
    the maps beat the random order on both counts; see
    docs/BENCHMARKS_explain.md for the study and the data that chose it.
    Inputs too small for any such block fall back to the deepest block
    larger than one pixel.
    """
    spatial_ndim = len(input_shape) - 1
    chosen = fallback = None
    for name, shape in probe_blocks(model, input_shape, device=device):
        if shape is None or len(shape) != 2 + spatial_ndim:
            continue
        if min(shape[2:]) >= MIN_MAP_SIDE:
            chosen = name
        if math.prod(shape[2:]) > 1:
            fallback = name
    if chosen is None and fallback is None:
        raise UsageError(f"no block of this model keeps a spatial output for inputs of shape {tuple(input_shape)}")
    return chosen or fallback


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
