"""Kernel ridge regression through the Gram matrix's eigendecomposition, and the kernels of
infinitely wide fully-connected ReLU networks.

Kernel ridge regression (KRR) with Gram matrix K = V diag(d) V^T and ridge lambda fits
    f(x) = k(x, X) (K + lambda I)^{-1} y,
whose in-sample predictions are V diag(s) V^T y with the per-mode shrinkage s_j = d_j / (d_j +
lambda). Decomposing K once makes every later ridge, target vector or iterate (distillation
rounds, ridge sweeps, learning curves) a pair of matrix products.

Wide-network kernels (standard parametrisation with He variance 2, no biases; Arora et al.,
"On exact computation with an infinitely wide neural net", 2019, eq. 4-5): with the normalised
arc-cosine kernels of Cho & Saul (2009) in the correlation u = cos(angle),
    kappa0(u) = (pi - arccos u) / pi,
    kappa1(u) = (sqrt(1 - u^2) + u (pi - arccos u)) / pi,
a ReLU layer maps the covariance Sigma(x, x') to sqrt(Sigma(x,x) Sigma(x',x')) kappa1(u) (the
NNGP) and its derivative covariance is kappa0(u); the NTK follows Theta_h = Theta_{h-1} kappa0 +
Sigma_h from Theta_0 = Sigma_0 = x.x' / dim.
"""

from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- ridge regression
class SpectralRidge:
    """KRR on a fixed training Gram matrix, decomposed once (batched over leading axes)."""

    def __init__(self, gram: np.ndarray):
        gram = np.asarray(gram, dtype=float)
        self.eigenvalues, self.eigenvectors = np.linalg.eigh((gram + np.swapaxes(gram, -1, -2)) / 2)
        # a PSD kernel's rounding noise can leave eigenvalues at -1e-16: they are zero
        self.eigenvalues = np.clip(self.eigenvalues, 0.0, None)

    def shrinkage(self, ridge: float) -> np.ndarray:
        """s_j = d_j / (d_j + ridge): how much of each eigen-mode of the targets one fit keeps."""
        return self.eigenvalues / (self.eigenvalues + ridge)

    def to_modes(self, y: np.ndarray) -> np.ndarray:
        """V^T y (targets in the eigenbasis); y: (..., n) or (..., n, k)."""
        return _matmul_t(self.eigenvectors, y)

    def from_modes(self, c: np.ndarray) -> np.ndarray:
        return _matmul(self.eigenvectors, c)

    def coefficients(self, y: np.ndarray, ridge: float) -> np.ndarray:
        """alpha = (K + ridge I)^{-1} y, so that f(x) = k(x, X) alpha."""
        d = self.eigenvalues + ridge
        return self.from_modes(_scale(self.to_modes(y), 1.0 / d))

    def fitted(self, y: np.ndarray, ridge: float) -> np.ndarray:
        """In-sample predictions K (K + ridge I)^{-1} y."""
        return self.from_modes(_scale(self.to_modes(y), self.shrinkage(ridge)))


def ridge_predict(gram: np.ndarray, cross: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """KRR predictions k(X_test, X) (K + ridge I)^{-1} y by a Cholesky solve (one fit)."""
    n = gram.shape[-1]
    chol = np.linalg.cholesky(gram + ridge * np.eye(n))
    alpha = _cho_solve(chol, y)
    return cross @ alpha


def _cho_solve(chol: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular

    z = solve_triangular(chol, y, lower=True)
    return solve_triangular(chol.T, z, lower=False)


def _matmul_t(v: np.ndarray, y: np.ndarray) -> np.ndarray:
    vt = np.swapaxes(v, -1, -2)
    return (vt @ y[..., None])[..., 0] if y.ndim == v.ndim - 1 else vt @ y


def _matmul(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (v @ c[..., None])[..., 0] if c.ndim == v.ndim - 1 else v @ c


def _scale(c: np.ndarray, per_mode: np.ndarray) -> np.ndarray:
    """Multiply mode j of c by per_mode[j], for c shaped (..., n) or (..., n, k)."""
    if c.ndim == per_mode.ndim:
        return c * per_mode
    return c * per_mode[..., None]


# ----------------------------------------------------------------------------- wide ReLU nets
def arccos0(u: np.ndarray) -> np.ndarray:
    """kappa0(u) = (pi - arccos u) / pi = 2 E[relu'(a) relu'(b)] for unit Gaussians of corr u."""
    return (np.pi - np.arccos(np.clip(u, -1.0, 1.0))) / np.pi


def arccos1(u: np.ndarray) -> np.ndarray:
    """kappa1(u) = (sqrt(1 - u^2) + u (pi - arccos u)) / pi = 2 E[relu(a) relu(b)]."""
    u = np.clip(u, -1.0, 1.0)
    return (np.sqrt(1.0 - u * u) + u * (np.pi - np.arccos(u))) / np.pi


def relu_kernels(
    x1: np.ndarray, x2: np.ndarray, hidden_layers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(NNGP, NTK) of a fully-connected ReLU net with `hidden_layers` hidden layers, between the
    rows of x1 (n1, dim) and x2 (n2, dim). Standard parametrisation, He variance 2, no biases,
    a linear read-out: for one hidden layer, the kernels of
        f(x) = sqrt(2 / width) v . relu(W x / sqrt(dim)),   W, v standard normal,
    as the width goes to infinity (the NTK counts the gradients in W and in v)."""
    dim = x1.shape[-1]
    cov = x1 @ x2.T / dim
    var1 = np.einsum("id,id->i", x1, x1) / dim  # He variance 2 keeps Sigma(x, x) layer to layer
    var2 = np.einsum("id,id->i", x2, x2) / dim
    norm = np.sqrt(np.outer(var1, var2))
    ntk = cov
    for _ in range(hidden_layers):
        u = np.divide(cov, norm, out=np.zeros_like(cov), where=norm > 0)
        cov = norm * arccos1(u)
        ntk = ntk * arccos0(u) + cov
    return cov, ntk
