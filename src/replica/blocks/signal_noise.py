"""The signal-noise patch model of feature-learning theory, its two-layer patch network, and
the signal-learning / noise-memorization measurements.

Data (one sample): two patches, x = [x1, x2] in R^{2 x d}. The signal patch is x1 = y * mu
("antipodal": one signal direction, mu_{-1} = -mu) or x1 = mu_y with mu_{+1} perpendicular to
mu_{-1} ("orthogonal"). The noise patch x2 = xi is Gaussian N(0, sigma^2 I) restricted to the
complement of the signal directions, or sparse (s random coordinates of magnitude sigma and
random sign). The signals sit on the first coordinates, so "orthogonal to the signal" is exact:
those coordinates of xi are zero. Training labels may be flipped with a fixed probability.

Network, with seeds as a leading batch dimension S (one batched model for all seeds):

    F_j(x) = sum_r v_{j,r} sum_p sigma(<w_{j,r}, x_p>),     f(x) = F_{+1}(x) - F_{-1}(x)

with v_{j,r} = 1/m (the fixed second layer of Cao et al. 2022, Kou et al. 2023) unless
trainable output weights are passed. Class index 0 is j = +1 and index 1 is j = -1.

Measurements follow the signal-noise decomposition of the filters,

    w_{j,r}(t) = w_{j,r}(0) + sum_k gamma_{j,r,k} mu_k/|mu_k|^2 + sum_i rho_{j,r,i} xi_i/|xi_i|^2,

solved exactly (least squares in the span), so gamma is "signal learning" and rho is "noise
memorization" in the papers' sense, plus the plain inner products <w, mu> and <w, xi_i>.
"""

from __future__ import annotations

import numpy as np
import torch

SIGNAL_KINDS = ("antipodal", "orthogonal")
NOISE_KINDS = ("gaussian", "sparse")


# ---------------------------------------------------------------- data
def signal_vectors(dim: int, signal_norm: float, kind: str = "antipodal") -> np.ndarray:
    """Rows: the signal patch of class +1 and of class -1 (before any label flip)."""
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"signal kind {kind!r} not in {SIGNAL_KINDS}")
    mu = np.zeros((2, dim))
    mu[0, 0] = signal_norm
    if kind == "antipodal":
        mu[1, 0] = -signal_norm
    else:
        mu[1, 1] = signal_norm
    return mu


def signal_span_dim(kind: str) -> int:
    """Number of leading coordinates the signals occupy (kept free of noise)."""
    return 1 if kind == "antipodal" else 2


def noise_patches(
    rng: np.random.Generator,
    n: int,
    dim: int,
    sigma: float,
    kind: str = "antipodal",
    noise: str = "gaussian",
    sparsity: int = 0,
) -> np.ndarray:
    """n noise patches orthogonal to the signal directions of `kind`."""
    skip = signal_span_dim(kind)
    xi = np.zeros((n, dim))
    if noise == "gaussian":
        xi[:, skip:] = sigma * rng.standard_normal((n, dim - skip))
    elif noise == "sparse":
        if not 0 < sparsity <= dim - skip:
            raise ValueError(f"sparse noise needs 0 < sparsity <= {dim - skip}, got {sparsity}")
        for i in range(n):
            coords = skip + rng.choice(dim - skip, size=sparsity, replace=False)
            xi[i, coords] = sigma * rng.choice([-1.0, 1.0], size=sparsity)
    else:
        raise ValueError(f"noise kind {noise!r} not in {NOISE_KINDS}")
    return xi


def patch_dataset(
    rng: np.random.Generator,
    n: int,
    dim: int,
    signal_norm: float,
    sigma: float = 1.0,
    flip_rate: float = 0.0,
    kind: str = "antipodal",
    noise: str = "gaussian",
    sparsity: int = 0,
) -> dict[str, np.ndarray]:
    """One draw of the signal-noise data: x (n, 2, d), labels, flips, the signals.

    `label` is what training sees (flipped with probability flip_rate); `clean_label` made the
    signal patch. Classes are balanced in expectation (uniform labels).
    """
    mu = signal_vectors(dim, signal_norm, kind)
    clean = rng.choice(np.array([1, -1]), size=n)
    flipped = rng.random(n) < flip_rate
    x = np.empty((n, 2, dim))
    x[:, 0] = mu[np.where(clean > 0, 0, 1)]
    x[:, 1] = noise_patches(rng, n, dim, sigma, kind, noise, sparsity)
    return {
        "x": x,
        "label": np.where(flipped, -clean, clean).astype(np.int64),
        "clean_label": clean.astype(np.int64),
        "flipped": flipped,
        "mu": mu,
    }


def stack_seeds(draws: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-seed draws -> arrays with a leading seed axis."""
    return {key: np.stack([d[key] for d in draws]) for key in draws[0]}


def signal_to_noise(signal_norm: float, sigma: float, dim: int) -> float:
    """SNR = |mu| / (sigma sqrt(d)), the papers' control variable (n SNR^2 sets the regime)."""
    return signal_norm / (sigma * np.sqrt(dim))


def signal_norm_for(n_snr2: float, n: int, sigma: float, dim: int) -> float:
    """|mu| that puts a data set of n samples at the given n * SNR^2."""
    return float(sigma * np.sqrt(dim * n_snr2 / n))


# ---------------------------------------------------------------- network
def activation(name: str):
    """Activations used by the patch-network papers (ReLU, its powers, smooth variants)."""
    table = {
        "relu": torch.relu,
        "relu2": lambda z: torch.relu(z) ** 2,
        "relu3": lambda z: torch.relu(z) ** 3,
        "softplus": torch.nn.functional.softplus,
        "linear": lambda z: z,
        "tanh": torch.tanh,
    }
    if name not in table:
        raise ValueError(f"activation {name!r} not in {sorted(table)}")
    return table[name]


def init_filters(
    generator: torch.Generator,
    n_seeds: int,
    width: int,
    dim: int,
    sigma0: float,
    n_classes: int = 2,
    dtype=None,
) -> torch.Tensor:
    """Filters w_{j,r} ~ N(0, sigma0^2 I): shape (S, n_classes, width, d), float64 unless
    dtype says otherwise."""
    shape = (n_seeds, n_classes, width, dim)
    dtype = torch.float64 if dtype is None else dtype
    return sigma0 * torch.randn(shape, generator=generator, dtype=dtype)


def class_outputs(
    filters: torch.Tensor, x: torch.Tensor, act, out_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """F_j(x_i) for every seed, sample and class: shape (S, n, n_classes).

    filters (S, C, m, d); x (S, n, P, d); out_weights (S, C, m) or None for v = 1/m.
    """
    pre = torch.einsum("scmd,snpd->sncmp", filters, x)
    hidden = act(pre).sum(dim=-1)  # sum over patches: (S, n, C, m)
    if out_weights is None:
        return hidden.mean(dim=-1)
    return torch.einsum("sncm,scm->snc", hidden, out_weights)


def margin_output(class_out: torch.Tensor) -> torch.Tensor:
    """f = F_{+1} - F_{-1}: shape (S, n)."""
    return class_out[..., 0] - class_out[..., 1]


def logistic_loss(margins: torch.Tensor) -> torch.Tensor:
    """Per-sample log(1 + exp(-y f)), stable for large margins."""
    return torch.nn.functional.softplus(-margins)


# ---------------------------------------------------------------- measurements
def signal_inner(filters: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """<w_{j,r}, mu_k>: (S, C, m, K) for filters (S, C, m, d) and signals (K, d) or (S, K, d)."""
    if mu.dim() == 2:
        return torch.einsum("scmd,kd->scmk", filters, mu)
    return torch.einsum("scmd,skd->scmk", filters, mu)


def noise_inner(filters: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """<w_{j,r}, xi_i>: (S, C, m, n) for noise patches xi (S, n, d)."""
    return torch.einsum("scmd,snd->scmn", filters, xi)


def decompose(
    filters: torch.Tensor, init: torch.Tensor, mu: torch.Tensor, xi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signal-noise decomposition of the filters' movement w(t) - w(0).

    Solves w - w0 = sum_k gamma_k mu_k/|mu_k|^2 + sum_i rho_i xi_i/|xi_i|^2 + residual by least
    squares over the span of the (unique) signals and the noise patches. Returns gamma
    (S, C, m, K), rho (S, C, m, n) and the relative residual |residual| / |w - w0| (S, C, m),
    which is ~0 under gradient descent (updates stay in the span of the data).
    """
    signals = mu if mu.dim() == 3 else mu.expand(xi.shape[0], *mu.shape)
    # drop repeated / antipodal signal rows so the basis is not rank deficient
    keep = [0] + [k for k in range(1, signals.shape[1]) if _independent(signals[0, : k + 1])]
    signals = signals[:, keep]
    basis = torch.cat([signals, xi], dim=1)  # (S, K+n, d)
    scaled = basis / (basis**2).sum(-1, keepdim=True)  # columns mu/|mu|^2, xi/|xi|^2
    moved = filters - init  # (S, C, m, d)
    gram = torch.einsum("skd,sld->skl", scaled, scaled)
    rhs = torch.einsum("skd,scmd->scmk", scaled, moved)
    coef = torch.linalg.solve(gram[:, None], rhs.transpose(-1, -2)).transpose(-1, -2)
    fitted = torch.einsum("scmk,skd->scmd", coef, scaled)
    norm = moved.norm(dim=-1).clamp_min(torch.finfo(moved.dtype).tiny)
    residual = (moved - fitted).norm(dim=-1) / norm
    k = signals.shape[1]
    return coef[..., :k], coef[..., k:], residual


def _independent(rows: torch.Tensor) -> bool:
    return bool(torch.linalg.matrix_rank(rows) == rows.shape[0])


def signal_learning(gamma: torch.Tensor) -> torch.Tensor:
    """max_r |gamma_{j,r,k}|, averaged over classes j and signals k: (S,)."""
    return gamma.abs().amax(dim=2).mean(dim=(1, 2))


def noise_memorization(rho: torch.Tensor) -> torch.Tensor:
    """max_{j,r} |rho_{j,r,i}|, averaged over samples i: (S,)."""
    return rho.abs().amax(dim=(1, 2)).mean(dim=-1)
