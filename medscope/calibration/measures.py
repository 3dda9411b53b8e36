"""How well predicted probabilities match observed frequencies: ECE, Brier score, NLL.

Confidence and correctness (the inputs of the ECE) follow
:func:`predicted_confidence`:

* binary-class: ``p = probabilities[:, -1]``, prediction ``p > 0.5``,
  confidence ``max(p, 1 - p)`` (that of the predicted class);
* multi-class and ordinal-regression: top-1, confidence ``max_k p_k``;
* multi-label: every label on its own as a binary problem (as binary above);
  task-level numbers are the mean over labels of the per-label numbers.

The confidence, the bins, the ECE and the Brier score are those of
:mod:`medscope.metrics` (one definition for the project); this module checks
its inputs first (probabilities, not logits; labels in range) and adds the
negative log-likelihood. All numbers are unitless.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_expit, log_softmax

from medscope import metrics
from medscope.data import TASK_BINARY, TASK_MULTILABEL

# the binning and the ECE are the project's one definition (medscope.metrics), re-exported here
from medscope.metrics import bin_edges, expected_calibration_error, reliability_bins  # noqa: F401

from ._inputs import label_array, scores_matrix

DEFAULT_BINS = metrics.CALIBRATION_BINS
STRATEGIES = ("uniform", "quantile")


def predicted_confidence(task: str, probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """:func:`medscope.metrics.predicted_confidence` of checked inputs.

    Parameters
    ----------
    task : str
        A MedMNIST task (``medscope.data.TASK_*``).
    probabilities : array (n, K)
        Softmax outputs, or sigmoid outputs per label for multi-label tasks;
        logits, rows that do not sum to one and labels out of range are
        refused (:class:`~medscope.errors.UsageError`).
    labels : array (n, 1) of class indices, or (n, L) of 0/1 for multi-label.

    Returns
    -------
    confidence, correct : arrays (n,), or (n, L) for multi-label
        See the module docstring. The predictions are those of
        :func:`medscope.metrics.predictions`, so the mean of ``correct`` is the
        MedMNIST accuracy.

    >>> conf, ok = predicted_confidence("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]])
    >>> conf.round(2).tolist(), ok.tolist()
    ([0.8, 0.7], [True, False])
    """
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    confidence, correct = metrics.predicted_confidence(task, probs, y.reshape(len(probs), -1))
    return confidence, np.asarray(correct).reshape(confidence.shape)


def ece(task: str, probabilities, labels, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> float:
    """ECE of a task's predictions: one ECE, or the mean of the per-label ECEs for multi-label.

    >>> round(ece("multi-class", [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]], [[0], [1]], n_bins=10), 4)
    0.45
    """
    conf, ok = predicted_confidence(task, probabilities, labels)
    if task == TASK_MULTILABEL:
        return float(np.mean([expected_calibration_error(conf[:, j], ok[:, j], n_bins, strategy)
                              for j in range(conf.shape[1])]))
    return expected_calibration_error(conf, ok, n_bins, strategy)


def brier_score(task: str, probabilities, labels) -> float:
    """:func:`medscope.metrics.brier_score` of checked inputs (as :func:`predicted_confidence`).

    >>> round(brier_score("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]), 4)
    0.265
    >>> round(brier_score("multi-class", [[0.5, 0.3, 0.2]], [[0]]), 4)
    0.38
    """
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    return metrics.brier_score(task, probs, y)


def negative_log_likelihood(task: str, probabilities, labels) -> float:
    """Mean negative log-likelihood (natural log, nats per sample) of the labels.

    * multi-class and ordinal: ``mean_i -log p_{i, y_i}``;
    * binary: ``mean_i -[y_i log p_i + (1 - y_i) log(1 - p_i)]`` with
      ``p_i = probabilities[i, -1]`` (equal to the multi-class form when the
      two columns sum to 1);
    * multi-label: the binary form averaged over samples and labels.

    Probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the float64
    machine epsilon, as ``sklearn.metrics.log_loss`` does, so a confident
    mistake costs at most ``-log(eps) = 36.04`` nats. From logits,
    :func:`nll_from_logits` is exact and needs no clipping.

    >>> round(negative_log_likelihood("multi-class", [[0.5, 0.25, 0.25]], [[1]]), 4)
    1.3863
    """
    probs = scores_matrix(task, probabilities)
    y = label_array(task, labels, len(probs), probs.shape[1])
    eps = np.finfo(np.float64).eps
    if task in (TASK_MULTILABEL, TASK_BINARY):
        p = np.clip(probs if task == TASK_MULTILABEL else probs[:, -1], eps, 1.0 - eps)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p))))
    p_true = np.clip(probs[np.arange(len(y)), y], eps, 1.0 - eps)
    return float(np.mean(-np.log(p_true)))


def nll_from_logits(task: str, logits, labels, temperature=1.0) -> float:
    """Mean negative log-likelihood of the labels under ``logits / temperature``.

    Softmax tasks: ``mean_i -log softmax(z_i / T)_{y_i}``; multi-label:
    ``mean_{i,j} -[y_ij log s(z_ij / T_j) + (1 - y_ij) log(1 - s(z_ij / T_j))]``
    with ``s`` the sigmoid and ``T`` a scalar or one temperature per label.
    Computed with log-softmax / log-sigmoid, so it is exact for any logits.

    >>> round(nll_from_logits("multi-class", [[0.0, 0.0]], [[1]]), 4)  # log 2
    0.6931
    """
    z = scores_matrix(task, logits, "logits")
    y = label_array(task, labels, len(z), z.shape[1])
    z = z / np.asarray(temperature, dtype=np.float64)
    if task == TASK_MULTILABEL:
        return float(np.mean(-(y * log_expit(z) + (1 - y) * log_expit(-z))))
    return float(np.mean(-log_softmax(z, axis=1)[np.arange(len(y)), y]))


def calibration_summary(task: str, probabilities, labels, n_bins: int = DEFAULT_BINS) -> dict:
    """ECE (equal-width and equal-mass bins), Brier score and NLL of one split.

    Returns
    -------
    dict
        ``ece``, ``adaptive_ece``, ``brier``, ``nll``, ``n_bins`` and ``n``.
    """
    probs = scores_matrix(task, probabilities)
    return {"ece": ece(task, probs, labels, n_bins, "uniform"),
            "adaptive_ece": ece(task, probs, labels, n_bins, "quantile"),
            "brier": brier_score(task, probs, labels), "nll": negative_log_likelihood(task, probs, labels),
            "n_bins": int(n_bins), "n": len(probs)}
