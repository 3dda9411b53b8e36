"""LMC complexity and exact Sample Entropy of every layer's weights.

    python analyze_complexity.py                                  # newest run, best.pt
    python analyze_complexity.py --run 0007 --compare-init        # trained vs initial weights
    python analyze_complexity.py --run 0007 0008 --include-bias   # two runs + a comparison figure

Every conv / linear / normalization weight tensor (``--include-bias``: and
their biases), in network order, flattened in PyTorch memory order; see
medscope/analysis/weights.py for the columns and medscope/analysis/complexity.py
for the formulas. Writes ``results/<run>/complexity/``: ``weights_entropy_results.csv``
(one row per tensor and weight state), ``weights_entropy_summary.csv`` / ``.json``
(per layer type, with the settings), ``lmc_per_layer.png``,
``sampen_per_layer.png`` and ``lmc_by_type.png``. With several runs also
``<results-dir>/complexity_comparison_<YYYYMMDD-HHMMSS>.png`` and ``.csv``
(new names every time).

``--compare-init`` rebuilds the weights training started from, with the seed
recorded in run.json. For a ``--pretrained`` run those are the pretrained
weights: a local ``--weights`` file is loaded again, torchvision's download
only from torch's local cache; when they are not on this machine the script
stops before any work (exit 2) -- the comparison would be wrong without them.
"""
from __future__ import annotations

import argparse
import sys

from medscope.app import cli  # first: a Ctrl-C during the imports is one line

# isort: split
from medscope import limits


def bins_arg(text: str):
    """A positive bin count or a rule name (``fd``, ``sturges``, ``sqrt``)."""
    from medscope.analysis.weights import BIN_RULES

    if text.lower() in BIN_RULES:
        return text.lower()
    try:
        return cli.int_in_range(1, limits.HISTOGRAM_BINS_MAX)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to {limits.HISTOGRAM_BINS_MAX} or one of "
                                         f"{', '.join(BIN_RULES)}, got {text[:40]!r}") from None


def get_args_parser() -> cli.ArgumentParser:
    from medscope.analysis.complexity import LMC_DEFAULT_BINS, R_FACTOR
    from medscope.analysis.weights import default_workers

    parser = cli.ArgumentParser(prog="analyze_complexity.py",
                                description="LMC complexity and exact Sample Entropy of every layer's weights.",
                                epilog="Writes <results-dir>/<run>/complexity/ per run and, for several runs, "
                                       "<results-dir>/complexity_comparison_<YYYYMMDD-HHMMSS>.png and .csv.")
    parser.add_argument("--m", type=cli.int_in_range(1, limits.SAMPEN_M_MAX), default=2,
                        help=f"Sample Entropy embedding dimension, 1 to {limits.SAMPEN_M_MAX} (default: 2; m > 2 "
                             "counts in O(N^2))")
    parser.add_argument("--r-factor", type=cli.float_in_range(0, limits.R_FACTOR_MAX, include_low=False),
                        default=R_FACTOR,
                        help=f"Sample Entropy tolerance r = FACTOR * std of the tensor's weights, FACTOR in "
                             f"(0, {limits.R_FACTOR_MAX:g}] (default: {R_FACTOR})")
    parser.add_argument("--bins", type=bins_arg, default=LMC_DEFAULT_BINS,
                        help=f"LMC histogram: number of equal-width bins over [min, max], at most "
                             f"{limits.HISTOGRAM_BINS_MAX}, or a rule fd / sturges / sqrt "
                             f"(default: {LMC_DEFAULT_BINS})")
    parser.add_argument("--include-bias", action="store_true", help="also analyse the biases of those layers")
    parser.add_argument("--compare-init", action="store_true",
                        help="also analyse the initial weights (rebuilt from the run's seed), side by side")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint (default: best)")
    parser.add_argument("--workers", type=cli.int_in_range(1, limits.WORKERS_MAX), default=default_workers(),
                        help=f"tensors analysed in parallel threads, at most {limits.WORKERS_MAX} "
                             f"(default here: {default_workers()})")
    cli.add_common_args(parser, run_arg="many")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from medscope.analysis import weights

    specs = args.run or [None]
    selected = {}
    for spec in specs:
        run = cli.resolve_run(args.results_dir, spec)
        selected.setdefault(run.path.resolve(), run)  # the same run named twice is analysed once
    settings = weights.Settings(m=args.m, r_factor=args.r_factor, bins=args.bins, include_bias=args.include_bias)
    # every run's checkpoint (and initial weights) is loaded before any work: bad input stops here
    plans = [weights.prepare_run(run, which=args.which, include_bias=args.include_bias,
                                 compare_init=args.compare_init) for run in selected.values()]
    if args.m > 2:
        print(f"note: m = {args.m} counts template pairs in O(N^2); layers of millions of weights take minutes")

    results = []
    for plan in plans:
        jobs = plan.jobs
        with cli.progress(total=len(jobs), desc=plan.run.name, unit="tensor") as bar:
            def done(tensor, state, bar=bar):
                bar.set_postfix_str(f"{tensor.name} ({state})", refresh=False)
                bar.update()

            result = weights.analyze_run(plan, settings, workers=args.workers, on_done=done)
        with plan.run.staged_folder(plan.run.layout.complexity_dir, created_by="analyze_complexity.py") as staged:
            written = weights.write_run(result, staged.path)
        files = [staged.final_path(p) for p in written]
        results.append(result)
        _report(result, files)
    if len(results) > 1:
        png, csv = weights.write_comparison(args.results_dir, results)
        print(f"comparison of {len(results)} runs:\n  {png}\n  {csv}")
    return 0


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _report(result, files) -> None:
    plan = result.plan
    n_weights = sum(t.count for t in plan.tensors)
    epoch = f", epoch {plan.epoch}" if plan.epoch is not None else ""
    print(f"{plan.run.name}: {plan.which}.pt{epoch}, {len(plan.tensors)} weight tensors, {n_weights:,} weights, "
          f"{result.seconds:.1f}s" + (f"; initial weights: {plan.init_source}" if plan.init_source else ""))
    print(f"  {'state':<8} {'type':<7} {'tensors':>7} {'weights':>12} {'SampEn mean':>11} {'defined':>8} "
          f"{'weighted':>8} {'LMC C mean':>10}")
    for s in result.summary:
        print(f"  {s['state']:<8} {s['type']:<7} {s['tensors']:>7} {s['weights']:>12,} "
              f"{_fmt(s['sampen_mean'], '.4f'):>11} {str(s['sampen_defined']) + '/' + str(s['tensors']):>8} "
              f"{_fmt(s['sampen_weighted'], '.4f'):>8} {_fmt(s['lmc_C_mean'], '.4f'):>10}")
    reasons = {}
    for row in result.rows:
        if row["sampen_reason"]:
            reasons[row["sampen_reason"]] = reasons.get(row["sampen_reason"], 0) + 1
    for reason, count in reasons.items():
        print(f"  SampEn undefined for {count} tensor(s): {reason}")
    for path in files:
        print(f"  {path}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
