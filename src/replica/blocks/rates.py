"""Rates from experiments: the exponent of an error in a sample size, one per seed."""

from __future__ import annotations

import numpy as np


def per_seed_loglog_slopes(sample_sizes, errors) -> list[float]:
    """Least-squares slope of log error against log n, one per seed: errors (n, seeds).
    An error of exactly 0 is floored at 1e-300 (a finite, very steep slope, not a NaN)."""
    logn = np.log(np.asarray(sample_sizes, float))
    loge = np.log(np.maximum(np.asarray(errors, float), 1e-300))
    return [float(v) for v in np.polyfit(logn, loge, 1)[0]]
