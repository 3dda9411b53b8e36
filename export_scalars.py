"""Export a run's TensorBoard scalars to CSV (tidy and wide), bit-exact.

    python export_scalars.py                      # the newest run
    python export_scalars.py --run 0007 0008      # several runs, one pair of files each
    python export_scalars.py --all                # every run -> results/tensorboard_scalars_all.csv

Writes ``results/<run>/tensorboard_scalars.csv`` (columns run, tag, step,
wall_time, value) and ``tensorboard_scalars_wide.csv`` (one row per step, one
column per tag). Values are the logged float32 values to the last bit.
"""
from __future__ import annotations

import sys

from medscope.app import cli


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="export_scalars.py",
                                description="Export TensorBoard scalars of runs to tidy and wide CSV files.")
    parser.add_argument("--all", action="store_true",
                        help="every run in --results-dir into one combined file "
                             "(results/tensorboard_scalars_all.csv and _wide.csv)")
    parser.add_argument("--best-effort", action="store_true",
                        help="export what is readable of damaged (truncated or corrupt) event files, with a "
                             "warning, instead of refusing them")
    cli.add_common_args(parser, run_arg="many")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from medscope import runs
    from medscope.analysis import scalars

    runs_dir = cli.given_runs_dir(args)  # None: each run's own TensorBoard folder, as run.json records it
    if args.all:
        if args.run:
            raise cli.UsageError("--run and --all exclude each other: name runs, or export all of them")
        for run in runs.list_runs(args.results_dir):
            try:
                logdir = scalars.tensorboard_logdir(run, runs_dir)
            except cli.UsageError:
                continue  # read_all skips it and says so
            _check_events(logdir, args.best_effort)
        collected = scalars.read_all(args.results_dir, runs_dir)
        for line in collected.skipped:
            print(line, file=sys.stderr)
        layout = runs.ResultsLayout(args.results_dir)
        files = scalars.write_tables(collected.points, layout.tensorboard_scalars_all_csv,
                                     layout.tensorboard_scalars_all_wide_csv)
        print(f"{len(collected.runs)} run(s), {scalars.tag_count(collected.points)} tag(s), "
              f"{len(collected.points)} point(s)")
        print("results: " + ", ".join(str(f) for f in files))
        return 0

    # resolve every name before writing anything: a typo in the third name writes nothing
    selected = [cli.resolve_run(args.results_dir, spec) for spec in (args.run or [None])]
    for run in selected:
        _check_events(scalars.tensorboard_logdir(run, runs_dir), args.best_effort)
    for run in dict.fromkeys(selected):
        points = scalars.read_run(run, runs_dir)
        files = scalars.write_tables(points, run.layout.tensorboard_scalars_csv,
                                     run.layout.tensorboard_scalars_wide_csv)
        run.add_artifacts([f.relative_to(run.path) for f in files], created_by="export_scalars.py")
        print(f"{run.name}: {scalars.tag_count(points)} tag(s), {len(points)} point(s)")
        print("results: " + ", ".join(str(f) for f in files))
    return 0


def _check_events(logdir, best_effort: bool) -> None:
    """Refuse damaged event files (exit 2), or with --best-effort warn and go on with what is readable."""
    from medscope.analysis import scalars

    damaged = scalars.damaged_files(logdir)
    if damaged and not best_effort:
        raise cli.UsageError(f"{damaged[0]}" + (f" (and {len(damaged) - 1} more file(s))" if len(damaged) > 1 else "")
                             + "; export what is readable with --best-effort")
    for line in damaged:
        print(f"warning: {line}; exporting the whole records before it", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(cli.run(main))
