"""Mixed precision that is checked, layer by layer, before it is trusted.

On CPUs with native bf16 (AVX512-BF16, AMX) oneDNN's bf16 kernels make
training about twice as fast, but not every kernel is right: in torch 2.14's
oneDNN the weight gradient of a 3x3x3 stride-1 convolution over a 2x2x2 input
(the 3D ResNet-18's layer3 at 28^3, layer4 at 64^3) reads memory it never
wrote. About one call in six returns NaN, killing the run; the others return
weights gradients off by 10-80x their own size (docs/BENCHMARKS_recipes.md,
"bf16 on the CPU"). Forward passes and input gradients are right.

:func:`keep_wrong_layers_in_float32` runs every convolution and linear layer
of a model once in bf16 and once in float32 on the shapes training will give
it, with freed memory filled with NaN first (so a kernel that reads memory it
never wrote shows it at once), and keeps the layers whose bf16 output or
gradients differ from float32's in float32. The rest keep bf16's speed.
"""
from __future__ import annotations

import json
import os
import time

import torch
import torch.nn as nn

from medscope import atomic

# bf16 keeps 8 bits of mantissa: a layer's output and gradients are within ~1% of float32's
# (measured 0.3-0.5% relative to the largest value); a wrong kernel is off by its own size or more.
TOLERANCE = 0.05
PROBE_BATCH = 8
PROBES = 2  # calls per layer; a wrong kernel showed on every call (NaN, or an error above 1)
_PROBED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _Float32Layer:
    """Mixin of a layer that runs in float32 under autocast (its class is swapped in place, so the
    state dict, the parameters and the module tree stay those of the original layer)."""

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


_FLOAT32_CLASSES: dict[type, type] = {}


def keep_in_float32(layer: nn.Module) -> None:
    """Make ``layer`` ignore autocast: it computes (and returns) float32."""
    cls = type(layer)
    if issubclass(cls, _Float32Layer):
        return
    if cls not in _FLOAT32_CLASSES:
        _FLOAT32_CLASSES[cls] = type(f"Float32{cls.__name__}", (_Float32Layer, cls), {})
    layer.__class__ = _FLOAT32_CLASSES[cls]


def layer_inputs(model: nn.Module, input_shape: tuple[int, ...], device) -> dict[str, tuple[int, ...]]:
    """The input shape (without the batch) of every probed layer for images of ``input_shape``."""
    shapes = {}

    def record(name):
        def hook(module, args, output):
            shapes.setdefault(name, tuple(args[0].shape[1:]))
        return hook

    hooks = [module.register_forward_hook(record(name))
             for name, module in model.named_modules() if isinstance(module, _PROBED)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((2, *input_shape), device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return shapes


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference|: inf where ``value`` is not finite.

    >>> relative_error(torch.tensor([1.0, 2.02]), torch.tensor([1.0, 2.0]))
    0.00999...
    >>> relative_error(torch.tensor([float("nan")]), torch.tensor([1.0]))
    inf
    """
    value, reference = value.detach().float(), reference.detach().float()
    if not torch.isfinite(value).all():
        return float("inf")
    scale = reference.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return float((value - reference).abs().max() / scale)


def _poison_free_memory(numel: int, device) -> None:
    # allocated and freed at once: the next allocations of this size reuse memory holding NaN
    torch.full((numel,), float("nan"), device=device)


def layer_error(layer: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype, device, *,
                memory_format=None, batch: int = PROBE_BATCH, probes: int = PROBES, seed: int = 0) -> float:
    """The largest relative error of ``layer``'s output, input gradient and weight gradient under
    ``dtype`` autocast against float32, over ``probes`` calls on random inputs (a copy of the
    layer: the model's own gradients are untouched)."""
    import copy

    generator = torch.Generator(device="cpu").manual_seed(seed)
    probe = copy.deepcopy(layer).float()
    x = torch.randn((batch, *input_shape), generator=generator).to(device)
    if memory_format is not None and x.dim() == (4 if memory_format == torch.channels_last else 5):
        x, probe = x.contiguous(memory_format=memory_format), probe.to(memory_format=memory_format)
    x.requires_grad_()
    out = probe(x)
    reference = (out, *torch.autograd.grad(out.sum(), (x, probe.weight)))
    worst = 0.0
    for _ in range(probes):
        _poison_free_memory(x.numel() * 8 + out.numel() * 8, device)
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
            out = probe(x)
        grads = torch.autograd.grad(out.float().sum(), (x, probe.weight))
        worst = max(worst, *(relative_error(v, r) for v, r in zip((out, *grads), reference)))
    return worst


def layer_key(layer: nn.Module, input_shape: tuple[int, ...], dtype, memory_format) -> str:
    """What a kernel's choice depends on: the layer's kind and settings, its input shape, the dtype
    and memory layout, and the machine (CPU flags, torch and oneDNN versions)."""
    settings = {name: getattr(layer, name, None) for name in
                ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "in_features", "out_features")}
    settings["bias"] = getattr(layer, "bias", None) is not None
    return json.dumps([type(layer).__name__, settings, list(input_shape), str(dtype), str(memory_format)],
                      sort_keys=True, default=str)


def _machine_key(device) -> str:
    from medscope.train.loop import _cpu_flags, cpu_name

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)} torch {torch.__version__}"
    flags = sorted((_cpu_flags() or set()) & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx512_fp16"})
    onednn = getattr(torch.backends.mkldnn, "version", lambda: None)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    return f"cpu {cpu_name()} {' '.join(flags)} isa={isa} torch {torch.__version__} onednn {onednn() if callable(onednn) else ''}"


def _cache_file():
    from medscope.data import cache_dir

    return cache_dir() / "precision_probes.json"


def _read_cache() -> dict:
    try:
        record = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def keep_wrong_layers_in_float32(model: nn.Module, input_shape: tuple[int, ...], dtype, device, *,
                                 memory_format=None, tolerance: float = TOLERANCE, use_cache: bool = True) -> dict:
    """Probe every convolution and linear layer of ``model`` under ``dtype`` autocast; keep in
    float32 those whose low-precision results differ from float32's by more than ``tolerance``.

    Layers of identical settings and input shape are probed once, and each verdict is remembered
    per machine (CPU, torch and oneDNN versions) in the medscope cache folder, so a machine pays
    for a layer shape once. Returns ``{"float32_layers": {name: relative error}, "probed": n,
    "cached": m, "seconds": s}``, recorded in run.json. Without a low-precision ``dtype`` nothing
    is probed and nothing changes.
    """
    result = {"float32_layers": {}, "probed": 0, "cached": 0, "seconds": 0.0}
    if dtype is None:
        return result
    started = time.perf_counter()
    machine = _machine_key(device)
    cache = _read_cache() if use_cache else {}
    known = dict(cache.get(machine) or {})
    modules = dict(model.named_modules())
    for name, shape in layer_inputs(model, input_shape, device).items():
        key = layer_key(modules[name], shape, dtype, memory_format)
        if key in known:
            result["cached"] += 1
        else:
            known[key] = layer_error(modules[name], shape, dtype, device, memory_format=memory_format)
            result["probed"] += 1
        error = known[key]
        if not error <= tolerance:  # also NaN
            result["float32_layers"][name] = error
            keep_in_float32(modules[name])
    if use_cache and result["probed"]:
        try:
            path = _cache_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(path, {**_read_cache(), machine: {k: (v if v < 1e30 else 1e30) for k, v in known.items()}})
        except OSError:
            pass  # a cache that cannot be written costs a probe next time, nothing else
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
