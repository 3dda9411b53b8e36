"""Temperature scaling (Guo et al., 2017): one division of the logits, fitted on validation data.

Softmax tasks (binary, multi-class, ordinal) get one scalar ``T``:
``p = softmax(z / T)``. Multi-label tasks get one temperature per label:
``p_j = sigmoid(z_j / T_j)``. ``T`` minimises the mean negative
log-likelihood of the validation labels (:func:`medscope.calibration.measures.nll_from_logits`).
``T > 1`` softens over-confident predictions; the arg-max (and so the
multi-class accuracy) never changes, and neither does any AUC, since the
scores of each column keep their order.

How it is fitted
----------------
With ``b = 1 / T`` the NLL is a convex function of ``b``:
``f(b) = mean_i [logsumexp(b z_i) - b z_{i, y_i}]`` (softmax) or
``mean_i [log(1 + exp(b z_i)) - y_i b z_i]`` (sigmoid), both a log-sum-exp of
linear functions minus a linear one. So ``f'(b)`` is increasing and the
minimiser is its single root, found by Newton's method on ``b`` with the
exact first and second derivatives,

* softmax: ``f'(b) = mean_i (E_p[z_i] - z_{i, y_i})``, ``f''(b) = mean_i Var_p[z_i]``;
* sigmoid: ``f'(b) = mean_i (s(b z_i) - y_i) z_i``, ``f''(b) = mean_i s(1 - s) z_i^2``;

safeguarded by bisection (of ``log b``) inside a bracket where ``f'`` changes sign. It is
deterministic and converges to machine precision in a handful of steps. ``T``
is confined to ``[t_min, t_max]`` (default [0.01, 100]); when the optimum lies
outside (for example a validation set that the model separates perfectly,
where the NLL keeps falling as ``T -> 0``), the bound is returned and
``at_bound`` says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, softmax

from medscope.errors import UsageError
from medscope.data import TASK_MULTILABEL
from ._inputs import label_array, scores_matrix
from .measures import nll_from_logits

T_MIN, T_MAX = 0.01, 100.0
MAX_ITERATIONS = 200


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and what it did to the validation NLL.

    ``temperature`` is a float for softmax tasks and an array (L,) for
    multi-label tasks (then ``at_bound`` is an array too). ``nll_before`` /
    ``nll_after`` are mean NLLs in nats (over samples, and labels for
    multi-label) at ``T = 1`` and at the fitted ``T``; ``nll_*_per_label``
    hold the per-label values for multi-label tasks and are None otherwise.
    """

    task: str
    temperature: float | np.ndarray
    nll_before: float
    nll_after: float
    at_bound: bool | np.ndarray
    n: int
    nll_before_per_label: np.ndarray | None = None
    nll_after_per_label: np.ndarray | None = None


def _softmax_derivatives(z: np.ndarray, y: np.ndarray):
    z_true = z[np.arange(len(y)), y]

    def derivatives(b: float) -> tuple[float, float]:
        p = softmax(b * z, axis=1)
        mean_z = np.sum(p * z, axis=1)
        var_z = np.maximum(np.sum(p * z * z, axis=1) - mean_z ** 2, 0.0)
        return float(np.mean(mean_z - z_true)), float(np.mean(var_z))

    return derivatives


def _sigmoid_derivatives(z: np.ndarray, y: np.ndarray):
    def derivatives(b: float) -> tuple[float, float]:
        s = expit(b * z)
        return float(np.mean((s - y) * z)), float(np.mean(s * (1.0 - s) * z * z))

    return derivatives


def _root_of_increasing(derivatives, lo: float, hi: float) -> tuple[float, bool]:
    """Root in [lo, hi] of the increasing ``g`` given by ``derivatives(b) = (g(b), g'(b))``.

    Returns ``(b, at_bound)``; a bound when ``g`` has no sign change inside.
    """
    g_lo, _ = derivatives(lo)
    g_hi, _ = derivatives(hi)
    if g_lo >= 0.0 and g_hi <= 0.0:  # flat: the NLL does not depend on T
        return 1.0, False
    if g_lo >= 0.0:
        return lo, True
    if g_hi <= 0.0:
        return hi, True
    a, c = lo, hi  # g(a) < 0 < g(c)
    b = min(max(1.0, lo), hi)
    for _ in range(MAX_ITERATIONS):
        g, h = derivatives(b)
        if g == 0.0:
            return b, False
        if g < 0.0:
            a = b
        else:
            c = b
        step = -g / h if h > 0.0 else np.inf
        if abs(step) <= 1e-13 * b:  # converged: the next Newton step is below rounding
            return b + step, False
        candidate = b + step
        if not a < candidate < c:  # Newton would leave the bracket: bisect it (geometrically: b spans decades)
            candidate = math.sqrt(a * c)
        if c - a <= 1e-15 * c:
            return candidate, False
        b = candidate
    return b, False


def _check_bounds(t_min: float, t_max: float) -> None:
    if not 0.0 < t_min < t_max < np.inf:
        raise UsageError(f"temperature bounds must satisfy 0 < t_min < t_max, got {t_min}, {t_max}")


def fit_temperature(task: str, logits, labels, *, t_min: float = T_MIN, t_max: float = T_MAX) -> TemperatureFit:
    """Temperature(s) minimising the validation NLL (see the module docstring).

    Parameters
    ----------
    task : str
        A MedMNIST task.
    logits : array (n, K)
        Validation logits (pre-softmax, or pre-sigmoid for multi-label).
    labels : array (n, 1), or (n, L) of 0/1 for multi-label.
    t_min, t_max : float
        Range searched for ``T``.

    >>> fit = fit_temperature("multi-class", [[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], [[0], [0], [1], [1]])
    >>> round(fit.temperature, 4)  # accuracy 3/4 at confidence sigmoid(2 / T) = 3/4
    1.8205
    """
    z = scores_matrix(task, logits, "logits")
    y = label_array(task, labels, len(z), z.shape[1])
    if len(z) == 0:
        raise UsageError("temperature scaling needs at least one validation sample")
    _check_bounds(t_min, t_max)
    lo, hi = 1.0 / t_max, 1.0 / t_min
    if task == TASK_MULTILABEL:
        fits = [_root_of_increasing(_sigmoid_derivatives(z[:, j], y[:, j]), lo, hi) for j in range(z.shape[1])]
        temperature = np.array([1.0 / b for b, _ in fits])
        at_bound = np.array([bound for _, bound in fits])
        before = np.array([nll_from_logits(task, z[:, [j]], y[:, [j]]) for j in range(z.shape[1])])
        after = np.array([nll_from_logits(task, z[:, [j]], y[:, [j]], temperature[j]) for j in range(z.shape[1])])
        return TemperatureFit(task, temperature, float(before.mean()), float(after.mean()), at_bound, len(z),
                              before, after)
    b, at_bound = _root_of_increasing(_softmax_derivatives(z, y), lo, hi)
    temperature = 1.0 / b
    return TemperatureFit(task, float(temperature), nll_from_logits(task, z, y),
                          nll_from_logits(task, z, y, temperature), bool(at_bound), len(z))


def apply_temperature(task: str, logits, temperature) -> np.ndarray:
    """Probabilities of ``logits / T``: softmax, or sigmoid per label (``T`` scalar or (L,)).

    >>> apply_temperature("multi-class", [[2.0, 0.0]], 2.0).round(4).tolist()
    [[0.7311, 0.2689]]
    """
    z = scores_matrix(task, logits, "logits")
    t = np.asarray(temperature, dtype=np.float64)
    if np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise UsageError(f"temperatures must be positive and finite, got {temperature}")
    if task == TASK_MULTILABEL:
        if t.ndim and t.shape != (z.shape[1],):
            raise ValueError(f"expected one temperature per label ({z.shape[1]}), got shape {t.shape}")
        return expit(z / t)
    if t.ndim:
        raise ValueError(f"softmax tasks take one scalar temperature, got shape {t.shape}")
    return softmax(z / t, axis=1)
