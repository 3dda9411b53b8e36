"""One self-contained HTML page and a model card for a run.

    python report.py                                   # the newest run
    python report.py --run 0007_breastmnist28_resnet18

Writes ``results/<run>/report.html`` (figures embedded, nothing loaded from the
network: it opens offline and can be mailed as one file), ``model_card.md`` and
``model_card.json``. Every analysis not run yet appears in the page with the one
command that adds it; run report.py again afterwards.
"""
from __future__ import annotations

import sys

from medscope.app import cli


def get_args_parser() -> cli.ArgumentParser:
    from medscope.report.images import MAX_WIDTH

    parser = cli.ArgumentParser(prog="report.py",
                                description="A self-contained HTML report and a model card for a trained run.")
    parser.add_argument("--max-width", type=cli.positive_int, default=MAX_WIDTH, metavar="PX",
                        help=f"largest width of an embedded figure in pixels (default: {MAX_WIDTH})")
    cli.add_common_args(parser, run_arg="one")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from medscope import runs
    from medscope.report.text import size_text
    from medscope.report.write import write_run_report

    run = runs.resolve_run(args.results_dir, args.run)
    written = write_run_report(run, results_dir=args.results_dir, max_width=args.max_width)
    print(f"{run.name}: report with {written.n_figures} figures, {size_text(written.n_bytes)}, "
          f"built in {written.total_seconds:.1f}s")
    for path in (written.html, written.model_card_md, written.model_card_json):
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
