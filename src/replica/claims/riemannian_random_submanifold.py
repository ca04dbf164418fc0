"""Randomized Riemannian submanifold descent on the Stiefel manifold (Han, Poirion, Takeda,
ICML 2025, arXiv 2505.12378).

Claim. To minimise F(X) over St(n, p) = {X in R^{n x p}: X^T X = I}, write each step as
X_{k+1} = U_k X_k with U_k = P_k^T diag(Y_k, I_{n-r}) P_k, Y_k in O(r), where P_k in O(n) is drawn
afresh each step (Haar-orthogonal, or a uniform permutation). A step only moves X inside a random
r(r-1)/2-dimensional submanifold, so it needs the r x r block of the gradient and an r x r
retraction (cost O(npr) with Haar P, O(nr^2 + r^2 p) with a permutation, when the Euclidean gradient
rows are cheap) instead of an n x p retraction. In expectation the step is a fixed fraction of
the full Riemannian gradient step, so the method still converges, linearly under a Riemannian
Polyak-Lojasiewicz (PL) condition. A fixed submanifold (P_k = I forever) must fail.

Theory (closed form). The O(n)-gradient of U -> F(U X) at U = I is Omega = skew(G X^T) with
G = grad F(X) (Frobenius metric on skew matrices; skew(M) = (M - M^T)/2). The gradient on the
submanifold at Y = I is the r x r leading block of P Omega P^T. For a uniform permutation and for
Haar P alike, every off-diagonal entry of P Omega P^T has the same second moment and the diagonal is
zero (Omega is skew), while the squared entries sum to ||Omega||_F^2. Hence exactly
    E ||grad_sub||_F^2 = rho_r ||Omega||_F^2,      rho_r = r (r - 1) / (n (n - 1)),
and, by the same symmetry, E[P^T diag(block, 0) P] = rho_r Omega: the expected step is rho_r times
the full gradient step.

Linear rate. Our test problem is PCA, F(X) = -1/2 tr(X^T A X) with A = Q diag(lambda) Q^T whose top
p eigenvalues equal lambda_hi and the rest lambda_lo (a single curvature c = lambda_hi - lambda_lo
for every direction that mixes the top subspace with its complement; F* = -p lambda_hi / 2).
Near the optimum, with X = exp(S) X* and the mixing block B of S, F - F* = c ||B||^2 / 2 and
Omega has mixing block c B / 2, so a full step Y = exp(-eta Omega) (r = n, RGD) gives B <- (1 -
eta c / 2) B, i.e. a gap contraction (1 - eta c / 2)^2 per iteration, exactly. With a random
submanifold the expected step is rho_r times that, so to first order in eta c
    -log(gap_{k+1} / gap_k) ~= rho_r eta c,
proportional to r (r - 1). The second-order correction is relatively O(eta c / 4); at eta c = 0.2
we allow 20 %. With P fixed, rows r+1..n of X never move, so F stalls above F*, and at the stall
the submanifold gradient is 0 while ||Omega|| is not (ratio far below rho_r).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from replica import runtime

SAMPLERS = ("perm", "haar", "fixed")


# ----------------------------------------------------------------------------- data
def haar_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Haar-distributed Q in O(n): QR of a Gaussian matrix with the signs of R's diagonal fixed."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def pca_matrix(q: np.ndarray, p: int, hi: float, lo: float) -> np.ndarray:
    lam = np.full(q.shape[0], lo)
    lam[:p] = hi
    return (q * lam) @ q.T


def stiefel_point(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, p)))
    return q * np.sign(np.diag(r))


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: for the ratio test (each n) a random Stiefel point and one near the optimum of a
    PCA problem, with its Euclidean gradient G = -A X there (A itself is not stored: n x n per
    seed is large at paper scale); for the descent runs the PCA matrix A and the start X0."""
    p, hi, lo = params["p"], params["lambda_hi"], params["lambda_lo"]
    out: dict[str, list] = {}
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        for n in params["ratio_n"]:
            q = haar_orthogonal(rng, n)
            a = pca_matrix(q, p, hi, lo)
            near = np.linalg.qr(q[:, :p] + params["near_scale"] * rng.standard_normal((n, p)))[0]
            for where, x in (("rand", stiefel_point(rng, n, p)), ("near", near)):
                out.setdefault(f"ratio_X{where}_n{n}", []).append(x)
                out.setdefault(f"ratio_G{where}_n{n}", []).append(-(a @ x))
        n = params["n"]
        out.setdefault("A", []).append(pca_matrix(haar_orthogonal(rng, n), p, hi, lo))
        out.setdefault("X0", []).append(stiefel_point(rng, n, p))
    return {key: np.stack(val) for key, val in out.items()}


# ----------------------------------------------------------------------------- theory
def submanifold_fraction(n: int, r: int) -> float:
    """rho_r = E ||grad_sub||^2 / ||Omega||^2 = r (r - 1) / (n (n - 1))."""
    return r * (r - 1) / (n * (n - 1))


def optimal_value(p: int, hi: float) -> float:
    """F* = -1/2 (sum of the top p eigenvalues) for F(X) = -1/2 tr(X^T A X)."""
    return -0.5 * p * hi


def predicted_rate(n: int, r: int, eta: float, curvature: float) -> float:
    """Per-iteration log-contraction of the gap: exact for r = n (RGD with the exponential map),
    first order in eta c otherwise."""
    if r == n:
        return -2.0 * math.log(1.0 - eta * curvature / 2.0)
    return submanifold_fraction(n, r) * eta * curvature


def theory(data: dict, params: dict) -> dict:
    n, curvature = params["n"], params["lambda_hi"] - params["lambda_lo"]
    rs = list(params["conv_r"]) + [n]
    return {
        "ratio": {
            f"n{n_}_r{r}": submanifold_fraction(n_, r)
            for n_ in params["ratio_n"]
            for r in params["ratio_r"]
            if r <= n_
        },
        "rate": {f"r{r}": predicted_rate(n, r, params["eta"], curvature) for r in rs},
        "rate_slope": 1.0,  # rate proportional to r (r - 1)
        "f_star": optimal_value(params["p"], params["lambda_hi"]),
        "curvature": curvature,
    }


# ----------------------------------------------------------------------------- sampling
def gaussian(gen: torch.Generator, shape: tuple, device) -> torch.Tensor:
    """Standard normal Z in float64, drawn in float32: four times the draws per second, and
    a Haar P from QR(Z) needs only Z's direction (rounding at 6e-8 relative is far below the
    Monte Carlo error)."""
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device, torch.float64)


def cholesky_rows(zt: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Q^T M = L^-1 (Z^T M) for the sign-fixed QR of Z (n x r, well conditioned), L L^T = Z^T Z;
    zt = Z^T (.., r, n), m = Z^T M (.., r, k)."""
    return torch.linalg.solve_triangular(torch.linalg.cholesky(zt @ zt.mT), m, upper=False)


def sample_rows(sampler: str, gen: torch.Generator, s: int, n: int, r: int, device):
    """The r x n leading rows of P for every seed: (S, r, n), or row indices (S, r) for the
    permutation samplers (a row-selection P never needs to be formed)."""
    if sampler == "haar" and 4 * r <= n:  # Q^T = L^-1 Z^T (see haar_rows_of)
        zt = gaussian(gen, (s, n, r), device).transpose(1, 2)
        return cholesky_rows(zt, zt)
    if sampler == "haar":
        q, rr = torch.linalg.qr(gaussian(gen, (s, n, r), device))
        q = q * torch.sign(torch.diagonal(rr, dim1=-2, dim2=-1))[:, None, :]
        return q.transpose(1, 2)
    if sampler == "perm":  # the r smallest of n uniforms: a uniformly random ordered r-subset
        keys = torch.rand(s, n, generator=gen)
        return keys.topk(r, -1, largest=False, sorted=True).indices.to(device)
    return torch.arange(r, device=device).expand(s, r)  # fixed: always the first r coordinates


def skew(m: torch.Tensor) -> torch.Tensor:
    # the halving in place: one (S, r, r) temporary instead of two (the same products)
    return (m - m.transpose(-1, -2)).mul_(0.5)


def rows_of(mat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """P_r M for M (S, n, k): gather for index rows (S, r), matmul for Haar rows (S, r, n)."""
    if rows.dim() == 2:
        return torch.gather(mat, 1, rows[..., None].expand(-1, -1, mat.shape[-1]))
    return rows @ mat


def sub_gradient(pg: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """r x r block of P Omega P^T = skew((P G)(P X)^T), from the r rows P G and P X only."""
    return skew(pg @ px.transpose(1, 2))


def full_omega(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Omega = skew(G X^T) with G = -A X, the PCA gradient: (S, n, n)."""
    return skew(-(a @ x) @ x.transpose(1, 2))


# ----------------------------------------------------------------------------- train
def ratio_draws(g, x, sampler: str, r: int, draws: int, gen, chunk: int) -> np.ndarray:
    """||grad_sub||^2 / ||Omega||^2 over `draws` independent P per seed, summarised per seed as
    (mean, standard deviation, number of draws): (S, 3). g = grad F(x), both (S, n, p)."""
    s, n, p = x.shape
    omega_sq = (skew(g @ x.transpose(1, 2)) ** 2).sum((-1, -2))
    out = []
    for start in range(0, draws, chunk):
        c = min(chunk, draws - start)
        if sampler == "haar" and 4 * r <= n:  # Z well conditioned: Cholesky instead of QR
            pg, px = haar_rows_of(gen, g, x, c, r)
        elif sampler == "haar":
            rows = sample_rows(sampler, gen, s * c, n, r, x.device)
            pg, px = (rows_of(m.repeat_interleave(c, 0), rows) for m in (g, x))
        else:  # index rows: draw i of the chunk belongs to seed i // c; gather from (S n, p)
            rows = sample_rows(sampler, gen, s * c, n, r, x.device)
            flat = (rows.reshape(s, c * r) + n * torch.arange(s, device=x.device)[:, None]).view(-1)
            pg, px = (m.reshape(s * n, p).index_select(0, flat).view(s * c, r, p) for m in (g, x))
        out.append(block_norms(pg, px).reshape(s, c) / omega_sq[:, None])
    vals = torch.cat(out, 1).cpu().numpy()
    std = vals.std(1, ddof=1) if draws > 1 else np.zeros(s)
    return np.stack([vals.mean(1), std, np.full(s, draws)], axis=1)


# elements of the r x r blocks formed at once: a few hundred KiB, cache-resident (a chunk of
# 4000 blocks of 50 x 50 at once is 80 MB per temporary, and memory-bound)
BLOCK_ELEMENTS = 2**16


def block_norms(pg: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """||sub_gradient(pg, px)||^2 per draw, (D,), a slice of draws at a time: each draw's block
    and its sum are computed exactly as for all draws at once (the same numbers)."""
    size = max(1, BLOCK_ELEMENTS // (pg.shape[1] ** 2))
    return torch.cat(
        [
            sub_gradient(pg[i : i + size], px[i : i + size]).square_().sum((-1, -2))
            for i in range(0, pg.shape[0], size)
        ]
    )


def haar_rows_of(gen, g, x, c: int, r: int):
    """P_r G and P_r X, (S*c, r, p), for c Haar draws per seed, without forming P_r.

    Same Gaussian Z (S*c, n, r) as sample_rows('haar'), drawn a slice at a time (the same
    stream); its sign-fixed Q (diag R > 0) is Z L^-T with L L^T = Z^T Z (Cholesky), so
    P_r M = Q^T M = L^-1 (Z^T M) (cholesky_rows): an r x r
    factorisation per draw instead of a Householder QR of an n x r matrix (the same numbers up
    to rounding while Z is well conditioned, cond(Z)^2 ~ ((1 + sqrt(r/n)) / (1 - sqrt(r/n)))^2:
    used for r <= n / 4, cond^2 <~ 9; a square Z (r = n) would lose ~1e-10)."""
    s, n, p = x.shape
    gx = torch.cat([g, x], 2).repeat_interleave(c, 0)  # one solve for both: (S*c, n, 2p)
    size = max(1, 4 * BLOCK_ELEMENTS // (n * r))  # draws per slice: Z stays cache-resident
    rows = []
    for i in range(0, s * c, size):
        z = gaussian(gen, (min(size, s * c - i), n, r), x.device)
        zt = z.transpose(1, 2)
        rows.append(cholesky_rows(zt, zt @ gx[i : i + len(z)]))
    both = torch.cat(rows)
    return both[..., :p], both[..., p:]


def objective(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x * (a @ x)).sum((-1, -2))


def submanifold_step(a, x, sampler: str, r: int, eta: float, gen) -> torch.Tensor:
    """One RSDM step: Y = exp(-eta grad_sub) on O(r), X <- P^T diag(Y, I) P X.

    Only the r gradient rows P G = -(P A) X are formed (O(n r p)); the retraction is an r x r
    matrix exponential."""
    s, n, p = x.shape
    rows = sample_rows(sampler, gen, s, n, r, x.device)
    px = rows_of(x, rows)
    y = torch.linalg.matrix_exp(-eta * sub_gradient(-(rows_of(a, rows) @ x), px))
    if rows.dim() == 2:  # permutation / fixed: only the r selected rows of X change
        return x.scatter(1, rows[..., None].expand(-1, -1, p), y @ px)
    eye = torch.eye(r, dtype=x.dtype, device=x.device)
    return x + rows.transpose(1, 2) @ ((y - eye) @ px)  # Haar: X + P_r^T (Y - I) P_r X


def run_descent(a, x0, sampler: str, r: int, steps: int, eta: float, gen) -> dict:
    """F(X_k) at every step, (S, steps + 1), and diagnostics at the last iterate: the ratio
    ||grad_sub||^2 / ||Omega||^2 for one more draw of P, and the loss of orthonormality."""
    x = x0.clone()
    values = [objective(a, x)]
    tick = runtime.Progress(steps, f"descent {sampler} r={r}", lines=3)
    for k in range(steps):
        x = submanifold_step(a, x, sampler, r, eta, gen)
        values.append(objective(a, x))
        tick(k)
    rows = sample_rows(sampler, gen, x.shape[0], x.shape[1], r, x.device)
    block = sub_gradient(-(rows_of(a, rows) @ x), rows_of(x, rows))
    final_ratio = (block**2).sum((-1, -2)) / (full_omega(a, x) ** 2).sum((-1, -2))
    eye = torch.eye(x.shape[2], dtype=x.dtype, device=x.device)
    ortho = (x.transpose(1, 2) @ x - eye).abs().amax((-1, -2))
    return {
        "f": torch.stack(values, 1).cpu().numpy(),
        "final_ratio": final_ratio.cpu().numpy(),
        "ortho_error": ortho.cpu().numpy(),
    }


def steps_for(params: dict, r: int) -> int:
    """Enough iterations for `efolds` e-folds of the gap at the predicted rate (capped)."""
    n, eta = params["n"], params["eta"]
    rate = predicted_rate(n, r, eta, params["lambda_hi"] - params["lambda_lo"])
    return int(min(params["max_steps"], math.ceil(params["efolds"] / rate)))


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One sampler: (a) the Monte Carlo ratio at a random and a near-optimal point for every
    (n, r); (b) descent runs from X0 for every r (and r = n, plain RGD, for `perm`)."""
    sampler = point["sampler"]
    gen = torch.Generator().manual_seed(int(seeds[0]) * 1009 + SAMPLERS.index(sampler))
    out: dict[str, np.ndarray] = {}
    for n in params["ratio_n"]:
        for where in ("rand", "near"):
            x = torch.as_tensor(data[f"ratio_X{where}_n{n}"], device=device)
            g = torch.as_tensor(data[f"ratio_G{where}_n{n}"], device=device)
            for r in params["ratio_r"]:
                if r > n:
                    continue
                draws = 1 if sampler == "fixed" else params["draws"][sampler]
                vals = ratio_draws(g, x, sampler, r, draws, gen, params["chunk"])
                out[f"ratio_{where}_n{n}_r{r}"] = vals
    a = torch.as_tensor(data["A"], device=device)
    x0 = torch.as_tensor(data["X0"], device=device)
    rs = list(params["conv_r"]) + ([params["n"]] if sampler == "perm" else [])
    for r in rs:
        # the fixed sampler gets as many steps as a random one with the same r
        res = run_descent(a, x0, sampler, r, steps_for(params, r), params["eta"], gen)
        for key, val in res.items():
            out[f"conv_{key}_r{r}"] = val
    return out


# ----------------------------------------------------------------------------- measure
def pooled_ratio(summary: np.ndarray) -> tuple[float, float]:
    """Mean over all seeds' draws and its standard error, from per-seed (mean, std, count)."""
    mean, std, count = summary[:, 0], summary[:, 1], summary[:, 2]
    total = count.sum()
    grand = float((mean * count).sum() / total)
    within = ((count - 1) * std**2).sum() + (count * (mean - grand) ** 2).sum()
    var = within / max(total - 1, 1)
    return grand, float(np.sqrt(var / total))


def log_linear_fit(gap: np.ndarray, lo: float, hi: float):
    """Fit log(gap_k) = a - rate * k over the iterations with lo <= gap <= hi.

    Returns (rate, R^2, number of points); rate and R^2 are None with fewer than 5 points."""
    k = np.flatnonzero((gap >= lo) & (gap <= hi))
    if len(k) < 5:
        return None, None, len(k)
    y = np.log(gap[k])
    slope, intercept = np.polyfit(k, y, 1)
    resid = y - (slope * k + intercept)
    r2 = 1.0 - (resid**2).sum() / ((y - y.mean()) ** 2).sum()
    return float(-slope), float(r2), len(k)


def relative_gap(f: np.ndarray, f_star: float) -> np.ndarray:
    """(F(X_k) - F*) / (F(X_0) - F*) per seed, floored at 0 against rounding below F*."""
    gap = np.maximum(f - f_star, 0.0)
    return gap / gap[:, :1]


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    f_star = optimal_value(params["p"], params["lambda_hi"])
    lo, hi = params["fit_window"]
    out = {}
    for pid, point in points.items():
        sampler, run = point["sampler"], runs[pid]
        ratios = {}
        for key, summary in run.items():
            if key.startswith("ratio_"):
                _, where, n_tag, r_tag = key.split("_")
                n, r = int(n_tag[1:]), int(r_tag[1:])
                mean, se = pooled_ratio(summary)
                ratios[f"{where}_n{n}_r{r}"] = {
                    "n": n,
                    "r": r,
                    "where": where,
                    "mean": mean,  # pooled over seeds (figure)
                    "se": se,
                    "seed_mean": summary[:, 0],  # per seed (verdict)
                    "seed_se": summary[:, 1] / np.sqrt(summary[:, 2]),
                    "theory": submanifold_fraction(n, r),
                }
        conv = {}
        for key in run:
            if key.startswith("conv_f_r"):
                r = int(key.removeprefix("conv_f_r"))
                gap = relative_gap(run[key], f_star)
                fits = [log_linear_fit(g, lo, hi) for g in gap]
                conv[f"r{r}"] = {
                    "r": r,
                    "rate": [f[0] for f in fits],
                    "r2": [f[1] for f in fits],
                    "final_gap": gap[:, -1],
                    "final_ratio": run[f"conv_final_ratio_r{r}"],
                    "ortho_error": run[f"conv_ortho_error_r{r}"],
                    "gap_curve": thin(gap, params["curve_points"]),
                    "steps": gap.shape[1] - 1,
                }
        out[sampler] = {"ratio": ratios, "conv": conv}
    return {"samplers": out, "f_star": f_star}


def thin(gap: np.ndarray, count: int) -> dict:
    """The gap curves at `count` log-spaced and `count` evenly spaced iterations (figure)."""
    last = gap.shape[1] - 1
    k = np.unique(
        np.concatenate(
            [np.geomspace(1, last + 1, count).astype(int) - 1, np.linspace(0, last, count)]
        )
        .round()
        .astype(int)
    )
    return {"k": k, "gap": gap[:, k]}


# ----------------------------------------------------------------------------- verdict
def loglog_slope(x, y) -> float:
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


def seed_values(values) -> np.ndarray:
    """Per-seed numbers with undefined (None) entries as NaN."""
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics: every max / min over the grid is taken within each seed."""
    samplers = metrics["samplers"]
    n, conv_r = params["n"], list(params["conv_r"])
    rel_err, z = [], []  # rows: one per configuration, columns: seeds
    for name in ("perm", "haar"):
        for row in samplers[name]["ratio"].values():
            mean = np.asarray(row["seed_mean"], dtype=float)
            if row["r"] < row["n"]:  # r = n: the ratio is 1 for every draw (standard error ~0)
                z.append(np.abs(mean - row["theory"]) / np.asarray(row["seed_se"], dtype=float))
            if row["r"] >= params["rel_err_min_r"]:
                rel_err.append(np.abs(mean / row["theory"] - 1))

    r2s, finals, slopes, ratios = [], [], {}, []
    for name in ("perm", "haar"):
        conv = samplers[name]["conv"]
        per_seed = np.stack([seed_values(conv[f"r{r}"]["rate"]) for r in conv_r])  # (R, S)
        for r in conv_r:
            r2s.append(seed_values(conv[f"r{r}"]["r2"]))
            finals.append(np.asarray(conv[f"r{r}"]["final_gap"], dtype=float))
        sizes = [r * (r - 1) for r in conv_r]
        # a seed without a fitted rate for every r counts as slope 0 (a failure)
        slopes[name] = [
            loglog_slope(sizes, col) if np.isfinite(col).all() else 0.0 for col in per_seed.T
        ]
        theory_rates = np.array([theory["rate"][f"r{r}"] for r in conv_r])[:, None]
        ratios.append(np.nan_to_num(per_seed / theory_rates, nan=0.0))  # undefined rate: 0
    ratios = np.concatenate(ratios)  # (2R, S)
    worst = ratios[np.argmax(np.abs(ratios - 1), axis=0), np.arange(ratios.shape[1])]
    rgd = np.nan_to_num(seed_values(samplers["perm"]["conv"][f"r{n}"]["rate"]), nan=0.0)
    fixed = samplers["fixed"]["conv"]
    fixed_gap = np.stack([np.asarray(fixed[f"r{r}"]["final_gap"], dtype=float) for r in conv_r])
    fixed_ratio = np.stack(
        [np.asarray(fixed[f"r{r}"]["final_ratio"]) / submanifold_fraction(n, r) for r in conv_r]
    )
    # a seed whose gap never entered the fit window counts as R^2 = -1 (a failure)
    r2s = np.nan_to_num(np.stack(r2s), nan=-1.0)
    return {
        "ratio_max_rel_err": np.max(rel_err, axis=0).tolist(),
        "ratio_max_abs_z": np.max(z, axis=0).tolist(),
        "conv_min_r2": r2s.min(0).tolist(),
        "conv_max_final_gap": np.max(finals, axis=0).tolist(),
        "rate_slope_perm": slopes["perm"],
        "rate_slope_haar": slopes["haar"],
        "rate_worst_ratio": worst.tolist(),
        "rgd_rate_ratio": (rgd / theory["rate"][f"r{n}"]).tolist(),
        "fixed_min_final_gap": fixed_gap.min(0).tolist(),
        "fixed_max_ratio_over_theory": fixed_ratio.max(0).tolist(),
        "theory_rate_slope": theory["rate_slope"],
    }
