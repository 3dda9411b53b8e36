"""Accuracy and wall time of default training runs, mean over seeds, against the targets.

    MEDMNIST_DIR=../shared/medmnist python bench/train_targets.py \
        [--datasets breastmnist pneumoniamnist adrenalmnist3d] [--seeds 0 1 2] [-- extra train.py args]

Each run is `python train.py --dataset D --seed S` (defaults otherwise) in a
fresh process, timed from start to exit. Prints one row per run and a summary
table with the mean and standard deviation per dataset.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {  # test AUC, test ACC and wall seconds to reach; MedMNIST v2 ResNet-18 (28) for reference
    "breastmnist": (0.91, 0.87, 120, ".901 / .863"),
    "pneumoniamnist": (0.96, 0.87, 300, ".944 / .854"),
    "adrenalmnist3d": (0.85, 0.80, 600, ".827 / .721"),
}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="CSV of all runs (default: a temp folder)")
    parser.add_argument("extra", nargs="*", help="extra train.py arguments (after --)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medscope-targets-"))
    rows = []
    for flag in args.datasets:
        for seed in args.seeds:
            cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", flag, "--seed", str(seed),
                   "--results-dir", str(work / "results"), "--runs-dir", str(work / "runs"), *args.extra]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"run failed: {' '.join(cmd)}")
            run_dir = Path(proc.stdout.split("results: ")[1].split("\n")[0])
            info = json.loads((run_dir / "run.json").read_text())
            row = {"dataset": flag, "seed": seed, "model": info["config"]["model"],
                   "epochs": info["config"]["epochs"], "test_auc": info["metrics"]["test_auc"],
                   "test_acc": info["metrics"]["test_acc"], "best_epoch": info["metrics"]["best_epoch"],
                   "train_seconds": info["metrics"]["wall_seconds"], "wall_seconds": round(wall, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out) if args.out else work / "train_targets.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nall runs: {out}\n")
    print("| dataset | seeds | test AUC (mean ± sd) | test ACC (mean ± sd) | wall s (median) | target AUC / ACC / s | MedMNIST v2 ResNet-18 |")
    print("|---|---|---|---|---|---|---|")
    for flag in args.datasets:
        sel = [r for r in rows if r["dataset"] == flag]
        auc = [r["test_auc"] for r in sel]
        acc = [r["test_acc"] for r in sel]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        target = TARGETS.get(flag)
        target_text = f"{target[0]} / {target[1]} / {target[2]}" if target else "-"
        print(f"| {flag} | {len(sel)} | {statistics.mean(auc):.3f} ± {sd(auc):.3f} | "
              f"{statistics.mean(acc):.3f} ± {sd(acc):.3f} | {statistics.median(r['wall_seconds'] for r in sel):.0f} | "
              f"{target_text} | {target[3] if target else '-'} |")


if __name__ == "__main__":
    main()
