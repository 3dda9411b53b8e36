"""Batch augmentation as tensor ops on the training device.

Every transform acts on a whole normalized batch ``(B, C, *spatial)`` at once:
one ``affine_grid``/``grid_sample`` call per batch instead of per-image PIL
work. Randomness comes from an explicit ``torch.Generator`` so a resumed run
sees the same augmentations as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LEVELS = ("none", "light", "strong")

# Flips that keep an image plausible for its dataset, as spatial axes counted
# from the end ("h" = left-right, "v" = up-down, "d" = depth). Anatomy with a
# side (chest X-rays, abdominal CT, adrenal glands, ribs) is never mirrored:
# a mirrored chest has its heart on the wrong side.
SAFE_FLIPS = {
    "pathmnist": "hv", "dermamnist": "hv", "bloodmnist": "hv", "tissuemnist": "hv",
    "breastmnist": "h", "retinamnist": "h", "octmnist": "h",
    "chestmnist": "", "pneumoniamnist": "",
    "organamnist": "", "organcmnist": "", "organsmnist": "",
    "organmnist3d": "", "adrenalmnist3d": "", "fracturemnist3d": "",
    "nodulemnist3d": "hvd", "vesselmnist3d": "hvd", "synapsemnist3d": "hvd",
}
_AXIS = {"h": -1, "v": -2, "d": -3}


@dataclass(frozen=True)
class AugmentConfig:
    flips: str
    rotate_deg: float = 0.0  # 2D only
    translate: float = 0.0  # fraction of the side
    scale: float = 0.0  # 2D only: zoom in [1 - scale, 1 + scale]
    brightness: float = 0.0  # additive, in normalized units ([-1, 1] range)
    contrast: float = 0.0  # multiplicative around the image mean

    @property
    def active(self) -> bool:
        return bool(self.flips or self.rotate_deg or self.translate or self.scale or self.brightness or self.contrast)


def make_config(flag: str, level: str, spatial_dims: int) -> AugmentConfig:
    if level not in LEVELS:
        raise ValueError(f"augment level {level!r} not in {LEVELS}")
    flips = SAFE_FLIPS.get(flag, "")
    if spatial_dims == 2:
        flips = flips.replace("d", "")
    if level == "none":
        return AugmentConfig(flips="")
    if spatial_dims == 3:
        if level == "light":
            return AugmentConfig(flips=flips, translate=0.07)
        return AugmentConfig(flips=flips, translate=0.12, brightness=0.1, contrast=0.1)
    if level == "light":
        return AugmentConfig(flips=flips, rotate_deg=10, translate=0.07, scale=0.05, brightness=0.1, contrast=0.1)
    return AugmentConfig(flips=flips, rotate_deg=15, translate=0.12, scale=0.1, brightness=0.2, contrast=0.2)


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device="cpu").mul_(high - low).add_(low).to(device)


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Apply random flips, affine moves and intensity jitter to a normalized batch."""
    if not config.active:
        return x
    b, device = x.shape[0], x.device
    spatial = x.ndim - 2
    for axis_name in config.flips:
        mask = torch.rand(b, generator=generator) < 0.5
        if mask.any():
            mask = mask.to(device)
            flipped = x.flip(_AXIS[axis_name])
            x = torch.where(mask.view(b, *([1] * (x.ndim - 1))), flipped, x)
    if config.rotate_deg or config.translate or config.scale:
        theta = torch.zeros(b, spatial, spatial + 1)
        theta[:, range(spatial), range(spatial)] = 1.0
        if spatial == 2 and (config.rotate_deg or config.scale):
            angle = _uniform(b, -config.rotate_deg, config.rotate_deg, generator, "cpu") * (math.pi / 180)
            zoom = _uniform(b, 1 - config.scale, 1 + config.scale, generator, "cpu")
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        if config.translate:
            # affine_grid works in [-1, 1] coordinates: a shift of t * side is 2 t
            shift = _uniform(b * spatial, -2 * config.translate, 2 * config.translate, generator, "cpu")
            theta[:, :, spatial] = shift.view(b, spatial)
        grid = F.affine_grid(theta.to(device=device, dtype=x.dtype), list(x.shape), align_corners=False)
        # shift into [0, 2] so zero padding is the black background (-1 after shifting back)
        x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    if config.brightness or config.contrast:
        view = (b,) + (1,) * (x.ndim - 1)
        gain = _uniform(b, 1 - config.contrast, 1 + config.contrast, generator, device).view(view).to(x.dtype)
        offset = _uniform(b, -config.brightness, config.brightness, generator, device).view(view).to(x.dtype)
        mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        x = ((x - mean) * gain + mean + offset).clamp_(-1, 1)
    return x


def tta_views(x: torch.Tensor, flag: str):
    """Test-time views: the image and each anatomically safe flip of it."""
    yield x
    for axis_name in SAFE_FLIPS.get(flag, ""):
        if x.ndim - 2 >= -_AXIS[axis_name]:
            yield x.flip(_AXIS[axis_name])
