"""Tests of the unsup_pretraining_factor_model claim: the Bayes risk and the population-PCA
identity against second formulas, the Gaussian-design OLS risk and the Anderson constant of
the PCA representation error against Monte Carlo on the data distribution (explicit samples,
numpy's own solvers), the Bartlett Wishart draws against explicit sample covariances, the
batched fits against a per-seed reference, the measurements on hand-made inputs, and the smoke
chain."""

import numpy as np
import pytest

from replica import steps
from replica.claims import unsup_pretraining_factor_model as claim

SMALL = {
    "data_seed": 7,
    "d": 12,
    "r": 2,
    "sigma": 1.0,
    "factor_scale": 0.6,
    "sigma_y": 0.5,
}


def small_population():
    return claim.population(SMALL)


def test_population_directions():
    pop = small_population()
    assert np.linalg.norm(pop["theta"]) == pytest.approx(1.0)
    assert np.linalg.norm(pop["off_factor"]) == pytest.approx(1.0)
    assert np.allclose(pop["loadings"].T @ pop["off_factor"], 0.0, atol=1e-12)


def test_bayes_risk_two_formulas_and_monte_carlo():
    pop = small_population()
    a, theta = pop["loadings"], pop["theta"]
    closed = claim.bayes_risk(a, theta, 1.0, 0.5)
    # second formula: Var(y) - Cov(y, x) Cov(x)^-1 Cov(x, y), from the joint covariance
    moments = claim.label_moments(pop, SMALL, "informative")
    assert moments["bayes"] == pytest.approx(closed, rel=1e-12)
    # Monte Carlo: the residual of the regression of y on x in a huge sample
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200_000, 2))
    x = z @ a.T + rng.standard_normal((200_000, 12))
    y = z @ theta + 0.5 * rng.standard_normal(200_000)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    assert np.mean((y - x @ coef) ** 2) == pytest.approx(closed, rel=0.01)
    # non-informative label: Var(y | x) = sigma_y^2
    assert claim.label_moments(pop, SMALL, "non_informative")["bayes"] == pytest.approx(0.25)


def test_ols_excess_matches_monte_carlo():
    """E[excess] = s2 p / (n - p - 1) for Gaussian design, by brute force with pinv."""
    rng = np.random.default_rng(1)
    p, n, reps, s2 = 6, 20, 20_000, 0.7
    cov_root = rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)
    cov = cov_root @ cov_root.T
    beta = rng.standard_normal(p)
    x = rng.standard_normal((reps, n, p)) @ cov_root.T
    y = x @ beta + np.sqrt(s2) * rng.standard_normal((reps, n))
    gap = (np.linalg.pinv(x) @ y[..., None])[..., 0] - beta
    excess = np.einsum("kp,pq,kq->k", gap, cov, gap)
    se = excess.std() / np.sqrt(reps)
    assert abs(excess.mean() - claim.ols_excess(s2, p, n)) < 4 * se
    assert claim.ols_excess(1.0, 5, np.array([16.0]))[0] == pytest.approx(0.5)


def test_representation_constant_second_formula():
    """c from the singular values of A against Anderson's eigenbasis sum
    sum_i a_i^2 sum_{j>r} lambda_j lambda_i lambda_j / (lambda_i - lambda_j)^2, a = U^T w*."""
    pop = small_population()
    a, theta = pop["loadings"], pop["theta"]
    lam, vecs = np.linalg.eigh(claim.feature_covariance(a, 1.0))
    lam, vecs = lam[::-1], vecs[:, ::-1]
    moments = claim.label_moments(pop, SMALL, "informative")
    coords = vecs.T @ moments["best"]
    total = 0.0
    for i in range(2):
        for j in range(2, 12):
            total += coords[i] ** 2 * lam[j] * lam[i] * lam[j] / (lam[i] - lam[j]) ** 2
    assert claim.representation_constant(a, theta, 1.0) == pytest.approx(total, rel=1e-10)


def test_representation_error_matches_monte_carlo_with_explicit_samples():
    """Mean excess of the best head on explicit-sample PCA features, times m, against c."""
    pop = small_population()
    a, theta = pop["loadings"], pop["theta"]
    moments = claim.label_moments(pop, SMALL, "informative")
    rng = np.random.default_rng(2)
    m, reps = 2000, 300
    x = rng.standard_normal((reps, m, 2)) @ a.T + rng.standard_normal((reps, m, 12))
    basis = np.linalg.svd(x, full_matrices=False)[2][:, :2].transpose(0, 2, 1)  # top-2 PCs
    cov_f = basis.transpose(0, 2, 1) @ moments["cov"] @ basis
    proj = moments["cross"] @ basis  # (reps, 2)
    explained = np.einsum("kr,kr->k", proj, np.linalg.solve(cov_f, proj[..., None])[..., 0])
    excess = (moments["var_y"] - explained) - moments["bayes"]
    c = claim.representation_constant(a, theta, 1.0)
    assert excess.mean() * m / c == pytest.approx(1.0, abs=0.1)


def test_bartlett_wishart_matches_explicit_sample_covariances():
    rng = np.random.default_rng(3)
    d, m, draws = 4, 30, 8000
    root = rng.standard_normal((d, d))
    cov = root @ root.T / d + np.eye(d)
    rngs = [np.random.default_rng([5, k]) for k in range(draws)]
    bartlett = claim.wishart_sample_covariance(cov, m, rngs)
    x = rng.standard_normal((draws, m, d)) @ np.linalg.cholesky(cov).T
    explicit = x.transpose(0, 2, 1) @ x / m
    # mean cov and Var(S_ij) = (cov_ij^2 + cov_ii cov_jj) / m, both ways
    expected_var = (cov**2 + np.outer(np.diag(cov), np.diag(cov))) / m
    for sample in (bartlett, explicit):
        assert np.allclose(sample.mean(0), cov, atol=5 * np.sqrt(expected_var.max() / draws))
        assert np.allclose(sample.var(0), expected_var, rtol=0.1)
    # the top eigenvalue's law agrees too
    top_b = np.linalg.eigvalsh(bartlett)[:, -1]
    top_e = np.linalg.eigvalsh(explicit)[:, -1]
    assert top_b.mean() == pytest.approx(top_e.mean(), rel=0.015)
    assert top_b.std() == pytest.approx(top_e.std(), rel=0.08)


def test_batched_fits_match_a_per_seed_reference():
    pop = small_population()
    moments = claim.label_moments(pop, SMALL, "informative")
    rngs = [np.random.default_rng(k) for k in range(3)]
    x, y = claim.labeled_sample(pop, SMALL, "informative", rngs, 40)
    w = claim.least_squares(x, y)
    for s in range(3):
        ref = np.linalg.lstsq(x[s], y[s], rcond=None)[0]
        assert np.allclose(w[s], ref, atol=1e-10)
        gap = ref - moments["best"]
        assert claim.excess_risk(w, moments)[s] == pytest.approx(gap @ moments["cov"] @ gap)
    # the exact population head on the true factor subspace has zero excess
    basis = np.linalg.qr(pop["loadings"])[0][None]
    head = claim.subspace_least_squares(basis, moments)
    assert claim.excess_risk(head, moments)[0] == pytest.approx(0.0, abs=1e-12)


def test_loglog_slope_on_power_laws():
    x = np.array([1.0, 10.0, 100.0])
    assert claim.loglog_slope(x, 3 * x**-1.0) == pytest.approx(-1.0)
    batch = np.stack([2 * x**-0.5, x**2])
    assert claim.loglog_slope(x, batch) == pytest.approx([-0.5, 2.0])


def test_theory_curves_special_values_and_the_pca_identity():
    data = claim.generate(SMALL, [0])
    params = {
        **SMALL,
        "n_grid": [20, 40],
        "m_grid": [1000, 10000],
        "m_pretrain": 10000,
        "advantage_n": 40,
        "fit_min_m": 1000,
    }
    th = claim.theory(data, params)
    # the population top-r principal components span col(A): their residual is the Bayes risk
    assert th["population_pca_residual_over_bayes"] == pytest.approx(1.0, abs=1e-12)
    assert th["m_exponent"] == pytest.approx(-1.0)
    bayes, c = th["bayes_risk"], th["representation_constant"]
    assert th["pretrain_excess"][1] == pytest.approx(c / 1e4 + (bayes + c / 1e4) * 2 / 37)
    assert th["non_informative_pretrain_excess"][0] == pytest.approx(1.0 + 1.25 * 2 / 17)
    assert th["non_informative_ols_excess"][1] == pytest.approx(0.25 * 12 / 27)


def test_verdict_on_hand_made_metrics():
    n_grid, m_grid = [120, 200, 400], [100, 1000, 10000]
    theory = {
        "bayes_risk": 0.5,
        "representation_constant": 2.0,
        "ols_excess": [2.0, 0.5, 0.2],
        "pretrain_excess": [0.02, 0.01, 0.005],
        "advantage_log_ratio": 3.9,
        "non_informative_advantage_log_ratio": -1.4,
        "pretrain_n_exponent": -1.0,
        "m_exponent": -1.0,
        "population_pca_residual_over_bayes": 1.0,
    }
    arm = {
        "ols_excess": [[2.0, 0.5, 0.2], [2.0, 1.0, 0.2]],
        "pretrain_excess": [[0.02, 0.01, 0.005], [0.04, 0.02, 0.01]],
        "representation_excess": [[0.5, 2e-3, 2e-4], [0.5, 4e-3, 4e-4]],
        "bayes_risk": 0.5,
    }
    blind = {**arm, "pretrain_excess": [[1.0, 1.0, 1.0], [1.0, 2.0, 1.0]]}
    metrics = {"n_grid": n_grid, "m_grid": m_grid, "informative": arm, "non_informative": blind}
    params = {"d": 100, "ols_check_margin": 20, "advantage_n": 200, "fit_min_m": 1000}
    st = claim.verdict(metrics, theory, params)
    assert st["advantage_log_ratio"] == pytest.approx([np.log(50), np.log(50)])
    assert st["non_informative_advantage_log_ratio"] == pytest.approx([np.log(0.5), np.log(0.5)])
    # OLS total risk ratio averaged over n = 120, 200, 400 (all >= d + 20)
    assert st["ols_risk_over_exact"][0] == pytest.approx(1.0)
    assert st["ols_risk_over_exact"][1] == pytest.approx((1 + 1.5 / 1.0 + 1) / 3)
    assert st["pretrain_excess_over_exact"] == pytest.approx([1.0, 2.0])
    assert st["m_exponent"] == pytest.approx([-1.0, -1.0])  # fitted over m >= 1000 only
    assert st["m_constant_over_theory"] == pytest.approx([1.0, 2.0])
    assert st["m_exponent_over_bound_rate"] == pytest.approx([2.0, 2.0])
    assert st["pretrain_n_exponent"][0] == pytest.approx(
        np.polyfit(np.log(n_grid), np.log([0.02, 0.01, 0.005]), 1)[0]
    )


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("unsup_pretraining_factor_model", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
