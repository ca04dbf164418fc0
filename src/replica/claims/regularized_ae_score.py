"""What regularized auto-encoders learn from the data-generating distribution
(Alain & Bengio, JMLR 2014, arXiv 1211.4246).

Claim. Train a denoising auto-encoder (DAE) r with squared error on Gaussian corruption,
    minimise E_{x ~ p, eps ~ N(0, 1)} |r(x + sigma eps) - x|^2 .
The paper's theorem: the optimum is the posterior mean r*_sigma(x) = E[x_0 | x_0 + sigma eps = x]
and, as sigma -> 0,
    r*_sigma(x) = x + sigma^2 d log p(x) / dx + o(sigma^2),
so (r(x) - x) / sigma^2 estimates the score. The contractive analogue (penalty lambda |dr/dx|^2 on
clean data) gives r*_lambda(x) = x + lambda d log p / dx + o(lambda). Every critical point of p,
the anti-mode between two modes included, is then a fixed point of r: reconstruction error is
small where the density has a local minimum, so it is not an energy.

Setting. 1-D mixture p = (N(-2, 0.75^2) + N(2, 0.75^2)) / 2 (replica.blocks.score.GaussianMixture),
fresh samples every step. DAE: r(x~) = x~ + sigma^2 g(x~), g an MLP 1 -> width -> width -> 1 with
tanh units; every (seed, sigma) is one model of ONE batched network (torch bmm), trained by Adam on
the DAE loss divided by sigma^4 (the same minimiser; g is O(1) at every sigma), each clean sample
corrupted antithetically (x + sigma eps and x - sigma eps: same expected loss, the target's 1/sigma
noise cancels in the gradient).

Theory (independent of training). For a Gaussian mixture the noised law p_sigma = p * N(0, sigma^2)
is a mixture again, so the exact finite-sigma optimum is Tweedie's
    (r*_sigma(x) - x) / sigma^2 = d log p_sigma(x) / dx        (closed form),
and the heat equation p_sigma = p + sigma^2 p'' / 2 + O(sigma^4) gives
    d log p_sigma / dx - d log p / dx = sigma^2 (s'' + 2 s s') / 2 + O(sigma^4),   s = d log p / dx,
so the error to the score decays like sigma^2 (log-log slope 2; the exact optimum's slope over the
fit grid is computed, not assumed). Critical points of p by root finding on the exact score.

Experiment. On a fixed grid of x, the p-weighted relative L2 error of (r(x) - x) / sigma^2 to
grad log p for every sigma (its log-log slope over the small sigma; its value at sigma = 0.1;
the least-squares gain, which the theorem says is 1), the p_sigma-weighted error to grad log p_sigma
(Tweedie at finite sigma), and |r(c) - c|^2 at the critical points against the largest
reconstruction error. A contractive arm r(x) = x + lambda g(x), same network and budget, trained on
clean samples with E[|r - x|^2 + lambda |r'|^2] (= lambda^2 E[g^2 + 2 g' + lambda g'^2] + const).

Controls (ablations of the trained arm). sigma = 2: the O(sigma^2) bias must dominate (error to
grad log p >= 50 %). A clean auto-encoder (no corruption, no penalty, output scale 0.01) of the
same architecture and budget must learn no score (error >= 50 %).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from replica import runtime
from replica.blocks.optim import Adam
from replica.blocks.score import GaussianMixture


# ----------------------------------------------------------------------------- data
def mixture(params: dict) -> GaussianMixture:
    """Equal-weight 1-D mixture with modes near +-mode and component std component_std."""
    m, sd = params["mode"], params["component_std"]
    return GaussianMixture(np.array([0.5, 0.5]), np.array([[-m], [m]]), np.full((2, 1, 1), sd**2))


def score_1d(law: GaussianMixture, x: np.ndarray) -> np.ndarray:
    """d log p / dx at the points x (1-D arrays in and out)."""
    return law.score(np.asarray(x, float)[:, None])[:, 0]


def density_1d(law: GaussianMixture, x: np.ndarray) -> np.ndarray:
    return np.exp(law.log_density(np.asarray(x, float)[:, None]))


def critical_points(law: GaussianMixture, lo: float, hi: float) -> np.ndarray:
    """Zeros of the exact score in [lo, hi] (modes and anti-modes), by bracketing + brentq."""
    from scipy.optimize import brentq  # generate only: keep scipy out of the other jobs

    x = np.linspace(lo, hi, 4001)
    s = score_1d(law, x)
    roots = list(x[s == 0])  # a grid point that is a root exactly (x = 0 by symmetry)
    for i in np.flatnonzero(s[:-1] * s[1:] < 0):
        f = lambda t: float(score_1d(law, np.array([t]))[0])  # noqa: E731
        roots.append(brentq(f, x[i], x[i + 1], xtol=1e-12))
    return np.sort(roots)


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """The evaluation grid and the critical points of p (training samples are streamed)."""
    law = mixture(params)
    grid = np.linspace(params["grid_lo"], params["grid_hi"], params["grid_points"])
    return {
        "x_grid": grid,
        "critical_points": critical_points(law, params["grid_lo"], params["grid_hi"]),
        "seeds": np.asarray(seeds),
    }


# ----------------------------------------------------------------------------- theory
def relative_error(estimate, target, weight) -> np.ndarray:
    """sqrt(sum w (estimate - target)^2 / sum w target^2) over the last axis."""
    estimate, target, weight = np.asarray(estimate), np.asarray(target), np.asarray(weight)
    return np.sqrt((weight * (estimate - target) ** 2).sum(-1) / (weight * target**2).sum(-1))


def gain(estimate, target, weight) -> np.ndarray:
    """Weighted least-squares coefficient of estimate on target over the last axis."""
    estimate, target, weight = np.asarray(estimate), np.asarray(target), np.asarray(weight)
    return (weight * estimate * target).sum(-1) / (weight * target**2).sum(-1)


def loglog_slope(xs, values) -> np.ndarray:
    """Least-squares slope of log(values) against log(xs); values (..., len(xs))."""
    lx = np.log(np.asarray(xs, float))
    ly = np.log(np.asarray(values, float))
    lx = lx - lx.mean()
    return ((ly - ly.mean(-1, keepdims=True)) * lx).sum(-1) / (lx**2).sum()


def tweedie_score(law: GaussianMixture, x: np.ndarray, sigma: float) -> np.ndarray:
    """(r*_sigma(x) - x) / sigma^2 = grad log p_sigma(x): the exact DAE optimum (Tweedie)."""
    return score_1d(law.ve(sigma), x)


def exact_errors(law: GaussianMixture, x: np.ndarray, sigmas) -> np.ndarray:
    """p-weighted relative error of the exact optimum's score estimate to grad log p, per sigma."""
    s, w = score_1d(law, x), density_1d(law, x)
    return np.array([relative_error(tweedie_score(law, x, sg), s, w) for sg in sigmas])


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    law = mixture(params)
    x = np.asarray(data["x_grid"])
    sigmas = np.asarray(params["sigmas"], float)
    dense = np.geomspace(0.02, 3.0, 60)  # the exact optimum's error curve for the figure
    errors = exact_errors(law, x, sigmas)
    slope_errors = exact_errors(law, x, params["slope_sigmas"])
    return {
        "x_grid": x,
        "density": density_1d(law, x),
        "score": score_1d(law, x),
        "sigmas": sigmas,
        "tweedie_score": np.array([tweedie_score(law, x, sg) for sg in sigmas]),
        "exact_error": errors,
        "dense_sigmas": dense,
        "dense_exact_error": exact_errors(law, x, dense),
        "critical_points": np.asarray(data["critical_points"]),
        "score_error_slope_theory": float(loglog_slope(params["slope_sigmas"], slope_errors)),
        "score_error_small_sigma_theory": float(exact_errors(law, x, [params["small_sigma"]])[0]),
        "score_error_large_sigma_theory": float(exact_errors(law, x, [params["large_sigma"]])[0]),
        "asymptotic_slope": 2.0,  # heat equation: the error is sigma^2 (s'' + 2 s s') / 2 + ...
    }


# ----------------------------------------------------------------------------- training
def init_mlp(width: int, seeds: list[int], copies: int) -> list:
    """Weights of one MLP per seed (PyTorch's default uniform init), each repeated `copies`
    times along the model axis: model index = seed index * copies + copy (a shared init)."""
    shapes = [(1, width), (1, width), (width, width), (1, width), (width, 1), (1, 1)]
    fan_ins = [1, 1, width, width, width, width]
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(1_000_003 * int(seed) + width)
        per_seed.append(
            [
                (2 * torch.rand(shape, generator=gen) - 1) / math.sqrt(fan_in)
                for shape, fan_in in zip(shapes, fan_ins, strict=True)
            ]
        )
    return [
        torch.stack([p[i] for p in per_seed]).repeat_interleave(copies, 0).requires_grad_()
        for i in range(len(shapes))
    ]


def mlp(params_, x):
    """g(x) for every model: x (M, N, 1) -> (M, N, 1)."""
    w1, b1, w2, b2, w3, b3 = params_
    h = torch.tanh(torch.baddbmm(b1, x, w1))
    h = torch.tanh(torch.baddbmm(b2, h, w2))
    return torch.baddbmm(b3, h, w3)


def mlp_with_slope(params_, x):
    """(g(x), dg/dx) for every model, the derivative carried forward through the tanh layers."""
    w1, b1, w2, b2, w3, b3 = params_
    h1 = torch.tanh(torch.baddbmm(b1, x, w1))
    dh1 = (1 - h1 * h1) * w1  # (M, N, width): d h1 / dx
    h2 = torch.tanh(torch.baddbmm(b2, h1, w2))
    dh2 = (1 - h2 * h2) * torch.bmm(dh1, w2)
    return torch.baddbmm(b3, h2, w3), torch.bmm(dh2, w3)


def sample_streams(params: dict, seeds: list[int], n: int):
    """Per seed, the whole run's clean samples (steps, n) and noise draws (steps, n)."""
    law = mixture(params)
    xs, eps = [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], int(seed)])
        xs.append(law.sample(params["steps"] * n, rng)[:, 0].reshape(params["steps"], n))
        eps.append(rng.standard_normal((params["steps"], n)))
    return np.stack(xs, 1), np.stack(eps, 1)  # (steps, S, n)


def cosine_lr(step: int, params: dict) -> float:
    return params["lr"] * 0.5 * (1 + math.cos(math.pi * step / params["steps"]))


def dae_loss(net, x, eps, corruption, out_scale):
    """Antithetic DAE loss per model, divided by out_scale^2: x, eps (M, n, 1); corruption and
    out_scale (M, 1, 1). r(x~) - x = (x~ - x) + out_scale g(x~) with x~ = x +- corruption eps."""
    total = 0
    for sign in (1.0, -1.0):
        noise = sign * corruption * eps
        residual = noise + out_scale * mlp(net, x + noise)
        total = total + (residual**2).mean((1, 2)) / out_scale[:, 0, 0] ** 2
    return total / 2


def cae_loss(net, x, lam: float):
    """E[|r - x|^2 + lam |r'|^2] / lam^2 - 1 / lam for r = x + lam g: E[g^2 + 2 g' + lam g'^2]."""
    g, slope = mlp_with_slope(net, x)
    return (g * g + 2 * slope + lam * slope * slope).mean((1, 2))


def dae_settings(params: dict, n_seeds: int):
    """Per-model corruption sigma and output scale, (M, 1, 1) each: per seed every sigma of the
    grid with scale sigma^2, then the clean auto-encoder (no corruption, clean_output_scale)."""
    sigmas = [float(s) for s in params["sigmas"]]
    corruption = torch.tensor((sigmas + [0.0]) * n_seeds).view(-1, 1, 1)
    scales = [s * s for s in sigmas] + [params["clean_output_scale"]]
    return corruption, torch.tensor(scales * n_seeds).view(-1, 1, 1)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """Both arms in one loop (one job, one torch start-up), seeds batched; CPU, float32.

    DAE arm: every (seed, sigma) and each seed's clean auto-encoder are models of one batched
    network (`copies` per seed, sharing the seed's init and sample stream). Contractive arm: one
    model per seed on clean samples, as many inputs per step as a DAE model. One Adam over both
    (their parameters are disjoint, so this is two independent Adams), cosine-decayed step size.
    """
    copies = len(params["sigmas"]) + 1
    corruption, out_scale = dae_settings(params, len(seeds))
    dae_net = init_mlp(params["width"], seeds, copies)
    cae_net = init_mlp(params["width"], seeds, 1)
    opt = Adam(dae_net + cae_net, lr=params["lr"])
    xs, eps = sample_streams(params, seeds, params["batch_pairs"])
    xs = torch.as_tensor(xs, dtype=torch.float32).repeat_interleave(copies, 1)[..., None]
    eps = torch.as_tensor(eps, dtype=torch.float32).repeat_interleave(copies, 1)[..., None]
    clean, _ = sample_streams(params, seeds, 2 * params["batch_pairs"])
    clean = torch.as_tensor(clean, dtype=torch.float32)[..., None]
    tick = runtime.Progress(params["steps"], "train dae + cae")
    dae_losses, cae_losses = [], []
    for step in range(params["steps"]):
        opt.lr = cosine_lr(step, params)
        dae = dae_loss(dae_net, xs[step], eps[step], corruption, out_scale)
        cae = cae_loss(cae_net, clean[step], params["cae_lambda"])
        opt.zero_grad()
        (dae.sum() + cae.sum()).backward()
        opt.step()
        dae_losses.append(dae.detach())
        cae_losses.append(cae.detach())
        tick(step, dae=float(dae_losses[-1].mean()), cae=float(cae_losses[-1].mean()))
    steps_seeds = (params["steps"], len(seeds))
    return {
        "g_dae": _evaluate(dae_net, data).reshape(len(seeds), copies, -1),
        "g_cae": _evaluate(cae_net, data),
        "loss_dae": torch.stack(dae_losses).reshape(*steps_seeds, copies).numpy(),
        "loss_cae": torch.stack(cae_losses).numpy(),
    }


@runtime.no_grad
def _evaluate(net, data) -> np.ndarray:
    """g at the grid points followed by the critical points, every model: (M, n_grid + n_crit)."""
    points = np.concatenate([data["x_grid"], data["critical_points"]])
    x = torch.as_tensor(points, dtype=torch.float32).expand(net[0].shape[0], -1)[..., None]
    return mlp(net, x)[..., 0].double().numpy()


# ----------------------------------------------------------------------------- measure
def score_estimate(x: np.ndarray, g: np.ndarray, out_scale: float) -> np.ndarray:
    """(r(x) - x) / scale, the auto-encoder's score estimate, from r(x) = x + scale g(x)."""
    reconstruction = x + out_scale * g
    return (reconstruction - x) / out_scale


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per sigma and seed: errors of the score estimate to grad log p and to grad log p_sigma,
    its gain on grad log p, and the critical points' reconstruction error against the largest."""
    law = mixture(params)
    x, crit = np.asarray(data["x_grid"]), np.asarray(data["critical_points"])
    n = len(x)
    s, p = score_1d(law, x), density_1d(law, x)
    sigmas = [float(v) for v in params["sigmas"]]
    inside = np.abs(x) <= params["support"]
    (run,) = runs.values()  # one job trains both arms
    dae, cae = run["g_dae"], run["g_cae"]  # (S, copies, n + n_crit), (S, n + n_crit)
    out = {key: [] for key in ("error_to_score", "error_to_tweedie", "gain_to_score")}
    out.update(critical_ratio=[], score_estimate_mean=[])
    for k, sigma in enumerate(sigmas):
        on_grid = score_estimate(x, dae[:, k, :n], sigma**2)  # (S, n)
        at_crit = score_estimate(crit, dae[:, k, n:], sigma**2)
        out["error_to_score"].append(relative_error(on_grid, s, p))
        out["error_to_tweedie"].append(
            relative_error(on_grid, tweedie_score(law, x, sigma), density_1d(law.ve(sigma), x))
        )
        out["gain_to_score"].append(gain(on_grid, s, p))
        # |r(x) - x|^2 = sigma^4 |estimate|^2: at the critical points over its largest value
        out["critical_ratio"].append((at_crit**2).max(-1) / (on_grid[:, inside] ** 2).max(-1))
        out["score_estimate_mean"].append(on_grid.mean(0))
    clean = score_estimate(x, dae[:, -1, :n], params["clean_output_scale"])
    contractive = score_estimate(x, cae[:, :n], params["cae_lambda"])
    small = sigmas.index(params["small_sigma"])
    out.update(
        sigmas=sigmas,
        x_grid=x,
        clean_error_to_score=relative_error(clean, s, p),
        cae_error_to_score=relative_error(contractive, s, p),
        clean_estimate_mean=clean.mean(0),
        cae_estimate_mean=contractive.mean(0),
        score_estimate_small_sigma=score_estimate(x, dae[:, small, :n], sigmas[small] ** 2),
        final_dae_loss=run["loss_dae"][-50:].mean(0),  # (S, copies), last 50 steps
    )
    return out


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    sigmas = [float(s) for s in metrics["sigmas"]]
    err = np.asarray(metrics["error_to_score"])  # (sigmas, S)
    fit = [sigmas.index(s) for s in params["slope_sigmas"]]
    small, large = sigmas.index(params["small_sigma"]), sigmas.index(params["large_sigma"])
    finite_sigma = [k for k, s in enumerate(sigmas) if s <= params["tweedie_sigma_max"]]
    return {
        "score_error_slope": loglog_slope(params["slope_sigmas"], err[fit].T).tolist(),
        "score_error_small_sigma": err[small].tolist(),
        "score_gain_small_sigma": np.asarray(metrics["gain_to_score"])[small].tolist(),
        "tweedie_error_max": np.asarray(metrics["error_to_tweedie"])[finite_sigma].max(0).tolist(),
        "critical_point_reconstruction_ratio": np.asarray(metrics["critical_ratio"])[
            small
        ].tolist(),
        "cae_score_error": np.asarray(metrics["cae_error_to_score"]).tolist(),
        "score_error_large_sigma": err[large].tolist(),
        "clean_score_error": np.asarray(metrics["clean_error_to_score"]).tolist(),
        "score_error_slope_theory": float(theory["score_error_slope_theory"]),
        "score_error_small_sigma_theory": float(theory["score_error_small_sigma_theory"]),
        "score_error_large_sigma_theory": float(theory["score_error_large_sigma_theory"]),
    }
