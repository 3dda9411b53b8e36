"""Gradient saliency: how much each pixel (voxel) moves the explained class's logit.

The vanilla gradient (Simonyan et al., 2014) and SmoothGrad (Smilkov et al.,
2017), on batches of 2D images ``(N, C, H, W)`` or 3D volumes
``(N, C, D, H, W)``, with the parameters frozen (only the input gets a
gradient). Each returns a :class:`medscope.explain.cam.MapBatch`, like the
class activation maps of :mod:`medscope.explain.cam`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from medscope.explain.cam import MapBatch, frozen, normalize_maps, target_scores


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
