"""Neural-network score estimation by gradient descent (Han, Razaviyayn, Xu, arXiv 2401.15604).

Claim. Denoising score matching (DSM) is a regression with noisy labels: for x = x_0 + sigma eps
the target -eps / sigma has conditional mean grad log p_sigma(x). A suitably parametrised, wide
network trained by gradient descent (GD) follows kernel regression with its neural tangent kernel
(NTK); prolonged training fits the label noise and the test error against the true score rises
again, so an early-stopped network generalises and a long-trained one overfits.

Setting (our reading of the design; the paper's own experiment is tabular data): x_0 from a 2-D
Gaussian mixture (4 components on a circle), one VE noise level sigma, n training pairs per seed
from `replica.blocks.score.dsm_pairs`, test points from the noised law p_sigma with its exact
score. The score network is a two-layer ReLU net in the NTK parametrisation,
    f(x) = sqrt(2 / m) sum_r a_r relu(w_r . (x, 1) / sqrt(3)),   a_r in R^2, w_r in R^3,
every weight standard normal, neurons in antisymmetric pairs (w, a), (w, -a) so that f_0 = 0,
both layers trained by full-batch GD on L = (1 / 2n) sum_i ||f(x_i) - y_i||^2 with step eta.

Theory (independent of the trained net). As m -> infinity the net's tangent kernel is
K(x, x') I_2 with K the two-layer ReLU NTK (`relu_kernels` on the inputs (x, 1)), and GD is
kernel GD, f_{k+1}(X) = f_k(X) - (eta / n) K (f_k(X) - Y). From f_0 = 0, with K / n = V diag(d) V^T
on the training inputs,
    f_k(X*) = K(X*, X) K^{-1} (I - (I - eta K / n)^k) Y
            = K(X*, X) V diag((1 - (1 - eta d)^k) / (n d)) V^T Y,
whose test MSE against the true score is a U-shaped curve in k for noisy labels (the large-d
modes carry the score and are learnt first, the small-d ones mostly noise and are learnt late) and
decreasing for exact-score labels. k* is its minimiser on the checkpoint grid.

Experiment. Per seed a training set and an initialisation, all seeds one batched torch model
(weights (S, 3, m) and (S, 2, m)); the test MSE along log-spaced GD steps for noisy labels at a
wide and a narrow width and for exact-score labels at the wide width.

Checks: the wide net's curve lies within 10 % of the kernel curve at every checkpoint (primary);
it is U-shaped; its minimiser matches k*; stopping at k* is near-optimal for the net.
Ablations: exact-score labels (no label noise: no rise); width 64 (no kernel regime: the curve
leaves the kernel's).

Diagnostics (ungated, added after the first quick result): kernel GD with the wide net's own
tangent kernel at initialisation (the finite-width kernel the net would follow if it stayed
linear), and the relative change of the tangent kernel during training. They split the net's
distance from the infinite-width curve into the init kernel's fluctuation and the kernel's motion.
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime
from replica.blocks.kernel_ridge import SpectralRidge, relu_kernels
from replica.blocks.score import GaussianMixture, dsm_pairs

INPUT_DIM = 3  # (x_1, x_2, bias)
OUTPUT_DIM = 2  # the score is a vector field on R^2


# ----------------------------------------------------------------------------- data
def mixture(params: dict) -> GaussianMixture:
    """Equal-weight isotropic components on a circle: the clean data law p_0."""
    k = params["mixture_components"]
    angles = 2 * np.pi * np.arange(k) / k
    means = params["mixture_radius"] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    covs = np.repeat(params["mixture_std"] ** 2 * np.eye(2)[None], k, axis=0)
    return GaussianMixture(np.full(k, 1.0 / k), means, covs)


def with_bias(x: np.ndarray, bias: float) -> np.ndarray:
    """(x, bias): the constant coordinate gives the ReLU features a bias."""
    return np.concatenate([x, np.full(x.shape[:-1] + (1,), bias)], axis=-1)


def checkpoints(params: dict) -> np.ndarray:
    return runtime.log_spaced_steps(params["steps"], params["n_checkpoints"], with_zero=True)


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed its own DSM training set; one shared test set from p_sigma with its exact score.

    Arrays: x_train (S, n, 2), y_noisy (S, n, 2) the DSM labels -eps / sigma, y_exact (S, n, 2)
    the true score at the same inputs, x_test (n_test, 2), score_test (n_test, 2)."""
    clean, sigma = mixture(params), params["sigma"]
    noised = clean.ve(sigma)
    test_rng = np.random.default_rng(params["data_seed"])
    x_test = noised.sample(params["n_test"], test_rng)
    xs, ys = [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], int(seed)])
        x0 = clean.sample(params["n_train"], rng)
        x, y = dsm_pairs(x0, sigma, rng.standard_normal(x0.shape))
        xs.append(x)
        ys.append(y)
    x_train = np.stack(xs)
    return {
        "x_train": x_train,
        "y_noisy": np.stack(ys),
        "y_exact": np.stack([noised.score(x) for x in x_train]),
        "x_test": x_test,
        "score_test": noised.score(x_test),
        "checkpoints": checkpoints(params),
    }


# ----------------------------------------------------------------------------- theory
def ntk_gram(x1: np.ndarray, x2: np.ndarray, bias: float) -> np.ndarray:
    """The infinite-width NTK K(x1, x2) of the two-layer net above (each output coordinate)."""
    return relu_kernels(with_bias(x1, bias), with_bias(x2, bias), hidden_layers=1)[1]


def kernel_gd_gain(d: np.ndarray, lr: float, steps: np.ndarray) -> np.ndarray:
    """(1 - (1 - lr d)^k) / d for every step k (rows) and eigenvalue d (columns); lr k at d = 0.

    expm1/log1p keep the small-d modes exact (1 - (1 - x)^k loses them to rounding); modes with
    lr d >= 1 oscillate in sign and are taken by the plain power of an integer k."""
    k = np.asarray(steps, dtype=float)[:, None]
    x = lr * np.asarray(d, dtype=float)[None, :]
    small = -np.expm1(k * np.log1p(-np.minimum(x, 0.5)))
    large = 1.0 - (1.0 - x) ** k
    reached = np.where(x < 0.5, small, large)
    return np.divide(reached, d[None, :], out=lr * k * np.ones_like(x), where=d[None, :] > 0)


def kernel_gd_predictions(gram, cross, y, lr: float, steps, n_points=None) -> np.ndarray:
    """f_k(X*) (T, n_test, out) of kernel GD from f_0 = 0 on the loss (1 / 2n) sum ||f - y||^2.

    gram K (N, N) on the training inputs, cross K(X*, X) (n_test, N), y (N, out); n_points is
    the n of the loss when the rows of gram are (output, point) pairs (N = 2n), else N."""
    n = len(gram) if n_points is None else n_points
    spectral = SpectralRidge(gram / n)
    modes = spectral.to_modes(y)  # V^T Y (n, out)
    gain = kernel_gd_gain(spectral.eigenvalues, lr, steps) / n  # (T, n)
    alpha = np.einsum("ij,tj,jo->tio", spectral.eigenvectors, gain, modes)  # K^{-1}(I - ...)Y
    return np.einsum("si,tio->tso", cross, alpha)


def test_mse(pred: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mean over test points of ||f(x) - grad log p_sigma(x)||^2 (last two axes: points, out)."""
    return ((pred - score) ** 2).sum(-1).mean(-1)


def overfit_ratio(curve: np.ndarray) -> np.ndarray:
    """Test MSE at the last checkpoint over its minimum (along the last axis)."""
    return curve[..., -1] / curve.min(-1)


def best_checkpoint(curve: np.ndarray) -> np.ndarray:
    """Index of the smallest test MSE among the checkpoints k >= 1 (k = 0 is f = 0)."""
    return 1 + np.argmin(curve[..., 1:], axis=-1)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """Kernel-GD test-MSE curves per seed, from that seed's data alone."""
    lr, bias, steps = params["lr"], params["input_bias"], data["checkpoints"]
    curves = {"noisy": [], "exact": []}
    top = []
    for s, x in enumerate(data["x_train"]):
        gram = ntk_gram(x, x, bias)
        cross = ntk_gram(data["x_test"], x, bias)
        top.append(lr * np.linalg.eigvalsh(gram / len(x))[-1])
        for labels in curves:
            pred = kernel_gd_predictions(gram, cross, data[f"y_{labels}"][s], lr, steps)
            curves[labels].append(test_mse(pred, data["score_test"]))
    noisy, exact = np.array(curves["noisy"]), np.array(curves["exact"])
    return {
        "checkpoints": steps,
        "mse_noisy": noisy,  # (S, T)
        "mse_exact": exact,
        "k_star_index": best_checkpoint(noisy),
        "k_star": steps[best_checkpoint(noisy)],
        "lr_times_top_eigenvalue": np.array(top),
    }


# ----------------------------------------------------------------------------- training
def init_net(width: int, seeds: list[int], dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """First-layer weights (S, 3, m) and read-out (S, 2, m), neurons in antisymmetric pairs.

    One generator per (seed, width): the noisy- and exact-label arms start from the same net."""
    half = width // 2
    ws, as_ = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + width)
        w = torch.randn(INPUT_DIM, half, generator=gen, dtype=torch.float64)
        a = torch.randn(OUTPUT_DIM, half, generator=gen, dtype=torch.float64)
        ws.append(torch.cat([w, w], dim=1))
        as_.append(torch.cat([a, -a], dim=1))
    return torch.stack(ws).to(dtype), torch.stack(as_).to(dtype)


def first_layer_inputs(x: np.ndarray, bias: float) -> np.ndarray:
    """u = (x, bias) / sqrt(3): the first layer sees w . u (NTK parametrisation, fan-in 3)."""
    return with_bias(x, bias) / np.sqrt(INPUT_DIM)


def forward(w: torch.Tensor, a: torch.Tensor, u: torch.Tensor):
    """Outputs f (S, 2, P) and hidden features h = relu(w . u) (S, P, m); inputs u (S, P, 3)."""
    h = torch.bmm(u, w).relu_()
    return torch.bmm(a, h.transpose(1, 2)) * (2.0 / w.shape[-1]) ** 0.5, h


def gd_step(w, a, u, h, residual, lr: float) -> None:
    """One GD step on (1 / 2n) sum_i ||f(x_i) - y_i||^2, in place; residual = f - y (S, 2, n)."""
    n, scale = u.shape[1], (2.0 / w.shape[-1]) ** 0.5
    err = residual * (scale / n)
    grad_a = torch.bmm(err, h)  # (S, 2, m)
    # relu'(z) = 1[h > 0]: the fused ReLU backward masks the back-propagated signal
    grad_z = torch.ops.aten.threshold_backward(torch.bmm(err.transpose(1, 2), a), h, 0)
    grad_w = torch.bmm(u.transpose(1, 2), grad_z)  # (S, 3, m)
    a.sub_(grad_a, alpha=lr)
    w.sub_(grad_w, alpha=lr)


def empirical_ntk(w: torch.Tensor, a: torch.Tensor, u: torch.Tensor, u2=None) -> torch.Tensor:
    """Tangent kernel Theta[s, j, j', i, i'] = <d f_j(u_i) / dp, d f_j'(u2_i') / dp>
    (S, 2, 2, P, P2), u2 = u unless given (first-layer inputs, as in forward).

    Read-out gradients give delta_jj' (2 / m) relu(z) relu(z')^T; first-layer gradients
    (2 / m) sum_r a_rj a_rj' 1[z_r > 0] 1[z'_r > 0] (u . u')."""
    u2 = u if u2 is None else u2
    m = w.shape[-1]
    (_, h), (_, h2) = forward(w, a, u), forward(w, a, u2)
    features = torch.bmm(h, h2.transpose(1, 2)) * (2.0 / m)
    inputs = torch.bmm(u, u2.transpose(1, 2))
    gated = (h > 0).to(h.dtype)[:, None] * a[:, :, None, :]  # (S, 2, P, m)
    gated2 = (h2 > 0).to(h.dtype)[:, None] * a[:, :, None, :]
    first = torch.einsum("sjpr,skqr->sjkpq", gated, gated2) * (2.0 / m) * inputs[:, None, None]
    eye = torch.eye(OUTPUT_DIM, dtype=h.dtype)[None, :, :, None, None]
    return first + eye * features[:, None, None]


def init_kernel_curve(theta0, cross0, y, score_test, lr: float, steps) -> np.ndarray:
    """Diagnostic: test MSE (S, T) of kernel GD with the net's own tangent kernel at init
    (theta0 (S, 2, 2, n, n), cross0 (S, 2, 2, n_test, n), y (S, 2, n), score_test (2, n_test)).

    It is what GD would do if the net stayed linear around its init: the gap between it and
    the infinite-width curve is the finite-width fluctuation of the init kernel, the gap
    between it and the trained net is the kernel's motion during training."""
    s, _, _, n_test, n = cross0.shape
    curves = []
    for i in range(s):
        gram = theta0[i].transpose(0, 2, 1, 3).reshape(2 * n, 2 * n)  # rows (output, point)
        cross = cross0[i].transpose(0, 2, 1, 3).reshape(2 * n_test, 2 * n)
        pred = kernel_gd_predictions(gram, cross, y[i].reshape(-1, 1), lr, steps, n_points=n)
        pred = pred.reshape(len(steps), OUTPUT_DIM, n_test)
        curves.append(((pred - score_test) ** 2).sum(1).mean(-1))
    return np.array(curves)


@runtime.no_grad
def train_width(data, labels: str, width: int, params: dict, seeds, device) -> dict:
    """Full-batch GD at one width, all seeds batched; test and train MSE at the checkpoints."""
    dtype = getattr(torch, params["dtype"])
    bias = params["input_bias"]

    def tensor(array):
        return torch.as_tensor(array, dtype=dtype, device=device)

    x = tensor(first_layer_inputs(data["x_train"], bias))  # (S, n, 3)
    y = tensor(data[f"y_{labels}"]).transpose(1, 2)  # (S, 2, n)
    x_test = tensor(first_layer_inputs(data["x_test"], bias)).expand(len(seeds), -1, -1)
    score_test = tensor(data["score_test"]).T[None]  # (1, 2, n_test)
    w, a = init_net(width, seeds, dtype)
    w, a = w.to(device), a.to(device)
    w64, a64, x64 = w.double(), a.double(), x.double()
    theta0 = empirical_ntk(w64, a64, x64)
    diagnostics = {}
    if labels == "noisy":  # the init-kernel diagnostic is read for the noisy arms only
        cross0 = empirical_ntk(w64, a64, x_test.double(), x64).cpu().numpy()
        diagnostics["init_kernel_test_mse"] = torch.as_tensor(
            init_kernel_curve(
                theta0.cpu().numpy(),
                cross0,
                y.double().cpu().numpy(),
                data["score_test"].T,
                params["lr"],
                data["checkpoints"],
            )
        )
    keep = set(int(k) for k in data["checkpoints"])
    test_curve, train_curve = [], []
    tick = runtime.Progress(params["steps"] + 1, f"train {labels} width {width}")
    for step in range(params["steps"] + 1):
        f, h = forward(w, a, x)
        residual = f - y
        if step in keep:
            f_test, _ = forward(w, a, x_test)
            test_curve.append(((f_test - score_test) ** 2).sum(1).mean(-1))
            train_curve.append((residual**2).sum(1).mean(-1))
        tick(step)
        if step < params["steps"]:
            gd_step(w, a, x, h, residual, params["lr"])
    return {
        "test_mse": torch.stack(test_curve, dim=1),  # (S, T)
        "train_mse": torch.stack(train_curve, dim=1),
        "theta0": theta0,
        "thetaT": empirical_ntk(w.double(), a.double(), x64),
        **diagnostics,
    }


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One label kind (point['labels']) at each of its widths, all seeds batched."""
    labels = point["labels"]
    widths = params["widths"][labels]
    out = {"widths": np.asarray(widths)}
    for width in widths:
        res = train_width(data, labels, width, params, seeds, device)
        for key, value in res.items():
            out[f"{key}__w{width}"] = value.detach().cpu().double().numpy()
    return out


# ----------------------------------------------------------------------------- measure
def relative_gap(curve: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """max over checkpoints of |curve / reference - 1| (along the last axis)."""
    return np.abs(curve / reference - 1.0).max(-1)


def kernel_change(theta0: np.ndarray, theta_t: np.ndarray) -> np.ndarray:
    """||Theta_T - Theta_0||_F / ||Theta_0||_F per seed (all output blocks)."""
    axes = tuple(range(1, theta0.ndim))
    return np.sqrt(((theta_t - theta0) ** 2).sum(axes) / (theta0**2).sum(axes))


def ntk_deviation(theta0: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """||Theta_0 - K (x) I||_F / ||K (x) I||_F per seed; theta0 (S, 2, 2, n, n), limit (S, n, n)."""
    full = np.eye(OUTPUT_DIM)[None, :, :, None, None] * limit[:, None, None]
    diff = np.sqrt(((theta0 - full) ** 2).sum(axis=(1, 2, 3, 4)))
    return diff / np.sqrt((full**2).sum(axis=(1, 2, 3, 4)))


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Test/train MSE curves per arm (labels, width) and the init-NTK deviation."""
    bias = params["input_bias"]
    limit = np.stack([ntk_gram(x, x, bias) for x in data["x_train"]])  # data only
    arms = {}
    for pid, point in points.items():
        run = runs[pid]
        for width in (int(w) for w in run["widths"]):
            theta0 = run[f"theta0__w{width}"]
            arm = {
                "labels": point["labels"],
                "width": width,
                "test_mse": run[f"test_mse__w{width}"],
                "train_mse": run[f"train_mse__w{width}"],
                "init_ntk_deviation": ntk_deviation(theta0, limit),
                "kernel_change": kernel_change(theta0, run[f"thetaT__w{width}"]),
            }
            if f"init_kernel_test_mse__w{width}" in run:
                arm["init_kernel_test_mse"] = run[f"init_kernel_test_mse__w{width}"]
            arms[f"{point['labels']}_w{width}"] = arm
    return {"checkpoints": data["checkpoints"], "arms": arms}


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) of the manifest's checks."""
    wide, narrow = max(params["widths"]["noisy"]), min(params["widths"]["noisy"])
    arms, steps = metrics["arms"], np.asarray(theory["checkpoints"], dtype=float)
    nn_wide = np.asarray(arms[f"noisy_w{wide}"]["test_mse"])  # (S, T)
    nn_narrow = np.asarray(arms[f"noisy_w{narrow}"]["test_mse"])
    nn_exact = np.asarray(arms[f"exact_w{wide}"]["test_mse"])
    kernel, kernel_exact = np.asarray(theory["mse_noisy"]), np.asarray(theory["mse_exact"])
    k_star = np.asarray(theory["k_star_index"])
    seeds = np.arange(len(nn_wide))
    return {
        "curve_gap_wide": relative_gap(nn_wide, kernel).tolist(),
        "overfit_ratio_wide": overfit_ratio(nn_wide).tolist(),
        "early_stop_log_ratio": np.log(steps[best_checkpoint(nn_wide)] / steps[k_star]).tolist(),
        "stopping_excess_wide": (nn_wide[seeds, k_star] / nn_wide[:, 1:].min(-1)).tolist(),
        "overfit_ratio_exact": overfit_ratio(nn_exact).tolist(),
        "curve_gap_narrow": relative_gap(nn_narrow, kernel).tolist(),
        "overfit_ratio_theory": overfit_ratio(kernel).tolist(),
        "overfit_ratio_exact_theory": overfit_ratio(kernel_exact).tolist(),
        "lr_times_top_eigenvalue": list(theory["lr_times_top_eigenvalue"]),
        "init_ntk_deviation_wide": list(arms[f"noisy_w{wide}"]["init_ntk_deviation"]),
        # ungated diagnostics (added after the first quick result, see the manifest)
        "curve_gap_wide_to_init_kernel": relative_gap(
            nn_wide, np.asarray(arms[f"noisy_w{wide}"]["init_kernel_test_mse"])
        ).tolist(),
        "init_kernel_gap_to_limit": relative_gap(
            np.asarray(arms[f"noisy_w{wide}"]["init_kernel_test_mse"]), kernel
        ).tolist(),
        "curve_gap_wide_to_k_star": [
            relative_gap(nn_wide[i, : k + 1], kernel[i, : k + 1]) for i, k in enumerate(k_star)
        ],
        "kernel_change_wide": list(arms[f"noisy_w{wide}"]["kernel_change"]),
        "kernel_change_narrow": list(arms[f"noisy_w{narrow}"]["kernel_change"]),
    }
