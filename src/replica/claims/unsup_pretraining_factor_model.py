"""Unsupervised pretraining in a Gaussian factor model (Ge, Tang, Fan, Jin, ICLR 2024,
arXiv 2303.01566, "On the Provable Advantage of Unsupervised Pretraining").

Claim. MLE pretraining of a latent-variable model on m unlabeled points, then ERM on n labels,
has excess risk O~(sqrt(C_Phi/m) + sqrt(C_Psi/n)), against O~(sqrt(C_{Phi o Psi}/n)) for
supervised learning alone, when y depends on x only through the latent z and the model is
informative. The factor model is one of the paper's instances.

Setting (our reading of the paper's factor model). z ~ N(0, I_r), x = A z + sigma eps in R^d,
y = theta^T z + sigma_y xi; A is drawn once (entries N(0, factor_scale^2)), theta and u are unit
vectors. Pretraining = top-r PCA of the unlabeled covariance (the MLE of the loading subspace
for isotropic Gaussian noise); the head = OLS of y on the r features U_hat^T x. Baseline = OLS
of y on all d features. Ablation (non-informative label): y = u^T x + sigma_y xi with u
orthogonal to col(A), so the recovered factors carry no information about y.

Theory (ours; closed forms on the data distribution, never the fits).
  - Bayes risk R* = Var(y | x) = sigma_y^2 + theta^T (I + A^T A / sigma^2)^-1 theta.
  - Gaussian-design OLS on p features jointly Gaussian with y, residual variance s2:
    E[excess over s2] = s2 p / (n - p - 1) exactly. Baseline: s2 = R*, p = d. Population PCA
    spans col(A), through which E[y | x] acts, so with p = r the residual is R* as well.
  - Finite m (Anderson's asymptotic law of sample eigenvectors): the representation error,
    population least squares on the learned features minus R*, is c / m with
    c = sigma^4 (d - r) sum_i (v_i^T theta)^2 / (s_i^2 (s_i^2 + sigma^2)), (s_i, v_i) the
    singular values and right singular vectors of A. Pretraining + OLS at (n, m):
    E[risk] = (R* + c/m)(1 + r / (n - r - 1)).
  - The paper's bounds have exponent -1/2 in m and in n; the exact rates here are -1.

Experiment. All seeds batched in numpy (float64). The m unlabeled points enter PCA only through
their sample covariance, drawn exactly as Wishart(m, Cov x) / m by Bartlett's decomposition.
Every fit is scored by its exact population risk (no test-set noise). The two grid points
(arms) use the same random streams: the same x, PCA subspaces and label noise; only y differs.
"""

from __future__ import annotations

import numpy as np

# stream tags of the per-seed random generators (same in both arms: same samples)
UNLABELED, LABELED = 1, 2


# ----------------------------------------------------------------------------- data
def population(params: dict) -> dict[str, np.ndarray]:
    """The one data distribution: loadings A, label direction theta, orthogonal direction u."""
    d, r = params["d"], params["r"]
    rng = np.random.default_rng(params["data_seed"])
    loadings = params["factor_scale"] * rng.standard_normal((d, r))
    theta = rng.standard_normal(r)
    off_factor = rng.standard_normal(d)
    basis, _ = np.linalg.qr(loadings)
    off_factor -= basis @ (basis.T @ off_factor)  # orthogonal to col(A)
    return {
        "loadings": loadings,
        "theta": theta / np.linalg.norm(theta),
        "off_factor": off_factor / np.linalg.norm(off_factor),
    }


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """The population; samples are drawn inside train from per-seed streams."""
    return {**population(params), "seeds": np.asarray(seeds)}


def feature_covariance(loadings: np.ndarray, sigma: float) -> np.ndarray:
    return loadings @ loadings.T + sigma**2 * np.eye(len(loadings))


def label_moments(data: dict, params: dict, arm: str) -> dict:
    """Cov(x), Cov(x, y), Var(y) and the best linear predictor w* = Cov(x)^-1 Cov(x, y)."""
    loadings, sigma, sigma_y = np.asarray(data["loadings"]), params["sigma"], params["sigma_y"]
    cov = feature_covariance(loadings, sigma)
    if arm == "informative":
        theta = np.asarray(data["theta"])
        cross, var_y = loadings @ theta, theta @ theta + sigma_y**2
    else:  # y = u^T x + sigma_y xi
        u = np.asarray(data["off_factor"])
        cross, var_y = cov @ u, u @ cov @ u + sigma_y**2
    best = np.linalg.solve(cov, cross)
    # y given x is Gaussian and linear: Var(y | x) = Var(y) - Cov(y, x) Cov(x)^-1 Cov(x, y)
    return {"cov": cov, "cross": cross, "var_y": var_y, "best": best, "bayes": var_y - cross @ best}


# ----------------------------------------------------------------------------- theory
def bayes_risk(loadings, theta, sigma: float, sigma_y: float) -> float:
    """Var(y | x) = sigma_y^2 + theta^T Cov(z | x) theta, Cov(z | x) = (I + A^T A/sigma^2)^-1."""
    r = loadings.shape[1]
    post = np.linalg.inv(np.eye(r) + loadings.T @ loadings / sigma**2)
    return float(sigma_y**2 + theta @ post @ theta)


def ols_excess(resid_var, p: int, n):
    """Exact mean excess risk of OLS on p Gaussian features: resid_var p / (n - p - 1)."""
    return resid_var * p / (np.asarray(n, dtype=float) - p - 1)


def representation_constant(loadings, theta, sigma: float) -> float:
    """c of the representation error c / m (Anderson's asymptotics for top-r PCA)."""
    d, r = loadings.shape
    _, s, vt = np.linalg.svd(loadings, full_matrices=False)
    return float(sigma**4 * (d - r) * np.sum((vt @ theta) ** 2 / (s**2 * (s**2 + sigma**2))))


def pretrain_excess(bayes: float, constant: float, r: int, n, m):
    """(R* + c/m)(1 + r/(n - r - 1)) - R*: representation error plus the r-feature OLS excess."""
    resid = bayes + constant / np.asarray(m, dtype=float)
    return resid - bayes + ols_excess(resid, r, n)


def loglog_slope(x, y) -> np.ndarray:
    """Least-squares slope of log y against log x along the last axis (batched over seeds)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    lx = lx - lx.mean()
    return (ly - ly.mean(-1, keepdims=True)) @ lx / (lx @ lx)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    d, r, sigma, sigma_y = params["d"], params["r"], params["sigma"], params["sigma_y"]
    loadings, theta = np.asarray(data["loadings"]), np.asarray(data["theta"])
    n = np.asarray(params["n_grid"], dtype=float)
    m = np.asarray(params["m_grid"], dtype=float)
    m_pre, n_adv = params["m_pretrain"], params["advantage_n"]
    bayes = bayes_risk(loadings, theta, sigma, sigma_y)
    c = representation_constant(loadings, theta, sigma)
    pre = pretrain_excess(bayes, c, r, n, m_pre)
    # non-informative arm: the r features miss the signal u^T x entirely (variance sigma^2)
    lost = sigma**2
    ni_resid = sigma_y**2 + lost
    ni_pre = lost + ols_excess(ni_resid, r, n)
    fitted = m >= params["fit_min_m"]
    # identity: the population top-r principal components span col(A)
    eigvec = np.linalg.eigh(feature_covariance(loadings, sigma))[1][:, -r:]
    moments = label_moments(data, params, "informative")
    gram = eigvec.T @ moments["cov"] @ eigvec
    proj = eigvec.T @ moments["cross"]
    pca_resid = moments["var_y"] - proj @ np.linalg.solve(gram, proj)

    def log_advantage(ols, pretrain):
        return float(np.log(ols / pretrain))

    return {
        "n_grid": n,
        "m_grid": m,
        "bayes_risk": bayes,
        "representation_constant": c,
        "ols_excess": ols_excess(bayes, d, n),
        "pretrain_excess": pre,
        "representation_excess": c / m,
        "non_informative_bayes_risk": sigma_y**2,
        "non_informative_ols_excess": ols_excess(sigma_y**2, d, n),
        "non_informative_pretrain_excess": ni_pre,
        "advantage_log_ratio": log_advantage(
            ols_excess(bayes, d, n_adv), pretrain_excess(bayes, c, r, n_adv, m_pre)
        ),
        "non_informative_advantage_log_ratio": log_advantage(
            ols_excess(sigma_y**2, d, n_adv), lost + ols_excess(ni_resid, r, n_adv)
        ),
        "pretrain_n_exponent": float(loglog_slope(n, pre)),
        "m_exponent": float(loglog_slope(m[fitted], c / m[fitted])),
        "population_pca_residual_over_bayes": float(pca_resid / bayes),
    }


# ----------------------------------------------------------------------------- training
def seed_streams(params: dict, seeds, tag: int, size: int) -> list[np.random.Generator]:
    return [np.random.default_rng([params["data_seed"], s, tag, int(size)]) for s in seeds]


def wishart_sample_covariance(cov: np.ndarray, m: int, rngs) -> np.ndarray:
    """Sample covariance (1/m) sum x x^T of m points x ~ N(0, cov), one per stream (Bartlett).

    W = L T T^T L^T with cov = L L^T, T lower triangular, T_ii^2 ~ chi2(m - i), T_ij ~ N(0, 1)."""
    d = len(cov)
    chol = np.linalg.cholesky(cov)
    below = np.tril_indices(d, -1)
    factors = np.zeros((len(rngs), d, d))
    for k, rng in enumerate(rngs):
        factors[k][below] = rng.standard_normal(len(below[0]))
        factors[k][np.diag_indices(d)] = np.sqrt(rng.chisquare(m - np.arange(d)))
    lt = chol @ factors
    return lt @ lt.transpose(0, 2, 1) / m


def top_subspace(sample_cov: np.ndarray, r: int) -> np.ndarray:
    """Orthonormal top-r eigenvectors, (seeds, d, r): the pretraining (PCA = factor-model MLE)."""
    return np.linalg.eigh(sample_cov)[1][..., -r:]


def excess_risk(weights: np.ndarray, moments: dict) -> np.ndarray:
    """Exact population excess (w - w*)^T Cov(x) (w - w*) of linear predictors (seeds, d)."""
    gap = weights - moments["best"]
    return np.einsum("sd,de,se->s", gap, moments["cov"], gap)


def subspace_least_squares(basis: np.ndarray, moments: dict) -> np.ndarray:
    """Population least squares restricted to features basis^T x (n = infinity head)."""
    gram = basis.transpose(0, 2, 1) @ moments["cov"] @ basis
    coef = np.linalg.solve(gram, (basis.transpose(0, 2, 1) @ moments["cross"])[..., None])[..., 0]
    return np.einsum("sdr,sr->sd", basis, coef)


def least_squares(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS coefficients per seed by the normal equations: features (seeds, n, p), y (seeds, n)."""
    ft = features.transpose(0, 2, 1)
    return np.linalg.solve(ft @ features, (ft @ y[..., None]))[..., 0]


def labeled_sample(data: dict, params: dict, arm: str, rngs, n: int):
    """n labeled points per seed: x (seeds, n, d), y (seeds, n)."""
    loadings, sigma, sigma_y = np.asarray(data["loadings"]), params["sigma"], params["sigma_y"]
    d, r = loadings.shape
    z = np.stack([g.standard_normal((n, r)) for g in rngs])
    noise = np.stack([g.standard_normal((n, d)) for g in rngs])
    xi = np.stack([g.standard_normal(n) for g in rngs])
    x = z @ loadings.T + sigma * noise
    signal = z @ np.asarray(data["theta"]) if arm == "informative" else x @ data["off_factor"]
    return x, signal + sigma_y * xi


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """The m sweep (PCA on m unlabeled points, exact population head) and the n sweep (PCA at
    m_pretrain, then OLS on n labels, against OLS on all d features). numpy on the CPU."""
    arm, r = point["arm"], params["r"]
    moments = label_moments(data, params, arm)
    subspaces = {}
    rep_excess = []
    for m in sorted(set(params["m_grid"]) | {params["m_pretrain"]}):
        cov_hat = wishart_sample_covariance(
            moments["cov"], m, seed_streams(params, seeds, UNLABELED, m)
        )
        subspaces[m] = top_subspace(cov_hat, r)
        if m in params["m_grid"]:
            rep_excess.append(excess_risk(subspace_least_squares(subspaces[m], moments), moments))
    basis = subspaces[params["m_pretrain"]]
    ols, pre = [], []
    for n in params["n_grid"]:
        x, y = labeled_sample(data, params, arm, seed_streams(params, seeds, LABELED, n), n)
        ols.append(excess_risk(least_squares(x, y), moments))
        head = least_squares(x @ basis, y)
        pre.append(excess_risk(np.einsum("sdr,sr->sd", basis, head), moments))
    return {
        "representation_excess": np.stack(rep_excess, 1),  # (seeds, m grid)
        "ols_excess": np.stack(ols, 1),  # (seeds, n grid)
        "pretrain_excess": np.stack(pre, 1),
        "bayes_risk": np.float64(moments["bayes"]),
    }


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    arms = {}
    for pid, point in points.items():
        run = runs[pid]
        arms[point["arm"]] = {
            key: np.asarray(run[key]).tolist()
            for key in ("representation_excess", "ols_excess", "pretrain_excess")
        } | {"bayes_risk": float(run["bayes_risk"])}
    return {"n_grid": params["n_grid"], "m_grid": params["m_grid"], **arms}


# ----------------------------------------------------------------------------- verdict
BOUND_EXPONENT = -0.5  # the paper's sqrt(C/m), sqrt(C/n) rates


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    n = np.asarray(metrics["n_grid"], dtype=float)
    m = np.asarray(metrics["m_grid"], dtype=float)
    info, blind = metrics["informative"], metrics["non_informative"]
    at_adv = int(np.flatnonzero(n == params["advantage_n"])[0])
    ols = np.asarray(info["ols_excess"])
    pre = np.asarray(info["pretrain_excess"])
    rep = np.asarray(info["representation_excess"])
    bayes = float(theory["bayes_risk"])

    # baseline total risk against sigma_res^2 (1 + d/(n - d - 1)), where n >= d + margin
    wide = n >= params["d"] + params["ols_check_margin"]
    ols_ratio = (bayes + ols[:, wide]) / (bayes + np.asarray(theory["ols_excess"])[wide])
    pre_ratio = pre / np.asarray(theory["pretrain_excess"])
    fitted = m >= params["fit_min_m"]
    m_slope = loglog_slope(m[fitted], rep[:, fitted])
    n_slope = loglog_slope(n, pre)
    m_const = np.exp(np.log(rep[:, fitted] * m[fitted] / theory["representation_constant"]).mean(1))

    def per_seed(values):
        return [float(v) for v in values]

    def log_advantage(arm):
        arm_ols, arm_pre = np.asarray(arm["ols_excess"]), np.asarray(arm["pretrain_excess"])
        return per_seed(np.log(arm_ols[:, at_adv] / arm_pre[:, at_adv]))

    return {
        "advantage_log_ratio": log_advantage(info),
        "advantage_log_ratio_theory": float(theory["advantage_log_ratio"]),
        "ols_risk_over_exact": per_seed(ols_ratio.mean(1)),
        "pretrain_excess_over_exact": per_seed(pre_ratio.mean(1)),
        "pretrain_n_exponent": per_seed(n_slope),
        "pretrain_n_exponent_theory": float(theory["pretrain_n_exponent"]),
        "m_exponent": per_seed(m_slope),
        "m_exponent_theory": float(theory["m_exponent"]),
        "m_constant_over_theory": per_seed(m_const),
        # ablation
        "non_informative_advantage_log_ratio": log_advantage(blind),
        "non_informative_advantage_log_ratio_theory": float(
            theory["non_informative_advantage_log_ratio"]
        ),
        # preconditions: the paper's bound rates and the PCA identity
        "m_exponent_over_bound_rate": per_seed(m_slope / BOUND_EXPONENT),
        "n_exponent_over_bound_rate": per_seed(n_slope / BOUND_EXPONENT),
        "population_pca_residual_over_bayes": float(theory["population_pca_residual_over_bayes"]),
    }
