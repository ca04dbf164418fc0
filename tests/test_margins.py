"""The exact max-margin solvers against brute force and a general-purpose QP solver."""

import numpy as np
import pytest
from scipy.optimize import minimize

from replica.blocks import margins


def test_linf_lp_single_point_is_l1_norm():
    z = np.array([[0.5, -2.0, 1.5]])  # max_{|w|_inf<=1} z.w = ||z||_1
    gamma, w = margins.linf_max_margin(z)
    assert gamma == pytest.approx(4.0)
    np.testing.assert_allclose(w, np.sign(z[0]))
    assert margins.linf_max_margin(z, gamma_max=1.0)[0] == pytest.approx(1.0)


def test_linf_lp_matches_brute_force_grid_in_2d():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 2)) + np.array([2.0, 1.0])  # separable through the origin
    gamma, _ = margins.linf_max_margin(z)
    grid = np.linspace(-1, 1, 801)
    w = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    brute = np.max(np.min(w @ z.T, axis=1))
    assert gamma == pytest.approx(brute, abs=5e-3)
    assert gamma >= brute - 1e-12  # the LP is the true maximum


def test_linf_lp_tells_separable_from_not():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 15))
    y = rng.choice([-1.0, 1.0], size=10)
    assert margins.linf_max_margin(y[:, None] * x, gamma_max=1.0)[0] > 0  # d > n
    # the same point with both labels can never be separated
    x2 = np.vstack([x[:3], x[:3]])
    y2 = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    assert margins.linf_max_margin(y2[:, None] * x2, gamma_max=1.0)[0] <= 1e-9


def test_hard_margin_svm_matches_slsqp():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 20))  # d > n: separable for any labels
    y = rng.choice([-1.0, 1.0], size=12)
    z = y[:, None] * x
    w = margins.hard_margin_svm(z)
    res = minimize(
        lambda u: 0.5 * u @ u,
        np.zeros(20),
        jac=lambda u: u,
        constraints={"type": "ineq", "fun": lambda u: z @ u - 1},
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    assert np.allclose(w, res.x, atol=1e-5)
    assert np.min(z @ w) == pytest.approx(1.0, abs=1e-8)  # the margin constraint is tight
