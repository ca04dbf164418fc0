"""Tests of the unnormalized_compositional claim: the quadrature NCE Hessian against finite
differences of an independently integrated loss and against closed-form special cases, the
population gradients, the step-count formula against exact GD, the measurements on hand-made
inputs, and the smoke chain."""

import numpy as np
import pytest
from scipy import integrate

from replica import steps
from replica.claims import unnormalized_compositional as claim

PARAMS = {"lr": 0.1, "eps": 0.05, "quad_nodes": 2001, "max_population_steps": 5000}


def nce_loss_scipy(theta, c, theta_star, noise_mean=0.0):
    """-E_P log sigma(G) - E_Q log(1 - sigma(G)) by adaptive quadrature (independent code)."""

    def integrand(x):
        g = (theta - noise_mean) * x - (theta**2 - noise_mean**2) / 2 - c
        p = np.exp(-((x - theta_star) ** 2) / 2) / np.sqrt(2 * np.pi)
        q = np.exp(-((x - noise_mean) ** 2) / 2) / np.sqrt(2 * np.pi)
        return p * np.logaddexp(0, -g) + q * np.logaddexp(0, g)

    lo, hi = min(0, theta_star, noise_mean) - 12, max(0, theta_star, noise_mean) + 12
    return integrate.quad(integrand, lo, hi, limit=200, epsabs=1e-13, epsrel=1e-12)[0]


@pytest.mark.parametrize("theta_star", [0.5, 2.0, 3.0])
def test_nce_hessian_matches_finite_differences_of_the_loss(theta_star):
    h = 1e-3
    f = lambda a, b: nce_loss_scipy(theta_star + a, b, theta_star)  # noqa: E731
    fd = np.array(
        [
            [
                (f(h, 0) - 2 * f(0, 0) + f(-h, 0)) / h**2,
                (f(h, h) - f(h, -h) - f(-h, h) + f(-h, -h)) / (4 * h * h),
            ],
            [0.0, (f(0, h) - 2 * f(0, 0) + f(0, -h)) / h**2],
        ]
    )
    fd[1, 0] = fd[0, 1]
    exact = claim.nce_hessian(theta_star, 0.0, 4001)
    assert np.allclose(exact, fd, rtol=2e-3, atol=2e-6)


def test_nce_hessian_special_cases():
    # data = noise: p q / (p + q) = p / 2 and H = I / 2
    assert np.allclose(claim.nce_hessian(0.0, 0.0, 4001), 0.5 * np.eye(2), atol=1e-10)
    assert np.allclose(claim.nce_hessian(4.0, 4.0, 4001), 0.5 * np.eye(2), atol=1e-10)
    lam = [np.linalg.eigvalsh(claim.nce_hessian(t, 0.0, 4001))[0] for t in (1.0, 2.0, 3.0, 4.0)]
    assert all(a > b for a, b in zip(lam, lam[1:], strict=False))  # flattens monotonically


def test_population_gradients_vanish_at_the_optimum_and_have_the_nll_form():
    x, w = claim.nodes(2.0, 4001)
    p, q = claim.normal_pdf(x, 2.0), claim.normal_pdf(x, 0.0)
    assert np.allclose(claim.nce_gradient(2.0, 0.0, x, w, p, q, 0.0), 0.0, atol=1e-10)
    for theta in (-1.0, 0.3, 2.5):
        assert claim.compositional_gradient(theta, x, w, p) == pytest.approx(theta - 2.0, abs=1e-9)
    # NCE gradient against a finite difference of the independent loss
    h = 1e-5
    g_theta, g_c = claim.nce_gradient(0.7, 0.2, x, w, p, q, 0.0)
    fd_theta = (nce_loss_scipy(0.7 + h, 0.2, 2.0) - nce_loss_scipy(0.7 - h, 0.2, 2.0)) / (2 * h)
    fd_c = (nce_loss_scipy(0.7, 0.2 + h, 2.0) - nce_loss_scipy(0.7, 0.2 - h, 2.0)) / (2 * h)
    assert (g_theta, g_c) == pytest.approx((fd_theta, fd_c), abs=1e-6)


def test_compositional_gd_step_count_is_exact():
    """theta_t = theta* (1 - (1 - eta)^t): the first t with (1 - eta)^t theta* < eps."""
    for t_star in (1.0, 4.0):
        count, _ = claim.population_gd(t_star, "compositional", PARAMS)
        expected = int(np.ceil(np.log(PARAMS["eps"] / t_star) / np.log(1 - PARAMS["lr"])))
        assert count == expected
    pred = claim.predicted_steps(np.array([1.0]), np.array([4.0]), 0.1, 0.05)
    assert pred[0] == pytest.approx(np.log(80) / -np.log(0.9))


def test_stochastic_runs_reach_the_target_and_record_first_hits():
    params = {**PARAMS, "batch": 256, "sgd_steps": 200, "scgd_beta": 0.1, "data_seed": 1}
    out = claim.stochastic_runs(0.5, params, [0, 1, 2])
    for name in ("nce", "compositional"):
        hits = out[f"hit_{name}"]
        assert (hits <= 200).all()
        trace = out[f"trace_{name}"]
        for s, t in enumerate(hits):
            assert abs(trace[t, s] - 0.5) < 0.05
            assert (np.abs(trace[:t, s] - 0.5) >= 0.05).all()


def test_verdict_on_hand_made_metrics():
    thetas = [0.5, 1.0, 2.0, 4.0]
    theory = {
        "nce_steps_predicted": [10.0, 20.0, 80.0, 1000.0],
        "nce_growth_predicted": 50.0,
        "log_lambda_min_vs_theta2_slope": -0.3,
    }
    metrics = {
        "theta_star": thetas,
        "population": {
            "steps_nce": [10, 20, 160, 2000],
            "steps_compositional": [5, 6, 7, 9],
            "steps_nce_q_equals_p": [5, 6, 8, 18],
        },
        "sgd": {"2": {"hit_nce": [50, 50, 10, 60], "hit_compositional": [5, 60, 5, 5]}},
    }
    st = claim.verdict(metrics, theory, {})
    assert st["nce_step_growth"] == 100.0
    assert st["nce_steps_vs_theory_log2"] == pytest.approx(1.0)
    assert st["compositional_step_growth"] == 1.5
    ratio = st["sgd_log2_step_ratio_at_2"]  # per seed log2(NCE steps / SCGD steps)
    assert ratio == pytest.approx([np.log2(10), np.log2(50 / 60), 1.0, np.log2(12)])
    assert np.mean(np.asarray(ratio) > 0) == 0.75  # 3 of 4 seeds: SCGD faster
    assert st["nce_step_growth_theory"] == 50.0
    assert st["near_noise_step_ratio"] == 2.0
    assert st["q_equals_p_step_ratio_at_4"] == 2.0


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("unnormalized_compositional", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
