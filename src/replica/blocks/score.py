"""Score-based models with exact answers: Gaussian-mixture laws under the forward noising
processes, denoising score matching targets, samplers, and divergences between samples.

Laws. A Gaussian mixture sum_k w_k N(mu_k, Sigma_k) stays one under x -> a x + s z (z standard
normal): means a mu_k, covariances a^2 Sigma_k + s^2 I. So both forward processes have marginals
in closed form,
    VE:  x_sigma = x_0 + sigma z,                         (a, s) = (1, sigma)
    VP:  x_t = alpha_t x_0 + sqrt(1 - alpha_t^2) z,       alpha_t = exp(-int_0^t beta / 2)
(linear beta(t) = beta_min + t (beta_max - beta_min), Song et al. 2021), and so do their scores
    grad log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x),  r_k the posterior responsibilities,
and the optimal denoiser (Tweedie): E[x_0 | x_sigma = x] = x + sigma^2 grad log p_sigma(x) (VE).

Denoising score matching. For x = x_0 + sigma eps, the regression target -eps / sigma has
conditional mean grad log p_sigma(x): a score network is a regression on noisy labels.

Samplers (VE, from sigma_max down a decreasing grid):
    probability-flow ODE  dx/dsigma = -sigma grad log p_sigma(x)   (Euler or Heun),
    reverse SDE, Euler-Maruyama: x <- x + (s_i^2 - s_{i+1}^2) score(x, s_i)
                                          + sqrt(s_i^2 - s_{i+1}^2) z.
For Gaussian data, N(mu, C), the ODE's flow is exact per eigen-mode of C (`gaussian_flow`):
    x(sigma) - mu = V diag(sqrt((lambda + sigma^2) / (lambda + sigma_T^2))) V^T (x(sigma_T) - mu),
and the Euler-Maruyama chain is linear, so its covariance follows an exact recursion
(`gaussian_em_covariance`): the step errors of both samplers are known without sampling.

Divergences: W2 between Gaussians in closed form; sliced W2, energy distance and RBF MMD^2 on
samples (their own bias is measured by comparing two samples of the same law).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# ----------------------------------------------------------------------------- laws
@dataclass(frozen=True)
class GaussianMixture:
    """sum_k weights[k] N(means[k], covs[k]); weights (K,), means (K, d), covs (K, d, d)."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    def __post_init__(self):
        w = np.asarray(self.weights, float)
        if np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError("mixture weights must be non-negative and sum to 1")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", np.atleast_2d(np.asarray(self.means, float)))
        object.__setattr__(self, "covs", np.asarray(self.covs, float))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def noised(self, scale: float = 1.0, noise: float = 0.0) -> GaussianMixture:
        """The law of scale * X + noise * Z, Z standard normal independent of X."""
        eye = np.eye(self.dim)
        return GaussianMixture(
            self.weights, scale * self.means, scale**2 * self.covs + noise**2 * eye
        )

    def ve(self, sigma: float) -> GaussianMixture:
        return self.noised(1.0, sigma)

    def vp(self, t: float, beta_min: float = 0.1, beta_max: float = 20.0) -> GaussianMixture:
        alpha = vp_alpha(t, beta_min, beta_max)
        return self.noised(alpha, np.sqrt(1.0 - alpha**2))

    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    def cov(self) -> np.ndarray:
        centred = self.means - self.mean()
        within = np.einsum("k,kij->ij", self.weights, self.covs)
        return within + np.einsum("k,ki,kj->ij", self.weights, centred, centred)

    def _component_terms(self, x: np.ndarray):
        """log w_k N(x; mu_k, Sigma_k) (N, K) and Sigma_k^{-1} (x - mu_k) (N, K, d)."""
        x = np.atleast_2d(x)
        chol = np.linalg.cholesky(self.covs)  # (K, d, d)
        diff = x[:, None, :] - self.means[None]  # (N, K, d)
        # solve L z = diff per component: z = L^{-1} (x - mu)
        z = np.linalg.solve(chol[None], diff[..., None])[..., 0]
        log_det = 2 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)  # (K,)
        log_comp = (
            np.log(np.where(self.weights > 0, self.weights, 1e-300))
            - 0.5 * (z * z).sum(-1)
            - 0.5 * (log_det + self.dim * np.log(2 * np.pi))
        )
        precision_diff = np.linalg.solve(self.covs[None], diff[..., None])[..., 0]
        return log_comp, precision_diff

    def log_density(self, x: np.ndarray) -> np.ndarray:
        log_comp, _ = self._component_terms(x)
        top = log_comp.max(1, keepdims=True)
        return (top + np.log(np.exp(log_comp - top).sum(1, keepdims=True)))[:, 0]

    def responsibilities(self, x: np.ndarray) -> np.ndarray:
        log_comp, _ = self._component_terms(x)
        log_comp -= log_comp.max(1, keepdims=True)
        r = np.exp(log_comp)
        return r / r.sum(1, keepdims=True)

    def score(self, x: np.ndarray) -> np.ndarray:
        """grad log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x), rows of x (N, d)."""
        log_comp, precision_diff = self._component_terms(x)
        log_comp -= log_comp.max(1, keepdims=True)
        r = np.exp(log_comp)
        r /= r.sum(1, keepdims=True)
        return -np.einsum("nk,nkd->nd", r, precision_diff)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        chol = np.linalg.cholesky(self.covs)
        z = rng.standard_normal((n, self.dim))
        return self.means[comp] + np.einsum("nij,nj->ni", chol[comp], z)


def gaussian(mean, cov) -> GaussianMixture:
    mean = np.atleast_1d(np.asarray(mean, float))
    return GaussianMixture(np.ones(1), mean[None], np.atleast_2d(np.asarray(cov, float))[None])


def vp_alpha(t, beta_min: float = 0.1, beta_max: float = 20.0):
    """alpha_t = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2) / 2) for linear beta(t)."""
    t = np.asarray(t, float)
    return np.exp(-0.5 * (beta_min * t + 0.5 * (beta_max - beta_min) * t * t))


def ve_denoiser(law: GaussianMixture, x: np.ndarray, sigma: float) -> np.ndarray:
    """Tweedie: E[x_0 | x_0 + sigma z = x] = x + sigma^2 grad log p_sigma(x), law = p_0."""
    return x + sigma**2 * law.ve(sigma).score(x)


# ----------------------------------------------------------------------------- score matching
def dsm_pairs(x0, sigma, noise):
    """Noisy inputs x0 + sigma noise and the DSM regression targets -noise / sigma.

    Works on numpy arrays and torch tensors alike (sigma a scalar or broadcastable); the
    targets' conditional mean given the input is the score of the noised law."""
    return x0 + sigma * noise, -noise / sigma


# ----------------------------------------------------------------------------- samplers
def ve_sigmas(sigma_max: float, sigma_min: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """Decreasing grid of steps + 1 noise levels (Karras et al. 2022 spacing, rho = 7)."""
    i = np.arange(steps + 1) / steps
    return (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def probability_flow(score, x: np.ndarray, sigmas: np.ndarray, method: str = "heun"):
    """Integrate dx/dsigma = -sigma score(x, sigma) along the grid; score(x, sigma) -> (N, d)."""
    if method not in ("euler", "heun"):
        raise ValueError(f"method {method!r} not in ('euler', 'heun')")
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        drift = -s * score(x, s)
        x_euler = x + (s_next - s) * drift
        if method == "euler" or s_next == 0:
            x = x_euler
        else:
            x = x + (s_next - s) * 0.5 * (drift - s_next * score(x_euler, s_next))
    return x


def reverse_sde(score, x: np.ndarray, sigmas: np.ndarray, rng: np.random.Generator):
    """Euler-Maruyama on the VE reverse SDE along the grid (variance-exploding, no drift)."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        step = s * s - s_next * s_next
        x = x + step * score(x, s) + np.sqrt(step) * rng.standard_normal(x.shape)
    return x


def gaussian_flow(x, mean, cov, sigma_from: float, sigma_to: float) -> np.ndarray:
    """The exact probability-flow map of N(mean, cov) data from sigma_from to sigma_to."""
    lam, vecs = np.linalg.eigh(cov)
    gain = np.sqrt((lam + sigma_to**2) / (lam + sigma_from**2))
    return mean + ((x - mean) @ vecs * gain) @ vecs.T


def gaussian_em_covariance(cov, start_cov, sigmas: np.ndarray) -> np.ndarray:
    """Covariance after reverse_sde with the exact score of N(mu, cov) data, started from
    N(mu, start_cov): each step is x <- A x + sqrt(step) z with A = I - step (cov + s^2 I)^-1."""
    eye = np.eye(len(cov))
    out = np.asarray(start_cov, float)
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        step = s * s - s_next * s_next
        a = eye - step * np.linalg.inv(cov + s * s * eye)
        out = a @ out @ a.T + step * eye
    return out


# ----------------------------------------------------------------------------- divergences
def gaussian_w2(mean1, cov1, mean2, cov2) -> float:
    """W2(N(m1, C1), N(m2, C2)) = sqrt(|m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2))."""
    root2 = _psd_sqrt(np.asarray(cov2, float))
    cross = _psd_sqrt(root2 @ np.asarray(cov1, float) @ root2)
    gap = np.sum((np.asarray(mean1) - np.asarray(mean2)) ** 2)
    return float(np.sqrt(max(gap + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(cross), 0.0)))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    lam, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(lam, 0, None))) @ vecs.T


def sliced_w2(x: np.ndarray, y: np.ndarray, projections: int, rng: np.random.Generator) -> float:
    """Sliced W2 between two equal-size samples: root mean over random unit directions of the
    1-D W2^2 of the projections (sorted coupling)."""
    if len(x) != len(y):
        raise ValueError("sliced_w2 needs samples of equal size")
    theta = rng.standard_normal((x.shape[1], projections))
    theta /= np.linalg.norm(theta, axis=0)
    px, py = np.sort(x @ theta, axis=0), np.sort(y @ theta, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (within-sample terms as U-statistics)."""

    def mean_dist(a, b, same):
        d = np.sqrt(np.maximum(_sq_dists(a, b), 0.0))
        if not same:
            return d.mean()
        np.fill_diagonal(d, 0.0)  # rounding leaves ~1e-8 on the diagonal
        return d.sum() / (len(a) * (len(a) - 1))

    return float(2 * mean_dist(x, y, False) - mean_dist(x, x, True) - mean_dist(y, y, True))


def mmd2_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD^2 with the kernel exp(-|a - b|^2 / (2 bandwidth^2))."""

    def k(a, b):
        return np.exp(-_sq_dists(a, b) / (2 * bandwidth**2))

    kxx, kyy = k(x, x), k(y, y)
    n, m = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2 * k(x, y).mean())


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
