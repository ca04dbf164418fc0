"""Tests of the optimistic_omd_sea claim: closed-form variances against Monte Carlo and a
brute-force sup over x, the exact comparator against scipy, the learners on hand-made
sequences, and the fitting helpers on known inputs."""

import numpy as np
import pytest
from scipy.optimize import minimize

from replica.claims import optimistic_omd_sea as claim
from replica.steps import run_chain

PARAMS = {"smooth": 1.0, "lam": 0.1, "grad_bound": 2.0, "rounds": 60, "n_checkpoints": 8}


def _sequence(rng, curv, theta0, s, a, k, rounds):
    """One draw of (xi_t, theta_t), t = 1..T, exactly as the learners see them."""
    on = (np.arange(1, rounds + 1) <= k)[:, None]
    xi = np.where(on, s, 0.0) * rng.standard_normal((rounds, len(curv)))
    theta = theta0 + np.where(on, a, 0.0) * rng.choice([-1.0, 1.0], size=(rounds, len(curv)))
    return xi, theta


@pytest.mark.parametrize("k", [1, 7, 40])
def test_variances_match_monte_carlo_and_brute_force_sup(k):
    rng = np.random.default_rng(0)
    curv, theta0 = np.linspace(0.2, 1.0, 3), claim.theta_zero(3)
    s, a, rounds = 0.3, 0.2, 40
    th = claim.variances(np.array([s]), np.array([a]), np.array([k]), curv, rounds)
    sig, big = [], []
    x_probe = claim.project(rng.normal(size=(50, 3)))
    for _ in range(1000):
        xi, theta = _sequence(rng, curv, theta0, s, a, k, rounds)
        sig.append(np.sum(xi**2))
        # grad F_t(x) - grad F_{t-1}(x) = -A (theta_t - theta_{t-1}) for every x: brute-force sup
        diffs = [
            np.max(np.sum((curv * (x_probe - theta[t]) - curv * (x_probe - theta[t - 1])) ** 2, -1))
            for t in range(1, rounds)
        ]
        big.append(np.sum(diffs))
    # sum of d k squared Gaussians: relative standard error sqrt(2 / (d k n_sims)); allow 4 of them
    assert np.mean(sig) == pytest.approx(th["sigma2"][0], rel=4 * np.sqrt(2 / (3 * k * 1000)))
    assert np.mean(big) == pytest.approx(th["Sigma2"][0], rel=0.03)
    assert th["sigma2_max"][0] == pytest.approx(3 * s**2)
    assert th["Sigma2_max"][0] == pytest.approx(a**2 * np.sum(curv**2) * (2 if k >= 2 else 1))


def test_sine_variation_matches_monte_carlo_and_brute_force_sup():
    """Slow-drift arm: Sigma^2_{1:T} against the mean over phases and signs of the brute-force
    sup_x |grad F_t(x) - grad F_{t-1}(x)|^2 (on probe points)."""
    d, rounds, period, a = 4, 50, 7.0, 0.3
    curv, theta0 = np.linspace(0.0, 1.0, d), claim.theta_zero(d)
    th = claim.variances(
        np.array([0.0, 0.0]),
        np.array([a, a]),
        np.array([rounds, rounds]),
        curv,
        rounds,
        np.array([1.0, 0.0]),
        period,
    )
    phase, direction = claim.slow_drift_draws(range(400), 1, d, "convex")
    probes = claim.project(np.random.default_rng(3).normal(size=(30, d)))
    t = np.arange(1, rounds + 1)
    totals, peak = [], 0.0
    for phi, v in zip(phase[:, 0], direction[:, 0], strict=True):
        theta = theta0 + a * np.sin(2 * np.pi * t / period + phi)[:, None] * v
        per_round = [
            np.max(np.sum((curv * (probes - theta[k]) - curv * (probes - theta[k - 1])) ** 2, -1))
            for k in range(1, rounds)
        ]
        totals.append(np.sum(per_round))
        peak = max(peak, max(per_round))
    # the phase average has relative spread ~ 1 / sqrt(2 * 400) around the closed form
    assert np.mean(totals) == pytest.approx(th["Sigma2"][0], rel=0.05)
    assert peak <= th["Sigma2_max"][0] * (1 + 1e-12)
    assert th["Sigma2"][1] == pytest.approx(2 * (rounds - 1) * a**2 * np.sum(curv**2))  # i.i.d.
    assert th["sigma2"][0] == 0.0


def test_no_hint_learner_is_ogd_with_the_same_step_rule():
    """omd_convex_nohint: x_t = x_hat_t, step from sum |g|^2 (textbook adaptive OGD loop)."""
    curv, theta0 = np.linspace(0.0, 1.0, 3), claim.theta_zero(3)
    params = {**PARAMS, "slow_period": 9.0}
    cfg = {
        "noise": np.array([0.0, 0.2]),
        "adv": np.array([0.1, 0.0]),
        "active": np.array([60, 60]),
        "sine": np.array([1.0, 0.0]),
    }
    run = claim.run_learners(["omd_convex_nohint"], curv, theta0, cfg, [5], params, "convex")
    rng = np.random.default_rng([5, 0])
    z = rng.standard_normal((2, 60, 3))
    phase, direction = claim.slow_drift_draws([5], 2, 3, "convex")
    for c in range(2):
        x, err, total = np.zeros(3), 0.0, 0.0
        for t in range(60):
            wave = np.sin(2 * np.pi * (t + 1) / 9.0 + phase[0, c]) * direction[0, c]
            theta = theta0 + (0.1 * wave if c == 0 else 0.0)
            xi = 0.2 * z[c, t] if c == 1 else np.zeros(3)
            eta = min(2 / np.sqrt(err), 0.25) if err > 0 else 0.25
            g = curv * (x - theta) + xi
            total += 0.5 * np.sum(curv * (x - theta) ** 2) + xi @ x
            x = claim.project(x - eta * g)
            err += np.sum(g**2)
        assert run["cum_loss"][0, 0, c, -1] == pytest.approx(total, rel=1e-12)
    assert claim.base_kind("omd_sc_nohint") == "omd_sc" and not claim.uses_hint("omd_sc_nohint")


def test_ball_quadratic_min_matches_scipy():
    rng = np.random.default_rng(1)
    for curv in (np.array([0.0, 0.5, 1.0]), np.array([0.3, 0.6, 1.0])):
        for scale in (0.1, 3.0):  # interior and boundary optima
            lin = scale * rng.normal(size=3)
            ours = claim.ball_quadratic_min(curv, np.array(2.0), lin[None], np.array([0.7]))[0]
            res = minimize(
                lambda x, c=curv, b=lin: float(x @ (c * x) - b @ x + 0.7),
                np.zeros(3),
                method="SLSQP",
                constraints=[{"type": "ineq", "fun": lambda x: 1 - x @ x}],
                options={"ftol": 1e-14, "maxiter": 500},
            )
            assert ours == pytest.approx(res.fun, abs=1e-7)
            assert ours <= res.fun + 1e-9


def test_project_and_step_sizes():
    x = np.array([[3.0, 4.0], [0.3, 0.4]])
    np.testing.assert_allclose(claim.project(x), [[0.6, 0.8], [0.3, 0.4]])
    err = np.array([[0.0], [16.0]])
    eta = claim.step_sizes("omd_convex", 5, err, PARAMS, 100)
    np.testing.assert_allclose(eta, [[0.25], [0.5 * 0.25 * 2]])  # min(D/sqrt(.), 1/(4L))
    assert claim.step_sizes("omd_sc", 10, err, PARAMS, 100)[0, 0] == pytest.approx(2 / (1 + 8))
    assert claim.step_sizes("ogd", 3, err, PARAMS, 100)[0, 0] == pytest.approx(2 / (2 * 10))


def test_learners_reproduce_a_textbook_loop_and_regret_is_exact():
    curv, theta0 = np.linspace(0.0, 1.0, 3), claim.theta_zero(3)
    cfg = {"noise": np.array([0.2]), "adv": np.array([0.1]), "active": np.array([60])}
    run = claim.run_learners(["omd_convex", "ogd"], curv, theta0, cfg, [5], PARAMS, "convex")
    rng = np.random.default_rng([5, 0])
    z = rng.standard_normal((1, 60, 3))
    signs = rng.choice([-1.0, 1.0], size=(1, 60, 3))
    xi, theta = 0.2 * z[0], theta0 + 0.1 * signs[0]
    for li, kind in enumerate(["omd_convex", "ogd"]):
        x_hat, hint, err, total = np.zeros(3), np.zeros(3), 0.0, 0.0
        for t in range(60):
            if kind == "ogd":
                eta = 2 / (2 * np.sqrt(60))
                x = x_hat
            else:
                eta = min(2 / np.sqrt(err), 0.25) if err > 0 else 0.25
                x = claim.project(x_hat - eta * hint)
            g = curv * (x - theta[t]) + xi[t]
            total += 0.5 * np.sum(curv * (x - theta[t]) ** 2) + xi[t] @ x
            x_hat = claim.project(x_hat - eta * g)
            err += np.sum((g - hint) ** 2) if kind != "ogd" else 0.0
            hint = g if kind != "ogd" else hint
        assert run["cum_loss"][li, 0, 0, -1] == pytest.approx(total, rel=1e-12)
    # regret at the end: learner loss minus the exact comparator (brute force over a grid)
    regret = claim.regret_curves(run, curv)[:, 0, 0, -1]

    def total_loss(x):
        return np.sum(0.5 * np.sum(curv * (x - theta) ** 2, -1) + xi @ x)

    grid = claim.project(np.random.default_rng(2).normal(size=(20000, 3)) * 0.6)
    best = min(total_loss(g) for g in grid)
    assert np.all(run["cum_loss"][:, 0, 0, -1] - regret <= best + 1e-9)
    assert best - (run["cum_loss"][0, 0, 0, -1] - regret[0]) < 0.05


def test_fitting_helpers_on_known_input():
    v = np.array([1.0, 10.0, 100.0])
    assert claim.loglog_slope(v, 3 * v**0.5) == pytest.approx(0.5)
    assert claim.loglog_slope(v, np.array([1.0, -1.0, 2.0])) is None
    slope, r2 = claim.linear_fit(np.log(v), 2 * np.log(v) + 1)
    assert slope == pytest.approx(2.0) and r2 == pytest.approx(1.0)
    samples = np.tile(3 * v**0.5, (5, 1)) * (1 + 0.01 * np.arange(5))[:, None]
    samples[2, 1] = -1.0  # one seed with a negative regret: undefined slope
    out = claim.per_seed(lambda m: claim.loglog_slope(v, m), samples, undefined=0.0)
    np.testing.assert_allclose(out, [0.5, 0.5, 0.0, 0.5, 0.5])
    assert claim.r_squared(v, np.ones(3)) is None


def test_smoke_chain_runs(tmp_path):
    result = run_chain("optimistic_omd_sea", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
