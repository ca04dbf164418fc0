"""The kernel-ridge block against independent computations: direct linear solves, Gaussian
quadrature of the ReLU expectations, and the empirical kernels of a very wide random network."""

import numpy as np
import pytest
from scipy import integrate, stats

from replica.blocks import kernel_ridge as kr


def _gram(rng, n=40, dim=5):
    x = rng.standard_normal((n, dim))
    return np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1)), x


def test_spectral_ridge_matches_direct_solves_for_any_ridge_and_target_shape():
    rng = np.random.default_rng(0)
    gram, _ = _gram(rng)
    fit = kr.SpectralRidge(gram)
    y = rng.standard_normal(40)
    ys = rng.standard_normal((40, 3))
    for ridge in (1e-3, 0.1, 10.0):
        direct = np.linalg.solve(gram + ridge * np.eye(40), y)
        assert np.allclose(fit.coefficients(y, ridge), direct, rtol=1e-8, atol=1e-8)
        assert np.allclose(fit.fitted(y, ridge), gram @ direct, atol=1e-10)
        direct_k = np.linalg.solve(gram + ridge * np.eye(40), ys)
        assert np.allclose(fit.coefficients(ys, ridge), direct_k, rtol=1e-8, atol=1e-8)
    assert np.all((fit.shrinkage(0.1) >= 0) & (fit.shrinkage(0.1) < 1))


def test_spectral_ridge_batches_over_leading_axes():
    rng = np.random.default_rng(1)
    grams = np.stack([_gram(rng)[0] for _ in range(3)])
    y = rng.standard_normal((3, 40))
    fit = kr.SpectralRidge(grams)
    for b in range(3):
        direct = np.linalg.solve(grams[b] + 0.5 * np.eye(40), y[b])
        assert np.allclose(fit.coefficients(y, 0.5)[b], direct, atol=1e-9)


def test_ridge_predict_is_the_kernel_ridge_formula():
    rng = np.random.default_rng(2)
    gram, x = _gram(rng)
    xt = rng.standard_normal((7, 5))
    cross = np.exp(-0.5 * ((xt[:, None] - x[None]) ** 2).sum(-1))
    y = rng.standard_normal(40)
    expected = cross @ np.linalg.inv(gram + 0.3 * np.eye(40)) @ y
    assert np.allclose(kr.ridge_predict(gram, cross, y, 0.3), expected, atol=1e-9)


@pytest.mark.parametrize("u", [-0.9, -0.3, 0.0, 0.4, 0.95])
def test_arccos_kernels_are_the_relu_expectations_by_quadrature(u):
    """2 E[relu(a) relu(b)] and 2 E[1{a>0} 1{b>0}] for unit normals of correlation u, with
    b = u a + s e: the inner expectation over e in closed form, the outer one by quad."""
    s = np.sqrt(1 - u * u)
    phi, cdf = stats.norm.pdf, stats.norm.cdf
    e1 = integrate.quad(lambda a: phi(a) * a * (u * a * cdf(u * a / s) + s * phi(u * a / s)), 0, 40)
    e0 = integrate.quad(lambda a: phi(a) * cdf(u * a / s), 0, 40)
    assert kr.arccos1(np.array(u)) == pytest.approx(2 * e1[0], abs=1e-9)
    assert kr.arccos0(np.array(u)) == pytest.approx(2 * e0[0], abs=1e-9)
    # the closed forms at the ends: identical inputs keep the variance, opposite ones share nothing
    assert kr.arccos1(np.array(1.0)) == pytest.approx(1.0)
    assert kr.arccos0(np.array(-1.0)) == pytest.approx(0.0)


def test_relu_kernels_match_a_very_wide_random_network():
    """NNGP and NTK of f(x) = sqrt(2/m) v . relu(W x / sqrt(d)) from its random features."""
    rng = np.random.default_rng(3)
    dim, width = 4, 400_000
    x = rng.standard_normal((3, dim))
    w = rng.standard_normal((width, dim))
    pre = x @ w.T / np.sqrt(dim)  # (3, m)
    feats = np.sqrt(2 / width) * np.maximum(pre, 0)
    nngp_mc = feats @ feats.T
    v = rng.standard_normal(width)
    # gradient in W of sample i: sqrt(2/m) v_j 1{pre_ij > 0} x_i / sqrt(d)
    gate = (pre > 0) * v * np.sqrt(2 / width)
    ntk_mc = nngp_mc + (gate @ gate.T) * (x @ x.T) / dim
    nngp, ntk = kr.relu_kernels(x, x, hidden_layers=1)
    assert np.allclose(nngp, nngp_mc, rtol=0.02, atol=0.01)
    assert np.allclose(ntk, ntk_mc, rtol=0.02, atol=0.01)


def test_deeper_relu_kernels_keep_the_diagonal_and_recurse():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3))
    nngp1, ntk1 = kr.relu_kernels(x, x, 1)
    nngp2, ntk2 = kr.relu_kernels(x, x, 2)
    var = (x * x).sum(1) / 3
    assert np.allclose(np.diag(nngp2), var)  # He variance keeps Sigma(x, x)
    u1 = nngp1 / np.sqrt(np.outer(var, var))
    assert np.allclose(ntk2, ntk1 * kr.arccos0(u1) + nngp2)
    assert np.allclose(np.diag(ntk2), 3 * var)  # Theta(x, x) = (L + 1) Sigma(x, x)
