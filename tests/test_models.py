"""medscope.models: shapes for every model x 2D/3D x size x channels; pretrained stem mapping."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from medscope.models import adapt_stem_kernel, build_model, load_pretrained

CASES_2D = [(name, size, ch) for name in ("resnet18", "cnn") for size in (28, 64, 128, 224) for ch in (1, 3)]
CASES_3D = [(name, size, ch) for name in ("resnet18", "cnn") for size in (28, 64) for ch in (1, 3)]


@pytest.mark.parametrize("name,size,channels", CASES_2D)
def test_2d_output_and_embedding_shapes(name, size, channels):
    model = build_model(name, channels, 7, 2, size, dropout=0.3).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert model.features(x).shape == (2, model.feature_dim)
    assert isinstance(model.head[0], torch.nn.Dropout) and model.head[0].p == 0.3


@pytest.mark.parametrize("name,size,channels", CASES_3D)
def test_3d_output_shapes(name, size, channels):
    model = build_model(name, channels, 2, 3, size).eval()
    with torch.no_grad():
        assert model(torch.randn(1, channels, size, size, size)).shape == (1, 2)


def test_small_inputs_get_a_3x3_stride_1_stem_and_no_maxpool():
    small = build_model("resnet18", 1, 2, 2, 28).backbone
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    large = build_model("resnet18", 1, 2, 2, 224).backbone
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, torch.nn.MaxPool2d)


def test_blocks_are_named_in_network_order():
    model = build_model("resnet18", 1, 2, 2, 28)
    names = [name for name, _ in model.blocks()]
    assert names[0] == "backbone.relu" and names[-1] == "backbone.layer4.1" and len(names) == 9


def test_stem_kernel_is_resized_bicubically_and_rescaled():
    weight = torch.randn(64, 3, 7, 7)
    mapped = adapt_stem_kernel(weight, 3, in_channels=1)
    expected = F.interpolate(weight.reshape(-1, 1, 7, 7), size=(3, 3), mode="bicubic", align_corners=False)
    expected = (expected.reshape(64, 3, 3, 3) * 49 / 9).sum(dim=1, keepdim=True)
    assert mapped.shape == (64, 1, 3, 3)
    assert torch.allclose(mapped, expected, atol=1e-6)


def test_a_constant_kernel_keeps_its_response_to_a_flat_image():
    weight = torch.full((1, 1, 7, 7), 0.5)
    mapped = adapt_stem_kernel(weight, 3, in_channels=1)
    assert mapped.sum().item() == pytest.approx(weight.sum().item(), rel=1e-5)


def test_rgb_folds_to_grey_as_the_sum_of_channels():
    weight = torch.randn(8, 3, 3, 3)
    mapped = adapt_stem_kernel(weight, 3, in_channels=1)
    grey = torch.rand(1, 1, 9, 9)
    assert torch.allclose(F.conv2d(grey, mapped), F.conv2d(grey.repeat(1, 3, 1, 1), weight), atol=1e-5)


def test_torchvision_state_dict_loads_into_the_small_resnet():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().state_dict()
    model = build_model("resnet18", 1, 2, 2, 28)
    missing = load_pretrained(model, reference, 2)
    assert missing == []
    assert torch.equal(model.backbone.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])
    assert torch.allclose(model.backbone.conv1.weight, adapt_stem_kernel(reference["conv1.weight"], 3, 1))


def test_video_state_dict_loads_into_the_3d_resnet():
    torch.manual_seed(0)
    reference = torchvision.models.video.r3d_18().state_dict()
    model = build_model("resnet18", 1, 2, 3, 28)
    assert load_pretrained(model, reference, 3) == []
    assert model.backbone.stem[0].weight.shape == (64, 1, 3, 3, 3)
