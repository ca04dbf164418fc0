"""Neural Tangent Kernel (Jacot, Gabriel, Hongler, NeurIPS 2018, arXiv 1806.07572).

Claim. In the NTK parametrisation a ReLU MLP's tangent kernel
Theta(x, x') = sum_p <df(x)/dp, df(x')/dp> is random at initialisation but converges, as the
hidden widths grow, to a deterministic kernel Theta_inf that stays constant during training.
Least-squares gradient descent then moves the training residual like a linear model: along each
eigenvector v_i of Theta_inf restricted to the training set the residual shrinks by a fixed
factor per step, fastest along the top kernel principal components.

Network (the paper's NTK parametrisation, L = 2 hidden layers, widths n_1 = n_2 = n):
    z_1 = W_1 x / sqrt(n_0) + beta b_1,    h_l = relu(z_l),
    z_{l+1} = W_{l+1} h_l / sqrt(n_l) + beta b_{l+1},    f = c * z_3,
with every weight and bias ~ N(0, 1). c = 1 is the NTK arm. The control arm ("meanfield") uses
c = 1 / sqrt(n), i.e. a 1/n output scale, with the learning rate multiplied by n so the first
step moves the function as much as in the NTK arm: there the features must move and the
kernel should change by O(1) at every width.

Theory (Theorem 1 of the paper; ReLU expectations in closed form, the arc-cosine kernels):
    Sigma_1(x, x') = x.x' / n_0 + beta^2,              Theta_1 = Sigma_1,
    Sigma_{l+1} = E[relu(u) relu(v)] + beta^2,         (u, v) ~ N(0, Sigma_l)
    Sdot_{l+1} = E[relu'(u) relu'(v)],
    Theta_{l+1} = Theta_l * Sdot_{l+1} + Sigma_{l+1}.
For a Gaussian pair with variances s, s' and correlation cos(t):
    E[relu(u) relu(v)] = sqrt(s s') (sin t + (pi - t) cos t) / (2 pi),
    E[relu'(u) relu'(v)] = (pi - t) / (2 pi).
Training minimises the paper's cost C = 1/(2N) sum_i (f(x_i) - y_i)^2 (the empirical measure
p_in puts weight 1/N on each point) by GD with step eta. Linearised, the training residual
r_t = f_t - y obeys r_{t+1} = (I - eta Theta / N) r_t, so with Theta_inf / N = sum lam_i v_i v_i^T
    v_i . r_t = (1 - eta lam_i)^t v_i . r_0     (mode i; data-only rates lam_i).
The paper proves that the kernel converges to Theta_inf and stays constant during training as
n -> infinity, without a rate. At init the finite-width kernel is an average over n independent
neurons per layer and fluctuates around Theta_inf by O(n^-1/2) (central limit theorem; the
checked rate); its change during training only has to vanish (later finite-width analyses give
O(1/n); the fitted slope is reported, not banded).

The empirical NTK is computed in closed form from the forward activations h_{l-1} and backward
signals delta_l = df/dz_l:  Theta = sum_l (delta_l delta_l^T) * (h_{l-1} h_{l-1}^T / n_{l-1}
+ beta^2)  (elementwise product of two Gram matrices; no per-sample Jacobians).
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime

DEPTH = 2  # hidden layers


# ----------------------------------------------------------------------------- data
def circle(gamma: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(gamma), np.sin(gamma)], axis=-1)


def target(gamma: np.ndarray) -> np.ndarray:
    return np.sin(3 * gamma) + 0.5 * np.cos(gamma)


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Training angles: a jittered grid (a plain grid makes the kernel circulant and its
    eigenvalues pairwise degenerate); probe angles: a plain grid starting at x0 = (1, 0).
    The data are the same for every seed (seeds only change the initialisation)."""
    rng = np.random.default_rng(params["data_seed"])
    n_train, n_probe = params["n_train"], params["n_probe"]
    jitter = rng.uniform(-params["jitter"], params["jitter"], n_train)
    gamma_train = 2 * np.pi * (np.arange(n_train) + jitter) / n_train
    gamma_probe = 2 * np.pi * np.arange(n_probe) / n_probe
    return {
        "gamma_train": gamma_train,
        "gamma_probe": gamma_probe,
        "x_train": circle(gamma_train),
        "y_train": target(gamma_train),
        "x_all": circle(np.concatenate([gamma_train, gamma_probe])),  # train then probe
    }


# ----------------------------------------------------------------------------- theory
def relu_gaussian_moments(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for (u, v) ~ N(0, cov), for every pair."""
    sd = np.sqrt(np.diag(cov))
    cos = np.clip(cov / np.outer(sd, sd), -1.0, 1.0)
    angle = np.arccos(cos)
    e_relu = np.outer(sd, sd) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi)
    e_step = (np.pi - angle) / (2 * np.pi)
    return e_relu, e_step


def limiting_kernels(x: np.ndarray, beta: float, depth: int = DEPTH):
    """(Theta_inf, Sigma_out): limiting NTK and output covariance (NNGP) on the rows of x."""
    sigma = x @ x.T / x.shape[1] + beta**2
    theta = sigma.copy()
    for _ in range(depth):
        e_relu, e_step = relu_gaussian_moments(sigma)
        sigma = e_relu + beta**2
        theta = theta * e_step + sigma
    return theta, sigma


def train_modes(data: dict, params: dict):
    """Eigenpairs of Theta_inf / N on the training set, largest first (data only)."""
    theta, _ = limiting_kernels(data["x_train"], params["beta"])
    lam, vec = np.linalg.eigh(theta / len(data["x_train"]))
    return lam[::-1], vec[:, ::-1]


def checkpoints(steps: int) -> np.ndarray:
    """Every step up to 64 (the fast modes decay there), then log-spaced up to `steps`."""
    dense = np.arange(min(steps, 64) + 1)
    sparse = np.geomspace(64, max(steps, 64), 40).round().astype(int)
    return np.unique(np.concatenate([dense, sparse[sparse <= steps]]))


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    theta_all, sigma_all = limiting_kernels(data["x_all"], params["beta"])
    lam, vec = train_modes(data, params)
    k, n = params["n_modes"], len(data["x_train"])
    t = checkpoints(params["steps"])
    sigma_train = sigma_all[:n, :n]
    # RMS over initialisations of the initial residual in mode i: f_0 ~ GP(0, Sigma_out).
    proj_y = vec.T @ data["y_train"]
    mode_scale = np.sqrt(proj_y**2 + np.einsum("pi,pq,qi->i", vec, sigma_train, vec))
    return {
        "theta_inf": theta_all,
        "theta_inf_x0_probe": theta_all[n, n:],  # Theta_inf(x0, x(gamma)) on the probe circle
        "mode_lambda": lam,
        "mode_scale": mode_scale[:k],
        "checkpoints": t,
        "mode_decay": (1 - params["lr"] * lam[:k, None]) ** t[None, :],
        "init_deviation_slope": -0.5,  # central limit theorem: n^-1/2 fluctuation around Theta_inf
        "min_eigenvalue": float(lam[-1]),
    }


# ----------------------------------------------------------------------------- model
def init_net(widths: list[int], seeds: list[int], device, dtype):
    """All seeds' weights stacked on a leading seed axis: W_l (S, n_l, n_{l-1}), b_l (S, n_l)."""
    ws, bs = [], []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        w, b = [], []
        for seed in seeds:  # one generator per (seed, layer shape): same init for both arms
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + fan_in * 7919 + fan_out)
            w.append(torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64))
            b.append(torch.randn(fan_out, generator=gen, dtype=torch.float64))
        ws.append(torch.stack(w).to(device=device, dtype=dtype))
        bs.append(torch.stack(b).to(device=device, dtype=dtype))
    return ws, bs


def forward(ws, bs, x, beta: float, out_scale: float):
    """f (S, P), the layer inputs h_0..h_L (S, P, n_{l-1}) and relu' masks of hidden layers."""
    h = x.expand(ws[0].shape[0], *x.shape)
    inputs, masks = [], []
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        inputs.append(h)
        z = torch.bmm(h, w.transpose(1, 2)) / w.shape[2] ** 0.5 + beta * b[:, None, :]
        if i < len(ws) - 1:
            masks.append((z > 0).to(z.dtype))
            h = torch.relu(z)
    return out_scale * z[..., 0], inputs, masks


def backward_signals(ws, masks, out_scale: float):
    """delta_l = df/dz_l for every layer, (S, P, n_l), by backpropagating from f = c z_out."""
    s, p = masks[0].shape[:2]
    delta = torch.full((s, p, 1), out_scale, dtype=ws[0].dtype, device=ws[0].device)
    deltas = [delta]
    for w, mask in zip(ws[:0:-1], masks[::-1], strict=True):
        delta = torch.bmm(delta, w) / w.shape[2] ** 0.5 * mask
        deltas.append(delta)
    return deltas[::-1]


def empirical_ntk(inputs, deltas, beta: float) -> torch.Tensor:
    """Theta (S, P, P) = sum_l (delta_l delta_l^T) * (h_{l-1} h_{l-1}^T / n_{l-1} + beta^2)."""
    theta = 0
    for h, delta in zip(inputs, deltas, strict=True):
        gram_h = torch.bmm(h, h.transpose(1, 2)) / h.shape[2] + beta**2
        theta = theta + torch.bmm(delta, delta.transpose(1, 2)) * gram_h
    return theta


def ntk_of(ws, bs, x, beta, out_scale):
    _, inputs, masks = forward(ws, bs, x, beta, out_scale)
    return empirical_ntk(inputs, backward_signals(ws, masks, out_scale), beta)


def gd_step(ws, bs, inputs, deltas, err, lr: float, beta: float) -> None:
    """W_l -= lr * sum_p err_p delta_l(x_p) h_{l-1}(x_p)^T / sqrt(n_{l-1}), in place."""
    for w, b, h, delta in zip(ws, bs, inputs, deltas, strict=True):
        signal = delta * err[..., None]
        w.baddbmm_(signal.transpose(1, 2), h, alpha=-lr / h.shape[2] ** 0.5)
        b.add_(signal.sum(1), alpha=-lr * beta)


def train_width(data, arm: str, width: int, params: dict, seeds, device, resume=None) -> dict:
    """GD on one width, all seeds batched. `resume` (from train's checkpoint) restarts the loop
    from saved weights and outputs; snapshots go to runtime.checkpoint() when one is due."""
    dtype = getattr(torch, params["dtype"])  # float32 / float64
    x_train = torch.as_tensor(data["x_train"], dtype=dtype, device=device)
    x_all = torch.as_tensor(data["x_all"], dtype=dtype, device=device)
    y = torch.as_tensor(data["y_train"], dtype=dtype, device=device)
    beta, n_train = params["beta"], len(data["x_train"])
    # meanfield: output scale 1/n overall (extra 1/sqrt(n)), learning rate times n
    out_scale = 1.0 if arm == "ntk" else width**-0.5
    lr = params["lr"] * (1.0 if arm == "ntk" else width)
    ws, bs = init_net([2] + [width] * DEPTH + [1], seeds, device, dtype)
    theta0 = ntk_of(ws, bs, x_all, beta, out_scale)  # from the init, also when resuming
    start, traj = 0, []
    if resume is not None and int(resume.get("loop_width", -1)) == width:
        start = int(resume["step"])
        ws = [torch.as_tensor(resume[f"loop_w{i}"], device=device) for i in range(len(ws))]
        bs = [torch.as_tensor(resume[f"loop_b{i}"], device=device) for i in range(len(bs))]
        traj = list(torch.as_tensor(resume["loop_traj"], device=device).unbind(1))
    keep = torch.as_tensor(checkpoints(params["steps"]), device=device)
    ckpt = runtime.checkpoint()
    tick = runtime.Progress(params["steps"] + 1, f"train {arm} width {width}")
    for step in range(start, params["steps"] + 1):
        f, inputs, masks = forward(ws, bs, x_train, beta, out_scale)
        traj.append(f)
        tick(step)
        if step < params["steps"]:
            deltas = backward_signals(ws, masks, out_scale)
            gd_step(ws, bs, inputs, deltas, (f - y) / n_train, lr, beta)
            if ckpt is not None and ckpt.due():
                loop = {f"loop_w{i}": w for i, w in enumerate(ws)}
                loop.update({f"loop_b{i}": b for i, b in enumerate(bs)})
                loop.update(loop_width=width, loop_traj=torch.stack(traj, dim=1))
                ckpt.save(step + 1, {**(resume or {}), **loop})
    theta_t = ntk_of(ws, bs, x_all, beta, out_scale)
    f_train = torch.stack(traj, dim=1)[:, keep]  # (S, checkpoints, N)
    return {"theta0": theta0, "thetaT": theta_t, "f_train": f_train}


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One arm (point['param']), all its widths, all seeds batched on a leading axis.

    Long (paper-scale) runs checkpoint: finished widths and the current loop's state go to
    runtime.checkpoint(), so a killed job resumes where it was, with identical results.
    """
    arm = point["param"]
    ckpt = runtime.checkpoint()
    saved = (ckpt.load() if ckpt is not None else None) or {}
    out = {"widths": np.asarray(params["widths"][arm])}
    for width in params["widths"][arm]:
        done = {k: v for k, v in saved.items() if k.endswith(f"__w{width}")}
        if done:  # finished before the interruption
            out.update(done)
            continue
        finished = {k: v for k, v in out.items() if k != "widths"}
        resume = {**saved, **finished} if saved.get("loop_width") == width else finished
        res = train_width(data, arm, width, params, seeds, device, resume)
        for key, value in res.items():
            out[f"{key}__w{width}"] = value.detach().cpu().double().numpy()
        if ckpt is not None:
            ckpt.save(0, {k: v for k, v in out.items() if k != "widths"})
    return out


# ----------------------------------------------------------------------------- measure
def relative_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||b - a||_F / ||a||_F over the last two axes (one number per seed)."""
    return np.linalg.norm(b - a, axis=(-2, -1)) / np.linalg.norm(a, axis=(-2, -1))


def loglog_slope(widths, values) -> np.ndarray:
    """Least-squares slope of log(values) vs log(widths); values (..., n_widths)."""
    lx = np.log(np.asarray(widths, dtype=float))
    ly = np.log(np.asarray(values, dtype=float))
    lx = lx - lx.mean()
    return ((ly - ly.mean(-1, keepdims=True)) * lx).sum(-1) / (lx**2).sum()


def measure_arm(data, run: dict, params: dict, theta_inf: np.ndarray, vec: np.ndarray) -> dict:
    widths = [int(w) for w in run["widths"]]
    n = len(data["x_train"])
    out = {
        "widths": widths,
        "kernel_change": [],
        "init_deviation": [],
        "mode_residual": [],
        "theta0_x0": [],
        "thetaT_x0": [],
        "train_loss_final": [],
        "train_loss_initial": [],
    }
    for w in widths:
        theta0, theta_t = run[f"theta0__w{w}"], run[f"thetaT__w{w}"]
        f_train = run[f"f_train__w{w}"]
        out["kernel_change"].append(relative_change(theta0, theta_t))
        # meanfield kernels are the NTK-arm kernels divided by n at init: rescale to compare
        scale = w if params["arm"] == "meanfield" else 1.0
        out["init_deviation"].append(relative_change(theta_inf, scale * theta0))
        resid = f_train - data["y_train"]  # (S, T, N)
        out["mode_residual"].append(np.einsum("stn,nk->skt", resid, vec[:, : params["n_modes"]]))
        out["theta0_x0"].append(theta0[:, n, n:])
        out["thetaT_x0"].append(theta_t[:, n, n:])
        out["train_loss_final"].append(0.5 * (resid[:, -1] ** 2).mean(-1))
        out["train_loss_initial"].append(0.5 * (resid[:, 0] ** 2).mean(-1))
    return out


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    theta_inf, _ = limiting_kernels(data["x_all"], params["beta"])  # data only
    _, vec = train_modes(data, params)
    arms = {}
    for pid, point in points.items():
        arm = point["param"]
        arms[arm] = measure_arm(data, runs[pid], {**params, "arm": arm}, theta_inf, vec)
    return {"arms": arms, "checkpoints": checkpoints(params["steps"])}


# ----------------------------------------------------------------------------- verdict
def mode_errors(mode_residual: np.ndarray, theory_: dict) -> np.ndarray:
    """Per seed: max over the top modes and all checkpoints of
    |r_i(t) - (1 - eta lam_i)^t r_i(0)| / rms_i, with rms_i the theory's RMS initial residual
    in mode i (so a seed whose r_i(0) happens to be ~0 does not blow the ratio up)."""
    r = np.asarray(mode_residual)  # (S, k, T)
    decay = np.asarray(theory_["mode_decay"])  # (k, T)
    scale = np.asarray(theory_["mode_scale"])[None, :, None]
    err = np.abs(r - decay[None] * r[:, :, :1]) / scale
    return err.max(axis=(1, 2))


CONVERGED = 1e-3  # a run trained when its final loss is below this fraction of its initial loss


def converged(arm: dict) -> np.ndarray:
    """(widths, S) booleans: final training loss below CONVERGED times the initial loss."""
    final, initial = np.asarray(arm["train_loss_final"]), np.asarray(arm["train_loss_initial"])
    return final <= CONVERGED * initial


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    ntk, mf = metrics["arms"]["ntk"], metrics["arms"]["meanfield"]
    ntk_change = np.asarray(ntk["kernel_change"])  # (widths, S)
    mf_change = np.asarray(mf["kernel_change"])
    mf_ok = converged(mf)  # (widths, S)
    mf_slope = loglog_slope(mf["widths"], mf_change.T)
    init_dev = np.asarray(ntk["init_deviation"])
    return {
        "kernel_change_widest": ntk_change[-1].tolist(),
        "kernel_change_slope": loglog_slope(ntk["widths"], ntk_change.T).tolist(),
        # the local slope between the two largest widths (the change keeps shrinking there)
        "kernel_change_slope_wide": loglog_slope(ntk["widths"][-2:], ntk_change[-2:].T).tolist(),
        "init_deviation_slope": loglog_slope(ntk["widths"], init_dev.T).tolist(),
        "init_deviation_widest": init_dev[-1].tolist(),
        # sqrt(n) times the init deviation at the largest width: the fluctuation amplitude
        "init_fluctuation_amplitude": (init_dev[-1] * np.sqrt(ntk["widths"][-1])).tolist(),
        "mode_error_widest": mode_errors(ntk["mode_residual"][-1], theory).tolist(),
        "kernel_change_narrowest": ntk_change[0].tolist(),
        "meanfield_change_widest": mf_change[-1].tolist(),
        "meanfield_change_widest_trained": np.where(mf_ok[-1], mf_change[-1], 0.0).tolist(),
        "meanfield_change_slope": mf_slope.tolist(),
        "meanfield_change_slope_trained": np.where(mf_ok.all(0), mf_slope, -1.0).tolist(),
        "meanfield_converged_fraction": mf_ok.mean(0).tolist(),
        "min_eigenvalue": float(theory["min_eigenvalue"]),
        "init_deviation_slope_theory": float(theory["init_deviation_slope"]),
        "kernel_change_limit": 0.0,
    }
