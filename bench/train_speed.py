"""Training throughput (images/s) of each model, 2D and 3D at 28 px, precision and layout variants.

    python bench/train_speed.py [--steps 6] [--device cpu]

For every model x modality it times full optimizer steps (forward, backward,
AdamW step) on random batches and prints the median images/s of each variant:
fp32, fp32 + channels_last (2D), and bf16 autocast (with channels_last for 2D).
The first step of each variant is a warm-up and is not counted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medscope.models import build_model  # noqa: E402
from medscope.train.loop import cpu_supports_bf16  # noqa: E402


def images_per_second(model, x, y, steps: int, amp_dtype, memory_format) -> float:
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
        x = x.contiguous(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return x.shape[0] / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["resnet18", "cnn"])
    parser.add_argument("--batch-2d", type=int, default=64)
    parser.add_argument("--batch-3d", type=int, default=16)
    args = parser.parse_args()
    device = torch.device(args.device)
    half = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"native CPU bf16: {cpu_supports_bf16()}")
    print("| model | input | batch | fp32 img/s | fp32 + channels_last | "
          f"{str(half).replace('torch.', '')} autocast | ratio amp/fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for dims in (2, 3):
            batch = args.batch_2d if dims == 2 else args.batch_3d
            torch.manual_seed(0)
            x = torch.randn(batch, 1, *([28] * dims), device=device)
            y = torch.randint(0, 2, (batch,), device=device)
            make = lambda: build_model(name, 1, 2, dims, 28).to(device)  # noqa: E731
            fp32 = images_per_second(make(), x, y, args.steps, None, None)
            channels_last = torch.channels_last if dims == 2 else torch.channels_last_3d
            fp32_cl = images_per_second(make(), x, y, args.steps, None, channels_last)
            amp = images_per_second(make(), x, y, max(2, args.steps // 3), half, channels_last if dims == 2 else None)
            print(f"| {name} | {dims}D 28 | {batch} | {fp32:.1f} | {fp32_cl:.1f} | {amp:.1f} | {amp / fp32:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
