"""bf16 on the CPU: which layers' kernels are wrong, what it costs to keep them in float32, and
whether training still meets a non-finite step.

    MEDMNIST_DIR=../shared/medmnist python bench/bf16_training.py [--steps 40] [--repeats 3] \
        [--out bf16_training.json]

Three measurements on the 3D ResNet-18 at 28^3 (adrenalmnist3d, batch 64, AdamW 2e-3, the general
recipe's light augmentation) and the 2D ResNet-18 at 28 px (breastmnist):

1. ``probe``: :func:`medscope.train.precision.keep_wrong_layers_in_float32` on a fresh model (no
   cache): every layer's largest relative error under bf16 autocast against float32.
2. ``speed``: training steps per second, interleaved ``--repeats`` times: float32, bf16 in every
   layer, and bf16 with the probed layers in float32 (what train.py does). Medians.
3. ``nonfinite``: ``--steps`` real training steps from the same start in "bf16 everywhere" and in
   "checked" mode, counting the steps whose loss or gradient is not finite (each is skipped, as
   train.py skips it, so the count is not cut short by the first one).

Run it alone: two CPU-heavy jobs at once double every timing. The CPU (and whether it has native
bf16) is recorded beside the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medscope import data  # noqa: E402
from medscope.models import build_model, model_spec  # noqa: E402
from medscope.runs import default_data_dir  # noqa: E402
from medscope.train import augment, loop, precision  # noqa: E402

CASES = {"3d": ("adrenalmnist3d", 64), "2d": ("breastmnist", 64)}


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--steps", type=int, default=40, help="training steps per non-finite count")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--timed-steps", type=int, default=4, help="steps per timing round (after 1 warm-up)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--out", default="bf16_training.json")
    return parser


def fresh_model(info, mode: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(**model_spec("resnet18", info.n_channels, info.num_classes, info.spatial_dims, info.size, 0.2))
    memory_format = loop.memory_format_for(info.spatial_dims, torch.device("cpu"))
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    probe = None
    if mode == "checked":
        probe = precision.keep_wrong_layers_in_float32(model, (info.n_channels, *(info.size,) * info.spatial_dims),
                                                       torch.bfloat16, "cpu", memory_format=memory_format,
                                                       use_cache=False)
    return model, memory_format, probe


def batches(split, batch_size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    while True:
        for index in torch.randperm(len(split), generator=generator).split(batch_size):
            if len(index) == batch_size:
                yield data.gather(split, index, torch.device("cpu"))


def train_steps(model, memory_format, info, split, batch_size, steps, dtype, seed=0):
    """``steps`` AdamW steps; returns (seconds per step after the first, non-finite steps)."""
    optimizer = loop.make_optimizer(model, "adamw", 2e-3, 5e-4)
    aug = augment.make_config(info.flag, "light", info.spatial_dims)
    generator = torch.Generator().manual_seed(seed)
    nonfinite, times = 0, []
    model.train()
    source = batches(split, batch_size, seed)
    for _ in range(steps):
        images, labels = next(source)
        started = time.perf_counter()
        x = augment.augment_batch(data.normalize(images), aug, generator)
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = loop.loss_fn(info.task, logits, labels.view(-1), 0.0)
        optimizer.zero_grad(set_to_none=True)
        if not (torch.isfinite(loss) and loop._backward_and_step(model, loss, optimizer, None, 0.0)):
            nonfinite += 1
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) if len(times) > 1 else times[0], nonfinite


def main(args) -> dict:
    result = {"cpu": loop.cpu_name(), "native_bf16": loop.cpu_supports_bf16(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "cases": {}}
    for case in args.cases:
        flag, batch_size = CASES[case]
        info = data.dataset_info(flag, 28)
        split = data.load_dataset(info, args.data_dir, splits=("train",))["train"]
        _, _, probe = fresh_model(info, "checked")
        record = {"dataset": flag, "batch": batch_size, "probe": probe, "speed": {}, "nonfinite": {}}
        print(f"{case}: {len(probe['float32_layers'])} layer(s) kept in float32 of {probe['probed']} probed "
              f"({probe['seconds']} s): {probe['float32_layers']}", flush=True)
        modes = {"float32": None, "bf16 everywhere": torch.bfloat16, "bf16 checked": torch.bfloat16}
        rounds = {mode: [] for mode in modes}
        for _ in range(args.repeats):  # interleaved: a change in the machine's load hits every mode alike
            for mode, dtype in modes.items():
                model, memory_format, _ = fresh_model(info, "checked" if mode == "bf16 checked" else "plain")
                seconds, _ = train_steps(model, memory_format, info, split, batch_size, args.timed_steps + 1, dtype)
                rounds[mode].append(batch_size / seconds)
        for mode, values in rounds.items():
            record["speed"][mode] = {"images_per_s": statistics.median(values), "rounds": values}
            print(f"  {mode:16s} {statistics.median(values):7.1f} img/s  (rounds {', '.join(f'{v:.1f}' for v in values)})",
                  flush=True)
        for mode in ("bf16 everywhere", "bf16 checked"):
            model, memory_format, _ = fresh_model(info, "checked" if mode == "bf16 checked" else "plain")
            _, nonfinite = train_steps(model, memory_format, info, split, batch_size, args.steps, torch.bfloat16)
            record["nonfinite"][mode] = {"steps": args.steps, "nonfinite_steps": nonfinite}
            print(f"  {mode:16s} {nonfinite} non-finite of {args.steps} steps", flush=True)
        result["cases"][case] = record
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
