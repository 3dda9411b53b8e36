"""One self-contained HTML page and a model card for a run; one page for a study or a comparison.

    python report.py                                   # the newest run
    python report.py --run 0007_breastmnist28_resnet18
    python report.py --study 0007-0009_breastmnist28_resnet18_seeds
    python report.py 0007 0008 '0*_pneumoniamnist*'    # runs as compare.py takes them

Writes ``results/<run>/report.html`` (figures embedded, nothing loaded from the
network: it opens offline and can be mailed as one file), ``model_card.md`` and
``model_card.json``. Every analysis not run yet appears in the page with the one
command that adds it; run report.py again afterwards.

With ``--study`` or several runs it writes the comparison page instead: the
numbers of ``compare.py`` (per dataset, intervals, seed groups, the published
MedMNIST v2 rows), the forest plot, the paired tests with Holm-adjusted
p-values, and a line per run linked to that run's page. One study alone:
``results/studies/<name>/report.html``; otherwise a new folder
``results/comparisons/<YYYYMMDD-HHMMSS>_<name>/`` with the page and compare.py's files.
"""
from __future__ import annotations

import argparse
import sys

from medscope.app import cli  # first: a Ctrl-C during the imports is one line

# isort: split
from medscope import limits


def get_args_parser() -> cli.ArgumentParser:
    from medscope.compare.tables import METRICS
    from medscope.report.images import MAX_WIDTH

    parser = cli.ArgumentParser(prog="report.py",
                                description="A self-contained HTML report and a model card for a trained run, "
                                            "or one page comparing runs or studies.")
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="one run: its page (as --run); several, or a prefix or glob matching several: "
                             "a comparison page (names, prefixes and globs as compare.py takes them)")
    parser.add_argument("--study", nargs="+", default=[], metavar="NAME",
                        help="a page for these studies (name, prefix or glob in <results-dir>/studies/)")
    parser.add_argument("--metric", choices=METRICS, default="auc",
                        help="comparison pages: metric of the tests and the forest plot (default: auc)")
    parser.add_argument("--baseline", metavar="RUN", default=None,
                        help="comparison pages: test every other run against this run instead of all pairs")
    parser.add_argument("--bootstrap", type=cli.int_in_range(0, limits.RESAMPLES_MAX), default=2000, metavar="N",
                        help=f"comparison pages: bootstrap resamples, at most {limits.RESAMPLES_MAX} (default: 2000)")
    parser.add_argument("--level", type=level_arg, default=0.95,
                        help="comparison pages: confidence level (default: 0.95)")
    parser.add_argument("--max-width", type=cli.int_in_range(1, limits.FIGURE_WIDTH_MAX), default=MAX_WIDTH,
                        metavar="PX", help=f"largest width of an embedded figure in pixels, at most "
                                           f"{limits.FIGURE_WIDTH_MAX} (default: {MAX_WIDTH})")
    cli.add_common_args(parser, run_arg="one")
    return parser


def level_arg(text: str) -> float:
    value = cli.non_negative_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text}")
    return value


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from medscope.errors import UsageError
    from medscope.report.text import size_text
    from medscope.report.write import write_run_report

    if args.baseline is not None and not (args.runs or args.study):
        raise UsageError("--baseline is for comparison pages: name the runs or a study too")
    if args.run is not None and (args.runs or args.study):
        raise UsageError("--run names one run's page; to compare, name the runs without --run "
                         "(python report.py 0007 0008) or a study (--study NAME)")
    if args.runs or args.study:
        from medscope.compare.select import select_runs

        selected = select_runs(args.results_dir, args.runs) if args.runs else []
        if args.study or len(selected) > 1 or args.baseline is not None:
            return _comparison(args)
        args.run = str(selected[0].run.path)
    run = cli.resolve_run(args.results_dir, args.run)
    written = write_run_report(run, results_dir=args.results_dir, max_width=args.max_width)
    print(f"{run.name}: report with {written.n_figures} figures, {size_text(written.n_bytes)}, "
          f"built in {written.total_seconds:.1f}s")
    for path in (written.html, written.model_card_md, written.model_card_json):
        print(f"  {path}")
    return 0


def _comparison(args) -> int:
    from medscope.report.comparison import choose
    from medscope.report.text import size_text
    from medscope.report.write import write_comparison_report

    chosen = choose(args.results_dir, args.runs, args.study, baseline=args.baseline)
    for line in chosen.skipped:
        print(f"note: {line}")
    written = write_comparison_report(chosen, results_dir=args.results_dir, metric=args.metric,
                                      n_resamples=args.bootstrap, level=args.level, seed=args.seed,
                                      max_width=args.max_width)
    print(f"comparison page of {written.n_runs} runs, {size_text(written.n_bytes)}, "
          f"built in {written.total_seconds:.1f}s")
    print(f"  {written.html}")
    for name in written.files:
        if name != written.html.name:
            print(f"  {written.folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
