"""Progress bars for long work: drawn on a terminal, silent in logs and pipes."""
from __future__ import annotations

import sys


def progress(iterable=None, **kwargs):
    """tqdm that draws a bar on a terminal and stays silent in logs and pipes."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
