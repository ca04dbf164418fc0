"""Paired outliers with opposing signals drive the edge of stability.

Claim (Rosenfeld & Risteski, "Outliers with Opposing Signals Have an Outsized Effect on Neural
Network Optimization", ICLR 2024, arXiv 2311.04163): small groups of training points that share
a large feature but pull it towards opposite labels ("opposing signals") dominate full-batch
training. As the network learns, the curvature along that feature grows (progressive
sharpening) until the top Hessian eigenvalue reaches the stability limit 2/eta of gradient
descent; from then on the network's use of the feature oscillates, and the losses of the two
groups rise and fall in anti-phase, producing loss spikes (the edge of stability).

Data. Background: a Gaussian mixture x = y mu + sigma xi (labels y = +/-1, mu = |mu| e_1).
Two outlier groups of n_out points each share a large feature u = |u| e_2 (|u| = 10) and
carry the core feature of their own label: group A  x = u + mu + sigma xi, y = +1;
group B  x = u - mu + sigma xi, y = -1. Along u the groups disagree (A says u -> +1, B says
u -> -1): the signals are opposing. Controls: no outlier groups ("none"); outliers whose u
agrees with their labels (group B carries -u, "aligned").

Model. f(x) = v . relu(W x), W_ij ~ N(0, 1/d), v_j ~ N(0, 1/h), MSE L = 1/(2n) sum (f - y)^2,
full-batch GD with step eta; seeds are a batch axis of one model. The top Hessian eigenpair
is tracked by warm-started power iteration on Hessian-vector products (double backward).

Theory (data only, no trained network):
  * the stability limit of GD on a quadratic, lambda_max = 2 / eta (closed form);
  * the direction in input space that dominates the curvature: the top eigenvector of the
    input second moment M = X^T X / n, which the outliers make ~ e_2 (= u / |u|) with
    eigenvalue ~ 2 n_out |u|^2 / n; for the "none" data it is the core direction e_1.
    The oscillation should live along it: the top Hessian eigenvector's first-layer block
    (an h x d matrix) should have its leading right singular vector along this direction.
"""

from __future__ import annotations

import numpy as np
import torch

from replica.runtime import Progress

GROUPS = ("background", "A", "B")


# ----------------------------------------------------------------------------- data
def one_dataset(params: dict, mode: str, seed: int):
    """x (n, d), y (n,), group (n,) in {0: background, 1: A, 2: B}."""
    rng = np.random.default_rng([params["data_seed"], seed])
    d, n_bg, n_out = params["d"], params["n_background"], params["n_outliers"]
    mu = params["mu_norm"] * np.eye(d)[0]
    u = params["u_norm"] * np.eye(d)[1]
    y = np.where(rng.random(n_bg) < 0.5, 1.0, -1.0)
    x = y[:, None] * mu + params["sigma"] * rng.normal(size=(n_bg, d))
    group = np.zeros(n_bg, dtype=np.int64)
    if mode != "none":
        for g, label in ((1, 1.0), (2, -1.0)):
            # opposing: both groups carry +u; aligned: group B carries -u (u agrees with y)
            sign_u = -1.0 if (mode == "aligned" and label < 0) else 1.0
            xo = sign_u * u + label * mu + params["sigma"] * rng.normal(size=(n_out, d))
            x = np.vstack([x, xo])
            y = np.concatenate([y, np.full(n_out, label)])
            group = np.concatenate([group, np.full(n_out, g)])
    return x, y, group


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """One dataset per (mode, seed): x_<mode> (S, n, d), y_<mode> (S, n), group_<mode> (n,)."""
    out = {}
    for mode in params["modes"]:
        sets = [one_dataset(params, mode, s) for s in seeds]
        out[f"x_{mode}"] = np.stack([s[0] for s in sets])
        out[f"y_{mode}"] = np.stack([s[1] for s in sets])
        out[f"group_{mode}"] = sets[0][2]
    return out


# ----------------------------------------------------------------------------- theory
def top_input_direction(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Top eigenpair of the input second moment M = X^T X / n (per dataset)."""
    lam, vec = np.linalg.eigh(x.T @ x / len(x))
    return float(lam[-1]), vec[:, -1]


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    out = {"eos_threshold": 2.0 / params["lr"], "lr": params["lr"]}
    for mode in params["modes"]:
        pairs = [top_input_direction(x) for x in data[f"x_{mode}"]]
        out[f"input_top_eig_{mode}"] = [p[0] for p in pairs]
        out[f"input_top_dir_{mode}"] = [p[1] for p in pairs]
        # how much of the data's top direction is the outlier feature e_2
        out[f"input_top_dir_on_u_{mode}"] = [abs(p[1][1]) for p in pairs]
    n = params["n_background"] + 2 * params["n_outliers"]
    # leading-order estimate: 2 n_out points with |x|^2 ~ |u|^2 along e_2
    out["outlier_eig_estimate"] = 2 * params["n_outliers"] * params["u_norm"] ** 2 / n
    return out


# ----------------------------------------------------------------------------- model
def init_net(n_nets: int, d: int, width: int, seed: int, device):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n_nets, width, d, generator=gen, dtype=torch.float64) / d**0.5
    v = torch.randn(n_nets, width, generator=gen, dtype=torch.float64) / width**0.5
    return w.to(device), v.to(device)


def outputs(w, v, x):
    """f (S, n) for batched nets: f = v . relu(W x)."""
    return torch.einsum("sh,snh->sn", v, torch.relu(torch.einsum("snd,shd->snh", x, w)))


def per_point_loss(w, v, x, y):
    return 0.5 * (outputs(w, v, x) - y) ** 2


def top_hessian_eig(w, v, x, y, vec, iters: int):
    """Largest Hessian eigenvalue per net by power iteration from vec (warm start).

    The nets are independent, so the Hessian of the summed loss is block diagonal and one
    double-backward gives every net's Hessian-vector product at once."""
    w = w.detach().requires_grad_()
    v = v.detach().requires_grad_()
    loss = per_point_loss(w, v, x, y).mean(1).sum()
    gw, gv = torch.autograd.grad(loss, [w, v], create_graph=True)
    lam = None
    for _ in range(iters):
        norm = torch.sqrt((vec[0] ** 2).sum((1, 2)) + (vec[1] ** 2).sum(1))
        vec = [vec[0] / norm[:, None, None], vec[1] / norm[:, None]]
        hw, hv = torch.autograd.grad(
            (gw * vec[0]).sum() + (gv * vec[1]).sum(), [w, v], retain_graph=True
        )
        lam = (hw * vec[0]).sum((1, 2)) + (hv * vec[1]).sum(1)
        vec = [hw.detach(), hv.detach()]
    norm = torch.sqrt((vec[0] ** 2).sum((1, 2)) + (vec[1] ** 2).sum(1))
    return lam.detach(), [vec[0] / norm[:, None, None], vec[1] / norm[:, None]]


def gd_step(w, v, x, y, lr: float):
    """One full-batch GD step on the MSE with hand-written gradients; returns per-point loss."""
    pre = torch.einsum("snd,shd->snh", x, w)
    h = torch.relu(pre)
    f = torch.einsum("sh,snh->sn", v, h)
    err = (f - y) / x.shape[1]  # dL/df
    grad_v = torch.einsum("sn,snh->sh", err, h)
    back = err[..., None] * v[:, None, :] * (pre > 0)
    grad_w = torch.einsum("snh,snd->shd", back, x)
    return w - lr * grad_w, v - lr * grad_v, 0.5 * (f - y) ** 2


def losses_by_group(per: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(S, 3): total loss and the mean loss of groups A and B (0 where a group is absent)."""
    cols = [per.mean(1)]
    for g in (1, 2):
        sel = group == g
        cols.append(per[:, sel].mean(1) if sel.any() else torch.zeros_like(per[:, 0]))
    return torch.stack(cols, 1)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One data mode, all seeds batched. Group losses every step, the top Hessian eigenpair
    every `eig_every` steps."""
    mode = point["mode"]
    x = torch.as_tensor(data[f"x_{mode}"], device=device)
    y = torch.as_tensor(data[f"y_{mode}"], device=device)
    group = torch.as_tensor(data[f"group_{mode}"], device=device)
    steps, every, lr = params["steps"], params["eig_every"], params["lr"]
    w, v = init_net(len(seeds), x.shape[2], params["width"], 1000 + seeds[0], device)
    gen = torch.Generator().manual_seed(7 + seeds[0])
    vec = [torch.randn(w.shape, generator=gen, dtype=w.dtype).to(device), torch.zeros_like(v)]
    group_loss, eig_t, eig, eig_w = [], [], [], []
    tick = Progress(steps, f"train {mode}")
    for step in range(steps + 1):
        if step % every == 0:
            iters = params["power_iters_first"] if step == 0 else params["power_iters"]
            lam, vec = top_hessian_eig(w, v, x, y, vec, iters)
            eig_t.append(step)
            eig.append(lam)
            eig_w.append(vec[0])
        if step == steps:
            per = per_point_loss(w, v, x, y)
        else:
            w, v, per = gd_step(w, v, x, y, lr)
        group_loss.append(losses_by_group(per, group))
        tick(step, loss=float(per.mean()))
    return {
        "loss": torch.stack(group_loss, 1).cpu().numpy(),  # (S, T+1, 3): total, A, B
        "eig_steps": np.asarray(eig_t),
        "eig": torch.stack(eig, 1).cpu().numpy(),  # (S, C)
        "eigvec_w_last": eig_w[-1].cpu().numpy(),  # (S, h, d)
    }


# ----------------------------------------------------------------------------- measure
def eos_onset(eig: np.ndarray, threshold: float, frac: float) -> int | None:
    """Index of the first checkpoint with eig >= frac * threshold, or None."""
    hit = np.flatnonzero(eig >= frac * threshold)
    return int(hit[0]) if hit.size else None


def fraction_at_eos(eig: np.ndarray, threshold: float, onset: int | None, tol: float) -> float:
    """Fraction of checkpoints from onset on with |eig / threshold - 1| <= tol (0 if no onset)."""
    if onset is None:
        return 0.0
    rest = eig[onset:]
    return float(np.mean(np.abs(rest / threshold - 1) <= tol))


def antiphase_correlation(loss_a: np.ndarray, loss_b: np.ndarray) -> float:
    """Pearson correlation of the step-to-step changes of two loss curves (-1: anti-phase)."""
    da, db = np.diff(loss_a), np.diff(loss_b)
    da, db = da - da.mean(), db - db.mean()
    denom = np.sqrt((da**2).sum() * (db**2).sum())
    return float((da * db).sum() / denom) if denom > 0 else 0.0


def max_loss_jump(loss: np.ndarray) -> float:
    """Largest one-step relative increase of the total loss, L(t+1) / L(t) - 1."""
    return float(np.max(loss[1:] / loss[:-1]) - 1)


def eigvec_input_direction(eigvec_w: np.ndarray) -> np.ndarray:
    """Leading right singular vector of the first-layer block (h, d) -> (d,)."""
    return np.linalg.svd(eigvec_w, full_matrices=False)[2][0]


def measure_mode(run: dict, params: dict, top_dir: list) -> dict:
    threshold = 2.0 / params["lr"]
    steps = run["eig_steps"]
    rec = {key: [] for key in ("onset_step", "eos_fraction", "antiphase", "max_jump", "dir_cos")}
    rec["max_eig_ratio"], rec["eos_eig_ratio"] = [], []
    for s in range(len(run["eig"])):
        eig, loss = run["eig"][s], run["loss"][s]
        onset = eos_onset(eig, threshold, params["onset_frac"])
        # correlation window: the edge-of-stability phase, or the second half if never reached
        start = int(steps[onset]) if onset is not None else params["steps"] // 2
        start = min(start, params["steps"] - params["min_window"])  # at least min_window steps
        rec["onset_step"].append(None if onset is None else int(steps[onset]))
        rec["eos_fraction"].append(fraction_at_eos(eig, threshold, onset, params["eos_tol"]))
        rec["antiphase"].append(antiphase_correlation(loss[start:, 1], loss[start:, 2]))
        rec["max_jump"].append(max_loss_jump(loss[start:, 0]))
        rec["max_eig_ratio"].append(float(eig.max() / threshold))
        # mean sharpness / (2 / eta) over the edge-of-stability phase; a seed that never gets
        # there: over the second half of training (below the onset level, outside the band)
        phase = eig[onset:] if onset is not None else eig[len(eig) // 2 :]
        rec["eos_eig_ratio"].append(float(np.mean(phase) / threshold))
        direction = eigvec_input_direction(run["eigvec_w_last"][s])
        rec["dir_cos"].append(float(abs(direction @ np.asarray(top_dir[s]))))
    rec["eig_ratio"] = run["eig"] / threshold
    rec["eig_steps"] = steps
    # loss curves for the figure: every 10th step, and every step of the last window
    rec["loss_coarse"] = run["loss"][:, ::10]
    rec["loss_tail"] = run["loss"][:, -params["min_window"] :]
    return rec


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    th = theory(data, params)
    out = {}
    for pid, point in points.items():
        mode = point["mode"]
        out[mode] = measure_mode(runs[pid], params, th[f"input_top_dir_{mode}"])
    return {"modes": out}


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (lists in seed order); the judge aggregates them."""
    opp, none, aligned = (metrics["modes"][m] for m in ("opposing", "none", "aligned"))
    return {
        "eos_fraction": list(opp["eos_fraction"]),
        "reached_eos": [float(o is not None) for o in opp["onset_step"]],
        "antiphase": list(opp["antiphase"]),
        "max_jump": list(opp["max_jump"]),
        "eigvec_on_outlier_direction": list(opp["dir_cos"]),
        "max_eig_ratio": list(opp["max_eig_ratio"]),
        "eos_eig_ratio": list(opp["eos_eig_ratio"]),
        "theory_eig_ratio": 1.0,
        "input_top_dir_on_u": [float(x) for x in theory["input_top_dir_on_u_opposing"]],
        "none_max_eig_ratio": list(none["max_eig_ratio"]),
        "none_max_jump": list(none["max_jump"]),
        "aligned_antiphase": list(aligned["antiphase"]),
        "aligned_eos_fraction": list(aligned["eos_fraction"]),
        "aligned_max_eig_ratio": list(aligned["max_eig_ratio"]),
    }
