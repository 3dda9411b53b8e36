"""Models: ResNet-18 adapted to MedMNIST sizes (2D and 3D) and a small plain CNN.

Every model is a :class:`Classifier`: a ``backbone`` that maps images to a
penultimate embedding, and a ``head`` = dropout + linear. Keeping the head
separate lets MC-dropout run the backbone once and sample the head many times,
and lets analysis code read the embedding without hooks.

A model is rebuilt from its *spec* (a plain dict stored in every checkpoint):
``build_model(**spec)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from medscope.errors import UsageError

MODELS = ("resnet18", "cnn")


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, dropout: float,
                 blocks: list[str]):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(feature_dim, num_classes))
        self.feature_dim = feature_dim
        self.block_names = blocks  # module names, in network order, of the blocks analyses look at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (input of the head)."""
        return self.backbone(x)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of the main blocks, in network order."""
        modules = dict(self.named_modules())
        return [(name, modules[name]) for name in self.block_names]


def _resnet2d(in_channels: int, size: int) -> tuple[nn.Module, list[str]]:
    net = torchvision.models.resnet18(weights=None)
    if size <= 64:
        # small inputs: a 3x3 stride-1 stem and no max-pool keep 28 px at 28 px in layer1
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    blocks = ["backbone.relu"] + [f"backbone.layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    return net, blocks


class _Stem3d(nn.Sequential):
    """A CPU-friendly stem for 28^3 and 64^3 volumes: 3x3x3 conv (stride 2) + max-pool (stride 2).

    This is ResNet's own /4 stem with a 3x3x3 kernel in place of r3d_18's
    3x7x7 one: layer1 sees 7^3 (28^3 input) or 16^3 (64^3). r3d_18's stem
    (stride 1x2x2) would keep a 28^3 volume at 28x14x14, about 10x the compute
    of this stem's layers on a CPU. At 28^3, layer1 is 7^3 and layer4 1 voxel;
    Grad-CAM explains layer1 (the deepest block at least 7 voxels a side).
    """

    def __init__(self, in_channels: int, size: int):
        super().__init__(
            nn.Conv3d(in_channels, 64, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(64), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=3, stride=2, padding=1))


def _resnet3d(in_channels: int, size: int) -> tuple[nn.Module, list[str]]:
    net = torchvision.models.video.r3d_18(weights=None)
    net.stem = _Stem3d(in_channels, size)
    net.fc = nn.Identity()
    blocks = ["backbone.stem"] + [f"backbone.layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    return net, blocks


class PlainCNN(nn.Module):
    """Three stages of (conv-BN-ReLU) x 2 + max-pool, then global average pooling."""

    def __init__(self, in_channels: int, spatial_dims: int, widths=(32, 64, 128)):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        stages, channels = [], in_channels
        for i, width in enumerate(widths):
            layers = []
            for _ in range(2):
                layers += [conv(channels, width, 3, padding=1, bias=False), norm(width), nn.ReLU(inplace=True)]
                channels = width
            if i < len(widths) - 1:
                layers.append(pool(2))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, x):
        x = self.stages(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1) if x.ndim == 4 else F.adaptive_avg_pool3d(x, 1), 1)


def build_model(name: str, in_channels: int, num_classes: int, spatial_dims: int, size: int,
                dropout: float = 0.2) -> Classifier:
    """Build a model from its spec (all plain values, stored in checkpoints)."""
    if name == "resnet18":
        backbone, blocks = (_resnet2d if spatial_dims == 2 else _resnet3d)(in_channels, size)
        feature_dim = 512
    elif name == "cnn":
        widths = (32, 64, 128) if spatial_dims == 2 else (16, 32, 64)
        backbone = PlainCNN(in_channels, spatial_dims, widths)
        feature_dim = backbone.out_channels
        blocks = [f"backbone.stages.{i}" for i in range(len(widths))]
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    return Classifier(backbone, feature_dim, num_classes, dropout, blocks)


def model_spec(name, in_channels, num_classes, spatial_dims, size, dropout) -> dict:
    return dict(name=name, in_channels=int(in_channels), num_classes=int(num_classes),
                spatial_dims=int(spatial_dims), size=int(size), dropout=float(dropout))


MAX_CLASSES = 1000  # MedMNIST has at most 14 labels; anything far larger is a damaged or hostile file


def check_spec(spec, source) -> dict:
    """A model spec read from disk, checked before anything is built from it (a checkpoint may
    come from someone else: an unknown model or ``num_classes=10**10`` must not reach torch)."""
    if not isinstance(spec, dict) or set(spec) != {"name", "in_channels", "num_classes", "spatial_dims", "size",
                                                   "dropout"}:
        raise UsageError(f"{source}: the model spec is not one medscope writes")
    allowed = {"name": MODELS, "in_channels": (1, 3), "spatial_dims": (2, 3), "size": (28, 64, 128, 224)}
    for key, values in allowed.items():
        if isinstance(spec[key], bool) or spec[key] not in values:
            raise UsageError(f"{source}: model spec {key}={spec[key]!r}, expected one of {list(values)}")
    classes, dropout = spec["num_classes"], spec["dropout"]
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= MAX_CLASSES:
        raise UsageError(f"{source}: model spec num_classes={classes!r}, expected 1 to {MAX_CLASSES}")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise UsageError(f"{source}: model spec dropout={dropout!r}, expected a number in [0, 1)")
    return spec


# ---------------------------------------------------------------- pretrained weights

def adapt_stem_kernel(weight: torch.Tensor, out_size: int, in_channels: int) -> torch.Tensor:
    """Map an ImageNet stem kernel to a smaller kernel and another channel count.

    The spatial k x k kernel (last two dims) is resized to ``out_size`` by
    bicubic interpolation and rescaled by (k / out_size)^2 so a flat region
    gives the same response as before. RGB folds to grey by summing the
    channels: a grey image repeated on R, G and B gives exactly that response.
    """
    *lead, k_h, k_w = weight.shape
    flat = weight.reshape(-1, 1, k_h, k_w).float()
    if (k_h, k_w) != (out_size, out_size):
        flat = F.interpolate(flat, size=(out_size, out_size), mode="bicubic", align_corners=False)
        flat = flat * (k_h * k_w) / (out_size * out_size)
    resized = flat.reshape(*lead, out_size, out_size)
    if in_channels == 1 and resized.shape[1] == 3:
        resized = resized.sum(dim=1, keepdim=True)
    elif in_channels != resized.shape[1]:
        raise ValueError(f"cannot map a {resized.shape[1]}-channel stem to {in_channels} channels")
    return resized.to(weight.dtype)


def load_pretrained(model: Classifier, state_dict: dict, spatial_dims: int) -> list[str]:
    """Load torchvision ImageNet (2D) or Kinetics (3D) weights into ``model.backbone``.

    The stem is adapted with :func:`adapt_stem_kernel`; the classifier (``fc``)
    is dropped because the number of classes differs. Returns the names of
    backbone parameters that were left at their initialization.
    """
    backbone = model.backbone
    target = backbone.state_dict()
    stem_key = "conv1.weight" if spatial_dims == 2 else "stem.0.weight"
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        if key == stem_key and key in target and value.shape != target[key].shape:
            want = target[key].shape
            # 2D (64, 3, 7, 7) -> (64, C, 3, 3); 3D (64, 3, 3, 7, 7) -> (64, C, 3, 3, 3): the
            # temporal extent of r3d_18's stem is already 3, only the spatial kernel changes
            value = adapt_stem_kernel(value, want[-1], want[1])
        if key in target and value.shape == target[key].shape:
            mapped[key] = value
    missing = [k for k in target if k not in mapped]
    backbone.load_state_dict(mapped, strict=False)
    return missing


def imagenet_state_dict(spatial_dims: int) -> dict:
    """Download torchvision's pretrained weights (ImageNet for 2D, Kinetics-400 for 3D)."""
    if spatial_dims == 2:
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    else:
        weights = torchvision.models.video.R3D_18_Weights.KINETICS400_V1
    return weights.get_state_dict(progress=False), weights.url
