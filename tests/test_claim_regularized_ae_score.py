"""Tests of the regularized_ae_score claim: the exact DAE optimum against the paper's
posterior-mean formula by quadrature and a Monte Carlo posterior mean, the noised score against
finite differences of a numerically convolved density, the O(sigma^2) bias against the
heat-equation expansion, the critical points, the contractive loss and its forward-mode
derivative against autograd, the measurements and the verdict on hand-made inputs, and the
smoke chain."""

import numpy as np
import pytest
import torch
from scipy import integrate

from replica import steps
from replica.claims import regularized_ae_score as claim

PARAMS = {"mode": 2.0, "component_std": 0.75}
LAW = claim.mixture(PARAMS)


def clean_pdf(y):
    """The mixture density written out by hand (independent of GaussianMixture)."""
    sd = PARAMS["component_std"]
    bumps = [np.exp(-((y - m) ** 2) / (2 * sd * sd)) for m in (-2.0, 2.0)]
    return 0.5 * sum(bumps) / (sd * np.sqrt(2 * np.pi))


def convolved(x, sigma, moment=0):
    """int y^moment p(y) N(x - y; 0, sigma^2) dy by adaptive quadrature."""

    def integrand(y):
        return y**moment * clean_pdf(y) * np.exp(-((x - y) ** 2) / (2 * sigma**2))

    return integrate.quad(integrand, -12, 12, points=[x], limit=400, epsabs=1e-14)[0]


@pytest.mark.parametrize("sigma", [0.1, 0.4, 2.0])
def test_optimal_dae_is_the_papers_posterior_mean(sigma):
    """r*(x) = E_eps[p(x - eps)(x - eps)] / E_eps[p(x - eps)] (the paper's optimum), by
    quadrature, equals x + sigma^2 grad log p_sigma(x) (Tweedie, closed form)."""
    x = np.array([-3.1, -1.0, 0.0, 0.37, 2.0, 4.2])
    quad = np.array([convolved(t, sigma, 1) / convolved(t, sigma, 0) for t in x])
    assert np.allclose(x + sigma**2 * claim.tweedie_score(LAW, x, sigma), quad, atol=1e-8)


def test_optimal_dae_matches_a_monte_carlo_posterior_mean():
    """E[x0 | x0 + sigma eps in a small bin around x] from samples of the data law."""
    rng = np.random.default_rng(3)
    sigma, x = 0.4, 0.8
    x0 = LAW.sample(4_000_000, rng)[:, 0]
    noisy = x0 + sigma * rng.standard_normal(x0.shape)
    near = np.abs(noisy - x) < 0.01
    exact = x + sigma**2 * claim.tweedie_score(LAW, np.array([x]), sigma)[0]
    assert x0[near].mean() == pytest.approx(exact, abs=4 * x0[near].std() / np.sqrt(near.sum()))


@pytest.mark.parametrize("sigma", [0.0, 0.2, 0.8])
def test_noised_score_is_the_derivative_of_the_log_convolved_density(sigma):
    x, h = np.array([-2.5, -0.3, 0.0, 1.1, 3.0]), 1e-4
    if sigma == 0:
        log_p = lambda t: np.log(clean_pdf(t))  # noqa: E731
    else:
        log_p = lambda t: np.log(np.array([convolved(v, sigma) for v in t]))  # noqa: E731
    fd = (log_p(x + h) - log_p(x - h)) / (2 * h)
    assert np.allclose(claim.tweedie_score(LAW, x, sigma) if sigma else claim.score_1d(LAW, x), fd)


def test_bias_is_sigma_squared_by_the_heat_equation():
    """grad log p_sigma - grad log p -> sigma^2 (s'' + 2 s s') / 2, derivatives by finite
    differences of the exact score; the exact error's local slope tends to 2."""
    x, h, sigma = np.linspace(-3, 3, 13), 1e-3, 0.01
    s = claim.score_1d(LAW, x)
    s1 = (claim.score_1d(LAW, x + h) - claim.score_1d(LAW, x - h)) / (2 * h)
    s2 = (claim.score_1d(LAW, x + h) - 2 * s + claim.score_1d(LAW, x - h)) / h**2
    bias = (claim.tweedie_score(LAW, x, sigma) - s) / sigma**2
    assert np.allclose(bias, (s2 + 2 * s * s1) / 2, rtol=2e-3, atol=2e-3)
    grid = np.linspace(-4.5, 4.5, 721)
    errs = claim.exact_errors(LAW, grid, [0.01, 0.02])
    assert claim.loglog_slope([0.01, 0.02], errs) == pytest.approx(2.0, abs=0.01)


def test_critical_points_are_the_modes_and_the_anti_mode():
    crit = claim.critical_points(LAW, -4.5, 4.5)
    assert len(crit) == 3 and crit[1] == pytest.approx(0.0, abs=1e-10)
    assert crit[0] == pytest.approx(-crit[2], abs=1e-10)
    # the density has maxima at the outer points and a minimum between them
    pdf = clean_pdf
    for c, kind in zip(crit, ("max", "min", "max"), strict=True):
        curvature = pdf(c + 1e-3) - 2 * pdf(c) + pdf(c - 1e-3)
        assert (curvature < 0) == (kind == "max")
    assert abs(crit[2] - 2.0) < 0.05  # near the component mean, pulled in slightly


def test_theory_values_on_the_quick_grid():
    params = {
        **PARAMS,
        "sigmas": [0.1, 0.2, 0.4, 0.8, 2.0],
        "slope_sigmas": [0.1, 0.2, 0.4],
        "small_sigma": 0.1,
        "large_sigma": 2.0,
    }
    data = {"x_grid": np.linspace(-4.5, 4.5, 361), "critical_points": np.zeros(3)}
    th = claim.theory(data, params)
    assert np.all(np.diff(th["exact_error"]) > 0)  # the bias grows with sigma
    assert 1.5 < th["score_error_slope_theory"] < 2.0
    assert th["score_error_small_sigma_theory"] == pytest.approx(0.0185, abs=5e-4)
    assert th["score_error_large_sigma_theory"] > 0.9


def test_error_gain_and_slope_on_hand_made_inputs():
    target, weight = np.array([1.0, -2.0, 0.5]), np.array([1.0, 2.0, 1.0])
    assert claim.relative_error(target, target, weight) == 0
    assert claim.relative_error(1.1 * target, target, weight) == pytest.approx(0.1)
    assert claim.relative_error(0 * target, target, weight) == pytest.approx(1.0)
    assert claim.gain(0.9 * target, target, weight) == pytest.approx(0.9)
    xs = np.array([0.1, 0.2, 0.4])
    assert claim.loglog_slope(xs, 3 * xs**2) == pytest.approx(2.0)
    assert np.allclose(claim.loglog_slope(xs, np.stack([xs, xs**3])), [1.0, 3.0])
    x, g = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    assert np.allclose(claim.score_estimate(x, g, 0.01), g)


def test_forward_mode_slope_matches_autograd():
    net = claim.init_mlp(8, [0, 1], 2)
    x = torch.linspace(-3, 3, 11).expand(4, -1)[..., None].clone().requires_grad_()
    g, slope = claim.mlp_with_slope(net, x)
    (auto,) = torch.autograd.grad(g.sum(), x)
    assert torch.allclose(slope, auto, atol=1e-6)
    assert torch.allclose(g, claim.mlp(net, x))
    # a shared initialisation within a seed, different across seeds
    assert torch.equal(net[2][0], net[2][1]) and not torch.equal(net[2][0], net[2][2])


def test_contractive_loss_is_score_matching_plus_the_penalty():
    """For r = x + lam g: E[|r - x|^2 + lam |r'|^2] = lam^2 E[g^2 + 2 g' + lam g'^2] + lam,
    checked on a net; for N(0, 1) data and g = a x its minimiser is a = -1 / (1 + lam)."""
    lam = 0.04
    net = claim.init_mlp(8, [5], 1)
    x = torch.randn(1, 64, 1, generator=torch.Generator().manual_seed(0))
    g, slope = claim.mlp_with_slope(net, x)
    direct = ((lam * g) ** 2 + lam * (1 + lam * slope) ** 2).mean()
    expected = lam**2 * claim.cae_loss(net, x, lam).detach() + lam
    assert float(direct.detach()) == pytest.approx(float(expected))
    a = np.linspace(-2, 0, 20001)
    assert a[np.argmin(a * a + 2 * a + lam * a * a)] == pytest.approx(-1 / (1 + lam), abs=1e-4)


def test_dae_loss_is_the_reconstruction_error_over_scale_squared():
    net = claim.init_mlp(4, [0], 1)
    x, eps = torch.randn(1, 16, 1), torch.randn(1, 16, 1)
    sigma = torch.tensor(0.3).view(1, 1, 1)
    loss = claim.dae_loss(net, x, eps, sigma, sigma**2)
    recon = [x + s * sigma * eps + sigma**2 * claim.mlp(net, x + s * sigma * eps) for s in (1, -1)]
    direct = sum(((r - x) ** 2).mean() for r in recon) / 2 / sigma.item() ** 4
    assert float(loss[0].detach()) == pytest.approx(float(direct.detach()), rel=1e-5)


def test_measure_and_verdict_on_hand_made_runs():
    """An auto-encoder that is exactly Tweedie's optimum at every sigma, the score itself in
    the contractive arm and zero in the clean arm: errors equal the theory's."""
    params = {
        **PARAMS,
        "sigmas": [0.1, 0.2, 0.4, 2.0],
        "slope_sigmas": [0.1, 0.2, 0.4],
        "small_sigma": 0.1,
        "large_sigma": 2.0,
        "tweedie_sigma_max": 0.8,
        "clean_output_scale": 0.01,
        "cae_lambda": 0.01,
        "support": 4.0,
    }
    x = np.linspace(-4.5, 4.5, 181)
    crit = claim.critical_points(LAW, -4.5, 4.5)
    data = {"x_grid": x, "critical_points": crit}
    pts = np.concatenate([x, crit])
    exact = [claim.tweedie_score(LAW, pts, s) for s in params["sigmas"]]
    dae = np.stack([np.stack([*exact, 0 * pts])] * 2)  # (S = 2, copies, points)
    cae = np.stack([claim.score_1d(LAW, pts)] * 2)
    runs = {"arms-dae_clean_cae": {"g_dae": dae, "g_cae": cae, "loss_dae": np.zeros((60, 2, 5))}}
    points = {"arms-dae_clean_cae": {"arms": "dae_clean_cae"}}
    metrics = claim.measure(data, runs, points, params)
    th = claim.theory(data, params)
    st = claim.verdict(metrics, th, params)
    assert st["score_error_slope"] == pytest.approx([th["score_error_slope_theory"]] * 2)
    assert st["score_error_small_sigma"] == pytest.approx(
        [th["score_error_small_sigma_theory"]] * 2
    )
    assert st["tweedie_error_max"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert st["cae_score_error"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert st["clean_score_error"] == pytest.approx([1.0, 1.0])
    assert st["score_error_large_sigma"] == pytest.approx(
        [th["score_error_large_sigma_theory"]] * 2
    )
    assert all(v < 1e-3 for v in st["critical_point_reconstruction_ratio"])
    assert all(0.9 < v < 1.0 for v in st["score_gain_small_sigma"])


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("regularized_ae_score", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
