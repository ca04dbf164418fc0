"""Tests of the f_distill claim: the weights h(r) = f''(r) r^2 against finite differences of f;
the quadrature divergences against closed forms and scipy; the likelihood-ratio gradient against
finite differences; the paper's identity by Monte Carlo; the minimisers against moment matching;
the teacher's diffused score against replica.blocks.score; the chain's statistics on a tiny run."""

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from replica.blocks.score import GaussianMixture
from replica.claims import f_distill as claim

PARAMS = {
    "data_seed": 11,
    "divergences": ["rkl", "js", "fkl"],
    "mixture_weights": [0.75, 0.25],
    "mixture_means": [2.0, -2.0],
    "mixture_sd": 0.5,
    "noise_levels": [0.1, 0.5, 1.0],
    "init_jitter": 0.1,
    "batch": 128,
    "steps": 60,
    "lr": 0.05,
    "average_last": 0.33,
    "identity_samples": 4000,
    "identity_point": [0.0, 1.0],
    "quadrature_points": 8001,
    "quadrature_half_width": 12.0,
}
GRID = claim.quadrature_grid(PARAMS)


@pytest.mark.parametrize("divergence", claim.DIVERGENCES)
def test_weight_is_f_second_derivative_times_r_squared(divergence):
    r = np.array([0.05, 0.3, 1.0, 2.5, 9.0])
    step = 1e-4 * r
    f = lambda u: claim.f_of_ratio(divergence, u)  # noqa: E731
    second = (f(r + step) - 2 * f(r) + f(r - step)) / step**2
    np.testing.assert_allclose(claim.weight(divergence, np.log(r)), second * r**2, rtol=1e-5)


@pytest.mark.parametrize("divergence", claim.DIVERGENCES)
def test_f_minus_r_fprime_by_finite_differences(divergence):
    r = np.array([0.1, 0.7, 1.0, 4.0])
    step = 1e-6 * r
    f = lambda u: claim.f_of_ratio(divergence, u)  # noqa: E731
    fprime = (f(r + step) - f(r - step)) / (2 * step)
    got = claim.f_minus_r_fprime(divergence, np.log(r), np.zeros_like(r))
    np.testing.assert_allclose(got, f(r) - r * fprime, rtol=1e-6, atol=1e-9)


def gaussian_teacher(mean, sd):
    return {"weights": np.ones(1), "means": np.array([mean]), "sd": np.float64(sd)}


def test_kl_quadrature_against_gaussian_closed_form():
    x, dx = GRID
    mp, sp, mq, sq = 0.4, 1.3, -0.2, 0.8
    log_p, _ = claim.teacher_log_density_and_score(gaussian_teacher(mp, sp), x, 0.0)
    log_q, _ = claim.student_log_density_and_score(mq, sq, x, 0.0)

    def kl(m1, s1, m2, s2):  # KL(N(m1, s1^2) || N(m2, s2^2))
        return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5

    fkl = claim.divergence_integrand("fkl", log_p, log_q).sum() * dx
    rkl = claim.divergence_integrand("rkl", log_p, log_q).sum() * dx
    assert fkl == pytest.approx(kl(mp, sp, mq, sq), rel=1e-8)
    assert rkl == pytest.approx(kl(mq, sq, mp, sp), rel=1e-8)


def test_js_quadrature_against_scipy_quad_of_the_textbook_form():
    x, dx = GRID
    p = lambda u: 0.6 * norm.pdf(u, 1.5, 0.5) + 0.4 * norm.pdf(u, -1, 0.7)  # noqa: E731
    q = lambda u: norm.pdf(u, 0.2, 1.1)  # noqa: E731

    def kl_to_mid(a, b):  # KL(a || (a + b) / 2)
        return quad(lambda u: a(u) * np.log(2 * a(u) / (a(u) + b(u))), -12, 12, limit=200)[0]

    textbook = kl_to_mid(p, q) + kl_to_mid(q, p)
    got = (claim.divergence_integrand("js", np.log(p(x)), np.log(q(x))) * dx).sum()
    assert got == pytest.approx(textbook, rel=1e-7)


def test_teacher_score_matches_shared_gaussian_mixture_block():
    teacher = claim.teacher_mixture(PARAMS, "bimodal")
    sigma = 0.5
    law = GaussianMixture(
        teacher["weights"], teacher["means"][:, None], np.full((2, 1, 1), teacher["sd"] ** 2)
    ).ve(sigma)
    x = np.linspace(-4, 4, 17)
    log_p, score = claim.teacher_log_density_and_score(teacher, x, sigma)
    np.testing.assert_allclose(log_p, law.log_density(x[:, None]), rtol=1e-12)
    np.testing.assert_allclose(score, law.score(x[:, None])[:, 0], rtol=1e-10, atol=1e-12)


def test_unimodal_teacher_keeps_mean_and_variance():
    bi, uni = claim.teacher_mixture(PARAMS, "bimodal"), claim.teacher_mixture(PARAMS, "unimodal")
    samples = GaussianMixture(bi["weights"], bi["means"][:, None], np.full((2, 1, 1), 0.25))
    assert uni["means"][0] == pytest.approx(samples.mean()[0])
    assert uni["sd"] ** 2 == pytest.approx(samples.cov()[0, 0])


@pytest.mark.parametrize("divergence", claim.DIVERGENCES)
def test_likelihood_ratio_gradient_against_finite_differences(divergence):
    teacher = claim.teacher_mixture(PARAMS, "bimodal")
    theta = np.array([0.7, np.log(1.2)])
    got = claim.objective(theta, divergence, teacher, PARAMS["noise_levels"], *GRID)[1]
    fd = claim.finite_difference_gradient(divergence, teacher, theta, PARAMS)
    np.testing.assert_allclose(got, fd, rtol=1e-6)


@pytest.mark.parametrize("divergence", claim.DIVERGENCES)
def test_paper_identity_by_monte_carlo(divergence):
    """The weighted score difference (reparametrised samples) is the divergence's gradient."""
    teacher = claim.teacher_mixture(PARAMS, "bimodal")
    rng = np.random.default_rng(0)
    z, eps = rng.standard_normal((2, 3, 400_000))
    g = claim.monte_carlo_gradient(divergence, teacher, 0.0, 1.0, PARAMS["noise_levels"], z, eps)
    fd = claim.finite_difference_gradient(divergence, teacher, np.array([0.0, 0.0]), PARAMS)
    assert np.linalg.norm(g - fd) / np.linalg.norm(fd) < 0.01


def test_forward_kl_minimiser_is_moment_matching_and_unimodal_minimisers_coincide():
    bi = claim.teacher_mixture(PARAMS, "bimodal")
    mean, var = claim.mixture_moments(bi["weights"], bi["means"], bi["sd"])
    mu, s = claim.minimiser("fkl", bi, PARAMS, (0.5, 1.0))
    assert mu == pytest.approx(mean, abs=1e-6) and s == pytest.approx(np.sqrt(var), rel=1e-6)
    uni = claim.teacher_mixture(PARAMS, "unimodal")
    for divergence in claim.DIVERGENCES:
        mu, s = claim.minimiser(divergence, uni, PARAMS, (0.5, 1.0))
        assert mu == pytest.approx(mean, abs=1e-5) and s == pytest.approx(np.sqrt(var), rel=1e-5)


def test_reverse_kl_is_mode_seeking_in_theory():
    bi = claim.teacher_mixture(PARAMS, "bimodal")
    mean, var = claim.mixture_moments(bi["weights"], bi["means"], bi["sd"])
    masses = {
        d: claim.minor_mass(*claim.minimiser(d, bi, PARAMS, (mean, np.sqrt(var))))
        for d in claim.DIVERGENCES
    }
    assert masses["rkl"] < 0.01 < masses["js"] < masses["fkl"]


def test_minor_mass_is_normal_cdf():
    assert claim.minor_mass(1.0, 2.0) == pytest.approx(norm.cdf(-0.5))


def test_tiny_chain_statistics_have_one_value_per_seed():
    seeds = [0, 1, 2]
    data = claim.generate(PARAMS, seeds)
    th = claim.theory(data, PARAMS)
    points = {f"teacher-{t}": {"teacher": t} for t in ("bimodal", "unimodal")}
    runs = {pid: claim.train(data, p, PARAMS, seeds, "cpu") for pid, p in points.items()}
    stats = claim.verdict(claim.measure(data, runs, points, PARAMS), th, PARAMS)
    for key in ("coverage_gain_js_over_rkl", "rkl_student_sd", "identity_relative_error"):
        assert len(stats[key]) == len(seeds)
    assert np.isfinite(stats["coverage_gain_theory"])
