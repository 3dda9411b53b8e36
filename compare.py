"""Runs and multi-seed studies side by side, with intervals and paired tests.

    python compare.py 0007 0008                      # two runs (name, prefix or path)
    python compare.py '0*_breastmnist*'              # every run the glob matches
    python compare.py --study 0007-0009_breastmnist28_resnet18_seeds --metric acc
    python compare.py 0007 0008 0009 --baseline 0007 --bootstrap 5000

Reads each run's stored test scores (``inference_outputs.pt``) and run.json;
nothing is recomputed. Per test split (dataset and size): AUC, ACC and
balanced accuracy with stratified bootstrap intervals (and DeLong's for a
binary AUC); seed groups (runs of one configuration with several seeds) with
mean ± sd, the t-interval of the mean and the pooled interval; the published
MedMNIST v2 baselines; paired tests between runs (DeLong, paired bootstrap)
and between seed groups (sign-flip / Wilcoxon, or permutation), Holm-adjusted
over the whole call. See medscope/compare/tables.py for the definitions.

Writes ``<results-dir>/comparisons/<YYYYMMDD-HHMMSS>_<short name>/`` (or
``--out``; never an existing folder): ``comparison.md``, ``comparison.csv``,
``comparison_tests.csv``, ``comparison.json`` and ``forest_<metric>.png``.
"""
from __future__ import annotations

import argparse
import sys

from medscope.app import cli  # first: a Ctrl-C during the imports is one line

# isort: split
from medscope import limits


def level_arg(text: str) -> float:
    value = cli.non_negative_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text}")
    return value


def get_args_parser() -> cli.ArgumentParser:
    from medscope.compare.scores import SPLITS
    from medscope.compare.tables import METRICS

    parser = cli.ArgumentParser(prog="compare.py",
                                description="Runs and multi-seed studies side by side, with intervals and "
                                            "paired tests.",
                                epilog="Writes <results-dir>/comparisons/<YYYYMMDD-HHMMSS>_<name>/ (or --out): "
                                       "comparison.md, comparison.csv, comparison_tests.csv, comparison.json, "
                                       "forest_<metric>.png.")
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="runs by name, path, prefix (every run it starts) or glob ('0*_breastmnist*')")
    parser.add_argument("--study", nargs="+", default=[], metavar="NAME",
                        help="compare the runs of these studies (name, prefix or glob in <results-dir>/studies/)")
    parser.add_argument("--metric", choices=METRICS, default="auc",
                        help="metric of the tests and the forest plot (the tables show all; default: auc)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split whose stored scores are compared "
                        "(default: test)")
    parser.add_argument("--baseline", metavar="RUN", default=None,
                        help="test every other run (and seed group) against this run instead of all pairs")
    parser.add_argument("--bootstrap", type=cli.int_in_range(0, limits.RESAMPLES_MAX), default=2000, metavar="N",
                        help=f"bootstrap resamples, at most {limits.RESAMPLES_MAX} (default: 2000; 0: no bootstrap "
                             "intervals or tests)")
    parser.add_argument("--level", type=level_arg, default=0.95, help="confidence level (default: 0.95)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: <results-dir>/comparisons/<YYYYMMDD-HHMMSS>_<name>/); "
                             "must be new or empty")
    cli.add_common_args(parser, run_arg=None)
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from pathlib import Path

    from medscope import atomic
    from medscope.compare import choice, paths, plots, report, tables
    from medscope.errors import UsageError

    if not args.runs and not args.study:
        raise UsageError("nothing to compare: name runs (python compare.py 0007 0008, or a glob such as "
                         "'0*_breastmnist*') or a study (--study NAME)")
    if args.out is not None:
        paths.check_out_dir(args.out)
    chosen = choice.choose(args.results_dir, args.runs, args.study, split=args.split, baseline=args.baseline)
    scores, studies, skipped, baseline = chosen.scores, chosen.studies, chosen.skipped, chosen.baseline
    for line in skipped:
        print(f"note: {line}")

    comparison = tables.compare(scores, metric=args.metric, n_resamples=args.bootstrap, level=args.level,
                                seed=args.seed, baseline=baseline)
    comparison.notes[:0] = list(skipped)
    name = paths.short_name([s.name for s in scores], [t.label for t in comparison.tables],
                            [s.name for s in studies])
    target = Path(args.out) if args.out is not None else \
        paths.comparisons_dir(args.results_dir) / f"{paths.stamp()}_{name}"
    figure_name = paths.forest_png(args.metric)
    staging = atomic.temporary_dir(target.parent, target.name)
    try:
        atomic.write_text(staging / paths.MD, report.markdown(comparison, title=f"Comparison {name}",
                                                              figure=figure_name))
        atomic.write_csv(staging / paths.CSV, report.table_rows(comparison), report.COLUMNS)
        atomic.write_csv(staging / paths.TESTS_CSV, report.rows_of_tests(comparison), report.TEST_COLUMNS)
        atomic.write_json(staging / paths.JSON, report.to_json(comparison) | {"name": name,
                          "runs": [s.name for s in scores], "studies": [s.name for s in studies]})
        atomic.save_figure(staging / figure_name, plots.forest_plot(comparison, args.metric))
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    out = paths.move_into_place(staging, target, numbered=args.out is None)

    for line in report.summary_lines(comparison):
        print(line)
    for note in comparison.notes[len(skipped):]:
        print(f"note: {note}")
    print(f"comparison of {len(scores)} runs: {out}/")
    for file_name in (paths.MD, paths.CSV, paths.TESTS_CSV, paths.JSON, figure_name):
        print(f"  {file_name}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
