"""The examples in the docstrings of medscope.calibration hold."""
from __future__ import annotations

import doctest

import pytest

from medscope.calibration import conformal, measures, selective, temperature, thresholds


@pytest.mark.parametrize("module", [conformal, measures, selective, temperature, thresholds],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
