"""Benign overfitting of a two-layer ReLU CNN whose output layer is trained too.

Claim (Shang, Meng, Cao & Zou, "Initialization Matters: On the Benign Overfitting of Two-Layer
ReLU CNN with Fully Trainable Layers", arXiv 2410.19139, 2024). When both layers of the patch
CNN are trained by gradient descent on the signal-noise model, the output-layer initialization
scale v0 decides the dynamics: with a large v0 the hidden filters grow while the output weights
barely move (the fixed-output setting of Cao et al. 2022 / Kou et al. 2023); with a small v0 the
output weights first grow until they match the filters, and then both layers grow together at a
fixed ratio. In both regimes the network fits noisy labels, and whether the overfitting is
benign (clean test error ~0) or harmful is decided by the signal strength against the noise.

Data (the shared signal-noise model, `replica.blocks.signal_noise`): x = [y mu, xi],
xi ~ N(0, sigma_p^2 I) orthogonal to mu, training labels flipped with probability p, clean test
labels.
Network (shared `class_outputs` with trainable output weights v):
    f(x) = F_{+1}(x) - F_{-1}(x),   F_j(x) = sum_r v_{j,r} sum_p relu(<w_{j,r}, x_p>),
w_{j,r}(0) ~ N(0, sigma0^2 I), v_{j,r}(0) = v0; full-batch GD on the mean logistic loss.

Theory.
(i) Conservation law. ReLU is 1-homogeneous, relu'(z) z = relu(z), so for every neuron
    <w_{j,r}, dL/dw_{j,r}> = v_{j,r} dL/dv_{j,r},
and under gradient flow c_{j,r} = ||w_{j,r}||^2 - v_{j,r}^2 is constant. One GD step of size eta
changes it by exactly eta^2 (||g_w||^2 - g_v^2) (the first-order terms cancel), so the drift is
O(eta). Consequences: large v0 (v0^2 >> final ||w||^2) means v^2 = v0^2 + ||w||^2 - ||w_0||^2
stays ~v0^2 while w grows; small v0 (v0 << ||w_0||) means ||w||/|v| = sqrt(1 + c/v^2) -> 1 once
|v| has grown past sqrt(c) = ||w_0||. A smooth activation (softplus) breaks the identity:
the control arm.
(ii) Phase boundary. In the fixed-output analysis (Kou et al. 2023, Thm 4.2/4.3), which the
paper says the large-v0 regime reduces to, overfitting is benign when n ||mu||^4 >= C sigma_p^4 d
and harmful when n ||mu||^4 <= c sigma_p^4 d. The critical signal strength therefore scales as
||mu||_crit ~ (sigma_p^4 d / n)^(1/4): slope 1/4 of log ||mu||_crit vs log(d/n). The rival
"n SNR^2 = const" scaling (||mu||^2 ~ sigma_p^2 d / n) predicts slope 1/2.

Exact reduced coordinates (why d up to 25600 costs nothing). GD moves every filter inside the
span of the data (mu and the n noise patches), so w(t) lies in S = span{e_0, xi_1..xi_n,
w_{j,r}(0)}, of dimension k = 1 + n + 2m << d. With an orthonormal basis Q of S (first column
e_0 = mu/||mu||) all inner products and norms are preserved: training on Q^T x with filters Q^T w
is the full-dimensional run, exactly. A fresh test noise patch xi (isotropic off e_0) only
enters through <w, xi> = <Q^T w, Q^T xi>, and Q^T xi ~ N(0, sigma_p^2) on the k - 1 coordinates
orthogonal to e_0: test patches are drawn in reduced coordinates from that exact law.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from replica import runtime
from replica.blocks import signal_noise as sn

ARMS = {  # name: (activation, which output-init scale)
    "relu_large": ("relu", "v0_large"),
    "relu_small": ("relu", "v0_small"),
    "softplus_small": ("softplus", "v0_small"),  # control: not homogeneous
}
RELU_ARMS = ("relu_large", "relu_small")
KOU_SLOPE, RIVAL_SLOPE = 0.25, 0.5
RECORDED_STEPS = 30  # log-spaced steps at which the dynamics are kept


# ----------------------------------------------------------------------------- data
def reduced_basis(noise: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Orthonormal basis (d, k) of span{e_0, noise patches, initial filters}, first column e_0.

    The noise patches are orthogonal to e_0, so after a QR the first column is +-e_0; its sign
    is fixed to + so that the signal patch y mu has reduced coordinates (y ||mu||, 0, ..., 0)."""
    d = noise.shape[1]
    e0 = np.zeros((1, d))
    e0[0, 0] = 1.0
    q, _ = np.linalg.qr(np.concatenate([e0, noise, filters]).T)
    return q * np.sign(q[0, 0])


def reduced_draw(seed: int, d: int, params: dict) -> dict[str, np.ndarray]:
    """One seed's training set and initial filters at dimension d, in reduced coordinates.

    The signal patch is stored for ||mu|| = 1 (train rescales it per grid value of ||mu||), so
    every ||mu|| shares the same noise, flips and initialization (common random numbers)."""
    n, m, sigma_p = params["n"], params["width"], params["sigma_p"]
    rng = np.random.default_rng([seed, d])
    draw = sn.patch_dataset(rng, n, d, 1.0, sigma_p, params["flip_rate"])
    gen = torch.Generator().manual_seed(int(seed) * 100_003 + d)
    sigma0 = params["init_norm"] / np.sqrt(d)  # ||w_0|| ~ init_norm at every d
    w0 = sn.init_filters(gen, 1, m, d, sigma0)[0].numpy()  # (C, m, d)
    q = reduced_basis(draw["x"][:, 1], w0.reshape(-1, d))
    k = q.shape[1]
    test_label = rng.choice(np.array([1, -1]), size=params["n_test"])
    test_noise = np.zeros((params["n_test"], k))
    test_noise[:, 1:] = sigma_p * rng.standard_normal((params["n_test"], k - 1))
    return {
        "x": draw["x"] @ q,  # (n, 2, k)
        "label": draw["label"],
        "clean_label": draw["clean_label"],
        "w0": w0 @ q,  # (C, m, k)
        "w0_norm2_full": (w0**2).sum(-1),  # check: equals the reduced norm
        "test_noise": test_noise,
        "test_label": test_label,
    }


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    out = {"dims": np.asarray(params["dims"]), "mu_grid": mu_grid(params)}
    for d in params["dims"]:
        draws = sn.stack_seeds([reduced_draw(s, d, params) for s in seeds])
        out.update({f"{key}__d{d}": value for key, value in draws.items()})
    return out


def mu_grid(params: dict) -> np.ndarray:
    lo, hi, num = params["mu_grid"]
    return np.geomspace(lo, hi, int(num))


# ----------------------------------------------------------------------------- theory
def conserved(w_norm2, v):
    """c = ||w||^2 - v^2 per neuron (gradient flow keeps it fixed for 1-homogeneous units)."""
    return np.asarray(w_norm2) - np.asarray(v) ** 2


def balanced_hidden_norm(c, v):
    """||w|| predicted by the conservation law from the output weight: sqrt(c + v^2)."""
    return np.sqrt(np.maximum(np.asarray(c) + np.asarray(v) ** 2, 0.0))


def kou_critical_mu(ratio_dn, sigma_p: float = 1.0, const: float = 1.0):
    """||mu||_crit = const * (sigma_p^4 d / n)^(1/4), from n ||mu||^4 = const^4 sigma_p^4 d."""
    return const * (sigma_p**4 * np.asarray(ratio_dn, dtype=float)) ** KOU_SLOPE


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """Data-only predictions: conserved quantities at init, the boundary exponents, and the
    Kou et al. critical ||mu|| at each d/n (unit constant; the figure fits the constant)."""
    ratio = np.asarray(params["dims"], dtype=float) / params["n"]
    init_c = {}
    for arm, (_, scale) in ARMS.items():
        v0 = params[scale]
        init_c[arm] = [
            float(np.median(conserved(data[f"w0_norm2_full__d{d}"], v0))) for d in params["dims"]
        ]
    return {
        "ratio_dn": ratio,
        "kou_slope": KOU_SLOPE,
        "rival_slope": RIVAL_SLOPE,
        "kou_mu_crit_unit_const": kou_critical_mu(ratio, params["sigma_p"]),
        "median_conserved_at_init": init_c,
        # small-v0 limit of ||w|| / |v| once |v| >> ||w_0||; large-v0: |v| stays at v0
        "small_init_ratio_limit": 1.0,
    }


# ----------------------------------------------------------------------------- training
def batch_for_mu(data: dict, d: int, mus: np.ndarray, device):
    """Seeds x mu values on one leading axis (seed-major): train/test inputs, labels, w0."""
    x = data[f"x__d{d}"]  # (seeds, n, 2, k), signal patch for ||mu|| = 1
    scale = np.ones((len(mus), 1, 2, 1))
    scale[:, :, 0] = mus[:, None, None]
    xs = (x[:, None] * scale[None]).reshape(-1, *x.shape[1:])
    noise, label = data[f"test_noise__d{d}"], data[f"test_label__d{d}"]
    xt = np.zeros((*noise.shape[:2], 2, noise.shape[-1]))
    xt[:, :, 1] = noise
    xt[:, :, 0, 0] = label
    xts = (xt[:, None] * scale[None]).reshape(-1, *xt.shape[1:])
    rep = len(mus)

    def t(a):
        return torch.as_tensor(np.repeat(a, rep, axis=0), dtype=torch.float64, device=device)

    def tt(a):
        return torch.as_tensor(a, dtype=torch.float64, device=device)

    return {
        "x": tt(xs),
        "y": t(data[f"label__d{d}"]),
        "clean": t(data[f"clean_label__d{d}"]),
        "x_test": tt(xts),
        "y_test": t(label),
        "w0": t(data[f"w0__d{d}"]),
    }


def margins(w, v, x, y, act):
    return y * sn.margin_output(sn.class_outputs(w, x, act, out_weights=v))


# Below this many columns the CPU gemm takes a small-matrix path that sums in another order;
# from 16 on, a column's value does not depend on how many columns the product has (tested).
_GEMM_MIN_COLUMNS = 16


@functools.cache
def _patch_preactivations():
    """The autograd Function below, defined on first use: a class deriving from a torch
    class at module level would import torch in every job that imports this module."""

    class PatchPreactivations(torch.autograd.Function):
        """<w_{j,r}, x_{i,p}> for the two patches, exploiting that in reduced coordinates the
        signal patch is (y ||mu||, 0, ..., 0) and the noise patch is 0 on e_0 (both exactly).

        sn.class_outputs computes both patches in one product (filters x patches); half of it
        multiplies by exact zeros. Here the signal inner product is the single nonzero term
        w_0 y ||mu|| and only the noise patch goes through a matrix product, forward and
        backward, which halves the flops. Every value equals the einsum/autograd one bit for
        bit: a sum with exact zeros added in is the same sum, and each remaining product is the
        same gemm on the same operands (operand order and layout as torch.einsum uses).
        (Bit for bit at the quick scale's shapes, checked by the tests and by identical quick
        metrics; at other shapes the CPU gemm may pick another kernel: equal to rounding.)
        Returns (signal, noise) pre-activations, each (S, n, C, m)."""

        @staticmethod
        def forward(ctx, w, signal_patch, noise_patch):
            s, c, m, k = w.shape
            n = noise_patch.shape[1]
            ctx.save_for_backward(signal_patch, noise_patch)
            noise = torch.matmul(w.reshape(s, c * m, k), noise_patch.transpose(1, 2))
            signal = w[..., :1] * signal_patch[:, None, None, :, 0]  # (S, C, m, n)
            return (
                signal.permute(0, 3, 1, 2),
                noise.reshape(s, c, m, n).permute(0, 3, 1, 2),
            )

        @staticmethod
        def backward(ctx, grad_signal, grad_noise):
            signal_patch, noise_patch = ctx.saved_tensors
            s, n, c, m = grad_noise.shape
            rows = (s, c * m, n)  # (S, n, C, m) -> (S, C m, n), contiguous as in einsum's backward
            grad = torch.matmul(grad_noise.permute(0, 2, 3, 1).reshape(rows), noise_patch)
            # coordinate 0: the noise term there is a sum of exact zeros; the signal term is the
            # same sum over samples as in the two-patch product (a gemm, so the same order)
            cols = signal_patch[..., :_GEMM_MIN_COLUMNS]
            signal = torch.matmul(grad_signal.permute(0, 2, 3, 1).reshape(rows), cols)
            grad[..., 0] = signal[..., 0]
            return grad.reshape(s, c, m, -1), None, None

    return PatchPreactivations


def train_margins(w, v, x, y, act):
    """margins(w, v, x, y, act) for reduced-coordinate inputs, bit for bit, at half the cost."""
    signal, noise = _patch_preactivations().apply(w, x[:, :, 0], x[:, :, 1])
    # the sum over the two patches, laid out (S, n, C, m) like class_outputs' hidden units,
    # so that the output-layer einsum runs the same kernels on it
    hidden = (act(signal) + act(noise)).contiguous()
    return y * sn.margin_output(torch.einsum("sncm,scm->snc", hidden, v))


def train_arm(batch: dict, act_name: str, v0: float, lr: torch.Tensor, steps: int, label: str):
    """Full-batch GD on both layers; per-neuron ||w||^2 and v at log-spaced checkpoints."""
    act = sn.activation(act_name)
    w = batch["w0"].clone().requires_grad_()
    v = torch.full(w.shape[:3], v0, dtype=w.dtype, device=w.device, requires_grad=True)
    keep = set(runtime.log_spaced_steps(steps, RECORDED_STEPS, with_zero=True).tolist())
    norms, outs, losses = [], [], []
    tick = runtime.Progress(steps, f"train {label}")
    for step in range(steps + 1):
        if step in keep:
            norms.append((w.detach() ** 2).sum(-1))
            outs.append(v.detach().clone())
        if step == steps:
            break
        loss = sn.logistic_loss(train_margins(w, v, batch["x"], batch["y"], act)).mean(-1)
        grad_w, grad_v = torch.autograd.grad(loss.sum(), (w, v))
        with torch.no_grad():
            w -= lr * grad_w
            v -= lr[..., 0] * grad_v
        losses.append(loss.detach())
        tick(step, loss=float(loss.detach().mean()))
    with torch.no_grad():
        train_m = margins(w, v, batch["x"], batch["y"], act)
        test_m = margins(w, v, batch["x_test"], batch["y_test"], act)
        final_loss = sn.logistic_loss(train_m).mean(-1)
    return {
        "w_norm2": torch.stack(norms, 1),  # (S, T, C, m)
        "v": torch.stack(outs, 1),
        "train_loss": final_loss,
        "train_error": (train_m <= 0).double().mean(-1),
        "test_error": (test_m <= 0).double().mean(-1),  # clean test labels
    }


def step_sizes(params: dict, d: int, mus: np.ndarray, n_seeds: int, device) -> torch.Tensor:
    """eta = lr_scaled / (sigma_p^2 d + ||mu||^2) per model: eta times the largest squared patch
    norm is the same at every d and ||mu||, so the GD discretisation (and with it the drift of
    the conserved quantity) is alike across the grid. Shape (S, 1, 1, 1), seed-major."""
    eta = params["lr_scaled"] / (params["sigma_p"] ** 2 * d + mus**2)
    eta = np.tile(eta, n_seeds)[:, None, None, None]
    return torch.as_tensor(eta, dtype=torch.float64, device=device)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One dimension d: every arm, all seeds x ||mu|| values batched on one axis."""
    d = int(point["d"])
    mus = np.asarray(data["mu_grid"])
    batch = batch_for_mu(data, d, mus, device)
    lr = step_sizes(params, d, mus, len(seeds), device)
    out = {
        "checkpoints": runtime.log_spaced_steps(params["steps"], RECORDED_STEPS, with_zero=True),
        "mu_grid": mus,
    }
    for arm in params["arms"]:
        act, scale = ARMS[arm]
        res = train_arm(batch, act, params[scale], lr, params["steps"], f"{arm} d={d}")
        for key, value in res.items():
            arr = value.detach().cpu().numpy()
            out[f"{arm}__{key}"] = arr.reshape(len(seeds), len(mus), *arr.shape[1:])
    return out


# ----------------------------------------------------------------------------- measure
def conservation_drift(w_norm2: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per model: max over neurons and checkpoints of |c_t - c_0|, divided by the largest
    squared layer norm max(||w_t||^2, v_t^2) seen in that model. Arrays (..., T, C, m)."""
    c = conserved(w_norm2, v)
    change = np.abs(c - c[..., :1, :, :]).max(axis=(-3, -2, -1))
    scale = np.maximum(w_norm2, v**2).max(axis=(-3, -2, -1))
    return change / scale


def median_neuron(values: np.ndarray) -> np.ndarray:
    """Median over the neurons (last two axes: class, filter)."""
    return np.median(values.reshape(*values.shape[:-2], -1), axis=-1)


def critical_mu(mus, test_error, level: float) -> float | None:
    """First ||mu|| where the test-error curve falls below `level` (log-linear interpolation
    between grid points); None if it never crosses inside the grid."""
    err = np.asarray(test_error, dtype=float)
    lm = np.log(np.asarray(mus, dtype=float))
    for i in range(1, len(err)):
        if err[i - 1] > level >= err[i]:
            frac = (err[i - 1] - level) / (err[i - 1] - err[i])
            return float(np.exp(lm[i - 1] + frac * (lm[i] - lm[i - 1])))
    return None


def loglog_slope(x, y) -> float:
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    lx = lx - lx.mean()
    return float(((ly - ly.mean()) * lx).sum() / (lx**2).sum())


def measure_arm(run: dict, arm: str, v0: float, level: float) -> dict:
    w2, v = run[f"{arm}__w_norm2"], run[f"{arm}__v"]  # (seeds, mu, T, C, m)
    mus = run["mu_grid"]
    test_error = run[f"{arm}__test_error"]  # (seeds, mu)
    ratio = np.sqrt(w2) / np.maximum(np.abs(v), 1e-300)
    return {
        "drift": conservation_drift(w2, v),  # (seeds, mu)
        "ratio_final": median_neuron(ratio[:, :, -1]),
        "v_rel_change": median_neuron(np.abs(v[:, :, -1] - v0) / v0),
        "v_growth": median_neuron(np.abs(v[:, :, -1]) / v0),
        "w_growth": median_neuron(np.sqrt(w2[:, :, -1] / w2[:, :, 0])),
        # median-neuron trajectories for the figure (seeds, mu, T)
        "w_norm_traj": median_neuron(np.sqrt(w2)),
        "v_abs_traj": median_neuron(np.abs(v)),
        "c0_median": median_neuron(conserved(w2[:, :, 0], v[:, :, 0])),
        "test_error": test_error,
        "train_error": run[f"{arm}__train_error"],
        "train_loss": run[f"{arm}__train_loss"],
        "mu_crit": [critical_mu(mus, e, level) for e in test_error],  # per seed
    }


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    by_d = {int(p["d"]): runs[pid] for pid, p in points.items()}
    dims = sorted(by_d)
    arms = {}
    for arm in params["arms"]:
        v0 = params[ARMS[arm][1]]
        arms[arm] = {str(d): measure_arm(by_d[d], arm, v0, params["error_level"]) for d in dims}
    return {
        "dims": dims,
        "mu_grid": np.asarray(data["mu_grid"]),
        "checkpoints": by_d[dims[0]]["checkpoints"],
        "arms": arms,
    }


# ----------------------------------------------------------------------------- verdict
def boundary_slopes(arm_metrics: dict, dims, n: int, missing: float = 0.0) -> list[float]:
    """Per seed: slope of log ||mu||_crit vs log(d/n); `missing` for a seed whose test error
    never crosses the level inside the ||mu|| grid at some d (counts against the check)."""
    crit = np.array([arm_metrics[str(d)]["mu_crit"] for d in dims], dtype=object)  # (D, seeds)
    ratio = np.asarray(dims, dtype=float) / n
    out = []
    for s in range(crit.shape[1]):
        column = crit[:, s]
        if any(c is None for c in column):
            out.append(float(missing))
        else:
            out.append(loglog_slope(ratio, column.astype(float)))
    return out


def pooled(arm_metrics: dict, key: str) -> np.ndarray:
    """(seeds, D * mu): one statistic over every dimension and ||mu|| of an arm."""
    return np.concatenate([np.asarray(m[key]) for m in arm_metrics.values()], axis=1)


def fitted_min(drift: np.ndarray, fitted: np.ndarray, missing: float = 0.0) -> list[float]:
    """Per seed: the smallest drift over that seed's models that fit every label; `missing`
    for a seed with none (counts against the ablation)."""
    return [
        float(d[f].min()) if f.any() else float(missing) for d, f in zip(drift, fitted, strict=True)
    ]


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order), theory values as floats."""
    arms, dims, n = metrics["arms"], metrics["dims"], params["n"]
    relu_drift = np.concatenate(
        [pooled(arms["relu_large"], "drift"), pooled(arms["relu_small"], "drift")], axis=1
    )
    # the ablation's drift only means something for models that trained (fit every label)
    soft_fit = pooled(arms["softplus_small"], "train_error") == 0
    soft_drift = pooled(arms["softplus_small"], "drift")
    train_error = np.concatenate([pooled(arms[a], "train_error") for a in RELU_ARMS], axis=1)
    stats = {
        "relu_drift_max": relu_drift.max(1).tolist(),
        "softplus_drift_min": fitted_min(soft_drift, soft_fit),
        "softplus_fitted_fraction": soft_fit.mean(1).tolist(),
        "small_ratio": pooled(arms["relu_small"], "ratio_final").mean(1).tolist(),
        "small_v_growth": np.log10(pooled(arms["relu_small"], "v_growth")).mean(1).tolist(),
        "large_ratio": pooled(arms["relu_large"], "ratio_final").mean(1).tolist(),
        "large_v_change": pooled(arms["relu_large"], "v_rel_change").mean(1).tolist(),
        "large_w_growth": pooled(arms["relu_large"], "w_growth").mean(1).tolist(),
        "max_train_error": train_error.max(1).tolist(),
        "kou_slope": float(theory["kou_slope"]),
        "rival_slope": float(theory["rival_slope"]),
    }
    for arm in ("relu_large", "relu_small"):
        stats[f"{arm.split('_')[1]}_boundary_slope"] = boundary_slopes(arms[arm], dims, n)
    stats["rival_slope_distance"] = [abs(x - RIVAL_SLOPE) for x in stats["large_boundary_slope"]]
    return stats
