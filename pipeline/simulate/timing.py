"""When queries arrive: diurnal human traffic, steady machine traffic, bounded batch runs.

People work in their own time zone, less at weekends, and in bursts (hour-to-hour rates
vary more than Poisson); scripts run at a steady rate around the clock. All functions
return sorted epoch-millisecond arrays inside ``[start_ms, end_ms)``.
"""
from __future__ import annotations

import numpy as np

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# 2026-03-02T00:00:00Z, a Monday: simulations start here so weekends fall on days 5-6.
SIM_START_MS = 1_772_409_600_000


def _raw_profile(h: np.ndarray) -> np.ndarray:
    return (0.06 + np.exp(-0.5 * ((h - 10.5) / 2.0) ** 2)
            + 0.85 * np.exp(-0.5 * ((h - 15.5) / 2.3) ** 2)
            + 0.25 * np.exp(-0.5 * ((h - 21.0) / 1.5) ** 2))


_PROFILE_MEAN = float(_raw_profile(np.arange(24) + 0.5).mean())


def diurnal_profile(local_hour: np.ndarray) -> np.ndarray:
    """Relative activity by local hour (mean 1): morning and afternoon peaks, quiet nights."""
    return _raw_profile(np.asarray(local_hour, dtype=float)) / _PROFILE_MEAN


def human_times(rng: np.random.Generator, per_day: float, start_ms: int, end_ms: int,
                tz_hours: int = 0, burstiness: float = 0.6) -> np.ndarray:
    """Diurnal, weekly and bursty arrivals averaging ``per_day`` on a weekday-weighted day."""
    first = start_ms // HOUR_MS
    hours = np.arange(first, -(-end_ms // HOUR_MS))
    local = hours + tz_hours
    dow = ((local * HOUR_MS - SIM_START_MS) // DAY_MS) % 7
    lam = (per_day / 24.0) * diurnal_profile(local % 24 + 0.5) * np.where(dow >= 5, 0.35, 1.0)
    lam = lam * rng.lognormal(-burstiness ** 2 / 2, burstiness, len(hours))
    counts = rng.poisson(lam)
    ts = np.repeat(hours * HOUR_MS, counts) + rng.integers(0, HOUR_MS, counts.sum())
    ts = ts[(ts >= start_ms) & (ts < end_ms)]
    return np.sort(ts)


def machine_times(rng: np.random.Generator, per_day: float, start_ms: int,
                  end_ms: int) -> np.ndarray:
    """A steady Poisson stream (scripts, workers) at ``per_day`` around the clock."""
    n = rng.poisson(per_day * (end_ms - start_ms) / DAY_MS)
    return np.sort(rng.integers(start_ms, max(end_ms, start_ms + 1), n))


def paced_times(rng: np.random.Generator, n: int, per_second: float,
                start_ms: int) -> np.ndarray:
    """``n`` back-to-back requests at about ``per_second`` (a batch job until it is done)."""
    gaps = rng.exponential(1000.0 / per_second, n)
    return start_ms + np.cumsum(gaps).astype(np.int64)
