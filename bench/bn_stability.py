"""Is a short run's validation AUC unstable because of BatchNorm's running statistics?

    MEDMNIST_DIR=../shared/medmnist python bench/bn_stability.py --dataset adrenalmnist3d \
        --recipe general --seeds 0 1 2 [--epochs N] [--out bn_stability.json]

Trains ResNet-18 the way ``train.py --recipe general`` does (same config,
seeding, optimizer, schedule and augmentation) and, after every epoch,
evaluates the validation split twice:

- ``running``: eval mode with the running BatchNorm statistics, as train.py
  does. They are an exponential average (momentum 0.1) of the batch
  statistics of the last ~10 steps, taken while the weights were still moving;
- ``recomputed``: the same weights with every BatchNorm layer's statistics
  recomputed on ``--limit`` training images (no augmentation, a cumulative
  average over their batches: "precise BN", Wu & Johnson 2021), with
  ``medscope.train.loop.recompute_batchnorm``, the function train.py calls.

If the running statistics are the cause, ``recomputed`` is stable from epoch
to epoch where ``running`` swings, and the validation loss falls back to the
scale of the training loss. Both are printed per epoch and written as JSON.
The test split is read at the last epoch only, to report what the fix is
worth; nothing here chooses a default on it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medscope import data  # noqa: E402
from medscope.models import build_model, model_spec  # noqa: E402
from medscope.runs import default_data_dir  # noqa: E402
from medscope.train import augment, config  # noqa: E402
from medscope.train.loop import (  # noqa: E402
    PRECISE_BN_IMAGES,
    EpochConfig,
    amp_dtype_for,
    evaluate_split,
    make_optimizer,
    make_scheduler,
    memory_format_for,
    recompute_batchnorm,
    seed_epoch,
    train_one_epoch,
)


def run_seed(flag: str, size: int, model_name: str, recipe: str, seed: int, epochs: int | None, data_dir,
             limit: int = PRECISE_BN_IMAGES) -> dict:
    info = data.dataset_info(flag, size)
    splits = data.load_dataset(info, data_dir)
    cfg_run = config.with_recipe(config.TrainConfig(dataset=flag, size=size, model=model_name, recipe=recipe,
                                                    seed=seed, epochs=epochs), len(splits["train"]))
    device = torch.device("cpu")
    amp, layout = amp_dtype_for(device, cfg_run.amp), memory_format_for(info.spatial_dims, device)
    torch.manual_seed(seed)
    model = build_model(**model_spec(model_name, info.n_channels, info.num_classes, info.spatial_dims, size,
                                     cfg_run.dropout))
    if layout is not None:
        model = model.to(memory_format=layout)
    n_train = len(splits["train"])
    steps = max(1, n_train // cfg_run.batch_size) if n_train > cfg_run.batch_size else 1
    optimizer = make_optimizer(model, cfg_run.optimizer, cfg_run.lr, cfg_run.weight_decay)
    scheduler = make_scheduler(optimizer, steps * cfg_run.epochs, int(round(cfg_run.warmup_epochs * steps)),
                               cfg_run.schedule)
    cfg = EpochConfig(task=info.task, num_classes=info.num_classes, batch_size=cfg_run.batch_size,
                      augment=augment.make_config(flag, cfg_run.augment, info.spatial_dims),
                      label_smoothing=cfg_run.label_smoothing, mixup_alpha=cfg_run.mixup,
                      clip_grad=cfg_run.clip_grad, amp_dtype=amp, memory_format=layout)
    rows = []
    for epoch in range(1, cfg_run.epochs + 1):
        started = time.perf_counter()
        train = train_one_epoch(model, splits["train"], cfg, optimizer, scheduler, None, device,
                                seed_epoch(seed, epoch), description=f"seed {seed} epoch {epoch}")
        running = evaluate_split(model, splits["val"], cfg, device)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        recompute_started = time.perf_counter()
        recompute_batchnorm(model, splits["train"], cfg, device, limit=limit)
        recompute_seconds = time.perf_counter() - recompute_started
        recomputed = evaluate_split(model, splits["val"], cfg, device)
        row = {"epoch": epoch, "train_loss": train["loss"], "val_auc_running": running["auc"],
               "val_loss_running": running["loss"], "val_auc_recomputed": recomputed["auc"],
               "val_loss_recomputed": recomputed["loss"], "recompute_seconds": recompute_seconds,
               "epoch_seconds": time.perf_counter() - started}
        if epoch == cfg_run.epochs:
            row["test_auc_recomputed"] = evaluate_split(model, splits["test"], cfg, device)["auc"]
            model.load_state_dict(state)
            row["test_auc_running"] = evaluate_split(model, splits["test"], cfg, device)["auc"]
        else:
            model.load_state_dict(state)  # training goes on exactly as train.py's would
        rows.append(row)
        print(f"seed {seed} epoch {epoch}: train loss {train['loss']:.3f}  val AUC running {running['auc']:.3f} "
              f"(loss {running['loss']:.2f})  recomputed {recomputed['auc']:.3f} (loss {recomputed['loss']:.2f})  "
              f"{row['epoch_seconds']:.0f}s", flush=True)
    return {"seed": seed, "config": cfg_run.to_dict(), "epochs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="adrenalmnist3d")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--recipe", choices=config.RECIPE_CHOICES, default="general")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--limit", type=int, default=PRECISE_BN_IMAGES,
                        help=f"training images whose statistics are recomputed (default: train.py's, "
                             f"{PRECISE_BN_IMAGES})")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data_dir = default_data_dir()
    results = [run_seed(args.dataset, args.size, args.model, args.recipe, s, args.epochs, data_dir, args.limit)
               for s in args.seeds]
    for key in ("running", "recomputed"):
        swings = [float(np.mean(np.abs(np.diff([r[f"val_auc_{key}"] for r in res["epochs"]])))) for res in results]
        tests = [res["epochs"][-1][f"test_auc_{key}"] for res in results]
        print(f"{key:10s}: mean |change in val AUC| between epochs {np.mean(swings):.3f}; "
              f"last-epoch test AUC {np.mean(tests):.3f} ({', '.join(f'{t:.3f}' for t in tests)})")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
