"""Tests of the inductive_bias_exact claim: the exact generalized-chi-square CDF against scipy's
chi2 / ncx2 (equal weights), brute-force Monte Carlo and a direct numerical convolution; the
spherical cap against Monte Carlo; the GP posterior against its defining identities; the
estimator's log density and fit against scipy; the measurements on hand-made inputs; and the
smoke chain."""

import numpy as np
import pytest
from scipy import integrate, special, stats

from replica import steps
from replica.claims import inductive_bias_exact as claim

PARAMS = {"n_train": 12, "n_test": 30, "lengthscale": 1.0, "eigen_floor": 1e-12}


@pytest.mark.parametrize("df,x", [(1, 0.3), (4, 0.05), (30, 3.0), (100, 20.0), (256, 60.0)])
def test_gchi2_logcdf_is_chi2_for_unit_weights(df, x):
    """Equal unit weights, no non-centrality: a plain chi-square, deep into the lower tail."""
    got = claim.gchi2_logcdf(x, np.ones(df), np.zeros(df))
    assert got == pytest.approx(stats.chi2.logcdf(x, df), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("scale,df,nc,x", [(0.1, 10, 5.0, 0.3), (2.0, 40, 30.0, 20.0)])
def test_gchi2_logcdf_is_scaled_ncx2_for_equal_weights(scale, df, nc, x):
    """Equal weights with the non-centrality split over the terms: a scaled ncx2."""
    spread = np.random.default_rng(0).dirichlet(np.ones(df)) * nc
    got = claim.gchi2_logcdf(x, np.full(df, scale), spread)
    assert got == pytest.approx(stats.ncx2.logcdf(x, df, nc, scale=scale), rel=1e-7)


def test_gchi2_logcdf_against_monte_carlo_and_offset():
    rng = np.random.default_rng(1)
    w = rng.uniform(0.01, 1.0, 8)
    b = rng.normal(size=8)
    q = ((rng.standard_normal((400_000, 8)) + b) ** 2) @ w
    for x in np.quantile(q, [0.01, 0.2, 0.7]):
        mc = np.mean(q <= x)
        exact = np.exp(claim.gchi2_logcdf(x, w, b**2))
        assert exact == pytest.approx(mc, abs=4 * np.sqrt(mc * (1 - mc) / len(q)))
    x = np.quantile(q, 0.3)
    assert claim.gchi2_logcdf(x + 0.5, w, b**2, offset=0.5) == pytest.approx(
        claim.gchi2_logcdf(x, w, b**2), rel=1e-12
    )
    assert claim.gchi2_logcdf(0.4, w, b**2, offset=0.5) == -np.inf


def test_gchi2_logcdf_two_terms_by_convolution():
    """Two unequal weights: P(w1 X1 + w2 X2 <= x) by a 1-D integral of scipy's ncx2 CDF."""
    (w1, w2), (n1, n2), x = (0.3, 1.7), (0.5, 2.0), 0.05

    def inner(u):  # density of w1 X1 at u times P(w2 X2 <= x - u)
        return stats.ncx2.pdf(u, 1, n1, scale=w1) * stats.ncx2.cdf(x - u, 1, n2, scale=w2)

    ref = integrate.quad(inner, 0, x, limit=200, epsrel=1e-11, points=[1e-9, 1e-6, 1e-3])[0]
    got = claim.gchi2_logcdf(x, np.array([w1, w2]), np.array([n1, n2]))
    assert got == pytest.approx(np.log(ref), rel=1e-6)


@pytest.mark.parametrize("dim", [2, 3, 7])
def test_spherical_cap_against_monte_carlo(dim):
    rng = np.random.default_rng(dim)
    err = np.concatenate([claim.sample_linear_errors(dim, 100_000, rng) for _ in range(4)])
    for eps in (0.1, 0.3):
        mc = np.mean(err <= eps)
        exact = np.exp(claim.cap_log_probability(eps, dim))
        assert exact == pytest.approx(mc, abs=4 * np.sqrt(mc * (1 - mc) / len(err)))
    # d = 2: the angle is uniform on [0, pi], P = eps; d = 3: P = (1 - cos(pi eps)) / 2
    assert np.exp(claim.cap_log_probability(0.2, 2)) == pytest.approx(0.2, rel=1e-12)
    assert np.exp(claim.cap_log_probability(0.2, 3)) == pytest.approx(
        (1 - np.cos(0.2 * np.pi)) / 2, rel=1e-12
    )


def test_torus_kernel_is_a_positive_definite_product_with_unit_diagonal():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 2 * np.pi, (40, 3))
    k = claim.torus_kernel(x, x, 1.0)
    assert np.allclose(np.diag(k), 1.0) and np.linalg.eigvalsh(k).min() > 0
    # periodic in every coordinate, and the ARD switch ignores the trailing coordinates
    assert np.allclose(claim.torus_kernel(x, x + 2 * np.pi, 1.0), k)
    shifted = x.copy()
    shifted[:, 2] = rng.uniform(0, 2 * np.pi, 40)
    assert np.allclose(
        claim.torus_kernel(shifted, shifted, 1.0, 2), claim.torus_kernel(x, x, 1.0, 2)
    )
    # 1-D: the Fourier series sum_k cos(k d) / (1 + l^2 k^2), normalised
    d = np.linspace(0, 2 * np.pi, 7)
    ks = np.arange(-4000, 4001)
    series = (np.cos(np.outer(d, ks)) / (1 + ks**2)).sum(1)
    got = claim.torus_kernel(d[:, None], np.zeros((1, 1)), 1.0)[:, 0]
    assert np.allclose(got, series / series[0], atol=1e-3)


def test_gp_posterior_interpolates_and_the_loss_law_matches_sampling():
    rng = np.random.default_rng(3)
    task = claim.draw_task(rng, 2, PARAMS)
    # posterior at the training inputs: mean = targets, covariance = 0
    at_train = {**task, "x_test": task["x_train"], "y_test": task["y_train"]}
    mean, cov = claim.gp_posterior(at_train, 1.0)
    assert np.allclose(mean, task["y_train"], atol=1e-8) and np.abs(cov).max() < 1e-8
    mean, cov = claim.gp_posterior(task, 1.0)
    w, nc, offset = claim.loss_law(mean, cov, task["y_test"], 1e-12)
    assert offset + np.sum(w * (1 + nc)) == pytest.approx(
        claim.target_error(mean, cov, task["y_test"], 1.0), rel=1e-9
    )
    losses = claim.sample_gp_losses(mean, cov, task["y_test"], PARAMS, 200_000, rng)
    assert losses.mean() == pytest.approx(np.sum(w * (1 + nc)) + offset, rel=5e-3)
    x = np.quantile(losses, 0.05)
    assert np.exp(claim.gchi2_logcdf(x, w, nc, offset)) == pytest.approx(0.05, abs=2e-3)


def test_debye_expansion_against_dlmf_and_scipy():
    """u_1, u_2 of DLMF 10.41.10 from the recurrence, and log I_nu against scipy's ive."""
    u = claim.DEBYE
    assert np.allclose(u[0, :4], np.array([0, 3, 0, -5]) / 24)
    assert np.allclose(u[1, :7], np.array([0, 0, 81, 0, -462, 0, 385]) / 1152)
    z = np.geomspace(1e-3, 300, 500)
    for order in (0.3, 4.0, 5.0, 9.5, 60.0):
        ref = np.log(special.ive(order, z)) + z
        assert np.allclose(claim.log_bessel_i(order, z), ref, rtol=1e-9, atol=1e-7)


def test_ncx2_logpdf_matches_scipy():
    x = np.geomspace(1e-4, 50, 200)
    for df, nc, scale in [(0.7, 3.0, 1.0), (14.2, 16.4, 0.03), (80.0, 0.5, 2.0), (3.0, 0.0, 1.0)]:
        ref = stats.ncx2.logpdf(x, df, nc, scale=scale) if nc else stats.chi2.logpdf(x / scale, df)
        assert np.allclose(claim.ncx2_logpdf(x, df, nc, scale), ref, rtol=1e-8, atol=1e-8)


def test_fit_reaches_scipys_maximum_likelihood():
    rng = np.random.default_rng(4)
    sample = 0.05 * rng.noncentral_chisquare(12, 6.0, 400)
    df, nc, scale = claim.fit_scaled_ncx2(sample)
    ours = -stats.ncx2.logpdf(sample, df, nc, scale=scale).sum()
    ref = stats.ncx2.fit(sample, floc=0)
    theirs = -stats.ncx2.logpdf(sample, ref[0], ref[1], scale=ref[3]).sum()
    assert ours <= theirs + 1e-6


def test_estimator_read_off_and_baselines_on_hand_made_inputs():
    rng = np.random.default_rng(5)
    sample = 2.0 * rng.chisquare(20, 20000)
    bits, (df, nc, scale) = claim.estimated_bits(sample, 4.0)
    assert bits * np.log(2) == pytest.approx(
        -stats.ncx2.logcdf(4.0, df, nc, scale=scale), rel=1e-10
    )
    exact = -stats.chi2.logcdf(2.0, 20) / np.log(2)
    assert bits == pytest.approx(exact, rel=0.1)
    assert claim.gaussian_bits(np.array([1.0, 3.0]), 0.0) == pytest.approx(
        -stats.norm.logcdf(-2.0) / np.log(2)
    )
    assert claim.direct_bits(np.array([1.0, 2.0, 3.0, 4.0]), 2.5) == 1.0
    assert claim.direct_bits(np.array([1.0, 2.0]), 0.5) == np.inf
    # Sankaran's z (nats = z^2 / 2) is a normal approximation: Phi(-|z|) ~ the chi-square CDF
    z = -np.sqrt(2 * claim.sankaran_nats(10.0, 20.0, 0.0, 1.0))
    assert stats.norm.cdf(z) == pytest.approx(stats.chi2.cdf(10.0, 20), rel=0.05)


def test_verdict_on_hand_made_metrics():
    theory = {
        "exact_bits": [[10.0, 20.0, 40.0], [10.0, 20.0, 30.0]],
        "ard_exact_bits": [[20.0, 20.0], [25.0, 25.0]],
        "linear_exact_bits": [5.0, 50.0],
    }
    metrics = {
        "estimated_bits": [[11.0, 19.0, 44.0], [10.0, 25.0, 24.0]],
        "ard_bits": [[20.0, 22.0], [25.0, 20.0]],
        "linear_bits": [[5.0, 45.0], [6.0, 60.0]],
        "gaussian_bits_top": [20.0, 60.0],
    }
    st = claim.verdict(metrics, theory, {})
    assert st["bits_ratio_at_top_dim"] == pytest.approx([1.1, 0.8])
    assert st["worst_relative_error"] == pytest.approx([0.1, 0.25])
    assert st["smallest_estimated_step"] == [8.0, -1.0]
    assert st["linear_bits_ratio_at_top_dim"] == pytest.approx([0.9, 1.2])
    assert st["gaussian_relative_error_at_top_dim"] == pytest.approx([0.5, 1.0])
    assert st["ard_bits_ratio_top_over_bottom"] == pytest.approx([1.1, 0.8])
    assert st["smallest_exact_step"] == [10.0, 10.0]
    assert st["ard_exact_ratio_top_over_bottom"] == [1.0, 1.0]
    assert st["estimated_bits_at_top_dim"] == [44.0, 24.0]


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("inductive_bias_exact", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
