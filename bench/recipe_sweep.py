"""Accuracy of training-recipe variants, mean over seeds, run in parallel processes.

    MEDMNIST_DIR=../shared/medmnist python bench/recipe_sweep.py --dataset breastmnist \
        --variant "default=" --variant "e6=--epochs 6" --variant "e6-tta=--epochs 6 --tta" \
        [--seeds 0 1 2] [--jobs 4] [--threads 2] [--device cpu] [--out sweep.csv]

Each variant is ``label=extra train.py arguments``; every variant x seed is one
``train.py`` process (``--jobs`` at a time, each limited to ``--threads``
threads). Prints one JSON line per run and a table of mean / std test AUC and
ACC per variant. This measures accuracy, not speed: on a GPU the recipe
search for a CPU time budget takes minutes instead of hours; time the chosen
recipe on the target machine with bench/train_targets.py.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(dataset: str, label: str, extra: list[str], seed: int, work: Path, threads: int, device: str) -> dict:
    folder = work / f"{label}-{seed}"
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", dataset, "--seed", str(seed), "--device", device,
           "--results-dir", str(folder / "results"), "--runs-dir", str(folder / "runs"), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"variant": label, "seed": seed, "error": (proc.stderr or proc.stdout)[-300:]}
    run_dir = Path(proc.stdout.split("results: ")[1].split("\n")[0])
    info = json.loads((run_dir / "run.json").read_text())
    metrics = info["metrics"]
    with open(run_dir / "history.csv", newline="") as fh:
        speeds = [float(r["images_per_s"]) for r in csv.DictReader(fh)]
    return {"variant": label, "seed": seed, "epochs": info["config"]["epochs"],
            "val_auc": metrics.get("val_auc"), "test_auc": metrics["test_auc"], "test_acc": metrics["test_acc"],
            "best_epoch": metrics["best_epoch"], "train_seconds": metrics["wall_seconds"],
            "wall_seconds": round(wall, 1),
            "images_per_s": round(statistics.median(speeds), 1), "args": " ".join(extra)}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=ARGS")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="CSV of all runs")
    args = parser.parse_args()

    variants = []
    for text in args.variant:
        label, _, extra = text.partition("=")
        variants.append((label, shlex.split(extra)))
    work = Path(tempfile.mkdtemp(prefix="medscope-sweep-"))
    tasks = [(label, extra, seed) for label, extra in variants for seed in args.seeds]
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, args.dataset, label, extra, seed, work, args.threads, args.device)
                   for label, extra, seed in tasks]
        for future in futures:
            row = future.result()
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\n{args.dataset}: mean (std) over seeds {args.seeds}")
    print(f"{'variant':<24} {'test AUC':>16} {'test ACC':>16} {'val AUC':>8} {'train s':>8}")
    for label, _ in variants:
        done = [r for r in rows if r["variant"] == label and "error" not in r]
        if not done:
            print(f"{label:<24} failed")
            continue
        auc = [r["test_auc"] for r in done]
        acc = [r["test_acc"] for r in done]
        std = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        print(f"{label:<24} {statistics.mean(auc):.4f} ({std(auc):.3f}) {statistics.mean(acc):.4f} ({std(acc):.3f})"
              f" {statistics.mean(r['val_auc'] or 0 for r in done):8.4f}"
              f" {statistics.mean(r['train_seconds'] for r in done):8.1f}")
    if args.out:
        fields = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
