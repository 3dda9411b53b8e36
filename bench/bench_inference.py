"""How fast analyze_inference.py recomputes a split, against the obvious alternatives.

    MEDMNIST_DIR=../shared/medmnist python bench/bench_inference.py

On the whole pneumoniamnist test split (624 real images, 28 px) with a
ResNet-18 (weights do not change the cost, so a fresh model is used):

* ``collect_outputs``: what the script does — batches of 256, no gradient,
  channel means taken inside forward hooks, channels_last on 2D;
* the same in the default (NCHW) memory layout;
* the obvious alternative: one image at a time, autograd on, hooks that keep
  whole feature maps and average them afterwards;
* t-SNE of the 624 embeddings with 1 OpenMP thread (the default of
  ``medscope.analysis.inference``) against scikit-learn's default thread count;
* ``medscope.analysis.inference.analyze`` on those outputs: every number the
  script writes (tables, calibration, PCA and t-SNE, confident errors), called
  directly, without the figures and files.

Timings depend on the machine's load; the load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medscope import data, runs  # noqa: E402
from medscope.activations import collect_outputs  # noqa: E402
from medscope.analysis import inference  # noqa: E402
from medscope.devices import resolve_device  # noqa: E402
from medscope.models import build_model  # noqa: E402


def naive_outputs(model, split, task, device, n):
    """Per-image forward passes with autograd on; hooks store full feature maps."""
    maps = {name: [] for name, _ in model.blocks()}
    handles = [module.register_forward_hook(lambda m, i, o, name=name: maps[name].append(o.detach().cpu().clone()))
               for name, module in model.blocks()]
    logits = []
    try:
        for i in range(n):
            x = data.normalize(split.images[i:i + 1].to(device))
            logits.append(model(x).detach().cpu())
    finally:
        for handle in handles:
            handle.remove()
    means = {name: torch.cat(v).mean(dim=tuple(range(2, v[0].ndim))) for name, v in maps.items()}
    return torch.cat(logits), means


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=runs.default_data_dir())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-images", type=int, default=128,
                        help="images for the per-image baseline (default 128: it is slow)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    info = data.dataset_info("pneumoniamnist", 28)
    split = data.load_split(info, args.data_dir, "test")
    torch.manual_seed(0)
    model = build_model("resnet18", info.n_channels, info.num_classes, 2, 28).to(device).eval()
    n = len(split)
    print(f"pneumoniamnist test: {n} images, {device}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")

    collect_outputs(model, data.subset(split, 32, 0), info.task, device, batch_size=32)  # warm-up (oneDNN)
    rows = []
    cl_model = model.to(memory_format=torch.channels_last)
    seconds, fast = timed(lambda: collect_outputs(cl_model, split, info.task, device, batch_size=256,
                                                  memory_format=torch.channels_last))
    rows.append(("collect_outputs, batch 256, no grad, channels_last (used)", n, seconds))
    model = model.to(memory_format=torch.contiguous_format)
    seconds, _ = timed(lambda: collect_outputs(model, split, info.task, device, batch_size=256))
    rows.append(("collect_outputs, batch 256, no grad, NCHW", n, seconds))
    k = min(args.naive_images, n)
    seconds, (naive_logits, naive_means) = timed(lambda: naive_outputs(model, split, info.task, device, k))
    rows.append(("per image, autograd on, full maps kept in hooks", k, seconds))
    worst = max(float((fast["activations"][name][:k] - naive_means[name]).abs().max()) for name in naive_means)
    logit_gap = float((fast["logits"][:k] - naive_logits).abs().max())

    embeddings = fast["embeddings"].numpy()
    for threads, label in ((1, "t-SNE of 624 embeddings, 1 OpenMP thread (used)"),
                           (None, "t-SNE of 624 embeddings, scikit-learn default threads")):
        seconds, _ = timed(lambda: inference.embedding_projections(embeddings, seed=0, tsne_threads=threads))
        rows.append((label, n, seconds))
    outputs = dict(fast, split="test", task=info.task)
    seconds, _ = timed(lambda: inference.analyze(outputs, info, split.images, seed=0))
    rows.append(("inference.analyze: every number of the analysis (tables, t-SNE, errors), no files", n, seconds))

    print("\n| what | images | seconds | images/s |\n| --- | ---: | ---: | ---: |")
    for label, count, seconds in rows:
        print(f"| {label} | {count} | {seconds:.2f} | {count / seconds:.0f} |")
    print(f"\nagreement (first {k} images): max |channel mean| difference {worst:.2e}, max |logit| difference "
          f"{logit_gap:.2e}; load average now {os.getloadavg()[0]:.1f}")
    return 0 if np.isfinite(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
