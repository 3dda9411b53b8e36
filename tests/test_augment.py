"""medscope.train.augment: whole-batch augmentation, anatomy-aware flips, seeded."""
import torch

from medscope.train import augment


def _batch(spatial=2, b=16, side=28):
    torch.manual_seed(0)
    return torch.rand(b, 1, *([side] * spatial)) * 2 - 1


def test_none_is_the_identity():
    x = _batch()
    config = augment.make_config("pathmnist", "none", 2)
    assert torch.equal(augment.augment_batch(x, config, torch.Generator().manual_seed(0)), x)


def test_same_generator_seed_same_batch():
    x = _batch()
    config = augment.make_config("pathmnist", "strong", 2)
    a = augment.augment_batch(x, config, torch.Generator().manual_seed(7))
    b = augment.augment_batch(x, config, torch.Generator().manual_seed(7))
    c = augment.augment_batch(x, config, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_shape_dtype_and_range_are_kept_2d_and_3d():
    for spatial in (2, 3):
        x = _batch(spatial, b=4, side=16)
        out = augment.augment_batch(x, augment.make_config("nodulemnist3d", "strong", spatial),
                                    torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= -1 and out.max() <= 1


def test_chest_xrays_are_never_flipped():
    for level in ("light", "strong"):
        assert augment.make_config("pneumoniamnist", level, 2).flips == ""
        assert augment.make_config("chestmnist", level, 2).flips == ""
    assert augment.make_config("pathmnist", "light", 2).flips == "hv"
    assert augment.make_config("nodulemnist3d", "light", 3).flips == "hvd"


def test_flip_only_config_produces_exact_mirror_images():
    x = _batch(b=64)
    config = augment.AugmentConfig(flips="h")
    out = augment.augment_batch(x, config, torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54


def test_pure_translation_moves_content_by_whole_pixels():
    x = torch.full((1, 1, 8, 8), -1.0)
    x[0, 0, 3, 3] = 1.0
    theta_shift = 2 * (1 / 8)  # one pixel in affine_grid's [-1, 1] coordinates
    grid = torch.nn.functional.affine_grid(torch.tensor([[[1.0, 0, theta_shift], [0, 1.0, 0]]]), [1, 1, 8, 8],
                                           align_corners=False)
    moved = torch.nn.functional.grid_sample(x + 1, grid, align_corners=False) - 1
    assert moved[0, 0, 3, 2] == 1.0  # sampling one pixel to the right moves content one pixel left


def test_tta_views_are_the_image_and_its_safe_flips():
    x = _batch(b=2)
    assert len(list(augment.tta_views(x, "pneumoniamnist"))) == 1
    views = list(augment.tta_views(x, "pathmnist"))
    assert len(views) == 3 and torch.equal(views[1], x.flip(-1)) and torch.equal(views[2], x.flip(-2))
