"""A trained run opened for analysis: the run folder, its model, its dataset and one split, all checked.

Every script that looks at a finished run starts the same way: find the run
(by name, path, prefix, or the newest), pick the device, load a checkpoint,
read which dataset it was trained on, and load a split from the data folder
the user gave or the one the run recorded (:func:`medscope.runs.data_dir_for`).
:func:`open_run` does that once, with every bad input a
:class:`medscope.errors.UsageError`; :func:`add_run_arguments` and
:func:`open_run_from_args` are the matching command-line flags.

    ctx = open_run("results", "0007", split="val", device="cpu")
    ctx.model, ctx.split, ctx.task, ctx.info.class_names, ctx.run.layout.gradcam_dir
"""
from __future__ import annotations

from dataclasses import dataclass

from medscope.errors import UsageError
from medscope.runs import Run
from medscope.tasks import Task
from medscope.tasks import task as as_task


@dataclass
class RunContext:
    """A run opened for analysis: its model (evaluation mode, on ``device``), dataset and split."""

    run: Run
    model: object  # torch.nn.Module
    checkpoint: dict
    config: dict  # the training configuration (the checkpoint's, else run.json's)
    info: object  # medscope.data.DatasetInfo
    split: object  # medscope.data.Split, or None when no split was asked for
    split_name: str | None
    device: object  # torch.device

    @property
    def task(self) -> Task:
        return as_task(self.info.task)

    @property
    def input_shape(self) -> tuple:
        """(C, *spatial) of one image of the split."""
        return tuple(self.split.images.shape[1:])


def training_config(run: Run, checkpoint: dict) -> dict:
    """The configuration the run was trained with: the checkpoint's, else run.json's; it must name a dataset."""
    cfg = checkpoint.get("config") or run.info().get("config") or {}
    if "dataset" not in cfg:
        raise UsageError(f"{run.path}: the checkpoint does not name its dataset; is this a medscope run?")
    return cfg


def open_run(results_dir, run: str | None = None, *, checkpoint: str = "best", split: str | None = "test",
             data_dir=None, device: str = "auto") -> RunContext:
    """Resolve a run, load its model and (unless ``split`` is None) one split of its dataset.

    Parameters
    ----------
    results_dir : the results folder
    run : run name, path or unique prefix; None: the newest run
    checkpoint : ``best`` or ``last``
    split : ``train``, ``val``, ``test`` or None (no images loaded)
    data_dir : where to look for the MedMNIST file first (then where the run was trained from)
    device : ``auto``, ``cpu``, ``cuda`` or ``cuda:N``

    Bad input (no such run, device, checkpoint or data file) is a UsageError.
    """
    from medscope import checkpoints, data, runs
    from medscope.app import cli
    from medscope.devices import resolve_device

    found = cli.resolve_run(results_dir, run)
    device = resolve_device(device)
    model, saved = checkpoints.load_run_model(found, checkpoint, device)
    cfg = training_config(found, saved)
    info = data.dataset_info(cfg["dataset"], int(cfg.get("size", 28)))
    images = None
    if split is not None:
        folder = runs.data_dir_for(info.file_name, data_dir, cfg.get("data_dir"))
        images = data.load_split(info, folder, split, check_md5=not cfg.get("skip_md5"))
    return RunContext(found, model, saved, cfg, info, images, split, device)


def add_run_arguments(parser, *, batch_size: int, verb: str = "explain") -> None:
    """The flags of a command that analyses one split of one run: the common ones, ``--split``,
    ``--checkpoint`` and ``--batch-size`` (default ``batch_size``); ``verb`` says what the command does
    in their help."""
    from medscope import limits
    from medscope.app import cli

    cli.add_common_args(parser, run_arg="one")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help=f"which split to {verb} (default: test)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help=f"weights to {verb} (default: best)")
    parser.add_argument("--batch-size", type=cli.int_in_range(1, limits.BATCH_SIZE_MAX), default=batch_size,
                        help=f"images per batch, at most {limits.BATCH_SIZE_MAX} (default: {batch_size})")


def open_run_from_args(args) -> RunContext:
    """:func:`open_run` with the flags of :func:`add_run_arguments`."""
    return open_run(args.results_dir, args.run, checkpoint=args.checkpoint, split=args.split,
                    data_dir=args.data_dir, device=args.device)
