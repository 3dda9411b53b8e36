"""medscope.stats.multiplicity: Holm-Bonferroni adjusted p-values."""
import doctest

import numpy as np
import pytest

from medscope.errors import UsageError
from medscope.stats import multiplicity
from medscope.stats.multiplicity import holm


def test_doctests():
    assert doctest.testmod(multiplicity).failed == 0


def test_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_capped_at_one_and_ties_share_a_value():
    # sorted: 0.01 x 3 = 0.03; 0.6 x 2 = 1.2 -> 1; 0.7 x 1 = 0.7 -> raised to 1.2 -> 1
    assert holm([0.6, 0.7, 0.01]) == pytest.approx([1.0, 1.0, 0.03])
    # sorted: 0.01 x 3 = 0.03; 0.4 x 2 = 0.8; 0.5 x 1 = 0.5 -> raised to 0.8
    assert holm([0.5, 0.4, 0.01]) == pytest.approx([0.8, 0.8, 0.03])
    assert holm([0.02, 0.02, 0.5]) == pytest.approx([0.06, 0.06, 0.5])


def test_single_and_empty():
    assert holm([0.037]) == [0.037]
    assert holm([]) == []


def test_adjusted_values_keep_the_order_of_the_raw_values_and_never_shrink():
    p = np.random.default_rng(0).random(50) ** 3
    adjusted = np.array(holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)


@pytest.mark.parametrize("bad", [[0.1, 1.2], [-0.1], [np.nan], [[0.1, 0.2]]])
def test_bad_p_values_are_a_usage_error(bad):
    with pytest.raises(UsageError):
        holm(bad)
