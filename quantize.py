"""Export a trained run to ONNX, verify it, quantize it to INT8 and benchmark every form.

    python quantize.py                      # the newest run in results/
    python quantize.py --run 0007_breastmnist28_resnet18 --calib 512 --runs 500
    python quantize.py --run 0007 --device cuda   # also time the CUDA execution provider

Writes results/<run>/export/: model_fp32.onnx, model_int8_static.onnx,
model_int8_dynamic.onnx, export_report.json, export_report.md, predict_onnx.py
and example_input.npy. The graphs take raw pixels 0..255 as float32 and
normalize them themselves.
"""
from __future__ import annotations

import sys

from medscope.app import cli  # first: a Ctrl-C during the imports is one line

# isort: split
from medscope import limits

DEFAULT_RUNS = 300


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="quantize.py",
                                description="ONNX export with verification, INT8 quantization and benchmarks.")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which weights to export (default: best)")
    calls = cli.int_in_range(1, limits.TIMED_CALLS_MAX)
    parser.add_argument("--calib", type=cli.int_in_range(1, limits.CALIBRATION_IMAGES_MAX), default=256, metavar="N",
                        help=f"training images used to calibrate static INT8, at most "
                             f"{limits.CALIBRATION_IMAGES_MAX} (default: 256)")
    parser.add_argument("--runs", type=calls, default=DEFAULT_RUNS, metavar="N",
                        help=f"timed batch-1 calls per model, at most {limits.TIMED_CALLS_MAX} "
                             f"(default: {DEFAULT_RUNS})")
    parser.add_argument("--warmup", type=calls, default=20, metavar="N",
                        help=f"untimed calls per model before timing, at most {limits.TIMED_CALLS_MAX} (default: 20)")
    parser.add_argument("--throughput-runs", type=calls, default=10, metavar="N",
                        help=f"timed calls per model at --batch-size, at most {limits.TIMED_CALLS_MAX} (default: 10)")
    parser.add_argument("--batch-size", type=cli.int_in_range(1, limits.BATCH_SIZE_MAX), default=64,
                        help=f"batch size of the throughput measurement, at most {limits.BATCH_SIZE_MAX} "
                             "(default: 64)")
    parser.add_argument("--threads", type=cli.int_in_range(1, limits.THREADS_MAX), default=None,
                        help=f"intra-op threads for ONNX Runtime and PyTorch, at most {limits.THREADS_MAX} "
                             "(default: every usable CPU)")
    parser.add_argument("--activation-type", choices=("uint8", "int8"), default="uint8",
                        help="static INT8 activation type (default: uint8, the fast x86 U8S8 kernels)")
    parser.add_argument("--dynamic-weight-type", choices=("uint8", "int8"), default="uint8",
                        help="dynamic INT8 weight type (default: uint8; ConvInteger is slow with int8)")
    parser.add_argument("--no-reduce-range", dest="reduce_range", action="store_false",
                        help="use full 8-bit weights for static INT8 (default: 7-bit, safe on AVX2 without VNNI)")
    parser.add_argument("--test-subset", type=cli.int_in_range(1, limits.IMAGES_MAX), default=None, metavar="N",
                        help="evaluate on a seeded random N-image subset of the test split (quick checks; at most "
                             f"{limits.IMAGES_MAX})")
    cli.add_common_args(parser, run_arg="one")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from medscope.deploy import export

    run = cli.resolve_run(args.results_dir, args.run)
    options = export.ExportOptions(
        checkpoint=args.checkpoint, calib=args.calib, runs=args.runs, warmup=args.warmup,
        throughput_runs=args.throughput_runs, batch_size=args.batch_size, threads=args.threads or 0,
        activation_type=args.activation_type, dynamic_weight_type=args.dynamic_weight_type,
        reduce_range=args.reduce_range, test_subset=args.test_subset, seed=args.seed, device=args.device)
    print(f"exporting {run.name}")
    exported = export.export_run(run, args.data_dir, options, log=print)  # writes export/ and records its files
    report = exported.report
    print("\n".join(export.models_table(report) + export.gpu_table(report) + export.targets_table(report)))
    for note in report["targets"]["notes"]:
        print(f"note: {note}")
    print(f"results: {run.layout.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
