"""The training loop: optimizer, schedule, mixed precision, one epoch, checkpoints.

Reproducibility: every epoch re-seeds the global RNG (dropout, MixUp) and a
data generator (shuffling, augmentation) from ``(seed, epoch)``, and a
checkpoint is written at every epoch boundary. A run resumed from epoch *e*
therefore replays epochs *e+1...* exactly as an uninterrupted run would.

Under torchrun (:mod:`medscope.train.distributed`) every rank draws the epoch's
permutation from the shared generator and trains on its part of each global
batch; ranks other than 0 take their dropout, MixUp and augmentation from
generators of their own (:func:`seed_rank`), so the same seed and world size
give the same run, and rank 0 draws exactly what a single process draws.
"""
from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medscope import tasks
from medscope.activations import autocast
from medscope.data import Split, batches, load_batches, normalize
from medscope.metrics import acc_score, auc_score
from medscope.progress import progress
from medscope.train import augment
from medscope.train.distributed import SINGLE, DistContext, all_gather_rows, all_reduce_sum, shard_epoch, shard_range

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
SELECTIONS = ("best", "last")  # --select: which epoch becomes the run's model


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite, or exploded (training diverged)."""


class UnstableEpoch(NonFiniteLoss):
    """More steps of an epoch than :func:`max_skipped` allows had a non-finite loss or gradient."""

    def __init__(self, skipped: int, steps: int, steps_total: int):
        super().__init__(f"{skipped} of the first {steps} steps (of {steps_total}) had a non-finite loss or gradient")
        self.skipped = skipped


# A mean cross-entropy (or BCE) this large means the weights have diverged: a confidently wrong
# prediction costs tens, not thousands.
EXPLODED_LOSS = 1e4


def check_loss(loss: float, where: str) -> None:
    """Raise :class:`NonFiniteLoss` when a mean loss is NaN, infinite or above :data:`EXPLODED_LOSS`."""
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"the {where} loss is {loss}")
    if loss > EXPLODED_LOSS:
        raise NonFiniteLoss(f"the {where} loss exploded to {loss:.3g}")


# ------------------------------------------------------------------ precision

def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512-BF16 or AMX) and oneDNN uses them.

    Without them bf16 autocast is emulated and much slower than fp32 (measured
    ~20x slower on an AVX2-only EPYC, see docs/BENCHMARKS.md). oneDNN also says
    yes on AVX-512 CPUs without BF16 (it converts in software), so on Linux the
    CPU's own flags decide.
    """
    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    flags = _cpu_flags()
    return supported and (flags is None or bool(flags & {"avx512_bf16", "amx_bf16"}))


def cpu_name() -> str:
    """The CPU's model name (recorded beside every figure and in run.json)."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is no such file."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def amp_dtype_for(device: torch.device, enabled: bool):
    """The autocast dtype to use, or None for plain fp32."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def memory_format_for(spatial_dims: int, device: torch.device):
    """channels_last for 2D everywhere; for 3D only on CUDA (docs/BENCHMARKS.md).

    Measured: on an H100 channels_last_3d trains the 3D ResNet-18 1.26x and the 3D CNN 1.77x
    faster; on a CPU the 3D ResNet-18 is faster contiguous.
    """
    if spatial_dims == 2:
        return torch.channels_last
    return torch.channels_last_3d if torch.device(device).type == "cuda" else None


def evaluation_settings(config, info, device) -> dict:
    """How a run's final metrics are computed: ``collect_outputs`` keyword arguments.

    The autocast dtype and memory layout training used, and the flips of
    ``--tta``. Training writes metrics.json with these; an analysis that must
    reproduce those numbers (robustness's clean row) evaluates with the same.
    ``config`` is the run's :class:`~medscope.train.config.TrainConfig` or its
    recorded dict (where ``amp`` and ``tta`` may be absent: on and off).
    """
    device = torch.device(device)
    if isinstance(config, Mapping):
        amp, tta = bool(config.get("amp", True)), bool(config.get("tta"))
    else:
        amp, tta = config.amp, config.tta
    return {"amp_dtype": amp_dtype_for(device, amp),
            "memory_format": memory_format_for(info.spatial_dims, device),
            "tta_flag": info.flag if tta else None}


# ------------------------------------------------------------------ optimizer & schedule

def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    # no weight decay on biases and normalization parameters
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up from 1/warmup to 1, then cosine decay to 0 (``cosine``), a
    one-cycle cosine anneal from the peak down to 1e-3 of it (``onecycle``,
    with a warm-up of at least 10% of the steps), or flat (``constant``).
    """
    if schedule == "onecycle":
        warmup_steps = max(warmup_steps, int(0.1 * total_steps))
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    floor = 1e-3 if schedule == "onecycle" else 0.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))


def make_scheduler(optimizer, total_steps: int, warmup_steps: int, schedule: str):
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule))


# ------------------------------------------------------------------ loss

def loss_fn(task, logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy (BCE for multi-label); ``target`` may be soft (MixUp). ``task``: a name or Task."""
    logits = logits.float()
    if tasks.task(task).is_multilabel:
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def targets_for(task, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (N,) or multi-label floats (N, L)."""
    return labels.float() if tasks.task(task).is_multilabel else labels.view(-1)


def mixup(x, target, task, num_classes: int, alpha: float):
    """MixUp (Zhang et al. 2018) with one Beta(alpha, alpha) weight per batch."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    soft = target if tasks.task(task).is_multilabel else F.one_hot(target, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]


# ------------------------------------------------------------------ one epoch

@dataclass
class EpochConfig:
    task: str
    num_classes: int
    batch_size: int
    augment: augment.AugmentConfig
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    clip_grad: float = 0.0
    amp_dtype: torch.dtype | None = None
    memory_format: torch.memory_format | None = None
    workers: int = 0  # background loader processes (data.load_batches)


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed the global RNG for ``epoch`` and return the data generator."""
    torch.manual_seed(seed * 1_000_003 + epoch)
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + epoch + 500_000)
    return generator


def seed_rank(seed: int, epoch: int, rank: int) -> torch.Generator | None:
    """Re-seed the global RNG of rank ``rank > 0`` and return its augmentation generator.

    Call after :func:`seed_epoch`, whose generator still shuffles (the same
    permutation on every rank). Rank 0 keeps what :func:`seed_epoch` gave it
    (returns None), so one process under torchrun equals a plain run; other
    ranks get streams of their own, so their dropout masks and augmentations
    differ from rank 0's and depend only on ``(seed, epoch, rank)``.
    """
    if rank == 0:
        return None
    global_seed, data_seed = np.random.SeedSequence([seed % 2**64, epoch, rank]).generate_state(2, np.uint64)
    torch.manual_seed(int(global_seed))
    return torch.Generator().manual_seed(int(data_seed))


def train_one_epoch(model, split: Split, cfg: EpochConfig, optimizer, scheduler, scaler, device,
                    generator: torch.Generator, *, indices=None, description: str = "train",
                    on_step=None, dist: DistContext = SINGLE, augment_generator=None) -> dict:
    """One pass over the training split; returns loss, AUC, ACC and images/s.

    ``generator`` shuffles (and, unless ``augment_generator`` is given,
    augments). Under torchrun ``model`` is the DDP-wrapped model, ``cfg.batch_size``
    the global batch, and this rank trains on its part of each global batch
    (:func:`medscope.train.distributed.shard_epoch`); the returned metrics are those
    of all ranks together.
    """
    model.train()
    total_loss, seen = torch.zeros((), device=device), 0
    scores, labels = [], []
    start = time.perf_counter()
    order = indices if indices is not None else torch.arange(len(split))
    order = order[torch.randperm(len(order), generator=generator)]
    mine = shard_epoch(order, cfg.batch_size, dist.world_size, dist.rank, drop_last=len(order) > cfg.batch_size)
    augment_generator = augment_generator if augment_generator is not None else generator
    bar = progress(total=len(mine), desc=description, unit="img", **({} if dist.is_main else {"disable": True}))
    steps_total = math.ceil(len(mine) / max(1, cfg.batch_size // dist.world_size))
    steps = skipped = 0
    for images, label in load_batches(split, mine.split(cfg.batch_size // dist.world_size), device,
                                      workers=cfg.workers):
        x = augment.augment_batch(normalize(images), cfg.augment, augment_generator)
        if cfg.memory_format is not None:
            x = x.contiguous(memory_format=cfg.memory_format)
        target = targets_for(cfg.task, label, cfg.num_classes)
        if cfg.mixup_alpha > 0:
            x, target = mixup(x, target, cfg.task, cfg.num_classes, cfg.mixup_alpha)
        with autocast(device, cfg.amp_dtype):
            logits = model(x)
        loss = loss_fn(cfg.task, logits, target, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        # a step whose loss or gradient is not finite is skipped, not taken: one bad batch or kernel
        # call must neither end the run nor write NaN into the weights (the schedule still advances)
        stepped = _finite_everywhere(loss, dist) and _backward_and_step(model, loss, optimizer, scaler, cfg.clip_grad)
        with warnings.catch_warnings():  # a skipped first step: the schedule advances without an optimizer step
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            scheduler.step()
        if not stepped:
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            steps += 1
            if skipped > max_skipped(steps_total):
                raise UnstableEpoch(skipped, steps, steps_total)
            bar.update(x.shape[0])
            continue
        steps += 1
        batch = x.shape[0]
        total_loss += loss.detach() * batch
        seen += batch
        scores.append(tasks.task(cfg.task).scores(logits.detach()))  # stays on the device: no sync per step
        labels.append(label)
        bar.update(batch)
        if bar.n and not bar.disable:
            bar.set_postfix(loss=f"{(total_loss / seen).item():.4f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
        if on_step is not None:
            on_step()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.distributed:
        total_loss = all_reduce_sum(dist, total_loss)
        seen = int(all_reduce_sum(dist, torch.tensor(seen, device=device)))
    if not seen:  # every step skipped (the same reduced count on every rank)
        raise UnstableEpoch(skipped, steps, steps_total)
    elapsed = time.perf_counter() - start
    score = all_gather_rows(dist, torch.cat(scores).cpu()).numpy()
    label = all_gather_rows(dist, torch.cat(labels).cpu()).numpy()
    check_loss((total_loss / max(seen, 1)).item(), "training")  # the same reduced value on every rank
    if not np.isfinite(score).all():
        raise NonFiniteLoss("the model's training outputs are not finite")
    return {"loss": (total_loss / max(seen, 1)).item(), "auc": auc_score(cfg.task, label, score),
            "acc": acc_score(cfg.task, label, score), "images_per_s": seen / elapsed, "seconds": elapsed,
            "images": seen, "skipped_steps": skipped}


def max_skipped(steps_per_epoch: int) -> int:
    """Skipped steps an epoch tolerates before it is rolled back: a tenth of its steps, at least 3.

    A kernel that goes wrong now and then (one call in tens or hundreds) costs a few steps;
    weights that have gone bad make every step non-finite, and the epoch stops early.

    >>> max_skipped(18), max_skipped(300)
    (3, 30)
    """
    return max(3, steps_per_epoch // 10)


def _backward_and_step(model, loss, optimizer, scaler, clip_grad: float) -> bool:
    """Backward and optimizer step; False (and no step) when a gradient is not finite.

    The gradients' total norm is one reduction over the parameters (~1% of a step of the
    3D ResNet-18 on a CPU); DDP has already averaged them, so every rank decides alike.
    With fp16's GradScaler the scaler skips the step itself and lowers its scale.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, clip_grad)
        scaler.step(optimizer)
        scaler.update()
        return scaler.get_scale() >= scale  # a lower scale: the step found inf/NaN and was skipped
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    norm = nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if not torch.isfinite(norm):
        return False
    if clip_grad:
        nn.utils.clip_grads_with_norm_(params, clip_grad, norm)
    optimizer.step()
    return True


def _finite_everywhere(loss: torch.Tensor, dist: DistContext) -> bool:
    """Whether the loss is finite on every rank: all stop together, none waits in a collective."""
    finite = torch.isfinite(loss.detach())
    if not dist.distributed:
        return bool(finite)
    return int(all_reduce_sum(dist, (~finite).to(torch.int32))) == 0


PRECISE_BN_IMAGES = 512  # training images whose statistics replace BatchNorm's running ones (cost: see bench/bn_stability.py)


def precise_bn_indices(n_train: int, limit: int = PRECISE_BN_IMAGES) -> torch.Tensor:
    """Which training images :func:`recompute_batchnorm` reads: all, or ``limit`` evenly spaced ones.

    Fixed by ``n_train`` alone (no random draw), so it neither depends on nor
    consumes the training's random streams.

    >>> precise_bn_indices(5).tolist(), precise_bn_indices(10, limit=4).tolist()
    ([0, 1, 2, 3, 4], [0, 2, 5, 7])
    """
    if n_train <= limit:
        return torch.arange(n_train)
    return torch.div(torch.arange(limit) * n_train, limit, rounding_mode="floor")


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, split: Split, cfg: EpochConfig, device, *, batch_size: int = 128,
                        limit: int = PRECISE_BN_IMAGES) -> None:
    """Replace each BatchNorm layer's running mean and variance by their averages over training images.

    During training BatchNorm keeps an exponential average (momentum 0.1) of
    the last ~10 batches' statistics, taken while the weights still moved;
    after a few steps at a high learning rate they no longer describe the
    network evaluation sees, and validation swings (measured in
    bench/bn_stability.py). "Precise BN" (Wu & Johnson, 2021) recomputes them
    with the final weights: for every layer, the mean over batches of the batch
    mean and of the unbiased batch variance (``momentum=None``), on
    :func:`precise_bn_indices` of ``split`` without augmentation.

    Only the BatchNorm layers run in training mode: dropout stays off, so no
    random number is drawn and the training that follows is unchanged.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(split) == 0:
        return
    was_training = model.training
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts alike
        m.train()
    try:
        indices = precise_bn_indices(len(split), limit)
        for images, _ in load_batches(split, batches(split, batch_size, indices=indices), device):
            x = normalize(images)
            if cfg.memory_format is not None:
                x = x.contiguous(memory_format=cfg.memory_format)
            with autocast(device, cfg.amp_dtype):
                model(x)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def evaluate_split(model, split: Split, cfg: EpochConfig, device, batch_size: int = 256, *,
                   dist: DistContext = SINGLE) -> dict:
    """Loss, AUC and ACC on a split, plus its scores (no augmentation, eval mode).

    Under torchrun each rank evaluates a contiguous shard and the scores are
    gathered in split order, so every rank returns the metrics of the whole
    split. ``model`` is then the bare module: DDP's forward would synchronize
    buffers, a collective the ranks' unequal shards could not match.
    """
    model.eval()
    total_loss, scores = torch.zeros((), dtype=torch.float64, device=device), []
    start, stop = shard_range(len(split), dist.world_size, dist.rank)
    for images, label in load_batches(split, batches(split, batch_size, indices=torch.arange(start, stop)), device,
                                      workers=cfg.workers):
        x = normalize(images)
        if cfg.memory_format is not None:
            x = x.contiguous(memory_format=cfg.memory_format)
        with autocast(device, cfg.amp_dtype):
            logits = model(x)
        # float64, as a Python float sum of the per-batch values would be; read once per split
        total_loss += loss_fn(cfg.task, logits, targets_for(cfg.task, label, cfg.num_classes), 0.0).double() * len(x)
        scores.append(tasks.task(cfg.task).scores(logits))
    total_loss = float(all_reduce_sum(dist, total_loss))
    local = torch.cat(scores).cpu() if scores else torch.zeros((0, cfg.num_classes))  # a rank with an empty shard
    score, label = all_gather_rows(dist, local).numpy(), split.labels.numpy()
    check_loss(total_loss / len(split), "validation")
    if not np.isfinite(score).all():  # every rank holds the gathered scores, so every rank stops alike
        raise NonFiniteLoss("the model's validation outputs are not finite")
    return {"loss": total_loss / len(split), "auc": auc_score(cfg.task, label, score),
            "acc": acc_score(cfg.task, label, score), "scores": score}
