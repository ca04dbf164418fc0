"""How much is a noisy sample worth? (Daras, Cherapanamjeri & Daskalakis, "How much is a noisy
image worth? Data Scaling Laws for Ambient Diffusion", ICLR 2025, arXiv 2411.02780).

Claim. Training only on noisy data cannot match training on clean data at practical sample
sizes, but a small clean set (about 10 % of the data) plus many noisy samples reaches the
performance of an all-clean set of similar size. The paper's theory, on Gaussian mixtures with
heterogeneous variances, says that the marginal utility of a noisy sample is exponentially worse
than a clean one's, and that a small clean set cuts the number of noisy samples needed.

Setting (ours: the paper's theoretical model, not its diffusion experiments). A 1-D mixture of k
equal-weight unit-variance Gaussians with equally spaced means (spacing `spacing`, centred);
k = 1 is plain mean estimation. A dataset has N draws x_i; the first c N stay clean, the rest are
observed as y_i = x_i + sigma z_i (sigma known). Per seed, `replicates` independent datasets.
Arms on the same draws (common random numbers): all clean (N), the clean part alone (c N),
mixed (c N clean + (1 - c) N noisy) and noisy only (all N noised: the mixed set with its clean
part noised too), for each sigma in `sigmas`.

Estimator: the maximum-likelihood means with the noise model known (the "ambient" estimator):
under component j a clean sample is N(mu_j, 1), a noisy one N(mu_j, 1 + sigma^2). EM with a
per-sample variance, then guarded Newton steps on the log-likelihood; the initial means are
moment-deconvolved sample quantiles (the same rule for every arm, the truth never used).

Measure. W2 between the fitted mixture (unit-variance components) and the true one, by the
quantile functions; per seed its root mean square over the replicates. The clean-equivalent
size of an arm is the number of clean samples with the same RMS W2 on the clean curve
W2^2 ~ 1 / n (the Cramer-Rao rate, checked on the clean arms' own slope):
    N_eff / N = (W2_clean(N) / W2_arm)^2.
The value of a noisy sample: v = N_eff / N for noisy only, v_mix = (N_eff / N - c) / (1 - c)
for the noisy part of the mixed set.

Theory (ours: Cramer-Rao, independent of the trained estimates). Per-sample Fisher information
of the means I(s) = E[score score^T] under the mixture with component variance s^2 (quadrature),
and the W2 metric tensor G_jl = int dF/dmu_j dF/dmu_l / p dx (for a small change of the means,
W2^2 ~ d^T G d in 1-D). The asymptotic risk with n_c clean and n_n noisy samples is
    E[W2^2] ~ tr(G (n_c I(1) + n_n I(sqrt(1 + sigma^2)))^{-1}),
which gives every N_eff / N and v in closed form; for k = 1, v = 1 / (1 + sigma^2).

Controls. Noisy only (the clean part of the mixed set noised: the small clean set removed).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

QUADRATURE_HALF_WIDTH = 12.0  # standard deviations beyond the outer means; tails below 1e-30
QUADRATURE_POINTS = 6001
# datasets fitted together: about this many samples per chunk keeps the (B, k, n) temporaries
# near 32 MB (k = 4) at every scale; chunking changes the speed (and where Newton stops,
# below NEWTON_TOLERANCE), not the fits
CHUNK_SAMPLES = 2**20
INIT_MIN_VARIANCE = 0.05  # floor of the deconvolved spread used for the initial means
NEWTON_HALVINGS = 6  # step halvings before a Newton step falls back to an EM step
NEWTON_TOLERANCE = 1e-10  # Newton stops once no mean moves by more than this
QUANTILE_REACH = 9.0  # the quantiles at levels in [1e-4, 1 - 1e-4] lie within 9 of the means
BISECTION_STEPS = 14  # brackets each quantile to 18 / 2^14 ~ 1e-3 ...
QUANTILE_NEWTON_STEPS = 4  # ... then Newton (quadratic) takes it below 1e-12


# ----------------------------------------------------------------------------- data
def true_means(k: int, spacing: float) -> np.ndarray:
    """Equally spaced, centred component means (k,)."""
    return (np.arange(k) - (k - 1) / 2) * spacing


def clean_count(params: dict) -> int:
    return int(round(params["clean_fraction"] * params["n_total"]))


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per k and seed, `replicates` datasets of N clean draws x and their noise z (S, R, N)."""
    n, reps = params["n_total"], params["replicates"]
    data: dict[str, np.ndarray] = {}
    for k in params["ks"]:
        means = true_means(k, params["spacing"])
        xs, zs = [], []
        for seed in seeds:
            rng = np.random.default_rng([params["data_seed"], seed, k])
            labels = rng.integers(0, k, size=(reps, n))
            xs.append(means[labels] + rng.standard_normal((reps, n)))
            zs.append(rng.standard_normal((reps, n)))
        data[f"x_k{k}"] = np.asarray(xs)
        data[f"z_k{k}"] = np.asarray(zs)
        data[f"means_k{k}"] = means
    return data


# ----------------------------------------------------------------------------- theory
def quadrature_grid(means: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    lo = means.min() - QUADRATURE_HALF_WIDTH * scale
    hi = means.max() + QUADRATURE_HALF_WIDTH * scale
    grid = np.linspace(lo, hi, QUADRATURE_POINTS)
    return grid, grid[1] - grid[0]


def component_densities(grid: np.ndarray, means: np.ndarray, scale: float) -> np.ndarray:
    """w_j N(x; mu_j, scale^2) at the grid points (P, k), equal weights."""
    u = (grid[:, None] - means[None]) / scale
    return np.exp(-0.5 * u * u) / (np.sqrt(2 * np.pi) * scale * len(means))


def fisher_information(means: np.ndarray, scale: float) -> np.ndarray:
    """Per-sample Fisher information of the means (k, k) under sum_j N(mu_j, scale^2) / k:
    E[s s^T], s_j = r_j(x) (x - mu_j) / scale^2 (trapezoid quadrature)."""
    grid, dx = quadrature_grid(means, scale)
    comp = component_densities(grid, means, scale)
    density = comp.sum(1)
    score = comp * (grid[:, None] - means[None]) / scale**2 / density[:, None]
    weights = density * dx
    return np.einsum("p,pj,pl->jl", weights, score, score)


def w2_metric(means: np.ndarray) -> np.ndarray:
    """G (k, k) with W2^2(p_mu, p_{mu + d}) = d^T G d + o(|d|^2) for the unit-variance mixture:
    the quantile moves by -dF/p, dF/dmu_j = -N(x; mu_j, 1) / k, so G_jl = int f_j f_l / p."""
    grid, dx = quadrature_grid(means, 1.0)
    comp = component_densities(grid, means, 1.0)
    return np.einsum("pj,pl,p->jl", comp, comp, dx / comp.sum(1))


def cramer_rao_risk(means, n_clean: float, n_noisy: float, sigma: float) -> float:
    """Asymptotic E[W2^2] = tr(G J^{-1}), J = n_clean I(1) + n_noisy I(sqrt(1 + sigma^2))."""
    info = n_clean * fisher_information(means, 1.0)
    if n_noisy > 0:
        info = info + n_noisy * fisher_information(means, np.sqrt(1 + sigma**2))
    return float(np.trace(w2_metric(means) @ np.linalg.inv(info)))


def clean_equivalent_fractions(means, clean_fraction: float, sigmas) -> dict[str, np.ndarray]:
    """Cramer-Rao N_eff / N per sigma of the noisy-only set and of the mixed set (a fraction
    `clean_fraction` clean), and the worth of a noisy sample in the mixed set."""
    metric, clean_info = w2_metric(means), fisher_information(means, 1.0)
    clean_risk = np.trace(metric @ np.linalg.inv(clean_info))
    noisy, mixed = [], []
    for sigma in sigmas:
        noisy_info = fisher_information(means, np.sqrt(1 + sigma**2))
        mixed_info = clean_fraction * clean_info + (1 - clean_fraction) * noisy_info
        noisy.append(clean_risk / np.trace(metric @ np.linalg.inv(noisy_info)))
        mixed.append(clean_risk / np.trace(metric @ np.linalg.inv(mixed_info)))
    noisy, mixed = np.asarray(noisy), np.asarray(mixed)
    return {
        "noisy_value": noisy,
        "mixed_fraction": mixed,
        "mixed_noisy_value": (mixed - clean_fraction) / (1 - clean_fraction),
    }


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """Cramer-Rao values of every arm, on the run's sigmas and on a fine sigma grid."""
    c, n = params["clean_fraction"], params["n_total"]
    fine = np.linspace(0.25, max(params["sigmas"]) * 1.2, 40)
    out: dict = {"sigmas": list(params["sigmas"]), "sigma_grid": fine, "ks": {}}
    for k in params["ks"]:
        means = data[f"means_k{k}"]
        out["ks"][str(k)] = {
            **clean_equivalent_fractions(means, c, params["sigmas"]),
            "grid": clean_equivalent_fractions(means, c, fine),
            "clean_w2_rms": np.sqrt(cramer_rao_risk(means, n, 0.0, 0.0)),
            "clean_part_w2_rms": np.sqrt(cramer_rao_risk(means, c * n, 0.0, 0.0)),
        }
    return out


# ----------------------------------------------------------------------------- training
def log_likelihood_terms(y, inv_var, mu):
    """Responsibilities r (B, k, n), a = (y - mu) / var (B, k, n) and the log-likelihood (B,)
    up to terms free of the means (equal weights: 1 / sqrt(var) is common to the components)."""
    gap = y[:, None, :] - mu[:, :, None]
    a = gap * inv_var[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gap *= a
        gap *= -0.5
        comp = np.exp(gap, out=gap)
        total = comp.sum(1)
        loglik = np.log(total).sum(-1)  # -inf for a trial step far outside the data
        r = comp / total[:, None, :]
    return r, a, loglik


def em_step(y, inv_var, mu):
    """mu_j <- sum_i r_ij y_i / var_i / sum_i r_ij / var_i (equal weights, known variances)."""
    r, _, _ = log_likelihood_terms(y, inv_var, mu)
    num = (r @ (y * inv_var)[..., None])[..., 0]
    return num / (r @ inv_var[..., None])[..., 0]


def gradient_and_hessian(y, inv_var, mu):
    """Gradient (B, k) and Hessian (B, k, k) of the log-likelihood in the means:
    g_j = sum_i r_ij a_ij,
    H_jl = sum_i [delta_jl r_ij (a_ij^2 - 1/var_i) - r_ij a_ij r_il a_il]."""
    r, a, _ = log_likelihood_terms(y, inv_var, mu)
    ra = r * a
    diag = (r * (a * a - inv_var[:, None, :])).sum(-1)
    hess = -ra @ np.swapaxes(ra, -1, -2) + diag[:, :, None] * np.eye(mu.shape[-1])
    return ra.sum(-1), hess


def newton_direction(y, inv_var, mu):
    """Newton step -H^{-1} g and the gradient g; where H is not negative definite the
    direction is 0 (that dataset takes an EM step instead)."""
    grad, hess = gradient_and_hessian(y, inv_var, mu)
    concave = np.linalg.eigvalsh(hess)[:, -1] < 0
    hess_safe = np.where(concave[:, None, None], hess, -np.eye(mu.shape[-1]))
    step = -np.linalg.solve(hess_safe, grad[..., None])[..., 0]
    return np.where(concave[:, None], step, 0.0), grad


def initial_means(y, var, k: int):
    """Sample quantiles (j + 1/2) / k, shrunk towards the mean so that the spread matches the
    deconvolved variance var(y) - mean(var - 1): one rule for clean, mixed and noisy sets."""
    centre = y.mean(-1, keepdims=True)
    spread = y.var(-1, keepdims=True)
    clean_spread = np.maximum(spread - (var - 1).mean(-1, keepdims=True), INIT_MIN_VARIANCE)
    quantiles = np.quantile(y, (np.arange(k) + 0.5) / k, axis=-1).T  # (B, k)
    return centre + np.sqrt(clean_spread / spread) * (quantiles - centre)


def newton_or_em_step(y, inv_var, mu):
    """One guarded Newton step per dataset: kept where it does not lower the likelihood
    (halving it up to NEWTON_HALVINGS times); an EM step where none is kept or where the
    likelihood is not locally concave. Returns the new means and the Newton step's size
    (infinite where the likelihood is not concave)."""
    _, _, current = log_likelihood_terms(y, inv_var, mu)
    step, _ = newton_direction(y, inv_var, mu)
    pending = np.any(step != 0, -1)
    new = mu.copy()
    scale = 1.0
    for _ in range(NEWTON_HALVINGS + 1):
        if not pending.any():
            break
        rows = np.flatnonzero(pending)
        trial = mu[rows] + scale * step[rows]
        _, _, ll = log_likelihood_terms(y[rows], inv_var[rows], trial)
        up = ll >= current[rows]
        new[rows[up]] = trial[up]
        pending[rows[up]] = False
        scale /= 2
    concave = np.any(step != 0, -1)
    fall = pending | ~concave
    if fall.any():
        new[fall] = em_step(y[fall], inv_var[fall], mu[fall])
    # at the maximum a step of ~1e-15 can lose the likelihood comparison to rounding: its
    # size, not its acceptance, says that the dataset has converged
    size = np.where(concave, np.abs(step).max(-1), np.inf)
    return new, size


def fit_means(y, var, k: int, em_steps: int, newton_steps: int):
    """Maximum-likelihood means, batched over datasets: `em_steps` EM steps from the initial
    means, then up to `newton_steps` guarded Newton steps on the datasets whose means still
    move by NEWTON_TOLERANCE or more. Returns the means (B, k) and the norm of the
    log-likelihood gradient per sample at the fit (B,)."""
    inv_var = 1 / var
    mu = initial_means(y, var, k)
    for _ in range(em_steps):
        mu = em_step(y, inv_var, mu)
    active = np.ones(len(mu), bool)
    for _ in range(newton_steps):
        rows = np.flatnonzero(active)
        if not len(rows):
            break
        mu[rows], size = newton_or_em_step(y[rows], inv_var[rows], mu[rows])
        active[rows[size < NEWTON_TOLERANCE]] = False
    _, grad = newton_direction(y, inv_var, mu)
    return mu, np.linalg.norm(grad, axis=-1) / y.shape[-1]


def arm_names(params: dict) -> list[str]:
    """The full-size arms, in training order: clean, then mixed and noisy per sigma."""
    names = ["clean"]
    for s in params["sigmas"]:
        names += [f"mixed_sigma{s:g}", f"noisy_sigma{s:g}"]
    return names


def arm_observations(x, z, params: dict):
    """Observed values and per-sample variances of the full-size arms, each (A, S, R, N):
    all clean; per sigma the mixed set (the first c N clean) and the same draws all noised."""
    n_c = clean_count(params)
    ys, vs = [x], [np.ones_like(x)]
    for s in params["sigmas"]:
        noised = x + s * z
        mixed = np.concatenate([x[..., :n_c], noised[..., n_c:]], axis=-1)
        var_mixed = np.concatenate(
            [np.ones_like(x[..., :n_c]), np.full_like(x[..., n_c:], 1 + s * s)], axis=-1
        )
        ys += [mixed, noised]
        vs += [var_mixed, np.full_like(x, 1 + s * s)]
    return np.stack(ys), np.stack(vs)


def fit_in_chunks(y, var, k: int, steps: tuple[int, int]):
    """fit_means over chunks of about CHUNK_SAMPLES samples (independent datasets)."""
    per_chunk = max(1, CHUNK_SAMPLES // y.shape[-1])
    fits = [
        fit_means(y[lo : lo + per_chunk], var[lo : lo + per_chunk], k, *steps)
        for lo in range(0, len(y), per_chunk)
    ]
    return np.concatenate([f[0] for f in fits]), np.concatenate([f[1] for f in fits])


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """All arms, seeds and replicates of one k as one batch of maximum-likelihood fits."""
    k = int(point["k"])
    x, z = data[f"x_k{k}"], data[f"z_k{k}"]
    steps = (params["em_steps"], params["newton_steps"])
    y, var = arm_observations(x, z, params)
    shape = y.shape[:-1]  # (A, S, R)
    mu, grad = fit_in_chunks(y.reshape(-1, y.shape[-1]), var.reshape(-1, y.shape[-1]), k, steps)
    n_c = clean_count(params)
    part = x[..., :n_c].reshape(-1, n_c)  # the clean part alone
    mu_part, grad_part = fit_in_chunks(part, np.ones_like(part), k, steps)
    return {
        "means": mu.reshape(*shape, k),
        "gradient": grad.reshape(shape),
        "means_clean_part": mu_part.reshape(*x.shape[:-1], k),
        "gradient_clean_part": grad_part.reshape(x.shape[:-1]),
    }


# ----------------------------------------------------------------------------- measure
def mixture_quantiles(means: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Quantiles of sum_j N(mu_j, 1) / k at levels u (M,), batched over means (..., k): (..., M).
    Bisection brackets each quantile, then Newton steps x <- x - (F(x) - u) / p(x) polish it."""
    lo = means.min(-1, keepdims=True) - QUANTILE_REACH + 0 * u
    hi = means.max(-1, keepdims=True) + QUANTILE_REACH + 0 * u
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        below = ndtr(mid[..., None] - means[..., None, :]).mean(-1) < u
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    x = (lo + hi) / 2
    for _ in range(QUANTILE_NEWTON_STEPS):
        gap = x[..., None] - means[..., None, :]
        cdf = ndtr(gap).mean(-1)
        density = np.exp(-0.5 * gap * gap).mean(-1) / np.sqrt(2 * np.pi)
        x = np.clip(x - (cdf - u) / density, lo, hi)
    return x


def w2_to_truth(means: np.ndarray, truth: np.ndarray, points: int) -> np.ndarray:
    """W2 between unit-variance mixtures: sqrt(int_0^1 (Q_hat(u) - Q(u))^2 du), midpoint rule."""
    u = (np.arange(points) + 0.5) / points
    gap = mixture_quantiles(means, u) - mixture_quantiles(truth, u)
    return np.sqrt((gap * gap).mean(-1))


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per k: RMS W2 over replicates per seed for every arm, and the convergence of the fits."""
    out: dict = {"arms": arm_names(params), "sigmas": list(params["sigmas"]), "ks": {}}
    for pid, point in points.items():
        run, k = runs[pid], int(point["k"])
        truth = data[f"means_k{k}"]
        w2 = w2_to_truth(run["means"], truth, params["quantile_points"])  # (A, S, R)
        w2_part = w2_to_truth(run["means_clean_part"], truth, params["quantile_points"])
        out["ks"][str(k)] = {
            "w2_rms": np.sqrt((w2**2).mean(-1)),  # (A, S)
            "clean_part_w2_rms": np.sqrt((w2_part**2).mean(-1)),  # (S,)
            "w2": w2,
            "max_gradient": np.maximum(
                run["gradient"].max(axis=(0, 2)), run["gradient_clean_part"].max(-1)
            ),  # (S,)
        }
    return out


# ----------------------------------------------------------------------------- verdict
def sigma_index(sigmas, sigma: float) -> int:
    matches = np.flatnonzero(np.isclose(np.asarray(sigmas, float), sigma))
    if not len(matches):
        raise ValueError(f"sigma = {sigma} is not among the trained sigmas {sigmas}")
    return int(matches[0])


def arm_values(metrics_k: dict, arms: list[str], sigma: float, clean_fraction: float) -> dict:
    """Per seed: N_eff / N of the mixed and noisy arms and the noisy samples' values."""
    w2 = np.asarray(metrics_k["w2_rms"])
    clean = w2[arms.index("clean")]
    mixed = (clean / w2[arms.index(f"mixed_sigma{sigma:g}")]) ** 2
    noisy = (clean / w2[arms.index(f"noisy_sigma{sigma:g}")]) ** 2
    return {
        "mixed_fraction": mixed,
        "noisy_value": noisy,
        "mixed_noisy_value": (mixed - clean_fraction) / (1 - clean_fraction),
    }


GAIN_FLOOR = 1e-3  # a mixed set worth less than its clean part alone counts as gain 1e-3


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    c, arms, sigmas = params["clean_fraction"], metrics["arms"], metrics["sigmas"]
    claim, high = params["claim_sigma"], params["high_sigma"]
    m4, m1 = metrics["ks"]["4"], metrics["ks"]["1"]
    t4, t1 = theory["ks"]["4"], theory["ks"]["1"]
    i_claim, i_high = sigma_index(sigmas, claim), sigma_index(sigmas, high)
    at_claim = arm_values(m4, arms, claim, c)
    at_high4 = arm_values(m4, arms, high, c)
    at_high1 = arm_values(m1, arms, high, c)
    w2_4 = np.asarray(m4["w2_rms"])
    part = np.asarray(m4["clean_part_w2_rms"])
    clean = w2_4[arms.index("clean")]
    exponent = np.log(part / clean) / np.log(1 / c)  # W2 ~ n^-exponent on the clean arms
    return {
        "mixed_fraction_k4": at_claim["mixed_fraction"].tolist(),
        "mixed_fraction_k4_cramer_rao": float(t4["mixed_fraction"][i_claim]),
        "noisy_fraction_k4": at_claim["noisy_value"].tolist(),
        "noisy_fraction_k4_cramer_rao": float(t4["noisy_value"][i_claim]),
        "log10_clean_anchor_gain_k4_high": np.log10(
            np.maximum(at_high4["mixed_noisy_value"], GAIN_FLOOR * at_high4["noisy_value"])
            / at_high4["noisy_value"]
        ).tolist(),
        "log10_clean_anchor_gain_k4_high_cramer_rao": float(
            np.log10(t4["mixed_noisy_value"][i_high] / t4["noisy_value"][i_high])
        ),
        "log10_noisy_value_ratio_k4_over_k1_high": np.log10(
            at_high4["noisy_value"] / at_high1["noisy_value"]
        ).tolist(),
        "log10_noisy_value_ratio_k4_over_k1_high_cramer_rao": float(
            np.log10(t4["noisy_value"][i_high] / t1["noisy_value"][i_high])
        ),
        "noisy_value_k1_high": at_high1["noisy_value"].tolist(),
        "noisy_value_k1_high_closed_form": 1 / (1 + high**2),
        "clean_curve_exponent_k4": exponent.tolist(),
        "clean_w2_over_cramer_rao_k4": (clean / t4["clean_w2_rms"]).tolist(),
        "max_gradient": np.maximum(
            np.asarray(m4["max_gradient"]), np.asarray(m1["max_gradient"])
        ).tolist(),
    }
