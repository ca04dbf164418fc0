"""Tests of the gradient-normalised-smoothness claim: the objective against finite differences,
the minimiser against the method itself, the local-contraction theory against special cases and
a plain eigenvalue computation, the rate measurements on hand-made sequences, the smoke chain."""

import numpy as np
import pytest

from replica.claims import grad_normalized_smoothness as gn
from replica.steps import run_chain

PARAMS = {
    "data_seed": 5,
    "n": 80,
    "dim": 6,
    "feature_cond": 100.0,
    "label_temp": 3.0,
    "l2": 1e-3,
    "rank": 2,
    "underscale": 0.1,
    "gamma0": 1.0,
    "tol": 1e-8,
    "iters": 60,
    "max_retries": 40,
    "linear_from": 5,
    "rate_window": 5,
}


@pytest.fixture(scope="module")
def problem():
    return gn.one_problem(PARAMS, 0)


def test_gradient_and_hessian_match_finite_differences(problem):
    x, y, mu = problem["x"], problem["y"], PARAMS["l2"]
    w = np.random.default_rng(0).normal(size=PARAMS["dim"])
    eps = 1e-6
    basis = np.eye(PARAMS["dim"])
    fd_grad = [
        (gn.loss(w + eps * e, x, y, mu) - gn.loss(w - eps * e, x, y, mu)) / (2 * eps) for e in basis
    ]
    np.testing.assert_allclose(gn.grad(w, x, y, mu), fd_grad, atol=1e-8)
    fd_hess = np.stack(
        [
            (gn.grad(w + eps * e, x, y, mu) - gn.grad(w - eps * e, x, y, mu)) / (2 * eps)
            for e in basis
        ]
    )
    np.testing.assert_allclose(gn.hessian(w, x, y, mu), fd_hess, atol=1e-7)


def test_scipy_minimiser_agrees_with_the_exact_hessian_method(problem):
    x, y, mu = problem["x"], problem["y"], PARAMS["l2"]
    w_star = gn.minimiser(x, y, mu)
    assert np.linalg.norm(gn.grad(w_star, x, y, mu)) < 1e-12
    run = gn.regularised_newton(x, y, {**PARAMS, "tol": 1e-12}, "exact", problem["random_psd"])
    assert run["grad_norm"][-1] <= 1e-12 * run["grad_norm"][0]
    # strongly convex (mu = 1e-3): |w - w*| <= |g| / mu
    np.testing.assert_allclose(run["w"], w_star, atol=1e-8)
    assert len(run["grad_norm"]) - 1 <= 20  # Newton-fast


def test_local_contraction_special_cases_and_plain_eigenvalues():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    h = a @ a.T + 0.5 * np.eye(5)
    assert gn.local_contraction(h, h) == pytest.approx(0.0, abs=1e-10)
    for c in (0.1, 0.8, 3.0):
        assert gn.local_contraction(h, c * h) == pytest.approx(abs(1 - 1 / c), rel=1e-9)
    d = np.diag(np.diag(h))
    plain = np.max(np.abs(np.linalg.eigvals(np.eye(5) - h @ np.linalg.inv(d))))  # I - H D^-1
    assert gn.local_contraction(h, d) == pytest.approx(plain, rel=1e-9)


def test_gd_contraction_formula():
    assert gn.gd_contraction(np.diag([1.0, 4.0, 9.0])) == pytest.approx(8.0 / 10.0)


def test_approximations_are_psd_and_lowrank_is_exact_at_full_rank(problem):
    x, y, mu = problem["x"], problem["y"], PARAMS["l2"]
    h = gn.hessian(np.zeros(PARAMS["dim"]), x, y, mu)
    for kind in gn.VALID + gn.CONTROLS:
        ht = gn.approximate_hessian(kind, h, PARAMS, problem["random_psd"], np.trace(h))
        assert np.linalg.eigvalsh(ht).min() >= -1e-12, kind
    full = gn.approximate_hessian("lowrank_diag", h, {**PARAMS, "rank": PARAMS["dim"]}, None, 0)
    np.testing.assert_allclose(full, h, atol=1e-12)


def test_rate_measurements_on_hand_made_sequences():
    q = 0.5
    norms = np.stack([q ** np.arange(11.0), np.r_[q ** np.arange(6.0), np.full(5, q**5)]])
    iters = np.array([10, 5])
    np.testing.assert_allclose(gn.overall_rate(norms, iters), [q, q])
    np.testing.assert_allclose(gn.local_rate(norms, iters, 4), [q, q])
    np.testing.assert_allclose(gn.linear_phase_r2(norms, iters, 2), [1.0, 1.0])
    wiggle = norms.copy()
    wiggle[0, 3::2] *= 10.0  # not a straight line any more
    assert gn.linear_phase_r2(wiggle, iters, 2)[0] < 0.99


def test_smoke_chain(tmp_path):
    result = run_chain("grad_normalized_smoothness", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]


def test_verdict_statistics_are_per_seed():
    """Two seeds by hand: every statistic is a list of two, 0/1 statistics per seed."""
    runs = {
        "exact": ([5, 6], [0.1, 0.1], [True, True], [1.0, 1.0], [0.0, 0.0]),
        "lowrank_diag": ([40, 50], [0.5, 0.6], [True, True], [0.99, 1.0], [0.6, 0.7]),
        "diag": ([60, 70], [0.7, 0.5], [True, False], [0.98, 0.97], [0.8, 0.6]),
        "first_order": ([200, 200], [0.99, 0.98], [False, False], [1.0, 1.0], [0.99, 0.99]),
        "underscaled": ([200, 200], [0.97, 0.98], [False, False], [1.0, 1.0], [0.9, 0.9]),
        "random_psd": ([200, 200], [0.99, 0.99], [False, True], [1.0, 1.0], [0.9, 0.9]),
    }
    keys = ("iters", "rate", "converged", "r2", "local_rate")
    methods = {k: dict(zip(keys, map(np.asarray, v), strict=True)) for k, v in runs.items()}
    q_lin = {
        "exact": [0.0, 0.0],
        "lowrank_diag": [0.5, 0.7],
        "diag": [0.8, 0.5],
        "underscaled": [9.0, 9.0],
        "random_psd": [5.0, 0.9],  # seed 1: the recursion says contracting
    }
    out = gn.verdict({"methods": methods}, {"q_lin": q_lin}, {})
    assert out["contracting_converged_fraction"] == pytest.approx([1.0, 3 / 4])
    assert out["noncontracting_converged_fraction"] == pytest.approx([0.0, 0.0])
    assert out["rate_ordered"] == [1.0, 0.0]  # seed 1: diag faster than low-rank
    assert out["valid_min_r2"] == pytest.approx([0.98, 0.97])
    assert out["diag_rate_ratio"] == pytest.approx([1.0, 1.2])
    assert out["exact_iters"] == [5.0, 6.0]
    assert all(len(v) == 2 for v in out.values())
