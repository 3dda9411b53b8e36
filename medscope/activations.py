"""Batched, gradient-free forward passes that also record what the network does.

:func:`collect_outputs` runs a split through a model once and returns logits,
probabilities, penultimate embeddings and, for every block the model names
(``model.blocks()``), the per-sample channel means of the block's output,
recorded with forward hooks.
"""
from __future__ import annotations

import contextlib

import torch

from medscope import tasks
from medscope.data import Split, batches, gather, normalize
from medscope.train import augment


@contextlib.contextmanager
def channel_mean_hooks(named_modules):
    """Record ``output.mean(spatial dims)`` of each module; hooks removed on exit."""
    records: dict[str, list[torch.Tensor]] = {name: [] for name, _ in named_modules}
    handles = []

    def make_hook(name):
        def hook(_module, _inputs, output):
            dims = tuple(range(2, output.ndim))
            records[name].append(output.detach().float().mean(dim=dims).cpu())
        return hook

    try:
        for name, module in named_modules:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield records
    finally:
        for handle in handles:
            handle.remove()


def autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def collect_outputs(model, split: Split, task: str, device, *, batch_size: int = 256, amp_dtype=None,
                    activations: bool = True, tta_flag: str | None = None, memory_format=None) -> dict:
    """Logits, probabilities, labels, embeddings and per-block channel means of a split.

    With ``tta_flag`` (a dataset flag) the probabilities are the mean over the
    test-time views of :func:`medscope.train.augment.tta_views`; logits, embeddings
    and activations are those of the unmodified image.
    """
    model.eval()
    kind = tasks.task(task)
    blocks = model.blocks() if activations else []
    logits, probs, embeddings = [], [], []
    with channel_mean_hooks(blocks) as records:
        for index in batches(split, batch_size):
            images, _ = gather(split, index, device)
            x = normalize(images)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            with autocast(device, amp_dtype):
                feats = model.features(x)
                out = model.head(feats)
            logits.append(out.float().cpu())
            embeddings.append(feats.float().cpu())
            score = kind.scores(out)
            if tta_flag is not None:
                views = list(augment.tta_views(x, tta_flag))
                if len(views) > 1:
                    with _HooksPaused(records):
                        for view in views[1:]:
                            with autocast(device, amp_dtype):
                                score = score + kind.scores(model(view))
                    score = score / len(views)
            probs.append(score.float().cpu())
    result = {
        "logits": torch.cat(logits),
        "probabilities": torch.cat(probs),
        "labels": split.labels.clone(),
        "embeddings": torch.cat(embeddings),
        "layer_names": [name for name, _ in blocks],
        "activations": {name: torch.cat(values) for name, values in records.items()},
    }
    return result


class _HooksPaused:
    """Drop what hooks record during TTA views (only the plain image counts)."""

    def __init__(self, records):
        self.records = records

    def __enter__(self):
        self.lengths = {k: len(v) for k, v in self.records.items()}

    def __exit__(self, *exc):
        for k, n in self.lengths.items():
            del self.records[k][n:]
