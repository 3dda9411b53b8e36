"""Continuing an interrupted run from its last checkpoint.

``last.pt`` is written at the end of every epoch (:mod:`medscope.train.experiment`);
it holds the model, optimizer, schedule and early-stopping state and the run's
config, so :func:`medscope.train.experiment.train_run` given it replays the
remaining epochs exactly as an uninterrupted run would.
"""
from __future__ import annotations

import os

from medscope import atomic, checkpoints, runs
from medscope.errors import UsageError
from medscope.runs import Run
from medscope.train.config import TrainConfig, check_batch

# What a checkpoint must hold to continue training, beside the model, its spec and the config
TRAINING_STATE = ("epoch", "optimizer", "scheduler", "best_auc", "best_epoch", "stale_epochs", "history",
                  "wall_seconds")


def open_checkpoint(results_dir: str | os.PathLike, spec: str) -> tuple[Run, dict]:
    """The run ``spec`` (name, path or unique prefix) and its last checkpoint, checked.

    Refuses (UsageError) a run with no readable ``last.pt``, a checkpoint
    without the training state, one whose config is not valid, and a run
    that already completed all its epochs.
    """
    run = runs.resolve_run(results_dir, spec)
    if run.status() == "running":  # its process is alive: two trainers must not write one run
        raise UsageError(f"{run.name} is still training (process {run.info().get('pid')}); "
                         "stop it first, or wait for it")
    atomic.remove_stale_temporaries(run.path)  # what the killed or stopped process left half-written
    checkpoint = checkpoints.load(run.layout.last_pt)
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if missing:
        raise UsageError(f"{run.layout.last_pt} cannot resume training: it lacks {', '.join(missing)}")
    config = checkpoint_config(checkpoint, run.layout.last_pt)
    if checkpoint["epoch"] >= config.epochs and run.info().get("status") == "completed":
        raise UsageError(f"{run.name} already finished all {config.epochs} epochs")
    return run, checkpoint


def checkpoint_config(checkpoint: dict, source: str | os.PathLike = "the checkpoint") -> TrainConfig:
    """The :class:`TrainConfig` a checkpoint recorded; a missing or bad one is a UsageError naming ``source``."""
    recorded = checkpoint.get("config")
    if recorded is None:
        raise UsageError(f"{source} has no config; it was not written by medscope's training")
    try:
        return TrainConfig.from_dict(recorded)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None


def resumed_config(checkpoint: dict, world_size: int) -> TrainConfig:
    """The config to continue with on ``world_size`` processes: the recorded one, whose batch must split over them.

    The recorded ``world_size`` stays that of the run's start: it says how the
    epochs before the interruption were trained.
    """
    config = checkpoint_config(checkpoint)
    check_batch(config.batch_size, world_size)
    return config
