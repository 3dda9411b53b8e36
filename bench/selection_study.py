"""Which epoch should a run keep? Test metrics of every epoch, and of weight averages.

    MEDMNIST_DIR=../shared/medmnist OMP_NUM_THREADS=1 python bench/selection_study.py \
        --dataset adrenalmnist3d --seeds 0 1 2 [--ema 0.9 0.95 0.98] [--epochs 12] [--out study/]

Trains ResNet-18 with the dataset's default recipe (medscope/train/recipes.py) the
way train.py does (same seeding, optimizer, schedule and augmentation), but
evaluates the validation *and test* splits after every epoch, for the trained
weights and for exponential moving averages of them (``--ema``, BatchNorm
statistics included). It then compares the rules that pick the run's model:

- ``best``: the epoch of highest validation AUC (train.py ``--select best``),
- ``last``: the final epoch (``--select last``),

and, for each, ACC after a Platt scaling fitted on the validation split (a
decision threshold learnt on validation). Test metrics here are for studying
the rules only; a recipe is chosen on seeds other than the benchmark's.
Per-epoch scores are saved to ``--out`` as ``<dataset>_s<seed>.npz``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medscope import data  # noqa: E402
from medscope.metrics import acc_score, auc_score  # noqa: E402
from medscope.models import build_model, model_spec  # noqa: E402
from medscope.train import augment, recipes  # noqa: E402
from medscope.train.loop import (  # noqa: E402
    EpochConfig,
    amp_dtype_for,
    evaluate_split,
    make_optimizer,
    make_scheduler,
    memory_format_for,
    seed_epoch,
    train_one_epoch,
)


def train_and_score(flag: str, seed: int, epochs: int | None, decays: list[float], data_dir) -> dict:
    """Per-epoch validation and test scores of the trained weights ('raw') and each EMA."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    info = data.dataset_info(flag, 28)
    splits = data.load_dataset(info, data_dir)
    recipe = recipes.default_recipe(flag)
    epochs = epochs or recipe.epochs
    device = torch.device("cpu")
    amp, layout = amp_dtype_for(device, True), memory_format_for(info.spatial_dims, device)
    torch.manual_seed(seed)
    model = build_model(**model_spec("resnet18", info.n_channels, info.num_classes, info.spatial_dims, 28, 0.2))
    if layout is not None:
        model = model.to(memory_format=layout)
    steps = max(1, len(splits["train"]) // recipe.batch_size)
    optimizer = make_optimizer(model, "adamw", recipe.learning_rate("adamw"), 5e-4)
    scheduler = make_scheduler(optimizer, steps * epochs, steps, "cosine")  # 1 warm-up epoch, as train.py
    averages = {f"ema{d:g}": AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True)
                for d in decays}
    cfg = EpochConfig(task=info.task, num_classes=info.num_classes, batch_size=recipe.batch_size,
                      augment=augment.make_config(flag, recipe.augment, info.spatial_dims),
                      label_smoothing=recipe.label_smoothing, amp_dtype=amp, memory_format=layout)

    def update_averages():
        for average in averages.values():
            average.update_parameters(model)

    scores = {"val_labels": splits["val"].labels.numpy(), "test_labels": splits["test"].labels.numpy()}
    for epoch in range(1, epochs + 1):
        train_one_epoch(model, splits["train"], cfg, optimizer, scheduler, None, device, seed_epoch(seed, epoch),
                        description=f"seed {seed} epoch {epoch}/{epochs}", on_step=update_averages)
        for name, weights in [("raw", model), *((n, a.module) for n, a in averages.items())]:
            for split in ("val", "test"):
                scores[f"{name}_{split}_{epoch}"] = evaluate_split(weights, splits[split], cfg, device)["scores"]
    scores["epochs"] = np.array(epochs)
    return scores


def platt_margin(probabilities: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of the positive class: the logit margin Platt scaling rescales."""
    p = np.clip(probabilities[:, -1].astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_platt(margin: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a * margin + b) (Platt 1999)."""
    def log_loss(w):
        z = w[0] * margin + w[1]
        return float(np.mean(np.logaddexp(0, z) - labels * z))
    a, b = minimize(log_loss, [1.0, 0.0], method="L-BFGS-B").x
    return float(a), float(b)


def rule_results(scores: dict, task: str = "binary-class") -> dict:
    """For each weight set and rule: (epoch, val AUC, test AUC, test ACC, test ACC after Platt)."""
    y_val, y_test = scores["val_labels"], scores["test_labels"]
    epochs = int(scores["epochs"])
    results = {}
    for name in sorted({k.split("_")[0] for k in scores if k.startswith(("raw", "ema"))}):
        val_auc = [auc_score(task, y_val, scores[f"{name}_val_{e}"]) for e in range(1, epochs + 1)]
        for rule, epoch in (("best", int(np.argmax(val_auc)) + 1), ("last", epochs)):
            val, test = scores[f"{name}_val_{epoch}"], scores[f"{name}_test_{epoch}"]
            a, b = fit_platt(platt_margin(val), y_val[:, 0])
            platt_acc = float(np.mean(((a * platt_margin(test) + b) > 0) == y_test[:, 0]))
            results[(name, rule)] = (epoch, val_auc[epoch - 1], auc_score(task, y_test, test),
                                     acc_score(task, y_test, test), platt_acc)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="adrenalmnist3d")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--ema", nargs="*", type=float, default=[], metavar="DECAY")
    parser.add_argument("--out", default="selection_study", help="folder for the per-epoch scores")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = os.environ.get("MEDMNIST_DIR", str(Path.home() / ".medmnist"))
    per_seed = []
    for seed in args.seeds:
        path = out / f"{args.dataset}_s{seed}.npz"
        if not path.exists():  # a study interrupted between seeds goes on where it stopped
            np.savez(path, **train_and_score(args.dataset, seed, args.epochs, args.ema, data_dir))
        per_seed.append(rule_results(dict(np.load(path))))
    print(f"{args.dataset}, seeds {args.seeds}: mean (sd) over seeds")
    print("| weights | rule | epochs kept | val AUC | test AUC | test ACC | test ACC, Platt on val |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in [k for k in per_seed[0] if all(k in r for r in per_seed)]:  # weights every seed has
        rows = np.array([r[key] for r in per_seed])
        cell = lambda i: f"{rows[:, i].mean():.3f} ({rows[:, i].std():.3f})"  # noqa: E731
        print(f"| {key[0]} | {key[1]} | {', '.join(str(int(e)) for e in rows[:, 0])} | {rows[:, 1].mean():.3f} "
              f"| {cell(2)} | {cell(3)} | {cell(4)} |")


if __name__ == "__main__":
    main()
