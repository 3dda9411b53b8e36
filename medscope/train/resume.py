"""Continuing an interrupted run from its last checkpoint.

``last.pt`` is written at the end of every epoch (:mod:`medscope.train.experiment`);
it holds the model, optimizer, schedule and early-stopping state and the run's
config, so :func:`medscope.train.experiment.train_run` given it replays the
remaining epochs exactly as an uninterrupted run would.

A resume may change three things of the recorded config, and nothing else:
``epochs`` (train on to a larger total; the learning-rate schedule is then the
one of the new total from the step reached), and the folders it writes to,
``results_dir`` (where the run is) and ``runs_dir`` (where its TensorBoard
events go from now on; the earlier events are copied there).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

from medscope import atomic, checkpoints, runs
from medscope.errors import UsageError
from medscope.runs import Run
from medscope.train.config import TrainConfig, check_batch

# What a checkpoint must hold to continue training, beside the model, its spec and the config
TRAINING_STATE = ("epoch", "optimizer", "scheduler", "best_auc", "best_epoch", "stale_epochs", "history",
                  "wall_seconds")


def open_checkpoint(results_dir: str | os.PathLike, spec: str, locks: contextlib.ExitStack, *,
                    epochs: int | None = None) -> tuple[Run, dict]:
    """The run ``spec`` (name, path or unique prefix) and its last checkpoint, checked.

    The run's training lock is taken first and kept in ``locks`` (it is released
    when they close): a second trainer of the same run is refused
    ("RUN is being trained by pid N"). Refuses (UsageError) a run with no readable
    ``last.pt``, a checkpoint without the training state, one whose config is not
    valid, and a run that completed (with ``epochs``: also one asked to train
    on past its completion; a completed run's results are final).
    """
    run = runs.resolve_run(results_dir, spec)
    locks.enter_context(runs.training_lock(run))
    if run.status() == "running":  # a live trainer that holds no lock: an older medscope, or another machine
        raise UsageError(f"{run.name} is still training (process {run.info().get('pid')}); "
                         "stop it first, or wait for it")
    atomic.remove_stale_temporaries(run.path)  # what the killed or stopped process left half-written
    checkpoint = checkpoints.load(run.layout.last_pt)
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if missing:
        raise UsageError(f"{run.layout.last_pt} cannot resume training: it lacks {', '.join(missing)}")
    config = checkpoint_config(checkpoint, run.layout.last_pt)
    if run.info().get("status") == "completed" and checkpoint["epoch"] >= config.epochs:
        if epochs is not None and epochs > checkpoint["epoch"]:
            raise UsageError(f"{run.name} completed {checkpoint['epoch']} epochs and its results are final; "
                             f"train a new run with --epochs {epochs} instead")
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


def resumed_config(checkpoint: dict, world_size: int, *, epochs: int | None = None,
                   results_dir: str | None = None, runs_dir: str | None = None) -> TrainConfig:
    """The config to continue with on ``world_size`` processes: the recorded one, whose batch must split
    over them, with the changes a resume may make (None keeps the recorded value).

    ``epochs`` is the new total, at least the epochs already trained. The
    recorded ``world_size`` stays that of the run's start: it says how the
    epochs before the interruption were trained.
    """
    config = checkpoint_config(checkpoint)
    done = checkpoint["epoch"]
    if epochs is not None and epochs < done:
        raise UsageError(f"--epochs {epochs}: the run has already trained {done} epochs; "
                         f"give the total to reach, at least {done}")
    changes = {"epochs": epochs, "results_dir": results_dir, "runs_dir": runs_dir}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})  # checked again
    check_batch(config.batch_size, world_size)
    return config


def carry_events(run: Run, recorded_runs_dir: str, runs_dir: str) -> str | None:
    """Make ``<runs_dir>/<run>`` the run's TensorBoard folder for the epochs from here on.

    Where the run's events so far are elsewhere (it was trained with another
    ``--runs-dir``, or run.json records another folder), they are copied there
    first, so the new folder shows the whole run. A folder of that name that
    holds another run's files is refused. Returns a note saying what was done,
    or None when the folder is already the run's.
    """
    target = run.layout.tensorboard_dir(runs_dir)
    recorded = run.info().get("tensorboard_dir")
    own = [Path(p) for p in (recorded, run.layout.tensorboard_dir(recorded_runs_dir)) if p]
    if any(_same_folder(target, folder) for folder in own):
        return None
    if target.is_dir() and any(target.iterdir()):
        raise UsageError(f"--runs-dir {runs_dir}: {target} already holds files that are not {run.name}'s "
                         "TensorBoard events; choose another --runs-dir")
    source = next((folder for folder in own if folder.is_dir()), None)
    if source is None:
        target.mkdir(parents=True, exist_ok=True)
        return f"note: the earlier TensorBoard events of {run.name} are not found; new ones go to {target}"
    shutil.copytree(source, target, dirs_exist_ok=True)
    return f"note: TensorBoard events now go to {target} (the earlier ones were copied from {source})"


def _same_folder(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)
