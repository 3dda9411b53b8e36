"""Checkpoints: saving them atomically and rebuilding models from a run folder.

A checkpoint is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(..., weights_only=True)``: a results folder may come from
someone else, and unpickling arbitrary objects would run their code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from medscope import atomic
from medscope.errors import UsageError
from medscope.models import build_model, check_spec, load_pretrained
from medscope.runs import Run


def save(path, checkpoint: dict) -> Path:
    return atomic.save_torch(path, checkpoint)


def load(path, map_location="cpu") -> dict:
    """Load a checkpoint safely; a missing or damaged file is a UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} not found; the run has no saved weights (was training interrupted "
                         "before the first epoch ended?)")
    if path.stat().st_size == 0:  # what a disk that filled up, or a copy that broke off, leaves
        raise UsageError(f"{path} is empty (0 bytes), not a checkpoint; the file was damaged")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, MemoryError):
        raise  # the disk or the machine, not the file: the error boundary says which
    except Exception as exc:  # noqa: BLE001 - torch reports a damaged file in many ways (an empty one: IndexError)
        raise UsageError(f"{path} is not a readable medscope checkpoint "
                         f"({_first_line(exc) or type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "spec" not in checkpoint:
        raise UsageError(f"{path} is not a medscope checkpoint (no model state or spec)")
    check_spec(checkpoint["spec"], path)
    state = checkpoint["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: the model state is not a dict of tensors")
    return checkpoint


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def model_from_checkpoint(checkpoint: dict, device="cpu") -> torch.nn.Module:
    model = build_model(**checkpoint["spec"])
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:  # shapes or names that do not fit the spec
        raise UsageError(f"the checkpoint's weights do not fit its model spec ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval()


def load_run_model(run: Run, which: str = "best", device="cpu"):
    """The run's model (``best`` or ``last``) in eval mode, and its checkpoint."""
    checkpoint = load(run.layout.checkpoint(which))
    return model_from_checkpoint(checkpoint, device), checkpoint


def initial_model(spec: dict, seed: int, pretrained_state: dict | None = None) -> torch.nn.Module:
    """The model exactly as training started: built under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    model = build_model(**spec)
    if pretrained_state is not None:
        load_pretrained(model, pretrained_state, spec["spatial_dims"])
    return model


def load_state_dict(path) -> dict:
    """A plain state dict (e.g. torchvision's resnet18-*.pth) loaded safely."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--weights {path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input here
        raise UsageError(f"--weights {path}: not a readable state dict ({str(exc).splitlines()[0]})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"--weights {path}: expected a state dict of tensors")
    return state
