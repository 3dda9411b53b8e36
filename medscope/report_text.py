"""Numbers and labels as text, the same way in every CSV and Markdown report."""
from __future__ import annotations

import numpy as np


def label_text(label) -> str:
    """A label row as text: the class index, or the multi-label 0/1 vector joined by ';'.

    >>> label_text(np.array([2])), label_text(np.array([0, 1, 1]))
    ('2', '0;1;1')
    """
    label = np.asarray(label).reshape(-1)
    return str(int(label[0])) if label.size == 1 else ";".join(str(int(v)) for v in label)


def number_text(value, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or 'n/a' for None and NaN.

    >>> number_text(0.12345), number_text(float("nan"))
    ('0.123', 'n/a')
    """
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def percent_text(value) -> str:
    """A fraction as a whole percentage, or 'n/a' for None and NaN.

    >>> percent_text(0.256), percent_text(None)
    ('26%', 'n/a')
    """
    return "n/a" if value is None or value != value else f"{100 * value:.0f}%"
