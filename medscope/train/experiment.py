"""One training run from start (or resume) to a complete run folder.

:func:`train_run` is what ``train.py`` calls once per dataset x model. It owns
the epoch loop, checkpoints, TensorBoard logging and the final evaluation that
writes ``metrics.json``, ``inference_outputs.pt`` and the figures.

Under torchrun every rank calls it: all train (the model wrapped in DDP) and
evaluate the validation split together; only rank 0 writes, and rank 0 alone
runs the final evaluation over the whole test split (so its files are exactly
those of a single process given the same best checkpoint).
"""
from __future__ import annotations

import contextlib
import copy
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medscope import atomic, board, checkpoints, plots
from medscope.activations import collect_outputs
from medscope.baselines import reference_baseline
from medscope.data import DatasetInfo, Split, load_dataset, subset
from medscope.errors import RunFailed, UsageError
from medscope.metrics import collapse, evaluate
from medscope.models import (
    build_model,
    imagenet_state_dict,
    load_pretrained,
    model_spec,
)
from medscope.runs import Run, now_iso
from medscope.stats.bootstrap import metric_intervals
from medscope.stats.delong import delong_interval
from medscope.tasks import task
from medscope.train import augment, distributed, precision
from medscope.train.config import TrainConfig, memory_mapped
from medscope.train.distributed import SINGLE, DistContext
from medscope.train.loop import (
    EpochConfig,
    NonFiniteLoss,
    UnstableEpoch,
    cpu_name,
    evaluate_split,
    evaluation_settings,
    make_optimizer,
    make_scheduler,
    recompute_batchnorm,
    seed_epoch,
    seed_rank,
    train_one_epoch,
)

HISTORY_COLUMNS = ["epoch", "train_loss", "train_auc", "train_acc", "val_loss", "val_auc", "val_acc", "lr",
                   "images_per_s", "epoch_seconds", "skipped_steps", "val_collapsed"]
# An epoch with too many non-finite steps, or a non-finite validation, goes back to the last good
# epoch's weights and optimizer with the learning rate times ROLLBACK_LR_FACTOR, at most
# MAX_ROLLBACKS times in a run; only then does the run end "failed".
MAX_ROLLBACKS = 3
ROLLBACK_LR_FACTOR = 0.5
# --select: which epoch's weights become the run's model (best.pt) and give its test metrics
SELECTED_BY = {"best": "highest validation AUC among epochs whose validation predictions are not one class",
               "last": "last epoch"}
SUMMARY_COLUMNS = ["run", "dataset", "size", "model", "task", "epochs_run", "best_epoch", "val_auc", "val_acc",
                   "test_auc", "test_acc", "test_macro_f1", "wall_seconds", "device", "amp", "seed",
                   "test_auc_low", "test_auc_high", "test_acc_low", "test_acc_high", "test_balanced_acc",
                   "test_balanced_acc_low", "test_balanced_acc_high", "test_majority_acc", "interval_method",
                   "paper_method", "paper_auc", "paper_acc", "collapsed", "test_top_class_share", "test_top_class",
                   "skipped_steps", "rollbacks"]


def environment(device: torch.device, amp_dtype, dist: DistContext = SINGLE) -> dict:
    import medmnist
    import torchvision

    env = {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": np.__version__,
        "medmnist": getattr(medmnist, "__version__", "unknown"), "device": str(device),
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
        "threads": torch.get_num_threads(), "cpu": cpu_name(), "hostname": platform.node(),
        **dist.record(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


@dataclass
class TrainState:
    """Everything that changes from epoch to epoch and must survive a resume."""

    epoch: int = 0  # epochs completed
    best_auc: float = -math.inf  # highest validation AUC so far (early stopping counts from it)
    best_epoch: int = 0  # the epoch whose weights are best.pt (chosen as --select says)
    stale_epochs: int = 0
    history: list = field(default_factory=list)
    wall_seconds: float = 0.0
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient, in epochs kept
    rollbacks: list = field(default_factory=list)  # {"epoch", "to_epoch", "lr_scale", "reason"}
    lr_scale: float = 1.0  # product of the rollbacks' learning-rate factors
    best_collapsed: bool = False  # the kept epoch's validation predictions are one class

    def stability(self) -> dict:
        """What run.json says of non-finite steps and rollbacks."""
        return {"skipped_steps": self.skipped_steps, "rollbacks": self.rollbacks, "lr_scale": self.lr_scale}


def _checkpoint(model, spec, config: TrainConfig, state: TrainState, optimizer, scheduler, scaler) -> dict:
    return {
        "model": model.state_dict(), "spec": spec, "config": config.to_dict(), "epoch": state.epoch,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "best_auc": state.best_auc, "best_epoch": state.best_epoch, "stale_epochs": state.stale_epochs,
        "history": state.history, "wall_seconds": state.wall_seconds, "stability": state.stability(),
        "best_collapsed": state.best_collapsed,
    }


def _snapshot(model, optimizer, scheduler, scaler) -> dict:
    """An in-memory copy of what an epoch changes, to roll back to (every rank keeps its own)."""
    return copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(),
                          "scaler": scaler.state_dict() if scaler is not None else None})


def _roll_back(snapshot: dict, model, optimizer, scheduler, scaler, factor: float) -> None:
    """Restore ``snapshot`` and multiply the learning rate (peak and current) by ``factor``."""
    model.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optimizer"])
    scheduler.load_state_dict(snapshot["scheduler"])
    if scaler is not None and snapshot["scaler"] is not None:
        scaler.load_state_dict(snapshot["scaler"])
    scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    for group in optimizer.param_groups:
        group["initial_lr"] *= factor
        group["lr"] *= factor


def load_data(info: DatasetInfo, data_dir, config: TrainConfig, *, memmap: str | None = None,
              dist: DistContext = SINGLE) -> dict[str, Split]:
    """The splits a run trains and is evaluated on, its training split cut to ``config.subset`` images.

    Each node's first process downloads, checks and extracts the file; then the
    node's other processes open the same files. ``memmap`` overrides
    ``config.memmap`` (a resumed run may be read differently from how it started).
    """
    dataset = distributed.local_main_first(dist, lambda: load_dataset(
        info, data_dir, check_md5=not config.skip_md5, mmap=memory_mapped(memmap or config.memmap),
        copies=dist.local_world_size))
    if config.subset:
        dataset["train"] = subset(dataset["train"], config.subset, config.seed)
    return dataset


def train_run(run: Run, config: TrainConfig, info: DatasetInfo, data: dict[str, Split], device: torch.device,
              *, created_by: str, resume: dict | None = None, log=print, dist: DistContext = SINGLE,
              workers: int | None = None) -> dict:
    """Train (or resume) one run and write its complete folder. Returns final metrics.

    Parameters
    ----------
    config : TrainConfig
        The run's settings, complete (:func:`medscope.train.config.with_recipe`).
    created_by : str
        The script recorded in run.json as the creator of the files written here.
    resume : dict, optional
        The run's last checkpoint (:func:`medscope.train.resume.open_checkpoint`):
        training continues after its epoch.
    dist : DistContext
        This process's place in a torchrun job; every rank calls this function
        and only rank 0 writes. Other ranks return None.
    workers : int, optional
        Background loader processes (default: the run's ``workers`` setting).
    """
    if not config.is_complete:
        raise ValueError("train_run needs a complete config: fill the recipe's settings with config.with_recipe")
    spec = model_spec(config.model, info.n_channels, info.num_classes, info.spatial_dims, info.size, config.dropout)
    settings = evaluation_settings(config, info, device)
    amp_dtype, memory_format = settings["amp_dtype"], settings["memory_format"]
    main = dist.is_main
    if not main:
        log = _silent

    torch.manual_seed(config.seed)
    model = build_model(**spec)
    if config.pretrained and resume is None:
        # rank 0 reads the weights; DDP hands them to the other ranks when it wraps the model
        distributed.on_main(dist, lambda: _load_pretrained_weights(model, config.weights, info))
    model = model.to(device)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    # layers whose bf16 (fp16) kernels give wrong results on this machine train in float32
    checked_precision = precision.keep_wrong_layers_in_float32(
        model, (info.n_channels, *(info.size,) * info.spatial_dims), amp_dtype, device, memory_format=memory_format)
    if checked_precision["float32_layers"]:
        log(f"  {len(checked_precision['float32_layers'])} layer(s) train in float32: their "
            f"{str(amp_dtype).replace('torch.', '')} kernels give wrong gradients on this machine "
            f"({', '.join(checked_precision['float32_layers'])})")

    n_train = len(data["train"])
    steps_per_epoch = max(1, n_train // config.batch_size) if n_train > config.batch_size else 1
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    scheduler = make_scheduler(optimizer, total_steps, warmup_steps, config.schedule)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    state = TrainState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        stability = resume.get("stability") or {}
        state = TrainState(resume["epoch"], resume["best_auc"], resume["best_epoch"], resume["stale_epochs"],
                           list(resume["history"]), resume["wall_seconds"],
                           skipped_steps=int(stability.get("skipped_steps", 0)),
                           rollbacks=list(stability.get("rollbacks", [])),
                           lr_scale=float(stability.get("lr_scale", 1.0)),
                           best_collapsed=bool(resume.get("best_collapsed", False)))
    # DDP trains; the bare module is evaluated and saved, so checkpoints load in single-process tools
    trained = model
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # A 1-channel stem's weight is both contiguous and channels_last; its gradient and DDP's
        # bucket only spell the strides differently, and DDP warns on every step for nothing.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    epoch_cfg = EpochConfig(
        task=info.task, num_classes=info.num_classes, batch_size=config.batch_size,
        augment=augment.make_config(info.flag, config.augment, info.spatial_dims),
        label_smoothing=config.label_smoothing, mixup_alpha=config.mixup, clip_grad=config.clip_grad,
        amp_dtype=amp_dtype, memory_format=memory_format, workers=config.workers if workers is None else workers)

    writer = None
    stopped_early = False
    good = None  # the last good epoch's weights and optimizer, to roll back to
    try:  # from the moment run.json may say "running", every way out says how training stopped
        if main:
            env = environment(device, amp_dtype, dist)
            tb_dir = run.layout.tensorboard_dir(config.runs_dir)
            env["precision_check"] = checked_precision
            if resume is None:
                run.update(name=run.name, created=now_iso(), status="running", config=config.to_dict(),
                           environment=env, model=spec, dataset=_dataset_record(info, data), artifacts=[])
            else:  # the config as resumed: its epochs and folders may differ from the start's
                run.update(status="running", resumed=now_iso(), environment=env, config=config.to_dict(),
                           tensorboard_dir=str(tb_dir))

            from torch.utils.tensorboard import (
                SummaryWriter,  # imported late: it is slow to import
            )

            writer = SummaryWriter(log_dir=str(tb_dir), purge_step=state.epoch + 1 if resume is not None else None)
        while state.epoch < config.epochs:
            epoch = state.epoch + 1
            generator = seed_epoch(config.seed, epoch)
            augment_generator = seed_rank(config.seed, epoch, dist.rank)
            started = time.perf_counter()
            if good is None:
                good = _snapshot(model, optimizer, scheduler, scaler)
            try:
                train = train_one_epoch(trained, data["train"], epoch_cfg, optimizer, scheduler, scaler, device,
                                        generator, description=f"epoch {epoch}/{config.epochs}", dist=dist,
                                        augment_generator=augment_generator)
                distributed.broadcast_buffers(dist, model)
                if config.precise_bn:  # every rank reads the same images: the statistics stay equal
                    recompute_batchnorm(model, data["train"], epoch_cfg, device)
                val = evaluate_split(model, data["val"], epoch_cfg, device, dist=dist)
            except NonFiniteLoss as exc:  # every rank sees the same reduced values: all roll back alike
                if len(state.rollbacks) >= MAX_ROLLBACKS:
                    raise NonFiniteLoss(f"{exc} after {MAX_ROLLBACKS} rollbacks with a lower learning rate") from None
                _roll_back(good, model, optimizer, scheduler, scaler, ROLLBACK_LR_FACTOR)
                state.lr_scale *= ROLLBACK_LR_FACTOR
                state.rollbacks.append({"epoch": epoch, "to_epoch": state.epoch, "lr_scale": state.lr_scale,
                                        "reason": str(exc)})
                log(f"epoch {epoch:3d}/{config.epochs}  {exc}: back to the weights of epoch {state.epoch} with "
                    f"the learning rate x{state.lr_scale:g} (rollback {len(state.rollbacks)} of at most "
                    f"{MAX_ROLLBACKS})")
                if main:
                    run.update(stability=state.stability())
                    writer.add_scalar("stability/rollbacks", len(state.rollbacks), epoch)
                continue
            seconds = time.perf_counter() - started
            state.skipped_steps += train["skipped_steps"]
            row = {"epoch": epoch, "train_loss": train["loss"], "train_auc": train["auc"], "train_acc": train["acc"],
                   "val_loss": val["loss"], "val_auc": val["auc"], "val_acc": val["acc"],
                   "lr": optimizer.param_groups[0]["lr"], "images_per_s": train["images_per_s"],
                   "epoch_seconds": seconds, "skipped_steps": train["skipped_steps"]}
            state.epoch, state.wall_seconds = epoch, state.wall_seconds + seconds
            state.history.append(row)
            good = None  # this epoch is good: the next one starts from a copy of it
            # every rank holds the same gathered validation scores, so every rank decides alike
            # an epoch whose validation predictions are one class is kept only while every epoch is
            # (a collapsed model can still rank well: AUC alone picked such epochs on small splits)
            collapsed = collapse(info.task, data["val"].labels.numpy(), val["scores"])["collapsed"]
            row["val_collapsed"] = int(collapsed)
            improved = (state.best_epoch == 0 or (state.best_collapsed and not collapsed)
                        or (val["auc"] > state.best_auc and (state.best_collapsed or not collapsed)))
            if improved:
                state.best_auc, state.stale_epochs = val["auc"], 0
            else:
                state.stale_epochs += 1
            kept = improved or config.select == "last"
            if kept:
                state.best_epoch, state.best_collapsed = epoch, collapsed
            if main:
                _log_epoch(writer, row)
                if kept:
                    checkpoints.save(run.layout.best_pt,
                                     {"model": model.state_dict(), "spec": spec, "config": config.to_dict(),
                                      "epoch": epoch,
                                      "val_auc": val["auc"]})
                checkpoints.save(run.layout.last_pt,
                                 _checkpoint(model, spec, config, state, optimizer, scheduler, scaler))
                atomic.write_csv(run.layout.history_csv, state.history, HISTORY_COLUMNS)
            log(f"epoch {epoch:3d}/{config.epochs}  train loss {train['loss']:.4f} auc {train['auc']:.3f}  "
                f"val loss {val['loss']:.4f} auc {val['auc']:.3f} acc {val['acc']:.3f}  "
                f"{train['images_per_s']:.0f} img/s  {seconds:.1f}s{'  *' if kept else ''}"
                + (f"  ({train['skipped_steps']} non-finite step(s) skipped)" if train["skipped_steps"] else ""))
            if config.patience and state.stale_epochs >= config.patience:
                log(f"early stop: validation AUC has not improved for {config.patience} epochs")
                stopped_early = True
                break
    except KeyboardInterrupt:
        if main:
            _record_stop(run, writer, state, status="interrupted")
            if state.epoch:
                log(f"\ninterrupted after {state.epoch} complete epoch(s); the checkpoint of epoch {state.epoch} "
                    f"is intact.\nresume with: {distributed.command_prefix(dist)} train.py --resume {run.path}")
            else:
                log("\ninterrupted before the first epoch ended: there is no checkpoint to resume from; "
                    "start the run again")
        raise
    except NonFiniteLoss as exc:
        distributed.signals["held"] = True  # torchrun stops the other ranks now: finish writing first
        if main:
            _record_stop(run, writer, state, status="failed", failure=str(exc))
        raise RunFailed(f"{exc} in epoch {state.epoch + 1}; training stopped ({_kept(run, state)}). "
                        "Try a lower --lr or --clip-grad 1.0") from None
    except Exception as exc:
        distributed.signals["held"] = True  # see NonFiniteLoss
        if not (dist.distributed and distributed.is_peer_failure(exc)):
            if main:  # a full disk, a bug: run.json must not keep saying "running"
                _record_stop(run, writer, state, status="failed", failure=f"{type(exc).__name__}: {exc}")
            raise
        # another process of the job died and torchrun is stopping this one: say so while we can
        if main:
            _record_stop(run, writer, state, status="failed",
                         failure=f"another process failed: {str(exc).splitlines()[0]}")
        raise RunFailed(f"another process of the job failed in epoch {state.epoch + 1} ({_kept(run, state)}); "
                        f"resume with: {distributed.command_prefix(dist)} train.py --resume {run.path}") from None

    result = None
    if main:
        try:
            result = _finish(run, config, info, data, device, spec, state, writer, stopped_early, created_by)
        except KeyboardInterrupt:
            _record_stop(run, writer, state, status="interrupted")
            log(f"\ninterrupted during the final evaluation; all {state.epoch} epochs are saved.\n"
                f"resume with: {distributed.command_prefix(dist)} train.py --resume {run.path}")
            raise
        except Exception as exc:
            _record_stop(run, writer, state, status="failed", failure=f"{type(exc).__name__}: {exc}")
            raise
        writer.close()
    return result


def _class_name(names, index) -> str | None:
    if index is None:
        return None
    return str(names[index]) if 0 <= index < len(names) else str(index)


def _record_stop(run: Run, writer, state: TrainState, **fields) -> None:
    """Close the event file and say in run.json how and where training stopped (best effort: on a
    full disk the error that stopped training is the one to report)."""
    if writer is not None:
        with contextlib.suppress(OSError):
            writer.close()
    with contextlib.suppress(OSError):  # run.update writes in place when the disk is full
        run.update(epochs_completed=state.epoch, **fields)


def _kept(run: Run, state: TrainState) -> str:
    return f"last good checkpoint: {run.layout.last_pt}" if state.epoch else "no epoch completed"


def _silent(*_args, **_kwargs) -> None:
    """The log of ranks other than 0: one voice per job."""


def _load_pretrained_weights(model, weights: str | None, info) -> None:
    """Start ``model`` from the local state dict ``weights``, or torchvision's download when it is None."""
    if weights:
        state = checkpoints.load_state_dict(weights)
        source = weights
    else:
        try:
            state, source = imagenet_state_dict(info.spatial_dims)
        except Exception as exc:  # noqa: BLE001 - no network, proxy, hub errors: all mean "not available"
            raise UsageError(f"--pretrained: could not download torchvision's weights ({exc.__class__.__name__}); "
                             "pass a local state dict with --weights PATH") from None
    missing = load_pretrained(model, state, info.spatial_dims)
    loaded = len(model.backbone.state_dict()) - len(missing)
    if loaded == 0:
        raise UsageError(f"--weights {source}: no tensor matches a ResNet-18 "
                         f"{'2D' if info.spatial_dims == 2 else '3D (r3d_18)'} backbone")


def _dataset_record(info: DatasetInfo, data) -> dict:
    return {"flag": info.flag, "size": info.size, "task": info.task, "n_channels": info.n_channels,
            "class_names": info.class_names, "spatial_dims": info.spatial_dims,
            "n_samples": {k: len(v) for k, v in data.items()}, "md5": info.md5, "url": info.url}


def _log_epoch(writer, row: dict) -> None:
    step = row["epoch"]
    for key in ("loss", "auc", "acc"):
        writer.add_scalar(f"{key}/train", row[f"train_{key}"], step)
        writer.add_scalar(f"{key}/val", row[f"val_{key}"], step)
    writer.add_scalar("lr", row["lr"], step)
    writer.add_scalar("stability/skipped_steps", row.get("skipped_steps", 0), step)
    writer.add_scalar("speed/images_per_s", row["images_per_s"], step)
    writer.flush()


def _finish(run, config: TrainConfig, info, data, device, spec, state, writer, stopped_early, created_by) -> dict:
    """Evaluate the best checkpoint on val and test and write every output file."""
    layout = run.layout
    best = checkpoints.load(layout.best_pt, map_location=device)
    model = checkpoints.model_from_checkpoint(best, device)
    settings = evaluation_settings(config, info, device)  # the precision and layout training used
    amp_dtype = settings["amp_dtype"]
    if settings["memory_format"] is not None:
        model = model.to(memory_format=settings["memory_format"])
    names = info.class_names
    val_out = collect_outputs(model, data["val"], info.task, device, activations=False, **settings)
    test_out = collect_outputs(model, data["test"], info.task, device, **settings)
    val_metrics = evaluate(info.task, val_out["labels"].numpy(), val_out["probabilities"].numpy(), names)
    test_metrics = evaluate(info.task, test_out["labels"].numpy(), test_out["probabilities"].numpy(), names)
    for split_metrics, out in ((val_metrics, val_out), (test_metrics, test_out)):
        split_metrics["intervals"] = intervals(info.task, out["labels"].numpy(), out["probabilities"].numpy(),
                                               names, config.bootstrap, config.seed)
    for split_metrics, out in ((val_metrics, val_out), (test_metrics, test_out)):
        split_metrics["collapse"] = collapse(info.task, out["labels"].numpy(), out["probabilities"].numpy())
    baseline = reference_baseline(info.flag, info.size, config.model)
    metrics = {"val": val_metrics, "test": test_metrics, "best_epoch": state.best_epoch,
               "collapsed": test_metrics["collapse"]["collapsed"], "stability": state.stability(),
               "selected_by": SELECTED_BY[config.select],
               "epochs_run": state.epoch, "stopped_early": stopped_early, "tta": config.tta,
               "task": info.task, "class_names": names,
               "baseline": None if baseline is None else {"method": baseline.method, "auc": baseline.auc,
                                                          "acc": baseline.acc, "source": baseline.source}}
    written = [atomic.write_json(layout.metrics_json, metrics)]

    outputs = dict(test_out, split="test", task=info.task, class_names=names, tta=config.tta,
                   indices=torch.arange(len(data["test"])), best_epoch=state.best_epoch)
    written.append(atomic.save_torch(layout.inference_outputs, outputs))
    written.append(atomic.write_json(layout.inference_mean, inference_means(test_out)))

    summary = {"run": run.name, "dataset": info.flag, "size": info.size, "model": config.model, "task": info.task,
               "epochs_run": state.epoch, "best_epoch": state.best_epoch, "val_auc": val_metrics["auc"],
               "val_acc": val_metrics["acc"], "test_auc": test_metrics["auc"], "test_acc": test_metrics["acc"],
               "test_macro_f1": test_metrics["macro_f1"], "wall_seconds": round(state.wall_seconds, 2),
               "device": str(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
               "seed": config.seed, **_interval_columns(test_metrics),
               "paper_method": baseline.method if baseline else None, "paper_auc": baseline.auc if baseline else None,
               "paper_acc": baseline.acc if baseline else None, "collapsed": test_metrics["collapse"]["collapsed"],
               "test_top_class_share": test_metrics["collapse"]["top_class_share"],
               "test_top_class": _class_name(names, test_metrics["collapse"]["top_class"]),
               "skipped_steps": state.skipped_steps, "rollbacks": len(state.rollbacks)}
    written.append(atomic.write_csv(layout.summary_csv, [summary], SUMMARY_COLUMNS))

    title = f"{run.name}"
    written.append(plots.training_curves(layout.training_curves_png, state.history, title, kept_epoch=state.best_epoch))
    if task(info.task).is_multilabel:
        matrix = np.sum([np.asarray(m) for m in test_metrics["confusion_matrix"].values()], axis=0)
        written.append(plots.confusion_matrix(layout.confusion_matrix_png, matrix, ["negative", "positive"],
                                              f"test, all labels pooled — {title}"))
    else:
        written.append(plots.confusion_matrix(layout.confusion_matrix_png, test_metrics["confusion_matrix"],
                                              names, f"test — {title}"))
    written.append(_prediction_grid(run, info, data["test"], test_out, title))

    # the figures and the metrics table in TensorBoard too, at the last epoch, beside the curves
    board.log_figures(writer, [layout.training_curves_png, layout.confusion_matrix_png, layout.sample_predictions_png],
                      state.epoch)
    writer.add_text(board.METRICS_TAG, board.metrics_table(test_metrics, metrics["baseline"]), state.epoch)
    _log_final(writer, config, summary, model)
    written += [layout.history_csv, layout.best_pt, layout.last_pt]
    run.update(status="completed", finished=now_iso(), epochs_completed=state.epoch, stability=state.stability(),
               metrics={"val_auc": val_metrics["auc"], "val_acc": val_metrics["acc"],
                        "test_auc": test_metrics["auc"], "test_acc": test_metrics["acc"],
                        "best_epoch": state.best_epoch, "wall_seconds": round(state.wall_seconds, 2),
                        "collapsed": test_metrics["collapse"]["collapsed"]},
               tensorboard_dir=str(layout.tensorboard_dir(config.runs_dir)))
    run.add_artifacts([Path(p).name for p in written], created_by=created_by)
    return summary


def intervals(task_name: str, labels, probabilities, class_names, n_resamples: int, seed: int) -> dict:
    """95% intervals of a split's headline metrics: a stratified percentile bootstrap of AUC, ACC,
    balanced accuracy and per-class sensitivity/specificity, and DeLong's interval for a binary AUC.
    Empty with ``n_resamples`` 0 (and DeLong's alone for binary tasks)."""
    result = {}
    if n_resamples:
        result = metric_intervals(task_name, labels, probabilities, n_resamples=n_resamples, seed=seed,
                                  class_names=class_names)
    if task(task_name).is_binary and np.unique(labels).size == 2:
        result["auc_delong"] = delong_interval(np.asarray(labels).reshape(-1), np.asarray(probabilities)[:, -1])
    return result


def _interval_columns(split_metrics: dict) -> dict:
    """summary.csv's interval columns of one split (empty where there is no interval)."""
    found = split_metrics.get("intervals") or {}
    row = {"test_balanced_acc": split_metrics.get("balanced_acc"), "test_majority_acc": split_metrics.get("majority_acc")}
    for key in ("auc", "acc", "balanced_acc"):
        entry = found.get(key) or {}
        row[f"test_{key}_low"], row[f"test_{key}_high"] = entry.get("low"), entry.get("high")
    row["interval_method"] = (found.get("auc") or {}).get("method")
    return row


def inference_means(outputs: dict) -> dict:
    """Per-layer mean activation (over samples and channels) and per-channel means."""
    layers = {}
    labels = outputs["labels"]
    for name in outputs["layer_names"]:
        acts = outputs["activations"][name]
        entry = {"mean": float(acts.mean()), "std": float(acts.std()), "channels": int(acts.shape[1]),
                 "channel_means": acts.mean(dim=0).tolist()}
        if labels.shape[1] == 1:
            entry["class_means"] = {str(int(c)): float(acts[labels[:, 0] == c].mean())
                                    for c in torch.unique(labels[:, 0])}
        layers[name] = entry
    return {"split": "test", "n": int(outputs["logits"].shape[0]), "layers": layers,
            "embedding_mean": float(outputs["embeddings"].mean())}


def _prediction_grid(run, info, split, outputs, title, n: int = 32):
    count = min(n, len(split))
    index = torch.linspace(0, len(split) - 1, count).round().long().unique()
    images = split.images[index].numpy()
    probs = outputs["probabilities"][index].numpy()
    labels = outputs["labels"][index].numpy()
    kind = task(info.task)
    pred = kind.predictions(probs)
    confidence = kind.predicted_probability(probs, pred)
    if kind.is_multilabel:
        # a tile has room for the indices of the positive labels, not their names
        names = [str(i) for i in range(probs.shape[1])]
        confidence = confidence.mean(axis=1)
    else:
        names = list(info.class_names)  # whole: the grid wraps long names
    truth = [kind.label_text(row, names) for row in labels]
    shown = [kind.label_text(row, names) for row in pred]
    return plots.prediction_grid(run.layout.sample_predictions_png, images, truth, shown, confidence,
                                 kind.correct(labels, pred), f"test samples — {title}")


def _log_final(writer, config: TrainConfig, summary, model) -> None:
    from torch.utils.tensorboard.summary import hparams

    hparam_dict = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in config.to_dict().items() if k not in ("data_dir", "results_dir", "runs_dir", "run_name")}
    metric_dict = {"hparam/test_auc": summary["test_auc"], "hparam/test_acc": summary["test_acc"],
                   "hparam/val_auc": summary["val_auc"]}
    experiment, session_start, session_end = hparams(hparam_dict, metric_dict)
    file_writer = writer._get_file_writer()  # one folder per run: add_hparams would make a sub-run
    for event in (experiment, session_start, session_end):
        file_writer.add_summary(event)
    for key, value in metric_dict.items():
        writer.add_scalar(key, value, summary["epochs_run"])
    for name, param in model.named_parameters():
        writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), summary["epochs_run"])
    writer.flush()
