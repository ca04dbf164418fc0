"""Benign oscillation: large-learning-rate SGD learns a weak feature that small-lr SGD misses.

Claim (Lu, Wu, Yang, Zou, "Benign Oscillation of Stochastic Gradient Descent with Large
Learning Rates", ICLR 2024, arXiv 2310.17074): in a feature-noise data model with a weak
feature present in every sample, a strong feature present in a fraction of the samples, and
noise, a two-layer CNN trained by SGD with a large (oscillating) learning rate learns the weak
feature, while SGD with a small learning rate learns the strong feature, fits the rest of the
data by memorising noise, and fails on test data that carry only the weak feature.

Data (one sample, three patches in R^d; y uniform on {+-1}):
    patch 1 = y v                          (weak feature, |v| = v_norm, every sample)
    patch 2 = y u  with probability rho    (strong feature, |u| = u_norm)
              xi'  otherwise               (noise)
    patch 3 = xi                           (noise)
with v = v_norm e_1, u = u_norm e_2 and noise N(0, sigma^2 I) on the other d - 2 coordinates
(`signal_noise.noise_patches`, "orthogonal" kind). Weak-only test data have rho = 0.

Network and loss are the shared patch model (`replica.blocks.signal_noise`):
    f(x) = F_{+1}(x) - F_{-1}(x),  F_j(x) = (1/m) sum_r sum_p sigma(<w_{j,r}, x_p>),
sigma = ReLU^2, logistic loss, minibatch SGD without replacement; all learning rates and all
seeds are one batched model (leading axis lr x seed), each with its own step size.

Theory (qualitative, the paper's theorem, plus two exact anchors computed from the data model):
  - a network that has learned only the strong feature and memorised noise has weak-only test
    accuracy 1/2: without u, its output on weak-only data is driven by the noise patches, whose
    law is symmetric under y -> -y (checked by Monte Carlo in the tests);
  - a network that has learned v has weak-only accuracy 1 (patch 1 = y v exactly).
The claim is that large-lr SGD lands near the second anchor and small-lr SGD near the first,
and that the gap is caused by the strong feature: with rho = 0 (negative control) small-lr SGD
learns v as well. "Oscillation" is measured as the largest epoch-to-epoch rise of the full
training loss.
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime
from replica.blocks import signal_noise as sn

WEAK, STRONG = 0, 1  # coordinates of v and u
NO_CLASSIFIER_ACC = 0.5  # accuracy credited to a run that diverged (it has no classifier)


# ----------------------------------------------------------------------------- data
def feature_noise_data(rng: np.random.Generator, n: int, params: dict, rho: float):
    """x (n, 3, d), y (n,), strong (n,) for the weak/strong feature-noise model."""
    d, sigma = params["dim"], params["sigma"]
    y = rng.choice(np.array([1.0, -1.0]), size=n)
    strong = rng.random(n) < rho
    x = np.empty((n, 3, d))
    x[:, 0] = 0.0
    x[:, 0, WEAK] = y * params["v_norm"]
    x[:, 1] = sn.noise_patches(rng, n, d, sigma, kind="orthogonal")
    x[strong, 1] = 0.0
    x[strong, 1, STRONG] = y[strong] * params["u_norm"]
    x[:, 2] = sn.noise_patches(rng, n, d, sigma, kind="orthogonal")
    return x, y, strong


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed and per rho of the grid: a training set; per seed: a weak-only test set."""
    out = {"seeds": np.asarray(seeds)}
    for rho in params["rhos"]:
        xs, ys, ss = [], [], []
        for seed in seeds:
            rng = np.random.default_rng([params["data_seed"], int(round(1000 * rho)), seed])
            x, y, s = feature_noise_data(rng, params["n"], params, rho)
            xs.append(x)
            ys.append(y)
            ss.append(s)
        key = rho_key(rho)
        out[f"{key}__x"], out[f"{key}__y"], out[f"{key}__strong"] = map(np.stack, (xs, ys, ss))
    xt, yt = [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], 999_999, seed])
        x, y, _ = feature_noise_data(rng, params["n_test"], params, 0.0)
        xt.append(x)
        yt.append(y)
    out["test__x"], out["test__y"] = np.stack(xt), np.stack(yt)
    return out


def rho_key(rho: float) -> str:
    return f"rho{int(round(1000 * float(rho)))}"


# ----------------------------------------------------------------------------- theory
def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    return {
        "weak_only_acc_strong_learner": 0.5,  # symmetry of the noise patches
        "weak_only_acc_weak_learner": 1.0,  # patch 1 = y v
        "feature_energy_ratio": params["rho_main"] * params["u_norm"] ** 2 / params["v_norm"] ** 2,
        "noise_to_weak": params["sigma"] ** 2 * (params["dim"] - 2) / params["v_norm"] ** 2,
    }


def weak_feature_oracle_acc(x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of sign(<v, patch 1>) (the weak-feature anchor)."""
    return float(np.mean(np.sign(x[:, 0, WEAK]) == y))


# ----------------------------------------------------------------------------- model
def checkpoints(epochs: int) -> np.ndarray:
    """Epochs at which test accuracy and feature alignment are recorded (log-spaced)."""
    pts = np.geomspace(1, max(epochs, 1), 24).round().astype(int)
    return np.unique(np.concatenate([[0], pts]))


def forward(filters, x, act):
    return sn.margin_output(sn.class_outputs(filters, x, act))


def batch_loss_gradient(filters, x, y) -> torch.Tensor:
    """Gradient of the mean logistic loss on one batch w.r.t. every model's filters, for the
    ReLU^2 network f = mean_r sum_p relu(<w_{+1,r}, x_p>)^2 - (the same for class -1).

    Closed form in two batched products (autograd's graph costs twice as much per step):
    dL/dw_{j,r} = sum_{i,p} dL/df_i * sign_j * (2 / m) relu(<w_{j,r}, x_ip>) x_ip.
    filters (B, 2, m, d), x (B, b, P, d), y (B, b) -> (B, 2, m, d)."""
    models, n_cls, width, dim = filters.shape
    b, n_patch = x.shape[1], x.shape[2]
    patches = x.reshape(models, b * n_patch, dim)
    hidden = torch.relu(torch.bmm(filters.reshape(models, n_cls * width, dim), patches.mT))
    per_class = hidden.square().view(models, n_cls, width, b, n_patch).sum(-1).mean(2)
    margin = y * (per_class[:, 0] - per_class[:, 1])  # (B, b)
    d_out = -y * torch.sigmoid(-margin) / b  # d mean softplus(-y f) / d f_i
    cls_sign = torch.tensor([1.0, -1.0], dtype=filters.dtype, device=filters.device)
    coef = (2.0 / width) * cls_sign[None, :, None] * d_out[:, None, :]  # (B, 2, b)
    d_hidden = hidden.view(models, n_cls, width, b, n_patch) * coef[:, :, None, :, None]
    grad = torch.bmm(d_hidden.view(models, n_cls * width, b * n_patch), patches)
    return grad.view(models, n_cls, width, dim)


def accuracy(filters, x, y, act) -> torch.Tensor:
    return (torch.sign(forward(filters, x, act)) == y).to(x.dtype).mean(-1)


def feature_alignment(filters: torch.Tensor, v_norm: float, u_norm: float) -> torch.Tensor:
    """max_r <w_{j,r}, y_j e> over filters, averaged over classes j: (B, 2) for (v, u)."""
    cls_sign = torch.tensor([1.0, -1.0], dtype=filters.dtype, device=filters.device)
    feats = filters[..., [WEAK, STRONG]] * cls_sign[None, :, None, None]  # (B, 2, m, 2)
    scale = torch.tensor([v_norm, u_norm], dtype=filters.dtype, device=filters.device)
    return (feats * scale).amax(2).mean(1)  # <w, j*feature>, feature of its norm


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One rho; every (learning rate, seed) pair is one model of a batch."""
    rho, lrs = float(point["rho"]), [float(lr) for lr in params["lrs"]]
    n_lr, n_seed = len(lrs), len(seeds)
    dtype = torch.float64  # logistic loss on separable data
    key = rho_key(rho)

    def batched(arr):  # (S, ...) -> (L*S, ...), model b = l * S + s
        t = torch.as_tensor(arr, dtype=dtype, device=device)
        return t.repeat(n_lr, *([1] * (t.dim() - 1)))

    x, y = batched(data[f"{key}__x"]), batched(data[f"{key}__y"])
    x_test, y_test = batched(data["test__x"]), batched(data["test__y"])
    lr = torch.tensor(lrs, dtype=dtype, device=device).repeat_interleave(n_seed)
    act = sn.activation(params["activation"])
    gen = torch.Generator().manual_seed(int(params["init_seed"]) * 7919 + int(seeds[0]))
    init = sn.init_filters(gen, n_seed, params["width"], params["dim"], params["init_std"])
    if params["activation"] != "relu2":
        raise ValueError("batch_loss_gradient is the closed form for the ReLU^2 network only")
    filters = init.repeat(n_lr, 1, 1, 1).to(device)  # same init for all lrs
    alive = torch.ones(n_lr * n_seed, dtype=torch.bool, device=device)
    n, batch, epochs = params["n"], params["batch"], params["epochs"]
    order = np.random.default_rng([params["data_seed"], 77, int(seeds[0])])
    keep = set(checkpoints(epochs).tolist())
    full_loss = np.zeros((epochs + 1, n_lr * n_seed))
    rec = {"weak_acc": [], "train_acc": [], "align": []}
    tick = runtime.Progress(epochs + 1, f"train rho={rho}")
    for epoch in range(epochs + 1):
        margins = y * forward(filters, x, act)
        loss = sn.logistic_loss(margins).mean(-1)
        alive &= torch.isfinite(loss) & (filters.abs().flatten(1).amax(1) < params["blowup"])
        filters[~alive] = 0.0  # a diverged model is frozen at f = 0 (no classifier)
        full_loss[epoch] = torch.where(alive, loss, torch.nan).cpu().numpy()
        if epoch in keep:
            rec["weak_acc"].append(accuracy(filters, x_test, y_test, act))
            rec["train_acc"].append((margins > 0).to(dtype).mean(-1))
            rec["align"].append(feature_alignment(filters, params["v_norm"], params["u_norm"]))
            tick(epoch, loss=loss[alive].mean() if alive.any() else 0.0)
        if epoch == epochs:
            break
        perm = torch.as_tensor(order.permutation(n), device=device)  # same order for all models
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            grad = batch_loss_gradient(filters, x[:, idx], y[:, idx])
            filters -= (lr * alive)[:, None, None, None] * torch.nan_to_num(grad)

    def per_lr(t):  # (L*S, ...) -> (L, S, ...)
        arr = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        return arr.reshape(n_lr, n_seed, *arr.shape[1:])

    diverged = ~alive.cpu().numpy()
    weak = torch.stack(rec["weak_acc"], -1)
    weak[torch.as_tensor(diverged)] = NO_CLASSIFIER_ACC
    return {
        "lrs": np.asarray(lrs),
        "checkpoints": checkpoints(epochs),
        "weak_acc": per_lr(weak),  # (L, S, T)
        "train_acc": per_lr(torch.stack(rec["train_acc"], -1)),
        "align": per_lr(torch.stack(rec["align"], -2)),  # (L, S, T, 2)
        # capped so a diverged run is data, not inf/NaN (nan only after divergence)
        "full_loss": per_lr(np.nan_to_num(full_loss.T, nan=-1.0).clip(max=1e6)),
        "diverged": per_lr(diverged),
    }


# ----------------------------------------------------------------------------- measure
def max_loss_rise(loss: np.ndarray, skip: int = 1) -> np.ndarray:
    """Largest relative rise of the full training loss between consecutive epochs.

    loss (..., E+1) per epoch; entries < 0 mark a diverged run (ignored). Epoch 0 -> 1 is
    skipped (`skip`) because the first epoch moves from the symmetric initialisation."""
    cur, prev = loss[..., skip + 1 :], loss[..., skip:-1]
    valid = (cur >= 0) & (prev > 0)
    rise = np.where(valid, (cur - prev) / np.where(prev > 0, prev, 1.0), -np.inf)
    best = rise.max(-1)
    return np.where(np.isfinite(best), best, 0.0)  # no valid pair at all: no rise


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    out = {}
    for pid, point in points.items():
        run = runs[pid]
        out[rho_key(point["rho"])] = {
            "rho": float(point["rho"]),
            "lrs": run["lrs"],
            "checkpoints": run["checkpoints"],
            "weak_acc": run["weak_acc"],
            "weak_acc_final": run["weak_acc"][..., -1],  # (L, S)
            "train_acc_final": run["train_acc"][..., -1],
            "align_v": run["align"][..., 0],  # (L, S, T)
            "align_u": run["align"][..., 1],
            "max_loss_rise": max_loss_rise(run["full_loss"]),  # (L, S)
            "final_loss": run["full_loss"][..., -1],
            "diverged": run["diverged"].astype(float),
        }
    return {"arms": out}


# ----------------------------------------------------------------------------- verdict
def lr_index(lrs, value: float) -> int:
    return int(np.argmin(np.abs(np.asarray(lrs, dtype=float) - value)))


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (lists in seed order); the judge aggregates them."""
    main = metrics["arms"][rho_key(params["rho_main"])]
    ctrl = metrics["arms"][rho_key(0.0)]
    small, large = (lr_index(main["lrs"], params[k]) for k in ("lr_small", "lr_large"))
    acc = np.asarray(main["weak_acc_final"], dtype=float)
    acc0 = np.asarray(ctrl["weak_acc_final"], dtype=float)
    rise = np.asarray(main["max_loss_rise"], dtype=float)

    def seeds(values):
        return [float(x) for x in np.asarray(values, dtype=float)]

    return {
        "large_lr_weak_acc": seeds(acc[large]),
        "small_lr_weak_acc": seeds(acc[small]),
        "weak_acc_gap": seeds(acc[large] - acc[small]),  # paired by seed
        "large_lr_loss_rise": seeds(rise[large]),
        "large_lr_diverged": seeds(np.asarray(main["diverged"])[large]),
        "small_lr_loss_rise": seeds(rise[small]),
        "small_lr_train_acc": seeds(np.asarray(main["train_acc_final"])[small]),
        "rho0_small_lr_weak_acc": seeds(acc0[small]),
        "rho0_weak_acc_gap": seeds(acc0[large] - acc0[small]),
        "theory_large_lr_weak_acc": float(theory["weak_only_acc_weak_learner"]),
        "theory_small_lr_weak_acc": float(theory["weak_only_acc_strong_learner"]),
    }
