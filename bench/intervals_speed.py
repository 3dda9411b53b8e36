"""Speed of medscope.stats.metric_intervals against the obvious per-resample loop.

Two synthetic 10,000-image test splits (fixed seed): binary (softmax of two
columns) and 10-class.  Contenders, both with stratified resampling:

* ``metric_intervals``: 2,000 resamples, every metric (AUC, ACC, balanced
  accuracy, per-class sensitivity/specificity and, for 10 classes, per-class
  AUC) and their percentile intervals;
* the naive loop: for each resample, index arrays drawn per class, then
  ``sklearn.metrics.roc_auc_score`` (one-vs-rest per class for 10 classes)
  and ACC only.  It is timed on ``--naive-resamples`` resamples and scaled
  linearly to 2,000 (its cost per resample is constant).

Timings are medians of ``--repeats`` runs, the contenders alternating
(``bench/timing.py``).  Prints a markdown table; ``--markdown PATH`` also
writes it.

    python bench/intervals_speed.py
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from medscope.stats import metric_intervals  # noqa: E402
from timing import interleaved  # noqa: E402  (bench/timing.py, beside this script)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="images in the test split")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--naive-resamples", type=int, default=100, help="resamples the naive loop is timed on")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender (median reported)")
    parser.add_argument("--markdown", help="also write the table to this file")
    return parser


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def split(n: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=(n, 1))
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[labels[:, 0]]
    # float32 probabilities, as a model writes them: some scores tie
    scores = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32).astype(np.float64)
    return labels, scores


def naive(labels, scores, n_resamples: int, seed: int = 0):
    """Per resample: stratified index arrays, sklearn AUC, ACC."""
    rng = np.random.default_rng(seed)
    y = labels[:, 0]
    strata = [np.flatnonzero(y == k) for k in range(scores.shape[1])]
    binary = scores.shape[1] == 2
    aucs, accs = np.empty(n_resamples), np.empty(n_resamples)
    for b in range(n_resamples):
        rows = np.concatenate([s[rng.integers(0, s.size, s.size)] for s in strata])
        yy, ss = y[rows], scores[rows]
        if binary:
            aucs[b] = roc_auc_score(yy, ss[:, 1])
            accs[b] = np.mean((ss[:, 1] > 0.5) == yy)
        else:
            aucs[b] = np.mean([roc_auc_score(yy == k, ss[:, k]) for k in range(ss.shape[1])])
            accs[b] = np.mean(ss.argmax(1) == yy)
    return np.quantile(aucs, [0.025, 0.975]), np.quantile(accs, [0.025, 0.975])


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    rows = []
    for name, task, n_classes in [("binary", "binary-class", 2), ("10-class", "multi-class", 10)]:
        labels, scores = split(args.n, n_classes)
        times = interleaved({
            "fast": lambda t=task, y=labels, s=scores: metric_intervals(t, y, s, n_resamples=args.resamples),
            "naive": lambda y=labels, s=scores: naive(y, s, args.naive_resamples),
        }, args.repeats)
        naive_full = times["naive"] * args.resamples / args.naive_resamples
        rows.append((name, times["fast"], naive_full))
    lines = [
        (f"CPU: {cpu_model()}; n = {args.n:,} images, B = {args.resamples:,} stratified resamples; "
         f"median of {args.repeats} runs; naive loop timed on {args.naive_resamples} resamples and scaled."),
        "",
        "| split | metric_intervals (all metrics) | naive loop (AUC + ACC) | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {fast:.2f} s | {slow:.1f} s | {slow / fast:.0f}x |" for name, fast, slow in rows]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        from medscope import atomic
        atomic.write_text(args.markdown, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
