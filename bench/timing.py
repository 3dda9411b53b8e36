"""Timing helpers shared by the bench scripts."""
from __future__ import annotations

import statistics
import time


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, the contenders alternating so load spikes hit all of them.

    Each function runs once first as a warm-up (allocations, caches, lazy imports).
    """
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
