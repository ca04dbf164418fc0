"""Random-feature attention against a random-feature MLP (Fu, Guo, Bai & Mei, "What can a Single
Attention Layer Learn? A Study Through the Random Features Lens", NeurIPS 2023, arXiv 2307.11353).

Claim. A multi-head attention layer whose query-key matrices W_m are random and frozen and whose
value vectors v_m are trained (random-feature attention, RFA),
    f(X) = (1 / sqrt M) sum_m (1/N) sum_i relu(<x~_0, W_m x~_i>) <v_m, x~_i>,
learns targets that are permutation invariant in the keys, (1/N) sum_i F(x_0, x_i), from fewer
samples than a two-layer random-feature network (RF-MLP) on the concatenated sequence with the
same number of trained parameters; and W_m drawn with a non-zero mean (biased RFA) learns
functions of the correlations <x_0, x_i> from fewer samples than zero-mean RFA.

Setting. A query x_0 and N keys x_1..x_N, i.i.d. uniform on the sphere S^{d-1}; tokens augmented
by a constant, x~ = (x, 1) / sqrt 2 (unit norm), so that F of every parity is expressible.
Correlations t_i = sqrt(d) <x_0, x_i> (unit variance). Noise-free targets, each standardised by
its closed-form population mean and variance:
    linear     (1/N) sum_i t_i          quadratic  (1/N) sum_i t_i^2
    cos        (1/N) sum_i cos(t_i)     key_order  t_1 (not permutation invariant: the ablation)
Seeds change the data and the random features.

Models (all fitted by ridge regression on their features, ridge = ridge_factor x trace(K)):
    RFA         W_m = G_m, G_m standard normal (e x e, e = d + 1): pre-activations of unit variance
    biased RFA  W_m = G_m + 2 mu sqrt(d) P, P the projection on the token block, so the
                pre-activation has mean mu t_i (the same G_m as RFA: only the mean differs)
    RF-MLP      relu(<w_k, z>) / sqrt(M e), k = 1..M e, w_k standard normal, z = the normalised
                concatenation (x~_0, ..., x~_N) / sqrt(N + 1): M e trained weights, as RFA.

Theory (from the data distribution, never from a fit).
  * <x_0, x_i>^2 ~ Beta(1/2, (d - 1)/2) and the t_i are i.i.d. across keys (given x_0 each is a
    uniform projection), so E t^{2k} = d^k (2k - 1)!! / (d (d + 2) ... (d + 2k - 2)); cosine
    moments by Gauss-Jacobi quadrature of the density (1 - s^2)^{(d-3)/2}. These standardise the
    targets.
  * The best permutation-invariant predictor of t_1 is the key average (the data are exchangeable),
    whose error is (1 - 1/N) Var(t_1): a floor for every RFA on the key-order target.
  * Infinite-head kernels (the limits the finite features approximate):
        RFA     K(X, X') = (1 / (2 N^2)) sum_ij kappa1(rho_00' rho_ij') rho_ij',
                rho_ij' = <x~_i, x~'_j>, kappa1 the arc-cosine kernel of degree 1;
        biased  the same with kappa1(c) / 2 replaced by E relu(mu t_i + g) relu(mu t'_j + g'),
                (g, g') unit normals of correlation rho_00' rho_ij' (1-D Gauss-Legendre quadrature);
        RF-MLP  kappa1(<z, z'>) / 2.
  The paper's excess-risk bounds are upper bounds whose constants we could not transcribe: they
  are not checked; the claim is tested as an ordering of test errors.

Measure. Test MSE of each model and target (standardised, so the null predictor scores 1) at each
training size of a nested learning curve; per seed, the ratio RFA / RF-MLP at the largest size and
biased / zero-mean RFA at bias_check_n.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, roots_jacobi

from replica import runtime
from replica.blocks.kernel_ridge import arccos1, ridge_predict

TARGETS = ("linear", "quadratic", "cos", "key_order")
ARMS = ("rfa", "rfa_biased", "rfmlp")
JACOBI_NODES = 64  # Gauss-Jacobi nodes for the cosine moments: exact far past float precision
FEATURE_BLOCK = 512  # sequences featurised at once
UPPER_TAIL = 9.0  # the ReLU-moment quadrature integrates a unit normal up to here (tail < 1e-18)


# ----------------------------------------------------------------------------- data
def sphere(rng: np.random.Generator, shape: tuple, dim: int) -> np.ndarray:
    x = rng.standard_normal((*shape, dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def augment(x: np.ndarray) -> np.ndarray:
    """Tokens x~ = (x, 1) / sqrt 2: unit norm, with a constant coordinate."""
    ones = np.ones((*x.shape[:-1], 1))
    return np.concatenate([x, ones], axis=-1) / np.sqrt(2)


def correlations(x: np.ndarray) -> np.ndarray:
    """t_i = sqrt(d) <x_0, x_i> for sequences x (..., N + 1, d): (..., N)."""
    dim = x.shape[-1]
    return np.sqrt(dim) * np.einsum("...d,...id->...i", x[..., 0, :], x[..., 1:, :])


def raw_targets(t: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "linear": t.mean(-1),
        "quadratic": (t**2).mean(-1),
        "cos": np.cos(t).mean(-1),
        "key_order": t[..., 0],
    }


def standardised_targets(x: np.ndarray) -> np.ndarray:
    """Targets (..., len(TARGETS)), each centred and scaled by its population moments."""
    dim, keys = x.shape[-1], x.shape[-2] - 1
    raw = raw_targets(correlations(x))
    moments = target_moments(dim, keys)
    return np.stack([(raw[k] - moments[k][0]) / np.sqrt(moments[k][1]) for k in TARGETS], axis=-1)


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: n_max training sequences followed by n_test test sequences, and their targets."""
    n_total = max(params["sample_sizes"]) + params["n_test"]
    shape = (n_total, params["keys"] + 1)
    x = np.stack(
        [
            sphere(np.random.default_rng([params["data_seed"], s]), shape, params["dim"])
            for s in seeds
        ]
    )
    return {"x": x, "y": standardised_targets(x), "seeds": np.asarray(seeds)}


# ----------------------------------------------------------------------------- theory
def even_moment(dim: int, k: int) -> float:
    """E t^{2k} for t = sqrt(d) <x_0, x_i>: d^k (2k - 1)!! / prod_{j<k} (d + 2j)."""
    value = 1.0
    for j in range(k):
        value *= dim * (2 * j + 1) / (dim + 2 * j)
    return value


def correlation_expectation(fn, dim: int) -> float:
    """E fn(t), t = sqrt(d) s with s = <x_0, x_i> of density prop. to (1 - s^2)^{(d-3)/2}."""
    a = (dim - 3) / 2
    nodes, weights = roots_jacobi(JACOBI_NODES, a, a)
    return float(np.sum(weights * fn(np.sqrt(dim) * nodes)) / np.sum(weights))


def target_moments(dim: int, keys: int) -> dict[str, tuple[float, float]]:
    """Population (mean, variance) of each raw target; the t_i are i.i.d. across keys."""
    mean_cos = correlation_expectation(np.cos, dim)
    mean_cos2 = correlation_expectation(lambda t: np.cos(t) ** 2, dim)
    return {
        "linear": (0.0, 1.0 / keys),
        "quadratic": (1.0, (even_moment(dim, 2) - 1.0) / keys),
        "cos": (mean_cos, (mean_cos2 - mean_cos**2) / keys),
        "key_order": (0.0, 1.0),
    }


def invariant_floor(keys: int) -> float:
    """Smallest MSE / Var of any permutation-invariant predictor of t_1: 1 - 1/N."""
    return 1.0 - 1.0 / keys


def relu_moment(m1, m2, corr, nodes: int):
    """E relu(m1 + g1) relu(m2 + g2) for unit normals g1, g2 of correlation corr (broadcast).
    The inner expectation over g2 given g1 is closed form, E relu(a + s xi) = s (z Phi(z) +
    phi(z)) with z = (m2 + corr g1) / s, s = sqrt(1 - corr^2); the outer one is Gauss-Legendre
    over g1 on [-m1, UPPER_TAIL], where the first ReLU is active (no kink inside the interval).
    The nodes depend on m1 only, so they stay as small as m1's shape."""
    m1, m2, corr = (np.asarray(v, dtype=float) for v in (m1, m2, corr))
    lo = -m1
    half = (np.maximum(UPPER_TAIL, lo) - lo) / 2
    s = np.sqrt(np.clip(1.0 - corr**2, 1e-300, None))
    m2_s, corr_s = m2 / s, corr / s
    x, w = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for node, weight in zip(x, w, strict=True):
        g1 = lo + half * (node + 1)  # m1's shape
        outer = weight * half * (m1 + g1) * np.exp(-0.5 * g1**2) / np.sqrt(2 * np.pi)
        z = m2_s + corr_s * g1
        total = total + outer * (z * ndtr(z) + np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi))
    return s * total


def rfa_pair_kernel(xa: np.ndarray, xb: np.ndarray, bias_mean: float, nodes: int) -> np.ndarray:
    """Infinite-head RFA kernel between paired sequences xa[p], xb[p] (P, N+1, d) -> (P,):
    (1/N^2) sum_ij E[relu(a_i) relu(a'_j)] rho_ij', the pre-activations a_i of mean
    bias_mean t_i, unit variance and covariance rho_00' rho_ij' across the two sequences."""
    ta, tb = augment(xa), augment(xb)
    rho_query = np.einsum("pe,pe->p", ta[:, 0], tb[:, 0])
    rho_keys = np.einsum("pie,pje->pij", ta[:, 1:], tb[:, 1:])  # (P, N, N)
    corr = rho_query[:, None, None] * rho_keys
    if bias_mean == 0:
        pair = arccos1(corr) / 2  # E relu(g) relu(g') = kappa1(c) / 2
    else:
        mean_a = bias_mean * correlations(xa)[:, :, None]
        mean_b = bias_mean * correlations(xb)[:, None, :]
        pair = relu_moment(mean_a, mean_b, corr, nodes)
    return (pair * rho_keys).mean(axis=(-2, -1))


def rfa_kernel(xa, xb, bias_mean: float, nodes: int, symmetric: bool = False) -> np.ndarray:
    """The kernel matrix (A, B); with symmetric (xa is xb) only the upper triangle is computed."""
    if symmetric:
        rows, cols = np.triu_indices(len(xa))
    else:
        rows, cols = (i.ravel() for i in np.indices((len(xa), len(xb))))
    values = rfa_pair_kernel(xa[rows], xb[cols], bias_mean, nodes)
    out = np.empty((len(xa), len(xb)))
    out[rows, cols] = values
    out[cols, rows] = values if symmetric else out[cols, rows]
    return out


def mlp_inputs(x: np.ndarray) -> np.ndarray:
    """RF-MLP input: the augmented tokens concatenated, normalised to the unit sphere."""
    tokens = augment(x)
    return tokens.reshape(*x.shape[:-2], -1) / np.sqrt(x.shape[-2])


def rfmlp_kernel(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Infinite-width RF-MLP kernel E relu(<w, z>) relu(<w, z'>) = kappa1(<z, z'>) / 2."""
    return arccos1(mlp_inputs(xa) @ mlp_inputs(xb).T) / 2


def kernel_limit(x: np.ndarray, arm: str, params: dict) -> np.ndarray:
    if arm == "rfmlp":
        return rfmlp_kernel(x, x)
    mean = params["bias_mean"] if arm == "rfa_biased" else 0.0
    return rfa_kernel(x, x, mean, params["quadrature_nodes"], symmetric=True)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    dim, keys, n_max = params["dim"], params["keys"], max(params["sample_sizes"])
    x, y = data["x"], data["y"]
    seeds = data["seeds"]
    check = params["kernel_check_points"]
    deviation = {arm: [] for arm in ARMS}
    for s, seed in enumerate(seeds):
        sub = x[s, :check]
        for arm in ARMS:
            limit = kernel_limit(sub, arm, params)
            phi = features(sub, arm, params, int(seed))
            gram = phi @ phi.T
            deviation[arm].append(np.linalg.norm(gram - limit) / np.linalg.norm(limit))
    quadratic = TARGETS.index("quadratic")
    return {
        "target_moments": target_moments(dim, keys),
        "key_order_floor": invariant_floor(keys),
        "head_kernel_deviation": {arm: np.asarray(v) for arm, v in deviation.items()},
        "target_variance_ratio": y[:, n_max:, quadratic].var(axis=1),
    }


# ----------------------------------------------------------------------------- features
def head_matrices(params: dict, seed: int) -> np.ndarray:
    """The Gaussian part G_m (M, e, e) of the query-key matrices, shared by both RFA arms."""
    e = params["dim"] + 1
    rng = np.random.default_rng([params["data_seed"], seed, 1])
    return rng.standard_normal((params["heads"], e, e))


def mlp_weights(params: dict, seed: int) -> np.ndarray:
    """RF-MLP first-layer weights (M e, (N + 1) e): as many trained weights as RFA's M e."""
    e = params["dim"] + 1
    rng = np.random.default_rng([params["data_seed"], seed, 2])
    return rng.standard_normal((params["heads"] * e, (params["keys"] + 1) * e))


def query_key_matrices(params: dict, seed: int, biased: bool) -> np.ndarray:
    w = head_matrices(params, seed)
    if biased:  # mean 2 mu sqrt(d) P: pre-activation mean mu t_i on augmented tokens
        dim = params["dim"]
        w[:, np.arange(dim), np.arange(dim)] += 2 * params["bias_mean"] * np.sqrt(dim)
    return w


def rfa_features(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """phi_m(X) = (1/N) sum_i relu(<x~_0, W_m x~_i>) x~_i / sqrt M, flattened to (P, M e)."""
    heads, e = w.shape[0], w.shape[-1]
    tokens = augment(x)
    query, keys = tokens[:, 0], tokens[:, 1:]  # (P, e), (P, N, e)
    # x~_0^T W_m for every head at once, as one matrix product: (P, M, e)
    projected = (query @ np.swapaxes(w, 0, 1).reshape(e, heads * e)).reshape(len(x), heads, e)
    scores = np.maximum(projected @ np.swapaxes(keys, -1, -2), 0.0)  # (P, M, N)
    values = scores @ keys / keys.shape[1]  # (P, M, e)
    return values.reshape(len(x), -1) / np.sqrt(heads)


def rfmlp_features(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.maximum(mlp_inputs(x) @ w.T, 0.0) / np.sqrt(w.shape[0])


def features(x: np.ndarray, arm: str, params: dict, seed: int) -> np.ndarray:
    """The arm's random features of sequences x (P, N + 1, d), normalised so that phi phi^T
    approaches the arm's infinite-head kernel."""
    if arm == "rfmlp":
        w, featurise = mlp_weights(params, seed), rfmlp_features
    else:
        w, featurise = query_key_matrices(params, seed, arm == "rfa_biased"), rfa_features
    # blocks of sequences bound the (P, M, N) attention scores' memory at paper scale
    blocks = [featurise(x[lo : lo + FEATURE_BLOCK], w) for lo in range(0, len(x), FEATURE_BLOCK)]
    return np.concatenate(blocks)


# ----------------------------------------------------------------------------- training
def learning_curve(phi: np.ndarray, y: np.ndarray, sizes, n_max: int, ridge_factor: float):
    """Ridge regression on the first n training rows for each n in sizes (nested), every target at
    once; test MSE on the rows after n_max: (len(sizes), targets)."""
    train, test = phi[:n_max], phi[n_max:]
    gram, cross = train @ train.T, test @ train.T
    mse = []
    for n in sizes:
        ridge = ridge_factor * np.trace(gram[:n, :n])
        pred = ridge_predict(gram[:n, :n], cross[:, :n], y[:n], ridge)
        mse.append(((pred - y[n_max:]) ** 2).mean(axis=0))
    return np.asarray(mse)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One arm: per seed, its random features, then the closed-form ridge fit at every size."""
    arm, sizes = point["arm"], params["sample_sizes"]
    n_max = max(sizes)
    # one seed at a time: each fit is already a large matrix product (batching seeds gains nothing)
    tick = runtime.Progress(len(seeds), f"train {arm}")
    mse = []
    for s, seed in enumerate(seeds):
        phi = features(data["x"][s], arm, params, seed)
        mse.append(learning_curve(phi, data["y"][s], sizes, n_max, params["ridge_factor"]))
        tick(s, quadratic_mse_at_n_max=mse[-1][-1, TARGETS.index("quadratic")])
    return {"test_mse": np.asarray(mse)}  # (S, sizes, targets)


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Test MSE per arm (seeds, sizes, targets), standardised targets (the null scores 1)."""
    arms = {point["arm"]: runs[pid]["test_mse"] for pid, point in points.items()}
    return {
        "sample_sizes": list(params["sample_sizes"]),
        "targets": list(TARGETS),
        "arms": {arm: {"test_mse": arms[arm]} for arm in ARMS},
    }


# ----------------------------------------------------------------------------- verdict
def size_index(sizes, n: int) -> int:
    if n not in list(sizes):
        raise ValueError(f"n = {n} is not among the sample sizes {list(sizes)}")
    return list(sizes).index(n)


def mse_at(metrics: dict, arm: str, n: int, target: str) -> np.ndarray:
    """Per-seed test MSE of one arm and target at training size n."""
    mse = np.asarray(metrics["arms"][arm]["test_mse"])
    return mse[:, size_index(metrics["sample_sizes"], n), list(metrics["targets"]).index(target)]


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    n_max, n_bias = max(metrics["sample_sizes"]), params["bias_check_n"]

    def ratio(arm, base, n, target):
        return (mse_at(metrics, arm, n, target) / mse_at(metrics, base, n, target)).tolist()

    deviation = np.asarray([theory["head_kernel_deviation"][arm] for arm in ARMS])
    out = {
        "mse_ratio_quadratic": ratio("rfa", "rfmlp", n_max, "quadratic"),
        "mse_ratio_linear": ratio("rfa", "rfmlp", n_max, "linear"),
        "bias_mse_ratio_cos": ratio("rfa_biased", "rfa", n_bias, "cos"),
        "mse_ratio_key_order": ratio("rfa", "rfmlp", n_max, "key_order"),
        "head_kernel_deviation": deviation.max(axis=0).tolist(),
        "rfa_key_order_mse": mse_at(metrics, "rfa", n_max, "key_order").tolist(),
        "target_variance_ratio": list(theory["target_variance_ratio"]),
        "key_order_floor": theory["key_order_floor"],
        "bias_mse_ratio_quadratic": ratio("rfa_biased", "rfa", n_bias, "quadratic"),
        "bias_mse_ratio_cos_at_n_max": ratio("rfa_biased", "rfa", n_max, "cos"),
    }
    for arm in ARMS:
        out[f"{arm}_quadratic_mse"] = mse_at(metrics, arm, n_max, "quadratic").tolist()
    # a near-interpolating RF-MLP can score worse than predicting the mean (MSE 1): the ratio
    # against the better of the two shows how much of the primary ratio that excess carries
    best_baseline = np.minimum(mse_at(metrics, "rfmlp", n_max, "quadratic"), 1.0)
    out["mse_ratio_quadratic_vs_null_capped"] = (
        mse_at(metrics, "rfa", n_max, "quadratic") / best_baseline
    ).tolist()
    return out
