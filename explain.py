"""Where the model looked and how sure it was: Grad-CAM, saliency, MC-dropout uncertainty, robustness, calibration.

    python explain.py gradcam --run 0007 --n 16
    python explain.py gradcam --run 0007 --method gradcam++ --target true --layer backbone.layer3.1
    python explain.py saliency --run 0007 --method smoothgrad --samples 25 --noise 0.15
    python explain.py uncertainty --run 0007 --passes 20 --threshold 0.85
    python explain.py robustness --run 0007 --perturbations gaussian_noise jpeg --severities 1 3 5
    python explain.py calibrate --run 0007 --alpha 0.1 --sensitivity 0.9

Each subcommand is an entry of SUBCOMMANDS: its help line, a function that
adds its flags to a parser, and a function that runs it (``args -> exit
code``), from the command modules of medscope/app/. A new analysis is one
more entry.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from medscope.app import cli, explain_calibrate, explain_maps, explain_robustness, explain_uncertainty


@dataclass(frozen=True)
class Subcommand:
    """One subcommand: ``add_arguments(parser)`` adds its flags, ``run(args) -> int`` runs it."""

    help: str
    add_arguments: Callable
    run: Callable


SUBCOMMANDS: dict[str, Subcommand] = {
    "gradcam": Subcommand("Grad-CAM / Grad-CAM++ heatmaps with deletion/insertion faithfulness",
                          explain_maps.add_gradcam_arguments, explain_maps.run_gradcam),
    "saliency": Subcommand("vanilla-gradient and SmoothGrad saliency maps",
                           explain_maps.add_saliency_arguments, explain_maps.run_saliency),
    "uncertainty": Subcommand("MC-dropout uncertainty per image and per dataset",
                              explain_uncertainty.add_arguments, explain_uncertainty.run),
    "robustness": Subcommand("perturbation sweeps: metrics, flips and saliency shift per perturbation and severity",
                             explain_robustness.add_arguments, explain_robustness.run),
    # after uncertainty: the pipeline runs them in this order, and calibrate reads MC dropout's results
    "calibrate": Subcommand("temperature scaling, decision thresholds, conformal sets and selective classification",
                            explain_calibrate.add_arguments, explain_calibrate.run),
}


def get_args_parser(subcommands: dict[str, Subcommand] | None = None) -> cli.ArgumentParser:
    subcommands = SUBCOMMANDS if subcommands is None else subcommands
    parser = cli.ArgumentParser(prog="explain.py",
                                description="Explain a trained run: where it looked, how sure it was.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=cli.ArgumentParser,
                                help=", ".join(subcommands))
    for name, command in subcommands.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(handler=command.run)  # not "run": --run names the run folder
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command is None:
        raise cli.UsageError(f"choose a command: {', '.join(SUBCOMMANDS)} (see python explain.py --help)")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(cli.run(main))
