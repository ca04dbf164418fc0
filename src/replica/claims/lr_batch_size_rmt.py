"""Learning rates as a function of batch size, from the spiked random-matrix batch Hessian.

Claim (Granziol, Zohren & Roberts, "Learning Rates as a Function of Batch Size: A Random Matrix
Theory Approach to Neural Network Training", JMLR 2022, arXiv 2006.09092). A mini-batch Hessian
is the empirical Hessian plus a random perturbation whose size grows as the batch B shrinks, so
its extremal eigenvalues sit above the empirical ones, by an amount given by spiked random-matrix
(BBP) theory. Taking the largest stable learning rate proportional to 1 / lambda_max(H_B) then
gives a *linear* learning-rate / batch-size rule for SGD (while the perturbation dominates) and a
*square-root* rule for Adam (whose preconditioner divides by a gradient scale ~ B^-1/2).

Exact testbed: noiseless least squares, L(w) = |X w - y|^2 / (2N), y = X w*, rows
x ~ N(0, Sigma) with one spike, Sigma = I + (theta - 1) e_1 e_1^T. The Hessian of a batch of B
rows is the sample covariance H_B = X_B^T X_B / B. With gamma = d / B, the top eigenvalue of a
spiked sample covariance converges to (Baik, Ben Arous & Peche 2005; Baik & Silverstein 2006)
    lambda_BBP(B) = theta (1 + gamma / (theta - 1))   if theta > 1 + sqrt(gamma),
                  = (1 + sqrt(gamma))^2                 otherwise (the bulk edge),
i.e. the paper's "spike plus a perturbation ~ 1/B" (its additive spiked-Wigner form
lambda + (P/B) sigma^2 / lambda is the same phenomenon). The paper's rule for SGD is
eta_max(B) = 2 / lambda_max(H_B): ~ B for B << d / (theta - 1), saturating at 2 / theta beyond.

Rival prediction (drawn, not the paper's): mean-square linear stability of SGD. The error
e = w - w* obeys e <- (I - eta H_B) e; its second moment E e e^T evolves linearly, and with
i.i.d. Gaussian rows (Isserlis: E[x x^T A x x^T] = 2 Sigma A Sigma + tr(Sigma A) Sigma) the
diagonal in Sigma's eigenbasis closes on two numbers (spike, bulk total):
    M(eta) = diag(1 - 2 eta s + eta^2 (1 + 1/B) s^2) + (eta^2 / B) s s^T (grouped),
and eta_MS(B) is where its spectral radius reaches 1. Ma, Bassily & Belkin's worst-case bound
2B / (beta + (B - 1) lambda_1) (beta = max |x|^2) is drawn as well.

Experiment: the top eigenvalue of sampled batch Hessians (the spectral claim), and the largest
stable learning rate of SGD and of Adam at each B, all seeds and candidate rates batched. SGD's
threshold is where the asymptotic growth rate of |e_t| crosses zero (the error is renormalised
every few steps, so divergence is data, never an overflow); Adam does not blow up exponentially,
so its threshold is the largest rate whose final loss stays below the initial loss.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from replica import runtime

RENORM_EVERY = 25  # steps between renormalisations of the error vectors


# ----------------------------------------------------------------------------- data
def design_matrix(seed: int, params: dict) -> np.ndarray:
    """N rows x ~ N(0, I + (theta - 1) e_1 e_1^T), one data set per seed."""
    rng = np.random.default_rng([seed, 2006])
    x = rng.standard_normal((params["n_samples"], params["d"]))
    x[:, 0] *= np.sqrt(params["theta"])
    return x


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed the data set's summaries: Hessian spectrum, lambda_1, beta = max |x|^2.

    The design matrices themselves (N x d per seed) are a deterministic function of the seed
    (`design_matrix`) and are rebuilt where needed rather than stored."""
    spectra, beta = [], []
    for seed in seeds:
        x = design_matrix(seed, params)
        spectra.append(np.linalg.eigvalsh(x.T @ x / len(x)))
        beta.append((x**2).sum(1).max())
    return {
        "seeds": np.asarray(seeds),
        "hessian_spectrum": np.asarray(spectra),
        "lambda_1": np.asarray(spectra)[:, -1],
        "beta": np.asarray(beta),
        "batch_sizes": np.asarray(params["batch_sizes"]),
    }


# ----------------------------------------------------------------------------- theory
def bbp_top_eigenvalue(d: int, batch, theta: float) -> np.ndarray:
    """Limit of lambda_max of a spiked sample covariance, gamma = d / B (Baik-Silverstein)."""
    gamma = d / np.asarray(batch, dtype=float)
    spike = theta * (1 + gamma / (theta - 1))
    edge = (1 + np.sqrt(gamma)) ** 2
    return np.where(theta > 1 + np.sqrt(gamma), spike, edge)


def second_moment_matrix(eta: float, batch: int, d: int, theta: float) -> np.ndarray:
    """2x2 map of (E e_1^2, sum_{k>1} E e_k^2) for one SGD step with B i.i.d. Gaussian rows."""
    s = np.array([theta, 1.0])
    count = np.array([1.0, d - 1.0])
    diag = 1 - 2 * eta * s + eta**2 * (1 + 1 / batch) * s**2
    coupling = (eta**2 / batch) * np.outer(s * count, s)  # row k gets s_k * sum_j s_j e_j
    return np.diag(diag) + coupling


def ms_threshold(batch: int, d: int, theta: float) -> float:
    """Largest eta with spectral radius of the second-moment map <= 1 (bisection in log eta)."""

    def unstable(eta):
        return np.abs(np.linalg.eigvals(second_moment_matrix(eta, batch, d, theta))).max() > 1

    lo, hi = 1e-6, 2.0 / theta * 1.000001  # stable at tiny eta; GD itself is unstable above 2/theta
    assert not unstable(lo) and unstable(hi * 1.01)
    for _ in range(80):
        mid = np.sqrt(lo * hi)
        lo, hi = (lo, mid) if unstable(mid) else (mid, hi)
    return float(lo)


def mbb_threshold(batch, beta: float, lambda_1: float) -> np.ndarray:
    """Ma-Bassily-Belkin: 2 * B / (beta + (B - 1) lambda_1), a worst-case (beta = max |x|^2)."""
    b = np.asarray(batch, dtype=float)
    return 2 * b / (beta + (b - 1) * lambda_1)


def loglog_slope(x, y) -> float:
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    lx = lx - lx.mean()
    return float(((ly - ly.mean()) * lx).sum() / (lx**2).sum())


def small(batch_sizes, params):
    return np.asarray(batch_sizes) <= params["small_batch_max"]


def large(batch_sizes, params):
    return np.asarray(batch_sizes) >= params["large_batch_min"]


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    d, theta = params["d"], params["theta"]
    b = np.asarray(params["batch_sizes"])
    lam_bbp = bbp_top_eigenvalue(d, b, theta)
    eta_paper = 2 / lam_bbp
    eta_ms = np.array([ms_threshold(int(bb), d, theta) for bb in b])
    eta_mbb = np.stack(
        [mbb_threshold(b, be, la) for be, la in zip(data["beta"], data["lambda_1"], strict=True)]
    )
    sm, lg = small(b, params), large(b, params)
    return {
        "batch_sizes": b,
        "lambda_bbp": lam_bbp,
        "eta_paper": eta_paper,  # 2 / lambda_BBP(B)
        "eta_ms": eta_ms,  # rival: mean-square stability (population)
        "eta_mbb": eta_mbb.mean(0),  # rival: Ma-Bassily-Belkin bound (per-seed data, averaged)
        "eta_full_batch": 2 / np.asarray(data["lambda_1"]),  # per seed: GD on the whole data
        "crossover_batch": d / (theta - 1),  # where theta ~ theta gamma / (theta - 1)
        "paper_small_batch_slope": loglog_slope(b[sm], eta_paper[sm]),
        "ms_small_batch_slope": loglog_slope(b[sm], eta_ms[sm]),
        "paper_large_batch_slope": loglog_slope(b[lg], eta_paper[lg]),
        "adam_slope": 0.5,
        "sgd_slope": 1.0,
    }


# ----------------------------------------------------------------------------- experiment
def batch_top_eigenvalues(x: np.ndarray, batch: int, reps: int, rng) -> np.ndarray:
    """lambda_max(X_B^T X_B / B) for `reps` batches of B i.i.d. rows (the smaller Gram)."""
    out = np.empty(reps)
    for i in range(reps):
        xb = x[rng.integers(0, len(x), batch)]
        gram = xb @ xb.T if batch < x.shape[1] else xb.T @ xb
        k = len(gram)
        out[i] = scipy.linalg.eigvalsh(gram, subset_by_index=[k - 1, k - 1])[0] / batch
    return out


def spectrum_run(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    tops = []
    for seed in seeds:
        x = design_matrix(seed, params)
        rng = np.random.default_rng([seed, 7])
        tops.append(
            [batch_top_eigenvalues(x, b, params["eig_reps"], rng) for b in params["batch_sizes"]]
        )
    return {"top_eigenvalue": np.asarray(tops)}  # (seeds, B, reps)


def candidate_rates(params: dict, batch: int, optimizer: str) -> np.ndarray:
    """Log-spaced learning rates around the closed-form 2 / lambda_BBP(B) (data-free centre)."""
    lo, hi, num = params[f"{optimizer}_factors"]
    centre = 2 / bbp_top_eigenvalue(params["d"], batch, params["theta"])
    return centre * np.geomspace(lo, hi, int(num))


def sample_batch(x: torch.Tensor, batch: int, gen: torch.Generator) -> torch.Tensor:
    """B i.i.d. rows per seed, (S, B, d); indices come from the CPU generator on any device.

    The rows are picked by one index_select on the (S N, d) view (the same copy as
    x[seed, rows], without advanced indexing's overhead)."""
    s, n, d = x.shape
    rows = torch.randint(n, (s, batch), generator=gen).to(x.device)
    flat = (rows + n * torch.arange(s, device=x.device)[:, None]).reshape(-1)
    return x.reshape(s * n, d).index_select(0, flat).view(s, batch, d)


def data_hessian(x: torch.Tensor) -> torch.Tensor:
    """H = X^T X / N per seed, (S, d, d): the full-data Hessian of L(w) = |X w - y|^2 / (2N)."""
    return torch.bmm(x.transpose(1, 2), x) / x.shape[1]


def run_sgd(x, e0, rates, batch, steps, gen, full_batch=False, hessian=None):
    """Error dynamics e <- e - eta X_B^T X_B e / B for every (seed, rate) at once.

    x (S, N, d), e0 (S, G, d) unit rows, rates (S, G). Returns the growth rate of |e| per step
    over the second half of the run (log-norm tracked through renormalisations). Full-batch
    GD uses the data Hessian (`hessian`, from x if not given): e <- e - eta e H costs d^2 per
    error vector instead of 2 N d through X (equal up to rounding)."""
    e = e0.clone()
    log_norm = torch.zeros(e.shape[:2], dtype=e.dtype, device=e.device)
    half = None
    if full_batch and hessian is None:
        hessian = data_hessian(x)
    for t in range(steps):
        if full_batch:
            e = e - rates[..., None] * torch.bmm(e, hessian)  # H symmetric: (H e)^T = e^T H
        else:
            xb = sample_batch(x, batch, gen)
            resid = torch.einsum("sbd,sgd->sgb", xb, e)
            e = e - rates[..., None] * torch.einsum("sbd,sgb->sgd", xb, resid) / batch
        if (t + 1) % RENORM_EVERY == 0 or t + 1 == steps:
            norm = e.norm(dim=-1)
            log_norm += norm.log()
            e = e / norm[..., None]
        if t + 1 == steps // 2:
            half = log_norm.clone() + e.norm(dim=-1).log()
    return (log_norm - half) / (steps - steps // 2)


def run_adam(x, e0, rates, batch, steps, gen, betas, eps, hessian=None):
    """Adam (bias-corrected, as in torch) on the same problem; returns log10(L_T / L_0) with
    L_T averaged over the last tenth of the run. Adam's step is bounded by ~lr per coordinate,
    so it does not diverge exponentially: 'unstable' means it ends above its starting loss."""
    e = e0.clone()
    m, v = torch.zeros_like(e), torch.zeros_like(e)
    b1, b2 = betas
    hessian = data_hessian(x) if hessian is None else hessian

    def loss(err):
        # L = |X e|^2 / (2N) = e^T H e / 2: d^2 per error vector instead of N d through X
        return 0.5 * (torch.bmm(err, hessian) * err).sum(-1)

    start, tail_from = loss(e), steps - steps // 10
    tail = torch.zeros(e.shape[:2], dtype=e.dtype, device=e.device)
    for t in range(steps):
        xb = sample_batch(x, batch, gen)
        grad = torch.einsum("sbd,sgb->sgd", xb, torch.einsum("sbd,sgd->sgb", xb, e)) / batch
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        step = (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt() + eps)
        e = e - rates[..., None] * step
        if t >= tail_from:
            tail += loss(e) / (steps - tail_from)
    return torch.log10(tail / start)


def crossing(rates: np.ndarray, score: np.ndarray) -> float | None:
    """The stability threshold from (rate, score) pairs, score <= 0 meaning stable.

    Sorted by rate, the threshold lies between the last stable rate and the first rate from
    which every larger one is unstable (robust to a noisy sign flip near the threshold); it is
    placed by log-linear interpolation of the score. None if it is not bracketed."""
    order = np.argsort(rates)
    lr, sc = np.log(np.asarray(rates)[order]), np.asarray(score)[order]
    stable = np.flatnonzero(sc <= 0)
    if len(stable) == 0 or stable[-1] == len(sc) - 1:
        return None
    i = stable[-1] + 1  # first rate of the all-unstable tail
    frac = -sc[i - 1] / (sc[i] - sc[i - 1])
    return float(np.exp(lr[i - 1] + frac * (lr[i] - lr[i - 1])))


def threshold_search(x, params, batch, optimizer, seeds, device, full_batch=False, hessian=None):
    """Two rounds: a coarse grid of rates, then a fine grid inside the bracket of each seed.
    `hessian`: data_hessian(x) if already computed (full-batch GD and Adam's loss use it)."""
    gen = torch.Generator().manual_seed(int(seeds[0]) * 7919 + batch)
    s, d = x.shape[0], x.shape[2]
    coarse = candidate_rates(params, batch, optimizer)
    if full_batch:
        # an even count: the exact 2 / lambda_1 is never itself a candidate
        coarse = (
            2 / params["_lambda_1"][:, None] * np.geomspace(0.7, 1.3, 2 * (len(coarse) // 2))[None]
        )
    else:
        coarse = np.tile(coarse, (s, 1))
    rounds = []
    rates = coarse
    for _ in range(2):
        e0 = torch.randn(s, rates.shape[1], d, generator=gen, dtype=x.dtype).to(device)
        e0 = e0 / e0.norm(dim=-1, keepdim=True)
        r = torch.as_tensor(rates, dtype=x.dtype, device=device)
        if optimizer == "sgd":
            score = run_sgd(x, e0, r, batch, params["steps"], gen, full_batch, hessian)
        else:
            betas, eps = params["adam_betas"], params["adam_eps"]
            score = run_adam(x, e0, r, batch, params["steps"], gen, betas, eps, hessian)
        score = score.cpu().numpy()
        rounds.append((rates, score))
        rates = np.stack(
            [refine(rt, sc, params["refine_points"]) for rt, sc in zip(rates, score, strict=True)]
        )
    all_rates = np.concatenate([r for r, _ in rounds], axis=1)
    all_score = np.concatenate([sc for _, sc in rounds], axis=1)
    found = [crossing(rt, sc) for rt, sc in zip(all_rates, all_score, strict=True)]
    return np.array([np.nan if f is None else f for f in found]), rounds


def refine(rates: np.ndarray, score: np.ndarray, points: int) -> np.ndarray:
    """Fine log-grid strictly inside the coarse bracket of `crossing` (whole range if none)."""
    found = crossing(rates, score)
    if found is None:
        return np.geomspace(rates[0], rates[-1], points + 2)[1:-1]
    i = int(np.searchsorted(rates, found))
    return np.geomspace(rates[i - 1], rates[i], points + 2)[1:-1]


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    kind = point["optimizer"]
    if kind == "spectrum":
        return spectrum_run(params, seeds)
    x = torch.as_tensor(np.stack([design_matrix(s, params) for s in seeds]), device=device)
    hessian = data_hessian(x)  # once per job: full-batch GD and Adam's loss
    out = {}
    tick = runtime.Progress(len(params["batch_sizes"]), f"train {kind}")
    for i, batch in enumerate(params["batch_sizes"]):
        found, rounds = threshold_search(x, params, int(batch), kind, seeds, device, False, hessian)
        out[f"threshold__b{batch}"] = np.nan_to_num(found, nan=-1.0)  # -1: not bracketed
        out[f"rates__b{batch}"] = np.concatenate([r for r, _ in rounds], axis=1)
        out[f"score__b{batch}"] = np.concatenate([s for _, s in rounds], axis=1)
        tick(i)
    if kind == "sgd":  # full-batch GD calibrates the threshold finder: exactly 2 / lambda_1
        full = {**params, "_lambda_1": np.asarray(data["lambda_1"])}
        found, _ = threshold_search(x, full, len(x[0]), "sgd", seeds, device, True, hessian)
        out["threshold_full_batch"] = np.nan_to_num(found, nan=-1.0)
    return out


# ----------------------------------------------------------------------------- measure
def thresholds(run: dict, batch_sizes) -> np.ndarray:
    """(seeds, B) thresholds with None where no crossing was bracketed."""
    arr = np.stack([run[f"threshold__b{b}"] for b in batch_sizes], axis=1)
    return np.where(arr > 0, arr, np.nan)


def to_list(arr: np.ndarray):
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.atleast_2d(arr)]


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    by_kind = {p["optimizer"]: runs[pid] for pid, p in points.items()}
    b = list(params["batch_sizes"])
    top = by_kind["spectrum"]["top_eigenvalue"]  # (seeds, B, reps)
    out = {
        "batch_sizes": b,
        "top_eigenvalue_mean": top.mean(-1),  # (seeds, B)
        "top_eigenvalue_sd": top.std(-1, ddof=1),
        "lambda_1": data["lambda_1"],
    }
    for kind in ("sgd", "adam"):
        if kind in by_kind:
            out[f"{kind}_threshold"] = to_list(thresholds(by_kind[kind], b))
    if "sgd" in by_kind:
        full = by_kind["sgd"]["threshold_full_batch"]
        out["sgd_full_batch_threshold"] = [None if v <= 0 else float(v) for v in full]
    return out


# ----------------------------------------------------------------------------- verdict
def as_array(nested) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in nested], dtype=float)


def per_seed_slopes(b, thr: np.ndarray, mask, undefined: float) -> list[float]:
    """Slope of log threshold vs log B over the masked batch sizes, one per seed; a seed with a
    threshold in that range that was not bracketed gets `undefined` (the manifest states it)."""
    bm = np.asarray(b)[mask]
    return [
        loglog_slope(bm, row) if np.isfinite(row).all() else float(undefined)
        for row in thr[:, mask]
    ]


def worst_ratio(level: np.ndarray, reference: np.ndarray, undefined: float = 0.0) -> list[float]:
    """Per seed, the ratio level / reference farthest from 1 (signed, so a miss keeps its
    direction); `undefined` for a seed with an unbracketed threshold."""
    out = []
    for row in np.atleast_2d(level):
        if not np.isfinite(row).all():
            out.append(float(undefined))
            continue
        ratio = row / reference
        out.append(float(ratio[np.argmax(np.abs(ratio - 1))]))
    return out


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    b = np.asarray(metrics["batch_sizes"])
    sm, lg = small(b, params), large(b, params)
    spectral = b >= params["spectral_min_batch"]
    lam_mc = np.asarray(metrics["top_eigenvalue_mean"])  # (seeds, B)
    lam_bbp = np.asarray(theory["lambda_bbp"])
    sgd, adam = as_array(metrics["sgd_threshold"]), as_array(metrics["adam_threshold"])
    paper, ms = np.asarray(theory["eta_paper"]), np.asarray(theory["eta_ms"])
    full = np.asarray([np.nan if v is None else v for v in metrics["sgd_full_batch_threshold"]])
    full_dev = np.abs(full / np.asarray(theory["eta_full_batch"]) - 1)
    return {
        "bbp_max_deviation": np.abs(lam_mc[:, spectral] / lam_bbp[spectral] - 1).max(1).tolist(),
        "sgd_small_batch_slope": per_seed_slopes(b, sgd, sm, undefined=0.0),
        "sgd_large_batch_slope": per_seed_slopes(b, sgd, lg, undefined=1.0),
        "adam_small_batch_slope": per_seed_slopes(b, adam, sm, undefined=0.0),
        "sgd_level_worst_ratio": worst_ratio(sgd[:, spectral], paper[spectral]),
        # the rival rule, reported and drawn, not checked (an unbracketed seed counts 1)
        "ms_level_worst": [abs(r - 1) for r in worst_ratio(sgd[:, spectral], ms[spectral])],
        "full_batch_deviation": np.nan_to_num(full_dev, nan=1.0).tolist(),
        "paper_small_batch_slope": theory["paper_small_batch_slope"],
        "theory_level": 1.0,
    }
