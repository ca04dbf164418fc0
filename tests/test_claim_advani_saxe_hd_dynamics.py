"""Tests for the Advani & Saxe claim: theory against independent computations, GD closed form
against literal GD, and the measurement code on hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from replica.claims import advani_saxe_hd_dynamics as claim


def mp_density(lam, alpha):
    lo, hi = (1 - math.sqrt(alpha)) ** 2, (1 + math.sqrt(alpha)) ** 2
    return math.sqrt(max((hi - lam) * (lam - lo), 0.0)) / (2 * math.pi * lam)


@pytest.mark.parametrize("alpha", [0.3, 0.8, 1.5, 3.0])
def test_mp_integrals_match_scipy_quad(alpha):
    lo, hi = (1 - math.sqrt(alpha)) ** 2, (1 + math.sqrt(alpha)) ** 2
    eta = 0.5 / hi
    steps = np.array([0.0, 3.0, 40.0, 500.0])
    signal, variance = claim.mp_integrals(alpha, eta, steps, n_nodes=2000)
    for k, s, v in zip(steps, signal, variance, strict=True):
        ref_s = integrate.quad(
            lambda x, k=k: mp_density(x, alpha) * (1 - eta * x) ** (2 * k), lo, hi, limit=400
        )[0]
        ref_v = integrate.quad(
            lambda x, k=k: mp_density(x, alpha) * (1 - (1 - eta * x) ** k) ** 2 / x,
            lo,
            hi,
            limit=400,
        )[0]
        assert s == pytest.approx(ref_s, rel=1e-6, abs=1e-12)
        assert v == pytest.approx(ref_v, rel=1e-6, abs=1e-12)
    # k = 0: the bulk holds mass min(1, alpha)
    assert signal[0] == pytest.approx(min(1.0, alpha), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.25, 0.6, 1.4, 4.0])
@pytest.mark.parametrize("noise,init", [(0.25, 0.0), (1.0, 1.0)])
def test_theory_reaches_closed_form_asymptote(alpha, noise, init):
    eta = claim.learning_rate(alpha, {"lr_factor": 0.5})
    late = claim.theory_curve(alpha, eta, np.array([1e7]), noise, init**2, 1.0, n_nodes=4000)
    assert late[0] == pytest.approx(claim.asymptotic_error(alpha, noise, init**2, 1.0), rel=1e-4)


def test_theory_matches_monte_carlo_over_random_matrices():
    """Average of the exact per-mode GD error over sampled X^T X spectra (N = 300)."""
    rng = np.random.default_rng(0)
    n, alpha, noise, init_var = 300, 0.6, 0.5, 1.0
    eta = claim.learning_rate(alpha, {"lr_factor": 0.5})
    steps = np.array([0.0, 5.0, 50.0, 2000.0])
    emp = []
    for _ in range(8):
        x = rng.standard_normal((int(alpha * n), n)) / math.sqrt(n)
        lam = np.clip(np.linalg.eigvalsh(x.T @ x), 0, None)
        lam[: n - x.shape[0]] = 0.0
        d = (1 - eta * lam)[:, None] ** steps
        live = lam > 0
        var = np.zeros_like(d)
        var[live] = (1 - d[live]) ** 2 / lam[live, None]
        emp.append(((init_var + 1.0) * d**2 + noise * var).mean(0) + noise)
    th = claim.theory_curve(alpha, eta, steps, noise, init_var, 1.0, n_nodes=2000)
    np.testing.assert_allclose(np.mean(emp, 0), th, rtol=0.03)


@pytest.mark.parametrize("covariance", ["isotropic", "powerlaw"])
@pytest.mark.parametrize("n_points", [12, 50])
def test_closed_form_gd_equals_literal_gd(covariance, n_points):
    n_dim = 30
    rng = np.random.default_rng(1)
    spec = claim.covariance_spectrum(covariance, n_dim, 1.0)
    x = torch.as_tensor(rng.standard_normal((2, n_points, n_dim)) * np.sqrt(spec / n_dim))
    eps = torch.as_tensor(rng.standard_normal((2, n_points)))
    teacher = torch.as_tensor(rng.standard_normal((2, n_dim)))
    init_dir = torch.as_tensor(rng.standard_normal((2, n_dim)))
    eta = claim.learning_rate(n_points / n_dim, {"lr_factor": 0.5}, float(spec.max()))
    basis = claim.gram_eigenbasis(x, eps)
    closed = claim.exact_gd_errors(
        basis, teacher, init_dir, spec, eta, np.array([0.0, 7.0, 25.0]), [0.0, 0.7], [0.0, 1.3]
    )
    for k_idx, k in enumerate([0, 7, 25]):
        for i, noise in enumerate([0.0, 0.7]):
            for j, init in enumerate([0.0, 1.3]):
                lit = claim.literal_gd_error(x, eps, teacher, init_dir, spec, eta, k, noise, init)
                np.testing.assert_allclose(closed[:, i, j, k_idx], lit, rtol=1e-9)


@pytest.mark.parametrize("n_points", [12, 50])
def test_ridge_closed_form_equals_literal_gd_with_weight_decay(n_points):
    n_dim = 30
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.standard_normal((2, n_points, n_dim)) / np.sqrt(n_dim))
    eps = torch.as_tensor(rng.standard_normal((2, n_points)))
    teacher = torch.as_tensor(rng.standard_normal((2, n_dim)))
    init_dir = torch.as_tensor(rng.standard_normal((2, n_dim)))
    eta = claim.learning_rate(n_points / n_dim, {"lr_factor": 0.5})
    basis = claim.gram_eigenbasis(x, eps)
    ks = [0, 7, 25]
    closed = claim.ridge_gd_errors(
        basis, teacher, init_dir, eta, np.array(ks, float), [0.25, 1.0], [0.0, 1.3], [0.25, 1.0]
    )
    ones = np.ones(n_dim)
    for k_idx, k in enumerate(ks):
        for i, (noise, gamma) in enumerate([(0.25, 0.25), (1.0, 1.0)]):
            for j, init in enumerate([0.0, 1.3]):
                lit = claim.literal_gd_error(
                    x, eps, teacher, init_dir, ones, eta, k, noise, init, gamma=gamma
                )
                np.testing.assert_allclose(closed[:, i, j, k_idx], lit, rtol=1e-9)


def test_bayes_ridge_expected_error_is_monotone_in_k():
    """Monte Carlo over teacher, init and noise at fixed X: with gamma = s_eps^2 / s_bar^2 the
    expected GD error decreases at every step (the ablation's theory), without it it rises."""
    rng = np.random.default_rng(4)
    n_dim, n_points, n_draw, noise = 60, 60, 4000, 0.25
    x = rng.standard_normal((n_points, n_dim)) / np.sqrt(n_dim)
    xs = torch.as_tensor(np.broadcast_to(x, (n_draw, n_points, n_dim)).copy())
    eps = torch.as_tensor(rng.standard_normal((n_draw, n_points)))
    teacher = torch.as_tensor(rng.standard_normal((n_draw, n_dim)))
    init_dir = torch.as_tensor(rng.standard_normal((n_draw, n_dim)))
    eta = claim.learning_rate(1.0, {"lr_factor": 0.5})
    steps = np.unique(np.round(np.geomspace(1, 1e5, 30)))
    basis = claim.gram_eigenbasis(xs, eps)
    ridge = claim.ridge_gd_errors(basis, teacher, init_dir, eta, steps, [noise], [1.0], [noise])
    plain = claim.exact_gd_errors(
        basis, teacher, init_dir, np.ones(n_dim), eta, steps, [noise], [1.0]
    )
    mean_ridge = ridge[:, 0, 0].mean(0).numpy()
    mean_plain = plain[:, 0, 0].mean(0).numpy()
    assert np.all(np.diff(mean_ridge) <= 1e-3 * mean_ridge[0])
    assert mean_plain[-1] - mean_plain.min() > 0.5 * mean_plain[0]


def test_frozen_subspace_keeps_initial_weights_exactly():
    """alpha < 1: after convergence the init effect is |P_null w0|^2 / N (brute force)."""
    rng = np.random.default_rng(2)
    n_dim, n_points = 40, 10
    x = torch.as_tensor(rng.standard_normal((1, n_points, n_dim)) / math.sqrt(n_dim))
    eps = torch.as_tensor(rng.standard_normal((1, n_points)))
    teacher = torch.as_tensor(rng.standard_normal((1, n_dim)))
    z = torch.as_tensor(rng.standard_normal((1, n_dim)))
    ones = np.ones(n_dim)
    eg = claim.exact_gd_errors(
        claim.gram_eigenbasis(x, eps), teacher, z, ones, 0.1, np.array([1e7]), [0.3], [0.0, 1.0]
    )[0, 0, :, 0]
    xm = x[0].numpy()
    null = np.eye(n_dim) - np.linalg.pinv(xm) @ xm
    zn, tn = null @ z[0].numpy(), null @ teacher[0].numpy()
    assert float(eg[1] - eg[0]) == pytest.approx((zn @ zn - 2 * zn @ tn) / n_dim, rel=1e-8)


def test_measure_and_verdict_on_hand_made_runs():
    params = {
        "noises": [0.0, 0.5],
        "init_scales": [0.0, 1.0],
        "alphas": [0.5, 2.0],
        "n_dim": 10,
        "main_noise": 0.5,
        "critical_band": [0.9, 1.1],
        "lr_factor": 0.5,
        "teacher_var": 1.0,
        "quad_nodes": 200,
        "k_max": 10,
        "n_checkpoints": 2,
    }
    steps = claim.step_grid(params)
    assert list(steps) == [0.0, 1.0, 10.0]
    errors = np.zeros((3, 2, 2, 2, 3))  # (seeds, alpha, noise, init, steps)
    errors[..., :] = [3.0, 2.0, 2.0]  # monotone: no overtraining
    errors[:, 0, 1, :, :] = [3.0, 1.0, 1.5]  # alpha 0.5, noisy: rises by 0.5 at the end
    errors[:, 0, 1, 1, -1] = [1.9, 2.0, 2.1]  # init 1: final 2.0 +- seed spread
    wd = np.zeros((3, 2, 1, 2, 3))
    wd[..., :] = [3.0, 2.0, 2.0]
    wd[1, 1, 0, 0, :] = [2.0, 1.0, 1.2]  # one seed rises by 0.1 of E_g(0)
    runs = {
        "covariance-isotropic": {
            "errors": errors,
            "errors_wd": wd,
            "steps": steps,
            "literal_gd_rel_gap": np.zeros(2),
        }
    }
    points = {"covariance-isotropic": {"covariance": "isotropic"}}
    m = claim.measure({}, runs, points, params)
    per = m["points"]["covariance-isotropic"]
    np.testing.assert_allclose(per["overtraining"]["noise-0.5__init-0.0"]["0.5"], [0.5] * 3)
    np.testing.assert_allclose(per["overtraining"]["noise-0.0__init-0.0"]["2"], [0.0] * 3)
    np.testing.assert_allclose(per["rel_overtraining"]["noise-0.5__init-0.0"]["0.5"], [0.5 / 3] * 3)
    np.testing.assert_allclose(per["init_effect"]["0.5"]["0.5"], [0.4, 0.5, 0.6])
    np.testing.assert_allclose(per["wd_rel_overtraining"]["noise-0.5__init-0.0"]["2"], [0, 0.1, 0])
    band = per["curves"]["noise-0.5__init-1.0"]["0.5"]
    assert band["mean"][-1] == pytest.approx(2.0)
    # Student-t interval with 2 degrees of freedom
    assert band["hi"][-1] - 2.0 == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert claim.peak_alpha(per, "noise-0.5__init-0.0", params["alphas"]) == 0.5
    np.testing.assert_array_equal(
        claim.per_seed_peak_alpha(per, "noise-0.5__init-0.0", params["alphas"]), [0.5] * 3
    )
    # per-seed deviations: equal to theory -> 0, 10 % above theory -> 0.1 at every point
    curves = claim.theory_curves(params, steps, 1.0)
    same = np.zeros_like(errors)
    for i, noise in enumerate(params["noises"]):
        for j, init in enumerate(params["init_scales"]):
            for a, alpha in enumerate(params["alphas"]):
                same[:, a, i, j] = curves[claim.combo_key(noise, init)][claim.alpha_key(alpha)]
    dev, labels = claim.relative_deviations(same, curves, params)
    assert dev.shape == (3, 4, 3) and len(labels) == 4
    np.testing.assert_allclose(dev, 0.0, atol=1e-12)
    dev, _ = claim.relative_deviations(same * 1.1, curves, params)
    np.testing.assert_allclose(dev, 0.1, rtol=1e-9)


def test_worst_point_picks_the_largest_seed_mean_deviation():
    values = np.array([[0.01, -0.20, 0.05], [0.03, -0.10, -0.05], [0.02, -0.15, 0.0]])
    worst, idx = claim.worst_point(values)
    assert idx == 1
    np.testing.assert_allclose(worst, [-0.20, -0.10, -0.15])


def test_smoke_chain_gives_a_verdict(tmp_path):
    from replica.steps import run_chain

    result = run_chain("advani_saxe_hd_dynamics", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
    names = {row["name"] for row in result["checks"] + result["controls"]}
    assert {"mp_theory_matches", "weight_decay_removes_overtraining"} <= names
    pre = {row["name"] for row in result["preconditions"]}
    assert "no_noise_no_overtraining" in pre
