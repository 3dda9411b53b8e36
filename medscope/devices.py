"""Which torch device a ``--device`` value names, refused clearly when it is not there."""
from __future__ import annotations

from medscope.errors import UsageError


def resolve_device(spec: str):
    """``auto`` -> cuda if available else cpu; refuse a CUDA device that is not there."""
    import torch

    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        index = spec.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UsageError(f"--device {spec}: no such GPU (found {torch.cuda.device_count()})")
        return torch.device(spec)
    raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
