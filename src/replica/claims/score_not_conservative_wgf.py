"""Are we really learning the score function? Diffusion models as Wasserstein-gradient-flow
matching (Vuong, McCann, Santos, Lin, TMLR 2025, arXiv 2509.00336).

Claim. A network trained by denoising score matching (DSM) is read as the score
grad log p_sigma, a conservative field, but nothing in a free architecture makes it one: the
paper finds trained networks violate both the differential (symmetric Jacobian) and the
integral (vanishing loop integrals) constraints of a gradient. They still generate well, because
what sampling needs is the velocity of the probability flow, and only its effect on the
continuity equation matters: non-conservative errors need not harm density transport.

Theory (exact; independent of training). Under VE noising x_sigma = x_0 + sigma z the marginals
obey the heat equation d p_sigma / d sigma = sigma Lap p_sigma = -div(p_sigma v) with the
probability-flow velocity v = -sigma grad log p_sigma (dx/dsigma = v, integrated from sigma_max
down). Any w with div(p_sigma w) = 0 can be added to v without changing a single marginal. In 2-D,
with J the 90-degree rotation, div(J grad p) = -d1 d2 p + d2 d1 p = 0, so
    w = c sigma J grad log p_sigma      (p_sigma w = c sigma J grad p_sigma)
is such a field for every c, although its curl is non-zero: the score (I + c J) grad log p_sigma
is strongly non-conservative and transports exactly as well. A solid rotation of the same size,
-c sigma J (x - mean) / (sigma^2 + tau^2) (the rotated score of the moment-matched isotropic
Gaussian, tau^2 = tr Cov / 2), is divergence-free for p_sigma only where p_sigma is isotropic,
so it moves mass along the wrong curves at small sigma. The law is a 2-D three-component
anisotropic Gaussian mixture, its noised scores in closed form (replica.blocks.score).

Experiment. A free MLP F(c_in x, log sigma) -> R^2 with s_theta = F / sigma (c_in = 1 /
sqrt(sigma^2 + tau^2)), trained by DSM (target -eps, log-uniform sigma), all seeds as one
batched network (torch bmm). Measured: (i) the Jacobian asymmetry E||D - D^T|| / E||D + D^T|| of
s_theta at several sigma (D by central differences in float64) and the normalised circulation on
circles; (ii) the PF-ODE (Heun, Karras grid, shared start points from p_sigma_max) with s_theta,
with s_theta + c J s_theta, and with the solid rotation added: energy distances to a sample of
the data law, against the exact-score sampler on the same grid and start points, in units of the
moment-matched Gaussian's distance.

Control (ablation). The solid rotation at the same c must degrade the samples of the same net,
while the divergence-free rotation must not.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from replica import runtime
from replica.blocks.optim import Adam
from replica.blocks.score import (
    GaussianMixture,
    energy_distance,
    gaussian,
    probability_flow,
    ve_sigmas,
)


# ----------------------------------------------------------------------------- data
def mixture(params: dict) -> GaussianMixture:
    return GaussianMixture(
        np.asarray(params["weights"]), np.asarray(params["means"]), np.asarray(params["covs"])
    )


def isotropic_variance(law: GaussianMixture) -> float:
    """tau^2 = tr(Cov) / 2: the variance of the moment-matched isotropic Gaussian."""
    return float(np.trace(law.cov()) / law.dim)


def sampler_runs(params: dict) -> tuple[list[str], list[float]]:
    """The PF-ODE runs, in order: unperturbed, divergence-free rotations, solid rotations."""
    cs = [float(c) for c in params["c_values"]]
    return ["none"] + ["div_free"] * len(cs) + ["solid"] * len(cs), [0.0] + cs + cs


def stencil(x: np.ndarray, h: float) -> np.ndarray:
    """Central-difference points x + h e1, x - h e1, x + h e2, x - h e2: (..., 4, 2)."""
    steps = h * np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    return np.asarray(x)[..., None, :] + steps


def circles(centres: np.ndarray, radius: float, points: int):
    """Points (L, P, 2) on circles around the centres and their unit tangents (P, 2)."""
    angle = 2 * np.pi * np.arange(points) / points
    ring = np.stack([np.cos(angle), np.sin(angle)], -1)
    tangent = np.stack([-np.sin(angle), np.cos(angle)], -1)
    return np.asarray(centres)[:, None, :] + radius * ring, tangent


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """One evaluation set shared by every seed and the exact sampler (common random numbers):
    PF-ODE start points from p_sigma_max, two reference samples of p_sigma_min, a sample of the
    moment-matched Gaussian, Jacobian probe points from p_sigma and circle centres."""
    law = mixture(params)
    rng = np.random.default_rng(params["data_seed"])
    n = params["n_eval"]
    probes = np.stack(
        [law.ve(s).sample(params["n_probe"], rng) for s in params["asym_sigmas"]]
    )  # (n_sigma, n_probe, 2)
    centres = law.ve(params["loop_sigma"]).sample(params["n_loops"], rng)
    loop_points, tangent = circles(centres, params["loop_radius"], params["loop_points"])
    return {
        "start": law.ve(params["sigma_max"]).sample(n, rng),
        "reference": law.ve(params["sigma_min"]).sample(n, rng),
        "reference_2": law.ve(params["sigma_min"]).sample(n, rng),
        "gaussian_sample": gaussian(law.mean(), law.cov()).sample(n, rng),
        "probe_stencil": stencil(probes, params["fd_step"]),  # (n_sigma, n_probe, 4, 2)
        "loop_points": loop_points,
        "loop_tangent": tangent,
        "seeds": np.asarray(seeds),
    }


# ----------------------------------------------------------------------------- theory
def rotate90(v):
    """J v with J = [[0, -1], [1, 0]] on the last axis (numpy arrays and torch tensors)."""
    if isinstance(v, np.ndarray):
        return np.stack([-v[..., 1], v[..., 0]], -1)
    return torch.stack([-v[..., 1], v[..., 0]], -1)


def perturbed_score(score, x, sigma: float, c_div, c_solid, mean, tau2: float):
    """The PF-ODE's score with a rotation added: (I + c_div J) s, minus the solid rotation
    c_solid J (x - mean) / (sigma^2 + tau^2); the velocity is -sigma times this."""
    return score + c_div * rotate90(score) - c_solid * rotate90(x - mean) / (sigma**2 + tau2)


def exact_field(law: GaussianMixture, c_div: float, c_solid: float):
    mean, tau2 = law.mean(), isotropic_variance(law)

    def field(x, sigma):
        return perturbed_score(law.ve(sigma).score(x), x, sigma, c_div, c_solid, mean, tau2)

    return field


def jacobian_from_stencil(values: np.ndarray, h: float) -> np.ndarray:
    """D[..., i, j] = d s_i / d x_j from the field at stencil points (..., 4, 2)."""
    d1 = (values[..., 0, :] - values[..., 1, :]) / (2 * h)
    d2 = (values[..., 2, :] - values[..., 3, :]) / (2 * h)
    return np.stack([d1, d2], -1)


def asymmetry(jac: np.ndarray) -> np.ndarray:
    """E ||D - D^T||_F / E ||D + D^T||_F over the probe axis (the second-to-last of the
    leading axes): 0 for a gradient field, 1 for a pure rotation."""
    anti = np.linalg.norm(jac - np.swapaxes(jac, -1, -2), axis=(-2, -1))
    sym = np.linalg.norm(jac + np.swapaxes(jac, -1, -2), axis=(-2, -1))
    return anti.mean(-1) / sym.mean(-1)


def loop_circulation(values: np.ndarray, tangent: np.ndarray) -> np.ndarray:
    """|sum s . t dl| / sum |s| dl per circle (uniform points: dl cancels); values (..., P, 2)."""
    along = (values * tangent).sum(-1)
    return np.abs(along.mean(-1)) / np.linalg.norm(values, axis=-1).mean(-1)


def divergence_identity_residual(law: GaussianMixture, params: dict) -> float:
    """max |div(p_sigma J grad log p_sigma)| / max |div(p_sigma grad log p_sigma)| on a grid,
    over the noise levels asym_sigmas, both by central differences."""
    axis = np.linspace(-5.0, 5.0, params["fd_grid"])
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    h = params["fd_step"]
    points = stencil(grid, h).reshape(-1, 2)
    worst = 0.0
    for sigma in params["asym_sigmas"]:
        noised = law.ve(sigma)
        grad_p = np.exp(noised.log_density(points))[:, None] * noised.score(points)
        grad_p = grad_p.reshape(len(grid), 4, 2)

        def div(flux):
            return (flux[:, 0, 0] - flux[:, 1, 0] + flux[:, 2, 1] - flux[:, 3, 1]) / (2 * h)

        worst = max(worst, float(np.abs(div(rotate90(grad_p))).max() / np.abs(div(grad_p)).max()))
    return worst


def exact_samples(law: GaussianMixture, data: dict, params: dict) -> np.ndarray:
    """The exact-score PF-ODE for every run of sampler_runs: (R, n, 2)."""
    sigmas = ve_sigmas(params["sigma_max"], params["sigma_min"], params["ode_steps"])
    kinds, cs = sampler_runs(params)
    out = []
    for kind, c in zip(kinds, cs, strict=True):
        field = exact_field(law, c if kind == "div_free" else 0.0, c if kind == "solid" else 0.0)
        out.append(probability_flow(field, np.asarray(data["start"]), sigmas))
    return np.stack(out)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    law = mixture(params)
    ref = np.asarray(data["reference"])
    kinds, cs = sampler_runs(params)
    samples = exact_samples(law, data, params)
    distances = np.array([energy_distance(s, ref) for s in samples])
    probes = np.asarray(data["probe_stencil"])
    exact_values = np.stack(
        [
            law.ve(s).score(p.reshape(-1, 2)).reshape(p.shape)
            for s, p in zip(params["asym_sigmas"], probes, strict=True)
        ]
    )
    loops = np.asarray(data["loop_points"])
    loop_values = law.ve(params["loop_sigma"]).score(loops.reshape(-1, 2)).reshape(loops.shape)
    return {
        "run_kind": kinds,
        "run_c": cs,
        "exact_distance": distances,
        "gaussian_distance": energy_distance(np.asarray(data["gaussian_sample"]), ref),
        "floor_distance": energy_distance(np.asarray(data["reference_2"]), ref),
        "exact_asymmetry": asymmetry(jacobian_from_stencil(exact_values, params["fd_step"])),
        "exact_loop_circulation": float(
            loop_circulation(loop_values, np.asarray(data["loop_tangent"])).mean()
        ),
        "divergence_identity_residual": divergence_identity_residual(law, params),
        "tau2": isotropic_variance(law),
        "mean": law.mean(),
    }


# ----------------------------------------------------------------------------- training
LAYERS = 3  # two hidden layers and the output layer


def init_mlp(width: int, seeds: list[int]) -> list:
    """Weights of one free MLP (x1, x2, log sigma) -> R^2 per seed, stacked on a seed axis
    (PyTorch's default uniform init): [W1, b1, W2, b2, W3, b3]."""
    shapes = [(3, width), (1, width), (width, width), (1, width), (width, 2), (1, 2)]
    fan_ins = [3, 3, width, width, width, width]
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(1_000_003 * int(seed) + 2509)
        per_seed.append(
            [
                (2 * torch.rand(shape, generator=gen) - 1) / math.sqrt(fan_in)
                for shape, fan_in in zip(shapes, fan_ins, strict=True)
            ]
        )
    return [torch.stack([p[i] for p in per_seed]).requires_grad_() for i in range(len(shapes))]


def network(weights, x, log_sigma, tau2: float):
    """F(c_in x, log sigma / 4) for every seed: x (S, N, 2), log_sigma (S, N, 1) -> (S, N, 2);
    the score is F / sigma (F regresses -eps, the denoiser's scaled noise)."""
    w1, b1, w2, b2, w3, b3 = weights
    c_in = torch.rsqrt(torch.exp(2 * log_sigma) + tau2)
    h = torch.cat([c_in * x, log_sigma / 4], -1)
    h = torch.nn.functional.silu(torch.baddbmm(b1, h, w1))
    h = torch.nn.functional.silu(torch.baddbmm(b2, h, w2))
    return torch.baddbmm(b3, h, w3)


def net_score(weights, x, sigma: float, tau2: float):
    log_sigma = torch.full((*x.shape[:-1], 1), math.log(sigma), dtype=x.dtype)
    return network(weights, x, log_sigma, tau2) / sigma


def training_streams(params: dict, seeds: list[int]):
    """Per seed the run's clean samples, noise and log sigma (log-uniform), (steps, S, B, .)."""
    law = mixture(params)
    steps, batch = params["steps"], params["batch"]
    lo, hi = math.log(params["sigma_min"]), math.log(params["sigma_max"])
    x0, eps, log_sigma = [], [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], int(seed)])
        x0.append(law.sample(steps * batch, rng).reshape(steps, batch, 2))
        eps.append(rng.standard_normal((steps, batch, 2)))
        log_sigma.append(rng.uniform(lo, hi, (steps, batch, 1)))
    return (torch.as_tensor(np.stack(a, 1), dtype=torch.float32) for a in (x0, eps, log_sigma))


def cosine_lr(step: int, params: dict) -> float:
    return params["lr"] * 0.5 * (1 + math.cos(math.pi * step / params["steps"]))


@runtime.no_grad
def sample_pf_ode(weights, data: dict, params: dict, tau2: float, mean) -> np.ndarray:
    """The net's PF-ODE for every run of sampler_runs, all seeds and runs in one batch, float32:
    (S, R, n, 2); the same start points as the exact sampler."""
    kinds, cs = sampler_runs(params)
    start = np.asarray(data["start"], dtype=np.float32)
    n, runs, n_seeds = len(start), len(kinds), weights[0].shape[0]
    c_div = torch.tensor([c if k == "div_free" else 0.0 for k, c in zip(kinds, cs, strict=True)])
    c_solid = torch.tensor([c if k == "solid" else 0.0 for k, c in zip(kinds, cs, strict=True)])
    c_div, c_solid = (c.repeat_interleave(n)[None, :, None] for c in (c_div, c_solid))
    mean_t = torch.as_tensor(mean, dtype=torch.float32)

    def field(x, sigma):
        s = net_score(weights, x, float(sigma), tau2)
        return perturbed_score(s, x, float(sigma), c_div, c_solid, mean_t, tau2)

    x = torch.as_tensor(np.tile(start, (runs, 1))).expand(n_seeds, -1, -1).contiguous()
    sigmas = ve_sigmas(params["sigma_max"], params["sigma_min"], params["ode_steps"]).tolist()
    out = probability_flow(field, x, sigmas)
    return out.reshape(n_seeds, runs, n, 2).double().numpy()


@runtime.no_grad
def evaluate_field(weights, points: np.ndarray, sigma: float, tau2: float) -> np.ndarray:
    """s_theta at the points (..., 2), every seed, float64 (for differences): (S, ..., 2)."""
    flat = torch.as_tensor(np.asarray(points, float).reshape(1, -1, 2))
    flat = flat.expand(weights[0].shape[0], -1, -1)
    out = net_score([w.double() for w in weights], flat, sigma, tau2)
    return out.numpy().reshape(weights[0].shape[0], *np.shape(points))


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """DSM for the free net, seeds batched (CPU, float32), then its PF-ODE samples and its field
    at the Jacobian stencils and on the circles (float64)."""
    law = mixture(params)
    tau2, mean = isotropic_variance(law), law.mean()
    weights = init_mlp(params["width"], seeds)
    opt = Adam(weights, lr=params["lr"])
    x0, eps, log_sigma = training_streams(params, seeds)
    tick = runtime.Progress(params["steps"], "train free score net")
    losses = []
    for step in range(params["steps"]):
        opt.lr = cosine_lr(step, params)
        noisy = x0[step] + torch.exp(log_sigma[step]) * eps[step]
        # sigma^2-weighted DSM: |sigma s_theta + eps|^2 = |F + eps|^2
        loss = ((network(weights, noisy, log_sigma[step], tau2) + eps[step]) ** 2).sum(-1).mean(-1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.detach())
        tick(step, loss=float(losses[-1].mean()))
    probes = np.asarray(data["probe_stencil"])
    return {
        "samples": sample_pf_ode(weights, data, params, tau2, mean),
        "probe_values": np.stack(
            [
                evaluate_field(weights, p, s, tau2)
                for s, p in zip(params["asym_sigmas"], probes, strict=True)
            ],
            1,
        ),  # (S, n_sigma, n_probe, 4, 2)
        "loop_values": evaluate_field(weights, data["loop_points"], params["loop_sigma"], tau2),
        "loss": torch.stack(losses).numpy(),  # (steps, S)
    }


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per seed: energy distance of every PF-ODE run to the reference sample, the Jacobian
    asymmetry per sigma (and of the divergence-free-perturbed score), the mean circulation."""
    (run,) = runs.values()
    ref = np.asarray(data["reference"])
    samples = run["samples"]  # (S, R, n, 2)
    distances = np.array([[energy_distance(x, ref) for x in per_seed] for per_seed in samples])
    jac = jacobian_from_stencil(run["probe_values"], params["fd_step"])  # (S, n_sigma, n, 2, 2)
    c = float(params["c_gate"])
    turn = np.eye(2) + c * np.array([[0.0, -1.0], [1.0, 0.0]])
    loss = run["loss"]
    tail = max(1, len(loss) // 10)
    return {
        "run_kind": sampler_runs(params)[0],
        "run_c": sampler_runs(params)[1],
        "distance": distances.T,  # (R, S)
        "asym_sigmas": [float(s) for s in params["asym_sigmas"]],
        "asymmetry": asymmetry(jac).T,  # (n_sigma, S)
        "perturbed_asymmetry": asymmetry(turn @ jac).T,
        "loop_circulation": loop_circulation(run["loop_values"], data["loop_tangent"]).mean(-1),
        "final_loss": loss[-tail:].mean(0),
    }


# ----------------------------------------------------------------------------- verdict
def run_index(kinds, cs, kind: str, c: float) -> int:
    return next(i for i, (k, v) in enumerate(zip(kinds, cs, strict=True)) if k == kind and v == c)


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (seed order) and deterministic theory numbers; sample distances in
    units of the moment-matched Gaussian's distance to the data law."""
    kinds, cs = metrics["run_kind"], [float(c) for c in metrics["run_c"]]
    c = float(params["c_gate"])
    base, div_free, solid = (
        run_index(kinds, cs, k, v) for k, v in (("none", 0.0), ("div_free", c), ("solid", c))
    )
    unit = float(theory["gaussian_distance"])
    dist = np.asarray(metrics["distance"], float) / unit  # (R, S)
    exact = np.asarray(theory["exact_distance"], float) / unit
    return {
        "free_relative_excess": (dist[base] - exact[base]).tolist(),
        "free_asymmetry_max": np.asarray(metrics["asymmetry"]).max(0).tolist(),
        "free_loop_circulation": np.asarray(metrics["loop_circulation"]).tolist(),
        "div_free_rotation_change": (dist[div_free] - dist[base]).tolist(),
        "solid_rotation_change": (dist[solid] - dist[base]).tolist(),
        "div_free_perturbed_asymmetry": np.asarray(metrics["perturbed_asymmetry"]).max(0).tolist(),
        "exact_div_free_rotation_change": float(exact[div_free] - exact[base]),
        "exact_solid_rotation_change": float(exact[solid] - exact[base]),
        "divergence_identity_residual": float(theory["divergence_identity_residual"]),
        "estimator_floor_relative": float(theory["floor_distance"]) / unit,
        "exact_sampler_relative": float(exact[base]),
        "exact_asymmetry_max": float(np.max(theory["exact_asymmetry"])),
    }
