"""The training loop: optimizer, schedule, mixed precision, one epoch, checkpoints.

Reproducibility: every epoch re-seeds the global RNG (dropout, MixUp) and a
data generator (shuffling, augmentation) from ``(seed, epoch)``, and a
checkpoint is written at every epoch boundary. A run resumed from epoch *e*
therefore replays epochs *e+1...* exactly as an uninterrupted run would.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import augment
from .activations import autocast
from .cli import progress
from .data import TASK_MULTILABEL, Split, batches, gather, normalize
from .metrics import auc_score, acc_score, scores_from_logits

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


# ------------------------------------------------------------------ precision

def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels (AVX512-BF16 / AMX) on this CPU.

    Without them bf16 autocast is emulated and much slower than fp32 (measured
    ~20x slower on an AVX2-only EPYC, see docs/BENCHMARKS.md).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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
    """channels_last helps 2D convolutions on CPU and GPU; 3D stays contiguous."""
    return torch.channels_last if spatial_dims == 2 else None


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

def loss_fn(task: str, logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy (BCE for multi-label); ``target`` may be soft (MixUp)."""
    logits = logits.float()
    if task == TASK_MULTILABEL:
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def targets_for(task: str, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (N,) or multi-label floats (N, L)."""
    return labels.float() if task == TASK_MULTILABEL else labels.view(-1)


def mixup(x, target, task: str, num_classes: int, alpha: float):
    """MixUp (Zhang et al. 2018) with one Beta(alpha, alpha) weight per batch."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    soft = target if task == TASK_MULTILABEL else F.one_hot(target, num_classes).float()
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


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed the global RNG for ``epoch`` and return the data generator."""
    torch.manual_seed(seed * 1_000_003 + epoch)
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + epoch + 500_000)
    return generator


def train_one_epoch(model, split: Split, cfg: EpochConfig, optimizer, scheduler, scaler, device,
                    generator: torch.Generator, *, indices=None, description: str = "train",
                    on_step=None) -> dict:
    """One pass over the training split; returns loss, AUC, ACC and images/s."""
    model.train()
    total_loss, seen = torch.zeros((), device=device), 0
    scores, labels = [], []
    start = time.perf_counter()
    n = len(indices) if indices is not None else len(split)
    bar = progress(total=n, desc=description, unit="img")
    for index in batches(split, cfg.batch_size, shuffle=True, generator=generator, drop_last=n > cfg.batch_size,
                         indices=indices):
        images, label = gather(split, index, device)
        x = augment.augment_batch(normalize(images), cfg.augment, generator)
        if cfg.memory_format is not None:
            x = x.contiguous(memory_format=cfg.memory_format)
        target = targets_for(cfg.task, label, cfg.num_classes)
        if cfg.mixup_alpha > 0:
            x, target = mixup(x, target, cfg.task, cfg.num_classes, cfg.mixup_alpha)
        with autocast(device, cfg.amp_dtype):
            logits = model(x)
        loss = loss_fn(cfg.task, logits, target, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at step {scheduler.last_epoch}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
        scheduler.step()
        batch = x.shape[0]
        total_loss += loss.detach() * batch
        seen += batch
        scores.append(scores_from_logits(cfg.task, logits.detach()).cpu())
        labels.append(label.cpu())
        bar.update(batch)
        if bar.n and not bar.disable:
            bar.set_postfix(loss=f"{(total_loss / seen).item():.4f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
        if on_step is not None:
            on_step()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    score, label = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    return {"loss": (total_loss / max(seen, 1)).item(), "auc": auc_score(cfg.task, label, score),
            "acc": acc_score(cfg.task, label, score), "images_per_s": seen / elapsed, "seconds": elapsed,
            "images": seen}


@torch.no_grad()
def evaluate_split(model, split: Split, cfg: EpochConfig, device, batch_size: int = 256) -> dict:
    """Loss, AUC and ACC on a split, plus its scores (no augmentation, eval mode)."""
    model.eval()
    total_loss, scores = 0.0, []
    for index in batches(split, batch_size):
        images, label = gather(split, index, device)
        x = normalize(images)
        if cfg.memory_format is not None:
            x = x.contiguous(memory_format=cfg.memory_format)
        with autocast(device, cfg.amp_dtype):
            logits = model(x)
        total_loss += loss_fn(cfg.task, logits, targets_for(cfg.task, label, cfg.num_classes), 0.0).item() * len(index)
        scores.append(scores_from_logits(cfg.task, logits).cpu())
    score, label = torch.cat(scores).numpy(), split.labels.numpy()
    return {"loss": total_loss / len(split), "auc": auc_score(cfg.task, label, score),
            "acc": acc_score(cfg.task, label, score), "scores": score}
