"""``explain.py robustness``: perturbation sweeps of a run: metrics, flips and saliency shift per condition.

The command layer: parse the flags, open the run, call
:func:`medscope.explain.robustness.run_sweep` with the run's own evaluation
settings, condense it, then write ``robustness/`` as a whole (staged, then swapped in),
record its files in run.json and print the headline numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

from medscope import atomic, limits
from medscope.app import cli
from medscope.app.run_context import RunContext, add_run_arguments, open_run_from_args
from medscope.errors import UsageError
from medscope.explain import perturbations as pt
from medscope.explain import robustness, robustness_plots
from medscope.explain.cam import resolve_layer
from medscope.progress import progress
from medscope.report_text import number_text, percent_text

CREATED_BY = "explain.py"


# --------------------------------------------------------------------------- flags

def severity(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= len(pt.SEVERITIES):
        raise argparse.ArgumentTypeError(f"expected a severity from 1 to {len(pt.SEVERITIES)}, got {text!r}")
    return value


def add_arguments(parser) -> None:
    add_run_arguments(parser, batch_size=256)
    parser.add_argument("--perturbations", nargs="+", default=None, metavar="NAME",
                        help="perturbations to apply (default: all that apply to the run's images); 2D: "
                             f"{', '.join(pt.available(2))}; 3D: {', '.join(pt.available(3))}")
    parser.add_argument("--severities", nargs="+", type=severity, default=None, metavar="S",
                        help="severities 1-5 to apply (default: all five)")
    parser.add_argument("--saliency", choices=robustness.SALIENCY_METHODS, default="gradcam",
                        help="saliency map whose shift is measured: gradcam (default) or gradient (vanilla)")
    parser.add_argument("--layer", default=None, metavar="NAME",
                        help="Grad-CAM layer (default: the deepest block whose output is at least 7 pixels a side)")
    parser.add_argument("--n-saliency", type=cli.int_in_range(0, limits.IMAGES_MAX), default=100, metavar="N",
                        help=f"images (seeded) whose saliency shift is measured, at most {limits.IMAGES_MAX}; 0 skips "
                             "it (default: 100)")
    parser.add_argument("--n-examples", type=cli.int_in_range(0, limits.EXAMPLES_MAX), default=3, metavar="N",
                        help=f"images shown perturbed with their saliency at every severity, at most "
                             f"{limits.EXAMPLES_MAX} (default: 3)")
    parser.add_argument("--tolerance", type=cli.probability, default=0.05,
                        help="the report names the first severity where balanced accuracy is more than this "
                             "below clean (default: 0.05)")
    parser.add_argument("--bootstrap", type=cli.int_in_range(0, limits.RESAMPLES_MAX), default=2000, metavar="N",
                        help="resamples for the 95%% intervals of every condition's AUC, ACC and balanced accuracy "
                             f"and of the flip AUROCs, at most {limits.RESAMPLES_MAX}; 0: none (default: 2000)")


def parse_perturbation_names(values) -> list[str] | None:
    """``--perturbations a b`` or ``a,b``: names, split on commas."""
    if not values:
        return None
    names = [part for value in values for part in re.split(r"[,\s]+", value) if part]
    if not names:
        raise UsageError("--perturbations: give at least one name")
    return names


# --------------------------------------------------------------------------- the command

def run(args) -> int:
    from medscope.train.loop import evaluation_settings

    names = parse_perturbation_names(args.perturbations)
    severities = sorted(set(args.severities)) if args.severities else list(pt.SEVERITIES)
    ctx = open_run_from_args(args)
    chosen = pt.select(names, ctx.info.spatial_dims)
    layer = resolve_layer(ctx.model, args.layer, ctx.input_shape, ctx.device) if args.saliency == "gradcam" else None
    if args.saliency == "gradient" and args.layer is not None:
        raise UsageError("--layer applies to --saliency gradcam only")
    method_label = robustness.SALIENCY_LABELS[args.saliency]
    print(f"robustness of {ctx.run.name} ({ctx.split_name}, {len(ctx.split)} images): {len(chosen)} perturbations x "
          f"{len(severities)} severities; {method_label} shift on {min(args.n_saliency, len(ctx.split))} images "
          f"on {ctx.device}")
    start = time.perf_counter()
    sweep = robustness.run_sweep(
        ctx.model, ctx.split, ctx.task, ctx.info.class_names, ctx.device, chosen, severities,
        settings=evaluation_settings(ctx.config, ctx.info, ctx.device), seed=args.seed, method=args.saliency,
        layer=layer, n_saliency=args.n_saliency, n_examples=args.n_examples, batch_size=args.batch_size,
        n_resamples=args.bootstrap, progress=progress)
    seconds = time.perf_counter() - start
    robustness.add_relative_errors(sweep.rows)
    summary_rows = robustness.summarize(sweep.rows, sweep.per_image, args.tolerance, n_resamples=args.bootstrap,
                                        seed=args.seed)
    info = robustness.sweep_record(sweep, summary_rows, run=ctx.run.name, split=ctx.split_name,
                                   checkpoint=args.checkpoint, tolerance=args.tolerance,
                                   run_metrics=_stored_metrics(ctx, args.checkpoint), seconds=seconds)

    with ctx.run.staged_folder(ctx.run.layout.robustness_dir, created_by=CREATED_BY) as staged:
        _write(staged.path, ctx, sweep, summary_rows, info, method_label)
    clean, overall = sweep.rows[0], (summary_rows[-1] if summary_rows else None)
    matches = info["clean_matches_run_metrics"]
    print(f"clean: balanced accuracy {_interval_text(clean, 'balanced_acc')}  AUC {_interval_text(clean, 'auc')}  "
          f"ACC {_interval_text(clean, 'acc')}"
          + ("" if matches is None else
             f" ({'equal to' if matches else 'differs from'} the run's {ctx.run.layout.metrics_json.name})"))
    if overall:
        collapsed = overall.get("collapsed_severities")
        if collapsed:
            print(f"collapsed to one class (perturbation:severity): {collapsed}")
        print(f"mean over perturbations: balanced accuracy {overall['mean_balanced_acc']:.3f}, "
              f"mCE {number_text(overall['mce'], 2)} "
              f"(1 = clean error), flip rate {percent_text(overall['mean_flip_rate'])}; "
              f"{len(chosen) * len(severities)} conditions in {seconds:.1f}s")
    print(f"wrote {len(staged.files)} files to {staged.final}")
    return 0


def _interval_text(row: dict, key: str) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    defined = low is not None and high is not None and not (math.isnan(low) or math.isnan(high))
    bounds = f" [{low:.3f}, {high:.3f}]" if defined else ""
    return f"{row[key]:.3f}{bounds}"


def _write(folder: Path, ctx: RunContext, sweep: robustness.Sweep, summary_rows: list[dict], info: dict,
           method_label: str) -> None:
    """Every file of the robustness folder, into ``folder`` (the staging folder of ``robustness/``)."""
    files = robustness.FILES
    atomic.write_csv(folder / files["results"], sweep.rows, robustness.RESULT_COLUMNS)
    atomic.write_csv(folder / files["summary_csv"], summary_rows, robustness.SUMMARY_COLUMNS)
    atomic.write_csv(folder / files["per_image"], sweep.per_image, robustness.PER_IMAGE_COLUMNS)
    atomic.write_json(folder / files["summary"], info)
    tag = f"{ctx.run.name} ({ctx.split_name}), seed {sweep.seed}"
    robustness_plots.measures_vs_severity(folder / files["measures"], sweep.rows,
                                          f"robustness — {tag}; saliency: {method_label}")
    robustness_plots.balanced_accuracy_heatmap(
        folder / files["heatmap"], sweep.rows, f"balanced accuracy per perturbation and severity — {tag}",
        info["chance_balanced_acc"])
    for k, image_id in enumerate(sweep.example_ids):
        label = robustness.example_title(ctx.task, ctx.split.labels[image_id].numpy(), ctx.info.class_names)
        robustness_plots.example_grid(
            folder / files["examples"].format(id=int(image_id)), sweep.examples, k,
            [p.name for p in sweep.perturbations], sweep.severities,
            f"image {int(image_id)} (true: {label}) — {method_label} of the clean prediction — {tag}"
            + ("\n3D: middle axial | coronal | sagittal slices" if sweep.spatial_dims == 3 else ""))
    atomic.write_text(folder / files["report"], robustness.report_markdown(info, sweep.rows))


def _stored_metrics(ctx: RunContext, checkpoint: str) -> dict | None:
    """The run's own AUC and ACC of this split (its metrics file, best checkpoint; val and test only)."""
    if checkpoint != "best" or ctx.split_name not in ("val", "test"):
        return None
    try:
        metrics = json.loads(ctx.run.layout.metrics_json.read_text())[ctx.split_name]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    stored = {"auc": metrics.get("auc"), "acc": metrics.get("acc")} if isinstance(metrics, dict) else {}
    if not stored or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                             for v in stored.values()):
        return None  # a damaged file (texts where numbers belong): nothing to compare with
    return stored
