"""The unreasonable effectiveness of Gaussian score approximation for diffusion models
(Wang & Vastola, TMLR 2025, arXiv 2412.09726).

Claim. A diffusion model's learned score is dominated by its linear (Gaussian) approximation,
the score of N(mu, Sigma) with the training set's mean and covariance, at moderate to high noise,
and this linear part is learned early; at small noise the learned score is closer to a coarse
Gaussian-mixture score than to the exact score of the training set (a mixture of deltas).

Setting. d = 16 data from a known 10-component Gaussian mixture (low-rank + diagonal
covariances); VE noising x = x_0 + sigma z. A denoiser D(x; sigma) is an MLP with EDM
preconditioning (sigma_data = sigma_rms = sqrt(tr Sigma / d)) trained by denoising score matching
with log-normal sigma, on N = 5000 training points (the generalising arm) or N = 8 (the
memorising arm, the ablation); every (seed, arm) is one model of ONE batched network (torch bmm,
float32), the two arms of a seed sharing the initialisation, sigma and noise draws.

Theory (independent of training; replica.blocks.score). References on noised training points
x = x_0 + sigma z, each as a score s = (D - x) / sigma^2:
    Gaussian   D_G = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)      (mu, Sigma of the training set)
    mixture    D_GMM = x + sigma^2 grad log p_sigma(x)                 (the data law, Tweedie)
    delta      D_delta = sum_i softmax_i(-|x - x_i|^2 / 2 sigma^2) x_i  (the training set)
The exact data-law score put in place of the net gives the FVEs a net that learned the law would
show; the delta score in place of the net, those of a net that memorised. The Gaussian PF-ODE
solves per eigenmode of Sigma, c_k(sigma) = c_k(sigma_T) sqrt((lambda_k + sigma^2) /
(lambda_k + sigma_T^2)) (`gaussian_flow`): teleportation replaces the first steps of the mixture's
PF-ODE by this jump, and the displacement of the final samples is computed with exact scores.

Experiment. FVE_ref(sigma) = 1 - E|s_net - s_ref|^2 / E|s_net - E s_net|^2 over the evaluation
points, for each reference, sigma on a grid of multiples of sigma_rms, after 10 % of the steps
and at the end.

Controls. The memorising arm (N = 8, same net and optimiser; after the shared budget it trains on
alone until its DSM loss on a low-noise probe of its points is at most halfway from the exact
empirical optimum to the law's denoiser, or a step cap): at small sigma the delta mixture must
explain its score better than the mixture (the ordering flips).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from replica import runtime
from replica.blocks.optim import Adam
from replica.blocks.score import (
    GaussianMixture,
    gaussian,
    gaussian_flow,
    probability_flow,
    ve_denoiser,
    ve_sigmas,
)

ARMS = ("generalise", "memorise")  # model index = seed index * len(ARMS) + arm
REFERENCES = ("gauss", "gmm", "delta")


# ----------------------------------------------------------------------------- data
def data_law(params: dict) -> GaussianMixture:
    """Equal-weight mixture: means N(0, mean_scale^2 I), covariances U U^T + floor I."""
    rng = np.random.default_rng([params["data_seed"], 0])
    k, d, r = params["components"], params["dim"], params["factor_rank"]
    means = params["mean_scale"] * rng.standard_normal((k, d))
    factors = params["factor_scale"] * rng.standard_normal((k, d, r))
    covs = factors @ factors.transpose(0, 2, 1) + params["floor_variance"] * np.eye(d)
    return GaussianMixture(np.full(k, 1.0 / k), means, covs)


def sigma_rms(law: GaussianMixture) -> float:
    return float(np.sqrt(np.trace(law.cov()) / law.dim))


def delta_score(train: np.ndarray, x: np.ndarray, sigma: float) -> np.ndarray:
    """Score of the noised training set (1/N) sum_i N(x_i, sigma^2 I): (D_delta(x) - x) / sigma^2,
    D_delta the softmax-weighted mean of the training points (the exact empirical denoiser)."""
    sq = (x * x).sum(1)[:, None] + (train * train).sum(1)[None] - 2 * x @ train.T
    logits = -sq / (2 * sigma**2)
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    return (weights @ train - x) / sigma**2


def reference_scores(law, train, x, sigma) -> np.ndarray:
    """(3, n, d): the Gaussian (of the training set), mixture (of the law) and delta scores."""
    fitted = gaussian(train.mean(0), np.cov(train.T))
    gauss = (ve_denoiser(fitted, x, sigma) - x) / sigma**2
    return np.stack([gauss, law.ve(sigma).score(x), delta_score(train, x, sigma)])


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Both training sets, the evaluation points (noised training points, fixed noise draws)
    and the closed-form reference scores there: per arm (x_0 from the arm's training set)."""
    law = data_law(params)
    scale = sigma_rms(law)
    sigmas = scale * np.asarray(params["sigma_factors"], float)
    trains = {
        "generalise": law.sample(
            params["n_train"], np.random.default_rng([params["data_seed"], 1])
        ),
        "memorise": law.sample(
            params["n_memorise"], np.random.default_rng([params["data_seed"], 2])
        ),
    }
    n_eval = params["n_eval"]
    noise = np.random.default_rng([params["data_seed"], 3]).standard_normal(
        (len(sigmas), n_eval, law.dim)
    )
    eval_x, refs = [], []
    for arm in ARMS:
        clean = trains[arm][np.arange(n_eval) % len(trains[arm])]  # the small set is repeated
        noisy = clean[None] + sigmas[:, None, None] * noise  # (n_sigma, n_eval, d)
        eval_x.append(noisy)
        refs.append(
            np.stack(
                [
                    reference_scores(law, trains[arm], x, s)
                    for x, s in zip(noisy, sigmas, strict=True)
                ]
            )
        )
    probe = memorisation_probe(law, trains["memorise"], scale, params)
    return {
        **probe,
        "train_generalise": trains["generalise"],
        "train_memorise": trains["memorise"],
        "sigma_rms": np.float64(scale),
        "sigmas": sigmas,
        "eval_x": np.stack(eval_x),  # (arms, n_sigma, n_eval, d)
        "reference_scores": np.stack(refs).transpose(0, 2, 1, 3, 4),  # (arms, refs, n_sigma, n, d)
        "seeds": np.asarray(seeds),
    }


def weighted_dsm_loss(denoised, x0, sigma: float, sigma_data: float) -> float:
    """EDM's weighted DSM loss mean |(D - x0) / c_out|^2 (edm_loss's, in numpy)."""
    c_out = sigma * sigma_data / np.sqrt(sigma**2 + sigma_data**2)
    return float((((denoised - x0) / c_out) ** 2).mean())


def memorisation_probe(law, train, scale: float, params: dict) -> dict[str, np.ndarray]:
    """A fixed probe of the memorising arm's fit: each training point with
    memorise_probe_noise noise draws at the low noise level, and the loss there of the exact
    empirical denoiser (the optimum on this set, fraction 0) and of the law's denoiser
    (fraction 1)."""
    sigma = float(params["low_factor"]) * scale
    draws = int(params["memorise_probe_noise"])
    clean = np.repeat(train, draws, axis=0)
    noise = np.random.default_rng([params["data_seed"], 4]).standard_normal(clean.shape)
    x = clean + sigma * noise
    empirical = x + sigma**2 * delta_score(train, x, sigma)
    population = x + sigma**2 * law.ve(sigma).score(x)
    return {
        "probe_clean": clean,
        "probe_noise": noise,
        "probe_sigma": np.float64(sigma),
        "probe_loss_empirical": np.float64(weighted_dsm_loss(empirical, clean, sigma, scale)),
        "probe_loss_population": np.float64(weighted_dsm_loss(population, clean, sigma, scale)),
    }


# ----------------------------------------------------------------------------- theory
def fve(net_score: np.ndarray, ref_score: np.ndarray) -> np.ndarray:
    """1 - E|s_net - s_ref|^2 / E|s_net - E s_net|^2 over the points axis (-2); vectors on -1."""
    net_score, ref_score = np.asarray(net_score, float), np.asarray(ref_score, float)
    residual = ((net_score - ref_score) ** 2).sum(-1).mean(-1)
    centred = net_score - net_score.mean(-2, keepdims=True)
    return 1.0 - residual / (centred**2).sum(-1).mean(-1)


def teleport_displacement(law, fraction, sigmas, start, mean, cov) -> float:
    """RMS distance between the exact PF-ODE samples (Heun along sigmas) and those whose first
    `fraction` of the steps is replaced by the closed-form Gaussian flow of N(mean, cov), over
    the data RMS sqrt(tr Cov)."""

    def score(x, s):
        return law.ve(s).score(x)

    full = probability_flow(score, start, sigmas)
    k = int(round(fraction * (len(sigmas) - 1)))
    jumped = gaussian_flow(start, mean, cov, sigmas[0], sigmas[k]) if k else start
    teleported = probability_flow(score, jumped, sigmas[k:])
    rms = np.sqrt(((teleported - full) ** 2).sum(1).mean())
    return float(rms / np.sqrt(np.trace(law.cov())))


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """FVEs of the exact data-law score and of the delta score put in place of the net, per arm
    and sigma, and the teleportation displacements of the exact mixture PF-ODE."""
    law = data_law(params)
    refs = np.asarray(data["reference_scores"])  # (arms, refs, n_sigma, n, d)
    gauss, gmm, delta = (refs[:, REFERENCES.index(r)] for r in REFERENCES)
    factors = [float(f) for f in params["sigma_factors"]]
    high = [factors.index(f) for f in params["high_factors"]]
    low, mid = factors.index(params["low_factor"]), factors.index(params["mid_factor"])
    exact = {"gauss": fve(gmm, gauss), "delta": fve(gmm, delta)}  # (arms, n_sigma)
    memorised = {"gauss": fve(delta, gauss), "gmm": fve(delta, gmm)}
    g, m = ARMS.index("generalise"), ARMS.index("memorise")
    scale = float(data["sigma_rms"])
    grid = ve_sigmas(
        params["sigma_max_factor"] * scale, params["sigma_min_factor"] * scale, params["heun_steps"]
    )
    rng = np.random.default_rng([params["data_seed"], 4])
    start = law.mean() + grid[0] * rng.standard_normal((params["teleport_samples"], law.dim))
    early, late = params["teleport_fractions"]
    return {
        "sigmas": np.asarray(data["sigmas"]),
        "sigma_factors": factors,
        "sigma_rms": scale,
        "exact_fve_gauss": exact["gauss"],
        "exact_fve_delta": exact["delta"],
        "memorised_fve_gauss": memorised["gauss"],
        "memorised_fve_gmm": memorised["gmm"],
        "fve_gauss_high_noise_theory": float(exact["gauss"][g, high].min()),
        "fve_gauss_mid_theory": float(exact["gauss"][g, mid]),
        "gmm_minus_delta_low_noise_theory": float(1.0 - exact["delta"][g, low]),
        "memorised_gmm_minus_delta_low_noise_theory": float(memorised["gmm"][m, low] - 1.0),
        "teleport_displacement_early": teleport_displacement(
            law, early, grid, start, law.mean(), law.cov()
        ),
        "teleport_displacement_late": teleport_displacement(
            law, late, grid, start, law.mean(), law.cov()
        ),
    }


# ----------------------------------------------------------------------------- training
def init_mlp(dims: list[int], seeds: list[int], copies: int) -> list:
    """Per seed one MLP (PyTorch's default uniform init), repeated `copies` times on the model
    axis (model = seed index * copies + copy: the arms of a seed share the initialisation)."""
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(2_412_097 * int(seed) + dims[1])
        layers = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1 / math.sqrt(fan_in)
            layers += [
                (2 * torch.rand(fan_in, fan_out, generator=gen) - 1) * bound,
                (2 * torch.rand(1, fan_out, generator=gen) - 1) * bound,
            ]
        per_seed.append(layers)
    return [
        torch.stack([p[i] for p in per_seed]).repeat_interleave(copies, 0).requires_grad_()
        for i in range(len(per_seed[0]))
    ]


def sigma_features(sigma, sigma_data: float, n_features: int):
    """Fourier features of log(sigma / sigma_data): sin, cos at frequencies 2^k / 4."""
    t = torch.log(sigma / sigma_data)
    freqs = 2.0 ** torch.arange(n_features // 2) / 4
    angles = t * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], -1)


def denoise(net, x, sigma, sigma_data: float, n_features: int):
    """EDM-preconditioned denoiser for every model: x (M, n, d), sigma (M, n, 1) -> (M, n, d).
    D = c_skip x + c_out F(c_in x, features(sigma))."""
    total = sigma**2 + sigma_data**2
    c_skip, c_out, c_in = sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt()
    h = torch.cat([c_in * x, sigma_features(sigma, sigma_data, n_features)], -1)
    for i in range(0, len(net) - 2, 2):
        h = torch.nn.functional.silu(torch.baddbmm(net[i + 1], h, net[i]))
    return c_skip * x + c_out * torch.baddbmm(net[-1], h, net[-2])


def edm_loss(net, x0, sigma, noise, sigma_data: float, n_features: int):
    """Per model, EDM's weighted DSM loss lambda(sigma) |D(x0 + sigma n) - x0|^2 with
    lambda = 1 / c_out^2, i.e. unit weight on the network's own output scale."""
    total = sigma**2 + sigma_data**2
    c_out = sigma * sigma_data / total.sqrt()
    error = denoise(net, x0 + sigma * noise, sigma, sigma_data, n_features) - x0
    return ((error / c_out) ** 2).mean((1, 2))


def cosine_lr(step: int, params: dict) -> float:
    return params["lr"] * 0.5 * (1 + math.cos(math.pi * step / params["steps"]))


def seed_draws(gens, batch: int, d: int):
    """One step's draws per seed, from its own generator: index uniforms (S, B), log-sigma
    normals (S, B, 1) and noise (S, B, d)."""
    draws = [
        (
            torch.rand(batch, generator=g),
            torch.randn(batch, 1, generator=g),
            torch.randn(batch, d, generator=g),
        )
        for g in gens
    ]
    return tuple(torch.stack(draw) for draw in zip(*draws, strict=True))


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """Both arms in one loop: the (seed, arm) models of one batched MLP, Adam
    (`replica.blocks.optim.Adam`) with cosine-decayed step size, CPU float32. Within a seed both
    arms draw the same sigma, noise and index uniforms (an index picks a point of the arm's own
    training set). The score on the evaluation points is recorded after early_fraction of the
    steps and at the end."""
    torch.set_num_threads(1)
    n_arms, n_seeds, d = len(ARMS), len(seeds), int(params["dim"])
    scale, n_feat, batch = float(data["sigma_rms"]), int(params["embed"]), int(params["batch"])
    dims = [d + n_feat] + [int(params["width"])] * int(params["depth"]) + [d]
    net = init_mlp(dims, seeds, n_arms)
    opt = Adam(net, lr=params["lr"])
    trains = [torch.as_tensor(data[f"train_{arm}"], dtype=torch.float32) for arm in ARMS]
    pool = torch.cat(trains)  # one gather for every model: offset of its arm's set + index
    sizes = torch.tensor([len(t) for t in trains] * n_seeds, dtype=torch.float32).view(-1, 1)
    starts = torch.tensor([0, len(trains[0])] * n_seeds).view(-1, 1)
    gens = [torch.Generator().manual_seed(7_919 * int(seed) + 1) for seed in seeds]
    early_step = int(round(params["early_fraction"] * params["steps"]))
    tick = runtime.Progress(params["steps"], "train generalise + memorise")
    scores, losses = {}, []
    for step in range(params["steps"] + 1):
        if step == early_step:
            scores["early"] = _eval_scores(net, data, scale, n_feat)
        if step == params["steps"]:
            break
        # (M, B, ...): the arms of a seed share its draws
        u, log_sigma, noise = (a.repeat_interleave(n_arms, 0) for a in seed_draws(gens, batch, d))
        x0 = pool[starts + (u * sizes).long()]
        sigma = scale * torch.exp(
            params["train_log_sigma_mean"] + params["train_log_sigma_std"] * log_sigma
        )
        loss = edm_loss(net, x0, sigma, noise, scale, n_feat)
        opt.lr = cosine_lr(step, params)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.detach())
        tick(step, loss=float(losses[-1].mean()))
    scores["final"] = _eval_scores(net, data, scale, n_feat)
    shape = (n_seeds, n_arms)
    memorised, extra_steps, excess = train_memorising_arm(net, data, params, gens)
    m = ARMS.index("memorise")
    scores["final"][:, m] = _eval_scores(memorised, data, scale, n_feat, arm=m)[:, 0]
    return {
        "net_scores": np.stack([scores["early"], scores["final"]], 2),  # (S, arms, 2, ...)
        "loss": torch.stack(losses).reshape(-1, *shape).numpy(),
        "memorise_extra_steps": np.int64(extra_steps),
        "memorise_probe_excess": excess,
    }


def probe_excess(net, data, sigma_data: float, n_features: int) -> np.ndarray:
    """Per memorising model, its probe loss as a fraction of the way from the empirical
    optimum (0) to the law's denoiser (1)."""
    n_models = net[0].shape[0]
    x0 = torch.as_tensor(data["probe_clean"], dtype=torch.float32).expand(n_models, -1, -1)
    noise = torch.as_tensor(data["probe_noise"], dtype=torch.float32).expand(n_models, -1, -1)
    sigma = torch.full((n_models, x0.shape[1], 1), float(data["probe_sigma"]))
    with torch.no_grad():
        loss = edm_loss(net, x0, sigma, noise, sigma_data, n_features).numpy().astype(float)
    low, high = float(data["probe_loss_empirical"]), float(data["probe_loss_population"])
    return (loss - low) / (high - low)


def train_memorising_arm(net, data, params: dict, gens) -> tuple[list, int, np.ndarray]:
    """The memorising models alone, after the shared budget: Adam at the constant step size lr,
    in blocks of memorise_check_every steps, until every model's probe excess is at most
    memorise_criterion or memorise_max_extra_steps are spent. Draws continue each seed's
    generator. Returns the models, the extra steps and the final excess per seed."""
    n_seeds, n_arms = len(gens), len(ARMS)
    scale, n_feat, batch = float(data["sigma_rms"]), int(params["embed"]), int(params["batch"])
    d = int(params["dim"])
    rows = torch.arange(n_seeds) * n_arms + ARMS.index("memorise")
    mem = [p.detach()[rows].clone().requires_grad_() for p in net]
    opt = Adam(mem, lr=params["lr"])
    points = torch.as_tensor(data["train_memorise"], dtype=torch.float32)
    every, cap = int(params["memorise_check_every"]), int(params["memorise_max_extra_steps"])
    extra = 0
    excess = probe_excess(mem, data, scale, n_feat)
    while extra < cap and excess.max() > params["memorise_criterion"]:
        for _ in range(min(every, cap - extra)):
            u, log_sigma, noise = seed_draws(gens, batch, d)
            x0 = points[(u * len(points)).long()]
            sigma = scale * torch.exp(
                params["train_log_sigma_mean"] + params["train_log_sigma_std"] * log_sigma
            )
            loss = edm_loss(mem, x0, sigma, noise, scale, n_feat)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            extra += 1
        excess = probe_excess(mem, data, scale, n_feat)
        print(f"[memorise] +{extra} steps, probe excess {np.round(excess, 3).tolist()}", flush=True)
    return mem, extra, excess


@runtime.no_grad
def _eval_scores(net, data, sigma_data: float, n_features: int, arm: int | None = None):
    """Every model's score (D - x) / sigma^2 at its arm's evaluation points:
    (S, arms, n_sigma, n_eval, d), float32; with `arm`, `net` holds that arm's models only
    (one per seed) and the arm axis has length 1."""
    eval_x = np.asarray(data["eval_x"])  # (arms, n_sigma, n_eval, d)
    if arm is not None:
        eval_x = eval_x[arm : arm + 1]
    n_arms, n_sigma, n_eval, d = eval_x.shape
    sigmas = np.asarray(data["sigmas"])
    n_models = net[0].shape[0]
    x = torch.as_tensor(eval_x.reshape(n_arms, n_sigma * n_eval, d), dtype=torch.float32)
    x = x.repeat(n_models // n_arms, 1, 1)  # model m reads arm m % n_arms
    sigma = torch.as_tensor(np.repeat(sigmas, n_eval), dtype=torch.float32).view(1, -1, 1)
    sigma = sigma.expand(n_models, -1, -1)
    score = (denoise(net, x, sigma, sigma_data, n_features) - x) / sigma**2
    return score.reshape(n_models // n_arms, n_arms, n_sigma, n_eval, d).numpy()


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """FVE of every model's score by each reference, per (seed, arm, time, reference, sigma)."""
    (run,) = runs.values()  # one job trains both arms
    net = np.asarray(run["net_scores"], float)  # (S, arms, times, n_sigma, n, d)
    refs = np.asarray(data["reference_scores"])  # (arms, refs, n_sigma, n, d)
    table = np.stack(
        [fve(net, refs[None, :, k][:, :, None]) for k in range(len(REFERENCES))], 3
    )  # (S, arms, times, refs, n_sigma)
    loss = np.asarray(run["loss"])
    return {
        "fve": table,
        "axes": ["seed", "arm", "time", "reference", "sigma"],
        "arms": list(ARMS),
        "times": ["early", "final"],
        "references": list(REFERENCES),
        "sigmas": np.asarray(data["sigmas"]),
        "sigma_factors": [float(f) for f in params["sigma_factors"]],
        "final_loss": loss[-max(1, len(loss) // 20) :].mean(0),  # (S, arms), last 5 % of steps
        "memorise_extra_steps": int(run["memorise_extra_steps"]),
        "memorise_probe_excess": np.asarray(run["memorise_probe_excess"], float),
    }


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    table = np.asarray(metrics["fve"], float)  # (S, arms, times, refs, n_sigma)
    factors = [float(f) for f in metrics["sigma_factors"]]
    high = [factors.index(f) for f in params["high_factors"]]
    low, mid = factors.index(params["low_factor"]), factors.index(params["mid_factor"])
    g, m = ARMS.index("generalise"), ARMS.index("memorise")
    early, final = 0, 1
    gauss, gmm, delta = (REFERENCES.index(r) for r in REFERENCES)
    out = {
        "fve_gauss_high_noise": table[:, g, final, gauss][:, high].min(1),
        "gmm_minus_delta_low_noise": table[:, g, final, gmm, low] - table[:, g, final, delta, low],
        "fve_gauss_low_noise": table[:, g, final, gauss, low],
        "early_minus_final_fve_gauss_mid": table[:, g, early, gauss, mid]
        - table[:, g, final, gauss, mid],
        "memorised_gmm_minus_delta_low_noise": table[:, m, final, gmm, low]
        - table[:, m, final, delta, low],
    }
    out["memorise_probe_excess"] = np.asarray(metrics["memorise_probe_excess"], float)
    out = {key: value.tolist() for key, value in out.items()}
    out["memorise_extra_steps"] = float(metrics["memorise_extra_steps"])
    for key in (
        "fve_gauss_high_noise_theory",
        "fve_gauss_mid_theory",
        "gmm_minus_delta_low_noise_theory",
        "memorised_gmm_minus_delta_low_noise_theory",
        "teleport_displacement_early",
        "teleport_displacement_late",
    ):
        out[key] = float(theory[key])
    return out
