"""Tests of the ctrl_diffusion_rl claim: the closed forms (label marginal, conditional class-1
rate, tilted moments, exact guidance drift) against Monte Carlo, scipy and finite differences;
the probit fit against scipy's optimiser; the torch chain against the numpy one."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtr

from replica.blocks.score import GaussianMixture
from replica.claims import ctrl_diffusion_rl as claim

PARAMS = {
    "data_seed": 7,
    "modes": 8,
    "radius": 4.0,
    "mode_std": 0.5,
    "label_weight": [0.4, 0.0],
    "label_bias": 0.0,
    "n_offline": 400,
    "sigma_max": 10.0,
    "sigma_min": 0.01,
    "grid_rho": 3.0,
    "sampler_steps": 8,
    "alphas": [1.0, 0.0, 10.0],
    "width": 8,
    "particles": 16,
    "adam_steps": 3,
    "lr": 0.01,
    "lr_final": 0.001,
    "n_eval": 50,
    "n_reference": 100,
}
W, B = np.array([0.5, -0.3]), 0.2  # an oblique label with a bias, unlike the manifest's


@pytest.fixture(scope="module")
def law():
    return claim.mixture(PARAMS)


def test_label_marginal_matches_monte_carlo(law):
    x = law.sample(400_000, np.random.default_rng(0))
    mc = claim.label_probability(x, W, B).mean()
    assert claim.label_marginal(law, W, B) == pytest.approx(mc, abs=3e-3)


def test_conditional_class_rate_matches_monte_carlo_and_quadrature(law):
    x = law.sample(400_000, np.random.default_rng(1))
    p = claim.label_probability(x, W, B)
    mc = (p**2).mean() / p.mean()
    exact = claim.conditional_class_rate(law, W, B)
    assert exact == pytest.approx(mc, abs=3e-3)
    # a second formula: the alpha = 1 tilted rate by Gauss-Hermite quadrature
    assert claim.tilted_class_rate(law, W, B, 1.0) == pytest.approx(exact, abs=1e-7)


def test_phi_moments_match_monte_carlo(law):
    x = law.sample(400_000, np.random.default_rng(2))
    p = claim.label_probability(x, W, B)
    for power in (0.1, 1.0, 2.5):
        assert claim.phi_moment(law, W, B, power) == pytest.approx((p**power).mean(), rel=5e-3)
    assert claim.phi_moment(law, W, B, 1.0) == pytest.approx(claim.label_marginal(law, W, B))


def test_tilted_rate_limits(law):
    """Large alpha: the pre-trained rate; small alpha: towards max Phi (reward maximisation)."""
    pre = claim.label_marginal(law, W, B)
    assert claim.tilted_class_rate(law, W, B, 1e4) == pytest.approx(pre, abs=1e-3)
    rates = [claim.tilted_class_rate(law, W, B, a) for a in (10.0, 1.0, 0.1)]
    assert rates[0] < rates[1] < rates[2]


def test_rejection_samples_have_the_conditional_rate(law):
    x = claim.sample_tilted(law, W, B, 1.0, 200_000, np.random.default_rng(3))
    rate = claim.label_probability(x, W, B).mean()
    assert rate == pytest.approx(claim.conditional_class_rate(law, W, B), abs=3e-3)


def log_h_monte_carlo(law, x, sigma, rng, n=400_000):
    """log E[Phi(w . x_0 + b) | x_sigma = x] by sampling the posterior over (k, x_0)."""
    s2 = law.covs[0, 0, 0]
    r = law.ve(sigma).responsibilities(x[None])[0]
    k = rng.choice(len(r), size=n, p=r)
    m = (sigma**2 * law.means[k] + s2 * x) / (s2 + sigma**2)
    v = s2 * sigma**2 / (s2 + sigma**2)
    x0 = m + np.sqrt(v) * rng.standard_normal((n, 2))
    return np.log(claim.label_probability(x0, W, B).mean())


def log_h_closed(law, x, sigma):
    s2 = law.covs[0, 0, 0]
    total = s2 + sigma**2
    r = law.ve(sigma).responsibilities(x[None])[0]
    m = (sigma**2 * law.means + s2 * x) / total
    c = np.sqrt(1 + (W @ W) * s2 * sigma**2 / total)
    return np.log(r @ ndtr((m @ W + B) / c))


@pytest.mark.parametrize("sigma", [0.3, 1.5, 6.0])
def test_guidance_drift_is_grad_log_h(law, sigma):
    rng = np.random.default_rng(4)
    x = np.array([[1.3, -0.7], [-2.0, 2.5], [3.5, 0.4]])
    drift = claim.guidance_drift(law, W, B, x, sigma)
    eps = 1e-5
    for i, xi in enumerate(x):
        fd = [
            (log_h_closed(law, xi + eps * e, sigma) - log_h_closed(law, xi - eps * e, sigma))
            / (2 * eps)
            for e in np.eye(2)
        ]
        assert np.allclose(drift[i], fd, rtol=1e-5, atol=1e-7)
    # the closed-form h itself against Monte Carlo on the posterior of x_0
    assert log_h_closed(law, x[0], sigma) == pytest.approx(
        log_h_monte_carlo(law, x[0], sigma, rng), abs=5e-3
    )


def test_probit_fit_matches_scipy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 2)) * 3
    y = (rng.uniform(size=500) < ndtr(x @ W + B)).astype(float)
    w_hat, b_hat = claim.fit_probit(x, y)

    def nll(theta):
        z = x @ theta[:2] + theta[2]
        return -(y * log_ndtr(z) + (1 - y) * log_ndtr(-z)).sum()

    ref = minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    assert np.allclose([*w_hat, b_hat], ref, atol=1e-4)


def test_torch_chain_equals_numpy_chain_with_zero_drift(law):
    """The training chain with u = 0 (untrained output layer) is the pre-trained chain."""
    import torch

    sigmas = claim.sampler_sigmas(PARAMS)
    net = claim.init_networks([0], 1, PARAMS["width"])
    rng = np.random.default_rng(6)
    start = law.ve(sigmas[0]).sample(20, rng)
    noises = rng.standard_normal((len(sigmas) - 1, 20, 2))
    law_t = (
        torch.as_tensor(law.means, dtype=torch.float32),
        torch.as_tensor(np.log(law.weights), dtype=torch.float32),
    )
    mode_var = float(law.covs[0, 0, 0])
    x_t, kl = claim.rollout(
        net,
        torch.as_tensor(start[None], dtype=torch.float32),
        torch.as_tensor(noises[:, None], dtype=torch.float32),
        sigmas,
        law_t,
        (PARAMS["radius"] ** 2 / 2 + mode_var, mode_var),
    )
    x = start
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        h = s * s - s_next * s_next
        x = x + h * law.ve(s).score(x) + np.sqrt(h) * noises[i]
    assert np.allclose(x_t.detach().numpy()[0], x, atol=1e-3)
    assert float(kl.detach().abs().max()) == 0.0


def test_mixture_score_in_torch_matches_the_block(law):
    import torch

    x = np.random.default_rng(7).standard_normal((30, 2)) * 3
    for sigma in (0.05, 1.0, 8.0):
        got = claim.mixture_score(
            torch.as_tensor(law.means),
            torch.as_tensor(np.log(law.weights)),
            torch.as_tensor(x),
            sigma,
            float(law.covs[0, 0, 0]),
        )
        assert np.allclose(got.numpy(), law.ve(sigma).score(x), atol=1e-10)


def test_generate_and_verdict_run_on_a_tiny_scale():
    data = claim.generate(PARAMS, [0, 1])
    th = claim.theory(data, PARAMS)
    assert 0.7 < th["class1_rate_conditional"] < 0.78
    assert th["label_marginal"] == pytest.approx(0.5, abs=1e-12)  # symmetric modes, b = 0
    assert isinstance(claim.mixture(PARAMS), GaussianMixture)
