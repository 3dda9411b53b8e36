"""medscope.explain.cam, .saliency, .faithfulness and .maps: Grad-CAM and Grad-CAM++ equal pytorch-grad-cam,
gradient saliency, deletion/insertion faithfulness by hand, layer and target choice, maps over a split."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_grad_cam.base_cam as reference_base
import torch
import torch.nn as nn
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as ReferenceGradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from medscope import checkpoints, data, runs
from medscope.errors import UsageError
from medscope.explain import cam, faithfulness, maps, saliency
from medscope.explain.plots import is_empty_map
from medscope.models import build_model
from medscope.tasks import BINARY, MULTILABEL
from medscope.train import augment, loop
from tests.conftest import train_run

REFERENCES = {"gradcam": ReferenceGradCAM, "gradcam++": ReferenceGradCAMPlusPlus}


def open_test_images(run_path, n):
    model, checkpoint = checkpoints.load_run_model(runs.Run(run_path), "best", "cpu")
    cfg = checkpoint["config"]
    info = data.dataset_info(cfg["dataset"], cfg["size"])
    split = data.load_split(info, cfg["data_dir"], "test")
    return model, info, split, data.normalize(split.images[:n])


@pytest.fixture(scope="module")
def trained_2d(run_2d):
    return open_test_images(run_2d, 6)


@pytest.fixture(scope="module")
def trained_3d(run_3d):
    return open_test_images(run_3d, 2)


def reference_layer_maps(method, model, layer, x, targets, monkeypatch):
    """pytorch-grad-cam's own maps at the layer's resolution.

    Its ``scale_cam_image`` min-max scales and then resizes (cv2 in 2D, scipy
    zoom in 3D); the resize is switched off so the maps are compared before
    any upsampling, after its ReLU and normalization.
    """
    scale = reference_base.scale_cam_image
    monkeypatch.setattr(reference_base, "scale_cam_image", lambda heat, target_size=None: scale(heat, None))
    module = dict(model.named_modules())[layer]
    with REFERENCES[method](model, [module]) as reference_cam:
        return reference_cam(x, [ClassifierOutputTarget(int(t)) for t in targets])


# ------------------------------------------------------------------ equality with pytorch-grad-cam

@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_maps_equal_pytorch_grad_cam_on_the_2d_run(trained_2d, method, monkeypatch):
    model, info, _, x = trained_2d
    layer = cam.auto_layer(model, x.shape[1:])
    assert layer == "backbone.layer3.1"  # 7x7 at 28 px
    with cam.CAM_METHODS[method](model, layer) as explainer:
        ours = explainer(x)  # targets: the predicted class
    reference = reference_layer_maps(method, model, layer, x, ours.targets, monkeypatch)
    assert reference.shape == ours.layer_maps.shape == (len(x), 7, 7)
    # pytorch-grad-cam min-max scales twice (per layer, then after averaging the layers), so its 1e-7 guard
    # divides a map already in [0, 1]; ours divides the raw map once. They differ by about 1e-7 / (raw maximum):
    # 3e-5 on this briefly trained run, whose raw maps peak near 0.003
    np.testing.assert_allclose(ours.layer_maps.numpy(), reference, atol=1e-4, rtol=0)
    assert (reference.reshape(len(x), -1).max(axis=1) > 0.99).any()  # not a comparison of empty maps


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_maps_equal_pytorch_grad_cam_on_the_3d_run_for_every_target(trained_3d, method, monkeypatch):
    model, info, _, x = trained_3d
    layer = cam.auto_layer(model, x.shape[1:])
    assert layer == "backbone.layer1.1"  # 7x7x7 at 28^3
    targets = torch.tensor([1, 0])  # explained classes need not be the predicted ones
    with cam.CAM_METHODS[method](model, layer) as explainer:
        ours = explainer(x, targets)
    reference = reference_layer_maps(method, model, layer, x, targets, monkeypatch)
    assert reference.shape == ours.layer_maps.shape == (len(x), 7, 7, 7)
    # maps in [0, 1]; the two gradients sum 64 channels over 7^3 voxels in float32 in different orders
    # (autograd.grad of one layer vs backward through the whole net): up to 4e-5 apart, seen in CI
    np.testing.assert_allclose(ours.layer_maps.numpy(), reference, atol=1e-4, rtol=0)


def test_maps_equal_pytorch_grad_cam_on_a_seeded_3d_model_at_a_deeper_layer(trained_3d, monkeypatch):
    _, info, _, x = trained_3d
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 2, spatial_dims=3, size=28, dropout=0.2).eval()
    with cam.GradCAM(model, "backbone.layer2.1") as explainer:
        ours = explainer(x[:1])
    reference = reference_layer_maps("gradcam", model, "backbone.layer2.1", x[:1], ours.targets, monkeypatch)
    assert ours.layer_maps.shape == (1, 4, 4, 4)
    np.testing.assert_allclose(ours.layer_maps.numpy(), reference, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ maps: shape, range, hooks

@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_maps_have_the_input_shape_and_are_finite_in_unit_range(trained_2d, trained_3d, dims):
    model, info, _, x = trained_2d if dims == "2d" else trained_3d
    x = x[:1]
    with cam.GradCAMPlusPlus(model, cam.auto_layer(model, x.shape[1:])) as explainer:
        out = explainer(x)
    for found in (out.maps, saliency.vanilla_gradient(model, x).maps):
        assert found.shape == (1, *x.shape[2:])
        assert torch.isfinite(found).all() and found.min() >= 0 and found.max() <= 1


def test_hooks_released_and_model_state_restored_even_after_an_error():
    torch.manual_seed(0)
    model = build_model("cnn", 1, 3, spatial_dims=2, size=28, dropout=0.2).train()
    model.head[1].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    layer = dict(model.named_modules())["backbone.stages.2"]
    with pytest.raises(ValueError, match="boom"):
        with cam.GradCAM(model, "backbone.stages.2") as explainer:
            assert len(layer._forward_hooks) == 1 and not model.training
            explainer(torch.randn(2, 1, 28, 28))
            raise ValueError("boom")
    assert len(layer._forward_hooks) == 0
    assert [p.requires_grad for p in model.parameters()] == flags and model.training
    with pytest.raises(RuntimeError, match="context manager"):
        cam.GradCAM(model, "backbone.stages.2")(torch.randn(1, 1, 28, 28))


def test_no_weight_gradients_are_computed():
    torch.manual_seed(0)
    model = build_model("cnn", 1, 2, spatial_dims=2, size=28, dropout=0.0)
    with cam.GradCAM(model, "backbone.stages.1") as explainer:
        explainer(torch.randn(3, 1, 28, 28))
    saliency.vanilla_gradient(model, torch.randn(3, 1, 28, 28))
    assert all(p.grad is None for p in model.parameters())


def seeded_cnn(dims: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", 1, 2, spatial_dims=dims, size=28, dropout=0.2).eval()


def test_batched_maps_equal_one_image_at_a_time(trained_2d):
    _, _, _, x = trained_2d
    model = seeded_cnn(2)
    with cam.GradCAM(model, "backbone.stages.2") as explainer:
        batched = explainer(x[:4]).layer_maps
        single = torch.cat([explainer(x[i:i + 1]).layer_maps for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ layers and targets

@pytest.mark.parametrize("name, dims, input_shape, expected", [
    ("resnet18", 2, (1, 28, 28), "backbone.layer3.1"),   # 7x7; layer4 is 4x4
    ("resnet18", 2, (1, 64, 64), "backbone.layer4.1"),   # 8x8
    ("resnet18", 2, (1, 6, 6), "backbone.layer3.1"),     # 2x2: nothing reaches 7, the deepest larger than 1
    ("resnet18", 3, (1, 64, 64, 64), "backbone.layer2.1"),  # 8x8x8; layer3 is 4x4x4
    ("resnet18", 3, (1, 28, 28, 28), "backbone.layer1.1"),  # 7x7x7; layer3 would be 2x2x2, a corner
    ("cnn", 2, (3, 28, 28), "backbone.stages.2"),
    ("cnn", 3, (1, 28, 28, 28), "backbone.stages.2"),
])
def test_auto_layer_is_the_deepest_block_at_least_seven_pixels_a_side(name, dims, input_shape, expected):
    model = build_model(name, input_shape[0], 2, spatial_dims=dims, size=input_shape[1], dropout=0.1)
    assert cam.auto_layer(model, input_shape) == expected
    shapes = dict(cam.probe_blocks(model, input_shape))
    later = list(shapes)[list(shapes).index(expected) + 1:]
    if min(shapes[expected][2:]) >= cam.MIN_MAP_SIDE:
        assert all(min(shapes[name][2:]) < cam.MIN_MAP_SIDE for name in later)
    else:  # the fallback: every later block is a single pixel
        assert math.prod(shapes[expected][2:]) > 1 and all(math.prod(shapes[name][2:]) == 1 for name in later)


def test_a_bad_layer_name_is_refused_with_the_valid_names():
    model = build_model("cnn", 1, 2, spatial_dims=2, size=28, dropout=0.1)
    with pytest.raises(UsageError, match=r"backbone\.stages\.0, backbone\.stages\.1, backbone\.stages\.2"):
        cam.resolve_layer(model, "backbone.layer4", (1, 28, 28))
    with pytest.raises(UsageError, match="no spatial output"):
        cam.resolve_layer(model, "head.1", (1, 28, 28))
    assert cam.resolve_layer(model, "backbone.stages.1.0", (1, 28, 28)) == "backbone.stages.1.0"


def test_targets_pred_true_and_a_class():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.3, 0.1]])
    labels = torch.tensor([[1], [1], [0]])
    assert cam.select_targets("pred", BINARY, logits, labels).tolist() == [0, 1, 0]
    assert cam.select_targets("true", BINARY, logits, labels).tolist() == [1, 1, 0]
    assert cam.select_targets(1, BINARY, logits, labels).tolist() == [1, 1, 1]
    multi_logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    multi_labels = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    # the highest-scoring positive label; with none positive, the highest-scoring label
    assert cam.select_targets("true", MULTILABEL, multi_logits, multi_labels).tolist() == [2, 2]
    assert cam.parse_target("Malignant", ["malignant", "normal, benign"]) == 0
    assert cam.parse_target("1", ["malignant", "normal, benign"]) == 1
    with pytest.raises(UsageError, match="0 \\(malignant\\), 1 \\(normal, benign\\)"):
        cam.parse_target("7", ["malignant", "normal, benign"])


# ------------------------------------------------------------------ saliency

def test_vanilla_gradient_of_a_linear_model_is_its_weight_magnitude():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 2))
    x = torch.randn(2, 2, 3, 3)
    out = saliency.vanilla_gradient(model, x, torch.tensor([0, 1]))
    for i, target in enumerate((0, 1)):
        expected = model[1].weight[target].detach().view(2, 3, 3).abs().amax(dim=0)
        expected = (expected - expected.min()) / (expected.max() - expected.min())
        torch.testing.assert_close(out.maps[i], expected)


def test_smoothgrad_without_noise_is_the_vanilla_gradient_and_is_reproducible(trained_2d):
    _, _, _, x = trained_2d
    model, x = seeded_cnn(2), x[:3]
    vanilla = saliency.vanilla_gradient(model, x).maps
    noiseless = saliency.smoothgrad(model, x, samples=4, noise=0.0, chunk=6).maps  # two chunks of 2 copies
    torch.testing.assert_close(noiseless, vanilla, atol=1e-6, rtol=0)
    a = saliency.smoothgrad(model, x, samples=3, generator=torch.Generator().manual_seed(1)).maps
    b = saliency.smoothgrad(model, x, samples=3, generator=torch.Generator().manual_seed(1)).maps
    assert torch.equal(a, b) and not torch.allclose(a, vanilla, atol=1e-3)


def test_smoothgrad_on_3d_volumes(trained_3d):
    _, _, _, x = trained_3d
    out = saliency.smoothgrad(seeded_cnn(3), x[:2], samples=2, generator=torch.Generator().manual_seed(0))
    assert out.maps.shape == (2, 28, 28, 28) and torch.isfinite(out.maps).all() and out.maps.max() > 0.99


# ------------------------------------------------------------------ faithfulness by hand

class SumModel(nn.Module):
    """Logits (0, sum of pixels): the class-1 probability is sigmoid(sum x)."""

    def forward(self, x):
        total = x.flatten(1).sum(dim=1)
        return torch.stack([torch.zeros_like(total), total], dim=1)


def test_deletion_and_insertion_curves_match_a_hand_computation():
    x = torch.tensor([[[[3.0, -1.0], [1.0, 0.0]]]])  # pixels 0..3
    saliency = torch.tensor([[[0.9, 0.1], [0.5, 0.3]]])  # order: pixel 0, 2, 3, 1
    order = faithfulness.salience_order(saliency)
    assert order.tolist() == [[0, 2, 3, 1]]
    target = torch.tensor([1])
    zeros = torch.zeros_like(x)
    deletion = faithfulness.perturbation_curves(SumModel(), x, order, target, BINARY, mode="deletion",
                                           canvas=zeros, steps=4)
    insertion = faithfulness.perturbation_curves(SumModel(), x, order, target, BINARY, mode="insertion",
                                            canvas=zeros, steps=4)
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected_deletion = [sigmoid(s) for s in (3, 0, -1, -1, 0)]  # remove 3, then 1, then 0, then -1
    expected_insertion = [sigmoid(s) for s in (0, 3, 4, 4, 3)]
    np.testing.assert_allclose(deletion[0], expected_deletion, atol=1e-6)
    np.testing.assert_allclose(insertion[0], expected_insertion, atol=1e-6)
    fractions = [0, 0.25, 0.5, 0.75, 1]
    np.testing.assert_allclose(faithfulness.curve_auc(deletion, 4), np.trapezoid(expected_deletion, fractions),
                               atol=1e-6)


def test_salience_ties_are_broken_randomly_but_reproducibly():
    flat = torch.zeros(1, 100)
    a = faithfulness.salience_order(flat, torch.Generator().manual_seed(0))
    b = faithfulness.salience_order(flat, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, torch.arange(100).view(1, -1))
    assert sorted(a[0].tolist()) == list(range(100))


@pytest.mark.parametrize("shape", [(2, 1, 9, 9), (1, 2, 6, 7, 8)])
def test_blur_keeps_constant_images_and_mean_level(shape):
    constant = torch.full(shape, 0.25)
    torch.testing.assert_close(faithfulness.gaussian_blur(constant, 1.5), constant)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    blurred = faithfulness.gaussian_blur(noise, 1.0)
    assert blurred.shape == noise.shape and blurred.std() < noise.std()


def mask_like_images(n: int = 8, side: int = 12, dims: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """0/255 masks in the model's input range (-1 background, +1 structure): odd images hold a blob."""
    x = torch.full((n, 1, *([side] * dims)), -1.0)
    labels = torch.arange(n) % 2
    blob = tuple(slice(side // 3, side // 3 + 3) for _ in range(dims))
    for i in range(n):
        if labels[i]:
            x[(i, 0, *blob)] = 1.0
    return x, labels


class BrightnessModel(nn.Module):
    """Class 1 is "something bright": logits (0, 20 (mean x - t) / (blob - empty)), t halfway between them."""

    def __init__(self, empty_mean: float, blob_mean: float):
        super().__init__()
        self.threshold, self.scale = (empty_mean + blob_mean) / 2, 20 / (blob_mean - empty_mean)

    def forward(self, x):
        score = self.scale * (x.flatten(1).mean(dim=1) - self.threshold)
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.mark.parametrize("dims", [2, 3])
def test_the_background_of_masks_is_their_black_surround(dims):
    x, _ = mask_like_images(dims=dims)
    assert faithfulness.background_value(x).tolist() == [-1.0]
    colour = torch.stack([torch.full((2, 5, 5), v) for v in (-1.0, 0.0, 0.5)], dim=1)
    assert faithfulness.background_value(colour).tolist() == [-1.0, 0.0, 0.5]  # per channel


@pytest.mark.parametrize("dims", [2, 3])
def test_deletion_with_the_background_baseline_removes_the_signal_and_mid_grey_adds_it(dims):
    x, labels = mask_like_images(dims=dims)
    model = BrightnessModel(empty_mean=-1.0, blob_mean=x[1].mean().item())
    positives = labels == 1
    order = faithfulness.random_order(len(x), x[0].numel(), torch.Generator().manual_seed(0))
    empty_image_probability = torch.sigmoid(model(torch.full_like(x[:1], -1.0))[0, 1]).item()
    curves = {baseline: faithfulness.perturbation_curves(
        model, x, order, labels.clone().fill_(1), BINARY, mode="deletion", steps=4,
        canvas=faithfulness.deletion_canvas(x, baseline)) for baseline in ("background", "grey")}
    # everything deleted: the background leaves an empty image, the model's "nothing there" score
    np.testing.assert_allclose(curves["background"][:, -1], empty_image_probability, atol=1e-6)
    assert curves["background"][positives, -1].max() < 0.01 < curves["background"][positives, 0].min()
    # mid-grey turns every image, empty or not, into "something bright"
    assert curves["grey"][:, -1].min() > 0.99 and curves["grey"][~positives, 0].max() < 0.01


def test_gains_over_random_are_mean_differences_with_intervals_that_decide_the_verdict():
    rng = np.random.default_rng(0)
    fa = faithfulness.Faithfulness(deletion=rng.uniform(0.1, 0.3, 40), insertion=rng.uniform(0.6, 0.8, 40),
                                   random_deletion=rng.uniform(0.35, 0.55, 40),
                                   random_insertion=rng.uniform(0.55, 0.85, 40), curves={},
                                   fractions=np.linspace(0, 1, 3))
    gains = faithfulness.gains_over_random(fa, n_resamples=500)
    deletion, insertion = gains["deletion_gain"], gains["insertion_gain"]
    assert deletion["estimate"] == pytest.approx((fa.random_deletion - fa.deletion).mean())
    assert insertion["estimate"] == pytest.approx((fa.insertion - fa.random_insertion).mean())
    assert 0 < deletion["low"] < deletion["estimate"] < deletion["high"]
    assert insertion["low"] < 0 < insertion["high"]  # insertion gains centred on zero
    summary = faithfulness.faithfulness_summary(fa, n_resamples=500)
    assert summary["deletion_gain_verdict"] == "better than"
    assert summary["insertion_gain_verdict"] == "no different from"
    assert summary["deletion_gain_low"] == deletion["low"] and summary["deletion_baseline"] == "background"
    assert summary["deletion_baseline_reason"] == "given (--deletion-baseline)"
    assert "better than random at 95%" in faithfulness.faithfulness_text("Grad-CAM", fa, n_resamples=500)


def test_auto_deletes_to_the_background_of_masks_and_to_a_blurred_copy_of_images_with_anatomy_to_the_edge():
    masks, _ = mask_like_images(n=16, dims=3)
    assert faithfulness.choose_deletion_baseline(masks)[0] == "background"
    textured = torch.rand((16, 1, 12, 12), generator=torch.Generator().manual_seed(0)) * 2 - 1
    baseline, reason = faithfulness.choose_deletion_baseline(textured)
    assert baseline == "blur" and reason.startswith("only ") and "border pixels are one value" in reason
    # faithfulness() resolves "auto" on its batch and says why
    images, _ = mask_like_images(n=4, dims=2)
    fa = faithfulness.faithfulness(SumModel(), images, torch.rand(4, 12, 12), torch.ones(4, dtype=torch.long), BINARY,
                                   steps=2, baseline="auto")
    assert fa.baseline == "background" and "flat background" in fa.baseline_reason


def test_the_split_background_is_measured_on_its_images_border():
    images = torch.full((30, 1, 6, 6), 40, dtype=torch.uint8)
    images[:, :, 2:4, 2:4] = 255
    split = data.Split(images, torch.zeros(30, 1, dtype=torch.long))
    assert maps.split_background(split).item() == pytest.approx(40 * 2 / 255 - 1)


# ------------------------------------------------------------------ what the files of a method hold

def hand_explained(multilabel: bool) -> maps.Explained:
    """Two images with known probabilities and faithfulness AUCs."""
    probabilities = np.array([[0.9, 0.6], [0.2, 0.3]]) if multilabel else np.array([[0.8, 0.2], [0.4, 0.6]])
    labels = np.array([[1, 1], [0, 0]]) if multilabel else np.array([[0], [0]])
    fa = faithfulness.Faithfulness(np.array([0.2, 0.4]), np.array([0.7, 0.5]), np.array([0.3, 0.3]),
                                   np.array([0.6, 0.6]), {}, np.linspace(0, 1, 3))
    return maps.Explained(np.array([4, 9]), np.zeros((2, 3, 3), np.float32), probabilities, np.array([0, 1]),
                          labels, None, fa)


def test_metrics_rows_per_image_then_mean_and_population_std():
    rows = maps.metrics_rows(hand_explained(False), BINARY, ["benign", "malignant"])
    assert [(r["row"], r.get("id"), r.get("label"), r.get("target_name")) for r in rows] == [
        ("image", 4, "0", "benign"), ("image", 9, "0", "malignant"), ("mean", None, None, None),
        ("std", None, None, None)]
    assert [r["target_probability"] for r in rows[:2]] == [0.8, 0.6]
    assert rows[2]["deletion_auc"] == pytest.approx(0.3) and rows[3]["deletion_auc"] == pytest.approx(0.1)
    assert rows[3]["target_probability"] == pytest.approx(np.std([0.8, 0.6]))
    multilabel = maps.metrics_rows(hand_explained(True), MULTILABEL, ["a", "b"])
    assert [r["label"] for r in multilabel[:2]] == ["1;1", "0;0"]


def test_map_arrays_and_summary_record():
    explained = hand_explained(False)
    arrays = maps.map_arrays(explained, BINARY, ["benign", "malignant"], method_label="Grad-CAM", split_name="test",
                             layer="backbone.layer4.1")
    assert arrays["predictions"].tolist() == [0, 1] and arrays["target_names"].tolist() == ["benign", "malignant"]
    assert "layer_maps" not in arrays and str(arrays["method"]) == "Grad-CAM"
    summary = maps.summary_record(explained, method_label="Grad-CAM", layer="l", target="pred", split_name="test",
                                  n_figures=2, extra={"samples": 3})
    assert list(summary)[:9] == ["method", "layer", "target", "split", "n_images", "n_figures", "n_empty_maps",
                                 "empty_map_ids", "samples"]
    assert summary["faithfulness"]["deletion_auc"] == pytest.approx(0.3)
    assert summary["faithfulness"]["fraction_deletion_below_random"] == 0.5
    assert summary["faithfulness"]["steps"] == 2


def test_file_names_of_a_method():
    assert maps.file_name("volume", "gradcam", id=12) == "gradcam_volume_00012.png"
    pattern = maps.figure_pattern("saliency_vanilla")
    assert pattern.match("saliency_vanilla_page01.png") and pattern.match("saliency_vanilla_metrics.csv")
    assert not pattern.match("saliency_vanilla_maps.npz") and not pattern.match("saliency_vanilla_summary.json")


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory, medmnist_dir):
    """A plain CNN trained for 2 epochs on the whole breastmnist training split (~30 s on 2 cores).

    The session's ResNet-18 run (256 images) predicts p ~ 0.99 for every image,
    so no pixel order moves its output; this run has learnt something
    (test AUC ~0.63) and is not saturated.
    """
    path = train_run(tmp_path_factory.mktemp("faithful"), medmnist_dir, "--dataset", "breastmnist", "--model", "cnn",
                     "--epochs", "2", "--seed", "1")
    model, info, split, _ = open_test_images(path, 1)
    return model, info, split


@pytest.mark.slow
def test_gradcam_deletion_auc_is_below_the_random_baseline_on_a_trained_model(trained_cnn):
    model, info, split = trained_cnn
    ids = maps.choose_ids(len(split), 32, seed=0)
    with cam.GradCAM(model, cam.auto_layer(model, split.images.shape[1:])) as explainer:
        result = maps.explain_split(explainer, model, split, ids, info.task, "cpu", batch_size=32, steps=10)
    fa = result.faithfulness
    assert fa.deletion.shape == fa.random_deletion.shape == (32,)
    # measured: 0.62 vs 0.69, lower for 29 of 32 images (3 epochs: 0.59 vs 0.63, 23 of 32)
    assert fa.deletion.mean() < fa.random_deletion.mean() - 0.02
    assert (fa.deletion < fa.random_deletion).mean() >= 0.6


def map_peaks(maps_: np.ndarray) -> np.ndarray:
    """(N, spatial dims) index of each map's maximum (the first, on ties)."""
    flat_peaks = maps_.reshape(len(maps_), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat_peaks, maps_.shape[1:]), axis=1)


def corner_share(maps_: np.ndarray) -> float:
    """Share of the non-empty maps whose peak is on a corner (an empty map's argmax is index 0, a corner)."""
    maps_ = maps_[[not is_empty_map(m) for m in maps_]]
    peaks = map_peaks(maps_)
    return float(np.all((peaks == 0) | (peaks == np.array(maps_.shape[1:]) - 1), axis=1).mean())


@pytest.mark.slow
def test_3d_gradcam_at_the_default_layer_points_inside_the_adrenal_volumes(trained_3d):
    # The briefly trained run is too weak to ask whether its maps beat random deletion (its validation AUC is
    # near 0.5, and the answer flips with float summation order): the planted lesion below asks that.
    model, info, split, _ = trained_3d
    layer = cam.auto_layer(model, split.images.shape[1:])
    assert layer == "backbone.layer1.1"  # 7x7x7 at 28^3 (layer3.1, the old default, is 2x2x2)
    ids = maps.choose_ids(len(split), 32, seed=0)
    with cam.GradCAM(model, layer) as explainer:
        result = maps.explain_split(explainer, model, split, ids, info.task, torch.device("cpu"), batch_size=16,
                                    steps=10)
    # Not exactly 0: run_3d is trained once per session by whichever process asks first, and its 1-epoch weights
    # depend on that process's thread count (float summation order; 1 vs 2 threads gave validation AUC 0.57 vs
    # 0.70), so a near-chance model's peak may land on one of the 8 corner cells of the 7^3 layer by chance
    # (1 map in 31 seen in the full suite). What is robust is the difference the layer makes: at layer3.1
    # (2x2x2, every cell a corner) 20-32% of the peaks are on a volume corner, here at most 1 in 32 was seen.
    assert corner_share(result.maps) <= 0.1
    fa = result.faithfulness
    assert fa.deletion.shape == fa.random_deletion.shape == fa.insertion.shape == (32,)
    assert fa.baseline == "background" and "flat background" in fa.baseline_reason  # adrenal volumes are masks


def planted_lesion_volumes(n: int, seed: int) -> tuple[data.Split, np.ndarray]:
    """``n`` 28^3 volumes of a textured ellipsoid "organ" on a black background; every second one
    (label 1) holds a bright 5^3 cube, the "lesion", at a random place inside the organ.

    Returns the split and each volume's lesion corner (the cube's lowest index per axis; zeros for label 0).
    """
    rng = np.random.default_rng(seed)
    grid = np.indices((28, 28, 28)).transpose(1, 2, 3, 0)
    images = np.zeros((n, 1, 28, 28, 28), np.uint8)
    labels = (np.arange(n) % 2).astype(np.int64)[:, None]
    corners = np.zeros((n, 3), np.int64)
    for i in range(n):
        organ = (((grid - (14 + rng.uniform(-2, 2, 3))) / rng.uniform(8, 11, 3)) ** 2).sum(-1) <= 1
        images[i, 0][organ] = rng.integers(90, 130, organ.sum())
        if labels[i, 0]:
            corners[i] = c = rng.integers(8, 16, 3)
            images[i, 0, c[0]:c[0] + 5, c[1]:c[1] + 5, c[2]:c[2] + 5] = 255
    return data.Split(torch.from_numpy(images), torch.from_numpy(labels)), corners


def train_on_planted_lesions(seed: int):
    """A 3D ResNet-18 trained by the training loop to find the planted lesion (128 volumes, 4 epochs, precise
    BatchNorm: about 15 s), and 32 new volumes with their lesion corners. bench/gradcam_planted_lesion.py
    runs it over several seeds."""
    train, _ = planted_lesion_volumes(128, seed=100 + seed)
    cfg = loop.EpochConfig(task=BINARY, num_classes=2, batch_size=16, augment=augment.AugmentConfig(flips=""))
    torch.manual_seed(seed)
    model = build_model("resnet18", 1, 2, 3, 28)
    optimizer = loop.make_optimizer(model, "adamw", 1e-3, weight_decay=0.01)
    scheduler = loop.make_scheduler(optimizer, 32, 0, "constant")
    for epoch in range(4):
        loop.train_one_epoch(model, train, cfg, optimizer, scheduler, None, torch.device("cpu"),
                             loop.seed_epoch(seed, epoch))
    # 32 steps leave BatchNorm's running averages behind the weights (eval accuracy 0.78 on one seed without this)
    loop.recompute_batchnorm(model, train, cfg, torch.device("cpu"))
    model.eval()
    test, corners = planted_lesion_volumes(32, seed=200 + seed)
    return model, test, corners


@pytest.fixture(scope="module")
def planted_3d():
    return train_on_planted_lesions(seed=0)


def explain_planted(model, test, layer):
    with cam.GradCAM(model, layer) as explainer:
        result = maps.explain_split(explainer, model, test, np.arange(len(test)), BINARY, torch.device("cpu"),
                                    batch_size=16, steps=10)
    return result, faithfulness.gains_over_random(result.faithfulness)


def share_of_peaks_on_the_lesion(result, test, corners) -> float:
    """Share of the lesion volumes whose map peaks on the lesion or within 2 voxels of it."""
    lesion = test.labels[:, 0].numpy() == 1
    peaks = map_peaks(result.maps)
    near = np.all((peaks >= corners - 2) & (peaks < corners + 5 + 2), axis=1)
    return float(near[lesion].mean())


@pytest.mark.slow
def test_3d_gradcam_at_the_default_layer_finds_a_planted_lesion_that_the_old_default_misses(planted_3d):
    model, test, corners = planted_3d
    with torch.no_grad():
        predicted = model(data.normalize(test.images)).argmax(dim=1)
    assert (predicted == test.labels[:, 0]).all()  # the model has learned the lesion: the maps are worth asking
    layer = cam.auto_layer(model, test.images.shape[1:])
    assert layer == "backbone.layer1.1"
    default, default_gains = explain_planted(model, test, layer)
    old, old_gains = explain_planted(model, test, "backbone.layer3.1")
    # docs/BENCHMARKS_explain.md: 0.88 to 1.0 at layer1.1 on six training seeds, 0.0 at layer3.1 on all six
    assert share_of_peaks_on_the_lesion(default, test, corners) >= 0.75
    assert share_of_peaks_on_the_lesion(old, test, corners) <= 0.25  # 2x2x2 cells cannot place a 5^3 cube
    # deleting the default maps' voxels first removes the evidence far sooner than a random order (and than the
    # old default's); inserting them first restores it sooner; 95% paired-bootstrap intervals over the 32 volumes
    assert default_gains["deletion_gain"]["low"] > 0.1 and default_gains["insertion_gain"]["low"] > 0
    assert default_gains["deletion_gain"]["estimate"] > old_gains["deletion_gain"]["estimate"]


# ------------------------------------------------------------------ which images are shown, and empty maps

def test_the_stratified_pick_includes_every_class_present_right_and_wrong_most_confident_errors_first():
    rng = np.random.default_rng(0)
    labels = np.zeros((100, 1), dtype=np.int64)
    labels[:11] = 1  # 11% positive, as the held-out 3D set
    p1 = np.clip(0.2 + 0.4 * labels[:, 0] + 0.45 * rng.random(100), 0, 1)  # some negatives predicted positive
    probs = np.stack([1 - p1, p1], axis=1)
    for n in (2, 4, 16):
        ids = maps.stratified_ids(labels, probs, "binary-class", n)
        assert len(ids) == n and set(labels[ids, 0]) == {0, 1}  # a random pick of 16 missed the positives
    pred = (p1 > 0.5).astype(int)
    wrong_negatives = np.flatnonzero((labels[:, 0] == 0) & (pred == 1))
    most_confident_error = wrong_negatives[np.argmax(p1[wrong_negatives])]
    assert most_confident_error in maps.stratified_ids(labels, probs, "binary-class", 4)
    only = maps.stratified_ids(labels, probs, "binary-class", 5, classes=[1])
    assert set(labels[only, 0]) == {1}


def test_empty_maps_are_recognised():
    assert explain_plots_module().is_empty_map(np.zeros((3, 4, 4)))
    assert not explain_plots_module().is_empty_map(np.arange(8.0).reshape(2, 2, 2))


def explain_plots_module():
    from medscope.explain import plots

    return plots
