"""Seconds each calibration step takes on a 10,000-sample validation and a 10,000-sample test split.

    python bench/calibration_speed.py [--n 10000] [--classes 11] [--labels 14] [--repeats 7]

Prints the median of ``repeats`` runs per step (after one warm-up run). Synthetic logits: the
maths does not care where they come from.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.special import expit, softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import interleaved

from medscope.calibration import conformal, measures, selective, temperature, thresholds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--labels", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n, k, n_labels = args.n, args.classes, args.labels
    logits = rng.normal(size=(2 * n, k)) * 3
    labels = np.array([rng.choice(k, p=p) for p in softmax(logits / 3, axis=1)])[:, None]
    val, test = slice(0, n), slice(n, 2 * n)
    probs = softmax(logits, axis=1)
    binary = softmax(logits[:, :2], axis=1)
    binary_labels = (labels % 2)
    ml_logits = rng.normal(size=(2 * n, n_labels)) * 2
    ml_labels = (rng.random(ml_logits.shape) < expit(ml_logits / 2)).astype(np.int64)
    ml_probs = expit(ml_logits)
    fit = conformal.calibrate("multi-class", probs[val], labels[val], score="aps")
    conf, ok = measures.predicted_confidence("multi-class", probs[test], labels[test])
    steps = {
        f"temperature fit, multi-class K={k}": lambda: temperature.fit_temperature("multi-class", logits[val],
                                                                                    labels[val]),
        f"temperature fit, multi-label L={n_labels}": lambda: temperature.fit_temperature(
            "multi-label, binary-class", ml_logits[val], ml_labels[val]),
        "calibration_summary (ECE x2, Brier, NLL)": lambda: measures.calibration_summary(
            "multi-class", probs[test], labels[test]),
        "thresholds: choose (3 rules) + evaluate, binary": lambda: thresholds.evaluate_thresholds(
            "binary-class", binary[test], binary_labels[test],
            [thresholds.choose_thresholds("binary-class", binary[val], binary_labels[val])[0]["youden"]["threshold"]]),
        "conformal LAC calibrate + sets + evaluate": lambda: conformal.evaluate_sets(
            "multi-class", conformal.prediction_sets(
                conformal.calibrate("multi-class", probs[val], labels[val]), probs[test]), labels[test]),
        "conformal APS (include-last) calibrate + sets": lambda: conformal.prediction_sets(
            conformal.calibrate("multi-class", probs[val], labels[val], score="aps"), probs[test]),
        "conformal APS sets only": lambda: conformal.prediction_sets(fit, probs[test]),
        f"conformal multi-label LAC, Mondrian, L={n_labels}": lambda: conformal.prediction_sets(
            conformal.calibrate("multi-label, binary-class", ml_probs[val], ml_labels[val], class_conditional=True),
            ml_probs[test]),
        "selective: AURC + e-AURC + AUGRC": lambda: (selective.aurc(conf, ~ok), selective.eaurc(conf, ~ok),
                                                     selective.augrc(conf, ~ok)),
        "selective_summary, multi-class": lambda: selective.selective_summary("multi-class", probs[test],
                                                                              labels[test]),
    }
    seconds = interleaved(steps, args.repeats)
    print(f"n = {n} validation + {n} test samples, median of {args.repeats}")
    for name, value in seconds.items():
        print(f"{value * 1000:9.2f} ms  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
