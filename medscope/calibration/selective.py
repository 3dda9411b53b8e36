"""Selective classification: how risk falls as the least confident predictions are set aside.

Inputs are a confidence per prediction (higher = more confident; for example
the maximum softmax probability of :func:`medscope.calibration.measures.predicted_confidence`)
and its loss, usually 1 for a wrong and 0 for a right prediction (any
non-negative loss works). Accepting the predictions with confidence
``>= t`` gives, over the ``n`` samples,

* coverage ``c(t) = #accepted / n``,
* selective risk ``R(t) = loss of the accepted / #accepted`` (Geifman &
  El-Yaniv, 2017),
* generalized risk ``G(t) = loss of the accepted / n`` (Traub et al., 2024).

Ties: predictions with equal confidence are accepted or rejected together,
so the curve has one point per distinct confidence. Between two points the
accepted count and the accepted loss grow linearly (accepting a fraction of
the tied block), which is also the average over every order of the tied
predictions. Every area below (AURC with either estimator, AUGRC) therefore
equals the mean of that area over all orderings that break the ties, which a
test checks by enumeration.

Areas (all on coverage in [0, 1], in units of the loss):

* AURC (Geifman et al., 2018), ``estimator="interpolated"`` (default): the
  exact area under the selective-risk curve, ``R`` being ``E(c) / (n c)``
  with ``E`` the linearly interpolated accepted loss. Segment from
  ``(C_a, E_a)`` to ``(C_b, E_b)`` (counts), slope ``s = (E_b - E_a) / (C_b - C_a)``:
  ``[s (C_b - C_a) + (E_a - s C_a) ln(C_b / C_a)] / n``; the first segment
  (from ``C_a = 0``) has constant risk and adds ``E_b / n``. For 0/1 errors
  at error rate ``r`` a perfect ranking gives exactly
  ``r + (1 - r) ln(1 - r)``, the optimum of Geifman et al.
* AURC, ``estimator="per-sample"``: ``(1/n) sum_{k=1..n} R_k`` with ``R_k``
  the risk of the ``k`` most confident predictions (the estimator of
  Geifman et al.'s code), ties averaged as above. It exceeds the
  interpolated area by ``O(log(n) / n)``.
* AUGRC (Traub et al., NeurIPS 2024, "Overcoming Common Flaws in the
  Evaluation of Selective Classification Systems"): the trapezoidal area
  under ``(c, G)`` from ``(0, 0)`` to ``(1, overall risk)``, exact for the
  interpolated curve, as their reference implementation computes it. It is
  the average risk of a failure being accepted: 0/1 errors at rate ``r`` give
  ``r^2 / 2`` for a perfect ranking, ``r / 2`` for a random one (or for one
  constant confidence), and ``r - r^2 / 2`` for the worst.
* e-AURC: AURC minus the AURC of the same losses in the best order (losses
  ascending), by the same estimator; 0 for a perfect ranking.
"""
from __future__ import annotations

import numpy as np
from scipy.special import digamma

from medscope.errors import UsageError
from medscope.data import TASK_MULTILABEL
from .measures import predicted_confidence

ESTIMATORS = ("interpolated", "per-sample")


def _check(confidence, errors) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    loss = np.asarray(errors, dtype=np.float64).reshape(-1)
    if conf.shape != loss.shape:
        raise ValueError(f"confidence and errors differ in length: {conf.size} != {loss.size}")
    if conf.size == 0:
        raise UsageError("a risk-coverage curve needs at least one prediction")
    if np.isnan(conf).any() or np.isnan(loss).any():
        raise ValueError("confidence or errors contain NaN")
    if (loss < 0).any():
        raise ValueError("errors (losses) must be non-negative")
    return conf, loss


def risk_coverage_curve(confidence, errors) -> dict:
    """One point per distinct confidence, most confident first.

    Returns
    -------
    dict of arrays (m,)
        ``threshold`` (distinct confidences, decreasing), ``accepted``
        (count with confidence ``>= threshold``), ``loss`` (their summed
        loss), ``coverage`` ``accepted / n``, ``selective_risk``
        ``loss / accepted`` and ``generalized_risk`` ``loss / n``; the last
        point has coverage 1.

    >>> c = risk_coverage_curve([0.9, 0.8, 0.8, 0.3], [0, 1, 0, 1])
    >>> c["coverage"].tolist(), c["selective_risk"].tolist()
    ([0.25, 0.75, 1.0], [0.0, 0.3333333333333333, 0.5])
    """
    conf, loss = _check(confidence, errors)
    order = np.argsort(-conf, kind="stable")
    conf, loss = conf[order], loss[order]
    cumulative = np.cumsum(loss)
    last_of_block = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))
    accepted = last_of_block + 1
    accepted_loss = cumulative[last_of_block]
    n = len(conf)
    return {"threshold": conf[last_of_block], "accepted": accepted, "loss": accepted_loss,
            "coverage": accepted / n, "selective_risk": accepted_loss / accepted,
            "generalized_risk": accepted_loss / n}


def _segments(curve: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Start and end (count, loss) of each segment, the first starting at (0, 0)."""
    count_b = curve["accepted"].astype(np.float64)
    loss_b = curve["loss"]
    count_a = np.concatenate([[0.0], count_b[:-1]])
    loss_a = np.concatenate([[0.0], loss_b[:-1]])
    return count_a, loss_a, count_b, loss_b


def aurc(confidence, errors, estimator: str = "interpolated") -> float:
    """Area under the selective-risk-coverage curve (see the module docstring for both estimators).

    >>> round(aurc([0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1]), 6)
    0.284238
    >>> round(aurc([0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1], estimator="per-sample"), 6)  # (0 + 1/2 + 1/3 + 2/4) / 4
    0.333333
    """
    if estimator not in ESTIMATORS:
        raise UsageError(f"unknown AURC estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    curve = risk_coverage_curve(confidence, errors)
    n = float(curve["accepted"][-1])
    count_a, loss_a, count_b, loss_b = _segments(curve)
    slope = (loss_b - loss_a) / (count_b - count_a)
    intercept = loss_a - slope * count_a  # expected accepted loss at count k is intercept + slope * k
    if estimator == "per-sample":
        # sum_{k = C_a + 1 .. C_b} (intercept + slope k) / k, with sum 1/k = digamma(C_b + 1) - digamma(C_a + 1)
        harmonic = digamma(count_b + 1.0) - digamma(count_a + 1.0)
        return float(np.sum(slope * (count_b - count_a) + intercept * harmonic) / n)
    area = slope * (count_b - count_a)
    inner = count_a > 0  # the first segment has intercept 0 and constant risk: its log term vanishes
    area[inner] += intercept[inner] * np.log(count_b[inner] / count_a[inner])
    return float(np.sum(area) / n)


def augrc(confidence, errors) -> float:
    """Area under the generalized-risk-coverage curve (Traub et al., 2024), trapezoidal from (0, 0).

    ``AUGRC = sum over segments of (C_b - C_a)/n * (E_a + E_b)/(2 n)``.

    >>> augrc([0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1])  # (0 + 1 + 2 + 3) / 2 / 16
    0.1875
    """
    curve = risk_coverage_curve(confidence, errors)
    n = float(curve["accepted"][-1])
    count_a, loss_a, count_b, loss_b = _segments(curve)
    return float(np.sum((count_b - count_a) * (loss_a + loss_b)) / (2.0 * n * n))


def _best_order(errors) -> tuple[np.ndarray, np.ndarray]:
    loss = np.asarray(errors, dtype=np.float64).reshape(-1)
    return -loss, loss  # confidence ranks the smallest losses first; equal losses tie harmlessly


def aurc_optimal(errors, estimator: str = "interpolated") -> float:
    """AURC of the same losses in the best order. For 0/1 errors (interpolated): ``r + (1 - r) ln(1 - r)``."""
    return aurc(*_best_order(errors), estimator=estimator)


def eaurc(confidence, errors, estimator: str = "interpolated") -> float:
    """Excess AURC: ``aurc - aurc_optimal`` (Geifman et al., 2018); 0 for a perfect ranking."""
    return aurc(confidence, errors, estimator) - aurc_optimal(errors, estimator)


def augrc_optimal(errors) -> float:
    """AUGRC of the same losses in the best order; ``r^2 / 2`` for 0/1 errors at rate ``r``."""
    return augrc(*_best_order(errors))


def selective_summary(task: str, probabilities, labels, confidence=None) -> dict:
    """AURC, e-AURC, AUGRC and error rate of a task's predictions.

    The errors are those of :func:`medscope.calibration.measures.predicted_confidence`
    (the MedMNIST predictions); ``confidence`` defaults to the confidence of
    the predicted class (maximum softmax probability; ``max(p, 1 - p)`` per
    binary problem) and may be any other score, shape (n,) or (n, L) for
    multi-label. Multi-label tasks are scored per label; the returned values
    are then arrays (L,) with their means under ``mean_*``.
    """
    msp, correct = predicted_confidence(task, probabilities, labels)
    conf = msp if confidence is None else np.asarray(confidence, dtype=np.float64)
    if conf.shape != msp.shape:
        raise ValueError(f"confidence must have shape {msp.shape}, got {conf.shape}")
    errors = (~correct).astype(np.float64)

    def one(c, e) -> dict:
        return {"aurc": aurc(c, e), "eaurc": eaurc(c, e), "aurc_per_sample": aurc(c, e, "per-sample"),
                "augrc": augrc(c, e), "augrc_optimal": augrc_optimal(e), "error_rate": float(e.mean())}

    if task != TASK_MULTILABEL:
        return one(conf, errors) | {"n": len(conf)}
    per_label = [one(conf[:, j], errors[:, j]) for j in range(conf.shape[1])]
    result = {key: np.array([r[key] for r in per_label]) for key in per_label[0]}
    result |= {f"mean_{key}": float(values.mean()) for key, values in list(result.items())}
    return result | {"n": len(conf)}
