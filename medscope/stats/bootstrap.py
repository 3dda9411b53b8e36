"""Stratified, vectorised percentile bootstrap of the headline metrics.

The metrics are those of :mod:`medscope.metrics` (and so of
``medmnist.Evaluator``) plus balanced accuracy and per-class sensitivity and
specificity:

* **AUC** -- binary: AUC of the last score column; multi-class and ordinal:
  mean one-vs-rest AUC over the ``K`` score columns; multi-label: mean
  per-label AUC.  A mean with an undefined term (a class or label without
  positives or without negatives) is undefined (NaN), as in
  :func:`medscope.metrics.auc_score`.
* **ACC** -- binary: threshold 0.5 on the last column; multi-class and
  ordinal: arg-max; multi-label: mean over labels of the accuracy at 0.5.
* **balanced accuracy** -- mean recall over the classes present in the
  (re)sample (``sklearn.metrics.balanced_accuracy_score``); multi-label: mean
  over labels of that binary balanced accuracy.
* **per class** (per label for multi-label): sensitivity ``TP / (TP + FN)``,
  specificity ``TN / (TN + FP)`` one-vs-rest on the predictions above, and
  the one-vs-rest AUC wherever the headline AUC is a mean of per-class AUCs
  (multi-class, ordinal, multi-label).

**Resampling.**  A resample is described by a count per original sample,
``c[b, i]`` = how often sample ``i`` is drawn in resample ``b``; every
metric is a function of those counts, so no resampled arrays are built.
Stratified (the default for binary, multi-class and ordinal tasks): the
samples of each true class are resampled with replacement within that class,
so every class keeps its count (as ``pROC``'s default ``stratified=TRUE``).
Multi-label tasks are resampled by rows (an image keeps all its labels) with
no stratification: label combinations are too many and too sparse to form
strata.  Non-stratified resampling (``stratified=False``) draws ``n`` rows
with replacement, like ``scipy.stats.bootstrap(paired=True)``.

**Undefined values.**  A metric undefined in a resample -- an AUC term, a
sensitivity or a specificity whose class or label has no positives (or no
negatives) in that resample -- makes that resample's value NaN; NaN values
are left out of the percentiles and counted in ``n_dropped``.  Stratified
resamples keep every class, so only multi-label and non-stratified resamples
can drop values.

**AUC on counts** (Mann-Whitney with midranks, equal to
``sklearn.metrics.roc_auc_score``): with positives ``i`` and negatives
``j``,

.. math::

    \\mathrm{AUC}_b = \\frac{\\sum_i c_{bi} \\sum_j c_{bj}\\,
        [\\,s_j < s_i\\,] + \\tfrac12 [\\,s_j = s_i\\,]}{N_{1b} N_{0b}},
    \\qquad N_{1b} = \\sum_i c_{bi},\\; N_{0b} = \\sum_j c_{bj}.

With the negatives sorted by score and ``S_b(k)`` the cumulative count of
the first ``k`` of them, the inner sum is
``(S_b(lo_i) + S_b(hi_i)) / 2`` where ``lo_i`` / ``hi_i`` count the
negatives below / at-or-below ``s_i``.  The code cumulates whichever group
is smaller (for one-vs-rest AUCs, the positives); with positives cumulated
into ``P_b`` and ``lo_j`` / ``hi_j`` the positives below / at-or-below a
negative ``s_j``, ``2 U_b = 2 N_{1b} N_{0b} - sum_j c_{bj} (P_b(lo_j) +
P_b(hi_j))``.  One short cumulative sum per resample, one gather and one
weighted sum over the samples give every resample's AUC in ``O(B n)``
work; ``2 U_b`` is an exact integer.

**Interval.**  Percentile: ``[q(alpha/2), q(1 - alpha/2)]`` of the
bootstrap values, ``alpha = 1 - level``, with ``numpy.quantile``'s default
linear interpolation (the rule of ``scipy.stats.bootstrap(method=
"percentile")``).

Reproducibility: the draws come from ``numpy.random.default_rng(seed)``, a
chunk of resamples at a time; the same ``(seed, n_resamples, labels)`` give
the same resamples.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medscope.errors import UsageError
from medscope.tasks import BINARY as TASK_BINARY, MULTILABEL as TASK_MULTILABEL, NAMES as TASKS

THRESHOLD = 0.5  # the decision threshold of medscope.metrics
HEADLINE = ("auc", "acc", "balanced_acc")
PER_CLASS = ("auc", "sensitivity", "specificity")
# resamples x samples per chunk: a chunk of int32 counts (4 MiB) stays in cache
_CHUNK_ELEMENTS = 1 << 20


# ---------------------------------------------------------------- preparation


@dataclass(frozen=True)
class _Design:
    """The labels in a canonical order: true classes in contiguous strata."""

    task: str
    n: int
    n_classes: int  # classes (single-label) or labels (multi-label)
    canonical: np.ndarray  # canonical position -> original sample index
    labels: np.ndarray  # canonical order; (n,) class or (n, L) 0/1
    strata: tuple  # (start, stop) per class; () for multi-label


@dataclass(frozen=True)
class _Unit:
    """One ranking problem: positives against negatives on one score column.

    The smaller of the two groups is the *cumulated* group ``g``: per
    resample, the cumulative counts ``P(k)`` of its first ``k`` members by
    ascending score form a small table; every sample of the other group
    looks up ``P(lo) + P(hi)`` (members of ``g`` scored below / at-or-below
    it) in that table, members of ``g`` look up 0.  The sum over all samples
    of count x looked-up value is ``W``; then ``2U = W`` when ``g`` are the
    negatives, ``2U = 2 N1 N0 - W`` when ``g`` are the positives.
    """

    cumulated: np.ndarray  # canonical indices of g, by ascending score
    cumulated_positive: bool  # g are the positives
    row: np.ndarray  # (n,) per canonical sample: row of the lookup table
    tie_lo: np.ndarray  # tie blocks of g that the other group hits: [lo, hi)
    tie_hi: np.ndarray
    cumulated_below: int  # members of g scored <= THRESHOLD (predicted negative)
    other_below: np.ndarray  # canonical indices of the other group scored <= THRESHOLD


@dataclass(frozen=True)
class _Model:
    units: tuple  # one _Unit per AUC term
    # multi-class / ordinal: canonical indices by (prediction, true class) and
    # the segments of equal (prediction, true class) for the confusion matrix
    confusion_order: np.ndarray | None = None
    segment_starts: np.ndarray | None = None
    segment_true: np.ndarray | None = None
    segment_pred: np.ndarray | None = None


def _design(task: str, labels) -> _Design:
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    labels = np.asarray(labels)
    if labels.size == 0:
        raise UsageError("no samples: labels are empty")
    if labels.dtype.kind not in "biuf" or (labels.dtype.kind == "f" and (
            not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)))):
        raise UsageError("labels must be integers")
    labels = labels.astype(np.int64)
    if task == TASK_MULTILABEL:
        if labels.ndim != 2:
            raise UsageError(f"multi-label labels must have shape (n, labels), got {labels.shape}")
        if np.any((labels != 0) & (labels != 1)):
            raise UsageError("multi-label labels must be 0 or 1")
        n = labels.shape[0]
        return _Design(task, n, labels.shape[1], np.arange(n), labels, ())
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UsageError(f"labels must have shape (n,) or (n, 1), got {labels.shape}")
    if labels.min() < 0:
        raise UsageError("class labels must be non-negative")
    canonical = np.argsort(labels, kind="stable")
    sorted_labels = labels[canonical]
    n_classes = 2 if task == TASK_BINARY else int(labels.max()) + 1
    bounds = np.searchsorted(sorted_labels, np.arange(n_classes + 1))
    strata = tuple((int(bounds[k]), int(bounds[k + 1])) for k in range(n_classes))
    return _Design(task, labels.size, n_classes, canonical, sorted_labels, strata)


def _checked_scores(design: _Design, scores) -> np.ndarray:
    """Scores in canonical order, (n, K) float64, with their shape checked."""
    scores = np.asarray(scores, dtype=np.float64)
    if design.task == TASK_BINARY and scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[0] != design.n:
        raise UsageError(f"scores must have shape ({design.n}, classes), got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise UsageError("scores contain NaN or infinite values")
    if design.task == TASK_MULTILABEL:
        if scores.shape[1] != design.n_classes:
            raise UsageError(f"{design.n_classes} labels but {scores.shape[1]} score columns")
    elif design.task == TASK_BINARY:
        if design.labels.max() > 1:
            raise UsageError("binary-class labels must be 0 or 1")
    elif design.n_classes > scores.shape[1]:
        raise UsageError(f"label {design.n_classes - 1} but only {scores.shape[1]} score columns")
    return scores[design.canonical]


def _unit(score: np.ndarray, positive: np.ndarray) -> _Unit:
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    cumulated_positive = pos.size <= neg.size
    group, other = (pos, neg) if cumulated_positive else (neg, pos)
    group = group[np.argsort(score[group], kind="stable")]
    group_scores, other_scores = score[group], score[other]
    lo = np.searchsorted(group_scores, other_scores, side="left")
    hi = np.searchsorted(group_scores, other_scores, side="right")
    tied = lo != hi
    # a tie block of g is fixed by its start: the first member with that score
    tie_lo, first, block = np.unique(lo[tied], return_index=True, return_inverse=True)
    tie_hi = hi[tied][first]
    row = np.zeros(score.size, dtype=np.intp)  # row 0 of the table is 2 P(0) = 0
    row[other] = lo
    row[other[tied]] = group.size + 1 + block
    return _Unit(group, cumulated_positive, row, tie_lo, tie_hi,
                 int(np.searchsorted(group_scores, THRESHOLD, side="right")),
                 other[other_scores <= THRESHOLD])


def _model(design: _Design, scores) -> _Model:
    scores = _checked_scores(design, scores)
    if design.task == TASK_MULTILABEL:
        return _Model(tuple(_unit(scores[:, k], design.labels[:, k] == 1) for k in range(design.n_classes)))
    if design.task == TASK_BINARY:
        return _Model((_unit(scores[:, -1], design.labels == 1),))
    n_classes = scores.shape[1]  # metrics.auc_score averages over every score column
    units = tuple(_unit(scores[:, k], design.labels == k) for k in range(n_classes))
    pred = np.argmax(scores, axis=1)
    order = np.lexsort((design.labels, pred))
    key = pred[order] * n_classes + design.labels[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    return _Model(units, order, starts, design.labels[order][starts], pred[order][starts])


# ---------------------------------------------------------------- evaluation


def _divide(num, den) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=np.asarray(den) != 0)


def _unit_counts(counts_t: np.ndarray, total: np.ndarray, unit: _Unit, int32_products: bool,
                 cells: bool) -> dict:
    """Per resample: AUC and (``cells``) the 2x2 cells at 0.5, from counts (n, b)."""
    b = counts_t.shape[1]
    cumulated = np.empty((b, unit.cumulated.size + 1), dtype=counts_t.dtype)
    cumulated[:, 0] = 0
    # cumulative sums run along a row, so cumulate the transposed (b, m) copy
    np.cumsum(np.take(counts_t, unit.cumulated, axis=0).T, axis=1, out=cumulated[:, 1:])
    table = np.concatenate([2 * cumulated, cumulated[:, unit.tie_lo] + cumulated[:, unit.tie_hi]], axis=1)
    looked_up = np.take(np.ascontiguousarray(table.T), unit.row, axis=0)
    if int32_products:  # exact and several times faster than an int64 einsum
        weighted = np.multiply(counts_t, looked_up, out=looked_up).sum(axis=0, dtype=np.int64)
    else:
        # exact while the sums stay below 2**53 (always, for bootstrap counts of n < 2**26 samples)
        weighted = np.einsum("ij,ij->j", counts_t, looked_up, dtype=np.float64).astype(np.int64)
    n_group = cumulated[:, -1].astype(np.int64)
    if unit.cumulated_positive:
        n_pos, n_neg = n_group, total - n_group
        two_u = 2 * n_pos * n_neg - weighted
    else:
        n_pos, n_neg = total - n_group, n_group
        two_u = weighted
    out = {"auc": _divide(two_u, 2 * n_pos * n_neg)}
    if cells:
        group_below = cumulated[:, unit.cumulated_below].astype(np.int64)
        other_below = np.take(counts_t, unit.other_below, axis=0).sum(axis=0, dtype=np.int64)
        fn, tn = (group_below, other_below) if unit.cumulated_positive else (other_below, group_below)
        out.update(tp=n_pos - fn, fn=fn, tn=tn, fp=n_neg - tn)
    return out


def _from_confusion(cm: np.ndarray, out: dict) -> None:
    """ACC, balanced accuracy, per-class sensitivity/specificity from (b, K, K)."""
    total = cm.sum(axis=(1, 2))
    diag = np.diagonal(cm, axis1=1, axis2=2)
    row, col = cm.sum(axis=2), cm.sum(axis=1)
    recall = _divide(diag, row)
    negatives = total[:, None] - row
    specificity = _divide(negatives - (col - diag), negatives)
    out["acc"] = _divide(diag.sum(axis=1), total)
    out["balanced_acc"] = _divide(np.where(row > 0, recall, 0.0).sum(axis=1), (row > 0).sum(axis=1))
    for k in range(cm.shape[1]):
        out[f"sensitivity/{k}"] = recall[:, k]
        out[f"specificity/{k}"] = specificity[:, k]


def _evaluate(design: _Design, model: _Model, counts: np.ndarray) -> dict:
    """Every metric for each row of ``counts`` (b, n), canonical order."""
    counts_t = np.ascontiguousarray(counts.T)
    total = counts_t.sum(axis=0, dtype=np.int64)
    # a product count x table value is at most max count x 2 total
    int32_products = counts_t.dtype == np.int32 and 2 * int(total.max()) * int(counts_t.max()) < 2**31
    cells = design.task in (TASK_BINARY, TASK_MULTILABEL)  # thresholded predictions on the AUC's column
    units = [_unit_counts(counts_t, total, unit, int32_products, cells) for unit in model.units]
    out: dict[str, np.ndarray] = {}
    if design.task == TASK_BINARY:
        u = units[0]
        cm = np.stack([np.stack([u["tn"], u["fp"]], 1), np.stack([u["fn"], u["tp"]], 1)], 1)
        out["auc"] = u["auc"]
        _from_confusion(cm, out)
        return out
    out["auc"] = np.mean([u["auc"] for u in units], axis=0)
    for k, u in enumerate(units):
        out[f"auc/{k}"] = u["auc"]
    if design.task == TASK_MULTILABEL:
        accs, balanced = [], []
        for k, u in enumerate(units):
            sens, spec = _divide(u["tp"], u["tp"] + u["fn"]), _divide(u["tn"], u["tn"] + u["fp"])
            has_pos, has_neg = (u["tp"] + u["fn"]) > 0, (u["tn"] + u["fp"]) > 0
            accs.append(_divide(u["tp"] + u["tn"], u["tp"] + u["fn"] + u["tn"] + u["fp"]))
            balanced.append(_divide(np.where(has_pos, sens, 0.0) + np.where(has_neg, spec, 0.0),
                                    has_pos.astype(int) + has_neg))
            out[f"sensitivity/{k}"], out[f"specificity/{k}"] = sens, spec
        out["acc"] = np.mean(accs, axis=0)
        out["balanced_acc"] = np.mean(balanced, axis=0)
        return out
    n_classes = len(model.units)
    sums = np.add.reduceat(np.take(counts, model.confusion_order, axis=1), model.segment_starts, axis=1)
    cm = np.zeros((counts.shape[0], n_classes, n_classes), dtype=np.int64)
    cm[:, model.segment_true, model.segment_pred] = sums
    _from_confusion(cm, out)
    return out


def _concat(parts: list[dict]) -> dict:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _chunk_size(n: int, n_resamples: int) -> int:
    return max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n, 1)))


def _draw_counts(rng: np.random.Generator, design: _Design, size: int, stratified: bool) -> np.ndarray:
    """Counts (size, n) of one chunk of resamples, canonical order."""
    n = design.n
    if stratified and design.strata:
        draws = np.empty((size, n), dtype=np.int64)
        for start, stop in design.strata:
            if stop > start:
                draws[:, start:stop] = rng.integers(start, stop, size=(size, stop - start))
    else:
        draws = rng.integers(0, n, size=(size, n))
    draws += (np.arange(size, dtype=np.int64) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
    return counts.astype(np.int32) if n < 2**30 else counts


def _check_resampling(n_resamples, level=None, seed=0) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise UsageError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if level is not None and not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1 (exclusive), got {level!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")


# ---------------------------------------------------------------- public API


def percentile_interval(values, level: float = 0.95) -> tuple[float, float, int]:
    """Percentile interval of bootstrap values, NaN values left out.

    ``[q(alpha/2), q(1 - alpha/2)]`` with ``alpha = 1 - level`` and
    ``numpy.quantile``'s linear interpolation (as
    ``scipy.stats.bootstrap(method="percentile")``).

    Returns
    -------
    (low, high, n_dropped)
        ``n_dropped`` NaN values were excluded; both ends are NaN when every
        value is NaN.

    >>> percentile_interval([0.1, 0.2, float("nan"), 0.3, 0.4, 0.5], level=0.5)
    (0.2, 0.4, 1)
    """
    if not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1 (exclusive), got {level!r}")
    values = np.asarray(values, dtype=np.float64)
    valid = values[~np.isnan(values)]
    dropped = int(values.size - valid.size)
    if valid.size == 0:
        return float("nan"), float("nan"), dropped
    alpha = 1.0 - level
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), dropped


def resample_metrics(task: str, labels, scores, counts) -> dict[str, np.ndarray]:
    """Every metric on given resamples, described by counts.

    Parameters
    ----------
    task : str
        MedMNIST task string.
    labels : array (n, 1) or (n,) of int, or (n, L) of 0/1 for multi-label
    scores : array (n, K) of probabilities
    counts : array (B, n) of non-negative int
        ``counts[b, i]``: how often sample ``i`` is in resample ``b``
        (``numpy.bincount`` of resample ``b``'s indices).  A row of ones is
        the original data.

    Returns
    -------
    dict of str -> array (B,)
        ``"auc"``, ``"acc"``, ``"balanced_acc"``, and per class (per label)
        ``k``: ``"sensitivity/k"``, ``"specificity/k"`` and, except for
        binary tasks, ``"auc/k"``.  NaN where a metric is undefined in a
        resample.

    >>> labels, scores = [[0], [0], [1], [1]], [[.9, .1], [.4, .6], [.3, .7], [.2, .8]]
    >>> float(resample_metrics("binary-class", labels, scores, [[1, 1, 1, 1]])["auc"][0])
    1.0
    >>> float(resample_metrics("binary-class", labels, scores, [[0, 2, 1, 1]])["acc"][0])
    0.5
    """
    design = _design(task, labels)
    model = _model(design, scores)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != design.n:
        raise UsageError(f"counts must have shape (resamples, {design.n}), got {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer) or (counts.size and counts.min() < 0):
        raise UsageError("counts must be non-negative integers")
    counts = np.take(counts, design.canonical, axis=1)
    small = counts.size == 0 or int(counts.sum(axis=1).max()) < 2**30
    counts = counts.astype(np.int32 if small else np.int64)
    step = _chunk_size(design.n, max(counts.shape[0], 1))
    parts = [_evaluate(design, model, counts[s:s + step]) for s in range(0, counts.shape[0], step)]
    return _concat(parts)


def point_metrics(task: str, labels, scores) -> dict[str, float]:
    """The metrics on the data as given (the bootstrap's point estimates).

    Equal to :func:`medscope.metrics.auc_score` / ``acc_score`` (and so to
    ``medmnist.Evaluator``) up to floating-point rounding: AUC is computed
    as the exact Mann-Whitney count divided by ``N1 N0``, sklearn integrates
    the ROC curve.
    """
    n = np.asarray(labels).shape[0]
    return {k: float(v[0]) for k, v in resample_metrics(task, labels, scores, np.ones((1, n), dtype=np.int32)).items()}


def bootstrap_distributions(task: str, labels, scores: Sequence, *, n_resamples: int = 2000, seed: int = 0,
                            stratified: bool = True) -> list[dict[str, np.ndarray]]:
    """Bootstrap values of every metric for one or more models on the same resamples.

    Parameters
    ----------
    task, labels : as :func:`resample_metrics`
    scores : sequence of arrays (n, K)
        One score array per model; every model is evaluated on the same
        resamples (what a paired comparison needs).
    n_resamples : int
    seed : int
        Seed of ``numpy.random.default_rng``.
    stratified : bool
        Resample within each true class (ignored for multi-label tasks,
        which are resampled by rows).

    Returns
    -------
    list of dict of str -> array (n_resamples,)
        One dict per model, keys as :func:`resample_metrics`.
    """
    _check_resampling(n_resamples, seed=seed)
    design = _design(task, labels)
    models = [_model(design, s) for s in scores]
    rng = np.random.default_rng(seed)
    step = _chunk_size(design.n, n_resamples)
    parts: list[list[dict]] = [[] for _ in models]
    for start in range(0, n_resamples, step):
        counts = _draw_counts(rng, design, min(step, n_resamples - start), stratified)
        for model, part in zip(models, parts):
            part.append(_evaluate(design, model, counts))
    return [_concat(part) for part in parts]


def method_name(task: str, stratified: bool) -> str:
    """How the resamples were drawn, in words (the ``method`` of each entry)."""
    if task == TASK_MULTILABEL:
        return "percentile bootstrap (rows resampled, not stratified)"
    return "percentile bootstrap stratified by true class" if stratified else "percentile bootstrap"


def nest(flat: dict, class_names: Sequence[str] | None, n_classes: int) -> dict:
    """``{"auc": e, ..., "sensitivity/0": e}`` -> ``{"auc": e, ..., "per_class": {name: {...}}}``."""
    if class_names is None:
        class_names = [str(k) for k in range(n_classes)]
    elif len(class_names) != n_classes:
        raise UsageError(f"{len(class_names)} class names for {n_classes} classes")
    nested = {key: flat[key] for key in HEADLINE}
    nested["per_class"] = {
        name: {metric: flat[f"{metric}/{k}"] for metric in PER_CLASS if f"{metric}/{k}" in flat}
        for k, name in enumerate(class_names)}
    return nested


def metric_intervals(task: str, labels, scores, *, n_resamples: int = 2000, level: float = 0.95, seed: int = 0,
                     stratified: bool = True, class_names: Sequence[str] | None = None) -> dict:
    """Percentile bootstrap intervals of AUC, ACC, balanced accuracy and per-class metrics.

    Parameters
    ----------
    task : str
        ``"binary-class"``, ``"multi-class"``, ``"multi-label, binary-class"``
        or ``"ordinal-regression"``.
    labels : array (n, 1) or (n,) of int; (n, L) of 0/1 for multi-label
    scores : array (n, K) of probabilities (softmax, or sigmoid for multi-label)
    n_resamples : int
        Bootstrap resamples ``B``.
    level : float
        Confidence level of the two-sided interval, e.g. 0.95.
    seed : int
        Seed of ``numpy.random.default_rng``; equal seeds give equal intervals.
    stratified : bool
        Resample within each true class (default) so every class keeps its
        count; ``False`` resamples rows.  Multi-label tasks are always
        resampled by rows (see the module notes).
    class_names : sequence of str, optional
        Keys of ``per_class``; default ``"0"``, ``"1"``, ...

    Returns
    -------
    dict
        ``"auc"``, ``"acc"``, ``"balanced_acc"`` and ``"per_class"`` ->
        name -> ``"sensitivity"``, ``"specificity"`` (and ``"auc"`` except for
        binary tasks).  Each entry is ``{"estimate", "low", "high", "level",
        "method", "n_resamples", "n_dropped"}``: the estimate is the metric
        on the data as given (:func:`point_metrics`), ``low``/``high`` the
        percentile interval, ``n_dropped`` the resamples in which the metric
        was undefined and which were left out.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 2, size=(200, 1))
    >>> p = np.clip(0.3 * labels[:, 0] + 0.7 * rng.random(200), 0, 1)
    >>> result = metric_intervals("binary-class", labels, np.stack([1 - p, p], 1), n_resamples=500)
    >>> result["auc"]["low"] < result["auc"]["estimate"] < result["auc"]["high"]
    True
    >>> sorted(result["per_class"]["1"])
    ['sensitivity', 'specificity']
    """
    _check_resampling(n_resamples, level, seed)
    estimates = point_metrics(task, labels, scores)
    (values,) = bootstrap_distributions(task, labels, [scores], n_resamples=n_resamples, seed=seed,
                                        stratified=stratified)
    method = method_name(task, stratified)
    flat = {}
    for key, estimate in estimates.items():
        low, high, dropped = percentile_interval(values[key], level)
        flat[key] = {"estimate": estimate, "low": low, "high": high, "level": level, "method": method,
                     "n_resamples": n_resamples, "n_dropped": dropped}
    n_classes = sum(1 for key in estimates if key.startswith("sensitivity/"))
    return nest(flat, class_names, n_classes)


# ---------------------------------------------------------------- any statistic

# resamples x samples per chunk of resample indices (int64: 2 MiB)
_STATISTIC_CHUNK_ELEMENTS = 1 << 18


def resample_indices(n: int, n_resamples: int, *, seed: int = 0, strata=None):
    """Row indices of bootstrap resamples, a chunk ``(b, n)`` at a time.

    Without ``strata`` each resample draws ``n`` rows with replacement; with
    ``strata`` (one value per row, e.g. the true class) the rows of each
    stratum are drawn with replacement within that stratum, so every stratum
    keeps its count. The draws come from ``numpy.random.default_rng(seed)``
    in chunks whose size depends on ``n`` only: the same ``(n, n_resamples,
    seed, strata)`` always give the same resamples, whatever is computed on
    them (so statistics computed in separate calls are paired).

    >>> [chunk.shape for chunk in resample_indices(5, 3, seed=1)]
    [(3, 5)]
    >>> chunk, = resample_indices(4, 2, strata=[0, 1, 0, 1])
    >>> bool(np.isin(chunk[:, :2], [0, 2]).all() and np.isin(chunk[:, 2:], [1, 3]).all())
    True
    """
    _check_resampling(n_resamples, seed=seed)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UsageError(f"a bootstrap needs at least one sample, got n={n!r}")
    groups = None
    if strata is not None:
        strata = np.asarray(strata).reshape(-1)
        if strata.shape != (n,):
            raise UsageError(f"strata must hold one value per sample ({n}), got shape {strata.shape}")
        order = np.argsort(strata, kind="stable")
        bounds = np.flatnonzero(np.r_[True, strata[order][1:] != strata[order][:-1], True])
        groups = [order[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
    rng = np.random.default_rng(seed)
    step = max(1, min(n_resamples, _STATISTIC_CHUNK_ELEMENTS // n))
    for start in range(0, n_resamples, step):
        size = min(step, n_resamples - start)
        if groups is None:
            yield rng.integers(0, n, size=(size, n))
        else:
            yield np.concatenate([group[rng.integers(0, group.size, size=(size, group.size))] for group in groups],
                                 axis=1)


def bootstrap_statistic(statistic, arrays: Sequence, *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95,
                        strata=None, batched: bool = False, interval="percentile") -> dict:
    """Bootstrap interval of any statistic of per-sample arrays.

    The rows (first axis) of every array in ``arrays`` are resampled together
    (:func:`resample_indices`); the estimate is the statistic on the arrays as
    given, ``theta``, and with ``q(.)`` the quantiles of the resampled values
    ``theta*`` (NaN values left out) the interval is

    * ``"percentile"``: ``[q(alpha/2), q(1 - alpha/2)]``
      (:func:`percentile_interval`, ``alpha = 1 - level``);
    * ``"basic"`` (pivotal): ``[2 theta - q(1 - alpha/2), 2 theta - q(alpha/2)]``,
      which corrects for a bias of the estimator that the resamples repeat
      (the basic interval of Davison & Hinkley, 1997, ch. 5); such an entry
      also holds ``bias_corrected = 2 theta - mean(theta*)``. Use it for
      statistics whose plug-in estimate is biased, such as a binned
      calibration error (as Kumar et al., 2019, do), whose resampled values
      can lie wholly above the estimate.

    Parameters
    ----------
    statistic : callable
        ``statistic(*arrays)`` returns a float, or a dict of floats to get
        several statistics from the same resamples. With ``batched=True`` it
        receives every array with a leading resample axis, ``(b, n, ...)``,
        and returns arrays ``(b,)`` (or a dict of them): one call per chunk
        of resamples instead of one per resample.
    arrays : sequence of arrays, each with ``n`` rows
    n_resamples : int
    seed : int
        Seed of ``numpy.random.default_rng``; equal seeds give equal resamples.
    level : float
        Confidence level of the two-sided interval.
    strata : array (n,), optional
        Resample within each stratum (e.g. the true class).
    batched : bool
    interval : {"percentile", "basic"} or dict
        The interval of every statistic, or ``{key: kind}`` per key of the
        dict the statistic returns (keys not named are percentile).

    Returns
    -------
    dict
        ``{"estimate", "low", "high", "level", "method", "n_resamples",
        "n_dropped"}`` (the entries of :func:`metric_intervals`), or a dict of
        such dicts, one per key the statistic returns. Resamples where the
        statistic is NaN (undefined) are left out and counted in ``n_dropped``.

    >>> x = np.arange(10.0)
    >>> r = bootstrap_statistic(np.mean, [x], n_resamples=500, seed=0)
    >>> r["estimate"], bool(r["low"] < 4.5 < r["high"])
    (4.5, True)
    >>> r2 = bootstrap_statistic(lambda v: v.mean(axis=1), [x], n_resamples=500, seed=0, batched=True)
    >>> (r2["low"], r2["high"]) == (r["low"], r["high"])
    True
    >>> b = bootstrap_statistic(np.mean, [x], n_resamples=500, seed=0, interval="basic")
    >>> (b["low"], b["high"]) == (2 * 4.5 - r["high"], 2 * 4.5 - r["low"])
    True
    """
    _check_resampling(n_resamples, level, seed)
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise UsageError("bootstrap_statistic needs at least one array")
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if any(a.ndim == 0 or a.shape[0] != n for a in arrays):
        raise UsageError(f"every array must have the same number of rows, got {[a.shape for a in arrays]}")

    def evaluate(index: np.ndarray) -> dict:
        if batched:
            values = statistic(*(a[index] for a in arrays))
            return {key: np.asarray(v, dtype=np.float64).reshape(len(index)) for key, v in _as_dict(values).items()}
        rows = [_as_dict(statistic(*(a[row] for a in arrays))) for row in index]
        return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}

    estimate = {key: float(v[0]) for key, v in evaluate(np.arange(n)[None]).items()}
    parts = [evaluate(index) for index in resample_indices(n, n_resamples, seed=seed, strata=strata)]
    kinds = interval if isinstance(interval, dict) else {key: interval for key in estimate}
    result = {}
    for key, value in estimate.items():
        kind = kinds.get(key, "percentile")
        if kind not in ("percentile", "basic"):
            raise UsageError(f"unknown bootstrap interval {kind!r}; expected 'percentile' or 'basic'")
        values = np.concatenate([p[key] for p in parts])
        low, high, dropped = percentile_interval(values, level)
        method = f"{kind} bootstrap" + (" stratified" if strata is not None else "")
        entry = {"estimate": value, "low": low, "high": high, "level": level, "method": method,
                 "n_resamples": n_resamples, "n_dropped": dropped}
        if kind == "basic":
            valid = values[~np.isnan(values)]
            mean = float(valid.mean()) if valid.size else float("nan")
            entry.update(low=2 * value - high, high=2 * value - low, bias_corrected=2 * value - mean)
        result[key] = entry
    return result[_SCALAR] if set(result) == {_SCALAR} else result


_SCALAR = object()  # the key of a statistic that returns a single value


def _as_dict(values) -> dict:
    return values if isinstance(values, dict) else {_SCALAR: values}
