"""Calibration, conformal prediction sets, decision thresholds and selective classification.

Pure functions on numpy arrays (no files, no printing), one concern per module:

* :mod:`.temperature` fits temperature scaling on validation logits;
* :mod:`.measures` holds ECE (equal-width and equal-mass bins), Brier score and NLL;
* :mod:`.thresholds` picks binary decision thresholds (Youden, target
  sensitivity or specificity) and evaluates them;
* :mod:`.conformal` builds split-conformal prediction sets (LAC, APS;
  marginal or class-conditional) and measures their coverage;
* :mod:`.selective` computes risk-coverage curves, AURC, e-AURC and AUGRC;
* :mod:`.resampled` computes those statistics on many bootstrap resamples at once;
* :mod:`.analysis` runs all of them on one model's validation and test
  logits, with bootstrap intervals, into one JSON-ready result;
* :mod:`.report` writes that result in plain words, and :mod:`.plots` draws
  it (imported on demand: it needs matplotlib).

Every function takes a MedMNIST task string (``medscope.data.TASK_*``) where
the task matters, with the conventions of :mod:`medscope.metrics`.
"""
from . import analysis, conformal, measures, report, resampled, selective, temperature, thresholds

__all__ = ["analysis", "conformal", "measures", "report", "resampled", "selective", "temperature", "thresholds"]
