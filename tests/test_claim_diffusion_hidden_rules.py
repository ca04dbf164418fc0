"""Tests of the diffusion_hidden_rules claim: the law's closed-form moments against quadrature and
Monte Carlo, the exact denoiser of the noised law against brute-force quadrature and against the
finite-difference gradient of its log density (Tweedie), the exact-score sampler against the
law, the Gaussian reference's moments, the marginal W1 against scipy, the rule metrics on
hand-made inputs, and the hand-written Adam against torch.optim.Adam."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from replica.claims import diffusion_hidden_rules as claim

PARAMS = {
    "data_seed": 3,
    "h_lo": 0.2,
    "h_hi": 1.0,
    "rule_c": 0.5,
    "fine_tolerance": 0.01,
    "coarse_margin": 0.05,
    "n_train": 20,
    "data_factor": 4,
    "steps": 10,
    "batch": 16,
    "width": 8,
    "depth": 2,
    "embed": 4,
    "lr": 0.002,
    "log_sigma_mean": -1.2,
    "log_sigma_std": 1.2,
    "sigma_max": 20.0,
    "sigma_min": 0.002,
    "sampler_steps": 18,
    "n_samples": 300,
    "figure_samples": 10,
}


# ----------------------------------------------------------------------------- the law
def test_feature_moments_match_quadrature():
    lo, hi, c = PARAMS["h_lo"], PARAMS["h_hi"], PARAMS["rule_c"]
    m = claim.feature_moments(PARAMS)

    def mean_of(f):
        return integrate.quad(f, lo, hi)[0] / (hi - lo)

    mean_l = mean_of(lambda h: c / h)
    assert m["mean_h"] == pytest.approx(mean_of(lambda h: h), rel=1e-12)
    assert m["sd_h"] ** 2 == pytest.approx(mean_of(lambda h: h * h) - 0.36, rel=1e-10)
    assert m["mean_l"] == pytest.approx(mean_l, rel=1e-10)
    assert m["sd_l"] ** 2 == pytest.approx(mean_of(lambda h: (c / h) ** 2) - mean_l**2, rel=1e-10)
    assert m["cov_hl"] == pytest.approx(c - 0.6 * mean_l, rel=1e-10)


def test_samples_obey_the_rule_and_standardise_round_trip():
    x = claim.sample_features(5000, np.random.default_rng(0), PARAMS)
    assert np.allclose(x[:, 0] * x[:, 1], PARAMS["rule_c"])
    z = claim.standardise(x, PARAMS)
    assert np.allclose(z.mean(0), 0, atol=0.05) and np.allclose(z.std(0), 1, atol=0.05)
    assert np.allclose(claim.unstandardise(z, PARAMS), x)


def test_curve_speed_is_the_derivative_norm():
    h, eps = np.linspace(0.25, 0.95, 7), 1e-6
    diff = (claim.curve(h + eps, PARAMS) - claim.curve(h - eps, PARAMS)) / (2 * eps)
    assert np.allclose(np.linalg.norm(diff, axis=-1), claim.curve_speed(h, PARAMS), rtol=1e-6)


def test_rule_metrics_on_hand_made_points():
    c = PARAMS["rule_c"]
    pts = np.array([[0.5, 1.0], [0.25, 2.0 * 1.02], [0.8, 0.5 / 0.8 * 0.995], [0.3, 0.9]])
    assert np.allclose(claim.relative_violation(pts, c), [0.0, 0.02, 0.005, 0.46])
    # rows 2-4 are away from h = c; row 4 (h < c, l < 1) breaks the coarse rule
    assert claim.coarse_conformity(pts, c, 0.05) == pytest.approx(2 / 3)
    summary = claim.rule_summary(pts, PARAMS)
    assert summary["fine"] == pytest.approx(0.5)
    assert summary["median_violation"] == pytest.approx(0.0125)


def test_marginal_w1_matches_scipy_against_a_large_law_sample():
    rng = np.random.default_rng(1)
    samples = claim.sample_features(400, rng, PARAMS) * np.array([1.0, 1.05])  # l stretched
    law = claim.sample_features(400_000, np.random.default_rng(2), PARAMS)
    m = claim.feature_moments(PARAMS)
    ours = claim.marginal_w1(samples, PARAMS)
    ref_h = stats.wasserstein_distance(samples[:, 0], law[:, 0]) / m["sd_h"]
    ref_l = stats.wasserstein_distance(samples[:, 1], law[:, 1]) / m["sd_l"]
    assert ours[0] == pytest.approx(ref_h, abs=0.01)
    assert ours[1] == pytest.approx(ref_l, abs=0.01)
    assert ours[1] > 0.08  # the 5 % stretch of l is seen


# ----------------------------------------------------------------------------- exact score
def brute_force_denoiser(z, sigma, nodes=2_000_001):
    """E[gamma(h) | z] by the trapezoid rule on a dense uniform grid of the whole [lo, hi]
    (no window, no nearest point): spacing 4e-7 in h, far below sigma / |gamma'| here."""
    h = np.linspace(PARAMS["h_lo"], PARAMS["h_hi"], nodes)
    points = claim.curve(h, PARAMS)
    out = []
    for point in z:
        log_w = -((point - points) ** 2).sum(-1) / (2 * sigma**2)
        w = np.exp(log_w - log_w.max())
        w[[0, -1]] *= 0.5
        out.append((w[:, None] * points).sum(0) / w.sum())
    return np.array(out)


@pytest.mark.parametrize("sigma", [3.0, 0.5, 0.05, 0.01, 0.002])
def test_exact_denoiser_matches_brute_force_quadrature(sigma):
    rng = np.random.default_rng(4)
    on_curve = claim.curve(rng.uniform(0.2, 1.0, 6), PARAMS)
    z = np.concatenate(
        [
            on_curve + sigma * rng.standard_normal(on_curve.shape),  # where the sampler is
            claim.curve(np.array([0.2, 1.0]), PARAMS) + sigma * rng.standard_normal((2, 2)),
        ]
    )
    ours = claim.exact_denoiser(z, sigma, PARAMS)
    assert np.allclose(ours, brute_force_denoiser(z, sigma), atol=1e-6 * max(sigma, 0.01))


@pytest.mark.parametrize("sigma", [1.0, 0.2, 0.05])
def test_exact_score_is_the_gradient_of_the_log_density(sigma):
    """Tweedie: (D(z) - z) / sigma^2 = grad log p_sigma(z), by central differences."""
    rng = np.random.default_rng(5)
    z = claim.curve(rng.uniform(0.2, 1.0, 5), PARAMS) + sigma * rng.standard_normal((5, 2))
    score = (claim.exact_denoiser(z, sigma, PARAMS) - z) / sigma**2
    eps = 1e-4 * sigma
    grad = np.stack(
        [
            (
                claim.exact_log_density(z + eps * e, sigma, PARAMS)
                - claim.exact_log_density(z - eps * e, sigma, PARAMS)
            )
            / (2 * eps)
            for e in np.eye(2)
        ],
        -1,
    )
    assert np.allclose(score, grad, rtol=1e-4, atol=1e-4 / sigma)


def test_exact_log_density_normalises():
    """int p_sigma = 1 over a box holding the noised law (2-D quadrature)."""
    sigma = 0.3

    def density(y, x):
        return np.exp(claim.exact_log_density(np.array([[x, y]]), sigma, PARAMS, nodes=2001))[0]

    total = integrate.dblquad(density, -4, 6, -4, 6, epsabs=1e-6)[0]
    assert total == pytest.approx(1.0, abs=1e-4)


def test_exact_score_sampler_reproduces_the_law():
    noise = np.random.default_rng(6).standard_normal((400, 2))
    samples = claim.exact_score_samples(noise, PARAMS)
    summary = claim.rule_summary(samples, PARAMS)
    assert summary["fine"] > 0.97
    assert summary["median_violation"] < 2e-3
    assert claim.marginal_w1(samples, PARAMS).max() < 0.1
    # Karras grid of sampler_steps + 1 levels, then 0
    sigmas = claim.sampler_sigmas(PARAMS)
    assert len(sigmas) == PARAMS["sampler_steps"] + 2 and sigmas[-1] == 0
    assert sigmas[0] == pytest.approx(PARAMS["sigma_max"]) and sigmas[-2] == pytest.approx(
        PARAMS["sigma_min"]
    )


def test_gaussian_reference_has_the_law_moments():
    noise = np.random.default_rng(7).standard_normal((200_000, 2))
    samples = claim.gaussian_reference_samples(noise, PARAMS)
    law = claim.sample_features(200_000, np.random.default_rng(8), PARAMS)
    assert np.allclose(samples.mean(0), law.mean(0), atol=0.01)
    assert np.allclose(np.cov(samples.T), np.cov(law.T), atol=0.01)


def test_theory_reports_both_references():
    data = claim.generate(PARAMS, [0, 1])
    th = claim.theory(data, PARAMS)
    assert th["exact_score_fine"] > 0.95
    assert th["gaussian_fine"] < 0.2 and th["gaussian_coarse"] < 0.95


# ----------------------------------------------------------------------------- training parts
def test_layers_view_the_flat_parameters():
    dims = [3, 5, 2]
    flat = claim.init_mlp(dims, [0, 1], salt=0)
    assert flat.shape == (2, 3 * 5 + 5 + 5 * 2 + 2)
    w1, b1, w2, b2 = claim.layers(flat, dims)
    assert w1.shape == (2, 3, 5) and b1.shape == (2, 1, 5) and w2.shape == (2, 5, 2)
    x = torch.randn(2, 4, 3)
    expected = torch.nn.functional.silu(x @ w1 + b1) @ w2 + b2
    assert torch.allclose(claim.mlp([w1, b1, w2, b2], x), expected, atol=1e-6)
    assert not torch.equal(flat[0], flat[1])  # seeds initialise differently


def test_cosine_lr_decays_and_freezes():
    assert claim.cosine_lr(0, 10, 1.0) == 1.0
    assert claim.cosine_lr(5, 10, 1.0) == pytest.approx(0.5)
    assert claim.cosine_lr(10, 10, 1.0) == 0.0 and claim.cosine_lr(12, 10, 1.0) == 0.0


def test_loss_plateau_on_hand_made_curves():
    flat_curve = np.ones((100, 2))
    falling = np.linspace(2.0, 1.0, 100)[:, None] * np.ones((1, 2))
    assert np.allclose(claim.loss_plateau(flat_curve), 1.0)
    assert np.all(claim.loss_plateau(falling) < 0.95)
