"""Tests of the ambient_noisy_data_value claim: the Fisher information against closed forms,
a second formula (minus the expected Hessian by finite differences) and Monte Carlo; the W2
metric tensor against W2 computed from quantiles; the Cramer-Rao worth of a noisy sample against
the k = 1 closed form; the quantiles against scipy; the estimator's gradient and Hessian against
finite differences and its fits against the weighted mean (k = 1) and stationarity (k = 4)."""

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from replica.claims import ambient_noisy_data_value as claim

MEANS4 = claim.true_means(4, 3.0)


def log_density(x, means, scale):
    return np.log(claim.component_densities(x, means, scale).sum(1))


# ----------------------------------------------------------------------------- theory
@pytest.mark.parametrize("scale", [1.0, 1.5, 3.2])
def test_fisher_information_of_one_gaussian_is_one_over_variance(scale):
    info = claim.fisher_information(np.array([0.7]), scale)
    assert info.shape == (1, 1)
    assert np.isclose(info[0, 0], 1 / scale**2, rtol=1e-9)


@pytest.mark.parametrize("scale", [1.0, np.sqrt(1 + 0.7**2), np.sqrt(10.0)])
def test_fisher_information_equals_minus_expected_hessian(scale):
    """Second formula: I = -E[d^2 log p / dmu dmu^T], the Hessian by central differences."""
    grid, dx = claim.quadrature_grid(MEANS4, scale)
    density = np.exp(log_density(grid, MEANS4, scale))
    h, k = 1e-4, len(MEANS4)
    hessian = np.zeros((k, k))
    for j in range(k):
        for m in range(k):
            ej, em = np.eye(k)[j] * h, np.eye(k)[m] * h
            f = [log_density(grid, MEANS4 + a + b, scale) for a, b in ((ej, em), (ej, -em))]
            g = [log_density(grid, MEANS4 - ej + b, scale) for b in (em, -em)]
            second = (f[0] - f[1] - g[0] + g[1]) / (4 * h * h)
            hessian[j, m] = (density * second).sum() * dx
    assert np.allclose(claim.fisher_information(MEANS4, scale), -hessian, atol=2e-5)


def test_fisher_information_matches_monte_carlo():
    rng = np.random.default_rng(0)
    scale = 1.8
    x = MEANS4[rng.integers(0, 4, 400_000)] + scale * rng.standard_normal(400_000)
    comp = claim.component_densities(x, MEANS4, scale)
    score = comp * (x[:, None] - MEANS4) / scale**2 / comp.sum(1, keepdims=True)
    mc = score.T @ score / len(x)
    exact = claim.fisher_information(MEANS4, scale)
    assert np.allclose(mc, exact, rtol=0.03, atol=3e-4)  # Monte Carlo error about 1 %


def test_w2_metric_of_one_gaussian_is_one():
    assert np.isclose(claim.w2_metric(np.array([-0.3]))[0, 0], 1.0, rtol=1e-9)


@pytest.mark.parametrize("direction", [[1, 0, 0, 0], [1, -1, 1, -1], [0.3, -0.2, 0.5, 0.1]])
def test_w2_metric_is_the_small_change_limit_of_w2(direction):
    """W2^2(p_mu, p_{mu + e d}) / e^2 -> d^T G d, W2 computed from the quantile functions."""
    d, eps = np.asarray(direction, float), 1e-3
    w2 = claim.w2_to_truth((MEANS4 + eps * d)[None], MEANS4, 4000)[0]
    quadratic = d @ claim.w2_metric(MEANS4) @ d
    assert np.isclose(w2**2 / eps**2, quadratic, rtol=5e-3)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_cramer_rao_for_mean_estimation(sigma):
    """k = 1: the weighted mean's variance 1 / (n_c + n_n / (1 + sigma^2)), worth 1/(1 + s^2)."""
    mean = np.array([0.0])
    risk = claim.cramer_rao_risk(mean, 30.0, 70.0, sigma)
    assert np.isclose(risk, 1 / (30 + 70 / (1 + sigma**2)), rtol=1e-9)
    values = claim.clean_equivalent_fractions(mean, 0.1, [sigma])
    assert np.isclose(values["noisy_value"][0], 1 / (1 + sigma**2), rtol=1e-9)
    assert np.isclose(values["mixed_fraction"][0], 0.1 + 0.9 / (1 + sigma**2), rtol=1e-9)
    assert np.isclose(values["mixed_noisy_value"][0], 1 / (1 + sigma**2), rtol=1e-9)


def test_cramer_rao_fractions_agree_with_risks_and_limits():
    values = claim.clean_equivalent_fractions(MEANS4, 0.1, [0.0, 0.7, 3.0])
    # no noise: a noisy sample is a clean one
    assert np.allclose([values["noisy_value"][0], values["mixed_fraction"][0]], 1.0)
    clean = claim.cramer_rao_risk(MEANS4, 500, 0, 0.7)
    mixed = claim.cramer_rao_risk(MEANS4, 50, 450, 0.7)
    assert np.isclose(values["mixed_fraction"][1], clean / mixed, rtol=1e-9)
    # noisy samples carry less information than clean ones, and less with more noise
    assert 0 < values["noisy_value"][2] < values["noisy_value"][1] < 1


def test_theory_reports_both_ks_on_the_run_and_fine_grids():
    params = {"ks": [1, 4], "clean_fraction": 0.1, "n_total": 100, "sigmas": [0.7, 3.0]}
    data = {f"means_k{k}": claim.true_means(k, 3.0) for k in (1, 4)}
    out = claim.theory(data, params)
    assert np.isclose(out["ks"]["1"]["noisy_value"][1], 0.1)
    assert np.isclose(
        out["ks"]["4"]["clean_w2_rms"], np.sqrt(claim.cramer_rao_risk(MEANS4, 100, 0, 0))
    )
    assert len(out["ks"]["4"]["grid"]["noisy_value"]) == len(out["sigma_grid"])


# ----------------------------------------------------------------------------- measure
def test_quantiles_match_scipy_root_finding():
    means = np.array([[-2.0, 0.5, 0.7, 4.0]])
    u = np.array([1e-3, 0.2, 0.5, 0.77, 0.999])
    ours = claim.mixture_quantiles(means, u)[0]

    def cdf(x):
        return norm.cdf(x - means[0]).mean()

    ref = [brentq(lambda x, q=q: cdf(x) - q, -20, 20, xtol=1e-14) for q in u]
    assert np.allclose(ours, ref, atol=1e-10)


def test_w2_between_shifted_gaussians_is_the_shift():
    w2 = claim.w2_to_truth(np.array([[0.3], [-1.2]]), np.array([0.0]), 256)
    assert np.allclose(w2, [0.3, 1.2], atol=1e-9)


def test_w2_ignores_the_order_of_the_means():
    a = claim.w2_to_truth(np.array([[1.0, -2.0, 4.0, 0.0]]), MEANS4, 256)
    b = claim.w2_to_truth(np.array([[4.0, 0.0, -2.0, 1.0]]), MEANS4, 256)
    assert np.allclose(a, b, atol=1e-12)


# ----------------------------------------------------------------------------- estimator
def test_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(1)
    y = MEANS4[rng.integers(0, 4, 60)] + rng.standard_normal(60)
    inv_var = 1 / np.where(np.arange(60) < 10, 1.0, 1 + 0.7**2)
    mu = MEANS4 + 0.3 * rng.standard_normal(4)

    def loglik(m):
        return claim.log_likelihood_terms(y[None], inv_var[None], m[None])[2][0]

    h = 1e-5
    grad_fd = np.array([(loglik(mu + h * e) - loglik(mu - h * e)) / (2 * h) for e in np.eye(4)])
    grad, hess = claim.gradient_and_hessian(y[None], inv_var[None], mu[None])
    assert np.allclose(grad[0], grad_fd, rtol=1e-6, atol=1e-6)
    hess_fd = np.array(
        [
            [
                (loglik(mu + h * ei + h * ej) - loglik(mu + h * ei - h * ej))
                - (loglik(mu - h * ei + h * ej) - loglik(mu - h * ei - h * ej))
                for ej in np.eye(4)
            ]
            for ei in np.eye(4)
        ]
    ) / (4 * h * h)
    assert np.allclose(hess[0], hess_fd, rtol=1e-4, atol=1e-3)


def test_newton_step_solves_the_newton_system_where_concave():
    rng = np.random.default_rng(5)
    y = MEANS4[rng.integers(0, 4, (3, 400))] + rng.standard_normal((3, 400))
    inv_var = np.ones_like(y)
    mu = MEANS4 + 0.05 * rng.standard_normal((3, 4))
    step, grad = claim.newton_direction(y, inv_var, mu)
    _, hess = claim.gradient_and_hessian(y, inv_var, mu)
    assert np.all(np.any(step != 0, -1))  # near the truth with 400 samples: concave
    assert np.allclose(np.einsum("bjl,bl->bj", hess, step), -grad, atol=1e-9)


def test_fit_of_one_component_is_the_precision_weighted_mean():
    rng = np.random.default_rng(2)
    y = 1.5 + rng.standard_normal((3, 40)) * np.sqrt(np.r_[np.ones(10), np.full(30, 5.0)])
    var = np.broadcast_to(np.r_[np.ones(10), np.full(30, 5.0)], y.shape)
    mu, grad = claim.fit_means(y, var, 1, em_steps=2, newton_steps=5)
    expected = (y / var).sum(-1) / (1 / var).sum(-1)
    assert np.allclose(mu[:, 0], expected, atol=1e-12)
    assert np.all(grad < 1e-12)


def test_fits_are_stationary_and_em_fixed_points():
    rng = np.random.default_rng(3)
    x = MEANS4[rng.integers(0, 4, (6, 300))] + rng.standard_normal((6, 300))
    y = x + 1.5 * rng.standard_normal(x.shape)
    var = np.full_like(y, 1 + 1.5**2)
    mu, grad = claim.fit_means(y, var, 4, em_steps=20, newton_steps=300)
    assert np.all(grad < 1e-9)
    assert np.allclose(claim.em_step(y, 1 / var, mu), mu, atol=1e-7)


def test_arms_share_draws_and_noise():
    params = {"clean_fraction": 0.1, "n_total": 20, "sigmas": [0.7, 3.0]}
    rng = np.random.default_rng(4)
    x, z = rng.standard_normal((2, 1, 20)), rng.standard_normal((2, 1, 20))
    y, var = claim.arm_observations(x, z, params)
    names = claim.arm_names(params)
    assert y.shape[0] == len(names) == 5
    mixed, noisy = names.index("mixed_sigma3"), names.index("noisy_sigma3")
    assert np.array_equal(y[mixed][..., :2], x[..., :2])  # the clean part stays clean
    assert np.array_equal(y[mixed][..., 2:], y[noisy][..., 2:])  # the rest is the same noisy data
    assert np.array_equal(y[noisy], x + 3.0 * z)
    assert np.all(var[mixed][..., :2] == 1) and np.all(var[noisy] == 10.0)
