"""Speed of explain.py's two hot paths against the obvious alternatives, on the same inputs.

1. Batched Grad-CAM (medscope.explain.cam.GradCAM) against pytorch-grad-cam's
   GradCAM: same model, layer, images and targets (the predicted class), both
   returning maps at the input resolution. Images (volumes) per second.
2. MC dropout with T = 20 (medscope.explain.uncertainty.mc_predict: backbone once,
   head sampled T times) against one ordinary forward pass over the same
   split and a naive loop of 20 full passes with dropout switched on.

    MEDMNIST_DIR=../shared/medmnist python bench/explain_speed.py
    python bench/explain_speed.py --repeats 5 --no-write

Every timing is the median of ``--repeats`` runs, alternating the contenders.
The table is printed and written to docs/BENCHMARKS_explain.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from timing import interleaved  # noqa: E402  (bench/timing.py, beside this script)

from medscope import atomic, data  # noqa: E402
from medscope.explain import cam, uncertainty  # noqa: E402
from medscope.models import build_model  # noqa: E402
from medscope.runs import default_data_dir  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median is reported)")
    parser.add_argument("--batch-2d", type=int, default=64, help="Grad-CAM batch of 28 px images (default 64)")
    parser.add_argument("--batch-3d", type=int, default=16, help="Grad-CAM batch of 28^3 volumes (default 16)")
    parser.add_argument("--mc-3d", type=int, default=32, help="volumes in the 3D MC-dropout timing (default 32)")
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--output", default=str(ROOT / "docs" / "BENCHMARKS_explain.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_and_split(flag: str, data_dir, dims: int):
    info = data.dataset_info(flag, 28)
    split = data.load_split(info, data_dir, "test")
    torch.manual_seed(0)
    model = build_model("resnet18", info.n_channels, info.num_classes, dims, 28, dropout=0.2).eval()
    return model, info, split


def bench_gradcam(model, images: torch.Tensor, repeats: int) -> dict:
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM

    layer = cam.auto_layer(model, images.shape[1:])
    module = dict(model.named_modules())[layer]
    x = data.normalize(images)

    def ours():
        with cam.GradCAM(model, layer) as gradcam:
            return gradcam(x).maps

    def reference():
        with ReferenceGradCAM(model, [module]) as reference_cam:
            return reference_cam(x, None)

    assert tuple(ours().shape) == tuple(reference().shape)
    seconds = interleaved({"medscope": ours, "pytorch-grad-cam": reference}, repeats)
    return {"layer": layer, "n": len(x), **seconds}


def bench_mc(model, split, task: str, passes: int, repeats: int) -> dict:
    def forward():
        with torch.no_grad():
            for index in data.batches(split, 256):
                model(data.normalize(split.images[index]))

    def mc():
        uncertainty.mc_predict(model, split, task, "cpu", passes=passes, batch_size=256)

    def naive():
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        model.eval()
        for m in dropouts:
            m.train()
        try:
            with torch.no_grad():
                for index in data.batches(split, 256):
                    x = data.normalize(split.images[index])
                    for _ in range(passes):
                        model(x)
        finally:
            model.eval()

    seconds = interleaved({"forward": forward, "mc": mc}, repeats)
    seconds["naive"] = median_seconds(naive, max(1, repeats // 2))  # 20x longer: fewer repeats
    return {"n": len(split), **seconds}


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    load_start = os.getloadavg()
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    rows_cam, rows_mc = [], []

    model2d, info2d, split2d = model_and_split("breastmnist", args.data_dir, 2)
    model3d, info3d, split3d = model_and_split("adrenalmnist3d", args.data_dir, 3)

    print("Grad-CAM 2D ...", flush=True)
    rows_cam.append(("2D breastmnist 28 px, ResNet-18",
                     bench_gradcam(model2d, split2d.images[:args.batch_2d], args.repeats)))
    print("Grad-CAM 3D ...", flush=True)
    rows_cam.append(("3D adrenalmnist3d 28³, ResNet-18 (r3d)",
                     bench_gradcam(model3d, split3d.images[:args.batch_3d], args.repeats)))
    print("MC dropout 2D ...", flush=True)
    rows_mc.append(("2D breastmnist test split, ResNet-18",
                    bench_mc(model2d, split2d, info2d.task, args.passes, args.repeats)))
    print("MC dropout 3D ...", flush=True)
    small3d = data.Split(split3d.images[:args.mc_3d], split3d.labels[:args.mc_3d])
    rows_mc.append((f"3D adrenalmnist3d, first {args.mc_3d} test volumes, r3d",
                    bench_mc(model3d, small3d, info3d.task, args.passes, args.repeats)))
    load_end = os.getloadavg()

    lines = ["## Grad-CAM throughput (maps at input resolution, predicted class, batched)", "",
             "| input | layer | batch | medscope (img/s) | pytorch-grad-cam (img/s) | speed-up |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name, r in rows_cam:
        ours, ref = r["n"] / r["medscope"], r["n"] / r["pytorch-grad-cam"]
        lines.append(f"| {name} | {r['layer']} | {r['n']} | {ours:.1f} | {ref:.1f} | {ours / ref:.2f}x |")
    lines += ["", f"## MC dropout, T = {args.passes}", "",
              "| input | images | one forward pass (s) | MC dropout, cached backbone (s) | ratio | "
              f"naive {args.passes}-pass loop (s) | ratio |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows_mc:
        lines.append(f"| {name} | {r['n']} | {r['forward']:.3f} | {r['mc']:.3f} | {r['mc'] / r['forward']:.2f}x | "
                     f"{r['naive']:.3f} | {r['naive'] / r['forward']:.2f}x |")
    table = "\n".join(lines)
    print()
    print(table)

    if not args.no_write:
        cpu = platform.processor() or platform.machine()
        env = (f"Measured {started} by `python bench/explain_speed.py` (median of {args.repeats} runs, contenders "
               f"alternating; the naive loop median of {max(1, args.repeats // 2)}). CPU: {cpu}, "
               f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
               f"pytorch-grad-cam {_version('grad-cam')}. Seeded untrained models (speed does not depend on the "
               "weights); real MedMNIST test images.")
        note = (f"**The CPU was shared** with other engineers' test runs and benchmarks while this ran (load average "
                f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end, on {os.cpu_count()} cores): absolute "
                "numbers are low and noisy; the ratios, measured on the same inputs in alternation, are what to read.")
        targets = ("Targets: batched Grad-CAM throughput at least pytorch-grad-cam's; MC dropout with T = 20 "
                   "at most 1.5x one ordinary forward pass.")
        text = "\n".join(["# explain.py benchmarks", "", env, "", note, "", targets, "", table, "",
                          "Why it is faster: Grad-CAM takes the gradient with `torch.autograd.grad` with respect to the "
                          "layer output only, with the parameters frozen, so neither the forward graph before the layer "
                          "nor any weight gradient is built; pytorch-grad-cam runs `loss.backward()` through the whole "
                          "network, then resizes map by map with OpenCV / SciPy. MC dropout runs the backbone once per "
                          "batch and samples only the head (dropout + linear), which costs almost nothing.", ""])
        atomic.write_text(args.output, text)
        print(f"\nwrote {args.output}")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
