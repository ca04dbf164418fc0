"""f-divergence distribution matching for one-step generators (Xu, Nie & Vahdat, "One-step
Diffusion Models with f-Divergence Distribution Matching", 2025, arXiv 2502.15681).

Claim. For a one-step generator x = G_theta(z) and the laws diffused to noise level sigma,
p_sigma (teacher) and q_sigma (student), the gradient of D_f(p_sigma || q_sigma) = E_q[f(p / q)] is
    grad_theta D_f = -E_{z, eps}[h(r) (grad log p_sigma(x) - grad log q_sigma(x)) dx / dtheta],
    x = G_theta(z) + sigma eps,   r = p_sigma(x) / q_sigma(x),   h(r) = f''(r) r^2,
so h = 1 for reverse KL (variational score distillation, VSD / DMD), h = r / (1 + r) for
Jensen-Shannon and h = r for forward KL. The less mode-seeking divergences (Jensen-Shannon,
forward KL) give one-step students that cover the teacher's modes better than reverse KL.

Setting (ours). A 1-D teacher p = 0.75 N(2, 0.5^2) + 0.25 N(-2, 0.5^2) whose diffused law and
score are exact at every noise level (replica.blocks.score's Gaussian-mixture algebra), and an
affine one-step student G(z) = mu + s z, so q_sigma = N(mu, s^2 + sigma^2). The objective is the
average of D_f(p_sigma || q_sigma) over a fixed grid of noise levels. The student is
misspecified (one Gaussian for two modes), so the divergences' minimisers differ: reverse KL
sits on the major mode, forward KL matches the teacher's mean and variance.

Theory (independent of training). D_f by quadrature on a fine grid and its gradient by the
likelihood-ratio form grad_theta int q f(p / q) = int (d q / d theta) (f(r) - r f'(r)) dx (no
reparametrisation, no integration by parts: a different route from the paper's identity);
L-BFGS from the student's initial point (teacher mean and sd) gives the local minimiser. For
forward KL over the Gaussian family the minimiser is moment matching at every noise level (mu =
teacher mean, s = teacher sd) in closed form. The identity itself is checked by Monte Carlo at a
fixed point against finite differences of the quadrature objective (a precondition).

Experiment. Each arm (divergence) trains (mu, log s) by SGD with the paper's gradient estimator:
exact teacher score, exact student score (the role of the paper's fake-score network) and exact
ratio (the role of its discriminator), h normalised by its batch mean as in the paper, a constant
step and iterate averaging over the last part of the run. Seeds and divergences train together
as one batch of students; the noise draws of a seed are shared by its divergences.

Measure. The student's minor-mode mass Phi(-mu / s) (its probability of x < 0) and its scale s.

Ablation. The density-ratio weighting removed (h = 1, the VSD arm): the minor mode is dropped.
Precondition. A unimodal teacher with the same mean and variance: the student can match it
exactly, so with exact ratios every divergence has the same minimiser and the Jensen-Shannon and
reverse-KL students coincide unless the batch normalisation of h biases them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, ndtr

from replica import runtime

LOG_2PI = np.log(2 * np.pi)
LOG_2 = np.log(2.0)
DIVERGENCES = ("rkl", "js", "fkl")
CHECKPOINTS = 25  # log-spaced points of the training curve kept for the figure
FD_STEP = 1e-4  # central finite-difference step of the identity precondition


# ----------------------------------------------------------------------------- teachers
def teacher_mixture(params: dict, teacher: str) -> dict[str, np.ndarray]:
    """The bimodal teacher of the manifest, or the unimodal one with its mean and variance:
    weights (K,), means (K,), a common component sd."""
    w = np.asarray(params["mixture_weights"], float)
    m = np.asarray(params["mixture_means"], float)
    sd = float(params["mixture_sd"])
    if teacher == "bimodal":
        return {"weights": w, "means": m, "sd": np.float64(sd)}
    if teacher == "unimodal":
        mean, var = mixture_moments(w, m, sd)
        return {"weights": np.ones(1), "means": np.array([mean]), "sd": np.float64(np.sqrt(var))}
    raise ValueError(f"unknown teacher {teacher!r}")


def mixture_moments(weights, means, sd) -> tuple[float, float]:
    """Mean and variance of sum_k w_k N(m_k, sd^2)."""
    mean = float(weights @ means)
    return mean, float(weights @ means**2 + sd**2 - mean**2)


def teacher_log_density_and_score(teacher: dict, x: np.ndarray, sigma) -> tuple:
    """log p_sigma(x) and d/dx log p_sigma(x) of the teacher diffused to noise sigma
    (x + sigma eps): components keep their means, variances become sd^2 + sigma^2;
    sigma broadcasts against x."""
    var = teacher["sd"] ** 2 + np.asarray(sigma) ** 2
    # A loop over the few components, not a (..., K) array: numpy reduces a length-2 last axis
    # slowly, and summing K < 8 terms in order is what its reduction does, to the bit.
    diffs = [x - mean for mean in teacher["means"]]
    log_comps = [
        (np.log(w) - 0.5 * diff**2 / var - 0.5 * np.log(var)) - 0.5 * LOG_2PI
        for w, diff in zip(teacher["weights"], diffs, strict=True)
    ]
    top = log_comps[0]
    for log_comp in log_comps[1:]:
        top = np.maximum(top, log_comp)
    comps = [np.exp(log_comp - top) for log_comp in log_comps]
    total, weighted = comps[0], comps[0] * diffs[0]
    for comp, diff in zip(comps[1:], diffs[1:], strict=True):
        total = total + comp
        weighted = weighted + comp * diff
    log_p = top + np.log(total)
    score = -weighted / total / var
    return log_p, score


def student_log_density_and_score(mu, s, x, sigma) -> tuple:
    """q_sigma = N(mu, s^2 + sigma^2): log density and score."""
    var = s**2 + sigma**2
    diff = x - mu
    return -0.5 * diff**2 / var - 0.5 * np.log(var) - 0.5 * LOG_2PI, -diff / var


# ----------------------------------------------------------------------------- f-divergences
def weight(divergence: str, log_ratio: np.ndarray) -> np.ndarray:
    """The paper's weighting h(r) = f''(r) r^2 from log r, r = p / q."""
    if divergence == "rkl":  # f = -log r: VSD
        return np.ones_like(log_ratio)
    if divergence == "js":  # f = r log r - (1 + r) log((1 + r) / 2)
        return expit(log_ratio)  # r / (1 + r)
    if divergence == "fkl":  # f = r log r
        return np.exp(log_ratio)
    raise ValueError(f"unknown divergence {divergence!r}")


def f_of_ratio(divergence: str, r: np.ndarray) -> np.ndarray:
    """The generator f of each divergence (for the tests; quadrature uses stable log forms)."""
    if divergence == "rkl":
        return -np.log(r)
    if divergence == "js":
        return r * np.log(r) - (1 + r) * np.log((1 + r) / 2)
    if divergence == "fkl":
        return r * np.log(r)
    raise ValueError(f"unknown divergence {divergence!r}")


def divergence_integrand(divergence: str, log_p, log_q) -> np.ndarray:
    """q f(p / q) in log-stable form."""
    p, q = np.exp(log_p), np.exp(log_q)
    if divergence == "rkl":
        return q * (log_q - log_p)
    if divergence == "fkl":
        return p * (log_p - log_q)
    if divergence == "js":
        log_mid = np.logaddexp(log_p, log_q) - LOG_2
        return p * (log_p - log_mid) + q * (log_q - log_mid)
    raise ValueError(f"unknown divergence {divergence!r}")


def f_minus_r_fprime(divergence: str, log_p, log_q) -> np.ndarray:
    """g(r) = f(r) - r f'(r): d/dtheta int q f(p / q) dx = int (dq / dtheta) g(r) dx."""
    if divergence == "rkl":
        return 1.0 - (log_p - log_q)
    if divergence == "fkl":
        return -np.exp(log_p - log_q)
    if divergence == "js":
        return -(np.logaddexp(log_p, log_q) - log_q - LOG_2)
    raise ValueError(f"unknown divergence {divergence!r}")


# ----------------------------------------------------------------------------- theory
def quadrature_grid(params: dict) -> tuple[np.ndarray, float]:
    x = np.linspace(
        -params["quadrature_half_width"],
        params["quadrature_half_width"],
        int(params["quadrature_points"]),
    )
    return x, float(x[1] - x[0])


def objective(
    theta, divergence: str, teacher: dict, noise_levels, x, dx
) -> tuple[float, np.ndarray]:
    """The averaged objective mean_sigma D_f(p_sigma || q_sigma) at theta = (mu, log s) and its
    gradient by the likelihood-ratio form (trapezoid-free Riemann sum on a grid far wider than
    both laws, whose tails vanish at the ends)."""
    mu, log_s = float(theta[0]), float(theta[1])
    s = np.exp(log_s)
    value, grad = 0.0, np.zeros(2)
    for sigma in noise_levels:
        log_p, _ = teacher_log_density_and_score(teacher, x, sigma)
        log_q, _ = student_log_density_and_score(mu, s, x, sigma)
        var = s**2 + sigma**2
        q = np.exp(log_q)
        dq_dmu = q * (x - mu) / var
        dq_dlog_s = q * ((x - mu) ** 2 / var - 1) * s**2 / var  # dq/dvar * dvar/dlog s
        g = f_minus_r_fprime(divergence, log_p, log_q)
        value += divergence_integrand(divergence, log_p, log_q).sum() * dx
        grad += np.array([(dq_dmu * g).sum(), (dq_dlog_s * g).sum()]) * dx
    return value / len(noise_levels), grad / len(noise_levels)


def minimiser(divergence: str, teacher: dict, params: dict, start) -> np.ndarray:
    """Local minimiser (mu, s) of the averaged objective from `start` = (mu, s), by L-BFGS."""
    x, dx = quadrature_grid(params)
    res = minimize(
        objective,
        [start[0], np.log(start[1])],
        args=(divergence, teacher, params["noise_levels"], x, dx),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 2000},
    )
    return np.array([res.x[0], np.exp(res.x[1])])


def minor_mass(mu, s) -> np.ndarray:
    """The student's probability of x < 0, the minor mode's side: Phi(-mu / s)."""
    return ndtr(-np.asarray(mu) / np.asarray(s))


def monte_carlo_gradient(
    divergence: str, teacher: dict, mu: float, s: float, noise_levels, z, eps
) -> np.ndarray:
    """The paper's identity, unnormalised: -mean_sigma E[h(r) (score_p - score_q) dx/dtheta]
    at theta = (mu, log s); dx/dmu = 1, dx/dlog s = s z. z, eps: (L, N) standard normals."""
    sigma = np.asarray(noise_levels, float)[:, None]
    x = mu + s * z + sigma * eps
    log_p, score_p = teacher_log_density_and_score(teacher, x, sigma)
    log_q, score_q = student_log_density_and_score(mu, s, x, sigma)
    pull = weight(divergence, log_p - log_q) * (score_p - score_q)
    return -np.array([pull.mean(), (pull * s * z).mean()])


def finite_difference_gradient(divergence: str, teacher: dict, theta, params: dict) -> np.ndarray:
    """Central differences of the quadrature objective in (mu, log s)."""
    x, dx = quadrature_grid(params)
    out = np.zeros(2)
    for i in range(2):
        step = np.zeros(2)
        step[i] = FD_STEP
        hi = objective(np.asarray(theta) + step, divergence, teacher, params["noise_levels"], x, dx)
        lo = objective(np.asarray(theta) - step, divergence, teacher, params["noise_levels"], x, dx)
        out[i] = (hi[0] - lo[0]) / (2 * FD_STEP)
    return out


# ----------------------------------------------------------------------------- data
def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: the student's initial (mu, s), jittered around the teacher's mean and sd (both
    teachers share them), and the seed's draws for the identity precondition."""
    mean, var = mixture_moments(
        np.asarray(params["mixture_weights"]),
        np.asarray(params["mixture_means"]),
        params["mixture_sd"],
    )
    init = []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        jitter = params["init_jitter"] * rng.standard_normal(2)
        init.append([mean + jitter[0], np.sqrt(var) * np.exp(jitter[1])])
    return {"init": np.asarray(init), "seeds": np.asarray(seeds)}


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """Quadrature minimisers per teacher and divergence; the identity's Monte-Carlo error per
    seed."""
    out: dict = {"divergences": list(DIVERGENCES), "teachers": {}}
    for name in ("bimodal", "unimodal"):
        teacher = teacher_mixture(params, name)
        mean, var = mixture_moments(teacher["weights"], teacher["means"], teacher["sd"])
        rows = {}
        for divergence in DIVERGENCES:
            mu, s = minimiser(divergence, teacher, params, (mean, np.sqrt(var)))
            rows[divergence] = {"mu": mu, "s": s, "minor_mass": float(minor_mass(mu, s))}
        out["teachers"][name] = {"mean": mean, "sd": float(np.sqrt(var)), "minimisers": rows}
    # the identity at a fixed point, per seed: Monte Carlo (exact scores) vs finite differences
    teacher = teacher_mixture(params, "bimodal")
    mu0, s0 = params["identity_point"]
    theta0 = np.array([mu0, np.log(s0)])
    exact = {d: finite_difference_gradient(d, teacher, theta0, params) for d in DIVERGENCES}
    shape = (len(params["noise_levels"]), int(params["identity_samples"]))
    errors = []
    for seed in data["seeds"]:
        rng = np.random.default_rng([params["data_seed"], int(seed), 2])
        z, eps = rng.standard_normal(shape), rng.standard_normal(shape)
        worst = 0.0
        for d in DIVERGENCES:
            g = monte_carlo_gradient(d, teacher, mu0, s0, params["noise_levels"], z, eps)
            worst = max(worst, float(np.linalg.norm(g - exact[d]) / np.linalg.norm(exact[d])))
        errors.append(worst)
    out["identity_relative_error"] = errors
    out["identity_exact_gradient"] = {d: g.tolist() for d, g in exact.items()}
    return out


# ----------------------------------------------------------------------------- training
def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """All divergences and seeds of one teacher as a batch of (D, S) affine students, trained by
    SGD on (mu, log s) with the paper's weighted score-difference gradient."""
    teacher = teacher_mixture(params, point["teacher"])
    n_div, n_seed = len(DIVERGENCES), len(seeds)
    sigma = np.asarray(params["noise_levels"], float)[:, None]  # (L, 1)
    batch, steps, lr = int(params["batch"]), int(params["steps"]), float(params["lr"])
    mu = np.broadcast_to(data["init"][:, 0], (n_div, n_seed)).copy()
    log_s = np.broadcast_to(np.log(data["init"][:, 1]), (n_div, n_seed)).copy()
    rngs = [np.random.default_rng([params["data_seed"], seed, 1]) for seed in seeds]
    average_from = steps - int(round(params["average_last"] * steps))
    sum_mu, sum_log_s = np.zeros_like(mu), np.zeros_like(log_s)
    keep = set(runtime.log_spaced_steps(steps, CHECKPOINTS, with_zero=True).tolist())
    curve_steps, curve_mu, curve_s = [], [], []
    tick = runtime.Progress(steps, f"train {point['teacher']}")
    for step in range(steps + 1):
        if step in keep:
            curve_steps.append(step)
            curve_mu.append(mu.copy())
            curve_s.append(np.exp(log_s))
        if step == steps:
            break
        # one draw per seed, shared by its divergences (common random numbers): (S, L, B)
        z = np.stack([rng.standard_normal((len(sigma), batch)) for rng in rngs])
        eps = np.stack([rng.standard_normal((len(sigma), batch)) for rng in rngs])
        s = np.exp(log_s)[..., None, None]  # (D, S, 1, 1)
        x = mu[..., None, None] + s * z + sigma * eps  # (D, S, L, B)
        log_p, score_p = teacher_log_density_and_score(teacher, x, sigma)
        log_q, score_q = student_log_density_and_score(mu[..., None, None], s, x, sigma)
        pull = np.empty_like(x)
        for i, divergence in enumerate(DIVERGENCES):
            h = weight(divergence, log_p[i] - log_q[i])
            h /= h.mean(axis=(-2, -1), keepdims=True)  # the paper's batch normalisation of h
            pull[i] = h * (score_p[i] - score_q[i])
        # descent on D_f: theta += lr E[h (score_p - score_q) dx/dtheta]
        mu += lr * pull.mean(axis=(-2, -1))
        log_s += lr * (pull * s * z).mean(axis=(-2, -1))
        if step >= average_from:
            sum_mu += mu
            sum_log_s += log_s
        if step % max(1, steps // 10) == 0:
            tick(step, js_minor_mass=float(minor_mass(mu[1], np.exp(log_s[1])).mean()))
    count = steps - average_from
    return {
        "mu": sum_mu / count,
        "s": np.exp(sum_log_s / count),
        "curve_steps": np.asarray(curve_steps),
        "curve_mu": np.stack(curve_mu, axis=-1),  # (D, S, C)
        "curve_s": np.stack(curve_s, axis=-1),
    }


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per teacher and divergence: each seed's averaged student (mu, s) and minor-mode mass."""
    out: dict = {"divergences": list(DIVERGENCES), "teachers": {}}
    for pid, point in points.items():
        run = runs[pid]
        arms = {}
        for i, divergence in enumerate(DIVERGENCES):
            arms[divergence] = {
                "mu": run["mu"][i],
                "s": run["s"][i],
                "minor_mass": minor_mass(run["mu"][i], run["s"][i]),
                "curve_minor_mass": minor_mass(run["curve_mu"][i], run["curve_s"][i]),
            }
        out["teachers"][point["teacher"]] = {"steps": run["curve_steps"], "arms": arms}
    return out


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (seed order) and theory constants."""
    bi, uni = metrics["teachers"]["bimodal"]["arms"], metrics["teachers"]["unimodal"]["arms"]
    th_bi = theory["teachers"]["bimodal"]
    mins = th_bi["minimisers"]

    def gain(arms):
        return (
            np.asarray(arms["js"]["minor_mass"]) - np.asarray(arms["rkl"]["minor_mass"])
        ).tolist()

    return {
        "coverage_gain_js_over_rkl": gain(bi),
        "coverage_gain_theory": mins["js"]["minor_mass"] - mins["rkl"]["minor_mass"],
        "js_student_sd": list(bi["js"]["s"]),
        "js_minimiser_sd": mins["js"]["s"],
        "fkl_student_sd": list(bi["fkl"]["s"]),
        "teacher_sd": th_bi["sd"],
        "rkl_student_sd": list(bi["rkl"]["s"]),
        "rkl_minimiser_sd": mins["rkl"]["s"],
        "rkl_minor_mass": list(bi["rkl"]["minor_mass"]),
        "js_minor_mass": list(bi["js"]["minor_mass"]),
        "fkl_minor_mass": list(bi["fkl"]["minor_mass"]),
        "coverage_gain_js_over_rkl_unimodal": gain(uni),
        "identity_relative_error": list(theory["identity_relative_error"]),
        "fkl_minimiser_sd": mins["fkl"]["s"],
    }
