"""The per-seed log-log slope against the closed-form least-squares slope and exact power laws."""

import numpy as np

from replica.blocks.rates import per_seed_loglog_slopes


def test_exact_power_laws_give_their_exponents():
    n = np.array([100, 200, 400, 800, 1600])
    errors = np.stack([3.0 * n**-0.5, 0.2 * n**-1.0, np.full(len(n), 7.0)], axis=1)
    assert np.allclose(per_seed_loglog_slopes(n, errors), [-0.5, -1.0, 0.0], atol=1e-12)


def test_slopes_equal_the_closed_form_least_squares_slope():
    rng = np.random.default_rng(0)
    n = np.array([50, 120, 300, 900])
    errors = np.exp(rng.normal(size=(4, 6)))
    x, y = np.log(n), np.log(errors)
    xc = x - x.mean()
    closed = (xc[:, None] * (y - y.mean(0))).sum(0) / (xc**2).sum()
    assert np.allclose(per_seed_loglog_slopes(n, errors), closed, atol=1e-12)


def test_a_zero_error_gives_a_finite_slope():
    slopes = per_seed_loglog_slopes([10, 100], np.array([[1.0], [0.0]]))
    assert np.isfinite(slopes[0]) and slopes[0] < -100
