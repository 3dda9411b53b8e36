"""Which INT8 recipe to ship: batch-1 latency and test AUC of the alternatives, in one measurement.

    python bench/quantize_speed.py --run /tmp/q/results/0001_breastmnist28_resnet18 --runs 300

quantize.py makes two choices this script justifies (see docs/BENCHMARKS_quantize.md):
static INT8 with uint8 activations and 7-bit weights (reduce_range), and dynamic
INT8 with uint8 weights. Here they are measured against the obvious alternatives
on the same real test image, interleaved (export.time_calls), at 1 thread and at
every usable CPU:

- PyTorch eager, channels_last (as trained) and contiguous
- ONNX FP32
- static INT8: uint8 activations + 7-bit weights (default), + 8-bit weights, int8 activations
- dynamic INT8: uint8 weights (default), int8 weights

Prints a markdown table (p50/p95 in ms, test AUC, agreement with FP32) and
writes the numbers as JSON with --out.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from medscope import checkpoints, data, runs  # noqa: E402
from medscope.deploy import export  # noqa: E402

STATIC_VARIANTS = {  # name: (activation type, reduce_range)
    "int8_static_u8_7bit (default)": ("uint8", True),
    "int8_static_u8_8bit": ("uint8", False),
    "int8_static_s8": ("int8", False),
}
DYNAMIC_VARIANTS = {"int8_dynamic_u8w (default)": "uint8", "int8_dynamic_s8w": "int8"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder")
    parser.add_argument("--data-dir", default=runs.default_data_dir())
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 calls per model and thread count")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="thread counts to compare (default: 1 and every usable CPU)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    run = runs.resolve_run(".", args.run)
    model, checkpoint = checkpoints.load_run_model(run, "best", "cpu")
    spec = checkpoint["spec"]
    info = data.dataset_info(checkpoint["config"]["dataset"], spec["size"])
    test = data.load_split(info, args.data_dir, "test")
    calib = data.subset(data.load_split(info, args.data_dir, "train"), args.calib, 0)
    labels = test.labels.numpy()
    threads = args.threads or sorted({1, export.default_threads()})

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = work / "fp32.onnx"
        export.export_onnx(model, test.images[:2].float(), fp32)
        prepared = export.preprocess_for_quantization(fp32, work / "prepared.onnx")
        files = {"onnx_fp32": fp32}
        for name, (activations, reduce_range) in STATIC_VARIANTS.items():
            files[name] = work / f"{len(files)}.onnx"
            export.quantize_static_int8(prepared, files[name], calib.images, activation_type=activations,
                                        reduce_range=reduce_range)
        for name, weights in DYNAMIC_VARIANTS.items():
            files[name] = work / f"{len(files)}.onnx"
            export.quantize_dynamic_int8(prepared, files[name], weight_type=weights)

        reference = export.float64_scores(info.task, export.run_session(export.make_session(fp32, threads=1),
                                                                test.images, 64))
        accuracy = {}
        for name, path in files.items():
            logits = export.run_session(export.make_session(path, threads=1), test.images, 64)
            s = export.float64_scores(info.task, logits)
            accuracy[name] = export.evaluate_scores(info.task, labels, s, reference)
            accuracy[name]["runtime_fp32_ops"] = export.graph_ops(path, work, threads=1)["runtime"]["fp32"]

        single = export.pixels(test.images[:1])
        latency = {}
        for n in threads:
            with export.torch_threads(n):
                calls, cpu = {}, torch.device("cpu")
                if not info.is_3d:  # channels_last (how 2D models train) is a 2D layout
                    calls["pytorch_channels_last"] = export.pytorch_predictor(model, cpu, torch.channels_last)
                calls["pytorch_contiguous"] = export.pytorch_predictor(model, cpu)
                calls.update({name: export.onnx_predictor(export.make_session(path, threads=n))
                              for name, path in files.items()})
                times = export.time_calls({k: (lambda f=f: f(single)) for k, f in calls.items()},
                                          runs=args.runs, warmup=args.warmup)
            latency[n] = {name: export.latency_stats(t) for name, t in times.items()}
            print(f"measured at {n} thread(s)", file=sys.stderr)

    names = list(latency[threads[0]])
    header = "| model | " + " | ".join(f"p50 / p95 ms ({n} thr)" for n in threads) + " | test AUC | agreement |"
    print(header)
    print("| --- |" + " ---: |" * (len(threads) + 2))
    for name in names:
        cells = [f"{latency[n][name]['p50_ms']:.2f} / {latency[n][name]['p95_ms']:.2f}" for n in threads]
        acc = accuracy.get(name)
        quality = f"{acc['auc']:.4f} | {acc['agreement']:.1%}" if acc else "as ONNX FP32 | -"
        print(f"| {name} | " + " | ".join(cells) + f" | {quality} |")
    for name, acc in accuracy.items():
        print(f"{name}: runtime FP32 ops {acc['runtime_fp32_ops']}")
    if args.out:
        from medscope import atomic

        atomic.write_json(args.out, {"run": str(run.path), "runs": args.runs, "warmup": args.warmup,
                                     "threads": threads, "latency": latency, "accuracy": accuracy,
                                     "load_average": [round(x, 2) for x in os.getloadavg()]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
