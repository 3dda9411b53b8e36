"""Where the model looked and how sure it was: Grad-CAM, saliency and MC-dropout uncertainty.

    python explain.py gradcam --run 0007 --n 16
    python explain.py gradcam --run 0007 --method gradcam++ --target true --layer backbone.layer3.1
    python explain.py saliency --run 0007 --method smoothgrad --samples 25 --noise 0.15
    python explain.py uncertainty --run 0007 --passes 20 --threshold 0.85
    python explain.py robustness --run 0007 --perturbations gaussian_noise jpeg --severities 1 3 5

Each subcommand is a pair of functions in a library module, listed in
SUBCOMMANDS: ``add_arguments(parser)`` and ``run(args) -> exit code``. A new
analysis (e.g. ``robustness`` in medscope/robustness.py) is one more entry.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from medscope.app import cli


@dataclass(frozen=True)
class Subcommand:
    """Where a subcommand lives: ``module.<add_arguments>(parser)`` and ``module.<run>(args) -> int``."""

    module: str
    help: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def load(self):
        module = importlib.import_module(self.module)
        return getattr(module, self.add_arguments), getattr(module, self.run)


SUBCOMMANDS: dict[str, Subcommand] = {
    "gradcam": Subcommand("medscope.explain.cam", "Grad-CAM / Grad-CAM++ heatmaps with deletion/insertion faithfulness",
                          "add_gradcam_arguments", "run_gradcam"),
    "saliency": Subcommand("medscope.explain.cam", "vanilla-gradient and SmoothGrad saliency maps",
                           "add_saliency_arguments", "run_saliency"),
    "uncertainty": Subcommand("medscope.explain.uncertainty", "MC-dropout uncertainty per image and per dataset"),
    "robustness": Subcommand("medscope.explain.robustness",
                             "perturbation sweeps: metrics, flips and saliency shift per perturbation and severity"),
}


def get_args_parser(subcommands: dict[str, Subcommand] | None = None) -> cli.ArgumentParser:
    subcommands = SUBCOMMANDS if subcommands is None else subcommands
    parser = cli.ArgumentParser(prog="explain.py",
                                description="Explain a trained run: where it looked, how sure it was.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=cli.ArgumentParser,
                                help=", ".join(subcommands))
    for name, command in subcommands.items():
        add_arguments, run = command.load()
        child = sub.add_parser(name, help=command.help, description=command.help)
        add_arguments(child)
        child.set_defaults(handler=run)  # not "run": --run names the run folder
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command is None:
        raise cli.UsageError(f"choose a command: {', '.join(SUBCOMMANDS)} (see python explain.py --help)")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(cli.run(main))
