"""Tests of the rf_attention claim: the correlation moments against Monte Carlo, quadrature and
the d = 3 closed form; the ReLU moment against its special cases and Monte Carlo; the
infinite-head kernels against very wide random features; the features against a brute-force
loop; the ridge learning curve against the primal solve; the verdict on hand-made metrics."""

import numpy as np
import pytest
from scipy.special import ndtr

from replica import steps
from replica.blocks.kernel_ridge import arccos1
from replica.claims import rf_attention as claim

PARAMS = {
    "data_seed": 5,
    "dim": 4,
    "keys": 3,
    "heads": 16,
    "bias_mean": 1.0,
    "ridge_factor": 1e-5,
    "sample_sizes": [8, 16],
    "n_test": 8,
    "bias_check_n": 8,
    "kernel_check_points": 6,
    "quadrature_nodes": 48,
}


def sequences(n, keys, dim, seed=0):
    return claim.sphere(np.random.default_rng(seed), (n, keys + 1), dim)


# ----------------------------------------------------------------------------- moments
@pytest.mark.parametrize("dim", [3, 4, 8])
def test_even_moments_match_quadrature_and_monte_carlo(dim):
    t = claim.correlations(sequences(200_000, 1, dim))[:, 0]
    for k in (1, 2, 3):
        closed = claim.even_moment(dim, k)
        assert claim.correlation_expectation(lambda u, k=k: u ** (2 * k), dim) == pytest.approx(
            closed
        )
        assert np.mean(t ** (2 * k)) == pytest.approx(closed, rel=0.03)
    assert claim.even_moment(dim, 1) == pytest.approx(1.0)  # t has unit variance


def test_cosine_moment_in_three_dimensions_is_sinc():
    """For d = 3, <x_0, x_i> is uniform on [-1, 1] (Archimedes), so E cos(sqrt 3 s) = sinc."""
    expected = np.sin(np.sqrt(3)) / np.sqrt(3)
    assert claim.correlation_expectation(np.cos, 3) == pytest.approx(expected, rel=1e-12)


def test_target_moments_match_monte_carlo():
    dim, keys = 4, 5
    x = sequences(200_000, keys, dim, seed=1)
    raw = claim.raw_targets(claim.correlations(x))
    for name, (mean, var) in claim.target_moments(dim, keys).items():
        assert np.mean(raw[name]) == pytest.approx(mean, abs=0.01)
        assert np.var(raw[name]) == pytest.approx(var, rel=0.03)
    y = claim.standardised_targets(x)
    assert np.allclose(y.mean(0), 0, atol=0.01) and np.allclose(y.var(0), 1, rtol=0.03)


def test_key_average_attains_the_invariant_floor():
    """Exchangeable keys: the best invariant predictor of t_1 is the key average."""
    keys = 6
    t = claim.correlations(sequences(200_000, keys, 4, seed=2))
    floor = np.mean((t[:, 0] - t.mean(1)) ** 2) / np.var(t[:, 0])
    assert floor == pytest.approx(claim.invariant_floor(keys), rel=0.02)


# ----------------------------------------------------------------------------- ReLU moment
def test_relu_moment_special_cases():
    c = np.linspace(-0.95, 0.95, 9)
    assert np.allclose(claim.relu_moment(0.0, 0.0, c, 48), arccos1(c) / 2, atol=1e-10)
    m = np.array([-1.5, -0.2, 0.0, 0.7, 2.0])
    first = m * ndtr(m) + np.exp(-(m**2) / 2) / np.sqrt(2 * np.pi)  # E relu(m + g)
    assert np.allclose(claim.relu_moment(m, m[::-1], 0.0, 48), first * first[::-1], atol=1e-10)
    second = (m**2 + 1) * ndtr(m) + m * np.exp(-(m**2) / 2) / np.sqrt(2 * np.pi)  # E relu^2
    assert np.allclose(claim.relu_moment(m, m, 1.0, 48), second, atol=1e-8)


def test_relu_moment_matches_monte_carlo():
    rng = np.random.default_rng(3)
    g1, xi = rng.standard_normal((2, 2_000_000))
    for m1, m2, c in [(0.7, -0.3, 0.4), (-1.0, 1.2, -0.6), (1.5, 1.5, 0.9)]:
        g2 = c * g1 + np.sqrt(1 - c * c) * xi
        mc = np.mean(np.maximum(m1 + g1, 0) * np.maximum(m2 + g2, 0))
        assert claim.relu_moment(m1, m2, c, 48) == pytest.approx(mc, rel=0.01)


# ----------------------------------------------------------------------------- kernels, features
@pytest.mark.parametrize("arm", ["rfa", "rfa_biased", "rfmlp"])
def test_wide_random_features_approach_the_kernel_limit(arm):
    x = sequences(5, 3, 4, seed=4)
    params = {**PARAMS, "heads": 100_000}
    phi = claim.features(x, arm, params, seed=0)
    limit = claim.kernel_limit(x, arm, params)
    assert np.abs(phi @ phi.T - limit).max() < 0.02 * np.abs(limit).max()  # ~4 MC errors


def test_rfa_kernel_symmetric_fill_matches_full_matrix():
    x = sequences(7, 3, 4, seed=5)
    full = claim.rfa_kernel(x, x, 1.0, 48)
    assert np.allclose(claim.rfa_kernel(x, x, 1.0, 48, symmetric=True), full, atol=1e-14)
    assert np.allclose(full, full.T, atol=1e-14)


def test_rfa_features_match_a_loop_over_heads_and_keys():
    x = sequences(3, 4, 4, seed=6)
    w = claim.query_key_matrices({**PARAMS, "heads": 5}, seed=1, biased=True)
    tokens = claim.augment(x)
    brute = np.zeros((3, 5, 5))
    for p in range(3):
        for m in range(5):
            for i in range(1, 5):
                score = max(tokens[p, 0] @ w[m] @ tokens[p, i], 0.0)
                brute[p, m] += score * tokens[p, i] / 4
    assert np.allclose(claim.rfa_features(x, w), brute.reshape(3, -1) / np.sqrt(5), atol=1e-12)


def test_bias_shifts_the_pre_activation_by_mu_t():
    x = sequences(4, 3, 4, seed=7)
    w0 = claim.query_key_matrices(PARAMS, seed=2, biased=False)
    w1 = claim.query_key_matrices(PARAMS, seed=2, biased=True)
    tokens = claim.augment(x)
    shift = np.einsum("pe,mef,pif->pmi", tokens[:, 0], w1 - w0, tokens[:, 1:])
    t = claim.correlations(x)
    assert np.allclose(shift, PARAMS["bias_mean"] * t[:, None, :], atol=1e-12)


def test_rfa_is_permutation_invariant_and_rfmlp_is_not():
    x = sequences(4, 5, 4, seed=8)
    shuffled = x[:, [0, 3, 1, 5, 2, 4]]  # the query stays first
    params = {**PARAMS, "keys": 5}
    for arm, invariant in (("rfa", True), ("rfa_biased", True), ("rfmlp", False)):
        same = np.allclose(
            claim.features(x, arm, params, 0), claim.features(shuffled, arm, params, 0)
        )
        assert same == invariant, arm


def test_learning_curve_matches_the_primal_ridge_solve():
    rng = np.random.default_rng(9)
    phi, y = rng.standard_normal((30, 12)), rng.standard_normal((30, 2))
    n_max, ridge_factor = 20, 1e-2
    mse = claim.learning_curve(phi, y, [10, 20], n_max, ridge_factor)
    for row, n in zip(mse, (10, 20), strict=True):
        train = phi[:n]
        ridge = ridge_factor * np.trace(train @ train.T)
        coef = np.linalg.solve(train.T @ train + ridge * np.eye(12), train.T @ y[:n])
        expected = ((phi[n_max:] @ coef - y[n_max:]) ** 2).mean(0)
        assert np.allclose(row, expected, rtol=1e-9)


# ----------------------------------------------------------------------------- verdict
def test_verdict_on_hand_made_metrics():
    seeds, sizes = 2, [8, 16]
    mse = {arm: np.ones((seeds, 2, len(claim.TARGETS))) for arm in claim.ARMS}
    q, cos, key = (claim.TARGETS.index(t) for t in ("quadratic", "cos", "key_order"))
    mse["rfa"][:, 1, q] = [0.1, 0.2]
    mse["rfmlp"][:, 1, q] = [0.5, 2.0]  # the second seed worse than the null predictor
    mse["rfa"][:, 1, key] = [0.9, 0.9]
    mse["rfmlp"][:, 1, key] = [0.3, 0.45]
    mse["rfa_biased"][:, 0, cos] = [0.25, 0.5]
    metrics = {
        "sample_sizes": sizes,
        "targets": list(claim.TARGETS),
        "arms": {arm: {"test_mse": v} for arm, v in mse.items()},
    }
    theory = {
        "head_kernel_deviation": {"rfa": [0.01, 0.02], "rfa_biased": [0.03, 0.0], "rfmlp": [0, 0]},
        "target_variance_ratio": [1.0, 0.9],
        "key_order_floor": 0.75,
    }
    st = claim.verdict(metrics, theory, PARAMS)
    assert st["mse_ratio_quadratic"] == pytest.approx([0.2, 0.1])
    assert st["mse_ratio_quadratic_vs_null_capped"] == pytest.approx([0.2, 0.2])
    assert st["mse_ratio_key_order"] == pytest.approx([3.0, 2.0])
    assert st["bias_mse_ratio_cos"] == pytest.approx([0.25, 0.5])
    assert st["head_kernel_deviation"] == [0.03, 0.02]
    assert st["rfa_key_order_mse"] == [0.9, 0.9]
    with pytest.raises(ValueError):
        claim.size_index(sizes, 12)


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("rf_attention", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
