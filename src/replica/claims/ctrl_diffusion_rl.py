"""Conditional control of a pre-trained diffusion model by KL-regularised RL (Zhao, Uehara,
Scalia, Kung, Biancalani, Levine & Hajiramezanali, "Adding Conditional Control to Diffusion
Models with Reinforcement Learning", CTRL, ICLR 2025, arXiv 2406.12120).

Claim. Fine-tune a pre-trained diffusion sampler to maximise E log p_hat(y | x_0) - alpha KL(path
|| pre-trained path), with p_hat a classifier learned from offline (x, y) pairs. At alpha = 1 the
soft-optimal sampler draws from the conditional p(x | y) proportional to p_pre(x) p(y | x), and it
needs no classifier on noisy intermediate states (unlike classifier guidance).

Setting. p_pre: an 8-mode Gaussian mixture in 2-D (modes on a circle, common sd s), sampled by
the pre-trained chain, the Euler-Maruyama discretisation of the variance-exploding reverse SDE
with the mixture's exact score, started from the exact mixture noised to sigma_max:
    x <- x + h_i score(x, sigma_i) + sqrt(h_i) z,        h_i = sigma_i^2 - sigma_{i+1}^2.
Label: probit, p(y = 1 | x) = Phi(w . x + b). Each seed draws n_offline offline pairs (x from
p_pre, y from the label law) and fits p_hat by probit maximum likelihood.

Theory (closed forms; nothing from a trained network).
    p(y = 1) = sum_k pi_k Phi((w . mu_k + b) / sqrt(1 + s^2 |w|^2));
    class-1 rate of p(x | y = 1): E_pre[Phi^2] / p(y = 1) (bivariate normal CDF per mode);
    exact samples of p(x | y = 1): rejection from p_pre with acceptance Phi(w . x + b);
    soft-optimal bound: for any drift, J(u) = E log p_hat(y | x_0) - KL <= log p_hat(y = 1);
    exact time-dependent classifier h_sigma(x) = sum_k r_k(x) Phi((w . m_k(x) + b) / c),
        m_k = (sigma^2 mu_k + s^2 x) / (s^2 + sigma^2),
        c^2 = 1 + |w|^2 s^2 sigma^2 / (s^2 + sigma^2),
    whose grad log is exact classifier guidance (the baseline);
    for KL weight alpha (our reading) the soft-optimal law is p_pre p(y | x)^(1 / alpha).

Experiment. A drift correction u_phi(x, sigma) (a two-layer tanh MLP, output layer at zero so
training starts at p_pre) is added to the score in the same chain; the path KL of Gaussian
transitions with equal variance is exactly E sum_i h_i |u_i|^2 / 2. Adam on the reparametrised
-J(u) (rollouts backpropagated through the chain), for alpha in {1, 0, 10}, every (alpha, seed)
one network of one batch (torch bmm).

Measure. Energy distance of each arm's samples to exact samples of p(x | y = 1), as a fraction of
the pre-trained mixture's own distance; the class-1 rate E Phi(w . x + b); the objective gap
log p_hat(y = 1) - J.

Controls. alpha = 0 (no KL: reward maximisation) and alpha = 10 (KL ten times stronger): the
same network and budget must land far from p(x | y).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import log_ndtr, ndtr

from replica import runtime
from replica.blocks.optim import Adam
from replica.blocks.score import GaussianMixture, energy_distance, ve_sigmas

NEWTON_STEPS = 30  # probit maximum likelihood converges quadratically; 30 is far more than needed
HERMITE_NODES = 64  # Gauss-Hermite nodes for E_pre[Phi^p] per mode (exact to ~1e-12 here)
CURVE_ALPHAS = np.geomspace(0.1, 100.0, 41)  # KL weights of the theory curve in the figure


# ----------------------------------------------------------------------------- data
def mixture(params: dict) -> GaussianMixture:
    k, r, s = params["modes"], params["radius"], params["mode_std"]
    angles = 2 * np.pi * np.arange(k) / k
    means = r * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(np.full(k, 1 / k), means, np.tile(s**2 * np.eye(2), (k, 1, 1)))


def label_law(params: dict) -> tuple[np.ndarray, float]:
    return np.asarray(params["label_weight"], float), float(params["label_bias"])


def label_probability(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """p(y = 1 | x) = Phi(w . x + b)."""
    return ndtr(x @ w + b)


def fit_probit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Probit maximum likelihood by Newton's method; returns (w_hat, b_hat)."""
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    sign = 2 * y - 1.0
    theta = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        q = sign * (design @ theta)
        ratio = np.exp(-0.5 * q**2 - log_ndtr(q)) / np.sqrt(2 * np.pi)  # phi(q) / Phi(q)
        grad = design.T @ (sign * ratio)
        curvature = ratio * (q + ratio)  # -(d^2 / dz^2) log Phi(q), positive
        hess = design.T @ (design * curvature[:, None])
        theta = theta + np.linalg.solve(hess, grad)
    return theta[:-1], float(theta[-1])


def sample_tilted(law: GaussianMixture, w, b, power: float, n: int, rng) -> np.ndarray:
    """Exact samples of p_pre(x) Phi(w . x + b)^power by rejection (acceptance Phi^power <= 1)."""
    out, have = [], 0
    while have < n:
        x = law.sample(2 * n, rng)
        keep = rng.uniform(size=len(x)) < label_probability(x, w, b) ** power
        out.append(x[keep])
        have += int(keep.sum())
    return np.concatenate(out)[:n]


def sampler_sigmas(params: dict) -> np.ndarray:
    return ve_sigmas(
        params["sigma_max"], params["sigma_min"], params["sampler_steps"], params["grid_rho"]
    )


def guidance_drift(law: GaussianMixture, w, b, x: np.ndarray, sigma: float) -> np.ndarray:
    """Exact classifier guidance grad_x log h_sigma(x), with the time-dependent classifier
    h_sigma(x) = E[Phi(w . x_0 + b) | x_sigma = x] of the pre-trained mixture."""
    s2 = law.covs[0, 0, 0]  # common isotropic mode variance
    total = s2 + sigma**2
    c = np.sqrt(1 + (w @ w) * s2 * sigma**2 / total)
    r = law.ve(sigma).responsibilities(x)  # (N, K)
    m = (sigma**2 * law.means[None] + s2 * x[:, None]) / total  # posterior means (N, K, 2)
    a = (m @ w + b) / c
    phi, big_phi = np.exp(-0.5 * a**2) / np.sqrt(2 * np.pi), ndtr(a)
    g = (law.means[None] - x[:, None]) / total  # grad log N(x; mu_k, total I)
    g_mean = (r[..., None] * g).sum(1, keepdims=True)
    grad_h = (r[..., None] * (g - g_mean) * big_phi[..., None]).sum(1)
    grad_h += (r * phi).sum(1)[:, None] * w[None] * s2 / total / c
    return grad_h / (r * big_phi).sum(1)[:, None]


def chain(law: GaussianMixture, sigmas, rng, n: int, drift=None) -> np.ndarray:
    """The pre-trained chain (drift None) or exact guidance, from the exact noised mixture."""
    x = law.ve(sigmas[0]).sample(n, rng)
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        h = s * s - s_next * s_next
        step = law.ve(s).score(x) + (0 if drift is None else drift(x, s))
        x = x + h * step + np.sqrt(h) * rng.standard_normal(x.shape)
    return x


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: offline pairs and the fitted probit, exact samples of p(x | y = 1) (two sets),
    exact mixture samples, the pre-trained chain's and exact guidance's samples. Shared: large
    reference samples of p_pre, p(x | y = 1) and the alpha = 10 law, and the energy distance
    between the first two."""
    law, (w, b), sigmas, n = (
        mixture(params),
        label_law(params),
        sampler_sigmas(params),
        params["n_eval"],
    )
    out: dict[str, list] = {
        key: []
        for key in ("w_hat", "b_hat", "target", "target_twin", "mixture", "pretrained", "guidance")
    }
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        x_off = law.sample(params["n_offline"], rng)
        y_off = (rng.uniform(size=len(x_off)) < label_probability(x_off, w, b)).astype(float)
        w_hat, b_hat = fit_probit(x_off, y_off)
        out["w_hat"].append(w_hat)
        out["b_hat"].append(b_hat)
        out["target"].append(sample_tilted(law, w, b, 1.0, n, rng))
        out["target_twin"].append(sample_tilted(law, w, b, 1.0, n, rng))
        out["mixture"].append(law.sample(n, rng))
        out["pretrained"].append(chain(law, sigmas, rng, n))
        out["guidance"].append(
            chain(law, sigmas, rng, n, lambda x, s: guidance_drift(law, w, b, x, s))
        )
    data = {key: np.asarray(value) for key, value in out.items()}
    rng = np.random.default_rng([params["data_seed"], 10**6])  # seed-independent references
    m = params["n_reference"]
    data["reference_pretrained"] = law.sample(m, rng)
    data["reference_target"] = sample_tilted(law, w, b, 1.0, m, rng)
    data["reference_alpha_10"] = sample_tilted(law, w, b, 0.1, m, rng)
    # the unit of every energy-distance fraction (theory's and measure's): one n_reference x
    # n_reference computation, done once here rather than in both
    data["reference_gap"] = energy_distance(data["reference_pretrained"], data["reference_target"])
    return data


# ----------------------------------------------------------------------------- theory
def label_marginal(law: GaussianMixture, w, b) -> float:
    """p(y = 1) = sum_k pi_k Phi((w . mu_k + b) / sqrt(1 + s^2 |w|^2))."""
    s2 = law.covs[0, 0, 0]
    return float(law.weights @ ndtr((law.means @ w + b) / np.sqrt(1 + s2 * (w @ w))))


def conditional_class_rate(law: GaussianMixture, w, b) -> float:
    """E[Phi(w . x + b) | y = 1] = E_pre[Phi^2] / p(y = 1); per mode z = w . x + b ~ N(m, t^2) and
    E Phi(z)^2 = P(A_1 <= z, A_2 <= z) = BVN(m / sqrt(1 + t^2), same; rho = t^2 / (1 + t^2))."""
    # scipy.stats here, not at import: it probes torch, which verdict jobs must not load
    from scipy.stats import multivariate_normal

    t2 = law.covs[0, 0, 0] * (w @ w)
    rho = t2 / (1 + t2)
    bvn = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])
    z = (law.means @ w + b) / np.sqrt(1 + t2)
    second = sum(p * bvn.cdf([zk, zk]) for p, zk in zip(law.weights, z, strict=True))
    return float(second / label_marginal(law, w, b))


def phi_moment(law: GaussianMixture, w, b, power: float) -> float:
    """E_pre[Phi(w . x + b)^power] by Gauss-Hermite quadrature per mode."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(HERMITE_NODES)  # weight exp(-u^2 / 2)
    t = np.sqrt(law.covs[0, 0, 0] * (w @ w))
    z = (law.means @ w + b)[:, None] + t * nodes[None]
    values = np.exp(power * log_ndtr(z)) @ weights / np.sqrt(2 * np.pi)
    return float(law.weights @ values)


def tilted_class_rate(law: GaussianMixture, w, b, alpha: float) -> float:
    """Class-1 rate of the alpha soft-optimal law p_pre Phi^(1/alpha): E[Phi^(1+p)] / E[Phi^p]."""
    p = 1 / alpha
    return phi_moment(law, w, b, 1 + p) / phi_moment(law, w, b, p)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    law, (w, b) = mixture(params), label_law(params)
    gap = float(data["reference_gap"])

    def fraction(samples) -> list[float]:  # per seed, over the seed's exact conditional samples
        return [energy_distance(x, t) / gap for x, t in zip(samples, data["target"], strict=True)]

    log_p_hat = [
        np.log(label_marginal(law, wh, bh))
        for wh, bh in zip(data["w_hat"], data["b_hat"], strict=True)
    ]
    pre_rate = label_probability(data["reference_pretrained"], w, b).mean()
    return {
        "ed_pretrained_to_conditional": gap,
        "label_marginal": label_marginal(law, w, b),
        "class1_rate_conditional": conditional_class_rate(law, w, b),
        "class1_rate_pretrained_mc": float(pre_rate),
        "log_p_hat": log_p_hat,
        "classifier_error": [
            float(np.abs(wh - w).sum() + abs(bh - b))
            for wh, bh in zip(data["w_hat"], data["b_hat"], strict=True)
        ],
        "ed_fraction_guidance": fraction(data["guidance"]),
        "ed_fraction_floor": fraction(data["target_twin"]),
        "ed_fraction_pretrained_sampler": [
            energy_distance(x, m) / gap
            for x, m in zip(data["pretrained"], data["mixture"], strict=True)
        ],
        "ed_fraction_tilted_alpha_10": energy_distance(
            data["reference_alpha_10"], data["reference_target"]
        )
        / gap,
        "class1_rate_guidance": label_probability(data["guidance"], w, b).mean(-1).tolist(),
        "curve_alphas": CURVE_ALPHAS.tolist(),
        "curve_class1_rate": [tilted_class_rate(law, w, b, a) for a in CURVE_ALPHAS],
    }


# ----------------------------------------------------------------------------- training
def init_networks(seeds, n_alphas: int, width: int):
    """Per seed one initialisation (shared by its alpha arms), batch alpha-major: (A * S, ...).
    Input (x_1, x_2, log sigma feature); the output layer starts at zero (u = 0: p_pre)."""
    per_seed = []
    for seed in seeds:
        g = torch.Generator().manual_seed(2_406_121 * int(seed) + 7)
        per_seed.append(
            [
                torch.randn(3, width, generator=g) / np.sqrt(3),
                torch.zeros(1, width),
                torch.randn(width, width, generator=g) / np.sqrt(width),
                torch.zeros(1, width),
                torch.zeros(width, 2),
            ]
        )
    return [
        torch.stack([p[i] for p in per_seed]).repeat(n_alphas, 1, 1).requires_grad_()
        for i in range(5)
    ]


def drift_net(net, x, sigma: float, data_var: float, mode_var: float):
    """u_phi(x, sigma) = MLP(x / sqrt(sigma^2 + data_var), log(sigma) / 4) / (mode_var + sigma^2):
    the scale of the exact guidance drift, so the MLP's output is O(1) at every noise level."""
    feature = torch.full_like(x[..., :1], float(np.log(sigma)) / 4)
    h = torch.cat([x / float(np.sqrt(sigma**2 + data_var)), feature], -1)
    h = torch.tanh(torch.baddbmm(net[1], h, net[0]))
    h = torch.tanh(torch.baddbmm(net[3], h, net[2]))
    return torch.bmm(h, net[4]) / (mode_var + sigma**2)


def mixture_score(means, log_weights, x, sigma: float, mode_var: float):
    """Exact score of the isotropic mixture noised to sigma: (sum_k r_k mu_k - x) / v."""
    v = mode_var + sigma**2
    logits = (x @ means.T - 0.5 * (means * means).sum(-1)) / v + log_weights
    return (torch.softmax(logits, -1) @ means - x) / v


def rollout(net, start, noises, sigmas, law_t, consts):
    """The controlled chain from `start` (B, M, 2) with the given noises (steps, B, M, 2).
    Returns x_0 and the per-path KL sum_i h_i |u_i|^2 / 2 (B, M)."""
    means, log_weights = law_t
    data_var, mode_var = consts
    x, kl = start, torch.zeros(start.shape[:-1])
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        h = float(s * s - s_next * s_next)
        u = drift_net(net, x, float(s), data_var, mode_var)
        kl = kl + 0.5 * h * (u * u).sum(-1)
        x = x + h * (mixture_score(means, log_weights, x, float(s), mode_var) + u)
        x = x + float(np.sqrt(h)) * noises[i]
    return x, kl


def draws(gens, law: GaussianMixture, sigma_max: float, n: int, steps: int, n_alphas: int):
    """Per seed: exact starts from the noised mixture and the chain's noises; the alpha arms of a
    seed share them (common random numbers). Shapes (A * S, n, 2), (steps, A * S, n, 2)."""
    starts, noises = [], []
    spread = float(np.sqrt(law.covs[0, 0, 0] + sigma_max**2))
    means = torch.as_tensor(law.means, dtype=torch.float32)
    for g in gens:
        comp = torch.randint(len(law.weights), (n,), generator=g)
        starts.append(means[comp] + spread * torch.randn(n, 2, generator=g))
        noises.append(torch.randn(steps, n, 2, generator=g))
    start = torch.stack(starts).repeat(n_alphas, 1, 1)
    noise = torch.stack(noises, 1).repeat(1, n_alphas, 1, 1)
    return start, noise


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """Every (alpha, seed) one drift network of one batch; Adam on -J = -E log p_hat + alpha KL."""
    law, sigmas = mixture(params), sampler_sigmas(params)
    alphas = torch.tensor(params["alphas"], dtype=torch.float32)
    n_alpha, n_seed, steps = len(alphas), len(seeds), len(sigmas) - 1
    alpha = alphas.repeat_interleave(n_seed)[:, None]  # (A * S, 1), alpha-major
    w_hat = torch.as_tensor(data["w_hat"], dtype=torch.float32).repeat(n_alpha, 1)
    b_hat = torch.as_tensor(data["b_hat"], dtype=torch.float32).repeat(n_alpha)[:, None]
    law_t = (
        torch.as_tensor(law.means, dtype=torch.float32),
        torch.as_tensor(np.log(law.weights), dtype=torch.float32),
    )
    mode_var = float(law.covs[0, 0, 0])
    consts = (params["radius"] ** 2 / 2 + mode_var, mode_var)  # per-coordinate data variance

    def log_reward(x):  # log p_hat(y = 1 | x_0), (B, M)
        return torch.special.log_ndtr((x * w_hat[:, None]).sum(-1) + b_hat)

    net = init_networks(seeds, n_alpha, params["width"])
    opt = Adam(net, lr=params["lr"])
    gens = [torch.Generator().manual_seed(9_173 * int(seed) + 11) for seed in seeds]
    n_steps = params["adam_steps"]
    losses = np.empty((n_steps, n_alpha * n_seed))
    tick = runtime.Progress(n_steps, "train ctrl")
    for step in range(n_steps):
        opt.lr = params["lr"] + (params["lr_final"] - params["lr"]) * step / max(1, n_steps - 1)
        start, noise = draws(gens, law, params["sigma_max"], params["particles"], steps, n_alpha)
        x0, kl = rollout(net, start, noise, sigmas, law_t, consts)
        loss = (-log_reward(x0) + alpha * kl).mean(-1)  # per network
        opt.zero_grad()
        loss.sum().backward()  # networks are independent: the sum's gradient is each one's
        opt.step()
        losses[step] = loss.detach().numpy()
        tick(step, loss=float(loss.detach().mean()))
    with torch.no_grad():  # fresh evaluation rollouts
        start, noise = draws(gens, law, params["sigma_max"], params["n_eval"], steps, n_alpha)
        x0, kl = rollout(net, start, noise, sigmas, law_t, consts)
        reward = log_reward(x0)

    def unbatch(t):  # (A * S, ...) -> (A, S, ...)
        t = np.asarray(t, dtype=np.float64)
        return t.reshape(n_alpha, n_seed, *t.shape[1:])

    return {
        "samples": unbatch(x0.numpy()),
        "log_reward": unbatch(reward.numpy()),
        "path_kl": unbatch(kl.numpy()),
        "loss": unbatch(losses.T),
    }


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per alpha arm and seed: energy distance to the exact conditional (fraction of p_pre's),
    class-1 rate under the true label law, and the objective J."""
    run = runs["model-ctrl"] if "model-ctrl" in runs else next(iter(runs.values()))
    w, b = label_law(params)
    gap = float(data["reference_gap"])  # energy distance of p_pre to p(x | y = 1)
    samples = run["samples"]  # (A, S, n, 2)
    ed = [
        [energy_distance(x, t) / gap for x, t in zip(arm, data["target"], strict=True)]
        for arm in samples
    ]
    return {
        "alphas": list(params["alphas"]),
        "ed_fraction": ed,
        "class1_rate": label_probability(samples, w, b).mean(-1).tolist(),
        "mean_log_reward": run["log_reward"].mean(-1).tolist(),
        "mean_path_kl": run["path_kl"].mean(-1).tolist(),
        "objective": (run["log_reward"] - run["path_kl"]).mean(-1).tolist(),
        "loss": run["loss"].tolist(),
        "samples_seed0": samples[:, 0, : min(500, samples.shape[2])].tolist(),
    }


# ----------------------------------------------------------------------------- verdict
def arm(metrics: dict, key: str, alpha: float) -> np.ndarray:
    matches = np.flatnonzero(np.isclose(np.asarray(metrics["alphas"], float), alpha))
    if not len(matches):
        raise ValueError(f"alpha = {alpha} is not among the trained alphas {metrics['alphas']}")
    return np.asarray(metrics[key])[matches[0]]


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (seed order) and theory constants."""
    ed_ctrl = arm(metrics, "ed_fraction", 1.0)
    return {
        "ed_fraction_ctrl": ed_ctrl.tolist(),
        "class1_rate_ctrl": arm(metrics, "class1_rate", 1.0).tolist(),
        "class1_rate_conditional": theory["class1_rate_conditional"],
        "objective_gap_ctrl": (
            np.asarray(theory["log_p_hat"]) - arm(metrics, "objective", 1.0)
        ).tolist(),
        "ed_fraction_ctrl_minus_guidance": (
            ed_ctrl - np.asarray(theory["ed_fraction_guidance"])
        ).tolist(),
        "ed_fraction_alpha_0": arm(metrics, "ed_fraction", 0.0).tolist(),
        "ed_fraction_alpha_10": arm(metrics, "ed_fraction", 10.0).tolist(),
        "ed_fraction_pretrained_sampler": list(theory["ed_fraction_pretrained_sampler"]),
        "ed_fraction_guidance": list(theory["ed_fraction_guidance"]),
        "ed_fraction_floor": list(theory["ed_fraction_floor"]),
        "classifier_error": list(theory["classifier_error"]),
        "ed_fraction_tilted_alpha_10": theory["ed_fraction_tilted_alpha_10"],
        "class1_rate_alpha_0": arm(metrics, "class1_rate", 0.0).tolist(),
        "class1_rate_alpha_10": arm(metrics, "class1_rate", 10.0).tolist(),
        "class1_rate_guidance": list(theory["class1_rate_guidance"]),
        "path_kl_ctrl": arm(metrics, "mean_path_kl", 1.0).tolist(),
    }
