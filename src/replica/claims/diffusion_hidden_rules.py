"""Can diffusion models learn hidden inter-feature rules behind images? (Han, Han, Huang, Lu
& Zou, ICML 2025, arXiv 2502.04725).

Claim. Diffusion models (DMs) trained by denoising score matching (DSM) capture coarse-grained
inter-feature rules but not fine-grained ones: the fine rule's error stays at a constant,
non-vanishing level that more data and more training do not remove.

Setting (ours, after the paper's sun-height / shadow-length task, features only, no pixels).
Two features h ~ U[h_lo, h_hi] and l = c / h: the hidden rule h l = c (a hyperbola).
    fine rule    r = |h l - c| / c <= tol         (tol = 1 %: the precise ratio)
    coarse rule  (l > 1) == (h < c)               (the sign-level relation, |h - c| > margin)
A DM on the standardised pair z = ((h - E h) / sd h, (l - E l) / sd l): VE noising z + sigma n,
an MLP denoiser with EDM preconditioning trained by DSM with log-normal sigma (Karras et al.
2022), Adam with a cosine-decayed step size, and sampled by Heun's probability-flow ODE
(replica.blocks.score.probability_flow) on the Karras grid, the last step to sigma = 0 (the
denoiser's output). Two budgets: base (N training points, T steps) and long (4 N, 4 T); every
seed draws its own training set (the base set is the first N points of the long one), its own
initialisation and noise, shared by its two budgets; all (budget, seed) models are one batched
network (torch bmm) whose base models freeze after T steps.

Theory (independent of training). The exact score of the noised data law, a uniform law on the
curve gamma(h), is a one-dimensional integral,
    grad log p_sigma(z) = (E[gamma(h) | z] - z) / sigma^2,
    E[gamma(h) | z] = int gamma(h) exp(-|z - gamma(h)|^2 / 2 sigma^2) dh / int (same, no gamma),
computed by Gauss-Legendre quadrature on a window around the nearest point of the curve
(`exact_denoiser`).
The same sampler run with it gives the rule conformity of a DM that had learned the DSM
optimum exactly (the sampler's own floor); the Gaussian with the law's mean and covariance (the
law a DM with a linear score learns, closed-form moments) gives the conformity of a model that
knows only the second-order (coarse) structure.

Experiment. Per seed and budget, n_samples samples: the share obeying the fine rule, the share
obeying the coarse rule, the median relative violation, and the marginal W1 distances of h and
l to the law (divided by the feature's standard deviation).

Controls. Ablation (the DSM objective removed): the same MLP (width, depth, activation,
initialisation), optimiser, step-size rule, batch, steps (4 T) and long training set, trained by
least squares to predict l from h, samples (h, l_hat(h)) with h from the law: it must conform to
the fine rule (its own training job). Preconditions: the exact-score sampler conforms (the
metric and sampler can register the rule), the Gaussian reference fails the coarse rule (the
coarse check can fail), and the DSM loss has stopped falling by the end of the long budget.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from replica import runtime
from replica.blocks.optim import Adam
from replica.blocks.score import probability_flow, ve_sigmas


# ----------------------------------------------------------------------------- the rule
def feature_moments(params: dict) -> dict[str, float]:
    """Closed-form moments of h ~ U[lo, hi] and l = c / h:
    E h = (lo + hi) / 2, Var h = (hi - lo)^2 / 12, E l = c ln(hi / lo) / (hi - lo),
    E l^2 = c^2 / (lo hi), E h l = c."""
    lo, hi, c = float(params["h_lo"]), float(params["h_hi"]), float(params["rule_c"])
    mean_h, var_h = (lo + hi) / 2, (hi - lo) ** 2 / 12
    mean_l = c * math.log(hi / lo) / (hi - lo)
    var_l = c * c / (lo * hi) - mean_l**2
    cov_hl = c - mean_h * mean_l
    return {
        "mean_h": mean_h,
        "sd_h": math.sqrt(var_h),
        "mean_l": mean_l,
        "sd_l": math.sqrt(var_l),
        "cov_hl": cov_hl,
    }


def sample_features(n: int, rng: np.random.Generator, params: dict) -> np.ndarray:
    """(n, 2) rows (h, l) on the rule h l = c, h uniform."""
    h = rng.uniform(float(params["h_lo"]), float(params["h_hi"]), n)
    return np.stack([h, float(params["rule_c"]) / h], -1)


def standardise(features: np.ndarray, params: dict) -> np.ndarray:
    m = feature_moments(params)
    scale = np.array([m["sd_h"], m["sd_l"]])
    return (features - np.array([m["mean_h"], m["mean_l"]])) / scale


def unstandardise(z: np.ndarray, params: dict) -> np.ndarray:
    m = feature_moments(params)
    return z * np.array([m["sd_h"], m["sd_l"]]) + np.array([m["mean_h"], m["mean_l"]])


def relative_violation(features: np.ndarray, c: float) -> np.ndarray:
    """r = |h l - c| / c on the last axis (h, l)."""
    return np.abs(features[..., 0] * features[..., 1] - c) / c


def coarse_rule_holds(features: np.ndarray, c: float) -> np.ndarray:
    """The sign-level rule: the 'shadow' is longer than 1 exactly when h is below c."""
    return (features[..., 1] > 1.0) == (features[..., 0] < c)


def coarse_conformity(features: np.ndarray, c: float, margin: float) -> np.ndarray:
    """Share obeying the coarse rule among the samples with |h - c| > margin (over -2): near
    the boundary l is within about 2 margin / c of 1, a fine-grained question."""
    away = np.abs(features[..., 0] - c) > margin
    holds = coarse_rule_holds(features, c) & away
    return holds.sum(-1) / np.maximum(away.sum(-1), 1)


def rule_summary(features: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    """Over the samples axis (-2): fine conformity, coarse conformity, median violation."""
    c, tol = float(params["rule_c"]), float(params["fine_tolerance"])
    r = relative_violation(features, c)
    return {
        "fine": (r <= tol).mean(-1),
        "coarse": coarse_conformity(features, c, float(params["coarse_margin"])),
        "median_violation": np.median(r, -1),
    }


def violation_quantiles(features: np.ndarray, c: float, levels: int = 99) -> np.ndarray:
    """Quantiles of r at levels 1 %, ..., 99 % over the samples axis (-2): (..., levels)."""
    r = relative_violation(features, c)
    return np.moveaxis(np.quantile(r, np.linspace(0.01, 0.99, levels), axis=-1), 0, -1)


def marginal_w1(samples: np.ndarray, params: dict) -> np.ndarray:
    """W1 of each feature's sample marginal to the law's (the quantile coupling against the
    law's quantiles at the sample's plotting positions), over the feature's sd: (..., 2)."""
    n = samples.shape[-2]
    u = (np.arange(n) + 0.5) / n
    lo, hi, c = float(params["h_lo"]), float(params["h_hi"]), float(params["rule_c"])
    q_h = lo + u * (hi - lo)
    q_l = c / q_h[::-1]  # l = c / h is decreasing in h
    m = feature_moments(params)
    w_h = np.abs(np.sort(samples[..., 0], -1) - q_h).mean(-1) / m["sd_h"]
    w_l = np.abs(np.sort(samples[..., 1], -1) - q_l).mean(-1) / m["sd_l"]
    return np.stack([w_h, w_l], -1)


# ----------------------------------------------------------------------------- data
def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: the long training set (its first N points are the base set), the h values of
    the regression ablation's samples, and the sampler's starting noise; one theory start."""
    n_long = int(params["n_train"]) * int(params["data_factor"])
    n_samples = int(params["n_samples"])
    trains, eval_h, starts = [], [], []
    for seed in seeds:
        rng = np.random.default_rng([int(params["data_seed"]), int(seed)])
        trains.append(sample_features(n_long, rng, params))
        eval_h.append(sample_features(n_samples, rng, params)[:, 0])
        starts.append(rng.standard_normal((n_samples, 2)))
    theory_rng = np.random.default_rng([int(params["data_seed"]), 10**6])
    return {
        "train": np.stack(trains),  # (S, 4N, 2) raw (h, l)
        "eval_h": np.stack(eval_h),  # (S, n_samples)
        "start_noise": np.stack(starts),  # (S, n_samples, 2), times sigma_max at sampling
        "theory_start_noise": theory_rng.standard_normal((n_samples, 2)),
        "seeds": np.asarray(seeds),
    }


# ----------------------------------------------------------------------------- theory
def curve(h: np.ndarray, params: dict) -> np.ndarray:
    """gamma(h): the standardised rule curve, (..., 2)."""
    c = float(params["rule_c"])
    return standardise(np.stack([h, c / h], -1), params)


def curve_speed(h: np.ndarray, params: dict) -> np.ndarray:
    """|gamma'(h)| in standardised units."""
    m, c = feature_moments(params), float(params["rule_c"])
    return np.sqrt((1 / m["sd_h"]) ** 2 + (c / (h * h) / m["sd_l"]) ** 2)


def nearest_on_curve(z: np.ndarray, params: dict, points: int = 201) -> tuple:
    """h* of the curve point nearest to each row of z, located on a uniform grid of [lo, hi]
    and refined on a second grid of the same size within one spacing of it; also the
    resolution of h* (the second grid's spacing)."""
    lo, hi = float(params["h_lo"]), float(params["h_hi"])
    grid = np.linspace(lo, hi, points)
    nearest = grid[np.argmin(((z[:, None, :] - curve(grid, params)[None]) ** 2).sum(-1), 1)]
    spacing = (hi - lo) / (points - 1)
    local = np.clip(nearest[:, None] + np.linspace(-spacing, spacing, points)[None], lo, hi)
    sq = ((z[:, None, :] - curve(local, params)) ** 2).sum(-1)
    return local[np.arange(len(z)), np.argmin(sq, 1)], 2 * spacing / (points - 1)


def exact_denoiser(z: np.ndarray, sigma: float, params: dict, nodes: int = 96) -> np.ndarray:
    """E[gamma(h) | gamma(h) + sigma n = z] for h ~ U[lo, hi], rows of z (n, 2).

    The posterior over h is exp(-|z - gamma(h)|^2 / 2 sigma^2) on [lo, hi]; it is integrated
    by Gauss-Legendre on `nodes` points of the window h* +- (15 sigma / |gamma'(h*)| + two
    resolutions of h*) around the nearest curve point, clipped to [lo, hi]: beyond 15 sigma
    along the curve the weights are below exp(-100)."""
    lo, hi = float(params["h_lo"]), float(params["h_hi"])
    nearest, resolution = nearest_on_curve(z, params)
    half = 15 * sigma / curve_speed(nearest, params) + 2 * resolution
    left, right = np.maximum(nearest - half, lo), np.minimum(nearest + half, hi)
    u, weights = np.polynomial.legendre.leggauss(nodes)
    h = left[:, None] + (u[None] + 1) / 2 * (right - left)[:, None]  # (n, nodes)
    points = curve(h, params)  # (n, nodes, 2)
    log_w = -((z[:, None, :] - points) ** 2).sum(-1) / (2 * sigma * sigma)
    w = weights * np.exp(log_w - log_w.max(1, keepdims=True))  # the window length cancels
    return np.einsum("nf,nfd->nd", w, points) / w.sum(1)[:, None]


def exact_log_density(z: np.ndarray, sigma: float, params: dict, nodes: int = 20001):
    """log p_sigma(z) = log (1 / (hi - lo)) int N(z; gamma(h), sigma^2 I) dh by the trapezoid
    rule on a fine uniform grid (for the tests: its gradient is the score)."""
    lo, hi = float(params["h_lo"]), float(params["h_hi"])
    h = np.linspace(lo, hi, nodes)
    points = curve(h, params)
    log_k = -((z[:, None, :] - points[None]) ** 2).sum(-1) / (2 * sigma * sigma)
    top = log_k.max(1, keepdims=True)
    weights = np.full(nodes, (hi - lo) / (nodes - 1))
    weights[[0, -1]] *= 0.5
    integral = (np.exp(log_k - top) * weights).sum(1)
    return top[:, 0] + np.log(integral / (hi - lo)) - np.log(2 * np.pi * sigma * sigma)


def sampler_sigmas(params: dict) -> np.ndarray:
    """Karras grid from sigma_max to sigma_min, then 0 (the last step is the denoiser)."""
    grid = ve_sigmas(
        float(params["sigma_max"]), float(params["sigma_min"]), int(params["sampler_steps"])
    )
    return np.append(grid, 0.0)


def exact_score_samples(start_noise: np.ndarray, params: dict) -> np.ndarray:
    """Raw (h, l) samples of the Heun PF-ODE with the exact score of the data law."""

    def score(z, sigma):
        return (exact_denoiser(z, sigma, params) - z) / sigma**2

    sigmas = sampler_sigmas(params)
    z = probability_flow(score, sigmas[0] * start_noise, sigmas, method="heun")
    return unstandardise(z, params)


def gaussian_reference_samples(start_noise: np.ndarray, params: dict) -> np.ndarray:
    """Raw samples of N(mean, cov) with the law's closed-form first two moments: what a DM
    whose score is linear in z (a Gaussian) learns, exactly."""
    m = feature_moments(params)
    cov = np.array([[m["sd_h"] ** 2, m["cov_hl"]], [m["cov_hl"], m["sd_l"] ** 2]])
    return np.array([m["mean_h"], m["mean_l"]]) + start_noise @ np.linalg.cholesky(cov).T


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """Rule conformity of the exact-score sampler and of the Gaussian reference, and the
    training data's own (all on the theory noise draw, nothing trained)."""
    start = np.asarray(data["theory_start_noise"])
    exact = exact_score_samples(start, params)
    gauss = gaussian_reference_samples(start, params)
    out = {"fine_tolerance": float(params["fine_tolerance"]), "rule_c": float(params["rule_c"])}
    c, shown = float(params["rule_c"]), int(params["figure_samples"])
    for name, samples in (("exact_score", exact), ("gaussian", gauss)):
        summary = rule_summary(samples, params)
        out.update({f"{name}_{key}": float(value) for key, value in summary.items()})
        out[f"{name}_violation_quantiles"] = violation_quantiles(samples, c).tolist()
        out[f"{name}_example"] = samples[:shown].tolist()
    out["exact_score_w1_max"] = float(marginal_w1(exact, params).max())
    out["moments"] = feature_moments(params)
    return out


# ----------------------------------------------------------------------------- training
def init_mlp(dims: list[int], seeds: list[int], salt: int):
    """Per seed one MLP (PyTorch's default uniform init), all weights and biases of a model
    in one row of a flat (models, parameters) leaf tensor, so Adam is a handful of ops."""
    rows = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(2_502_047 * int(seed) + salt)
        parts = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1 / math.sqrt(fan_in)
            parts += [
                ((2 * torch.rand(fan_in * fan_out, generator=gen) - 1) * bound),
                ((2 * torch.rand(fan_out, generator=gen) - 1) * bound),
            ]
        rows.append(torch.cat(parts))
    return torch.stack(rows).requires_grad_()


def layers(flat, dims: list[int]) -> list:
    """The (weight (M, in, out), bias (M, 1, out)) views of the flat parameters."""
    shapes = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        shapes += [(fan_in, fan_out), (1, fan_out)]
    sizes = [a * b for a, b in shapes]
    chunks = torch.split(flat, sizes, dim=1)
    return [c.view(len(flat), *shape) for c, shape in zip(chunks, shapes, strict=True)]


def mlp(net, h):
    """SiLU MLP for every model at once: h (M, n, in) -> (M, n, out)."""
    for i in range(0, len(net) - 2, 2):
        h = torch.nn.functional.silu(torch.baddbmm(net[i + 1], h, net[i]))
    return torch.baddbmm(net[-1], h, net[-2])


def sigma_features(sigma, n_features: int):
    """Fourier features of log sigma (the data are standardised, sigma_data = 1)."""
    freqs = 2.0 ** torch.arange(n_features // 2) / 4
    angles = torch.log(sigma) * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], -1)


def denoise(net, z, sigma, n_features: int):
    """EDM-preconditioned denoiser D = c_skip z + c_out F(c_in z, features(sigma)), sigma_data
    = 1: z (M, n, 2), sigma (M, n, 1)."""
    total = sigma**2 + 1.0
    c_skip, c_out, c_in = 1.0 / total, sigma / total.sqrt(), 1.0 / total.sqrt()
    inputs = torch.cat([c_in * z, sigma_features(sigma, n_features)], -1)
    return c_skip * z + c_out * mlp(net, inputs)


def cosine_lr(step: int, steps: int, lr: float) -> float:
    """Cosine decay from lr to 0 over `steps`; 0 afterwards (the model is frozen)."""
    return lr * 0.5 * (1 + math.cos(math.pi * step / steps)) if step < steps else 0.0


def draw_block(gens, steps: int, batch: int, noise_dim: int):
    """Per seed, `steps` batches of index uniforms, log-sigma normals and noise, drawn in one
    call per generator: (steps, S, batch, ...)."""
    draws = [
        (
            torch.rand(steps, batch, generator=g),
            torch.randn(steps, batch, 1, generator=g),
            torch.randn(steps, batch, noise_dim, generator=g),
        )
        for g in gens
    ]
    return [torch.stack(d, 1) for d in zip(*draws, strict=True)]


def train_dsm(train_z, seeds: list[int], params: dict):
    """Both budgets of every seed as one batched DM (model = budget * S + seed), trained by
    DSM with EDM's weighting (unit weight on the network's own output scale). The base model
    of a seed reads the first N points of its set for T steps, the long one all 4 N for 4 T;
    both use the same draws (index uniforms, sigma, noise), so they differ in budget only.
    Returns the flat parameters and the per-step losses (4 T, models)."""
    n_seeds, n_feat, batch = len(seeds), int(params["embed"]), int(params["batch"])
    factor, base_steps = int(params["data_factor"]), int(params["steps"])
    dims = [2 + n_feat] + [int(params["width"])] * int(params["depth"]) + [2]
    flat = init_mlp(dims, list(seeds) * 2, salt=1)  # a seed's two budgets share the init
    opt = Adam([flat], lr=float(params["lr"]))
    n_base = int(params["n_train"])
    sizes = torch.tensor([n_base] * n_seeds + [n_base * factor] * n_seeds).view(-1, 1)
    rows = torch.arange(n_seeds).repeat(2).view(-1, 1)
    budget_steps = [base_steps] * n_seeds + [base_steps * factor] * n_seeds
    gens = [torch.Generator().manual_seed(7_919 * int(seed) + 1) for seed in seeds]
    total, block = base_steps * factor, 100
    tick = runtime.Progress(total, "train DSM, base and long budgets")
    losses = []
    for first in range(0, total, block):
        u, log_sigma, noise = draw_block(gens, min(block, total - first), batch, 2)
        for k in range(len(u)):
            step = first + k
            index = (u[k].repeat(2, 1) * sizes).long()
            z0 = train_z[rows, index]  # (M, B, 2)
            sigma = torch.exp(
                params["log_sigma_mean"] + params["log_sigma_std"] * log_sigma[k].repeat(2, 1, 1)
            )
            c_out = sigma / (sigma**2 + 1.0).sqrt()
            net = layers(flat, dims)
            error = denoise(net, z0 + sigma * noise[k].repeat(2, 1, 1), sigma, n_feat) - z0
            loss = ((error / c_out) ** 2).mean((1, 2))
            loss.sum().backward()
            # one step size per model: each budget follows its own cosine decay
            rates = [cosine_lr(step, n, float(params["lr"])) for n in budget_steps]
            opt.lr = torch.tensor(rates).view(-1, 1)
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach())
            tick(step, loss=float(losses[-1][n_seeds:].mean()))
    return flat.detach(), dims, torch.stack(losses).numpy()


def train_regression(train_z, seeds: list[int], params: dict):
    """The ablation: the same MLP body (width, depth, SiLU, init rule), optimiser, step-size
    rule, batch and steps (4 T) on the long training set, fitted by least squares to predict
    the standardised l from the standardised h."""
    batch, factor = int(params["batch"]), int(params["data_factor"])
    steps = int(params["steps"]) * factor
    dims = [1] + [int(params["width"])] * int(params["depth"]) + [1]
    flat = init_mlp(dims, seeds, salt=2)
    opt = Adam([flat], lr=float(params["lr"]))
    n_points = train_z.shape[1]
    rows = torch.arange(len(seeds)).view(-1, 1)
    gens = [torch.Generator().manual_seed(7_919 * int(seed) + 2) for seed in seeds]
    tick = runtime.Progress(steps, "train regression ablation")
    block = 100
    for first in range(0, steps, block):
        u, _, _ = draw_block(gens, min(block, steps - first), batch, 0)
        for k in range(len(u)):
            z0 = train_z[rows, (u[k] * n_points).long()]
            loss = ((mlp(layers(flat, dims), z0[..., :1]) - z0[..., 1:]) ** 2).mean((1, 2))
            loss.sum().backward()
            opt.lr = cosine_lr(first + k, steps, float(params["lr"]))
            opt.step()
            opt.zero_grad()
            tick(first + k, loss=float(loss.detach().mean()))
    return flat.detach(), dims


@runtime.no_grad
def sample_dm(flat, dims, start_noise: np.ndarray, params: dict) -> np.ndarray:
    """Raw (h, l) samples of every model: the Heun PF-ODE of blocks.score on (M, n, 2)."""
    n_feat, net = int(params["embed"]), layers(flat, dims)

    def score(z, sigma):
        zt = torch.as_tensor(z, dtype=torch.float32)
        s = torch.full((*zt.shape[:2], 1), float(sigma))
        return ((denoise(net, zt, s, n_feat) - zt) / float(sigma) ** 2).double().numpy()

    sigmas = sampler_sigmas(params)
    z = probability_flow(score, sigmas[0] * start_noise, sigmas, method="heun")
    return unstandardise(z, params)


@runtime.no_grad
def regression_samples(flat, dims, eval_h: np.ndarray, params: dict) -> np.ndarray:
    """Raw (h, l_hat(h)) for the law's h values of each seed: (S, n, 2)."""
    mo = feature_moments(params)
    h_std = torch.as_tensor((eval_h - mo["mean_h"]) / mo["sd_h"], dtype=torch.float32)[..., None]
    l_std = mlp(layers(flat, dims), h_std)[..., 0].double().numpy()
    return np.stack([eval_h, l_std * mo["sd_l"] + mo["mean_l"]], -1)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One objective: DSM (both budgets, then their samples) or the regression ablation."""
    torch.set_num_threads(1)
    train_z = torch.as_tensor(standardise(np.asarray(data["train"]), params), dtype=torch.float32)
    if point["objective"] == "regression":
        flat, dims = train_regression(train_z, seeds, params)
        return {"samples": regression_samples(flat, dims, np.asarray(data["eval_h"]), params)}
    flat, dims, losses = train_dsm(train_z, seeds, params)
    start = np.tile(np.asarray(data["start_noise"]), (2, 1, 1))  # a seed's budgets share it
    samples = sample_dm(flat, dims, start, params)
    n = len(seeds)
    return {"samples_base": samples[:n], "samples_long": samples[n:], "loss": losses}


# ----------------------------------------------------------------------------- measure
def loss_plateau(losses: np.ndarray) -> np.ndarray:
    """Mean DSM loss over the last 10 % of the steps over the mean over the 10 % before."""
    tenth = max(1, len(losses) // 10)
    return losses[-tenth:].mean(0) / losses[-2 * tenth : -tenth].mean(0)


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per arm (base, long, regression) and seed: fine / coarse conformity, median violation
    and marginal W1s; the long DM's loss plateau; a few samples of the first seed."""
    by_objective = {points[name]["objective"]: run for name, run in runs.items()}
    dsm, reg = by_objective["dsm"], by_objective["regression"]
    n_seeds, base_steps = len(data["seeds"]), int(params["steps"])
    losses = np.asarray(dsm["loss"], float)
    arms = {
        "base": np.asarray(dsm["samples_base"], float),
        "long": np.asarray(dsm["samples_long"], float),
        "regression": np.asarray(reg["samples"], float),
    }
    out = {"arms": list(arms)}
    for arm, samples in arms.items():
        summary = rule_summary(samples, params)
        out[arm] = {
            **{key: value.tolist() for key, value in summary.items()},
            "w1": marginal_w1(samples, params).tolist(),  # (S, 2): h, l
            "violation_quantiles": violation_quantiles(samples, float(params["rule_c"])).tolist(),
            "example": samples[0, : int(params["figure_samples"])].tolist(),
        }
    out["base"]["loss_plateau"] = loss_plateau(losses[:base_steps, :n_seeds]).tolist()
    out["long"]["loss_plateau"] = loss_plateau(losses[:, n_seeds:]).tolist()
    out["loss_curve_long"] = losses[:, n_seeds:].mean(1)[:: max(1, len(losses) // 200)].tolist()
    return out


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    base, long, reg = metrics["base"], metrics["long"], metrics["regression"]
    median_base = np.asarray(base["median_violation"], float)
    median_long = np.asarray(long["median_violation"], float)
    return {
        "fine_conformity_long": list(long["fine"]),
        "fine_conformity_base": list(base["fine"]),
        "violation_ratio_long_over_base": (median_long / median_base).tolist(),
        "coarse_conformity_long": list(long["coarse"]),
        "marginal_w1_long": np.asarray(long["w1"], float).max(1).tolist(),
        "regression_fine_conformity": list(reg["fine"]),
        "median_violation_long": median_long.tolist(),
        "median_violation_base": median_base.tolist(),
        "regression_median_violation": list(reg["median_violation"]),
        "loss_plateau_long": list(long["loss_plateau"]),
        "exact_score_fine_conformity": float(theory["exact_score_fine"]),
        "exact_score_median_violation": float(theory["exact_score_median_violation"]),
        "gaussian_coarse_conformity": float(theory["gaussian_coarse"]),
        "gaussian_fine_conformity": float(theory["gaussian_fine"]),
    }
