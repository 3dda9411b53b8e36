"""Numbers as the report page and the model card write them (one way for both)."""
from __future__ import annotations

import datetime as _dt
import math

from ..report_text import number_text, percent_text

__all__ = ["number_text", "percent_text", "interval_text", "duration_text", "size_text", "wilson_interval",
           "title_text", "time_text"]

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def interval_text(interval: dict | None, digits: int = 3) -> str:
    """``[low, high]`` of an interval record (``{"estimate", "low", "high", "method"}``), or ''.

    >>> interval_text({"estimate": 0.8, "low": 0.71234, "high": 0.8789, "method": "bootstrap"})
    '[0.712, 0.879]'
    >>> interval_text(None)
    ''
    """
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return ""
    return f"[{number_text(interval['low'], digits)}, {number_text(interval['high'], digits)}]"


def duration_text(seconds: float | None) -> str:
    """Seconds as ``"42 s"``, ``"4 min 12 s"`` or ``"2 h 05 min"``; 'n/a' when unknown.

    >>> duration_text(41.6), duration_text(252), duration_text(7500), duration_text(None)
    ('42 s', '4 min 12 s', '2 h 05 min', 'n/a')
    """
    if seconds is None or seconds != seconds:
        return "n/a"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def size_text(n_bytes: float | None) -> str:
    """A byte count in kB (below 1 MB) or MB, decimal units.

    >>> size_text(812_345), size_text(3_456_789), size_text(None)
    ('812 kB', '3.46 MB', 'n/a')
    """
    if n_bytes is None:
        return "n/a"
    if n_bytes < 1e6:
        return f"{n_bytes / 1e3:.0f} kB"
    return f"{n_bytes / 1e6:.2f} MB"


def wilson_interval(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials.

    centre = (p + z²/2n) / (1 + z²/n), half width = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)
    (Wilson, 1927). Used only to say how wide an accuracy's interval is on a
    test split of ``n`` images when the run records no interval of its own.

    >>> low, high = wilson_interval(0.8, 100)
    >>> round(low, 4), round(high, 4)
    (0.7112, 0.8666)
    """
    if n <= 0:
        return (math.nan, math.nan)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - half, centre + half)


def title_text(key: str) -> str:
    """A snake_case key as words: ``label_smoothing`` -> ``label smoothing``.

    >>> title_text("warmup_epochs")
    'warmup epochs'
    """
    return key.replace("_", " ")


def time_text(stamp: str | None) -> str:
    """An ISO 8601 time stamp as ``YYYY-MM-DD HH:MM`` with its UTC offset; other text unchanged.

    >>> time_text("2026-03-02T14:05:09+01:00"), time_text("2026-03-02T14:05:09+00:00"), time_text(None)
    ('2026-03-02 14:05 (UTC+01:00)', '2026-03-02 14:05 (UTC)', 'n/a')
    """
    if not stamp:
        return "n/a"
    try:
        moment = _dt.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return str(stamp)
    offset = moment.strftime("%z")
    zone = "" if not offset else (" (UTC)" if offset == "+0000" else f" (UTC{offset[:3]}:{offset[3:]})")
    return moment.strftime("%Y-%m-%d %H:%M") + zone
