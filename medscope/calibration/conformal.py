"""Split conformal prediction sets, calibrated on validation data.

A conformity score ``s(x, y)`` (higher = the label fits the model less) is
computed on the ``n`` validation samples; its conformal quantile ``q`` at
level ``alpha`` is the ``k``-th smallest score with
``k = ceil((n + 1)(1 - alpha))`` (the ``ceil((n+1)(1-alpha))/n`` empirical
quantile; ``q = +inf`` when ``k > n``, i.e. when ``n < 1/alpha - 1``). The
prediction set of a test sample is ``{y : s(x, y) <= q}``. For exchangeable
validation and test data it holds the true label with probability at least
``1 - alpha``, and at most ``1 - alpha + 1/(n + 1)`` when the scores have no
ties (Vovk et al., 2005; Angelopoulos & Bates, 2023).

Scores (``p`` the probability vector of a sample):

* ``"lac"`` (Sadinle et al., 2019): ``s = 1 - p_y``.
* ``"aps"`` (Romano et al., 2020): the probability mass of the classes at
  least as probable as ``y``, ``S_y = sum_{j: p_j >= p_y} p_j``; in the
  randomised form ``S_y - U p_y`` with ``U ~ Uniform(0, 1)`` drawn per sample.
  Tied classes are treated as one block (``S`` counts the whole block), so the
  score does not depend on the order of tied classes.

APS comes in three modes (``aps_mode``):

* ``"include-last"`` (default; MAPIE's default): randomised calibration
  scores; the set holds the most probable classes up to and including the
  first whose cumulative probability reaches ``q``, i.e. class ``k`` is in
  the set when the mass of the strictly more probable classes is below ``q``
  (``B_k = sum_{j: p_j > p_k} p_j < q``). Never empty; coverage ``>= 1 - alpha``
  but not exact (the sets are larger than the randomised ones).
* ``"randomized"``: randomised scores on both sides, ``{k : S_k - U p_k <= q}``
  with a fresh ``U`` per test sample; coverage exactly within the bounds
  above; sets may be empty.
* ``"deterministic"``: no randomisation, ``s = S_y`` and ``{k : S_k <= q}``.

Calibration draws ``U`` from ``numpy.random.RandomState(seed).uniform(size=n)``,
the stream MAPIE uses with ``random_state=seed``, so the sets equal MAPIE's
for the same seed. MAPIE compares with a slack of 1e-8; these comparisons are
exact.

Class-conditional ("Mondrian", Vovk et al., 2005) sets use one quantile per
class, from the validation samples of that class, and ``k`` is in the set when
``s(x, k) <= q_k``: coverage ``>= 1 - alpha`` holds within every class
(a class with fewer than ``1/alpha - 1`` validation samples gets ``q = inf``:
always in the set).

Tasks: binary tasks are two-class problems on their two softmax columns
(MAPIE accepts only LAC there; APS is a valid score for two classes too);
multi-class and ordinal regression (as multi-class: the sets need not be
contiguous ranges) use all K columns; multi-label tasks are L independent
binary problems, label ``j`` with the two-class vector ``[1 - p_j, p_j]`` and
its own quantile (or two, class-conditionally; randomised APS draws are
shared by the labels of a sample). Sets are boolean arrays
``(n, K)``, or ``(n, L, 2)`` for multi-label (``[i, j, v]``: value ``v`` of
label ``j`` is in the set of sample ``i``); coverage then holds per label.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTILABEL
from ._inputs import binary_pair, check_alpha, label_array, scores_matrix

SCORES = ("lac", "aps")
APS_MODES = ("include-last", "randomized", "deterministic")


def conformal_quantile(scores, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest score; ``inf`` when that exceeds ``n``.

    >>> conformal_quantile([0.1, 0.4, 0.2, 0.3], alpha=0.4)  # k = ceil(5 * 0.6) = 3
    0.3
    >>> conformal_quantile([0.1, 0.4, 0.2, 0.3], alpha=0.1)  # k = ceil(4.5) = 5 > 4
    inf
    """
    alpha = check_alpha(alpha)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = math.ceil((len(values) + 1) * (1.0 - alpha))
    if k > len(values):
        return math.inf
    return float(np.partition(values, k - 1)[k - 1])


def class_masses(probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the mass of the classes at least as probable, and strictly more probable.

    Returns ``(S, B)``, each ``(n, K)``: ``S[i, k] = sum_{j: p_ij >= p_ik} p_ij``
    and ``B[i, k] = sum_{j: p_ij > p_ik} p_ij``. Summed in decreasing order of
    probability (as a cumulative sum along the sorted row).

    >>> S, B = class_masses([[0.2, 0.5, 0.3]])
    >>> S.round(2).tolist(), B.round(2).tolist()
    ([[1.0, 0.5, 0.8]], [[0.8, 0.0, 0.5]])
    """
    p = np.asarray(probabilities, dtype=np.float64)
    n, k = p.shape
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)
    positions = np.broadcast_to(np.arange(k), (n, k))
    ends_block = np.ones((n, k), dtype=bool)
    ends_block[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    starts_block = np.ones((n, k), dtype=bool)
    starts_block[:, 1:] = ends_block[:, :-1]
    block_end = np.minimum.accumulate(np.where(ends_block, positions, k)[:, ::-1], axis=1)[:, ::-1]
    block_start = np.maximum.accumulate(np.where(starts_block, positions, -1), axis=1)
    at_least_ranked = np.take_along_axis(cumulative, block_end, axis=1)
    before = np.concatenate([np.zeros((n, 1)), cumulative[:, :-1]], axis=1)
    above_ranked = np.take_along_axis(before, block_start, axis=1)
    at_least, above = np.empty_like(p), np.empty_like(p)
    np.put_along_axis(at_least, order, at_least_ranked, axis=1)
    np.put_along_axis(above, order, above_ranked, axis=1)
    return at_least, above


def lac_scores(probabilities, labels) -> np.ndarray:
    """LAC conformity scores ``1 - p_y`` (n,) of class-index labels (n,)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    return 1.0 - p[np.arange(len(y)), y]


def aps_scores(probabilities, labels, u=None) -> np.ndarray:
    """APS conformity scores (n,): ``S_y``, or ``S_y - u p_y`` when uniform draws ``u`` (n,) are given.

    >>> aps_scores([[0.2, 0.5, 0.3]], [2]).round(2).tolist()
    [0.8]
    >>> aps_scores([[0.2, 0.5, 0.3]], [2], u=[0.5]).round(2).tolist()
    [0.65]
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    rows = np.arange(len(y))
    at_least, _ = class_masses(p)
    scores = at_least[rows, y]
    if u is not None:
        scores = scores - np.asarray(u, dtype=np.float64).reshape(-1) * p[rows, y]
    return scores


def sets_from_quantile(probabilities, quantile, score: str = "lac", aps_mode: str = "include-last",
                       u=None) -> np.ndarray:
    """Boolean prediction sets (n, K) of probability rows for a quantile ``q``.

    ``quantile`` is a scalar, or one value per class (K,) for class-conditional
    sets (class ``k`` is judged against ``q_k``). ``u`` (n,) are the test
    draws for ``aps_mode="randomized"``. Membership rules: see the module
    docstring.

    >>> sets_from_quantile([[0.6, 0.3, 0.1]], 0.75).tolist()  # LAC: 1 - p <= 0.75
    [[True, True, False]]
    >>> sets_from_quantile([[0.6, 0.3, 0.1]], 0.75, "aps").tolist()  # 0.6 < 0.75, so add the 2nd class
    [[True, True, False]]
    """
    _check_score(score, aps_mode)
    p = np.asarray(probabilities, dtype=np.float64)
    q = np.asarray(quantile, dtype=np.float64)
    if q.ndim and q.shape != (p.shape[1],):
        raise ValueError(f"expected one quantile or one per class ({p.shape[1]}), got shape {q.shape}")
    if score == "lac":
        return 1.0 - p <= q
    at_least, above = class_masses(p)
    if aps_mode == "include-last":
        return above < q
    if aps_mode == "deterministic":
        return at_least <= q
    if u is None:
        raise ValueError("aps_mode='randomized' needs the test draws u")
    return at_least - np.asarray(u, dtype=np.float64).reshape(-1, 1) * p <= q


def _check_score(score: str, aps_mode: str) -> None:
    if score not in SCORES:
        raise UsageError(f"unknown conformity score {score!r}; expected one of {', '.join(SCORES)}")
    if aps_mode not in APS_MODES:
        raise UsageError(f"unknown APS mode {aps_mode!r}; expected one of {', '.join(APS_MODES)}")


def calibration_scores(probabilities, labels, score: str = "lac", aps_mode: str = "include-last",
                       u=None) -> np.ndarray:
    """Conformity scores (n,) of the true labels, as each score and mode calibrates them.

    LAC: ``1 - p_y``; APS ``"deterministic"``: ``S_y``; APS ``"include-last"``
    and ``"randomized"``: ``S_y - u p_y`` (``u`` required).
    """
    _check_score(score, aps_mode)
    if score == "lac":
        return lac_scores(probabilities, labels)
    if aps_mode == "deterministic":
        return aps_scores(probabilities, labels)
    if u is None:
        raise ValueError(f"aps_mode={aps_mode!r} calibrates on randomised scores and needs the draws u")
    return aps_scores(probabilities, labels, u)


@dataclass(frozen=True)
class ConformalCalibration:
    """Quantiles fitted on validation data; turn test probabilities into sets with :func:`prediction_sets`.

    ``quantile``: shape () (marginal), (K,) (class-conditional), (L,) or
    (L, 2) for multi-label; ``+inf`` where a group has too few samples.
    ``n_calibration``: the number of validation samples behind each quantile,
    same shape.
    """

    task: str
    score: str
    alpha: float
    aps_mode: str
    class_conditional: bool
    quantile: np.ndarray
    n_calibration: np.ndarray
    seed: int

    @property
    def randomized(self) -> bool:
        return self.score == "aps" and self.aps_mode == "randomized"


def calibration_draws(n: int, seed: int) -> np.ndarray:
    """The uniform draws of randomised APS calibration: MAPIE's stream for ``random_state=seed``."""
    return np.random.RandomState(seed).uniform(size=n)


def prediction_draws(n: int, seed: int) -> np.ndarray:
    """Uniform draws for randomised APS test sets: a stream independent of the calibration draws."""
    return np.random.default_rng([seed, 1]).uniform(size=n)


def _problems(task: str, probs: np.ndarray, y: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(probabilities (n, K), labels (n,)) of each conformal problem: one, or one per label."""
    if task == TASK_MULTILABEL:
        return [(binary_pair(probs[:, j]), None if y is None else y[:, j]) for j in range(probs.shape[1])]
    return [(probs, y)]


def _quantiles(scores: np.ndarray, y: np.ndarray, n_classes: int, alpha: float,
               class_conditional: bool) -> tuple[np.ndarray, np.ndarray]:
    if not class_conditional:
        return np.asarray(conformal_quantile(scores, alpha)), np.asarray(len(scores))
    quantiles = np.array([conformal_quantile(scores[y == c], alpha) for c in range(n_classes)])
    return quantiles, np.bincount(y, minlength=n_classes)


def calibrate(task: str, probabilities, labels, *, alpha: float = 0.1, score: str = "lac",
              aps_mode: str = "include-last", class_conditional: bool = False, seed: int = 0) -> ConformalCalibration:
    """Fit split-conformal quantiles on validation probabilities and labels.

    Parameters
    ----------
    task : str
        A MedMNIST task.
    probabilities : array (n, K)
        Validation softmax outputs (sigmoid per label for multi-label).
    labels : array (n, 1), or (n, L) of 0/1 for multi-label.
    alpha : float
        Target miscoverage: sets hold the true label with probability
        ``>= 1 - alpha``.
    score : {"lac", "aps"}
    aps_mode : {"include-last", "randomized", "deterministic"}
        Only used by APS; see the module docstring.
    class_conditional : bool
        One quantile per class (Mondrian): coverage within every class.
    seed : int
        Seeds the randomised APS draws (calibration and test).
    """
    alpha = check_alpha(alpha)
    _check_score(score, aps_mode)
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    if len(probs) == 0:
        raise UsageError("conformal calibration needs at least one validation sample")
    u = calibration_draws(len(probs), seed) if score == "aps" and aps_mode != "deterministic" else None
    fitted = [_quantiles(calibration_scores(p, labels_j, score, aps_mode, u), labels_j, p.shape[1], alpha,
                         class_conditional) for p, labels_j in _problems(task, probs, y)]
    if task == TASK_MULTILABEL:
        quantile, count = np.stack([q for q, _ in fitted]), np.stack([c for _, c in fitted])
    else:
        (quantile, count), = fitted
    return ConformalCalibration(task, score, alpha, aps_mode, bool(class_conditional), quantile, count, int(seed))


def prediction_sets(calibration: ConformalCalibration, probabilities, u=None) -> np.ndarray:
    """Boolean prediction sets of test probabilities: (n, K), or (n, L, 2) for multi-label.

    ``u`` (n,) overrides the test draws of randomised APS (by default
    :func:`prediction_draws` with the calibration's seed; every label of a
    multi-label sample shares its draw).
    """
    probs = scores_matrix(calibration.task, probabilities)
    if calibration.randomized and u is None:
        u = prediction_draws(len(probs), calibration.seed)
    q = calibration.quantile
    expected = q.shape[0] if calibration.task == TASK_MULTILABEL else (q.shape[0] if q.ndim else None)
    if expected is not None and probs.shape[1] != expected:
        raise ValueError(f"calibrated on {expected} columns, got probabilities with {probs.shape[1]}")
    sets = [sets_from_quantile(p, q[j] if calibration.task == TASK_MULTILABEL else q, calibration.score,
                               calibration.aps_mode, u)
            for j, (p, _) in enumerate(_problems(calibration.task, probs, None))]
    return np.stack(sets, axis=1) if calibration.task == TASK_MULTILABEL else sets[0]


def _set_statistics(sets: np.ndarray, y: np.ndarray) -> dict:
    n, k = sets.shape
    covered = sets[np.arange(n), y]
    size = sets.sum(axis=1)
    class_count = np.bincount(y, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.bincount(y, weights=covered, minlength=k) / class_count
    return {"n": int(n), "coverage": float(covered.mean()), "coverage_per_class": per_class,
            "class_count": class_count, "mean_set_size": float(size.mean()),
            "singleton_fraction": float(np.mean(size == 1)), "empty_fraction": float(np.mean(size == 0)),
            "abstain_fraction": float(np.mean(size != 1)),
            "set_size_counts": np.bincount(size, minlength=k + 1)}


def evaluate_sets(task: str, sets, labels) -> dict:
    """Empirical coverage and size of prediction sets on labelled (test) data.

    Returns
    -------
    dict
        Single-label tasks: ``coverage`` (fraction of sets holding the true
        label), ``coverage_per_class`` (K,) (NaN for a class with no sample),
        ``class_count`` (K,), ``mean_set_size``, ``singleton_fraction``,
        ``empty_fraction``, ``set_size_counts`` (K + 1,) (samples with a set
        of size 0..K) and ``n``; binary tasks add ``abstain_fraction``, the
        sets that decide nothing (size 0 or 2).

        Multi-label: each of those per label, as arrays with a leading L axis
        (``coverage`` (L,), ``coverage_per_class`` (L, 2) for values 0 and 1,
        ``abstain_fraction`` (L,), ...), their means over labels under
        ``mean_*`` (``mean_coverage``, ``mean_mean_set_size``, ...), and
        ``all_labels_covered``: the fraction of samples whose L sets all hold
        the true value (not guaranteed by per-label calibration).

    >>> r = evaluate_sets("binary-class", [[True, False], [True, True], [False, True]], [[0], [1], [0]])
    >>> r["coverage"], r["abstain_fraction"], r["coverage_per_class"].tolist()
    (0.6666666666666666, 0.3333333333333333, [0.5, 1.0])
    """
    sets = np.asarray(sets, dtype=bool)
    if sets.ndim and sets.shape[0] == 0:
        raise UsageError("no samples to evaluate the prediction sets on")
    if task == TASK_MULTILABEL:
        if sets.ndim != 3 or sets.shape[2] != 2:
            raise ValueError(f"multi-label sets must have shape (n, L, 2), got {sets.shape}")
        y = label_array(task, labels, sets.shape[0], sets.shape[1])
        per_label = [_set_statistics(sets[:, j], y[:, j]) for j in range(sets.shape[1])]
        result = {key: np.array([stats[key] for stats in per_label]) for key in per_label[0] if key != "n"}
        for key in ("coverage", "mean_set_size", "singleton_fraction", "empty_fraction", "abstain_fraction"):
            result[f"mean_{key}"] = float(result[key].mean())
        result["all_labels_covered"] = float(np.mean(np.take_along_axis(sets, y[:, :, None], axis=2).all(axis=1)))
        result["n"] = int(sets.shape[0])
        return result
    if sets.ndim != 2:
        raise ValueError(f"sets must have shape (n, K), got {sets.shape}")
    scores_matrix(task, np.zeros((0, sets.shape[1])))  # checks the column count for the task
    result = _set_statistics(sets, label_array(task, labels, sets.shape[0], sets.shape[1]))
    if task != TASK_BINARY:
        del result["abstain_fraction"]  # "abstain" means a two-class set that decides nothing
    return result
