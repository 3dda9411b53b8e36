"""Leave-one-dataset-out check of the general rule's image budget.

    MEDMNIST_DIR=../shared/medmnist python bench/lodo_general_rule.py --model cnn \
        [--datasets breastmnist pneumoniamnist adrenalmnist3d] [--budgets 4000 8000 16000] \
        [--seeds 0 1 2] [--jobs 2] [--threads 1] [--out lodo.csv]

The general rule (medscope/train/recipes.py) trains for
``clamp(round(budget / n_train), 3, 15)`` epochs. Each candidate budget is
trained on every dataset with every seed (``train.py --recipe general --epochs
E``; a dataset whose epoch count two budgets share is trained once). Then, for
each held-out dataset, the budget with the highest mean validation AUC over the
*other* datasets is chosen, and its test AUC on the held-out dataset is
reported beside the paper's ResNet-18 and the rule in use (``IMAGE_BUDGET``).
The held-out dataset's own numbers never take part in choosing for it.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_sweep import run_one  # noqa: E402

from medscope.baselines import reference_baseline  # noqa: E402
from medscope.data import dataset_info  # noqa: E402
from medscope.train.recipes import IMAGE_BUDGET, general_epochs  # noqa: E402


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def choose_budget(val_auc: dict[tuple[str, int], float], budgets: list[int], others: list[str]) -> int:
    """The budget of highest mean validation AUC over ``others`` (ties: the smaller, cheaper budget)."""
    return max(budgets, key=lambda b: (statistics.mean(val_auc[(d, b)] for d in others), -b))


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist", "adrenalmnist3d"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[4000, 8000, 16000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="CSV of every run")
    args = parser.parse_args()

    epochs = {(d, b): general_epochs(dataset_info(d).n_samples["train"], b) for d in args.datasets for b in args.budgets}
    configs = sorted({(d, e) for (d, _), e in epochs.items()})
    work = Path(tempfile.mkdtemp(prefix="medscope-lodo-"))
    tasks = [(d, e, s) for d, e in configs for s in args.seeds]
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, d, f"{d}-e{e}", ["--model", args.model, "--recipe", "general",
                                                         "--epochs", str(e)], s, work, args.threads, args.device)
                   for d, e, s in tasks]
        for (d, e, _), future in zip(tasks, futures):
            row = future.result() | {"dataset": d}
            if "error" in row:
                sys.exit(f"{row['variant']} seed {row['seed']} failed: {row['error']}")
            rows.append(row)
            print(json.dumps(row), flush=True)

    def runs_of(d, b):
        return [r for r in rows if r["dataset"] == d and r["epochs"] == epochs[(d, b)]]

    val_auc = {(d, b): statistics.mean(r["val_auc"] for r in runs_of(d, b)) for d in args.datasets for b in args.budgets}
    print(f"\n{args.model}: mean ± sd over seeds {args.seeds}, {args.device}")
    print("| dataset | budget | epochs | val AUC | test AUC | test ACC | wall s per run |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in args.datasets:
        for b in args.budgets:
            done = runs_of(d, b)
            print(f"| {d} | {b} | {epochs[(d, b)]} | {mean_sd([r['val_auc'] for r in done])} "
                  f"| {mean_sd([r['test_auc'] for r in done])} | {mean_sd([r['test_acc'] for r in done])} "
                  f"| {statistics.mean(r['wall_seconds'] for r in done):.0f} |")

    print("\n| held out | chosen on | budget chosen | held-out test AUC | paper ResNet-18 | rule in use "
          f"({IMAGE_BUDGET}) | at or above the paper |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for held_out in args.datasets:
        others = [d for d in args.datasets if d != held_out]
        chosen = choose_budget(val_auc, args.budgets, others)
        test = [r["test_auc"] for r in runs_of(held_out, chosen)]
        paper = reference_baseline(held_out)
        in_use = [r["test_auc"] for r in runs_of(held_out, IMAGE_BUDGET)] if IMAGE_BUDGET in args.budgets else []
        print(f"| {held_out} | {', '.join(others)} | {chosen} | {mean_sd(test)} | {paper.auc:.3f} ({paper.method}) "
              f"| {mean_sd(in_use) if in_use else '—'} | {'yes' if statistics.mean(test) >= paper.auc else 'no'} |")

    if args.out:
        fields = list(rows[0])
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
