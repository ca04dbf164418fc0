"""Gradient-regularised Newton with approximate Hessians: linear rates on logistic regression.

Claim (Semenov, Jaggi, Doikov, "Gradient-Normalized Smoothness for Optimization with
Approximate Hessians", ICLR 2026, arXiv 2506.13710): the gradient-regularised Newton method

    x+ = x - (H~(x) + lambda I)^{-1} grad f(x),    lambda = |grad f(x)| / gamma,

with the radius gamma adapted on the fly (Algorithm 1: accept the step when
f(x) - f(x+) >= |grad f(x+)|^2 / (8 lambda) and double gamma, otherwise halve gamma and retry)
converges globally, and at a linear rate on (l2-regularised) logistic regression, when H~ is a
good relative approximation of the Hessian; with H~ = H it recovers Newton's fast rates and with
H~ = 0 the first-order rate.

Experiment: l2-regularised logistic regression on anisotropic Gaussian features (condition
number `feature_cond`), one data set per seed, started at x = 0, for these H~ (the first three
are good relative approximations, the last three are not):
  exact         H
  lowrank_diag  top-k eigenpairs of H plus the diagonal of the rest
  diag          diag(H)
  first_order   0 (pure gradient regularisation: a normalised gradient step)
  underscaled   0.1 H (curvature underestimated ten-fold)
  random_psd    a fixed random PSD matrix with the trace of H(0), unrelated to H

Theory (a recursion at the optimum, computed without running the method): near x*, with
lambda -> 0, the gradient obeys g+ = (I - H* H~*^{-1}) g, so the local contraction factor is

    q_lin = spectral radius of (I - H~*^{-1} H*) = max_i |1 - mu_i|,  mu_i = eig(H~*^{-1} H*),

0 for the exact Hessian, < 1 for good approximations, >= 1 when H~ underestimates curvature by
more than 2x or is unrelated to H (then only the regularisation keeps the method stable and it
behaves like gradient descent). For H~ = 0 the best gradient-type rate is (kappa-1)/(kappa+1),
kappa = cond(H*). x* comes from scipy's trust-region Newton solver, independent of the method.

Seeds are a Python loop here, not a batch axis: every problem runs its own adaptive search
(different numbers of retries per iteration), and each d x d solve takes microseconds.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize, special

VALID = ("exact", "lowrank_diag", "diag")
CONTROLS = ("first_order", "underscaled", "random_psd")
FAMILIES = {"valid": VALID, "control": CONTROLS}
NEEDS_HESSIAN = ("exact", "lowrank_diag", "diag", "underscaled")


# ----------------------------------------------------------------------------- data
def one_problem(params: dict, seed: int) -> dict[str, np.ndarray]:
    """Features with scales logspaced over sqrt(feature_cond); noisy teacher labels in {-1, 1}."""
    rng = np.random.default_rng([params["data_seed"], seed])
    n, d = params["n"], params["dim"]
    scales = np.logspace(0, -0.5 * np.log10(params["feature_cond"]), d)
    x = rng.standard_normal((n, d)) * scales
    teacher = rng.standard_normal(d) / scales  # every direction matters for the labels
    logits = x @ teacher / np.sqrt(d)
    y = np.where(rng.random(n) < special.expit(params["label_temp"] * logits), 1.0, -1.0)
    # the random PSD control: Wishart, fixed per seed, scaled to the trace of H(0)
    g = rng.standard_normal((d, d))
    return {"x": x, "y": y, "random_psd": g @ g.T / d}


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    probs = [one_problem(params, seed) for seed in seeds]
    return {key: np.stack([p[key] for p in probs]) for key in probs[0]} | {
        "seeds": np.asarray(seeds)
    }


# ----------------------------------------------------------------------------- objective
def loss(w, x, y, mu):
    return np.mean(np.logaddexp(0.0, -y * (x @ w))) + 0.5 * mu * w @ w


def grad(w, x, y, mu):
    s = -y * special.expit(-y * (x @ w))
    return x.T @ s / len(y) + mu * w


def hessian(w, x, y, mu):
    p = special.expit(x @ w)
    return (x.T * (p * (1 - p))) @ x / len(y) + mu * np.eye(x.shape[1])


def minimiser(x, y, mu) -> np.ndarray:
    """x* by scipy's trust-region Newton (exact Hessian), to high accuracy."""
    d = x.shape[1]
    res = optimize.minimize(
        loss,
        np.zeros(d),
        args=(x, y, mu),
        jac=grad,
        hess=hessian,
        method="trust-exact",
        options={"gtol": 1e-13, "maxiter": 500},
    )
    w = res.x
    for _ in range(3):  # trust-exact stops near |g| ~ 1e-10; plain Newton polishes quadratically
        w = w - np.linalg.solve(hessian(w, x, y, mu), grad(w, x, y, mu))
    return w


# ----------------------------------------------------------------------------- approximations
def approximate_hessian(kind: str, h: np.ndarray, params: dict, random_psd: np.ndarray, h0_trace):
    if kind == "exact":
        return h
    if kind == "lowrank_diag":
        lam, vec = np.linalg.eigh(h)
        k = params["rank"]
        top = (vec[:, -k:] * lam[-k:]) @ vec[:, -k:].T
        return top + np.diag(np.diag(h - top))  # the rest is PSD, so its diagonal is >= 0
    if kind == "diag":
        return np.diag(np.diag(h))
    if kind == "first_order":
        return np.zeros_like(h)
    if kind == "underscaled":
        return params["underscale"] * h
    if kind == "random_psd":
        return random_psd * (h0_trace / np.trace(random_psd))
    raise ValueError(f"unknown Hessian approximation {kind!r}")


# ----------------------------------------------------------------------------- theory
def local_contraction(h_star: np.ndarray, h_tilde: np.ndarray) -> float:
    """q_lin = max_i |1 - mu_i| with mu_i the eigenvalues of H~^{-1} H (generalised eigh)."""
    mu = linalg.eigh(h_star, h_tilde, eigvals_only=True)
    return float(np.max(np.abs(1.0 - mu)))


def gd_contraction(h_star: np.ndarray) -> float:
    """(kappa - 1) / (kappa + 1): the best fixed-step gradient rate on the quadratic model."""
    lam = np.linalg.eigvalsh(h_star)
    kappa = lam[-1] / lam[0]
    return float((kappa - 1) / (kappa + 1))


def theory_one(x, y, params, random_psd) -> dict:
    mu = params["l2"]
    w_star = minimiser(x, y, mu)
    h_star = hessian(w_star, x, y, mu)
    h0_trace = np.trace(hessian(np.zeros(x.shape[1]), x, y, mu))
    q = {}
    for kind in VALID + ("underscaled", "random_psd"):
        h_tilde = approximate_hessian(kind, h_star, params, random_psd, h0_trace)
        q[kind] = local_contraction(h_star, h_tilde)
    q["first_order"] = gd_contraction(h_star)
    return {
        "q": q,
        "grad_norm_at_star": float(np.linalg.norm(grad(w_star, x, y, mu))),
        "kappa": float(np.linalg.cond(h_star)),
    }


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    per_seed = [
        theory_one(data["x"][s], data["y"][s], params, data["random_psd"][s])
        for s in range(len(data["seeds"]))
    ]
    kinds = VALID + CONTROLS
    q = {k: [p["q"][k] for p in per_seed] for k in kinds}
    # iterations a linear method with rate q needs for the tolerance (exact: 0 -> superlinear)
    iters = {
        k: [float(np.log(params["tol"]) / np.log(v)) if 0 < v < 1 else None for v in q[k]]
        for k in kinds
    }
    return {
        "q_lin": q,
        "iters_lin": iters,
        "kappa": [p["kappa"] for p in per_seed],
        "grad_norm_at_star": [p["grad_norm_at_star"] for p in per_seed],
    }


# ----------------------------------------------------------------------------- method
def regularised_newton(x, y, params, kind, random_psd) -> dict:
    """Algorithm 1 with the approximation `kind`; gradient norms per iteration."""
    mu, d = params["l2"], x.shape[1]
    w = np.zeros(d)
    f, g = loss(w, x, y, mu), grad(w, x, y, mu)
    gamma, eps = params["gamma0"], 1e-30
    h0_trace = np.trace(hessian(w, x, y, mu))
    norms, lams, solves = [np.linalg.norm(g)], [], 0
    target = params["tol"] * norms[0]
    for _ in range(params["iters"]):
        if norms[-1] <= target:
            break
        # the Hessian itself is only formed for the approximations that use it
        h = hessian(w, x, y, mu) if kind in NEEDS_HESSIAN else np.zeros((d, d))
        h_tilde = approximate_hessian(kind, h, params, random_psd, h0_trace)
        for _retry in range(params["max_retries"]):
            lam = norms[-1] / (gamma + eps)
            step = -linalg.cho_solve(linalg.cho_factor(h_tilde + lam * np.eye(d)), g)
            solves += 1
            f_new, g_new = loss(w + step, x, y, mu), grad(w + step, x, y, mu)
            if f - f_new >= g_new @ g_new / (8 * lam):
                gamma *= 2.0
                break
            gamma *= 0.5
        w, f, g = w + step, f_new, g_new
        norms.append(np.linalg.norm(g))
        lams.append(lam)
    return {"grad_norm": np.asarray(norms), "lam": np.asarray(lams), "solves": solves, "w": w}


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One family of approximations (valid or control), every seed; numpy on CPU."""
    out = {}
    budget = params["iters"] + 1
    for kind in FAMILIES[point["family"]]:
        norms = np.zeros((len(seeds), budget))
        lams = np.zeros((len(seeds), budget - 1))
        n_iter = np.zeros(len(seeds), dtype=np.int64)
        for s in range(len(seeds)):
            run = regularised_newton(
                data["x"][s], data["y"][s], params, kind, data["random_psd"][s]
            )
            k = len(run["grad_norm"]) - 1
            n_iter[s] = k
            norms[s] = np.pad(run["grad_norm"], (0, budget - k - 1), mode="edge")
            lams[s, :k] = run["lam"]
        out[f"{kind}__grad_norm"], out[f"{kind}__lam"], out[f"{kind}__iters"] = norms, lams, n_iter
    return out


# ----------------------------------------------------------------------------- measure
def overall_rate(norms: np.ndarray, iters: np.ndarray) -> np.ndarray:
    """(|g_K| / |g_0|)^(1/K) per seed: the mean per-iteration contraction over the run."""
    k = np.maximum(np.asarray(iters), 1)
    last = norms[np.arange(len(k)), k]
    return (last / norms[:, 0]) ** (1.0 / k)


def local_rate(norms: np.ndarray, iters: np.ndarray, window: int) -> np.ndarray:
    """Median of |g_{k+1}| / |g_k| over the last `window` iterations of each run: the
    asymptotic contraction, to compare with q_lin (0 would mean superlinear)."""
    out = np.zeros(len(iters))
    for s, k in enumerate(np.asarray(iters)):
        lo = max(int(k) - window, 0)
        ratios = norms[s, lo + 1 : k + 1] / norms[s, lo:k]
        out[s] = np.median(ratios) if len(ratios) else 0.0
    return out


def linear_phase_r2(norms: np.ndarray, iters: np.ndarray, start: int) -> np.ndarray:
    """R^2 of a straight-line fit of log|g_k| over iterations start..K (None-safe: 1.0 when
    fewer than 3 points remain, i.e. the method finished before the linear phase begins)."""
    out = np.ones(len(iters))
    for s, k in enumerate(np.asarray(iters)):
        t = np.arange(start, k + 1)
        if len(t) < 3:
            continue
        z = np.log(norms[s, t])
        fit = np.polyval(np.polyfit(t, z, 1), t)
        ss = ((z - z.mean()) ** 2).sum()
        out[s] = 1.0 - ((z - fit) ** 2).sum() / ss if ss > 0 else 1.0
    return out


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    out = {}
    for pid, point in points.items():
        run = runs[pid]
        for kind in FAMILIES[point["family"]]:
            norms, iters = run[f"{kind}__grad_norm"], run[f"{kind}__iters"]
            out[kind] = {
                "grad_norm": norms / norms[:, :1],  # relative to |g_0|
                "iters": iters,
                "converged": (iters < params["iters"])
                | (norms[:, -1] <= params["tol"] * norms[:, 0]),
                "rate": overall_rate(norms, iters),
                "local_rate": local_rate(norms, iters, params["rate_window"]),
                "r2": linear_phase_r2(norms, iters, params["linear_from"]),
                "lam": run[f"{kind}__lam"],
            }
    return {"methods": out}


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """One value per seed for every statistic (0/1 statistics are judged seed by seed)."""
    m, q_lin = metrics["methods"], theory["q_lin"]
    rate = {k: np.asarray(m[k]["rate"], dtype=float) for k in VALID + CONTROLS}
    # the recursion's classification: q_lin < 1 means the local map contracts; (kinds, seeds)
    kinds = VALID + ("underscaled", "random_psd")
    contracting = np.stack([np.asarray(q_lin[k], dtype=float) < 1 for k in kinds])
    converged = np.stack([np.asarray(m[k]["converged"], dtype=bool) for k in kinds])

    def fraction(mask):
        """Per seed: converged share of the runs in mask (a seed with none counts 0)."""
        count = mask.sum(0)
        hits = (converged & mask).sum(0)
        return np.where(count > 0, hits / np.maximum(count, 1), 0.0).tolist()

    ordered = (rate["exact"] < rate["lowrank_diag"]) & (rate["lowrank_diag"] < rate["diag"])
    r2 = np.minimum(*(np.asarray(m[k]["r2"], dtype=float) for k in ("lowrank_diag", "diag")))
    local = {k: np.asarray(m[k]["local_rate"], dtype=float) for k in ("diag", "lowrank_diag")}
    q = {k: np.asarray(q_lin[k], dtype=float) for k in ("diag", "lowrank_diag")}
    return {
        "contracting_converged_fraction": fraction(contracting),
        "noncontracting_converged_fraction": fraction(~contracting),  # reported, not gated
        "valid_min_r2": r2.tolist(),
        "rate_ordered": ordered.astype(float).tolist(),
        "exact_iters": np.asarray(m["exact"]["iters"], dtype=float).tolist(),
        "diag_local_rate": local["diag"].tolist(),
        "theory_diag_rate": q["diag"].tolist(),
        "diag_rate_ratio": (local["diag"] / q["diag"]).tolist(),
        "lowrank_local_rate": local["lowrank_diag"].tolist(),
        "theory_lowrank_rate": q["lowrank_diag"].tolist(),
        "lowrank_rate_ratio": (local["lowrank_diag"] / q["lowrank_diag"]).tolist(),  # reported
        "first_order_rate": rate["first_order"].tolist(),
        "underscaled_rate": rate["underscaled"].tolist(),
        "random_psd_rate": rate["random_psd"].tolist(),
    }
