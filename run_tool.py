"""medscope's numbered terminal menu, and the whole pipeline in one command.

    python run_tool.py                                   # the menu
    printf '2\\n1\\n0\\n' | python run_tool.py            # scripted: export the newest run's scalars
    printf '9\\n\\n0\\n' | python run_tool.py              # list the runs, delete none
    python run_tool.py --pipeline --dataset breastmnist  # train, then every analysis, then a table
    python run_tool.py --pipeline --dataset breastmnist --seeds 0 1 2  # ... on three runs, then compare them

Each menu item runs the same ``main(argv)`` as the script it names and prints
that script's command line first (item 8 resumes an interrupted run with
``train.py --resume``); item 9 lists and deletes runs. See medscope/app/menu.py.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from medscope.app import cli  # first: a Ctrl-C during the imports is one line

# isort: split
from medscope import limits


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="run_tool.py", description="medscope's menu: train, export, analyze, explain, "
                                                                "quantize. With --pipeline: all of it, no questions.")
    parser.add_argument("--pipeline", action="store_true",
                        help="train one model, export its scalars, run every analysis script there is, "
                             "and print a table of what each step produced")
    parser.add_argument("--dataset", default=None, metavar="FLAG",
                        help="with --pipeline: the MedMNIST flag to train on")
    parser.add_argument("--size", type=int, default=None, help="with --pipeline: image size (default: 28)")
    parser.add_argument("--model", default=None, help="with --pipeline: resnet18 or cnn (default: resnet18)")
    parser.add_argument("--epochs", type=cli.int_in_range(1, limits.EPOCHS_MAX), default=None,
                        help=f"with --pipeline: epochs, at most {limits.EPOCHS_MAX} (default: train.py's, by 2D/3D)")
    parser.add_argument("--seeds", type=cli.int_in_range(0, limits.SEED_MAX), nargs="+", default=None, metavar="SEED",
                        help="with --pipeline: one run per seed, each analysed, then compared (compare.py and "
                             "a comparison page) as one study")
    parser.add_argument("--subset", type=cli.int_in_range(1, limits.IMAGES_MAX), default=None, metavar="N",
                        help=f"train on a random N-image subset, at most {limits.IMAGES_MAX} (quick runs; in the "
                             "menu: the default answer)")
    parser.add_argument("--quick", action="store_true",
                        help="with --pipeline: every analysis on a few images with few resamples, to see the whole "
                             "pipeline work in minutes (its numbers are not for reading)")
    cli.add_common_args(parser, run_arg=None)
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from medscope.app import menu

    return menu.main(args, script_dir=Path(__file__).resolve().parent)


if __name__ == "__main__":
    # A shell starts background jobs with SIGINT ignored, and Python keeps it ignored; the menu
    # promises that Ctrl-C goes back to the menu, so take the signal back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a parent may also have blocked it
    sys.exit(cli.run(main))
