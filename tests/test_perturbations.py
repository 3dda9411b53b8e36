"""medscope.explain.perturbations: every perturbation keeps shape and dtype, is the identity at severity 0, moves further
from the clean image as severity grows, is reproducible from a seed, and equals a reference computed another way."""
from __future__ import annotations

import doctest
import io
import math
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from medscope import data
from medscope.errors import UsageError
from medscope.explain import faithfulness
from medscope.explain import perturbations as pt

NAMES_2D = ["gaussian_noise", "speckle_noise", "gaussian_blur", "motion_blur", "contrast_down", "contrast_up",
            "brightness_down", "brightness_up", "gamma", "pixelate", "jpeg"]
NAMES_3D = ["gaussian_noise", "gaussian_blur", "motion_blur", "contrast_down", "contrast_up", "brightness_down",
            "brightness_up", "gamma"]
RANDOM = {"gaussian_noise", "speckle_noise", "motion_blur"}


@pytest.fixture(scope="module")
def images_2d(medmnist_dir):
    """32 real breastmnist test images, uint8 (32, 1, 28, 28)."""
    split = data.load_split(data.dataset_info("breastmnist"), medmnist_dir, "test")
    return split.images[:32].clone()


@pytest.fixture(scope="module")
def volumes_3d():
    """6 textured 28^3 volumes with mid-range intensities (the real adrenalmnist3d volumes are 0/255 masks,
    which gamma and stronger contrast leave unchanged, so they cannot show a monotone distance)."""
    generator = torch.Generator().manual_seed(0)
    smooth = faithfulness.gaussian_blur(torch.rand(6, 1, 28, 28, 28, generator=generator), 1.5)
    smooth = (smooth - smooth.mean()) / smooth.std()
    return (128 + 40 * smooth).clamp(0, 255).round().to(torch.uint8)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def test_the_table_holds_every_perturbation_with_five_severities_each():
    assert pt.available(2) == NAMES_2D
    assert pt.available(3) == NAMES_3D
    for p in pt.PERTURBATIONS.values():
        assert len(p.levels) == 5 and p.unit and p.description
        assert p.parameter(0) == p.neutral


def test_spatial_parameters_scale_with_the_image_and_the_others_do_not():
    blur, noise, motion = (pt.PERTURBATIONS[n] for n in ("gaussian_blur", "gaussian_noise", "motion_blur"))
    assert blur.parameter(3, side=28) == 1.0 and blur.parameter(3, side=64) == pytest.approx(64 / 28)
    assert motion.parameter(5, side=224) == pytest.approx(7.0 * 8)
    assert noise.parameter(4, side=28) == noise.parameter(4, side=224) == 0.18


@pytest.mark.parametrize("name", NAMES_2D)
def test_each_2d_perturbation_keeps_shape_and_dtype_is_identity_at_0_and_moves_further_with_severity(
        images_2d, name):
    p = pt.PERTURBATIONS[name]
    assert torch.equal(p(images_2d, 0, seed=3), images_2d)
    distances = []
    for severity in range(6):
        out = p(images_2d, severity, seed=3)
        assert out.shape == images_2d.shape and out.dtype == torch.uint8
        distances.append(rmse(out, images_2d))
    assert distances[0] == 0.0
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    floats = p(images_2d.float() / 255, 4, seed=3)  # float images in [0, 1] stay float in [0, 1]
    assert floats.dtype == torch.float32 and floats.shape == images_2d.shape
    assert 0 <= float(floats.min()) and float(floats.max()) <= 1


@pytest.mark.parametrize("name", NAMES_3D)
def test_each_3d_perturbation_keeps_shape_and_dtype_is_identity_at_0_and_moves_further_with_severity(
        volumes_3d, name):
    p = pt.PERTURBATIONS[name]
    distances = [rmse(p(volumes_3d, s, seed=1), volumes_3d) for s in range(6)]
    out = p(volumes_3d, 5, seed=1)
    assert out.shape == volumes_3d.shape and out.dtype == torch.uint8
    assert distances[0] == 0.0
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("name", NAMES_2D)
def test_a_seed_gives_the_same_images_and_another_seed_other_noise(images_2d, name):
    p = pt.PERTURBATIONS[name]
    a, b, c = p(images_2d, 3, seed=5), p(images_2d, 3, seed=5), p(images_2d, 3, seed=6)
    assert torch.equal(a, b)
    assert torch.equal(a, c) != (name in RANDOM)


def test_generator_seeds_are_stable_numbers_not_python_hashes():
    # zlib.crc32 of "gaussian_noise/3", fixed forever: a run today and next year draw the same noise
    assert pt.seed_for(0, "gaussian_noise", 3) == zlib.crc32(b"gaussian_noise/3") == 3366486700
    assert pt.seed_for(2, "gaussian_noise", 3) == 3366486700 + 2 * 1_000_003
    assert len({pt.seed_for(0, n, s) for n in pt.PERTURBATIONS for s in pt.SEVERITIES}) == 5 * len(pt.PERTURBATIONS)


# ------------------------------------------------------------------ values against references

def test_noise_is_the_clean_image_plus_the_replayed_draws(images_2d):
    x = images_2d[:4]
    u = x.double() / 255
    g = pt.make_generator(9, "gaussian_noise", 2)
    expected = (u + 0.08 * torch.randn(x.shape, generator=g).double()).clamp(0, 1) * 255
    out = pt.PERTURBATIONS["gaussian_noise"](x, 2, seed=9)
    assert (out.double() - expected).abs().max() <= 0.5 + 1e-4
    g = pt.make_generator(9, "speckle_noise", 4)
    expected = (u + u * 0.5 * torch.randn(x.shape, generator=g).double()).clamp(0, 1) * 255
    out = pt.PERTURBATIONS["speckle_noise"](x, 4, seed=9)
    assert (out.double() - expected).abs().max() <= 0.5 + 1e-4


def test_intensity_perturbations_by_hand():
    x = torch.tensor([[[[0, 50, 100, 250]]]], dtype=torch.uint8)
    mean = 100.0
    assert pt.PERTURBATIONS["contrast_down"](x, 3).tolist() == [[[[round(mean + (v - mean) * 0.5)
                                                                     for v in (0, 50, 100, 250)]]]]
    assert pt.PERTURBATIONS["contrast_up"](x, 1).flatten().tolist() == [0, 38, 100, 255]  # 250 -> 287.5 clipped
    assert pt.PERTURBATIONS["brightness_down"](x, 4).flatten().tolist() == [0, 0, 44, 194]  # -56.1 grey levels
    assert pt.PERTURBATIONS["gamma"](x, 2).flatten().tolist() == [round(255 * (v / 255) ** 1.45)
                                                                  for v in (0, 50, 100, 250)]


def test_blurs_equal_scipy_with_replicated_edges(images_2d, volumes_3d):
    x = images_2d[:3]
    out = pt.PERTURBATIONS["gaussian_blur"](x, 4)  # sigma 1.5 px at 28 px
    reference = ndimage.gaussian_filter(x.double().numpy(), sigma=(0, 0, 1.5, 1.5), mode="nearest", truncate=3.0)
    assert np.abs(out.double().numpy() - reference).max() <= 0.5 + 1e-3

    g = pt.make_generator(0, "motion_blur", 3)
    angles = torch.rand(3, generator=g) * math.pi
    kernels = pt.line_kernels(angles, 3.5).double().numpy()
    out = pt.PERTURBATIONS["motion_blur"](x, 3, seed=0)
    for i in range(3):
        reference = ndimage.correlate(x[i, 0].double().numpy(), kernels[i], mode="nearest")
        assert np.abs(out[i, 0].double().numpy() - reference).max() <= 0.5 + 1e-3

    g = pt.make_generator(0, "motion_blur", 5)
    axes = torch.randint(0, 3, (6,), generator=g)
    kernel = pt.box_kernel(7.0).double().numpy()
    out = pt.PERTURBATIONS["motion_blur"](volumes_3d, 5, seed=0)
    assert len(set(axes.tolist())) > 1  # the volumes really move along different axes
    for i in range(6):
        reference = ndimage.correlate1d(volumes_3d[i, 0].double().numpy(), kernel, axis=int(axes[i]),
                                        mode="nearest")
        assert np.abs(out[i, 0].double().numpy() - reference).max() <= 0.5 + 1e-3


def test_line_kernels_are_normalised_lines_in_the_drawn_direction():
    k = pt.line_kernels(torch.tensor([0.0, math.pi / 2]), 4.0)
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(2))
    assert torch.equal(k[0][2] > 0, torch.ones(5, dtype=torch.bool)) and float(k[0][[0, 1, 3, 4]].sum()) == 0
    assert torch.allclose(k[1], k[0].T, atol=1e-6)  # cos(pi / 2) is 4e-8 in float32
    assert torch.equal(pt.line_kernels(torch.tensor([1.0]), 0.0), torch.ones(1, 1, 1))


def test_pixelate_is_block_means_repeated(images_2d):
    x = images_2d[:2]
    out = pt.pixelate(x, 0.5)  # 28 -> 14: 2x2 blocks
    blocks = x.double().view(2, 1, 14, 2, 14, 2).mean(dim=(3, 5))
    expected = blocks.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert (out.double() - expected).abs().max() <= 0.5 + 1e-6


@pytest.mark.parametrize("quality", [80, 50, 30, 15, 8])
def test_batched_jpeg_is_within_a_grey_level_of_pil(images_2d, quality):
    ours = pt.jpeg(images_2d, quality)
    reference = []
    for image in images_2d[:, 0].numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        reference.append(np.array(Image.open(buffer)))
    reference = torch.from_numpy(np.stack(reference))[:, None]
    ours_vs_pil = (ours.double() - reference.double()).abs().mean()
    pil_vs_clean = (reference.double() - images_2d.double()).abs().mean()
    assert ours_vs_pil < 0.5 and ours_vs_pil < 0.1 * pil_vs_clean


def test_rgb_jpeg_quantizes_ycbcr_like_pil_without_chroma_subsampling():
    generator = torch.Generator().manual_seed(0)
    smooth = faithfulness.gaussian_blur(torch.rand(6, 3, 28, 28, generator=generator), 1.5)
    x = ((smooth - smooth.mean()) * 3 * 255 + 128).clamp(0, 255).round().to(torch.uint8)
    ours = pt.jpeg(x, 30)
    reference = []
    for image in x.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=30, subsampling=0)
        reference.append(np.array(Image.open(buffer)))
    reference = torch.from_numpy(np.stack(reference)).permute(0, 3, 1, 2)
    assert ours.shape == x.shape
    assert (ours.double() - reference.double()).abs().mean() < 0.3 * (reference.double() - x.double()).abs().mean()


def test_jpeg_pads_sides_that_are_not_multiples_of_8_and_quality_100_is_nearly_lossless(images_2d):
    x = images_2d[:2, :, :27, :21]
    assert pt.jpeg(x, 50).shape == x.shape
    assert (pt.jpeg(images_2d, 100).int() - images_2d.int()).abs().max() <= 2


# ------------------------------------------------------------------ bad input

def test_choosing_perturbations_by_name_and_refusing_what_does_not_apply():
    assert [p.name for p in pt.select(None, 3)] == NAMES_3D
    assert [p.name for p in pt.select(["JPEG", "gaussian-noise", "jpeg"], 2)] == ["jpeg", "gaussian_noise"]
    with pytest.raises(UsageError, match="unknown perturbation 'fog'; for 2D images choose from: gaussian_noise"):
        pt.select(["fog"], 2)
    with pytest.raises(UsageError, match="'jpeg' applies to 2D images only; for 3D images choose from"):
        pt.select(["jpeg"], 3)
    with pytest.raises(UsageError, match="applies to 2d images, not 3D"):
        pt.PERTURBATIONS["pixelate"](torch.zeros(1, 1, 4, 4, 4, dtype=torch.uint8), 1)
    for bad in (6, -1):
        with pytest.raises(UsageError, match="out of range"):
            pt.PERTURBATIONS["gamma"](torch.zeros(1, 1, 4, 4, dtype=torch.uint8), bad)


def test_docstring_examples():
    assert doctest.testmod(pt).failed == 0
