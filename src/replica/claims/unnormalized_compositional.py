"""Unnormalised models via compositional optimisation vs noise-contrastive estimation
(Jiang, Qin, Wu, Chen, Yang, Zhang, ICML 2023, arXiv 2306.07485).

Claim (the 1-D example of the paper). Fit an unnormalised model f_theta to data P* with
noise samples from Q. The paper writes the negative log-likelihood as a compositional objective
    F(theta) = -E_P log f_theta + log E_Q[f_theta / q],
whose inner expectation is estimated from noise samples and tracked with a moving average
(stochastic compositional gradient, SCGD). Noise-contrastive estimation (NCE) instead fits
(theta, c) by logistic regression of data against noise. For Gaussian mean estimation,
P* = N(theta*, 1), Q = N(0, 1), log f_theta(x) = -(x - theta)^2 / 2 - c, the NCE landscape
flattens exponentially as theta* moves away from the noise, while F keeps curvature 1.

Theory (quadrature on the population objectives; no training involved).
  - F is the exact NLL up to a constant: its Hessian in theta is 1 for every theta*.
  - NCE, G(x) = log f - log q = (theta - m) x - (theta^2 - m^2)/2 - c for Q = N(m, 1). At the
    optimum sigma(G) = p/(p + q), so the Hessian of the population NCE loss in (theta, c) is
        H = int p q / (p + q) [[(x - theta*)^2, -(x - theta*)], [-(x - theta*), 1]] dx,
    whose weight p q / (p + q) lives near x = theta*/2 with height ~ exp(-theta*^2 / 8), where
    the (theta, c) directions are nearly collinear: lambda_min(H) decays exponentially in
    theta*^2 and the condition number grows.
  - Gradient descent with step eta then needs about T = log(d0 / eps) / (eta lambda_min) steps
    near the optimum (d0 the initial distance |theta* - theta_0|), against log(d0/eps)/eta
    for F.

Experiment (the 'trained model'): (i) full-batch GD on both population objectives (exact
gradients by quadrature) from (theta, c) = (0, 0), one step size; steps until |theta - theta*|
< eps. (ii) Stochastic runs with 256 samples from each of P and Q per step: NCE-SGD against
SCGD on F (moving average of the inner estimate E_Q[f/q]). Control: Q = P (noise at the data)
makes NCE as fast as F.
"""

from __future__ import annotations

import numpy as np

from replica import runtime


# ----------------------------------------------------------------------------- quadrature
def nodes(theta_star: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid nodes and weights covering N(0, 1) and N(theta*, 1) to 12 sd."""
    x = np.linspace(min(0.0, theta_star) - 12, max(0.0, theta_star) + 12, count)
    w = np.full(count, x[1] - x[0])
    w[[0, -1]] /= 2
    return x, w


def normal_pdf(x: np.ndarray, mean: float) -> np.ndarray:
    return np.exp(-((x - mean) ** 2) / 2) / np.sqrt(2 * np.pi)


def sigmoid(z):
    return 0.5 * (1 + np.tanh(z / 2))


def nce_logit(x, theta, c, noise_mean: float):
    """G = log f_theta - log q = (theta - m) x - (theta^2 - m^2)/2 - c (c = 0: normalised)."""
    return (theta - noise_mean) * x - (theta**2 - noise_mean**2) / 2 - c


def nce_hessian(theta_star: float, noise_mean: float, count: int) -> np.ndarray:
    """Population NCE Hessian in (theta, c) at the optimum (theta*, 0), by quadrature."""
    x, w = nodes(theta_star, count)
    p, q = normal_pdf(x, theta_star), normal_pdf(x, noise_mean)
    weight = w * p * q / (p + q)
    d = x - theta_star
    return np.array(
        [[(weight * d * d).sum(), -(weight * d).sum()], [-(weight * d).sum(), weight.sum()]]
    )


def nce_gradient(theta, c, x, w, p, q, noise_mean):
    """Gradient of -E_P log sigma(G) - E_Q log(1 - sigma(G)) in (theta, c), by quadrature."""
    s = sigmoid(nce_logit(x, theta, c, noise_mean))
    dj_dg = w * (-p * (1 - s) + q * s)
    return (dj_dg * (x - theta)).sum(), -dj_dg.sum()


def compositional_gradient(theta, x, w, p):
    """Gradient of -E_P log f_theta + log int f_theta (the exact NLL), by quadrature."""
    f = np.exp(-((x - theta) ** 2) / 2)
    return -(w * p * (x - theta)).sum() + (w * f * (x - theta)).sum() / (w * f).sum()


# ----------------------------------------------------------------------------- data
def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """The targets; samples are streamed inside the stochastic runs (one stream per seed)."""
    return {
        "theta_star": np.asarray(params["theta_stars"], dtype=float),
        "sgd_theta_star": np.asarray(params["sgd_theta_stars"], dtype=float),
        "seeds": np.asarray(seeds),
    }


# ----------------------------------------------------------------------------- theory
def predicted_steps(lam_min: np.ndarray, theta_star: np.ndarray, lr: float, eps: float):
    """Linear-rate prediction: log(|theta*| / eps) / -log(1 - lr lam_min)."""
    return np.log(np.abs(theta_star) / eps) / -np.log1p(-lr * lam_min)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    thetas = np.asarray(data["theta_star"])
    count, lr, eps = params["quad_nodes"], params["lr"], params["eps"]
    eig = np.array([np.linalg.eigvalsh(nce_hessian(t, 0.0, count)) for t in thetas])
    eig_same = np.array([np.linalg.eigvalsh(nce_hessian(t, t, count)) for t in thetas])
    lam_min, lam_max = eig[:, 0], eig[:, 1]
    # exponential flattening: slope of log lambda_min against theta*^2 (negative, reported)
    slope = float(np.polyfit(thetas**2, np.log(lam_min), 1)[0])
    pred = predicted_steps(lam_min, thetas, lr, eps)
    return {
        "theta_star": thetas,
        "nce_lambda_min": lam_min,
        "nce_lambda_max": lam_max,
        "nce_condition": lam_max / lam_min,
        "nce_same_noise_lambda_min": eig_same[:, 0],
        "compositional_curvature": np.ones_like(thetas),
        "log_lambda_min_vs_theta2_slope": slope,
        "nce_steps_predicted": pred,
        "compositional_steps_predicted": predicted_steps(np.ones_like(thetas), thetas, lr, eps),
        "nce_growth_predicted": float(pred[-1] / pred[np.argmin(np.abs(thetas - 1.0))]),
    }


# ----------------------------------------------------------------------------- training
def population_gd(theta_star: float, method: str, params: dict, noise_mean: float = 0.0):
    """Full-batch GD on the population objective from (0, 0): (steps to eps, final theta)."""
    x, w = nodes(theta_star, params["quad_nodes"])
    p, q = normal_pdf(x, theta_star), normal_pdf(x, noise_mean)
    theta, c, lr = 0.0, 0.0, params["lr"]
    for step in range(params["max_population_steps"]):
        if abs(theta - theta_star) < params["eps"]:
            return step, theta
        if method == "nce":
            g_theta, g_c = nce_gradient(theta, c, x, w, p, q, noise_mean)
            theta, c = theta - lr * g_theta, c - lr * g_c
        else:
            theta -= lr * compositional_gradient(theta, x, w, p)
    return params["max_population_steps"], theta


def stochastic_runs(theta_star: float, params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """NCE-SGD and SCGD, all seeds batched: first step with |theta - theta*| < eps per seed."""
    batch, steps, lr, eps = params["batch"], params["sgd_steps"], params["lr"], params["eps"]
    beta = params["scgd_beta"]
    n = len(seeds)
    rngs = [np.random.default_rng([params["data_seed"], s, int(100 * theta_star)]) for s in seeds]
    theta_nce, c_nce = np.zeros(n), np.zeros(n)
    theta_cmp = np.zeros(n)
    inner = None  # SCGD's moving average of E_Q[f_theta / q] (up to the constant sqrt(2 pi))
    hit = {"nce": np.full(n, steps + 1), "compositional": np.full(n, steps + 1)}
    trace = {"nce": np.empty((steps + 1, n)), "compositional": np.empty((steps + 1, n))}
    tick = runtime.Progress(steps + 1, f"sgd theta*={theta_star}")
    for step in range(steps + 1):
        trace["nce"][step], trace["compositional"][step] = theta_nce, theta_cmp
        for name, th in (("nce", theta_nce), ("compositional", theta_cmp)):
            first = (np.abs(th - theta_star) < eps) & (hit[name] > steps)
            hit[name][first] = step
        if step == steps:
            break
        xp = np.stack([r.normal(theta_star, 1.0, batch) for r in rngs])  # (S, B)
        xq = np.stack([r.normal(0.0, 1.0, batch) for r in rngs])
        # NCE: logistic regression of data against noise on G = theta x - theta^2/2 - c
        gp = sigmoid(nce_logit(xp, theta_nce[:, None], c_nce[:, None], 0.0))
        gq = sigmoid(nce_logit(xq, theta_nce[:, None], c_nce[:, None], 0.0))
        d_theta = (-(1 - gp) * (xp - theta_nce[:, None])).mean(1) + (
            gq * (xq - theta_nce[:, None])
        ).mean(1)
        d_c = (1 - gp).mean(1) - gq.mean(1)
        theta_nce, c_nce = theta_nce - lr * d_theta, c_nce - lr * d_c
        # SCGD on F: inner g = E_Q[exp(theta x - theta^2/2)], tracked by a moving average
        ratio = np.exp(theta_cmp[:, None] * xq - theta_cmp[:, None] ** 2 / 2)
        inner = ratio.mean(1) if inner is None else (1 - beta) * inner + beta * ratio.mean(1)
        grad_inner = (ratio * (xq - theta_cmp[:, None])).mean(1)
        d_cmp = -(xp - theta_cmp[:, None]).mean(1) + grad_inner / inner
        theta_cmp = theta_cmp - lr * d_cmp
        tick(step)
    return {
        "hit_nce": hit["nce"],
        "hit_compositional": hit["compositional"],
        **{f"trace_{k}": v for k, v in trace.items()},
    }


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """'population': exact-gradient GD for every theta*; 'stochastic': the sampled runs.

    numpy on the CPU whatever the device: scalar parameters, 10^3-10^4 nodes."""
    if point["run"] == "population":
        thetas = np.asarray(data["theta_star"])
        out = {}
        for name, method, same in (
            ("nce", "nce", False),
            ("compositional", "compositional", False),
            ("nce_q_equals_p", "nce", True),
        ):
            res = [population_gd(t, method, params, t if same else 0.0) for t in thetas]
            out[f"steps_{name}"] = np.array([r[0] for r in res])
            out[f"final_{name}"] = np.array([r[1] for r in res])
        return out
    out = {}
    for t in np.asarray(data["sgd_theta_star"]):
        for key, value in stochastic_runs(float(t), params, seeds).items():
            out[f"{key}__t{t:g}"] = value
    return out


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    pop, sto = runs["run-population"], runs["run-stochastic"]
    sgd = {}
    for t in np.asarray(data["sgd_theta_star"]):
        key = f"{t:g}"
        sgd[key] = {
            "hit_nce": sto[f"hit_nce__t{key}"],
            "hit_compositional": sto[f"hit_compositional__t{key}"],
            # thinned trajectories for the figure: every 10th step
            "trace_nce": sto[f"trace_nce__t{key}"][::10].T,
            "trace_compositional": sto[f"trace_compositional__t{key}"][::10].T,
        }
    return {
        "theta_star": data["theta_star"],
        "population": {k: v for k, v in pop.items()},
        "sgd": sgd,
        "sgd_budget": params["sgd_steps"],
    }


# ----------------------------------------------------------------------------- verdict
def at(thetas, values, target: float) -> float:
    return float(np.asarray(values)[int(np.argmin(np.abs(np.asarray(thetas) - target)))])


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    thetas = np.asarray(metrics["theta_star"])
    pop = metrics["population"]
    nce, cmp_, same = (
        np.asarray(pop[f"steps_{k}"], float) for k in ("nce", "compositional", "nce_q_equals_p")
    )
    pred = np.asarray(theory["nce_steps_predicted"])
    far = thetas >= 1.0
    sgd2 = metrics["sgd"].get("2")  # the stochastic runs at theta* = 2
    log_ratio = None  # per seed log2(NCE steps / SCGD steps); a miss counts budget + 1 steps
    if sgd2 is not None:
        hit_nce = np.asarray(sgd2["hit_nce"], dtype=float)
        hit_cmp = np.asarray(sgd2["hit_compositional"], dtype=float)
        log_ratio = [float(x) for x in np.log2(hit_nce / np.maximum(hit_cmp, 1.0))]
    return {
        "nce_step_growth": at(thetas, nce, 4.0) / at(thetas, nce, 1.0),
        "nce_step_growth_theory": float(theory["nce_growth_predicted"]),
        "nce_steps_vs_theory_log2": float(np.max(np.abs(np.log2(nce[far] / pred[far])))),
        "compositional_step_growth": at(thetas, cmp_, 4.0) / at(thetas, cmp_, 1.0),
        "sgd_log2_step_ratio_at_2": log_ratio,
        # controls
        "near_noise_step_ratio": at(thetas, nce, 0.5) / at(thetas, cmp_, 0.5),
        "q_equals_p_step_ratio_at_4": at(thetas, same, 4.0) / at(thetas, cmp_, 4.0),
        "flattening_slope": theory["log_lambda_min_vs_theta2_slope"],
    }
