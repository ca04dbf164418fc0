"""Tests of the temperature_moe_rates claim: the score against finite differences, the Fisher
information quadrature against Monte Carlo, the temperature gate's invariance and the tanh gate's
lack of it, the Hellinger quadrature against a closed form and scipy, the Cramer-Rao constant
against scipy's half-normal, the Fisher-scoring fit against scipy's optimiser, the losses and
slopes on hand-made inputs, the sampler, and the smoke chain."""

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from replica import steps
from replica.claims import temperature_moe_rates as claim

PARAMS = {
    "true_gate": {"beta1": 3.0, "beta0": 0.3, "tau": 0.5},
    "true_a": [0.5, -0.5],
    "true_b": [1.0, -1.0],
    "true_variance": 0.1,
    "variance_floor": 0.005,
    "quad_x": 48,
    "quad_y": 600,
    "y_range": [-5.0, 5.0],
    "damping": 1e-8,
    "max_halvings": 30,
    "scoring_iters": 300,
    "gradient_tol": 1e-10,
}
TRUTH = claim.true_parameters(PARAMS)


@pytest.mark.parametrize("family", ["linear", "tanh"])
def test_score_matches_finite_differences(family):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, 7), rng.normal(0, 1, 7)
    theta = TRUTH + 0.1 * rng.standard_normal(9)
    score = claim.log_likelihood_and_score(theta, x, y, family)[1]
    h = 1e-6
    for j in range(9):
        e = np.zeros(9)
        e[j] = h
        up = claim.log_likelihood_and_score(theta + e, x, y, family, False)
        down = claim.log_likelihood_and_score(theta - e, x, y, family, False)
        assert score[:, j] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-7)


def log_density_scipy(theta, x, y, family):
    """log p(y | x) written independently with scipy.stats."""
    u = theta[0] * x + theta[1]
    g = (np.tanh(u) if family == "tanh" else u) / theta[2]
    w = 1 / (1 + np.exp(-g))
    p1 = stats.norm.pdf(y, theta[3] * x + theta[4], np.sqrt(theta[5]))
    p2 = stats.norm.pdf(y, theta[6] * x + theta[7], np.sqrt(theta[8]))
    return np.log(w * p1 + (1 - w) * p2)


@pytest.mark.parametrize("family", ["linear", "tanh"])
def test_fisher_quadrature_matches_monte_carlo(family):
    x, y = claim.sample(TRUTH, family, 200_000, np.random.default_rng(1))
    ll, s = claim.log_likelihood_and_score(TRUTH, x, y, family)
    assert ll == pytest.approx(log_density_scipy(TRUTH, x, y, family), rel=1e-10, abs=1e-10)
    mc = s.T @ s / len(x)
    quad = claim.fisher_information(TRUTH, family, 48)
    # Monte Carlo error of each entry: sd of s_i s_j over sqrt(n)
    se = (s[:, :, None] * s[:, None, :]).std(0) / np.sqrt(len(x))
    assert np.all(np.abs(quad - mc) < 5 * se + 1e-9)


def test_temperature_gate_is_invariant_along_the_ray_and_tanh_is_not():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-1, 1, 50), rng.normal(0, 1, 50)
    for c in (0.3, 1.5, 4.0):
        scaled = claim.scaled_along_ridge(TRUTH, c)
        lin = claim.log_likelihood_and_score(scaled, x, y, "linear", False)
        assert lin == pytest.approx(claim.log_likelihood_and_score(TRUTH, x, y, "linear", False))
        tanh = claim.log_likelihood_and_score(scaled, x, y, "tanh", False)
        assert not np.allclose(tanh, claim.log_likelihood_and_score(TRUTH, x, y, "tanh", False))
    ray = np.array([*TRUTH[:3], 0, 0, 0, 0, 0, 0])
    lin_f = claim.fisher_information(TRUTH, "linear", 48)
    tanh_f = claim.fisher_information(TRUTH, "tanh", 48)
    assert np.linalg.norm(lin_f @ ray) < 1e-10 * np.linalg.norm(lin_f)
    # information along the ray: rounding-level for the linear gate, of order 1e-2 for tanh
    assert ray @ tanh_f @ ray / (ray @ ray) > 1e-4 * np.linalg.norm(tanh_f)


def equal_experts(mean, var):
    """Both experts N(mean, var) with slope 0: the mixture is that Gaussian whatever the gate."""
    return np.array([1.0, 0.0, 1.0, 0.0, mean, var, 0.0, mean, var])


@pytest.mark.parametrize(("m1", "v1", "m2", "v2"), [(0.0, 0.1, 0.3, 0.1), (0.2, 0.05, -0.4, 0.3)])
def test_hellinger_matches_the_gaussian_closed_form(m1, v1, m2, v2):
    h = claim.hellinger(equal_experts(m1, v1), equal_experts(m2, v2), "linear", "tanh", PARAMS)
    bc = np.sqrt(2 * np.sqrt(v1 * v2) / (v1 + v2)) * np.exp(-((m1 - m2) ** 2) / (4 * (v1 + v2)))
    assert h == pytest.approx(np.sqrt(1 - bc), rel=1e-6)


def test_hellinger_matches_scipy_for_two_mixtures():
    fit = TRUTH + np.array([0.4, -0.1, 0.05, 0.1, -0.05, 0.02, -0.1, 0.1, -0.02])

    def density(theta, x, y):  # scalar, written out independently of the module
        w = 1 / (1 + math.exp(-math.tanh(theta[0] * x + theta[1]) / theta[2]))
        n1 = math.exp(-((y - theta[3] * x - theta[4]) ** 2) / (2 * theta[5]))
        n2 = math.exp(-((y - theta[6] * x - theta[7]) ** 2) / (2 * theta[8]))
        return (w * n1 / math.sqrt(theta[5]) + (1 - w) * n2 / math.sqrt(theta[8])) / math.sqrt(
            2 * math.pi
        )

    def integrand(y, x):
        return 0.25 * (math.sqrt(density(fit, x, y)) - math.sqrt(density(TRUTH, x, y))) ** 2

    # h^2 = E_X [1/2 int (sqrt p - sqrt q)^2 dy] with x ~ U[-1, 1] (density 1/2): weight 1/4
    h2 = integrate.dblquad(integrand, -1, 1, -5, 5, epsabs=1e-11, epsrel=1e-8)[0]
    assert claim.hellinger(fit, TRUTH, "tanh", "tanh", PARAMS) ** 2 == pytest.approx(h2, rel=1e-5)


@pytest.mark.parametrize("family", ["linear", "tanh"])
def test_small_hellinger_is_the_fisher_quadratic_form(family):
    """h^2(theta + delta, theta) = delta^T I delta / 8 + O(delta^3): ties hellinger() to
    fisher_information(), two independent quadratures, and backs the sqrt(d / 8n) line."""
    delta = 1e-3 * np.array([1.0, -2.0, 0.5, 1.0, 1.0, 0.3, -1.0, 0.5, -0.2])
    fisher = claim.fisher_information(TRUTH, family, 48)
    h = claim.hellinger(TRUTH + delta, TRUTH, family, family, {**PARAMS, "quad_y": 2000})
    assert h**2 == pytest.approx(delta @ fisher @ delta / 8, rel=2e-2)


def test_cramer_rao_constant_is_the_half_normal_mean():
    fisher = np.array([[4.0, 1.0], [1.0, 2.0]])
    cov = np.linalg.inv(fisher)
    expected = [stats.halfnorm(scale=np.sqrt(cov[j, j])).mean() for j in range(2)]
    assert claim.cramer_rao_abs_errors(fisher, [0, 1]) == pytest.approx(expected, rel=1e-12)
    assert claim.cramer_rao_abs_errors(fisher, [1]) == pytest.approx(
        [stats.halfnorm(scale=np.sqrt(1 / 2.0)).mean()]
    )


@pytest.mark.parametrize(
    ("arm", "family"), [("activation", "tanh"), ("fixed_temperature", "linear")]
)
def test_fisher_scoring_reaches_scipy_maximum(arm, family):
    x, y = claim.sample(TRUTH, family, 600, np.random.default_rng(4))
    floor = PARAMS["variance_floor"]
    free = np.array(
        [0.0 if (i == claim.TAU and arm == "fixed_temperature") else 1.0 for i in range(9)]
    )
    start = claim.to_coordinates(TRUTH, floor) + 0.1 * (np.arange(9) % 3 - 1) * free
    coords, value, grad = claim.fisher_scoring(start[None], x[None], y[None], family, PARAMS, free)
    assert grad[0] < 1e-8

    def neg(c_free):
        c = start.copy()
        c[free > 0] = c_free
        theta = claim.to_natural(c, floor)
        return -log_density_scipy(theta, x, y, family).mean()

    best = optimize.minimize(
        neg,
        start[free > 0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40000, "maxfev": 40000},
    )
    assert -value[0] <= best.fun + 1e-9
    assert -value[0] == pytest.approx(best.fun, abs=1e-6)


def test_fits_start_from_the_same_restarts_at_every_n_and_arm():
    params = {**PARAMS, "data_seed": 5, "restarts": 2, "init_noise": 0.3}
    a = claim.restarts(params, [0, 1], "temperature")
    b = claim.restarts(params, [0, 1], "activation")
    c = claim.restarts(params, [0, 1], "fixed_temperature")
    assert np.array_equal(a, b)
    assert np.array_equal(np.delete(a, claim.TAU, -1), np.delete(c, claim.TAU, -1))
    assert np.all(c[..., claim.TAU] == np.log(TRUTH[claim.TAU]))


def test_losses_are_label_free_and_zero_at_truth():
    rng = np.random.default_rng(6)
    x, y = rng.uniform(-1, 1, 30), rng.normal(0, 1, 30)
    swapped = claim.swap_experts(TRUTH)
    for family in ("linear", "tanh"):  # the same density
        assert claim.log_likelihood_and_score(swapped, x, y, family, False) == pytest.approx(
            claim.log_likelihood_and_score(TRUTH, x, y, family, False)
        )
    assert claim.parameter_loss(swapped, TRUTH, list(range(9))) == 0
    off = TRUTH + np.array([0.1, 0, 0.05, 0, 0, 0, 0, 0.2, 0])
    assert claim.parameter_loss(claim.swap_experts(off), TRUTH, list(range(9))) == pytest.approx(
        0.35
    )
    assert claim.parameter_loss(off, TRUTH, [0, 1, 3, 4, 5, 6, 7, 8]) == pytest.approx(0.3)
    # along the ray the ratios are exact: only the experts count
    ray = claim.scaled_along_ridge(off, 2.0)
    assert claim.identified_loss(ray, TRUTH) == pytest.approx(
        abs(0.1 / 0.55 + 3 / 0.55 - 3 / 0.5) + abs(0.3 / 0.55 - 0.3 / 0.5) + 0.2
    )


def test_slopes_on_hand_made_inputs():
    n = np.array([1000.0, 16000.0])
    assert claim.log_corrected_slope(n) == pytest.approx(
        0.5 * np.log(np.log(n[1]) / n[1] / (np.log(n[0]) / n[0])) / np.log(16)
    )
    assert claim.inverse_log_slope(n) == pytest.approx(
        -np.log(np.log(n[1]) / np.log(n[0])) / np.log(16)
    )


def test_sampler_draws_the_model():
    x, y = claim.sample(TRUTH, "tanh", 200_000, np.random.default_rng(7))
    assert stats.kstest((x + 1) / 2, "uniform").pvalue > 1e-3
    # the conditional CDF of y given x, integrated against the empirical pairs: PIT uniform
    g = np.tanh(3.0 * x + 0.3) / 0.5
    w = 1 / (1 + np.exp(-g))
    pit = w * stats.norm.cdf(y, 0.5 * x + 1, np.sqrt(0.1)) + (1 - w) * stats.norm.cdf(
        y, -0.5 * x - 1, np.sqrt(0.1)
    )
    assert stats.kstest(pit, "uniform").pvalue > 1e-3


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("temperature_moe_rates", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]


def test_identified_cramer_rao_constant_from_the_unit_temperature_model():
    """beta / tau of the temperature gate are the slopes of the same model written with tau = 1:
    the Cramer-Rao constant of the identified part computed there, directly, must agree."""
    params = {**PARAMS, "sample_sizes": [1000, 2000]}
    th = claim.theory({}, params)
    unit = TRUTH.copy()
    unit[:2] = TRUTH[:2] / TRUTH[claim.TAU]
    unit[claim.TAU] = 1.0
    fisher = claim.fisher_information(unit, "linear", 48)
    slots = [0, 1, 3, 4, 5, 6, 7, 8]
    direct = claim.cramer_rao_abs_errors(fisher, slots).sum()
    assert th["cramer_rao_identified_constant"] == pytest.approx(direct, rel=1e-8)
    assert th["fisher_min_relative"]["temperature"] < 1e-12
    assert th["ridge_alignment"] == pytest.approx(1.0, abs=1e-9)
