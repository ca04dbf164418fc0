"""Tests of the generalization_difficulty_measure claim: harmonic counts against the rank of
monomials on the sphere, Legendre polynomials against scipy, the projection kernel and feature
maps against Monte Carlo, the non-central chi-square tail against scipy, the exact measure
against an explicit basis, the closed-form GD against the loop, and the fits on known laws."""

from itertools import combinations_with_replacement

import numpy as np
import pytest
from scipy import special, stats

from replica import steps
from replica.claims import generalization_difficulty_measure as claim

PARAMS = {
    "data_seed": 5,
    "n_train": 4,
    "eps": 0.01,
    "prior_rms": 1.0,
    "dims": [1, 2, 3],
    "degrees": [3, 4, 5],
    "hypotheses": 2000,
    "n_test": 4000,
    "extra_anchors": 16,
    "max_gd_steps": 100000,
}


def monomials(x, degree):
    """All monomials of degree <= `degree` in the columns of x."""
    cols = [np.ones(len(x))]
    for d in range(1, degree + 1):
        for idx in combinations_with_replacement(range(x.shape[1]), d):
            cols.append(np.prod(x[:, idx], axis=1))
    return np.stack(cols, axis=1)


# ----------------------------------------------------------------------------- harmonics
@pytest.mark.parametrize("m,k", [(1, 4), (2, 3), (3, 4), (4, 2)])
def test_band_limited_count_is_the_rank_of_polynomials_on_the_sphere(m, k):
    """V_K = polynomials of degree <= K restricted to S^m (its dimension, brute force)."""
    x = claim.sphere(np.random.default_rng(0), m, 600)
    singular = np.linalg.svd(monomials(x, k), compute_uv=False)
    rank = int((singular > 1e-9 * singular[0]).sum())
    assert rank == claim.band_limited_count(m, k)
    assert sum(claim.harmonic_count(m, d) for d in range(k + 1)) == rank


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_legendre_matches_scipy(m):
    t = np.linspace(-1, 1, 11)
    p = claim.legendre(m, 6, t)
    for d in range(7):
        if m == 1:
            expected = special.eval_chebyt(d, t)
        else:
            alpha = (m - 1) / 2
            expected = special.eval_gegenbauer(d, alpha, t) / special.eval_gegenbauer(d, alpha, 1)
        assert np.allclose(p[d], expected, atol=1e-12)


@pytest.mark.parametrize("m,k", [(1, 3), (2, 3), (3, 2)])
def test_projection_kernel_reproduces_and_traces_to_the_count(m, k):
    assert claim.projection_kernel(m, k, np.ones(1))[0] == pytest.approx(
        claim.band_limited_count(m, k)
    )
    rng = np.random.default_rng(1)
    x, z = claim.sphere(rng, m, 3), claim.sphere(rng, m, 3)
    y = claim.sphere(rng, m, 400_000)  # Monte Carlo over the uniform probability measure
    lhs = claim.projection_kernel(m, k, x @ y.T) @ claim.projection_kernel(m, k, y @ z.T) / len(y)
    assert np.allclose(lhs, claim.projection_kernel(m, k, x @ z.T), atol=0.05 * lhs.max())


@pytest.mark.parametrize("m,k", [(1, 4), (2, 4), (3, 3)])
def test_feature_maps_are_orthonormal(m, k):
    rng = np.random.default_rng(2)
    y = claim.sphere(rng, m, 200_000)
    anchors = claim.sphere(rng, m, claim.band_limited_count(m, k) + 8)
    features, rank = claim.full_features(m, k, anchors)
    assert rank == claim.band_limited_count(m, k)
    phi = features(y[:2000])
    assert np.allclose(phi[:5] @ phi[:5].T, claim.projection_kernel(m, k, y[:5] @ y[:5].T))
    phi = features(y)
    assert np.allclose(phi.T @ phi / len(y), np.eye(rank), atol=0.03)
    add, add_rank = claim.additive_features(m, k)
    psi = add(y)
    assert add_rank == claim.additive_count(m, k)
    assert np.allclose(psi.T @ psi / len(y), np.eye(add_rank), atol=0.03)


@pytest.mark.parametrize("m,k", [(1, 4), (1, 6), (2, 5), (3, 4)])
def test_additive_count_is_the_rank_of_additive_polynomials(m, k):
    x = claim.sphere(np.random.default_rng(3), m, 800)
    raw = np.concatenate([np.ones((len(x), 1))] + [x**d for d in range(1, k + 1)], axis=1)
    singular = np.linalg.svd(raw, compute_uv=False)
    assert int((singular > 1e-9 * singular[0]).sum()) == claim.additive_count(m, k)


# ----------------------------------------------------------------------------- theory
@pytest.mark.parametrize("a,z", [(2.5, 0.3), (10.0, 4.0), (60.0, 3.0), (7.5, 9.0)])
def test_log_lower_gamma_matches_scipy(a, z):
    assert claim.log_lower_gamma(np.array([a]), z)[0] == pytest.approx(
        np.log(special.gammainc(a, z)), rel=1e-10
    )


@pytest.mark.parametrize("x,df,nc", [(3.0, 5.0, 2.0), (8.0, 40.0, 30.0), (1.0, 12.5, 0.0)])
def test_log_ncx2_cdf_matches_scipy(x, df, nc):
    expected = stats.chi2.logcdf(x, df) if nc == 0 else stats.ncx2.logcdf(x, df, nc)
    assert claim.log_ncx2_cdf(x, df, nc) == pytest.approx(expected, rel=1e-8)


def test_exact_bits_match_an_explicit_basis():
    """lambda = ||theta* - theta_mn||^2 / sigma^2 in orthonormal coordinates (the Nystrom map)."""
    m, k, n = 2, 4, 4
    rng = np.random.default_rng(4)
    x = claim.sphere(rng, m, n)
    anchors = claim.sphere(rng, m, 60)
    features, count = claim.full_features(m, k, anchors)
    probe = claim.sphere(rng, m, 400)
    theta_star = np.linalg.lstsq(features(probe), claim.target(probe), rcond=None)[0]
    assert np.sum(theta_star**2) == pytest.approx(1.0, rel=1e-9)  # unit L2 norm by Parseval
    phi = features(x)
    theta_mn = np.linalg.pinv(phi) @ claim.target(x)
    sigma2 = 1.0 / count
    nc = np.sum((theta_star - theta_mn) ** 2) / sigma2
    expected = -stats.ncx2.logcdf(PARAMS["eps"] / sigma2, count - n, nc) / np.log(2)
    got = claim.exact_bits(x[None], m, k, PARAMS)[0]
    assert got == pytest.approx(expected, rel=1e-6)


def test_paper_formula_matches_the_authors_expression():
    """difficulty(error, n, m, R=1, prod_d=1, delta=2 pi / M, D=1, B) as in their code."""
    m, k, n, eps, b = 3, 5, 4, 0.01, 1.0
    big_m = np.sqrt(k * (k + m - 1))
    k_real = (np.sqrt((m - 1) ** 2 + 4 * (2 * np.pi / (2 * np.pi / big_m)) ** 2) - (m - 1)) / 2
    assert k_real == pytest.approx(k)
    e = special.binom(m + k_real, m) + special.binom(m + k_real - 1, m)
    assert e == pytest.approx(claim.band_limited_count(m, k))
    log_w = (
        0.5 * np.log(m / 6)
        + (np.log(2) + (m + 1) / 2 * np.log(np.pi) + np.log(1) - special.loggamma((m + 1) / 2)) / m
        - np.log(n) / m
    )
    lf = k_real * np.sqrt(1) / 1
    log_ratio = np.log2(b) - np.log2(eps) + np.log2(lf) + log_w / np.log(2)
    assert claim.paper_bits(m, k, n, eps, b) == pytest.approx((2 * e - n) * log_ratio)


def test_scaling_exponents_recover_a_known_law():
    """I = c M^(a m): degree per dimension a; at fixed K the rate is a d log2 M / dm."""
    dims, degrees = [1, 2, 3, 4], [4, 5, 6, 8]
    freq = np.stack([claim.frequency(m, degrees) for m in dims])
    values = 3.0 * freq ** (0.9 * np.asarray(dims)[:, None])
    per_dim, rate = claim.scaling_exponents(values, dims, degrees)
    assert per_dim == pytest.approx(0.9)
    expected = claim.slope(np.asarray(dims, float), np.log2(values[:, -1]))
    assert rate == pytest.approx(expected)


# ----------------------------------------------------------------------------- training / measure
def test_closed_form_gd_equals_the_loop():
    rng = np.random.default_rng(5)
    phi = rng.standard_normal((2, 3, 7))
    y = rng.standard_normal((2, 3))
    w0 = rng.standard_normal((2, 4, 7))
    w, relative, n_steps = claim.train_ensemble(phi, y, w0, max_steps=25, tolerance=1e-300)
    assert list(n_steps) == [25, 25]
    gram = phi @ np.swapaxes(phi, -1, -2)
    eig = np.linalg.eigvalsh(gram)
    lr = 2 / (eig[:, -1] + eig[:, 0])
    loop = w0.copy()
    for _ in range(25):
        residual = loop @ np.swapaxes(phi, -1, -2) - y[:, None, :]
        loop -= lr[:, None, None] * (residual @ phi)
    assert np.allclose(w, loop, atol=1e-10)
    w, relative, _ = claim.train_ensemble(phi, y, w0, max_steps=100000)
    assert relative.max() < 1e-9
    # converged GD = projection of w0 onto the interpolating set
    projection = w0 + (y[:, None, :] - w0 @ np.swapaxes(phi, -1, -2)) @ np.linalg.pinv(
        np.swapaxes(phi, -1, -2)
    )
    assert np.allclose(w, projection, atol=1e-7)


def test_measured_bits_recover_a_known_chi_square():
    """Test errors sigma^2 ncx2(k, lambda) drawn directly: the fit returns k, lambda and I."""
    rng = np.random.default_rng(6)
    k, h, rank = 60, 4000, 64
    sigma2 = 1.0 / rank
    theta_gap = np.zeros(k)
    theta_gap[0] = np.sqrt(0.5)  # ||nu||^2 = 0.5
    draws = theta_gap + np.sqrt(sigma2) * rng.standard_normal((h, k))
    errors = (draws**2).sum(-1)
    ensemble = (draws.mean(0) ** 2).sum()
    free, nc, values = claim.measured_bits(
        errors[None, None, None], np.array([[[ensemble]]]), np.array([[rank]]), PARAMS
    )
    assert free[0, 0, 0] == pytest.approx(k, rel=0.03)
    assert nc[0, 0, 0] == pytest.approx(0.5 / sigma2, rel=0.05)
    assert values[0, 0, 0] == pytest.approx(
        claim.bits(PARAMS["eps"] / sigma2, k, 0.5 / sigma2), rel=0.05
    )


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("generalization_difficulty_measure", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
