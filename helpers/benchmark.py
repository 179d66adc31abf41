"""Timing and scaling measurements for notebooks 07 and 08: medians of repeated runs, log-log slopes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from helpers import rehearsal


def median_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeat` runs after `warmup` runs (single runs vary by
    20-30% on a shared CPU; the median of several is stable enough to compare). A rehearsal of a
    GPU profile (helpers.rehearsal) times one run: its figures mean nothing, its code path runs."""
    if rehearsal.active():
        repeat, warmup = 1, 0
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scaling_exponent(sizes: Sequence[float], costs: Sequence[float]) -> float:
    """k in cost ~ size^k, from a least-squares line through (log size, log cost)."""
    if len(sizes) != len(costs) or len(sizes) < 2:
        raise ValueError("scaling_exponent needs at least two (size, cost) pairs of equal length")
    slope, _ = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(costs, float)), 1)
    return float(slope)
