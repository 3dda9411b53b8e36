"""Realistic image perturbations at five severities, as batched tensor ops.

Every perturbation lives in one table, :data:`PERTURBATIONS`: a name, the
modalities it applies to (``"2d"``, ``"3d"``), a batched function and the
parameter of each of the five severities. Severity 0 is the clean image.

The functions act on images as the data pipeline stores them: uint8
``(N, C, H, W)`` or ``(N, C, D, H, W)`` with values in [0, 255]; a floating
point batch is read as values in [0, 1]. Each returns a tensor of the same
shape, dtype and device (uint8 results are rounded to the nearest level and
clipped to [0, 255]). Every function is the identity at its neutral parameter
(noise 0, blur 0, contrast 1, ...).

Parameters are written for 28 px images. Spatial ones (blur sigma, motion
length) grow with the image, ``p * side / 28`` where ``side`` is the smallest
spatial size, so a severity means the same visible damage at 28, 64 or 224 px;
the others (noise, intensity, pixelation factor, JPEG quality) do not depend
on the size.

Randomness (noise, motion direction or axis) comes from a CPU
``torch.Generator`` seeded by :func:`seed_for` from the user's seed, the
perturbation's name and the severity (``zlib.crc32``, stable across runs and
machines, unlike Python's ``hash``), and is drawn on the CPU, so a seed gives
the same images on every device.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from medscope.errors import UsageError
from medscope.explain.faithfulness import gaussian_blur as _separable_gaussian_blur

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIDE = 28  # the parameters in the table are for 28 px images


# --------------------------------------------------------------------------- dtype helpers

def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; floating input is taken as [0, 1] already (as float32)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def from_unit(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> the dtype of ``like``: clipped, and rounded to the nearest level for uint8."""
    y = y.clamp(0.0, 1.0)
    if like.dtype == torch.uint8:
        return y.mul_(255.0).round_().to(torch.uint8)
    return y.to(like.dtype)


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)


# --------------------------------------------------------------------------- noise

def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise: ``y = clip(x + sigma * n)``, ``n ~ N(0, 1)`` per pixel (voxel) and channel.

    ``sigma`` is a fraction of the intensity range (0.1 = 25.5 grey levels).

    >>> x = torch.full((2, 1, 4, 4), 128, dtype=torch.uint8)
    >>> y = gaussian_noise(x, 0.1, torch.Generator().manual_seed(0))
    >>> y.dtype, tuple(y.shape), bool((y != x).any()), torch.equal(gaussian_noise(x, 0.0, None), x)
    (torch.uint8, (2, 1, 4, 4), True, True)
    """
    if sigma == 0:
        return x.clone()
    u = to_unit(x)
    return from_unit(u + sigma * _randn_like(u, generator), x)


def speckle_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative (speckle) noise, as in ultrasound: ``y = clip(x + x * sigma * n)``, ``n ~ N(0, 1)``.

    Dark pixels stay dark; bright ones scatter the most.

    >>> x = torch.tensor([[[[0, 200]]]], dtype=torch.uint8)
    >>> y = speckle_noise(x, 0.5, torch.Generator().manual_seed(1))
    >>> int(y[0, 0, 0, 0]), int(y[0, 0, 0, 1]) != 200
    (0, True)
    """
    if sigma == 0:
        return x.clone()
    u = to_unit(x)
    return from_unit(u + u * sigma * _randn_like(u, generator), x)


# --------------------------------------------------------------------------- blur

def gaussian_blur(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels over every spatial axis (2D or 3D), edges replicated.

    The kernel is truncated at ``ceil(3 sigma)``; it is
    :func:`medscope.explain.faithfulness.gaussian_blur`, applied in [0, 1].

    >>> x = torch.zeros(1, 1, 7, 7, dtype=torch.uint8); x[0, 0, 3, 3] = 255
    >>> gaussian_blur(x, 1.0)[0, 0, 3, 2:5].tolist()
    [25, 41, 25]
    """
    if sigma == 0:
        return x.clone()
    return from_unit(_separable_gaussian_blur(to_unit(x), float(sigma)), x)


def line_kernels(angles: torch.Tensor, length: float) -> torch.Tensor:
    """(N, k, k) anti-aliased line kernels of ``length`` pixels at ``angles`` (radians), each summing to 1.

    A cell's weight is ``max(0, 1 - d)`` where ``d`` is the distance from its
    centre to the segment ``[-L/2, L/2] * (cos a, sin a)``; ``k = 2 ceil(L/2) + 1``.
    Length 0 is the single-pixel (identity) kernel.

    >>> line_kernels(torch.tensor([0.0]), 2.0)[0].tolist()
    [[0.0, 0.0, 0.0], [0.3333333432674408, 0.3333333432674408, 0.3333333432674408], [0.0, 0.0, 0.0]]
    """
    radius = int(math.ceil(length / 2))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    rows, cols = torch.meshgrid(t, t, indexing="ij")  # rows: y (down), cols: x (right)
    ux, uy = torch.cos(angles).view(-1, 1, 1), torch.sin(angles).view(-1, 1, 1)
    along = (cols * ux + rows * uy).clamp(-length / 2, length / 2)
    distance = torch.sqrt((cols - along * ux) ** 2 + (rows - along * uy) ** 2)
    weights = (1.0 - distance).clamp_min(0.0)
    return weights / weights.sum(dim=(1, 2), keepdim=True)


def box_kernel(length: float) -> torch.Tensor:
    """1D kernel of a motion over ``length`` pixels: a box of width ``L + 1`` with fractional end cells.

    >>> box_kernel(0.0).tolist(), box_kernel(1.0).tolist()
    ([1.0], [0.25, 0.5, 0.25])
    """
    radius = int(math.ceil(length / 2))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    half = (length + 1) / 2
    weights = (torch.minimum(t + 0.5, torch.tensor(half)) - torch.maximum(t - 0.5, torch.tensor(-half))).clamp_min(0)
    return weights / weights.sum()


def motion_blur(x: torch.Tensor, length: float, generator: torch.Generator) -> torch.Tensor:
    """Linear motion blur over ``length`` pixels in a random direction per image (per volume).

    2D: the image is convolved with a :func:`line_kernels` kernel at an angle
    drawn uniformly in [0, pi) for each image (one grouped convolution for the
    whole batch). 3D: each volume is blurred along one axis (depth, height or
    width, drawn per volume) with a :func:`box_kernel`. Edges replicated.

    >>> x = torch.zeros(3, 1, 9, 9, dtype=torch.uint8); x[:, :, 4, 4] = 255
    >>> y = motion_blur(x, 4.0, torch.Generator().manual_seed(0))
    >>> tuple(y.shape), y.dtype, bool((y[:, 0, 4, 4] < 255).all())
    ((3, 1, 9, 9), torch.uint8, True)
    """
    if length == 0:
        return x.clone()
    u = to_unit(x)
    n, c, *spatial = u.shape
    if len(spatial) == 2:
        angles = torch.rand(n, generator=generator) * math.pi
        kernels = line_kernels(angles, float(length)).to(u.device)
        radius = kernels.shape[-1] // 2
        padded = F.pad(u.reshape(1, n * c, *spatial), [radius] * 4, mode="replicate")
        weight = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # (N*C, 1, k, k), image-major like the input
        out = F.conv2d(padded, weight, groups=n * c).reshape(u.shape)
        return from_unit(out, x)
    axes = torch.randint(0, 3, (n,), generator=generator)
    kernel = box_kernel(float(length)).to(u.device)
    radius = kernel.numel() // 2
    out = u.clone()
    for axis in range(3):
        chosen = torch.nonzero(axes == axis).flatten().to(u.device)
        if not len(chosen):
            continue
        part = u.index_select(0, chosen)
        m = part.shape[0]
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * 3
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius  # F.pad lists the last dimension first
        blurred = F.conv3d(F.pad(part.reshape(m * c, 1, *spatial), pad, mode="replicate"), kernel.view(shape))
        out.index_copy_(0, chosen, blurred.reshape(part.shape))
    return from_unit(out, x)


# --------------------------------------------------------------------------- intensity

def _image_mean(u: torch.Tensor) -> torch.Tensor:
    return u.mean(dim=tuple(range(1, u.ndim)), keepdim=True)


def contrast(x: torch.Tensor, factor: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Contrast scaled around each image's mean: ``y = clip((x - mean) * factor + mean)``.

    ``factor < 1`` flattens the image towards its mean grey, ``> 1`` stretches it.

    >>> contrast(torch.tensor([[[[100, 200]]]], dtype=torch.uint8), 0.5).tolist()
    [[[[125, 175]]]]
    """
    if factor == 1:
        return x.clone()
    u = to_unit(x)
    mean = _image_mean(u)
    return from_unit((u - mean) * factor + mean, x)


def brightness(x: torch.Tensor, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness shift: ``y = clip(x + shift)``, ``shift`` a fraction of the range (negative darkens).

    >>> brightness(torch.tensor([[[[10, 250]]]], dtype=torch.uint8), 0.1).tolist()
    [[[[36, 255]]]]
    """
    if shift == 0:
        return x.clone()
    return from_unit(to_unit(x) + shift, x)


def gamma(x: torch.Tensor, exponent: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma curve on [0, 1]: ``y = x ** exponent`` (> 1 darkens the mid-tones; black and white stay).

    >>> gamma(torch.tensor([[[[0, 64, 255]]]], dtype=torch.uint8), 2.0).tolist()
    [[[[0, 16, 255]]]]
    """
    if exponent == 1:
        return x.clone()
    return from_unit(to_unit(x).pow(exponent), x)


# --------------------------------------------------------------------------- resolution and compression

def pixelate(x: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixelation: area-average down to ``round(fraction * side)`` pixels per side, then nearest-neighbour up.

    >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) * 10
    >>> pixelate(x, 0.5)[0, 0].tolist()
    [[25, 25, 45, 45], [25, 25, 45, 45], [105, 105, 125, 125], [105, 105, 125, 125]]
    """
    if fraction >= 1:
        return x.clone()
    u = to_unit(x)
    small = [max(1, int(round(fraction * s))) for s in u.shape[2:]]
    down = F.adaptive_avg_pool2d(u, small) if u.ndim == 4 else F.adaptive_avg_pool3d(u, small)
    return from_unit(F.interpolate(down, size=tuple(u.shape[2:]), mode="nearest"), x)


# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), quality 50.
JPEG_LUMINANCE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
JPEG_CHROMINANCE = torch.tensor([
    [17, 18, 24, 47, 99, 99, 99, 99], [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99], [47, 66, 99, 99, 99, 99, 99, 99]] + [[99] * 8] * 4, dtype=torch.float32)


def quantization_table(quality: float, base: torch.Tensor = JPEG_LUMINANCE) -> torch.Tensor:
    """The IJG (libjpeg, PIL) scaling of a base table to ``quality`` in [1, 100].

    ``s = 5000 / q`` for ``q < 50``, else ``200 - 2 q``; ``Q = clip(floor((base * s + 50) / 100), 1, 255)``.

    >>> quantization_table(50)[0, :4].tolist(), quantization_table(100)[7, 7].item()
    ([16.0, 11.0, 10.0, 16.0], 1.0)
    """
    q = min(100.0, max(1.0, float(quality)))
    scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
    return torch.floor((base * scale + 50.0) / 100.0).clamp(1.0, 255.0)


def dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D[k, i] = a_k cos(pi (2 i + 1) k / 2n)``; ``D @ B @ D.T`` is JPEG's 2D DCT.

    >>> d = dct_matrix(); bool(torch.allclose(d @ d.T, torch.eye(8), atol=1e-6))
    True
    """
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def _jpeg_planes(planes: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Quantize (N, C, H, W) planes in [0, 255] blockwise: ``round(DCT(B - 128) / Q) * Q``, then back."""
    n, c, h, w = planes.shape
    ph, pw = (-h) % 8, (-w) % 8
    padded = F.pad(planes, [0, pw, 0, ph], mode="replicate") if ph or pw else planes
    hb, wb = (h + ph) // 8, (w + pw) // 8
    blocks = padded.reshape(n, c, hb, 8, wb, 8).permute(0, 1, 2, 4, 3, 5) - 128.0  # (N, C, hb, wb, 8, 8)
    d = dct_matrix().to(planes.device)
    coefficients = d @ blocks @ d.T
    q = tables.to(planes.device).view(1, c, 1, 1, 8, 8)
    restored = d.T @ (torch.round(coefficients / q) * q) @ d + 128.0
    out = restored.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hb * 8, wb * 8)
    return out[:, :, :h, :w]


def jpeg(x: torch.Tensor, quality: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG compression at ``quality`` (1-100), batched in torch: DCT quantization of 8x8 blocks.

    Baseline JPEG's lossy step, for the whole batch at once: each 8x8 block of
    ``x - 128`` (in [0, 255]) is transformed with the 2D DCT-II, divided by the
    quantization table of :func:`quantization_table` (standard luminance
    table; for RGB images the luminance and chrominance planes of JFIF YCbCr
    get the luminance and chrominance tables), rounded, multiplied back and
    inverse-transformed. Sides that are not multiples of 8 are padded by
    replicating the edge, as encoders do. Not modelled: chroma subsampling
    (colour is kept at full resolution, as with 4:4:4) and the entropy coding
    (lossless). Results are within about a grey level of PIL's encoder at the
    same quality (libjpeg's integer DCT rounds differently); see the tests.
    Quality 100 (every table entry 1) is nearly lossless; ``None`` is no compression.

    >>> x = (torch.arange(64, dtype=torch.uint8) * 4).view(1, 1, 8, 8)
    >>> y = jpeg(x, 10)
    >>> y.dtype, bool((y != x).any()), int((jpeg(x, 100).int() - x.int()).abs().max()) <= 1
    (torch.uint8, True, True)
    """
    if quality is None:
        return x.clone()
    if x.ndim != 4:
        raise ValueError("JPEG compression applies to 2D images (N, C, H, W)")
    planes = to_unit(x) * 255.0
    luminance, chrominance = quantization_table(quality), quantization_table(quality, JPEG_CHROMINANCE)
    if planes.shape[1] == 3:
        r, g, b = planes.unbind(1)
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
        ycc = _jpeg_planes(torch.stack([y, cb, cr], 1), torch.stack([luminance, chrominance, chrominance]))
        y, cb, cr = ycc.unbind(1)
        out = torch.stack([y + 1.402 * (cr - 128.0), y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0),
                           y + 1.772 * (cb - 128.0)], 1)
    else:
        out = _jpeg_planes(planes, luminance.expand(planes.shape[1], 8, 8))
    return from_unit(out / 255.0, x)


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Perturbation:
    """One perturbation: how to apply it and its parameter at each severity.

    ``levels[s - 1]`` is the parameter of severity ``s`` for 28 px images;
    ``neutral`` is the parameter that leaves an image unchanged (severity 0).
    With ``scales_with_size`` the parameter is multiplied by ``side / 28``.
    """

    name: str
    description: str
    fn: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
    levels: tuple[float, float, float, float, float]
    neutral: float | None  # None: no such value (JPEG without compression)
    unit: str
    modalities: frozenset = frozenset({"2d", "3d"})
    scales_with_size: bool = False

    def parameter(self, severity: int, side: int = REFERENCE_SIDE) -> float | None:
        """The parameter at ``severity`` (0-5) for images whose smallest side is ``side`` pixels.

        >>> PERTURBATIONS["gaussian_blur"].parameter(2, side=56), PERTURBATIONS["gamma"].parameter(0)
        (1.5, 1.0)
        """
        check_severity(severity, allow_zero=True)
        if severity == 0:
            return None if self.neutral is None else float(self.neutral)
        value = float(self.levels[severity - 1])
        return value * side / REFERENCE_SIDE if self.scales_with_size else value

    def applies_to(self, spatial_dims: int) -> bool:
        return f"{spatial_dims}d" in self.modalities

    def __call__(self, x: torch.Tensor, severity: int, seed: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` at ``severity``; random draws from ``generator`` or, if None, one seeded by :func:`seed_for`."""
        spatial_dims = x.ndim - 2
        if not self.applies_to(spatial_dims):
            raise UsageError(f"perturbation {self.name!r} applies to {'/'.join(sorted(self.modalities))} images, "
                             f"not {spatial_dims}D")
        if severity == 0:
            check_severity(severity, allow_zero=True)
            return x.clone()
        if generator is None:
            generator = make_generator(seed, self.name, severity)
        return self.fn(x, self.parameter(severity, min(x.shape[2:])), generator)


_2D = frozenset({"2d"})
_BOTH = frozenset({"2d", "3d"})

PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("gaussian_noise", "additive Gaussian noise", gaussian_noise, (0.04, 0.08, 0.12, 0.18, 0.26), 0.0,
                 "sigma, fraction of the intensity range", _BOTH),
    Perturbation("speckle_noise", "multiplicative speckle noise", speckle_noise, (0.1, 0.2, 0.35, 0.5, 0.7), 0.0,
                 "sigma of the multiplicative noise", _2D),
    Perturbation("gaussian_blur", "Gaussian blur", gaussian_blur, (0.5, 0.75, 1.0, 1.5, 2.0), 0.0,
                 "sigma in pixels at 28 px", _BOTH, scales_with_size=True),
    Perturbation("motion_blur", "motion blur", motion_blur, (1.5, 2.5, 3.5, 5.0, 7.0), 0.0,
                 "motion length in pixels at 28 px (2D: random direction; 3D: along a random axis)", _BOTH,
                 scales_with_size=True),
    Perturbation("contrast_down", "lower contrast", contrast, (0.8, 0.65, 0.5, 0.35, 0.2), 1.0,
                 "factor around the image mean", _BOTH),
    Perturbation("contrast_up", "higher contrast", contrast, (1.25, 1.5, 1.8, 2.2, 2.7), 1.0,
                 "factor around the image mean", _BOTH),
    Perturbation("brightness_down", "darker", brightness, (-0.05, -0.1, -0.15, -0.22, -0.3), 0.0,
                 "shift, fraction of the intensity range", _BOTH),
    Perturbation("brightness_up", "brighter", brightness, (0.05, 0.1, 0.15, 0.22, 0.3), 0.0,
                 "shift, fraction of the intensity range", _BOTH),
    Perturbation("gamma", "gamma curve (darker mid-tones)", gamma, (1.2, 1.45, 1.75, 2.1, 2.5), 1.0,
                 "exponent", _BOTH),
    Perturbation("pixelate", "pixelation", pixelate, (0.72, 0.54, 0.4, 0.29, 0.22), 1.0,
                 "fraction of the side kept (28 px: 20, 15, 11, 8, 6 px) before nearest upsampling", _2D),
    Perturbation("jpeg", "JPEG compression", jpeg, (80, 50, 30, 15, 8), None, "quality (1-100)", _2D),
)}


def check_severity(severity: int, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not isinstance(severity, (int, np.integer)) or not low <= severity <= SEVERITIES[-1]:
        raise UsageError(f"severity {severity!r} is out of range; choose from {low} to {SEVERITIES[-1]}")
    return int(severity)


def available(spatial_dims: int) -> list[str]:
    """Names of the perturbations that apply to 2D (``spatial_dims = 2``) or 3D images, in table order."""
    return [name for name, p in PERTURBATIONS.items() if p.applies_to(spatial_dims)]


def select(names, spatial_dims: int) -> list[Perturbation]:
    """The perturbations named (all that apply when ``names`` is None), checked against the image kind."""
    valid = available(spatial_dims)
    if not names:
        return [PERTURBATIONS[n] for n in valid]
    chosen = []
    for name in names:
        key = str(name).strip().lower().replace("-", "_")
        if key not in PERTURBATIONS:
            raise UsageError(f"unknown perturbation {name!r}; for {spatial_dims}D images choose from: "
                             f"{', '.join(valid)}")
        if key not in valid:
            raise UsageError(f"perturbation {key!r} applies to 2D images only; for {spatial_dims}D images choose "
                             f"from: {', '.join(valid)}")
        if PERTURBATIONS[key] not in chosen:
            chosen.append(PERTURBATIONS[key])
    return chosen


def seed_for(seed: int, name: str, severity: int) -> int:
    """A generator seed from the user's seed, the perturbation and the severity (the same on every run).

    >>> seed_for(0, "gaussian_noise", 3) == seed_for(0, "gaussian_noise", 3) != seed_for(1, "gaussian_noise", 3)
    True
    """
    return (int(seed) * 1_000_003 + zlib.crc32(f"{name}/{int(severity)}".encode())) % (2 ** 63)


def make_generator(seed: int, name: str, severity: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, name, severity))
