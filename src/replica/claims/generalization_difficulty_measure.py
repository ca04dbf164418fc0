"""Inductive bias complexity scales exponentially in the intrinsic dimension and polynomially in
the resolution (Boopathy, Liu, Hwang, Ge, Mohammedsaleh & Fiete, "Model-agnostic Measure of
Generalization Difficulty", ICML 2023, arXiv 2305.01034).

Claim. The information needed to pick a well-generalising hypothesis among those that fit the
training data,
    I = -log2 P(test error <= eps | the hypothesis fits the training data),
with hypotheses the band-limited functions (Laplace-Beltrami eigenfunctions up to a maximum
frequency M) on the data manifold, grows like M^m: exponentially in the intrinsic dimension m,
polynomially (degree about m) in the resolution M.

Setting. The unit m-sphere S^m in R^(m+1), m = 1..4; the target f*(x) = sqrt(m + 1) x_0 (unit L2
norm); n noiseless training points uniform on the sphere; a shared uniform test sample. The
eigenfunctions of degree d are the spherical harmonics H_d (frequency sqrt(d (d + m - 1))), so
the hypothesis space with degree cutoff K is V_K = H_0 + ... + H_K, of dimension
    E(m, K) = C(m + K, m) + C(m + K - 1, m).
Seeds change the training points and the hypotheses' initialisations.

Theory. (i) The paper's closed form (transcribed from the authors' task_difficulty.py):
    I_paper = (2 E - n) [log2 b - log2 eps + log2 K + log2 W],
    ln W = ln(m / 6) / 2 + (ln 2 + (m + 1) ln(pi) / 2 - lgamma((m + 1) / 2)) / m - ln(n) / m
(scalar output, radius 1, output bound b). (ii) The exact value of the definition for our prior
(coefficients in an L2-orthonormal basis of V_K, i.i.d. N(0, sigma^2), sigma^2 = b^2 / E): given
f(X) = y the coefficients are N(theta_mn, sigma^2 P_null), rank E - n, and by Parseval the test
MSE is sigma^2 ncx2(E - n, lambda), lambda = ||f* - f_mn||^2 / sigma^2 = (1 - y^T Z^-1 y) / sigma^2
with the projection kernel Z_K(x . y) = sum_{d <= K} N(m, d) P_d(x . y) (addition theorem).

Experiment. Per (m, K): an L2-orthonormal feature map of V_K (Nystrom on the projection kernel
at random anchors: exact once the anchors span V_K). An ensemble of hypotheses w ~ N(0, sigma^2 I)
per seed, each trained by full-batch gradient descent on the training squared error until it
interpolates (GD from w_0 lands on w_0's projection onto the interpolating set: a draw from the
prior conditioned on fitting the data). Their test errors on the test sample give the free
dimension k = (mean error - error of the ensemble mean) / sigma^2 and the non-centrality, and
I_trained = -log2 F_ncx2(eps / sigma^2; k, lambda).

Measure. Fitted exponents: per m, the degree p_m = slope of ln I against ln M over the degree
grid (M = sqrt(K (K + m - 1))); the degree per dimension = slope of p_m against m; the
exponential rate = slope of log2 I against m at the largest K. The same fits on the paper's
closed form give the theory values.

Control. The same trained arm in the additive space sum_i g_i(x_i), deg g_i <= K (interactions
between intrinsic dimensions removed): its dimension grows linearly in m, so its degree per
dimension should vanish.
"""

from __future__ import annotations

import numpy as np
from scipy.special import comb, gammaln, logsumexp

ARMS = ("full", "additive")
RANK_TOL = 1e-9  # relative eigenvalue floor that separates the span from numerical zero


# ----------------------------------------------------------------------------- harmonics
def harmonic_count(m: int, d: int) -> int:
    """dim H_d on S^m: C(m + d, m) - C(m + d - 2, m)."""
    return int(comb(m + d, m, exact=True) - (comb(m + d - 2, m, exact=True) if d >= 2 else 0))


def band_limited_count(m: int, k: int) -> int:
    """dim V_K = sum_{d <= K} dim H_d = C(m + K, m) + C(m + K - 1, m) (the paper's E)."""
    return int(comb(m + k, m, exact=True) + comb(m + k - 1, m, exact=True))


def frequency(m: int, k) -> np.ndarray:
    """Laplace-Beltrami frequency of degree k on S^m: sqrt(k (k + m - 1))."""
    k = np.asarray(k, dtype=float)
    return np.sqrt(k * (k + m - 1))


def legendre(m: int, degree: int, t: np.ndarray) -> np.ndarray:
    """Legendre polynomials of dimension q = m + 1, P_d(1) = 1, d = 0..degree: (degree+1, *t).
    P_{d+1} = ((2 d + q - 2) t P_d - d P_{d-1}) / (d + q - 2); Chebyshev T_d for m = 1."""
    q = m + 1
    t = np.asarray(t, dtype=float)
    out = [np.ones_like(t), t]
    for d in range(1, degree):
        out.append(((2 * d + q - 2) * t * out[d] - d * out[d - 1]) / (d + q - 2))
    return np.stack(out[: degree + 1])


def projection_kernel(m: int, k: int, t: np.ndarray) -> np.ndarray:
    """Reproducing kernel of V_K in L2(uniform probability on S^m), as a function of x . y."""
    weights = np.array([harmonic_count(m, d) for d in range(k + 1)], dtype=float)
    return np.tensordot(weights, legendre(m, k, t), axes=1)


def sphere(rng: np.random.Generator, m: int, count: int) -> np.ndarray:
    x = rng.standard_normal((count, m + 1))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def target(x: np.ndarray) -> np.ndarray:
    """f*(x) = sqrt(m + 1) x_0: degree 1, unit L2 norm on S^m."""
    return np.sqrt(x.shape[-1]) * x[..., 0]


# ----------------------------------------------------------------------------- data
def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per m: each seed's training points, the shared test sample, and per (m, K) the anchors
    of the Nystrom feature map (E + extra points, so that they span V_K)."""
    base, n = params["data_seed"], params["n_train"]
    data = {}
    for m in params["dims"]:
        data[f"x_train_m{m}"] = np.stack(
            [sphere(np.random.default_rng([base, seed, m]), m, n) for seed in seeds]
        )
        data[f"x_test_m{m}"] = sphere(np.random.default_rng([base, m]), m, params["n_test"])
        for k in params["degrees"]:
            count = band_limited_count(m, k) + params["extra_anchors"]
            data[f"anchors_m{m}_k{k}"] = sphere(np.random.default_rng([base, m, k]), m, count)
    return data


# ----------------------------------------------------------------------------- theory
def paper_bits(m: int, k, n: int, eps: float, bound: float) -> np.ndarray:
    """The paper's closed form (authors' difficulty(), D = prod_d = 1, R = 1, M at degree k)."""
    m_freq = frequency(m, k)
    k_real = (np.sqrt((m - 1) ** 2 + 4 * m_freq**2) - (m - 1)) / 2  # the paper's K(m, M)
    count = comb(m + k_real, m) + comb(m + k_real - 1, m)
    log_w = (
        0.5 * np.log(m / 6)
        + (np.log(2) + (m + 1) / 2 * np.log(np.pi) - gammaln((m + 1) / 2)) / m
        - np.log(n) / m
    )
    log_ratio = np.log2(bound) - np.log2(eps) + np.log2(k_real) + log_w / np.log(2)
    return (2 * count - n) * log_ratio


def log_lower_gamma(a: np.ndarray, z: float) -> np.ndarray:
    """ln P(a, z), the regularised lower incomplete gamma, by its series
    P = z^a e^-z / Gamma(a + 1) sum_i z^i / ((a + 1) ... (a + i)), stable deep in the tail."""
    a = np.asarray(a, dtype=float)[..., None]
    i = np.arange(1, int(4 * z) + 60)  # term ratio z / (a + i) < 1/4 beyond 4 z: converged
    log_terms = np.concatenate(
        [np.zeros(a.shape), np.cumsum(np.log(z) - np.log(a + i), axis=-1)], axis=-1
    )
    return (a[..., 0] * np.log(z) - z - gammaln(a[..., 0] + 1)) + logsumexp(log_terms, axis=-1)


def log_ncx2_cdf(x: float, df: float, nc: float) -> float:
    """ln F(x) of the non-central chi-square: a Poisson(nc / 2) mixture of chi2(df + 2 j)."""
    half = nc / 2
    j = np.arange(int(half + 20 * np.sqrt(half + 1) + 100))
    log_weights = (
        -half + j * np.log(half) - gammaln(j + 1) if half > 0 else np.where(j == 0, 0, -np.inf)
    )
    return float(logsumexp(log_weights + log_lower_gamma(df / 2 + j, x / 2)))


def bits(eps_over_sigma2: float, df: float, nc: float) -> float:
    """-log2 P(sigma^2 ncx2(df, nc) <= eps)."""
    return -log_ncx2_cdf(eps_over_sigma2, df, nc) / np.log(2)


def exact_bits(x_train: np.ndarray, m: int, k: int, params: dict) -> np.ndarray:
    """The definition's exact value per seed: df = E - n, nc = (1 - y^T Z^-1 y) / sigma^2."""
    count = band_limited_count(m, k)
    sigma2 = params["prior_rms"] ** 2 / count
    out = []
    for x in x_train:
        gram = projection_kernel(m, k, x @ x.T)
        y = target(x)
        residual_norm = 1.0 - y @ np.linalg.solve(gram, y)  # ||f* - f_mn||^2 (Parseval)
        df = count - len(y)
        out.append(bits(params["eps"] / sigma2, df, max(residual_norm, 0.0) / sigma2))
    return np.asarray(out)


def slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y against x along the last axis."""
    xc = x - x.mean(-1, keepdims=True)
    return (xc * (y - y.mean(-1, keepdims=True))).sum(-1) / (xc**2).sum(-1)


def scaling_exponents(values: np.ndarray, dims, degrees) -> tuple[np.ndarray, np.ndarray]:
    """From I (..., dims, degrees): the degree per dimension (slope over m of the per-m slopes
    of ln I against ln M) and the exponential rate (slope of log2 I against m at the top K)."""
    dims = np.asarray(dims, dtype=float)
    log_m = np.log(np.stack([frequency(int(m), degrees) for m in dims]))  # (dims, degrees)
    degree = slope(log_m, np.log(values))  # (..., dims)
    rate = slope(dims, np.log2(values[..., -1]))
    return slope(dims, degree), rate


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    dims, degrees, n = params["dims"], params["degrees"], params["n_train"]
    paper = np.array(
        [[paper_bits(m, k, n, params["eps"], params["prior_rms"]) for k in degrees] for m in dims]
    )
    exact = np.stack(
        [
            np.stack([exact_bits(data[f"x_train_m{m}"], m, k, params) for k in degrees], -1)
            for m in dims
        ],
        axis=1,
    )  # (seeds, dims, degrees)
    counts = np.array([[band_limited_count(m, k) for k in degrees] for m in dims])
    per_dim, rate = scaling_exponents(paper, dims, degrees)
    per_dim_exact, rate_exact = scaling_exponents(exact, dims, degrees)
    return {
        "paper_bits": paper,
        "exact_bits": exact,
        "counts": counts,
        "frequencies": np.stack([frequency(m, degrees) for m in dims]),
        "degree_per_dimension_paper": float(per_dim),
        "exponential_rate_paper": float(rate),
        "degree_per_dimension_exact": per_dim_exact,
        "exponential_rate_exact": rate_exact,
    }


# ----------------------------------------------------------------------------- hypothesis spaces
def whiten(gram: np.ndarray) -> tuple[np.ndarray, int]:
    """Map raw features with this Gram matrix to orthonormal ones: V_r diag(d_r)^-1/2 over the
    eigenvalues above RANK_TOL times the largest, and the rank r."""
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > RANK_TOL * vals[-1]
    return vecs[:, keep] / np.sqrt(vals[keep]), int(keep.sum())


def full_features(m: int, k: int, anchors: np.ndarray):
    """Nystrom map of the projection kernel: phi(x) . phi(y) = Z_K(x . y) exactly when the
    anchors span V_K, hence orthonormal coordinates of V_K in L2(S^m). Returns (map, rank)."""
    to_coords, rank = whiten(projection_kernel(m, k, anchors @ anchors.T))
    return (lambda x: projection_kernel(m, k, x @ anchors.T) @ to_coords), rank


def additive_gram(m: int, d: int) -> np.ndarray:
    """L2 Gram of P_d(x_0), ..., P_d(x_m): E[P_d(x.u) P_d(x.v)] = P_d(u.v) / N(m, d)."""
    p0 = legendre(m, d, np.zeros(1))[d, 0]
    return ((1 - p0) * np.eye(m + 1) + p0) / harmonic_count(m, d)


def additive_features(m: int, k: int):
    """Orthonormal coordinates of the additive space span{1, P_d(x_i): d <= K, i <= m}
    (different degrees are orthogonal; within a degree the closed-form Gram is whitened)."""
    blocks = [whiten(additive_gram(m, d)) for d in range(1, k + 1)]
    rank = 1 + sum(r for _, r in blocks)

    def features(x):
        p = legendre(m, k, x)  # (K + 1, ..., m + 1)
        parts = [np.ones(x.shape[:-1] + (1,))]
        parts += [p[d] @ to_coords for d, (to_coords, _) in enumerate(blocks, start=1)]
        return np.concatenate(parts, axis=-1)

    return features, rank


def additive_count(m: int, k: int) -> int:
    """Closed-form dimension of the additive space (eigenvalues 1 - P_d(0), m-fold, and
    1 + m P_d(0) of the per-degree Gram)."""
    count = 1
    for d in range(1, k + 1):
        p0 = legendre(m, d, np.zeros(1))[d, 0]
        count += m * int(not np.isclose(p0, 1)) + int(not np.isclose(1 + m * p0, 0))
    return count


# ----------------------------------------------------------------------------- training
def gd_steps_needed(start_norm, y_norm, contraction, tolerance: float, max_steps: int):
    """Steps after which contraction^t ||residual_0|| < tolerance ||y||, capped at max_steps."""
    need = np.log(tolerance * y_norm / start_norm) / np.log(contraction)
    return np.clip(np.ceil(need), 0, max_steps).astype(int)


def train_ensemble(phi_train, y, w0, max_steps: int, tolerance: float = 1e-9):
    """Full-batch GD on 1/2 ||Phi w - y||^2 per hypothesis, batched over seeds and hypotheses:
    phi_train (S, n, r), y (S, n), w0 (S, H, r), with the step 2 / (d_max + d_min) of each seed's
    Gram matrix G = Phi Phi^T = V diag(d) V^T (the fastest fixed step), for as many steps t as
    bring every relative training residual below `tolerance` (at most max_steps).

    Every update -lr (Phi w - y) Phi lies in the row space of Phi, so w_t = w_0 + a_t Phi, the
    residual obeys rho_{s+1} = (I - lr G) rho_s, and the t steps sum in closed form:
        rho_t = V (1 - lr d)^t V^T rho_0,   a_t = -V [(1 - (1 - lr d)^t) / d] V^T rho_0
    (the same iterates as the loop, tested; ill-conditioned seeds at m = 1 need ~10^5 steps).
    Returns w_t, each seed's largest relative residual and its step count."""
    d, vecs = np.linalg.eigh(phi_train @ np.swapaxes(phi_train, -1, -2))
    lr = 2 / (d[:, -1] + d[:, 0])
    contraction = (d[:, -1] - d[:, 0]) / (d[:, -1] + d[:, 0])  # max_i |1 - lr d_i|
    start = w0 @ np.swapaxes(phi_train, -1, -2) - y[:, None, :]  # residual at w_0: (S, H, n)
    y_norm = np.linalg.norm(y, axis=-1)
    steps = gd_steps_needed(
        np.linalg.norm(start, axis=-1).max(-1), y_norm, contraction, tolerance, max_steps
    )
    decay = (1 - lr[:, None] * d) ** steps[:, None]  # (S, n)
    modes = start @ vecs  # residual in each seed's eigenbasis
    coef = -(modes * ((1 - decay) / d)[:, None, :]) @ np.swapaxes(vecs, -1, -2)
    residual = (modes * decay[:, None, :]) @ np.swapaxes(vecs, -1, -2)
    relative = (np.linalg.norm(residual, axis=-1) / y_norm[:, None]).max(axis=-1)
    return w0 + coef @ phi_train, relative, steps


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One arm: for every (m, K), an ensemble of hypotheses per seed trained to interpolate;
    their test errors on the shared test sample (numpy, float64)."""
    arm = point["arm"]
    dims, degrees, h = params["dims"], params["degrees"], params["hypotheses"]
    errors, ensemble_error, residual, steps, rank = [], [], [], [], []  # lists over (m, K)
    for m in dims:
        x_train, x_test = data[f"x_train_m{m}"], data[f"x_test_m{m}"]
        y_train, y_test = target(x_train), target(x_test)
        for k in degrees:
            if arm == "full":
                features, r = full_features(m, k, data[f"anchors_m{m}_k{k}"])
            else:
                features, r = additive_features(m, k)
            sigma = params["prior_rms"] / np.sqrt(r)  # prior variance b^2 / dim
            w0 = np.stack(
                [
                    sigma
                    * np.random.default_rng(
                        [params["data_seed"], s, m, k, ARMS.index(arm)]
                    ).standard_normal((h, r))
                    for s in seeds
                ]
            )
            w, res, n_steps = train_ensemble(features(x_train), y_train, w0, params["max_gd_steps"])
            predictions = w @ features(x_test).T  # (S, H, n_test)
            errors.append(((predictions - y_test) ** 2).mean(-1))
            ensemble_error.append(((predictions.mean(1) - y_test) ** 2).mean(-1))
            residual.append(res)
            steps.append(n_steps)
            rank.append(r)

    def grid(rows):  # list over (m, K) of (S, ...) -> (S, dims, degrees, ...)
        x = np.stack(rows, axis=1)
        return x.reshape(x.shape[0], len(dims), len(degrees), *x.shape[2:])

    return {
        "errors": grid(errors),  # (S, dims, degrees, H)
        "ensemble_error": grid(ensemble_error),  # (S, dims, degrees)
        "residual": grid(residual),
        "gd_steps": grid(steps),
        "rank": np.asarray(rank).reshape(len(dims), len(degrees)),
    }


# ----------------------------------------------------------------------------- measure
def measured_bits(errors, ensemble_error, rank, params: dict):
    """From test errors (S, dims, degrees, H): free dimension k, non-centrality and I."""
    h = errors.shape[-1]
    sigma2 = params["prior_rms"] ** 2 / rank  # (dims, degrees)
    spread = errors.mean(-1) - ensemble_error  # E||w - w_bar||^2 ~ (1 - 1/H) sigma^2 k
    free = spread / sigma2 * h / (h - 1)
    nc = np.maximum(ensemble_error / sigma2 - free / h, 0.0)  # the ensemble mean's own spread
    out = np.empty(free.shape)
    for idx in np.ndindex(free.shape):
        out[idx] = bits(params["eps"] / sigma2[idx[1:]], free[idx], nc[idx])
    return free, nc, out


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    out = {"dims": list(params["dims"]), "degrees": list(params["degrees"]), "arms": {}}
    for pid, point in points.items():
        run = runs[pid]
        free, nc, values = measured_bits(run["errors"], run["ensemble_error"], run["rank"], params)
        out["arms"][point["arm"]] = {
            "free_dimension": free,
            "noncentrality": nc,
            "bits": values,
            "rank": run["rank"],
            "residual": run["residual"],
            "gd_steps": run["gd_steps"],
        }
    return out


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    dims, degrees, n = metrics["dims"], metrics["degrees"], params["n_train"]
    full, additive = metrics["arms"]["full"], metrics["arms"]["additive"]
    measured = np.asarray(full["bits"])  # (S, dims, degrees)
    paper = np.asarray(theory["paper_bits"])
    counts = np.asarray(theory["counts"])
    per_dim, rate = scaling_exponents(measured, dims, degrees)
    per_dim_add, _ = scaling_exponents(np.asarray(additive["bits"]), dims, degrees)
    ratio = paper / measured
    add_counts = np.array([[additive_count(m, k) for k in degrees] for m in dims])
    residual = np.maximum(np.asarray(full["residual"]), np.asarray(additive["residual"]))
    exact = np.asarray(theory["exact_bits"])
    return {
        "degree_per_dimension": per_dim.tolist(),
        "degree_per_dimension_paper": theory["degree_per_dimension_paper"],
        "degree_per_dimension_exact": list(theory["degree_per_dimension_exact"]),
        "exponential_rate": rate.tolist(),
        "exponential_rate_paper": theory["exponential_rate_paper"],
        "exponential_rate_exact": list(theory["exponential_rate_exact"]),
        "free_dimension_ratio": (
            np.asarray(full["free_dimension"]).sum((1, 2)) / (counts - n).sum()
        ).tolist(),
        "paper_bound_min_ratio": ratio.min((1, 2)).tolist(),
        "paper_looseness": np.exp(np.log(ratio).mean((1, 2))).tolist(),
        "degree_per_dimension_additive": per_dim_add.tolist(),
        "basis_rank_error": float(np.abs(np.asarray(full["rank"]) - counts).max()),
        "additive_rank_error": float(np.abs(np.asarray(additive["rank"]) - add_counts).max()),
        "training_residual": residual.max((1, 2)).tolist(),
        "exact_bits_deviation": np.abs(measured.sum((1, 2)) / exact.sum((1, 2)) - 1).tolist(),
    }
