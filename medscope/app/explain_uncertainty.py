"""``explain.py uncertainty``: MC-dropout uncertainty of a run, per image and per dataset.

The command layer: parse the flags, open the run, check that there is dropout
to sample, call :func:`medscope.explain.uncertainty.analyze_uncertainty`, then
write ``uncertainty/`` as a whole (staged, then swapped in), record its files in
run.json and print the headline numbers.
"""
from __future__ import annotations

import math

import numpy as np

from medscope import atomic, limits
from medscope.app import cli
from medscope.app.run_context import add_run_arguments, open_run_from_args
from medscope.errors import UsageError
from medscope.explain import plots as explain_plots
from medscope.explain import uncertainty
from medscope.progress import progress
from medscope.report_text import number_text

CREATED_BY = "explain.py"


def add_arguments(parser) -> None:
    add_run_arguments(parser, batch_size=256)
    parser.add_argument("--passes", type=cli.int_in_range(1, limits.PASSES_MAX), default=20,
                        help=f"stochastic passes T, at most {limits.PASSES_MAX} (default: 20)")
    parser.add_argument("--threshold", type=threshold_arg, default="auto",
                        help="flag images whose confidence (mean probability of the predicted class) is below "
                             "this; auto (default): the threshold of largest Youden's J for flagging wrong "
                             "predictions on the validation split (MC dropout there too)")
    parser.add_argument("--bootstrap", type=cli.int_in_range(0, limits.RESAMPLES_MAX), default=2000, metavar="N",
                        help=f"resamples for the 95%% intervals of the error-detection AUROCs, at most "
                             f"{limits.RESAMPLES_MAX}; 0: none (default: 2000)")
    parser.add_argument("--dropout-rate", type=cli.probability, default=None, metavar="P",
                        help="use dropout rate P at test time (needed when the model was trained without "
                             "dropout; results are labelled as such)")
    parser.add_argument("--full-passes", action="store_true",
                        help="run T whole stochastic passes even when dropout sits only in the head (slow; "
                             "gives the same numbers)")


def threshold_arg(text: str):
    """``auto`` or a probability in [0, 1)."""
    return "auto" if text == "auto" else cli.probability(text)


def _threshold(args, ctx) -> tuple[float, dict | None]:
    """The flagging threshold: given, or chosen on the validation split (the judged split itself when that is val)."""
    if args.threshold != "auto":
        return float(args.threshold), None
    from medscope import data, runs

    if ctx.split_name == "val":
        split = ctx.split
    else:
        folder = runs.data_dir_for(ctx.info.file_name, args.data_dir, ctx.config.get("data_dir"))
        split = data.load_split(ctx.info, folder, "val", check_md5=not ctx.config.get("skip_md5"))
    chooser = uncertainty.analyze_uncertainty(
        ctx.model, split, ctx.task, ctx.device, class_names=ctx.info.class_names, passes=args.passes,
        seed=args.seed, batch_size=args.batch_size, rate=args.dropout_rate,
        path="full" if args.full_passes else "auto", n_resamples=0)
    choice = uncertainty.choose_threshold(chooser.stats["confidence"], chooser.correct)
    return choice["threshold"], dict(choice, split="val")


def run(args) -> int:
    if args.dropout_rate is not None and args.dropout_rate == 0:
        raise UsageError("--dropout-rate 0 turns MC dropout off; give a rate in (0, 1), e.g. 0.2")
    ctx = open_run_from_args(args)
    rates = uncertainty.dropout_rates(ctx.model)
    if not rates:
        raise UsageError(f"{ctx.run.name}: the model has no dropout layer, so MC dropout cannot sample it")
    if args.dropout_rate is None and max(rates.values()) == 0:
        raise UsageError(f"{ctx.run.name} was trained without dropout (p=0): all {args.passes} passes would give "
                         "the same answer; pass --dropout-rate P (e.g. 0.2) to enable dropout at test time, "
                         "or train with --dropout")
    threshold, choice = _threshold(args, ctx)
    result = uncertainty.analyze_uncertainty(
        ctx.model, ctx.split, ctx.task, ctx.device, class_names=ctx.info.class_names, passes=args.passes,
        seed=args.seed, threshold=threshold, batch_size=args.batch_size, rate=args.dropout_rate,
        path="full" if args.full_passes else "auto", n_resamples=args.bootstrap, progress=progress)
    record = uncertainty.summary_record(result, run=ctx.run.name, split=ctx.split_name, checkpoint=args.checkpoint,
                                        threshold_choice=choice)

    with ctx.run.staged_folder(ctx.run.layout.uncertainty_dir, created_by=CREATED_BY) as staged:
        files = {key: staged.path / name for key, name in uncertainty.FILES.items()}
        atomic.write_csv(files["per_image"], *uncertainty.per_image_table(result))
        atomic.write_json(files["cases"], uncertainty.uncertain_cases(result, record))
        atomic.write_json(files["summary"], record)
        tag = f"{ctx.run.name} ({ctx.split_name}), T={args.passes}, {result.dropout['text']}"
        cov = record["accuracy_coverage"]
        explain_plots.accuracy_coverage(
            files["accuracy_coverage"], np.array(cov["coverage"]), np.array(cov["accuracy"]),
            threshold_coverage=record["coverage"], threshold_accuracy=record["accuracy_confident"],
            overall_accuracy=record["accuracy_all"], title=f"accuracy vs coverage\n{tag}")
        explain_plots.uncertainty_distributions(
            files["distributions"], {name: result.stats[name] for name in uncertainty.MEASURES}, result.correct,
            f"MC-dropout uncertainty, correct vs wrong predictions\n{tag}")
        atomic.write_text(files["report"], uncertainty.report_markdown(record))

    print(f"MC dropout ({result.mc.path} path, T={args.passes}, {result.dropout['text']}) on {record['n']} "
          f"{ctx.split_name} images in {result.mc.seconds:.1f}s")
    where = f"chosen on {choice['split']}" if choice else "given"
    print(f"accuracy {number_text(record['accuracy_all'])} on all; {number_text(record['accuracy_confident'])} on "
          f"the {record['n_confident']} with confidence >= {threshold:.3f} ({where}); {record['n_uncertain']} "
          f"flagged ({record['flagged_fraction']:.0%}): "
          + ", ".join(f"{row['name']} {row['n_flagged']}/{row['n']}" for row in record["per_class"]))
    best = max((k for k, v in record["error_auroc"].items() if not math.isnan(v)), key=record["error_auroc"].get,
               default=None)
    if best is not None:
        ci = record["error_auroc_interval"][best]
        print(f"errors are best singled out by {best.replace('_', ' ')}: AUROC {record['error_auroc'][best]:.3f}"
              + (f" [{ci['low']:.3f}, {ci['high']:.3f}]" if not math.isnan(ci["low"]) else ""))
    print(f"wrote {len(staged.files)} files to {staged.final}")
    return 0
