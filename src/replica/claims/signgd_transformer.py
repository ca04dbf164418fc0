"""SignGD on a two-layer transformer: fast training, poor generalization, Adam alike.

Claim (Li, Huang, Han, Zhou, Suzuki, Zhu & Chen, "On the Optimization and Generalization of
Two-layer Transformers with Sign Gradient Descent", ICLR 2025, arXiv 2410.04870): a softmax
attention layer with trainable query and key matrices, followed by a linear value layer,
trained by sign gradient descent on linearly separable data made of a signal token y mu and a
sparse noise token xi, drives the training loss to zero fast while the test loss stays high:
the noise is memorised, partly through the attention, which learns to look at the noise token.
Adam (small eps) behaves the same way; gradient descent on the same data generalises, so the
failure is the optimizer's, not the data's alone.

Data (the shared signal-noise model, `replica.blocks.signal_noise.patch_dataset(noise="sparse")`):
x = [x1, x2] in R^{2 x d}, x1 = y mu with mu = |mu| e_1, x2 = xi with s random coordinates
(outside e_1) equal to +-sigma.

Network (seeds are a leading batch axis), with W_Q, W_K in R^{m_k x d}, W_{V,j} in R^{m_v x d}:

    s^(l) = softmax_a( <W_Q x_l, W_K x_a> ),   v_j(x) = (1/m_v) sum_r <w_{V,j,r}, x>,
    F_j(X) = sum_l sum_a s^(l)_a v_j(x_a),     f = F_{+1} - F_{-1},   loss log(1 + e^{-y f}).

Theory (data only). In the first stage the attention is uniform (small init) and every
per-sample loss derivative has the same sign, so the value gradient of class j is, up to
positive per-sample weights, -j sum_i y_i (y_i mu + xi_i). Sign descent therefore moves every
coordinate of w_{V,j,r} by eta per step in the direction u = sign(n mu + sum_i y_i xi_i), however
small the gradient: the value signal grows like eta t |mu| and the value noise of sample i like
eta t y_i <u, xi_i> (= eta t s sigma when its coordinates are its own). Gradient descent moves
along n mu + sum_i y_i xi_i itself, so its ratios are n |mu|^2 against y_i <sum_k y_k xi_k, xi_i>:

    R_sign = mean_i y_i <u, xi_i> / |mu|          (~ s sigma / |mu|,       noise wins if > 1)
    R_gd   = mean_i y_i <sum_k y_k xi_k, xi_i> / (n |mu|^2)   (~ s sigma^2 / (n |mu|^2)).

With s sigma > |mu| but s sigma^2 < n |mu|^2 (our setting), sign descent memorises noise much
faster than it learns the signal and gradient descent does the opposite: the paper's "SignGD
needs higher-quality data than GD". A model that has not learned from the signal predicts
f ~ 0 on fresh data, i.e. a test loss near its initial log 2.

Numerics: the sparse tokens are stored as (coordinate, value) lists, so a projection W x is a
gather of s columns and its gradient a scatter; float64 throughout (logistic loss).
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime
from replica.blocks import signal_noise as sn

OPTIMIZERS = ("signgd", "adam", "gd")
LOG2 = float(np.log(2.0))
EPS_MARGIN = 100.0  # sqrt(v_hat) below EPS_MARGIN * eps: eps is not negligible there


# ----------------------------------------------------------------------------- data
def sparse_tokens(x: np.ndarray, sparsity: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense tokens (N, 2, d) -> coordinate and value lists (N, 2, s), zero-padded.

    The signal token has one non-zero (coordinate 0), the noise token exactly s."""
    n = x.shape[0]
    idx = np.zeros((n, 2, sparsity), dtype=np.int64)
    val = np.zeros((n, 2, sparsity))
    for i in range(n):
        for p in range(2):
            nz = np.flatnonzero(x[i, p])
            idx[i, p, : len(nz)] = nz
            val[i, p, : len(nz)] = x[i, p, nz]
    return idx, val


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """One training set and one test set per seed, from the shared sparse-noise model."""
    out = {}
    for split, n in (("train", params["n_train"]), ("test", params["n_test"])):
        idx, val, label = [], [], []
        for seed in seeds:
            rng = np.random.default_rng([int(seed), 0 if split == "train" else 1])
            draw = sn.patch_dataset(
                rng,
                n,
                params["dim"],
                params["signal_norm"],
                sigma=params["sigma"],
                noise="sparse",
                sparsity=params["sparsity"],
            )
            i, v = sparse_tokens(draw["x"], params["sparsity"])
            idx.append(i)
            val.append(v)
            label.append(draw["label"])
        out[f"{split}_idx"] = np.stack(idx)
        out[f"{split}_val"] = np.stack(val)
        out[f"{split}_label"] = np.stack(label)
    return out


# --------------------------------------------------------------------------- theory
def stage_one_ratios(idx: np.ndarray, val: np.ndarray, label: np.ndarray, signal_norm: float):
    """Data-only value-noise / value-signal ratios of the first stage, per seed.

    idx, val: noise tokens as coordinate/value lists (S, n, s); label (S, n). Returns
    (R_sign, R_gd), each (S,). Sums over samples are done on the dense noise vectors."""
    n_seeds, n, _ = idx.shape
    dim = int(idx.max()) + 1
    r_sign, r_gd = [], []
    for k in range(n_seeds):
        xi = np.zeros((n, dim))
        np.add.at(xi, (np.arange(n)[:, None], idx[k]), val[k])
        pull = label[k] @ xi  # sum_i y_i xi_i (zero on the signal coordinate)
        u = np.sign(pull)
        r_sign.append(np.mean(label[k] * (xi @ u)) / signal_norm)
        r_gd.append(np.mean(label[k] * (xi @ pull)) / (n * signal_norm**2))
    return np.asarray(r_sign), np.asarray(r_gd)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    mu = params["signal_norm"]
    r_sign, r_gd = stage_one_ratios(
        data["train_idx"][:, :, 1], data["train_val"][:, :, 1], data["train_label"], mu
    )
    s, sigma, n = params["sparsity"], params["sigma"], params["n_train"]
    return {
        "ratio_sign": r_sign,
        "ratio_gd": r_gd,
        "ratio_sign_disjoint": s * sigma / mu,  # closed form when no coordinate is shared
        "ratio_gd_disjoint": s * sigma**2 / (n * mu**2),
        "test_loss_unlearned": LOG2,  # f = 0 on fresh data
    }


# ---------------------------------------------------------------------------- model
def project(w: torch.Tensor, idx: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """W x for sparse tokens: w (S, m, d), idx/val (S, N, P, s) -> (S, N, P, m)."""
    seeds = torch.arange(w.shape[0], device=w.device)[:, None, None, None]
    cols = w.transpose(1, 2)[seeds, idx]  # (S, N, P, s, m)
    return torch.einsum("snpk,snpkm->snpm", val, cols)


def forward(weights: dict, idx, val):
    """f (S, N) and the attention weights (S, N, query l, key a)."""
    q = project(weights["wq"], idx, val)
    k = project(weights["wk"], idx, val)
    attn = torch.softmax(torch.einsum("snlm,snam->snla", q, k), dim=-1)
    s, n, p, _ = q.shape
    values = project(weights["wv"], idx, val).reshape(s, n, p, 2, -1).mean(-1)  # (S,N,P,j)
    out = torch.einsum("snla,snaj->snj", attn, values)
    return out[..., 0] - out[..., 1], attn


def init_weights(seeds, params: dict, device) -> dict:
    d, mk, mv, s0 = params["dim"], params["m_k"], params["m_v"], params["sigma0"]
    out = {"wq": [], "wk": [], "wv": []}
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed) * 7919 + 11)
        out["wq"].append(s0 * torch.randn(mk, d, generator=gen, dtype=torch.float64))
        out["wk"].append(s0 * torch.randn(mk, d, generator=gen, dtype=torch.float64))
        out["wv"].append(s0 * torch.randn(2 * mv, d, generator=gen, dtype=torch.float64))
    return {k: torch.stack(v).to(device).requires_grad_() for k, v in out.items()}


class Optimizer:
    """SignGD, Adam (bias-corrected, tiny eps) or GD, elementwise on batched weights."""

    def __init__(self, kind: str, lr: float, betas=(0.9, 0.999), eps: float = 1e-12):
        self.kind, self.lr, self.betas, self.eps = kind, lr, betas, eps
        self.state: dict = {}
        self.t = 0

    @runtime.no_grad
    def step(self, weights: dict) -> None:
        self.t += 1
        b1, b2 = self.betas
        for name, w in weights.items():
            g = w.grad
            if self.kind == "signgd":
                w -= self.lr * torch.sign(g)
            elif self.kind == "gd":
                w -= self.lr * g
            else:
                m, v = self.state.setdefault(name, (torch.zeros_like(w), torch.zeros_like(w)))
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat, v_hat = m / (1 - b1**self.t), v / (1 - b2**self.t)
                w -= self.lr * m_hat / (v_hat.sqrt() + self.eps)
            w.grad = None

    @runtime.no_grad
    def eps_dominated_share(self, eps: float, seeds: int) -> torch.Tensor:
        """Adam: per seed, the share of active coordinates (v > 0) with sqrt(v_hat) below
        EPS_MARGIN * eps, i.e. where eps changes the update (0 for a sign-like Adam)."""
        hit = torch.zeros(seeds, dtype=torch.float64)
        active = torch.zeros(seeds, dtype=torch.float64)
        b2 = self.betas[1]
        for m, v in self.state.values():
            del m
            root = (v / (1 - b2**self.t)).sqrt().reshape(seeds, -1).cpu()
            on = root > 0
            hit += (on & (root < EPS_MARGIN * eps)).double().sum(-1)
            active += on.double().sum(-1)
        return hit / active.clamp_min(1.0)


@runtime.no_grad
def snapshot(weights: dict, init: dict, tensors: dict, params: dict) -> dict:
    """Everything the measurements need at one checkpoint (per seed)."""
    out = {}
    for split in ("train", "test"):
        f, attn = forward(weights, tensors[f"{split}_idx"], tensors[f"{split}_val"])
        y = tensors[f"{split}_label"]
        out[f"{split}_loss"] = torch.nn.functional.softplus(-y * f).mean(-1)
        out[f"{split}_acc"] = (y * f > 0).double().mean(-1)
        out[f"{split}_attn_noise"] = attn[..., 1].mean(dim=(-1, -2))  # weight on the noise key
    # value signal and value noise: movement of v_{+1} - v_{-1} along y mu and y_i xi_i
    idx, val, y = tensors["train_idx"], tensors["train_val"], tensors["train_label"]
    moved = weights["wv"] - init["wv"]
    s = moved.shape[0]
    dv = project(moved, idx, val).reshape(s, idx.shape[1], 2, 2, -1).mean(-1)
    margin_move = 0.5 * (dv[..., 0] - dv[..., 1]) * y[..., None]  # (S, n, P)
    out["value_signal"] = margin_move[:, :, 0].mean(-1) / params["signal_norm"]
    out["value_noise"] = margin_move[:, :, 1].mean(-1) / params["signal_norm"]
    # query-key noise: does <w_{Q,r}, xi_i> have the sign of <w_{K,r}, xi_i>?
    qn = project(weights["wq"], idx, val)[:, :, 1]
    kn = project(weights["wk"], idx, val)[:, :, 1]
    out["qk_noise_agree"] = (torch.sign(qn) == torch.sign(kn)).double().mean(dim=(-1, -2))
    # query-key signal: <W_Q e_1, W_K e_1> (sign and size of the signal-signal score)
    out["qk_signal"] = (weights["wq"][:, :, 0] * weights["wk"][:, :, 0]).sum(-1)
    return out


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One optimizer (point['optimizer']), every seed in one batched model, full batch."""
    kind = point["optimizer"]
    tensors = {key: torch.as_tensor(value, device=device) for key, value in data.items()}
    for key in ("train_label", "test_label"):
        tensors[key] = tensors[key].double()
    weights = init_weights(seeds, params, device)
    init = {k: w.detach().clone() for k, w in weights.items()}
    steps = int(params["steps"][kind])
    marks = set(runtime.log_spaced_steps(steps, params["n_checkpoints"], with_zero=True).tolist())
    opt = Optimizer(kind, params["lr"][kind], eps=params["adam_eps"])
    tick = runtime.Progress(steps, f"train {kind}")
    y = tensors["train_label"]
    saved = []
    for step in range(steps + 1):
        if step in marks:
            saved.append(snapshot(weights, init, tensors, params))
        if step == steps:
            break
        f, _ = forward(weights, tensors["train_idx"], tensors["train_val"])
        loss = torch.nn.functional.softplus(-y * f).mean(-1)
        loss.sum().backward()  # seeds are independent: the sum separates
        opt.step(weights)
        tick(step, loss=float(loss.detach().mean()))
    out = {key: torch.stack([s[key] for s in saved], dim=1) for key in saved[0]}
    out = {key: value.cpu().numpy() for key, value in out.items()}
    out["steps"] = runtime.log_spaced_steps(steps, params["n_checkpoints"], with_zero=True)
    if kind == "adam":  # is eps negligible? the run's eps, and the torch default 1e-8
        n_seeds = len(seeds)
        out["eps_dominated_share"] = opt.eps_dominated_share(opt.eps, n_seeds).numpy()
        out["eps_dominated_share_1e-8"] = opt.eps_dominated_share(1e-8, n_seeds).numpy()
    return out


# -------------------------------------------------------------------------- measure
def ratio_at(run: dict, step: int) -> np.ndarray:
    """Value noise / value signal at the checkpoint nearest `step` (per seed)."""
    k = int(np.argmin(np.abs(np.asarray(run["steps"]) - step)))
    return np.asarray(run["value_noise"])[:, k] / np.asarray(run["value_signal"])[:, k]


def first_step_above(steps: np.ndarray, values: np.ndarray, level: float) -> np.ndarray:
    """Per seed: first checkpoint at which values >= level (None if never)."""
    out = []
    for row in np.asarray(values):
        hit = np.flatnonzero(row >= level)
        out.append(float(steps[hit[0]]) if hit.size else None)
    return out


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    out = {}
    for pid, run in runs.items():
        kind = points[pid]["optimizer"]
        steps = np.asarray(run["steps"])
        scalars = ("eps_dominated_share", "eps_dominated_share_1e-8")
        curves = {key: np.asarray(run[key]) for key in run if key not in ("steps", *scalars)}
        out[kind] = {
            "steps": steps,
            **curves,
            **{key: np.asarray(run[key]) for key in scalars if key in run},
            "final": {key: value[:, -1] for key, value in curves.items()},
            "stage_one_ratio": ratio_at(run, params["stage_one_step"]),
            "step_train_loss_1e-3": first_step_above(steps, -curves["train_loss"], -1e-3),
            "step_attn_noise_0.9": first_step_above(steps, curves["train_attn_noise"], 0.9),
        }
    return out


# -------------------------------------------------------------------------- verdict
def relative_error(measured, predicted) -> np.ndarray:
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    return np.abs(measured - predicted) / np.abs(predicted)


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (lists in seed order); the judge aggregates them."""
    sign, adam, gd = metrics["signgd"], metrics["adam"], metrics["gd"]
    sign_test = np.asarray(sign["final"]["test_loss"], dtype=float)
    adam_test = np.asarray(adam["final"]["test_loss"], dtype=float)

    def seeds(values):
        return [float(x) for x in np.asarray(values, dtype=float)]

    return {
        "signgd_train_loss": seeds(sign["final"]["train_loss"]),
        "signgd_test_loss": seeds(sign_test),
        "adam_train_loss": seeds(adam["final"]["train_loss"]),
        "adam_test_loss": seeds(adam_test),
        "adam_signgd_test_ratio": seeds(adam_test / sign_test),
        "adam_signgd_test_gap": seeds(np.abs(adam_test - sign_test) / sign_test),
        "signgd_attn_noise": seeds(sign["final"]["train_attn_noise"]),
        "signgd_stage_one_error": seeds(
            relative_error(sign["stage_one_ratio"], theory["ratio_sign"])
        ),
        "signgd_stage_one_ratio": seeds(sign["stage_one_ratio"]),
        "theory_stage_one_ratio": float(np.mean(theory["ratio_sign"])),
        "adam_stage_one_ratio": seeds(adam["stage_one_ratio"]),
        "adam_eps_dominated_share": seeds(adam["eps_dominated_share"]),
        "adam_eps_default_dominated_share": seeds(adam["eps_dominated_share_1e-8"]),
        "gd_stage_one_ratio": seeds(gd["stage_one_ratio"]),
        "gd_stage_one_error": seeds(relative_error(gd["stage_one_ratio"], theory["ratio_gd"])),
        "gd_test_loss": seeds(gd["final"]["test_loss"]),
        "gd_train_loss": seeds(gd["final"]["train_loss"]),
        "signgd_test_acc": seeds(sign["final"]["test_acc"]),
        "adam_test_acc": seeds(adam["final"]["test_acc"]),
        "gd_test_acc": seeds(gd["final"]["test_acc"]),
        "theory_test_loss": float(theory["test_loss_unlearned"]),
    }
