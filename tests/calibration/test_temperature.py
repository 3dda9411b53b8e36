"""medscope.calibration.temperature: the fitted T is the minimiser of the validation NLL."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_expit, log_softmax, softmax

from medscope.calibration import temperature
from medscope.errors import UsageError
from medscope.data import TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL


def softmax_task_data(seed: int, n: int, k: int, overconfidence: float):
    """Logits ``overconfidence`` times sharper than the distribution the labels come from."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, k)) * 1.5
    labels = np.array([rng.choice(k, p=p) for p in softmax(true_logits, axis=1)])
    return true_logits * overconfidence, labels[:, None]


def reference_temperature_softmax(logits, labels) -> float:
    """Direct bounded minimisation of the NLL over log T with scipy."""
    rows = np.arange(len(labels))

    def nll(log_t):
        return -np.mean(log_softmax(logits / np.exp(log_t), axis=1)[rows, labels[:, 0]])

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.01), np.log(100)), method="bounded",
                                        options={"xatol": 1e-10}).x))


def reference_temperature_sigmoid(z, y) -> float:
    def nll(log_t):
        scaled = z / np.exp(log_t)
        return -np.mean(y * log_expit(scaled) + (1 - y) * log_expit(-scaled))

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.01), np.log(100)), method="bounded",
                                        options={"xatol": 1e-10}).x))


@pytest.mark.parametrize("task, k, overconfidence, seed", [
    (TASK_MULTICLASS, 5, 2.5, 0), (TASK_MULTICLASS, 11, 0.6, 1), (TASK_BINARY, 2, 3.0, 2), (TASK_ORDINAL, 5, 1.7, 3),
])
def test_softmax_temperature_agrees_with_a_direct_scipy_minimisation(task, k, overconfidence, seed):
    logits, labels = softmax_task_data(seed, 2000, k, overconfidence)
    fit = temperature.fit_temperature(task, logits, labels)
    assert fit.temperature == pytest.approx(reference_temperature_softmax(logits, labels), rel=1e-4)
    # the labels come from logits / overconfidence: T recovers the factor (up to sampling noise)
    assert fit.temperature == pytest.approx(overconfidence, rel=0.15)
    assert not fit.at_bound and fit.n == 2000
    rows = np.arange(len(labels))
    assert fit.nll_before == pytest.approx(-np.mean(log_softmax(logits, axis=1)[rows, labels[:, 0]]), rel=1e-12)
    assert fit.nll_after == pytest.approx(
        -np.mean(log_softmax(logits / fit.temperature, axis=1)[rows, labels[:, 0]]), rel=1e-12)
    assert fit.nll_after < fit.nll_before


def test_multilabel_fits_one_temperature_per_label():
    rng = np.random.default_rng(4)
    true_logits = rng.normal(size=(3000, 4)) * 2.0
    labels = (rng.random(true_logits.shape) < 1.0 / (1.0 + np.exp(-true_logits))).astype(np.int64)
    factors = np.array([0.5, 1.0, 2.0, 4.0])
    logits = true_logits * factors
    fit = temperature.fit_temperature(TASK_MULTILABEL, logits, labels)
    expected = [reference_temperature_sigmoid(logits[:, j], labels[:, j]) for j in range(4)]
    np.testing.assert_allclose(fit.temperature, expected, rtol=1e-4)
    np.testing.assert_allclose(fit.temperature, factors, rtol=0.15)
    assert fit.temperature.shape == (4,) and not fit.at_bound.any()
    assert fit.nll_after_per_label.shape == (4,) and np.all(fit.nll_after_per_label <= fit.nll_before_per_label)
    assert fit.nll_after == pytest.approx(fit.nll_after_per_label.mean())


def test_closed_form_case():
    # three right and one wrong prediction, all at confidence sigmoid(2 / T): the NLL is minimal
    # where that confidence equals the accuracy 3/4, i.e. 2 / T = log 3
    logits = [[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 2.0]]
    fit = temperature.fit_temperature(TASK_MULTICLASS, logits, [[0], [0], [1], [1]])
    assert fit.temperature == pytest.approx(2.0 / np.log(3.0), rel=1e-12)
    assert fit.nll_after == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)), rel=1e-12)


def test_separable_validation_data_stops_at_the_lower_bound():
    logits = [[3.0, 0.0], [0.0, 3.0]]
    fit = temperature.fit_temperature(TASK_BINARY, logits, [[0], [1]], t_min=0.05)
    assert fit.at_bound and fit.temperature == pytest.approx(0.05)


def test_logits_worse_than_uniform_stop_at_the_upper_bound():
    fit = temperature.fit_temperature(TASK_MULTICLASS, [[3.0, 0.0], [0.0, 3.0]], [[1], [0]], t_max=50.0)
    assert fit.at_bound and fit.temperature == pytest.approx(50.0)


def test_constant_logits_leave_t_at_one():
    fit = temperature.fit_temperature(TASK_MULTICLASS, np.ones((5, 3)), [[0], [1], [2], [0], [1]])
    assert fit.temperature == 1.0 and not fit.at_bound and fit.nll_after == pytest.approx(np.log(3))


def test_apply_temperature():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    probs = temperature.apply_temperature(TASK_MULTICLASS, logits, 2.0)
    np.testing.assert_allclose(probs, softmax(logits / 2.0, axis=1))
    assert (probs.argmax(1) == logits.argmax(1)).all()
    multi = temperature.apply_temperature(TASK_MULTILABEL, logits, [1.0, 2.0, 4.0])
    np.testing.assert_allclose(multi, 1.0 / (1.0 + np.exp(-logits / [1.0, 2.0, 4.0])))


def test_bad_input_is_refused():
    with pytest.raises(UsageError, match="positive"):
        temperature.apply_temperature(TASK_MULTICLASS, [[0.0, 1.0]], 0.0)
    with pytest.raises(ValueError, match="one scalar"):
        temperature.apply_temperature(TASK_MULTICLASS, [[0.0, 1.0]], [1.0, 2.0])
    with pytest.raises(UsageError, match="unknown task"):
        temperature.fit_temperature("regression", [[0.0, 1.0]], [[0]])
    with pytest.raises(UsageError, match="at least one"):
        temperature.fit_temperature(TASK_MULTICLASS, np.zeros((0, 3)), np.zeros((0, 1)))
    with pytest.raises(UsageError, match="bounds"):
        temperature.fit_temperature(TASK_MULTICLASS, [[0.0, 1.0]], [[0]], t_min=2.0, t_max=1.0)


@pytest.mark.parametrize("scale", [0.03, 0.3, 8.0, 60.0])
def test_optimum_far_from_one_is_found_as_exactly(scale):
    logits, labels = softmax_task_data(5, 1500, 6, 1.0)
    fit = temperature.fit_temperature(TASK_MULTICLASS, logits * scale, labels)
    assert not fit.at_bound
    assert fit.temperature == pytest.approx(reference_temperature_softmax(logits * scale, labels), rel=1e-6)
