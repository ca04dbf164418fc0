"""How does critical batch size scale in pre-training? (Zhang, Morwani, Vyas, Wu, Zou, Ghai,
Foster, Kakade, ICLR 2025, arXiv 2410.21676) - the paper's least-squares proxy.

Claim. The critical batch size (CBS: the largest batch whose data cost to reach a target loss is
within 20 % of perfect linear scaling) grows with the data size / training duration D and hardly
depends on the model size M once the model is not capacity-limited. The paper supports its
language-model finding with mini-batch SGD on high-dimensional least squares; this claim is that
proxy.

Setting. One-pass linear regression with Gaussian inputs x ~ N(0, diag(lam)), lam_i = i^-a, a
teacher with beta*_i^2 proportional to i^-b (normalised so the initial excess risk is 1/2) and label
noise sigma. A "model of size M" is a linear student on the first M coordinates; everything it
cannot represent, x_{>M} . beta*_{>M}, is Gaussian and independent of x_{<=M}, so for the student it
is extra label noise of variance sigma_eff^2 = sigma^2 + sum_{i>M} lam_i beta*_i^2. Mini-batch SGD
from w = 0 with batch B and constant step eta:
    w <- w - (eta / B) sum_{k in batch} x_k (x_k . w - y_k),
tuned over a fixed step-size grid per batch size. The target for data size D is the best risk that
batch size 1 reaches after D samples; S(B) is the number of steps batch B needs to reach it (best
step size) and CBS(M, D) = max{B : B * S(B) <= 1.2 D}.

Theory (no sampling): the exact second-moment recursion. With e = w - beta*_{<=M} and
c_i = E[e_i^2], the Gaussian fourth-moment identity E[x x^T C x x^T] = 2 Sigma C Sigma +
tr(Sigma C) Sigma closes the diagonal on itself:
    c_{t+1,i} = (1 - eta lam_i)^2 c_{t,i} + (eta^2 / B) (lam_i^2 c_{t,i}
                + lam_i sum_j lam_j c_{t,j} + lam_i sigma_eff^2),
    R_t = 1/2 sum_i lam_i c_{t,i} + 1/2 sigma_eff^2     (population risk, c_{0,i} = beta*_i^2).
Running it for every (M, B, eta) gives the theory CBS table; the experiment is plain mini-batch SGD
on sampled data (seeds batched), judged by the same CBS rule on each seed's exact risk curves
(its own batch-1 target), so every simulated statistic has one value per seed.
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime

SLACK = 1.2  # "within 20 % of perfect linear scaling"


# ----------------------------------------------------------------------------- problem
def spectrum(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """lam_i = i^-a and beta*_i^2 ~ i^-b on the full dimension, sum_i lam_i beta*_i^2 = 1."""
    i = np.arange(1, params["full_dim"] + 1, dtype=float)
    lam = i ** -params["a"]
    beta2 = i ** -params["b"]
    return lam, beta2 / (lam * beta2).sum()


def model_problem(params: dict, model_size: int) -> dict:
    """What a student on the first M coordinates sees: its spectrum, teacher and noise level."""
    lam, beta2 = spectrum(params)
    tail = float((lam[model_size:] * beta2[model_size:]).sum())
    return {
        "lam": lam[:model_size],
        "beta2": beta2[:model_size],
        "noise_var": params["sigma"] ** 2 + tail,  # sigma_eff^2
    }


def lr_grid(lam: np.ndarray, batch: int, params: dict) -> np.ndarray:
    """Step sizes eta_max(B) * 2^(-k * spacing): eta_max(B) ~ the largest stable constant step."""
    eta_max = 1.0 / (lam[0] * (1 + 1 / batch) + lam.sum() / batch)
    return eta_max * 2.0 ** (-params["lr_spacing"] * np.arange(params["n_lr"]))


def steps_for(batch: int, params: dict) -> int:
    """Steps run per batch size: enough data to pass the CBS rule at the largest D."""
    return int(SLACK * max(params["data_sizes"]) / batch) + 1


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """The data are a distribution, not a sample: store its spectrum and grids."""
    lam, beta2 = spectrum(params)
    return {
        "lam": lam,
        "beta2": beta2,
        "data_sizes": np.asarray(params["data_sizes"]),
        "batch_sizes": np.asarray(params["batch_sizes"]),
    }


# ----------------------------------------------------------------------------- theory
def recursion_risk(lam, beta2, noise_var, batch, etas, n_steps) -> np.ndarray:
    """Exact expected risk R_t, t = 0..n_steps, of mini-batch SGD for every step size: (T+1, L).

    The loop runs tens of thousands of steps on small arrays, so it is written for few numpy
    calls per step: the constant factors are formed once, c is updated in place and the risks
    are formed from the stored traces after the loop (the same operations, the same numbers)."""
    eta = np.asarray(etas, dtype=float)[:, None]
    c = np.tile(np.asarray(beta2, dtype=float), (eta.shape[0], 1))  # e_0 = -beta*
    keep = (1 - eta * lam) ** 2 + eta**2 * lam**2 / batch
    gain = eta**2 / batch * lam
    traces = np.empty((n_steps + 1, eta.shape[0]))  # sum_j lam_j c_j per step size
    for t in range(n_steps + 1):
        trace = np.matmul(c, lam, out=traces[t])
        c *= keep
        c += gain * (trace[:, None] + noise_var)
    return 0.5 * (traces + noise_var)


def first_hit(risk: np.ndarray, target: float) -> float:
    """Fewest steps after which some step size has risk <= target (inf if none): risk (T+1, L)."""
    hit = risk <= target
    if not hit.any():
        return float("inf")
    steps = np.where(hit.any(0), hit.argmax(0), np.iinfo(np.int64).max)
    return float(steps.min())


def critical_batch_sizes(curves: dict[int, np.ndarray], data_sizes) -> tuple[list, list]:
    """CBS per data size from risk curves {B: (T+1, L)} that include B = 1.

    target(D) = min over step sizes of R_D at B = 1; CBS = max{B : B * S_B(target) <= 1.2 D}.
    Also returns the targets.
    """
    cbs, targets = [], []
    for d in data_sizes:
        target = float(curves[1][int(d)].min())
        ok = [b for b, risk in curves.items() if b * first_hit(risk, target) <= SLACK * d]
        cbs.append(int(max(ok)))
        targets.append(target)
    return cbs, targets


def curve_steps(batch: int, params: dict) -> np.ndarray:
    """Log-spaced steps at which risk curves are kept for the figure and the curve comparison."""
    n_steps = steps_for(batch, params)
    return runtime.log_spaced_steps(n_steps, params["n_curve_points"])


def theory_table(params: dict, model_size: int) -> dict:
    prob = model_problem(params, model_size)
    curves = {
        int(b): recursion_risk(
            prob["lam"],
            prob["beta2"],
            prob["noise_var"],
            int(b),
            lr_grid(prob["lam"], int(b), params),
            steps_for(int(b), params),
        )
        for b in params["batch_sizes"]
    }
    cbs, targets = critical_batch_sizes(curves, params["data_sizes"])
    kept = {
        str(b): curves[int(b)][curve_steps(int(b), params)].tolist()
        for b in params["curve_batch_sizes"]
    }
    return {"cbs": cbs, "targets": targets, "noise_var": prob["noise_var"], "curves": kept}


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y vs log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    lx = lx - lx.mean()
    return float(((ly - ly.mean()) * lx).sum() / (lx**2).sum())


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    tables = {}
    for m in params["theory_model_sizes"]:
        tables[str(m)] = theory_table(params, int(m))
        print(f"[theory] M={m}: CBS {tables[str(m)]['cbs']}", flush=True)
    return {"tables": tables, "data_sizes": list(params["data_sizes"])}


# ----------------------------------------------------------------------------- experiment
def sgd_risk(prob, batch, etas, n_steps, seeds, device, dtype) -> np.ndarray:
    """Mini-batch SGD for all seeds and step sizes at once; exact risk after every step.

    All step sizes of a seed see the same samples (common random numbers). Returns (S, T+1, L).
    """
    lam = torch.as_tensor(prob["lam"], dtype=dtype, device=device)
    beta = torch.as_tensor(np.sqrt(prob["beta2"]), dtype=dtype, device=device)
    eta = torch.as_tensor(etas, dtype=dtype, device=device)[None, :, None]
    noise_sd = float(np.sqrt(prob["noise_var"]))
    n_seeds, n_lr, m = len(seeds), len(etas), lam.shape[0]
    gen = torch.Generator(device=device).manual_seed(int(seeds[0]) * 100_003 + batch * 7 + m)
    err = -beta.expand(n_seeds, n_lr, m).clone()  # e = w - beta*, w_0 = 0
    risks = torch.empty(n_seeds, n_steps + 1, n_lr, dtype=dtype, device=device)
    chunk = max(1, 4096 // batch)  # draw the inputs of several steps at once
    tick = runtime.Progress(n_steps + 1, f"sgd M={m} B={batch}")
    for start in range(0, n_steps + 1, chunk):
        count = min(chunk, n_steps + 1 - start)
        x = torch.randn(count, n_seeds, batch, m, generator=gen, dtype=dtype, device=device)
        x = x * lam.sqrt()
        noise = noise_sd * torch.randn(
            count, n_seeds, batch, generator=gen, dtype=dtype, device=device
        )
        for k in range(count):
            risks[:, start + k] = 0.5 * ((err**2 * lam).sum(-1) + prob["noise_var"])
            # residual x.w - y = x.e - noise, for every step size: (S, L, B)
            resid = torch.einsum("slm,sbm->slb", err, x[k]) - noise[k][:, None, :]
            err -= eta / batch * torch.einsum("slb,sbm->slm", resid, x[k])
        tick(start + count - 1, risk=float(risks[:, start + count - 1].mean()))
    return risks.cpu().numpy()


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One model size: SGD risk curves for every batch size and step size, seeds batched."""
    m = int(point["model_size"])
    prob = model_problem(params, m)
    dtype = torch.float32 if params["sim_dtype"] == "float32" else torch.float64
    out = {"model_size": np.asarray(m)}
    for b in params["batch_sizes"]:
        etas = lr_grid(prob["lam"], int(b), params)
        out[f"risk__b{b}"] = sgd_risk(
            prob, int(b), etas, steps_for(int(b), params), seeds, device, dtype
        )
    return out


# ----------------------------------------------------------------------------- measure
def seed_curves(run: dict, batch_sizes, seeds_idx) -> dict[int, np.ndarray]:
    """Seed-mean risk curves {B: (T+1, L)} over the chosen seeds."""
    return {int(b): run[f"risk__b{b}"][seeds_idx].mean(0) for b in batch_sizes}


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Simulated CBS per (M, D): per seed (each seed's own curves and batch-1 target), and of
    the seed-mean risk for the figure."""
    out = {}
    for pid, point in points.items():
        run = runs[pid]
        n_seeds = run[f"risk__b{params['batch_sizes'][0]}"].shape[0]
        cbs, targets = critical_batch_sizes(
            seed_curves(run, params["batch_sizes"], np.arange(n_seeds)), params["data_sizes"]
        )
        per_seed = [
            critical_batch_sizes(
                seed_curves(run, params["batch_sizes"], [s]), params["data_sizes"]
            )[0]
            for s in range(n_seeds)
        ]
        curves_kept = {}
        if int(point["model_size"]) == params["curve_model_size"]:
            for b in params["curve_batch_sizes"]:
                risk = run[f"risk__b{b}"][:, curve_steps(int(b), params)]  # (S, P, L)
                curves_kept[str(b)] = {"per_seed": risk.tolist()}
        out[str(point["model_size"])] = {
            "cbs": cbs,  # of the seed-mean risk (figure)
            "cbs_per_seed": per_seed,  # (S, D)
            "targets": targets,
            "seeds": int(n_seeds),
            "curves": curves_kept,
        }
    return {"sim": out, "data_sizes": list(params["data_sizes"])}


# ----------------------------------------------------------------------------- verdict
def model_slope(table: dict, sizes, d_index, key: str = "cbs") -> float:
    """Signed slope of log CBS vs log M, averaged over the chosen data-size indices."""
    slopes = [loglog_slope(sizes, [table[str(m)][key][i] for m in sizes]) for i in d_index]
    return float(np.mean(slopes))


def seed_tables(sim: dict, seed: int) -> dict:
    """One seed's simulated CBS table {M: {"cbs": [...]}}."""
    return {m: {"cbs": row["cbs_per_seed"][seed]} for m, row in sim.items()}


def curve_rel_error(theory_curves: dict, seed_risks: dict, noise_var: float) -> list[float]:
    """Per seed: median over kept steps and batch sizes of |excess risk_seed - recursion| /
    recursion, at the recursion's best step size (at the last kept step)."""
    per_batch = []
    for b, th in theory_curves.items():
        th = np.asarray(th) - noise_var / 2  # excess risk (P, L)
        j = int(th[-1].argmin())
        sim = np.asarray(seed_risks[b]["per_seed"])[:, :, j] - noise_var / 2  # (S, P)
        per_batch.append(np.abs(sim - th[:, j]) / th[:, j])
    return [float(np.median(row)) for row in np.concatenate(per_batch, axis=1)]


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    th, sim = theory["tables"], metrics["sim"]
    d = params["data_sizes"]
    last, last_two = [len(d) - 1], [len(d) - 2, len(d) - 1]
    flat_th, flat_sim = params["flat_model_sizes"], params["sim_flat_model_sizes"]
    small = params["capacity_limited_sizes"]
    big_th, big_sim = str(max(map(int, th))), str(params["sim_growth_model_size"])
    n_seeds = next(iter(sim.values()))["seeds"]
    per_seed = [seed_tables(sim, s) for s in range(n_seeds)]
    gaps = [
        max(
            abs(np.log2(table[m]["cbs"][i] / th[m]["cbs"][i]))
            for m in table
            if m in th
            for i in range(len(d))
        )
        for table in per_seed
    ]
    m_curve = str(params["curve_model_size"])
    return {
        # not gated: does the recursion reproduce each seed's risk curves themselves?
        "curve_median_rel_error": curve_rel_error(
            th[m_curve]["curves"], sim[m_curve]["curves"], th[m_curve]["noise_var"]
        ),
        "theory_data_exponent": loglog_slope(d, th[big_th]["cbs"]),
        "theory_sim_data_exponent": loglog_slope(d, th[big_sim]["cbs"]),
        "theory_model_exponent": model_slope(th, flat_th, last),
        "theory_capacity_limited_model_exponent": model_slope(th, small, last_two),
        "sim_theory_log2_gap": [float(g) for g in gaps],
        "sim_data_exponent": [loglog_slope(d, t[big_sim]["cbs"]) for t in per_seed],
        "sim_model_exponent": [model_slope(t, flat_sim, range(len(d))) for t in per_seed],
        "sim_capacity_limited_model_exponent": [model_slope(t, small, last_two) for t in per_seed],
    }
