"""Tests of the dale_langevin_multiplicative claim: the closed-form GBM marginals against a
simulation of the ambient SDE, the Hyvarinen score against finite differences of the x-space
log-density, the M-DSM target against the explicit loss (M-DSM = M-ESM), both samplers with the
exact score against the data law on a log-normal case, and the measurements on hand-made
inputs."""

import numpy as np
import pytest

from replica.claims import dale_langevin_multiplicative as claim

PARAMS = {
    "data_seed": 7,
    "log_means": [[-1.5, -0.5], [0.5, 1.5], [1.5, -1.0]],
    "log_std": 0.35,
    "weights": [0.3, 0.3, 0.4],
    "mu": 0.5,
    "sigma": 2.0,
    "horizon": 2.0,
    "t_min": 0.002,
    "steps": 40,
    "few_steps": 10,
    "n_samples": 100,
    "n_eval": 50,
    "score_t_lo": 0.05,
    "score_t_count": 3,
    "samples_shown": 20,
    "width": 8,
    "depth": 2,
    "features": 4,
    "batch": 16,
    "train_steps": 5,
    "lr": 0.003,
}


def log_density_x(params, x, t):
    """log p^X_t(x) = log p^Y_t(log x) - sum log x (change of variables), rows of x > 0."""
    return claim.log_law(params, t).log_density(np.log(x)) - np.log(x).sum(1)


# ----------------------------------------------------------------------------- laws
def test_log_marginal_matches_simulated_ambient_gbm():
    """Euler-Maruyama on dX = mu X dt + sigma X dW itself (fine steps, in x, no log): the
    moments of log X_t match the closed form's shift (mu - sigma^2 / 2) t and variance growth."""
    params = {**PARAMS, "sigma": 0.8, "mu": 0.3}
    rng = np.random.default_rng(0)
    t, n_steps, n = 0.5, 500, 20_000
    x = np.exp(claim.data_law(params).sample(n, rng))
    dt = t / n_steps
    for _ in range(n_steps):
        x = x * (
            1 + params["mu"] * dt + params["sigma"] * np.sqrt(dt) * rng.standard_normal(x.shape)
        )
    law = claim.log_law(params, t)
    y = np.log(x)
    assert np.allclose(y.mean(0), law.mean(), atol=0.02)
    assert np.allclose(np.cov(y.T), law.cov(), atol=0.04)


@pytest.mark.parametrize("t", [0.01, 0.3, 2.0])
def test_hyvarinen_score_is_x_times_finite_difference_stein_score(t):
    rng = np.random.default_rng(1)
    x = np.exp(claim.log_law(PARAMS, t).sample(20, rng))
    h = claim.hyvarinen_score(PARAMS, x, t)
    for i in range(2):
        step = 1e-6 * x[:, i]
        up, down = x.copy(), x.copy()
        up[:, i] += step
        down[:, i] -= step
        grad = (log_density_x(PARAMS, up, t) - log_density_x(PARAMS, down, t)) / (2 * step)
        assert np.allclose(h[:, i], x[:, i] * grad, rtol=1e-5, atol=1e-6)
    assert np.allclose(x * claim.stein_score_x(PARAMS, x, t), h)


def test_hyvarinen_score_has_mean_minus_one():
    """E_p[grad_y log p^Y] = 0, so E h = -1 exactly (the centring of the score error)."""
    rng = np.random.default_rng(2)
    x = np.exp(claim.log_law(PARAMS, 0.3).sample(200_000, rng))
    assert np.allclose(claim.hyvarinen_score(PARAMS, x, 0.3).mean(0), -1.0, atol=0.02)


def test_prior_moments_are_those_of_y_at_horizon():
    rng = np.random.default_rng(3)
    y = claim.log_law(PARAMS, PARAMS["horizon"]).sample(200_000, rng)
    mean, cov = claim.prior_moments(PARAMS)
    assert np.allclose(y.mean(0), mean, atol=0.03)
    assert np.allclose(np.cov(y.T), cov, atol=0.1)
    m = PARAMS["mu"] - PARAMS["sigma"] ** 2 / 2
    assert np.allclose(mean, claim.data_law(PARAMS).mean() + m * PARAMS["horizon"])


# ----------------------------------------------------------------------------- M-DSM
def test_mdsm_equals_mesm_up_to_a_constant():
    """The conditional Hyvarinen score -eps / (sigma sqrt t) - 1 has conditional mean h_t: for any
    two fields f, g, L_DSM(f) - L_DSM(g) = L_ESM(f) - L_ESM(g) (the paper's equivalence)."""
    rng = np.random.default_rng(4)
    t, n, sigma = 0.2, 400_000, PARAMS["sigma"]
    y0 = claim.data_law(PARAMS).sample(n, rng)
    eps = rng.standard_normal(y0.shape)
    y_t = y0 + claim.log_drift(PARAMS) * t + sigma * np.sqrt(t) * eps
    x_t = np.exp(y_t)
    target = -eps / (sigma * np.sqrt(t)) - 1.0
    # the conditional target is x o grad_x log p(x_t | x_0) of the log-normal transition density
    x0 = np.exp(y0[:5])
    z = np.log(x_t[:5]) - np.log(x0) - claim.log_drift(PARAMS) * t
    assert np.allclose(-z / (sigma**2 * t) - 1.0, target[:5])
    h = claim.hyvarinen_score(PARAMS, x_t, t)
    fields = {"zero": np.zeros_like(h), "tilted": 0.5 * h + 0.3 * np.tanh(y_t)}
    dsm = {k: ((f - target) ** 2).sum(1).mean() for k, f in fields.items()}
    esm = {k: ((f - h) ** 2).sum(1).mean() for k, f in fields.items()}
    gap = (dsm["zero"] - dsm["tilted"]) - (esm["zero"] - esm["tilted"])
    assert abs(gap) < 0.02 * abs(esm["zero"] - esm["tilted"])


# ----------------------------------------------------------------------------- samplers
def lognormal_params():
    """One log-space Gaussian: the data law is log-normal and the prior exact. A smaller sigma
    keeps the ambient sampler's factor positive (sigma sqrt(D) at most about 0.2)."""
    return {
        **PARAMS,
        "log_means": [[0.4, -0.6]],
        "log_std": 0.5,
        "weights": [1.0],
        "sigma": 0.8,
        "horizon": 3.0,
    }


def test_dale_langevin_is_exp_of_log_space_em_under_shared_noise():
    rng = np.random.default_rng(5)
    x0, noise = claim.sampler_start(PARAMS, rng, 50, 30)
    times = claim.time_grid(PARAMS, 30)
    x, hit = claim.dale_langevin(
        lambda x, t: claim.hyvarinen_score(PARAMS, x, t), x0, times, noise, PARAMS, cap=False
    )
    y = claim.log_space_em(
        lambda y, t: claim.log_law(PARAMS, t).score(y), np.log(x0), times, noise, PARAMS
    )
    assert np.allclose(x, np.exp(y), rtol=1e-10)
    assert not hit.any()


@pytest.mark.parametrize("sampler", ["dale_langevin", "ambient"])
def test_exact_score_samplers_recover_a_lognormal_law(sampler):
    params = lognormal_params()
    rng = np.random.default_rng(6)
    steps = 300
    x0, noise = claim.sampler_start(params, rng, 10_000, steps)
    times = claim.time_grid(params, steps)

    def h(x, t):
        return claim.hyvarinen_score(params, x, t)

    if sampler == "dale_langevin":
        x, _ = claim.dale_langevin(h, x0, times, noise, params)
    else:
        x = claim.ambient_em(h, x0, times, noise, params)
        assert claim.non_positive_fraction(x) == 0.0  # fine steps: no sign flips here
    y = np.log(x)
    # target: N(mean, 0.5^2 I) plus the noise left at t_min (sigma^2 t_min)
    var = 0.5**2 + params["sigma"] ** 2 * params["t_min"]
    assert np.allclose(y.mean(0), [0.4, -0.6], atol=0.03)
    assert np.allclose(y.var(0), var, rtol=0.06)


def test_ambient_sampler_loses_sign_at_few_steps_dale_langevin_does_not():
    rng = np.random.default_rng(8)
    x0, noise = claim.sampler_start(PARAMS, rng, 2000, 10)
    times = claim.time_grid(PARAMS, 10)

    def h(x, t):
        return claim.hyvarinen_score(PARAMS, x, t)

    assert claim.non_positive_fraction(claim.ambient_em(h, x0, times, noise, PARAMS)) > 0.05
    x, _ = claim.dale_langevin(h, x0, times, noise, PARAMS)
    assert claim.non_positive_fraction(x) == 0.0


def test_time_grid_is_log_spaced_from_horizon_to_t_min():
    times = claim.time_grid(PARAMS, 10)
    assert times[0] == pytest.approx(PARAMS["horizon"]) and times[-1] == pytest.approx(0.002)
    ratios = times[1:] / times[:-1]
    assert np.allclose(ratios, ratios[0])


# ----------------------------------------------------------------------------- measure
def test_relative_score_error_on_hand_made_fields():
    rng = np.random.default_rng(9)
    h = rng.standard_normal((1000, 2)) - 1.0
    assert claim.relative_score_error(h, h) == 0.0
    # an error of a tenth of the centred field's scale in every point
    centred = h - h.mean(0)
    assert claim.relative_score_error(h + 0.1 * centred, h) == pytest.approx(0.1)
    # the constant -1 earns nothing: outputting E h everywhere is a 100 % error
    assert claim.relative_score_error(np.broadcast_to(h.mean(0), h.shape), h) == pytest.approx(1.0)


def test_gaussian_fit_energy_is_clearly_positive_and_floor_is_not():
    rng = np.random.default_rng(10)
    assert claim.gaussian_fit_energy(PARAMS, rng, 1000) > 0.05
    law = claim.data_law(PARAMS)
    assert abs(claim.energy_distance(law.sample(1000, rng), law.sample(1000, rng))) < 0.01


def test_generate_and_theory_are_deterministic():
    a, b = claim.generate(PARAMS, [0, 1]), claim.generate(PARAMS, [0, 1])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ta, tb = claim.theory(a, PARAMS), claim.theory(b, PARAMS)
    assert ta["exact_dl_energy"] == tb["exact_dl_energy"]
    assert ta["dl_identity_gap"] < 1e-10
    assert ta["exact_dl_non_positive"] == 0.0
