"""Activations, embeddings and calibration of a trained model.

    python analyze_inference.py                          # newest run, its stored test outputs
    python analyze_inference.py --run 0007 --split val   # recompute on the validation split

Reads ``inference_outputs.pt`` of a run folder (or recomputes the outputs of
``--split`` with ``best.pt``) and writes ``results/<run>/inference/`` (train
and val: ``inference/<split>/``): ``inference_summary.csv`` (one row per
block), ``inference_channels.csv`` (per-channel means), calibration tables and
the figures; see medscope/analysis/inference.py for every definition.
"""
from __future__ import annotations

import argparse
import sys
import time

from medscope.app import cli  # first: a Ctrl-C during the imports is one line

# isort: split
from medscope import limits


def error_count(text: str) -> int:
    from medscope.analysis.inference_plots import MAX_ERRORS

    value = cli.positive_int(text)
    if value > MAX_ERRORS:
        raise argparse.ArgumentTypeError(f"at most {MAX_ERRORS} errors fit the grid, got {value}")
    return value


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="analyze_inference.py",
                                description="Activations, embeddings and calibration of a trained run.")
    parser.add_argument("--split", choices=("train", "val", "test"), default=None,
                        help="recompute the outputs on this split with best.pt (default: the stored test "
                             "outputs, recomputed only when inference_outputs.pt is missing)")
    parser.add_argument("--bins", type=cli.int_in_range(1, limits.BINS_MAX), default=15,
                        help=f"equal-width confidence bins for ECE and the reliability diagram, at most "
                             f"{limits.BINS_MAX} (default: 15)")
    parser.add_argument("--batch-size", type=cli.int_in_range(1, limits.BATCH_SIZE_MAX), default=256,
                        help=f"batch size when recomputing, at most {limits.BATCH_SIZE_MAX} (default: 256)")
    parser.add_argument("--tsne-points", type=cli.int_in_range(1, limits.TSNE_POINTS_MAX), default=2000,
                        help="t-SNE runs on a seeded random subsample of at most this many points, at most "
                             f"{limits.TSNE_POINTS_MAX} (default: 2000)")
    parser.add_argument("--errors", type=error_count, default=16,
                        help="how many of the most confident errors to show (default: 16, at most 24)")
    parser.add_argument("--dead-threshold", type=cli.non_negative_float, default=1e-8,
                        help="a channel is dead when its mean activation is <= this (a finite number >= 0) for "
                             "every sample (default: 1e-8)")
    cli.add_common_args(parser, run_arg="one")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from medscope import data, runs
    from medscope.analysis import inference

    run = cli.resolve_run(args.results_dir, args.run)
    cfg = run.info().get("config") or {}
    if "dataset" not in cfg:
        raise cli.UsageError(f"{run.json_path} has no config.dataset; is {run.path} a finished train.py run?")
    info = data.dataset_info(cfg["dataset"], int(cfg.get("size", 28)))
    stored = run.layout.inference_outputs
    recompute = args.split is not None or not stored.is_file()
    split = args.split or "test"
    if recompute:
        inference.require_checkpoint(run, split, stored_missing=not stored.is_file())
        device = cli.resolve_device(args.device)
        outputs = None
    else:
        outputs = inference.load_outputs(stored, info)
        split = outputs.get("split", "test")

    data_dir = runs.data_dir_for(info.file_name, args.data_dir, cfg.get("data_dir"))
    split_data = data.load_split(info, data_dir, split, check_md5=not cfg.get("skip_md5"))

    started = time.perf_counter()
    if recompute:
        outputs = inference.recompute_outputs(run, info, split_data, split, device, args.batch_size)
        print(f"computed {split} outputs of {run.name} ({len(split_data)} samples) on {device} "
              f"in {time.perf_counter() - started:.1f}s")
    else:
        inference.check_matches_split(outputs, info, split_data, stored)
    analysis = inference.analyze(
        outputs, info, split_data.images, n_bins=args.bins, dead_threshold=args.dead_threshold,
        tsne_points=args.tsne_points, n_errors=args.errors, seed=args.seed,
        source="recomputed" if recompute else "stored")
    with run.staged_folder(inference.output_dir(run.layout, analysis.split), created_by="analyze_inference.py",
                           keep=inference.other_splits_files(analysis.split)) as staged:
        written = inference.write_analysis(analysis, staged.path, title=run.name)
    files = [staged.final_path(p) for p in written]
    _report(run, analysis, files)
    if analysis.split == "test":  # TensorBoard shows the test figures, beside train.py's
        from medscope import board
        from medscope.analysis.inference_plots import RELIABILITY_DIAGRAM_PNG, ROC_PR_PNG

        shown = [f for f in files if f.name in (ROC_PR_PNG, RELIABILITY_DIAGRAM_PNG)]
        warning = board.log_run_figures(run, cli.given_runs_dir(args), shown, script="analyze_inference")
        if warning:
            print(warning, file=sys.stderr)
    return 0


def _report(run, analysis, files) -> None:
    from medscope.analysis.inference import most_and_least_active
    from medscope.analysis.inference_plots import short_layer
    from medscope.tasks import task

    calib = analysis.calibration
    print(f"{run.name}: {analysis.split} split, {analysis.n} samples ({analysis.source} outputs)")
    for path in files:
        print(f"  {path}")
    wrong = "with a wrong label" if task(analysis.task).is_multilabel else "wrong"
    print(f"  {'accuracy':<22}{calib['accuracy']:.4f}  ({analysis.errors} of {analysis.n} samples {wrong})")
    print(f"  {'ECE (' + str(calib['n_bins']) + ' bins)':<22}{calib['ece']:.4f}")
    print(f"  {'Brier':<22}{calib['brier']:.4f}")
    most, least = most_and_least_active(analysis.summary)
    for heading, rows in (("most active", most), ("least active", least)):
        cells = ", ".join(f"{short_layer(r['layer'])} {r['mean']:.3f}" for r in rows)
        print(f"  {heading:<22}{cells}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
