"""Adjusting p-values for several comparisons."""
from __future__ import annotations

import numpy as np

from medscope.errors import UsageError


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``,

    .. math::

        \\tilde p_{(i)} = \\min\\Big(1,\\; \\max_{j \\le i} (m - j + 1)\\, p_{(j)}\\Big),

    monotone in ``i`` and capped at 1.  Rejecting every hypothesis with
    ``p~ <= alpha`` controls the family-wise error rate at ``alpha`` under
    any dependence (Holm 1979, Scand. J. Statist. 6:65-70).  Ties in the
    p-values get equal adjusted values.

    >>> [round(p, 10) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise UsageError(f"p-values must be a flat sequence, got shape {p.shape}")
    if p.size and (np.any(np.isnan(p)) or p.min() < 0 or p.max() > 1):
        raise UsageError("p-values must lie in [0, 1] (no NaN)")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(v) for v in adjusted]
