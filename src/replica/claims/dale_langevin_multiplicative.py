"""Dale meets Langevin: a multiplicative denoising diffusion model (Shetty, Prasath &
Seelamantula, arXiv 2510.02730, 2025).

Claim. Take geometric Brownian motion (GBM), dX = mu X dt + sigma X dW (coordinate-wise), as
the forward noising process of positive data. Discretising its reverse-time SDE after the
Lamperti (log) transform gives a multiplicative, sign-preserving update, the Dale-Langevin
sampler, whose drift is the Hyvarinen score h(x) = x o grad log p(x); h is learnable by
multiplicative denoising score matching (M-DSM), and the sampler with the learned h generates
the data law. The ambient-space discretisation is multiplicative too, but sign-agnostic.

Setting. Positive 2-D data x_0 = exp(y_0) with y_0 a known 3-component Gaussian mixture in log
space, so x spans more than a decade per coordinate. Forward GBM with constant mu, sigma up to
the horizon T; the sampler runs from T down to t_min on a log-spaced time grid.

Theory (closed forms; our derivation from the paper's definitions). With y = log x,
    dY = m dt + sigma dW,  m = mu - sigma^2 / 2,  so  Y_t = Y_0 + m t + sigma W_t  exactly,
and p^Y_t = GMM convolved with N(m t, sigma^2 t I): again a Gaussian mixture. Because
p^X_t(x) = p^Y_t(log x) / prod_i x_i, the Hyvarinen score is
    h_t(x) = x o grad_x log p^X_t(x) = grad_y log p^Y_t(log x) - 1.
Reverse-time SDE (Anderson) in the ambient space, with g g^T = diag(sigma^2 x^2):
    dX = [mu X - 2 sigma^2 X - sigma^2 X o h(X)] dt + sigma X dW-bar,
whose Euler-Maruyama step of size D backwards in time is the sign-agnostic sampler
    x <- x o (1 + D (sigma^2 h + 2 sigma^2 - mu) + sigma sqrt(D) z).
In log space the reverse SDE is additive, dY = [m - sigma^2 grad log p^Y] dt + sigma dW-bar;
its Euler-Maruyama step, exponentiated, is the Dale-Langevin sampler
    x <- x o exp(D (sigma^2 h + 3 sigma^2 / 2 - mu) + sigma sqrt(D) z),
a multiplicative (exponentiated-gradient-like) update that can never change a sign.
M-DSM: for x_t = x_0 o exp(m t + sigma sqrt(t) eps) the conditional Hyvarinen score is
h(x_t | x_0) = -eps / (sigma sqrt t) - 1, whose conditional mean given x_t is h_t(x_t): the
regression on it (M-DSM) has the same minimiser as the explicit loss E |h_theta - h_t|^2 (M-ESM).
The prior at T is the log-normal with the exact first two moments of Y_T.

Experiment. An MLP (log x preconditioned by the closed-form mean and scale of Y_t, Fourier
features of log t) predicts eps; h_theta = -net / (sigma sqrt t) - 1, trained by M-DSM with
weight sigma^2 t (unit-scale noise regression), Adam (blocks.optim), all seeds one batched
model (torch bmm). Then, with the trained net: Dale-Langevin samples (the claim), the same sampler
fed the Stein score h_theta / x instead of h_theta (ablation), and the sign-agnostic ambient
sampler at few steps (ablation). Energy distance in log space to fresh data samples.

Controls. Stein score in place of the Hyvarinen score (the x o modulation removed): the samples
must miss the data law. The ambient (sign-agnostic) discretisation at few steps: some samples
must leave the positive orthant, which Dale-Langevin cannot.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from replica import runtime
from replica.blocks.optim import Adam
from replica.blocks.score import GaussianMixture, energy_distance

DIM = 2
# Every Dale-Langevin run keeps log x within +-LOG_CAP: never reached by a sampler with a sane
# drift, it keeps the Stein-score ablation (whose drift explodes as x -> 0) finite; a sample
# that reaches it counts as diverged.
LOG_CAP = 30.0
TINY = 1e-300  # |x| floor before a log in the sign-agnostic sampler (x may cross zero)


# ----------------------------------------------------------------------------- laws
def data_law(params: dict) -> GaussianMixture:
    """The law of y_0 = log x_0: an isotropic-component Gaussian mixture in log space."""
    means = np.asarray(params["log_means"], float)
    covs = np.stack([params["log_std"] ** 2 * np.eye(DIM)] * len(means))
    return GaussianMixture(np.asarray(params["weights"], float), means, covs)


def log_drift(params: dict) -> float:
    """m = mu - sigma^2 / 2: the drift of log X under GBM (Ito)."""
    return params["mu"] - params["sigma"] ** 2 / 2


def log_law(params: dict, t: float) -> GaussianMixture:
    """p^Y_t: the data mixture shifted by m t and widened by sigma^2 t (exact for GBM)."""
    law = data_law(params)
    shift = log_drift(params) * t
    widen = params["sigma"] ** 2 * t * np.eye(DIM)
    return GaussianMixture(law.weights, law.means + shift, law.covs + widen)


def hyvarinen_score(params: dict, x: np.ndarray, t: float) -> np.ndarray:
    """h_t(x) = x o grad_x log p^X_t(x) = grad_y log p^Y_t(log x) - 1, rows of x > 0."""
    return log_law(params, t).score(np.log(x)) - 1.0


def stein_score_x(params: dict, x: np.ndarray, t: float) -> np.ndarray:
    """grad_x log p^X_t(x) for p^X(x) = p^Y(log x) / prod x: (grad_y log p^Y - 1) / x."""
    return (log_law(params, t).score(np.log(x)) - 1.0) / x


def prior_moments(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of Y_T, the start law of every sampler (a log-normal in x)."""
    law = log_law(params, params["horizon"])
    return law.mean(), law.cov()


def time_grid(params: dict, steps: int) -> np.ndarray:
    """steps + 1 times, log-spaced from the horizon T down to t_min (constant relative step)."""
    return np.geomspace(params["horizon"], params["t_min"], steps + 1)


def score_times(params: dict) -> np.ndarray:
    return np.geomspace(params["score_t_lo"], params["horizon"], params["score_t_count"])


# ----------------------------------------------------------------------------- samplers
def dale_langevin(field, x, times, noise, params, cap: bool = True):
    """x <- x o exp(D (sigma^2 f(x, t) + 3 sigma^2 / 2 - mu) + sigma sqrt(D) z) along `times`;
    f is the Hyvarinen score (the sampler) or anything put in its place (the ablation).
    Steps in log space for range; returns (x, whether each sample hit the cap)."""
    sigma, mu = params["sigma"], params["mu"]
    y, hit = np.log(x), np.zeros(len(x), bool)
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        step = t - t_next
        y = y + step * (sigma**2 * field(np.exp(y), t) + 1.5 * sigma**2 - mu)
        y = y + sigma * np.sqrt(step) * noise[i]
        if cap:
            hit |= (np.abs(y) >= LOG_CAP).any(1)
            y = np.clip(y, -LOG_CAP, LOG_CAP)
    return np.exp(y), hit


def log_space_em(log_score, y, times, noise, params):
    """Euler-Maruyama on the additive log-space reverse SDE, y <- y - D (m - sigma^2 s) + ..."""
    sigma, m = params["sigma"], log_drift(params)
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        step = t - t_next
        y = y - step * (m - sigma**2 * log_score(y, t)) + sigma * np.sqrt(step) * noise[i]
    return y


def ambient_em(field, x, times, noise, params):
    """The sign-agnostic sampler: x <- x o (1 + D (sigma^2 h + 2 sigma^2 - mu) + sigma sqrt(D) z).
    h is evaluated at |x| (a sample that crossed zero has no Hyvarinen score of its own)."""
    sigma, mu = params["sigma"], params["mu"]
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        step = t - t_next
        h = field(np.maximum(np.abs(x), TINY), t)
        x = x * (1 + step * (sigma**2 * h + 2 * sigma**2 - mu) + sigma * np.sqrt(step) * noise[i])
    return x


def sampler_start(params: dict, rng: np.random.Generator, n: int, steps: int):
    """Prior draws x_T (log-normal with the exact moments of Y_T) and the step noises."""
    mean, cov = prior_moments(params)
    y_start = mean + rng.standard_normal((n, DIM)) @ np.linalg.cholesky(cov).T
    return np.exp(y_start), rng.standard_normal((steps, n, DIM))


def non_positive_fraction(x: np.ndarray) -> float:
    """Share of samples with some coordinate <= 0."""
    return float((np.asarray(x) <= 0).any(-1).mean())


def log_energy(x: np.ndarray, y_ref: np.ndarray) -> float:
    """Energy distance in log space between positive samples x and log-space reference y_ref."""
    return energy_distance(np.log(x), y_ref)


# ----------------------------------------------------------------------------- data
def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: a fresh log-space data sample (the energy-distance reference) and M-DSM-free
    evaluation points y_t ~ p^Y_t on the score-time grid with the exact Hyvarinen score there."""
    law, n, n_eval = data_law(params), params["n_samples"], params["n_eval"]
    times = score_times(params)
    reference, eval_y, eval_h = [], [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed, 1])
        reference.append(law.sample(n, rng))
        ys, hs = [], []
        for t in times:
            y = log_law(params, t).sample(n_eval, rng)
            ys.append(y)
            hs.append(hyvarinen_score(params, np.exp(y), t))
        eval_y.append(ys)
        eval_h.append(hs)
    return {
        "reference": np.asarray(reference),  # (S, n, d) log-space data
        "score_times": times,
        "eval_y": np.asarray(eval_y),  # (S, times, n_eval, d)
        "eval_h": np.asarray(eval_h),
    }


# ----------------------------------------------------------------------------- theory
def gaussian_fit_energy(params: dict, rng: np.random.Generator, n: int) -> float:
    """Energy distance (log space) between the data law and its moment-matched Gaussian: what a
    sampler that gets only the first two moments right would score (the scale of 'wrong')."""
    law = data_law(params)
    fit = law.mean() + rng.standard_normal((n, DIM)) @ np.linalg.cholesky(law.cov()).T
    return energy_distance(fit, law.sample(n, rng))


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """Exact-score samplers (no network): the Dale-Langevin update in x against exp of the
    log-space Euler-Maruyama chain under shared noise, its energy distance to data, the same
    with the exact Stein score in place of h, the sign-agnostic sampler's sign flips, and the
    data-against-data and Gaussian-fit energy distances."""
    rng = np.random.default_rng([params["data_seed"], 10_000])
    n, steps, few = params["n_samples"], params["steps"], params["few_steps"]
    law = data_law(params)
    reference = law.sample(n, rng)
    x_start, noise = sampler_start(params, rng, n, steps)
    times = time_grid(params, steps)

    def hyvarinen(x, t):  # x o grad_x log p^X, through the x-space Stein score
        return x * stein_score_x(params, x, t)

    x_dl, _ = dale_langevin(hyvarinen, x_start, times, noise, params, cap=False)
    y_em = log_space_em(
        lambda y, t: log_law(params, t).score(y), np.log(x_start), times, noise, params
    )
    identity_gap = float(np.max(np.abs(x_dl - np.exp(y_em)) / np.exp(y_em)))
    x_stein, hit_stein = dale_langevin(
        lambda x, t: stein_score_x(params, x, t), x_start, times, noise, params
    )
    x_few, noise_few = sampler_start(params, rng, n, few)
    x_ambient = ambient_em(hyvarinen, x_few, time_grid(params, few), noise_few, params)
    times_eval = data["score_times"]
    mean_t = np.array([log_law(params, t).mean() for t in times_eval])
    return {
        "exact_dl_energy": log_energy(x_dl, reference),
        "exact_dl_non_positive": non_positive_fraction(x_dl),
        "dl_identity_gap": identity_gap,
        "exact_stein_energy": log_energy(x_stein, reference),
        "exact_stein_capped": float(hit_stein.mean()),
        "exact_ambient_few_non_positive": non_positive_fraction(x_ambient),
        "data_energy_floor": energy_distance(law.sample(n, rng), reference),
        "gaussian_fit_energy": gaussian_fit_energy(params, rng, n),
        "score_times": times_eval,
        "log_mean_t": mean_t,
        "exact_dl_samples": np.log(x_dl[: params["samples_shown"]]),
    }


# ----------------------------------------------------------------------------- network
def init_mlp(dims: list[int], seeds: list[int]) -> list:
    """One MLP per seed (PyTorch's default uniform init), stacked on the model axis."""
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(2_510_027 * int(seed) + 3)
        layers = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1 / math.sqrt(fan_in)
            layers += [
                ((2 * torch.rand(fan_in, fan_out, generator=gen) - 1) * bound).double(),
                ((2 * torch.rand(1, fan_out, generator=gen) - 1) * bound).double(),
            ]
        per_seed.append(layers)
    return [torch.stack([p[i] for p in per_seed]).requires_grad_() for i in range(len(per_seed[0]))]


class Preconditioner:
    """Closed-form input scaling: c_in (y - E Y_t), c_in = 1 / sqrt(mean variance of Y_t),
    and Fourier features of u = log(t / T) / log(T / t_min) in [-1, 0]."""

    def __init__(self, params: dict, n_features: int):
        law = data_law(params)
        self.mean0 = torch.as_tensor(law.mean())
        self.var0 = float(np.trace(law.cov()) / DIM)
        self.m, self.sigma = log_drift(params), params["sigma"]
        self.horizon, self.t_min = params["horizon"], params["t_min"]
        self.n_features = n_features

    def inputs(self, y, t):
        """y (M, B, d), t (M, B, 1) -> network inputs (M, B, d + n_features)."""
        c_in = 1 / torch.sqrt(self.var0 + self.sigma**2 * t)
        u = torch.log(t / self.horizon) / math.log(self.horizon / self.t_min)
        freqs = torch.arange(1, self.n_features // 2 + 1, dtype=t.dtype) * math.pi
        centred = c_in * (y - self.mean0 - self.m * t)
        return torch.cat([centred, torch.sin(u * freqs), torch.cos(u * freqs)], -1)


def eps_net(net, features):
    """Batched MLP with SiLU: (M, B, in) -> predicted noise (M, B, d)."""
    h = features
    for i in range(0, len(net) - 2, 2):
        h = torch.nn.functional.silu(torch.baddbmm(net[i + 1], h, net[i]))
    return torch.baddbmm(net[-1], h, net[-2])


def learned_hyvarinen(net, pre: Preconditioner, y, t):
    """h_theta = -net / (sigma sqrt t) - 1, the network's Hyvarinen score at y = log x."""
    return -eps_net(net, pre.inputs(y, t)) / (pre.sigma * torch.sqrt(t)) - 1.0


def mdsm_loss(net, pre, y0, t, eps, params):
    """Per model, M-DSM with weight sigma^2 t: |net(y_t, t) - eps|^2 for
    y_t = y_0 + m t + sigma sqrt(t) eps, i.e. sigma^2 t |h_theta - h(x_t | x_0)|^2."""
    y_t = y0 + pre.m * t + params["sigma"] * torch.sqrt(t) * eps
    return ((eps_net(net, pre.inputs(y_t, t)) - eps) ** 2).sum(-1).mean(-1)


# ----------------------------------------------------------------------------- training
def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """All seeds as one batched MLP trained by M-DSM (float64, CPU), then the three samplers
    driven by the trained net from per-seed prior draws and noises."""
    torch.set_num_threads(1)
    batch, steps = int(params["batch"]), int(params["train_steps"])
    pre = Preconditioner(params, int(params["features"]))
    dims = [DIM + pre.n_features] + [int(params["width"])] * int(params["depth"]) + [DIM]
    net = init_mlp(dims, seeds)
    opt = Adam(net, lr=params["lr"])
    law = data_law(params)
    rngs = [np.random.default_rng([params["data_seed"], s, 2]) for s in seeds]
    log_span = math.log(params["horizon"] / params["t_min"])
    tick = runtime.Progress(steps, "train M-DSM")
    losses = []
    for step in range(steps):
        y0 = torch.as_tensor(np.stack([law.sample(batch, r) for r in rngs]))
        u = torch.as_tensor(np.stack([r.uniform(size=(batch, 1)) for r in rngs]))
        t = params["t_min"] * torch.exp(u * log_span)  # log-uniform on [t_min, T]
        eps = torch.as_tensor(np.stack([r.standard_normal((batch, DIM)) for r in rngs]))
        loss = mdsm_loss(net, pre, y0, t, eps, params)
        opt.lr = params["lr"] * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.detach().numpy())
        tick(step, loss=float(losses[-1].mean()))
    return {"loss": np.asarray(losses), **sample_with_net(net, pre, data, params, seeds)}


@runtime.no_grad
def sample_with_net(net, pre, data, params, seeds) -> dict[str, np.ndarray]:
    """The learned field on the evaluation points, and every sampler run with it."""
    n_seeds, n, steps, few = len(seeds), params["n_samples"], params["steps"], params["few_steps"]
    eval_y = torch.as_tensor(data["eval_y"])  # (S, times, n_eval, d)
    times = torch.as_tensor(data["score_times"])
    _, n_t, n_eval, _ = eval_y.shape
    t_eval = times.repeat_interleave(n_eval).view(1, -1, 1).expand(n_seeds, -1, -1)
    h_eval = learned_hyvarinen(net, pre, eval_y.reshape(n_seeds, -1, DIM), t_eval)

    def hyvarinen(x, t):  # x (S * n, d) stacked seed-major -> h_theta (S * n, d)
        y = torch.as_tensor(np.log(x)).view(n_seeds, -1, DIM)
        tt = torch.full((n_seeds, y.shape[1], 1), float(t), dtype=torch.float64)
        return learned_hyvarinen(net, pre, y, tt).reshape(-1, DIM).numpy()

    def stein(x, t):  # the ablation: grad_x log p = h / x put where h belongs
        return hyvarinen(x, t) / x

    starts, noises, starts_few, noises_few = [], [], [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed, 3])
        for draws, length in (((starts, noises), steps), ((starts_few, noises_few), few)):
            x0, z = sampler_start(params, rng, n, length)
            draws[0].append(x0)
            draws[1].append(z)
    x_start = np.concatenate(starts)
    noise = np.concatenate(noises, axis=1)
    times_full = time_grid(params, steps)
    x_dl, hit_dl = dale_langevin(hyvarinen, x_start, times_full, noise, params)
    x_stein, hit_stein = dale_langevin(stein, x_start, times_full, noise, params)
    x_start_few, noise_few = np.concatenate(starts_few), np.concatenate(noises_few, axis=1)
    times_few = time_grid(params, few)
    x_few = ambient_em(hyvarinen, x_start_few, times_few, noise_few, params)
    x_dl_few, _ = dale_langevin(hyvarinen, x_start_few, times_few, noise_few, params)

    def per_seed(a):
        return np.asarray(a).reshape(n_seeds, n, *np.shape(a)[1:])

    return {
        "h_eval": h_eval.reshape(n_seeds, n_t, n_eval, DIM).numpy(),
        "x_dale_langevin": per_seed(x_dl),
        "capped_dale_langevin": per_seed(hit_dl),
        "x_stein": per_seed(x_stein),
        "capped_stein": per_seed(hit_stein),
        "x_ambient_few": per_seed(x_few),
        "x_dale_langevin_few": per_seed(x_dl_few),
    }


# ----------------------------------------------------------------------------- measure
def relative_score_error(h_net, h_exact) -> np.ndarray:
    """sqrt(E|h_net - h|^2 / E|h - E h|^2) over points (axis -2): centred, so the constant -1
    of the Hyvarinen score (E h = -1 exactly) earns nothing."""
    h_net, h_exact = np.asarray(h_net, float), np.asarray(h_exact, float)
    err = ((h_net - h_exact) ** 2).sum(-1).mean(-1)
    centred = h_exact - h_exact.mean(-2, keepdims=True)
    return np.sqrt(err / (centred**2).sum(-1).mean(-1))


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per seed: score error per time, energy distances (log space) of every sampler to that
    seed's fresh data sample, sign flips and cap hits."""
    (run,) = runs.values()
    ref = data["reference"]
    out = {"score_times": data["score_times"]}
    out["score_error"] = relative_score_error(run["h_eval"], data["eval_h"])  # (S, times)
    energies = {"dale_langevin": [], "stein": [], "dale_langevin_few": []}
    for s in range(len(ref)):
        for arm in energies:
            energies[arm].append(log_energy(run[f"x_{arm}"][s], ref[s]))
    out.update({f"energy_{arm}": np.asarray(v) for arm, v in energies.items()})
    for arm in ("dale_langevin", "stein", "ambient_few", "dale_langevin_few"):
        out[f"non_positive_{arm}"] = (run[f"x_{arm}"] <= 0).any(-1).mean(-1)
    out["capped_dale_langevin"] = run["capped_dale_langevin"].mean(-1)
    out["capped_stein"] = run["capped_stein"].mean(-1)
    out["final_loss"] = run["loss"][-max(1, len(run["loss"]) // 20) :].mean(0)
    shown = params["samples_shown"]
    out["samples_dale_langevin"] = np.log(run["x_dale_langevin"][:, :shown])
    out["samples_stein"] = np.clip(np.log(run["x_stein"][:, :shown]), -LOG_CAP, LOG_CAP)
    return out


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    err = np.asarray(metrics["score_error"], float)
    out = {
        "energy_dale_langevin": list(metrics["energy_dale_langevin"]),
        "energy_ratio_to_gaussian_fit": (
            np.asarray(metrics["energy_dale_langevin"]) / theory["gaussian_fit_energy"]
        ).tolist(),
        "score_error_max": err.max(1).tolist(),
        "energy_stein": list(metrics["energy_stein"]),
        "non_positive_ambient_few": list(metrics["non_positive_ambient_few"]),
        "non_positive_dale_langevin": list(metrics["non_positive_dale_langevin"]),
        "non_positive_dale_langevin_few": list(metrics["non_positive_dale_langevin_few"]),
        "capped_dale_langevin": list(metrics["capped_dale_langevin"]),
        "energy_dale_langevin_few": list(metrics["energy_dale_langevin_few"]),
    }
    for key in (
        "exact_dl_energy",
        "dl_identity_gap",
        "exact_stein_energy",
        "exact_ambient_few_non_positive",
        "data_energy_floor",
        "gaussian_fit_energy",
    ):
        out[key] = float(theory[key])
    return out
