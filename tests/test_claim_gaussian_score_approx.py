"""Tests of the gaussian_score_approx claim: the three reference scores against independent
formulas (the Gaussian denoiser written out, finite differences of a hand-written mixture
density, a mixture of nearly-delta components), the closed-form Gaussian PF-ODE against a
numerical ODE solve, the teleportation displacement on Gaussian data, the FVE and the EDM
preconditioning on hand-made inputs, the verdict on hand-made runs, and the smoke chain."""

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from replica import steps
from replica.blocks.score import GaussianMixture, gaussian, ve_sigmas
from replica.claims import gaussian_score_approx as claim

PARAMS = {
    "data_seed": 7,
    "dim": 4,
    "components": 3,
    "mean_scale": 1.0,
    "factor_rank": 2,
    "factor_scale": 0.5,
    "floor_variance": 0.05,
}
LAW = claim.data_law(PARAMS)
RNG = np.random.default_rng(0)


def test_gaussian_reference_is_the_linear_denoiser():
    """(D_G - x) / sigma^2 with D_G = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu), written out."""
    train = LAW.sample(300, RNG)
    x, sigma = RNG.standard_normal((5, 4)), 0.7
    mu, cov = train.mean(0), np.cov(train.T)
    direct = mu + (x - mu) @ np.linalg.solve(cov + sigma**2 * np.eye(4), cov)  # cov symmetric
    gauss = claim.reference_scores(LAW, train, x, sigma)[0]
    assert gauss == pytest.approx((direct - x) / sigma**2, rel=1e-9, abs=1e-12)


def test_mixture_reference_is_the_noised_laws_score():
    """The mixture score at sigma against central differences of log p_sigma built by hand from
    scipy's normal densities (covariances Sigma_k + sigma^2 I)."""
    sigma, x = 0.4, RNG.standard_normal((3, 4))

    def log_p(y):
        terms = [
            np.log(w) + multivariate_normal(m, c + sigma**2 * np.eye(4)).logpdf(y)
            for w, m, c in zip(LAW.weights, LAW.means, LAW.covs, strict=True)
        ]
        return logsumexp(terms)

    h = 1e-5
    fd = np.array([[(log_p(p + h * e) - log_p(p - h * e)) / (2 * h) for e in np.eye(4)] for p in x])
    gmm = claim.reference_scores(LAW, LAW.sample(50, RNG), x, sigma)[1]
    assert gmm == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_delta_score_is_a_mixture_of_vanishing_components():
    """The softmax formula equals the Tweedie score of sum_i N(x_i, eps I) / N as eps -> 0."""
    train, sigma = RNG.standard_normal((20, 4)), 0.5
    x = train[:6] + sigma * RNG.standard_normal((6, 4))
    eps = 1e-10
    spikes = GaussianMixture(np.full(20, 1 / 20), train, np.tile(eps * np.eye(4), (20, 1, 1)))
    assert claim.delta_score(train, x, sigma) == pytest.approx(
        spikes.ve(sigma).score(x), rel=1e-6, abs=1e-6
    )


def test_delta_score_recovers_the_training_point_at_small_noise():
    train = 5 * RNG.standard_normal((10, 4))
    x = train + 0.01 * RNG.standard_normal((10, 4))
    denoised = x + 0.01**2 * claim.delta_score(train, x, 0.01)
    assert denoised == pytest.approx(train, abs=1e-9)


def test_gaussian_flow_solves_the_pf_ode():
    """gaussian_flow (per eigenmode) against dx/dsigma = -sigma grad log N(mu, C + sigma^2 I)
    integrated by scipy from sigma = 5 to 0.1."""
    mu, cov = LAW.mean(), LAW.cov()
    x_start = mu + 5 * RNG.standard_normal(4)

    def rhs(s, x):
        return s * np.linalg.solve(cov + s * s * np.eye(4), x - mu)

    sol = integrate.solve_ivp(rhs, (5.0, 0.1), x_start, rtol=1e-10, atol=1e-12)
    closed = claim.gaussian_flow(x_start[None], mu, cov, 5.0, 0.1)[0]
    assert closed == pytest.approx(sol.y[:, -1], rel=1e-6, abs=1e-8)


def test_teleport_on_gaussian_data_moves_nothing_and_zero_fraction_is_exact():
    """With Gaussian data the closed-form jump is the exact flow: only the Heun steps' own error
    remains; with fraction 0 nothing is replaced."""
    law = gaussian(LAW.mean(), LAW.cov())
    grid = ve_sigmas(40.0, 0.002, 300)  # fine steps: Heun error well below the tolerance
    start = law.mean() + 40 * RNG.standard_normal((64, 4))
    assert claim.teleport_displacement(law, 0.0, grid, start, law.mean(), law.cov()) == 0.0
    moved = claim.teleport_displacement(law, 0.6, grid, start, law.mean(), law.cov())
    assert moved < 1e-3


def test_fve_on_hand_made_scores():
    net = RNG.standard_normal((2, 1000, 3))
    assert claim.fve(net, net) == pytest.approx([1.0, 1.0])
    mean_only = np.broadcast_to(net.mean(1, keepdims=True), net.shape)
    assert claim.fve(net, mean_only) == pytest.approx([0.0, 0.0], abs=1e-12)
    # a reference off by an independent error of half the net's variance explains about half
    net = RNG.standard_normal((200_000, 2))
    ref = net + np.sqrt(0.5) * RNG.standard_normal(net.shape)
    assert float(claim.fve(net, ref)) == pytest.approx(0.5, abs=0.01)


def test_edm_denoiser_is_identity_at_zero_noise_and_loss_matches_definition():
    dims = [4 + 8, 16, 16, 4]
    net = claim.init_mlp(dims, [0, 1], 2)
    assert net[0].shape == (4, 12, 16)
    assert torch.equal(net[0][0], net[0][1]) and not torch.equal(net[0][0], net[0][2])
    x = torch.randn(4, 10, 4)
    tiny = torch.full((4, 10, 1), 1e-6)
    assert torch.allclose(claim.denoise(net, x, tiny, 1.2, 8), x, atol=1e-5)
    sigma, noise = torch.full((4, 10, 1), 0.8), torch.randn(4, 10, 4)
    loss = claim.edm_loss(net, x, sigma, noise, 1.2, 8)
    c_out = 0.8 * 1.2 / np.sqrt(0.8**2 + 1.2**2)
    direct = ((claim.denoise(net, x + sigma * noise, sigma, 1.2, 8) - x) ** 2).mean((1, 2))
    assert torch.allclose(loss, direct / c_out**2, rtol=1e-5)


def test_memorisation_probe_orders_the_empirical_optimum_below_the_law():
    """The probe's two reference losses: the exact empirical denoiser is the optimum of the
    weighted DSM loss on its own training points, so on a large probe it beats the law's
    denoiser; the weighted loss matches edm_loss's definition, and a perfect denoiser scores 0."""
    params = {**PARAMS, "low_factor": 0.2, "memorise_probe_noise": 2000}
    train = LAW.sample(6, np.random.default_rng(3))
    scale = claim.sigma_rms(LAW)
    probe = claim.memorisation_probe(LAW, train, scale, params)
    assert probe["probe_clean"].shape == (6 * 2000, 4)
    assert 0 < probe["probe_loss_empirical"] < probe["probe_loss_population"]
    x0 = probe["probe_clean"]
    assert claim.weighted_dsm_loss(x0, x0, 0.3, scale) == 0.0
    sigma, off = 0.3, np.full_like(x0, 0.1)
    c_out = sigma * scale / np.sqrt(sigma**2 + scale**2)
    assert claim.weighted_dsm_loss(x0 + off, x0, sigma, scale) == pytest.approx(0.01 / c_out**2)


def test_memorising_arm_stops_at_the_criterion_or_the_cap():
    """A criterion already met trains nothing; an unreachable one spends exactly the cap."""
    params = {
        **PARAMS,
        "n_train": 50,
        "n_memorise": 4,
        "n_eval": 8,
        "sigma_factors": [0.2, 1.0],
        "high_factors": [1.0],
        "low_factor": 0.2,
        "mid_factor": 1.0,
        "memorise_probe_noise": 8,
        "embed": 4,
        "batch": 8,
        "lr": 0.001,
        "train_log_sigma_mean": 0.0,
        "train_log_sigma_std": 1.0,
        "memorise_check_every": 3,
        "memorise_max_extra_steps": 7,
    }
    data = claim.generate(params, [0, 1])
    net = claim.init_mlp([4 + 4, 8, 4], [0, 1], len(claim.ARMS))
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    _, extra, excess = claim.train_memorising_arm(
        net, data, {**params, "memorise_criterion": 1e9}, gens
    )
    assert extra == 0 and excess.shape == (2,)
    _, extra, _ = claim.train_memorising_arm(
        net, data, {**params, "memorise_criterion": -1e9}, gens
    )
    assert extra == 7


def test_verdict_on_hand_made_runs():
    """Nets that are exactly the data-law score (generalise) and the delta score (memorise):
    the statistics equal the theory's."""
    params = {
        **PARAMS,
        "n_train": 300,
        "n_memorise": 16,
        "n_eval": 64,
        "sigma_factors": [0.2, 1.0, 2.0, 4.0],
        "high_factors": [2.0, 4.0],
        "low_factor": 0.2,
        "mid_factor": 1.0,
        "heun_steps": 10,
        "sigma_max_factor": 20.0,
        "sigma_min_factor": 0.01,
        "teleport_fractions": [0.2, 0.6],
        "teleport_samples": 8,
        "memorise_probe_noise": 4,
    }
    data = claim.generate(params, [0, 1])
    th = claim.theory(data, params)
    refs = data["reference_scores"]  # (arms, refs, n_sigma, n, d)
    as_net = np.stack([refs[0, 1], refs[1, 2]])  # generalise = mixture, memorise = delta
    net = np.stack([np.stack([as_net, as_net], 1)] * 2)  # (S, arms, times, n_sigma, n, d)
    runs = {
        "arms-generalise_memorise": {
            "net_scores": net,
            "loss": np.zeros((10, 2, 2)),
            "memorise_extra_steps": 0,
            "memorise_probe_excess": np.array([0.1, 0.2]),
        }
    }
    metrics = claim.measure(data, runs, {}, params)
    st = claim.verdict(metrics, th, params)
    assert st["fve_gauss_high_noise"] == pytest.approx([th["fve_gauss_high_noise_theory"]] * 2)
    assert st["gmm_minus_delta_low_noise"] == pytest.approx(
        [th["gmm_minus_delta_low_noise_theory"]] * 2
    )
    assert st["memorised_gmm_minus_delta_low_noise"] == pytest.approx(
        [th["memorised_gmm_minus_delta_low_noise_theory"]] * 2
    )
    assert st["early_minus_final_fve_gauss_mid"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert st["memorise_probe_excess"] == [0.1, 0.2] and st["memorise_extra_steps"] == 0
    assert (
        th["memorised_gmm_minus_delta_low_noise_theory"]
        < 0
        < th["gmm_minus_delta_low_noise_theory"]
    )


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("gaussian_score_approx", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
