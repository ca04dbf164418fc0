"""Self-distillation with ground-truth targets in kernel regression (Borup & Andersen,
"Even your Teacher Needs Guidance", NeurIPS 2021, arXiv 2102.13088).

Claim. Iterated self-distillation fits round t to the weighted objective
    alpha ||y - f(X)||^2 + (1 - alpha) ||f_{t-1}(X) - f(X)||^2 + lambda ||f||_H^2,
i.e. kernel ridge regression (KRR) on the target alpha y + (1 - alpha) f_{t-1}(X). Every iterate
is then a closed-form function of the first fit, and as t -> infinity the iterates converge to
KRR with the regularisation amplified from lambda to lambda / alpha. Without ground truth
(alpha = 0, Mobahi et al. 2020) the regularisation grows without bound: the fit collapses.

Setting. n training angles g uniform on [0, 2 pi), inputs z = (cos g, sin g), targets
y = f*(g) + N(0, noise^2) with f*(g) = sin(2 g) + 0.5 cos(g); a fixed grid of test angles.
Seeds change the data, the noise and the network initialisation.

Theory (closed forms on the kernel; K = V diag(d) V^T, s_j = d_j / (d_j + lambda)):
    round 1:  f_1 = K (K + lambda I)^{-1} y,
    round t:  f_t = K (K + lambda I)^{-1} (alpha y + (1 - alpha) f_{t-1}),
so in mode j the coefficient obeys c_t = s_j (alpha y_j + (1 - alpha) c_{t-1}) (the paper's
B_t = A ((1 - alpha) B_{t-1} + alpha I), A = diag(s)), with the fixed point
    c_inf = alpha s_j y_j / (1 - (1 - alpha) s_j) = d_j / (d_j + lambda / alpha) y_j,
reached geometrically at rate (1 - alpha) s_j per round. At alpha = 0, c_t = s_j^t y_j, which
for d_j >> lambda is close to one-shot KRR with ridge t lambda: no limit.
The kernel is the network's empirical tangent kernel at initialisation, computed from the init
weights in the generate step (never from a trained net).

Experiment. A two-layer ReLU net f(z) = sqrt(2/m) v . relu(W z / sqrt(2)) (standard
parametrisation, He variance, no biases), initialised antisymmetrically (the second half of the
neurons copies the first with v negated, so f_0 = 0). Each round restarts from the same theta_0
and runs full-batch GD on
    L(theta) = 1/2 sum_i (f(z_i) - target_i)^2 + (lambda / 2) ||theta - theta_0||^2,
whose linearised minimiser is KRR with ridge lambda and the tangent kernel at init. All alphas and
seeds train together as one batch of networks.

Measure. The effective ridge of an output f: the r minimising ||f - K (K + r I)^{-1} y|| on the
training points (least squares over log r), reported as r / lambda; the paper's limit gives
1 / alpha. The relative L2 distance of the network to the closed-form iterates, every round.

Controls. alpha = 0 (ground truth removed): the effective ridge keeps growing with the rounds.
A narrow network (out of the kernel regime) no longer follows its own kernel's closed form.
"""

from __future__ import annotations

import numpy as np

from replica import runtime
from replica.blocks.kernel_ridge import SpectralRidge, relu_kernels

INPUT_DIM = 2
# networks trained together per chunk: activations of about this many bytes stay in the CPU
# cache (measured here: chunks of 4-6 width-1024 nets ran 2.6x faster than one batch of 24)
CHUNK_BYTES = 2 * 2**20
AMPLIFICATION_RANGE = (1e-2, 1e4)  # search window of the fitted effective ridge, in units of lambda
GOLDEN_ITERATIONS = 80  # shrinks the log-ridge window by 0.618^80, far below float precision


# ----------------------------------------------------------------------------- data
def circle(angles: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def target_function(angles: np.ndarray) -> np.ndarray:
    return np.sin(2 * angles) + 0.5 * np.cos(angles)


def init_weights(rng: np.random.Generator, width: int) -> tuple[np.ndarray, np.ndarray]:
    """W (INPUT_DIM, m), v (m,) standard normal, antisymmetric: neurons m/2.. copy the first
    half with v negated, so the network output is exactly 0 at initialisation."""
    half = width // 2
    w = rng.standard_normal((INPUT_DIM, half))
    v = rng.standard_normal(half)
    return np.concatenate([w, w], axis=1), np.concatenate([v, -v])


def hidden(w: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pre-activations u = z W / sqrt(dim) (..., P, m) and the ReLU mask u > 0 (as floats)."""
    u = z @ w / np.sqrt(INPUT_DIM)
    return u, (u > 0).astype(float)


def network(w: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """f(z) = sqrt(2/m) v . relu(W z / sqrt(dim)), batched over leading axes: (..., P)."""
    u, mask = hidden(w, z)
    return np.sqrt(2 / v.shape[-1]) * ((u * mask) @ v[..., None])[..., 0]


def empirical_ntk(w: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tangent kernel sum_p df(z)/dp df(z')/dp at (W, v), (..., P, P):
    (2/m) [relu(u) relu(u')^T + (mask v)(mask v)^T * z z'^T / dim]."""
    u, mask = hidden(w, z)
    h, g = u * mask, mask * v[..., None, :]
    zz = z @ np.swapaxes(z, -1, -2) / INPUT_DIM
    scale = 2 / v.shape[-1]
    return scale * (h @ np.swapaxes(h, -1, -2) + (g @ np.swapaxes(g, -1, -2)) * zz)


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: training angles, noisy targets, and each arm's initial weights and tangent
    kernel on the training points followed by the (shared) test grid."""
    n, n_test = params["n_train"], params["n_test"]
    angles_test = 2 * np.pi * (np.arange(n_test) + 0.5) / n_test
    out: dict[str, list] = {"angles_train": [], "y_train": []}
    for arm in params["widths"]:
        out.update({f"w_{arm}": [], f"v_{arm}": []})
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        angles = rng.uniform(0, 2 * np.pi, n)
        out["angles_train"].append(angles)
        out["y_train"].append(target_function(angles) + params["noise"] * rng.standard_normal(n))
        for arm, width in params["widths"].items():
            w, v = init_weights(rng, int(width))
            out[f"w_{arm}"].append(w)
            out[f"v_{arm}"].append(v)
    data = {key: np.asarray(value) for key, value in out.items()}
    data["angles_test"] = angles_test
    data["f_star_test"] = target_function(angles_test)
    z_all = points(data)
    for arm in params["widths"]:
        data[f"kernel_{arm}"] = empirical_ntk(data[f"w_{arm}"], data[f"v_{arm}"], z_all)
    return data


def points(data: dict) -> np.ndarray:
    """Inputs (S, n + n_test, 2): each seed's training points, then the test grid."""
    s = len(data["angles_train"])
    test = np.broadcast_to(data["angles_test"], (s, len(data["angles_test"])))
    return circle(np.concatenate([data["angles_train"], test], axis=1))


# ----------------------------------------------------------------------------- theory
def split_kernel(kernel: np.ndarray, n: int) -> tuple[SpectralRidge, np.ndarray]:
    """KRR on the training block (decomposed once) and the test-by-train cross kernel."""
    return SpectralRidge(kernel[..., :n, :n]), kernel[..., n:, :n]


def predict(cross: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """KRR predictions k(x, X) coef at the test points, batched over seeds."""
    return (cross @ coef[..., None])[..., 0]


def distillation_iterates(
    ridge_fit: SpectralRidge, cross: np.ndarray, y: np.ndarray, ridge: float, alpha: float, rounds
):
    """Closed-form rounds 1..T: KRR on y, then on alpha y + (1 - alpha) f_{t-1}(X).
    Returns (train outputs, test outputs), each (..., T, points)."""
    target, train, test = y, [], []
    for _ in range(rounds):
        coef = ridge_fit.coefficients(target, ridge)
        f_train = ridge_fit.fitted(target, ridge)
        train.append(f_train)
        test.append(predict(cross, coef))
        target = alpha * y + (1 - alpha) * f_train
    return np.stack(train, axis=-2), np.stack(test, axis=-2)


def limit_ridge(ridge: float, alpha: float) -> float:
    """The paper's limit: KRR with the regularisation amplified to lambda / alpha."""
    return ridge / alpha


def effective_ridge(ridge_fit: SpectralRidge, y: np.ndarray, f: np.ndarray, ridge: float):
    """The ridge r minimising ||f - K (K + r I)^{-1} y|| on the training points, in units of
    `ridge`: a golden-section search over log r, vectorised over every fit at once.
    y (S, n); f (S, ..., n) (seed first) -> (S, ...)."""
    f = np.asarray(f)
    extra = f.ndim - 2  # axes between the seed and the points
    shape = (f.shape[0],) + (1,) * extra + (-1,)
    d = ridge_fit.eigenvalues.reshape(shape)
    y_modes = ridge_fit.to_modes(y).reshape(shape)
    vecs = ridge_fit.eigenvectors.reshape(
        f.shape[0], *(1,) * extra, *ridge_fit.eigenvectors.shape[1:]
    )
    f_modes = (np.swapaxes(vecs, -1, -2) @ f[..., None])[..., 0]

    def misfit(log_r):
        shrink = d / (d + np.exp(log_r)[..., None])
        return ((f_modes - shrink * y_modes) ** 2).sum(-1)

    lo = np.full(f.shape[:-1], np.log(ridge * AMPLIFICATION_RANGE[0]))
    hi = np.full(f.shape[:-1], np.log(ridge * AMPLIFICATION_RANGE[1]))
    golden = (np.sqrt(5) - 1) / 2
    for _ in range(GOLDEN_ITERATIONS):
        left, right = hi - golden * (hi - lo), lo + golden * (hi - lo)
        keep_left = misfit(left) <= misfit(right)  # the minimum lies in [lo, right]
        hi = np.where(keep_left, right, hi)
        lo = np.where(keep_left, lo, left)
    return np.exp((lo + hi) / 2) / ridge


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    n, ridge, rounds = params["n_train"], params["ridge"], params["rounds"]
    y = data["y_train"]
    out: dict = {"alphas": list(params["alphas"]), "arms": {}}
    for arm in params["widths"]:
        ridge_fit, cross = split_kernel(data[f"kernel_{arm}"], n)
        keys = ("f_train", "f_test", "test_mse", "amplification", "limit_test_mse")
        arm_out = {key: [] for key in keys}
        for alpha in params["alphas"]:
            f_train, f_test = distillation_iterates(ridge_fit, cross, y, ridge, alpha, rounds)
            arm_out["f_train"].append(f_train)
            arm_out["f_test"].append(f_test)
            arm_out["test_mse"].append(((f_test - data["f_star_test"]) ** 2).mean(-1))
            arm_out["amplification"].append(effective_ridge(ridge_fit, y, f_train, ridge))
            if alpha > 0:
                limit_test = predict(cross, ridge_fit.coefficients(y, limit_ridge(ridge, alpha)))
                mse = ((limit_test - data["f_star_test"]) ** 2).mean(-1)
            else:
                mse = np.full(len(y), np.nan)  # no limit without ground truth
            arm_out["limit_test_mse"].append(mse)
        out["arms"][arm] = {k: np.asarray(v) for k, v in arm_out.items()}  # (A, S, ...)
    # the wide network's kernel at init against the analytic infinite-width ReLU NTK
    z_all = points(data)
    analytic = np.stack([relu_kernels(z, z, hidden_layers=1)[1] for z in z_all])
    diff = np.linalg.norm(data["kernel_wide"] - analytic, axis=(-2, -1))
    out["init_kernel_deviation"] = diff / np.linalg.norm(analytic, axis=(-2, -1))
    out["amplification_paper"] = [1 / a if a > 0 else None for a in params["alphas"]]
    return out


# ----------------------------------------------------------------------------- training
def gradients(w, v, w0, v0, z, target, ridge: float):
    """Gradient of 1/2 ||f(z) - target||^2 + ridge/2 ||theta - theta_0||^2 in (W, v), batched."""
    u, mask = hidden(w, z)
    scale = np.sqrt(2 / v.shape[-1])
    residual = scale * ((u * mask) @ v[..., None]) - target[..., None]  # (B, n, 1)
    grad_v = scale * (np.swapaxes(u * mask, -1, -2) @ residual)[..., 0] + ridge * (v - v0)
    back = np.swapaxes(z * residual, -1, -2) @ mask  # sum_i r_i z_i 1[u_ij > 0]: (B, dim, m)
    grad_w = scale / np.sqrt(INPUT_DIM) * back * v[..., None, :] + ridge * (w - w0)
    return grad_w, grad_v


def gradient_norm(grad_w, grad_v) -> np.ndarray:
    return np.sqrt((grad_w**2).sum((-2, -1)) + (grad_v**2).sum(-1))


def train_round(w0, v0, z, target, ridge: float, lr: np.ndarray, steps: int):
    """One distillation round from theta_0: `steps` GD steps (lr per network).
    Returns the final (W, v) and the gradient norm at the start and at the end."""
    w, v = w0.copy(), v0.copy()
    for step in range(steps + 1):
        grad_w, grad_v = gradients(w, v, w0, v0, z, target, ridge)
        if step == 0:
            start = gradient_norm(grad_w, grad_v)
        if step == steps:
            return w, v, start, gradient_norm(grad_w, grad_v)
        w -= lr[:, None, None] * grad_w
        v -= lr[:, None] * grad_v


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One arm (width), every alpha and seed as one batch of A x S networks (numpy, float64)."""
    arm, n, ridge = point["arm"], params["n_train"], params["ridge"]
    alphas = np.asarray(params["alphas"], dtype=float)
    n_alpha, n_seed = len(alphas), len(seeds)
    z_all = points(data)

    def batch(x):  # (S, ...) -> (A * S, ...), alpha-major
        return np.broadcast_to(x, (n_alpha, *x.shape)).reshape(n_alpha * n_seed, *x.shape[1:])

    w0, v0 = batch(data[f"w_{arm}"]), batch(data[f"v_{arm}"])
    z_train, z_test = batch(z_all[:, :n]), batch(z_all[:, n:])
    y = batch(data["y_train"])
    alpha = np.repeat(alphas, n_seed)[:, None]
    # step 1.5 / (d_max + lambda): stable (< 2) for each seed's kernel at init
    d_max = np.linalg.eigvalsh(data[f"kernel_{arm}"][:, :n, :n])[:, -1]
    lr = batch(params["lr_factor"] / (d_max + ridge))
    per_chunk = max(1, CHUNK_BYTES // (n * data[f"v_{arm}"].shape[-1] * 8))  # float64
    chunks = [slice(lo, lo + per_chunk) for lo in range(0, len(lr), per_chunk)]
    target = y
    f_train, f_test, grad_start, grad_end = [], [], [], []
    tick = runtime.Progress(params["rounds"], f"train {arm}")
    for t in range(params["rounds"]):
        g0, g1 = np.empty(len(lr)), np.empty(len(lr))
        out_train, out_test = np.empty(y.shape), np.empty(z_test.shape[:-1])
        for c in chunks:  # independent networks: chunking changes the speed, not the result
            w, v, g0[c], g1[c] = train_round(
                w0[c], v0[c], z_train[c], target[c], ridge, lr[c], params["gd_steps"]
            )
            out_train[c], out_test[c] = network(w, v, z_train[c]), network(w, v, z_test[c])
        f_train.append(out_train)
        f_test.append(out_test)
        grad_start.append(g0)
        grad_end.append(g1)
        target = alpha * y + (1 - alpha) * out_train  # the next student's weighted target
        tick(t, gradient_ratio=float((g1 / g0).max()))

    def unbatch(rows):  # list over rounds of (A * S, ...) -> (A, S, T, ...)
        x = np.stack(rows, axis=1)
        return x.reshape(n_alpha, n_seed, *x.shape[1:])

    return {
        "f_train": unbatch(f_train),
        "f_test": unbatch(f_test),
        "grad_start": unbatch(grad_start),
        "grad_end": unbatch(grad_end),
    }


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per arm: the network's outputs, effective ridge and test error at every round."""
    n, ridge, y = params["n_train"], params["ridge"], data["y_train"]
    out = {"alphas": list(params["alphas"]), "rounds": params["rounds"], "arms": {}}
    for pid, point in points.items():
        run, arm = runs[pid], point["arm"]
        ridge_fit, _ = split_kernel(data[f"kernel_{arm}"], n)
        f_train = run["f_train"]  # (A, S, T, n)
        amplification = np.stack(
            [effective_ridge(ridge_fit, y, f_alpha, ridge) for f_alpha in f_train]
        )
        out["arms"][arm] = {
            "f_train": f_train,
            "f_test": run["f_test"],
            "amplification": amplification,
            "test_mse": ((run["f_test"] - data["f_star_test"]) ** 2).mean(-1),
            "gradient_reduction": run["grad_end"] / run["grad_start"],
        }
    return out


# ----------------------------------------------------------------------------- verdict
def alpha_index(alphas, alpha: float) -> int:
    matches = np.flatnonzero(np.isclose(np.asarray(alphas, dtype=float), alpha))
    if not len(matches):
        raise ValueError(f"alpha = {alpha} is not among the trained alphas {alphas}")
    return int(matches[0])


def relative_distance(net_train, net_test, theory_train, theory_test) -> np.ndarray:
    """||f_net - f_closed|| / ||f_closed|| over training and test points, (..., T)."""
    net = np.concatenate([net_train, net_test], axis=-1)
    closed = np.concatenate([theory_train, theory_test], axis=-1)
    return np.linalg.norm(net - closed, axis=-1) / np.linalg.norm(closed, axis=-1)


CLAIM_ALPHAS = (0.25, 0.5)  # the alphas whose iterates the agreement checks cover


def closed_form_errors(metrics_arm: dict, theory_arm: dict, alphas) -> np.ndarray:
    """Per seed, the largest distance to the closed form over rounds and CLAIM_ALPHAS."""
    rows = [alpha_index(alphas, a) for a in CLAIM_ALPHAS]
    dist = relative_distance(
        *(np.asarray(metrics_arm[k])[rows] for k in ("f_train", "f_test")),
        *(np.asarray(theory_arm[k])[rows] for k in ("f_train", "f_test")),
    )  # (alphas, S, T)
    return dist.max(axis=(0, 2))


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    alphas, rounds = metrics["alphas"], metrics["rounds"]
    wide, narrow = metrics["arms"]["wide"], metrics["arms"]["narrow"]
    amp = np.asarray(wide["amplification"])  # (A, S, T)
    amp_theory = np.asarray(theory["arms"]["wide"]["amplification"])
    a0, half, quarter = (alpha_index(alphas, a) for a in (0.0, 0.5, 0.25))
    mid = rounds // 2 - 1  # round T/2 (rounds counted from 1)
    return {
        "amplification_alpha_0p5": amp[half, :, -1].tolist(),
        "amplification_alpha_0p25": amp[quarter, :, -1].tolist(),
        "amplification_paper_alpha_0p5": 1 / alphas[half],
        "amplification_paper_alpha_0p25": 1 / alphas[quarter],
        "closed_form_error": closed_form_errors(wide, theory["arms"]["wide"], alphas).tolist(),
        "closed_form_error_narrow": closed_form_errors(
            narrow, theory["arms"]["narrow"], alphas
        ).tolist(),
        "amplification_growth_alpha_0": (amp[a0, :, -1] / amp[a0, :, mid]).tolist(),
        "amplification_growth_alpha_0_closed_form": (
            amp_theory[a0, :, -1] / amp_theory[a0, :, mid]
        ).tolist(),
        "init_kernel_deviation": list(theory["init_kernel_deviation"]),
        "gradient_reduction": np.asarray(wide["gradient_reduction"]).max(axis=(0, 2)).tolist(),
        "closed_form_amplification_alpha_0p5": amp_theory[half, :, -1].tolist(),
        "closed_form_amplification_alpha_0p25": amp_theory[quarter, :, -1].tolist(),
    }
