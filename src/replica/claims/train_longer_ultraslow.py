"""Train longer, generalise better: ultra-slow weight diffusion and the large-batch gap.

Claim (Hoffer, Hubara & Soudry, "Train longer, generalize better: closing the generalization
gap in large batch training of neural networks", NeurIPS 2017, arXiv 1705.08741):
(i) during the high-learning-rate phase the distance of the weights from their initialisation
grows only logarithmically, ||w_t - w_0|| ~ a + b log t ("ultra-slow diffusion", a random walk
on a random landscape), unlike a random walk in a fixed quadratic bowl, which saturates;
(ii) the generalisation gap of large-batch (LB) training is a matter of too few updates: it
closes when the learning rate is scaled by sqrt(B_L / B_S) (same gradient-noise covariance per
step), BatchNorm statistics are computed on "ghost" batches of the small-batch size, and the
number of updates is matched ("regime adaptation": B_L / B_S times more epochs).

Experiment (CPU-sized): 10-class teacher task, x ~ N(0, I_32), label = argmax of a random
two-layer ReLU teacher. Student: MLP 32-128-128-10 with BatchNorm before each ReLU, SGD with
momentum 0.9, cross-entropy, constant learning rate (the "high-lr phase"). Arms:
    sb             B = 16,  lr eta,                       E epochs
    lb             B = 256, lr eta,                       E epochs
    lb_sqrt        B = 256, lr eta sqrt(16),              E epochs
    lb_sqrt_gbn    as lb_sqrt with ghost BatchNorm (ghost batch 16)
    lb_adapted     as lb_sqrt_gbn with 16 E epochs (as many updates as sb)
    quadratic      control: online SGD on least squares started AT the minimum (pure
                   gradient noise in a fixed quadratic bowl), same B and number of steps as sb;
                   d = 512 and its own lr 0.03 ~ the fastest-relaxing step 1 / (1 + (d + 1)/B),
                   so that the walk saturates early in the fitted window (sb's lr would be
                   unstable there: stability needs lr < 2 / (1 + (d + 1) / B)).

Theory (data only, never the trained net):
* sqrt scaling. The minibatch-mean gradient drawn without replacement from n points has
  covariance C (1 - (B - 1)/(n - 1)) / B, so the per-step noise eta^2 Cov is matched between
  batch sizes B_S and B_L = k B_S by eta_L / eta_S = sqrt(k (1 - (B_L-1)/(n-1)) /
  (1 - (B_S-1)/(n-1))) (the paper's sqrt(k) without the finite-population factor).
* Regime adaptation: k E epochs of B_L give exactly the n E / B_S updates of small-batch SGD.
* Control (Ornstein-Uhlenbeck). For x ~ N(0, I_d), y = w*.x + sigma eps, online SGD with batch
  B from w_0 = w* has isotropic error covariance m_t I obeying the exact recursion
      m_{t+1} = m_t (1 - 2 eta + eta^2 (1 + (d + 1) / B)) + eta^2 sigma^2 / B,
  which converges to m_inf = eta sigma^2 / (B (2 - eta (1 + (d + 1)/B))): the distance
  saturates, so its growth over the last decade of steps is ~0, while a + b log t grows by the
  same amount in every decade (decade growth ratio 1).
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # running statistics for evaluation, as torch.nn.BatchNorm1d
MOMENTUM = 0.9


# ----------------------------------------------------------------------------- data
def teacher_task(n: int, d: int, rng: np.random.Generator, teacher):
    """x ~ N(0, I_d); label = argmax of the random two-layer ReLU teacher's outputs."""
    x = rng.normal(size=(n, d))
    w1, w2 = teacher
    return x, np.argmax(np.maximum(x @ w1, 0) @ w2, axis=1)


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """One teacher and one train/test set per seed (all arms of a seed share them)."""
    out = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    d, k, h = params["d"], params["classes"], params["teacher_hidden"]
    for seed in seeds:
        rng = np.random.default_rng(4242 + seed)
        teacher = (rng.normal(size=(d, h)), rng.normal(size=(h, k)))
        x, y = teacher_task(params["n_train"], d, rng, teacher)
        xt, yt = teacher_task(params["n_test"], d, rng, teacher)
        for key, val in zip(out, (x, y, xt, yt), strict=True):
            out[key].append(val)
    return {key: np.stack(val) for key, val in out.items()}


# ----------------------------------------------------------------------------- theory
def noise_matching_lr_ratio(b_small: int, b_large: int, n: int) -> float:
    """eta_L / eta_S that equalises eta^2 Cov(minibatch gradient) (sampling without
    replacement from n points, finite-population factor included)."""
    fpc = lambda b: (1 - (b - 1) / (n - 1)) / b  # noqa: E731 - variance factor of a B-mean
    return float(np.sqrt(fpc(b_small) / fpc(b_large)))


def ou_second_moment(steps: int, lr: float, batch: int, d: int, sigma: float) -> np.ndarray:
    """E||w_t - w*||^2 for t = 0..steps (exact recursion, isotropic Gaussian inputs)."""
    m = np.zeros(steps + 1)
    a = 1 - 2 * lr + lr**2 * (1 + (d + 1) / batch)
    for t in range(steps):
        m[t + 1] = m[t] * a + lr**2 * sigma**2 / batch
    return d * m


def ou_stationary(lr: float, batch: int, d: int, sigma: float) -> float:
    return d * lr * sigma**2 / (batch * (2 - lr * (1 + (d + 1) / batch)))


def decade_growth_ratio(t: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """(d(T) - d(T/10)) / (d(T/10) - d(T/100)), d interpolated in log t; 1 for a + b log t,
    ~0 for a saturating curve, 10^p for t^p. dist (..., len(t))."""
    lt = np.log(np.asarray(t, dtype=float))
    top = lt[-1]
    at = [
        np.apply_along_axis(lambda row, x=x: np.interp(x, lt, row), -1, np.asarray(dist))
        for x in (top, top - np.log(10), top - 2 * np.log(10))
    ]
    return (at[0] - at[1]) / np.maximum(at[1] - at[2], 1e-12)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    n, bs, bl = params["n_train"], params["batch_small"], params["batch_large"]
    steps_sb = params["epochs"] * (n // bs)
    q = params["quadratic"]
    t = runtime.log_spaced_steps(steps_sb, params["n_checkpoints"])
    ou = np.sqrt(ou_second_moment(steps_sb, q["lr"], bs, q["d"], q["sigma"]))[t]
    return {
        "lr_ratio_sqrt": float(np.sqrt(bl / bs)),
        "lr_ratio_noise_matched": noise_matching_lr_ratio(bs, bl, n),
        "updates_small_batch": steps_sb,
        "updates_adapted": (params["epochs"] * bl // bs) * (n // bl),
        "ou_steps": t,
        "ou_rms_distance": ou,
        "ou_rms_stationary": float(np.sqrt(ou_stationary(q["lr"], bs, q["d"], q["sigma"]))),
        "ou_decade_ratio": float(decade_growth_ratio(t, ou)),
        "log_law_decade_ratio": 1.0,
    }


# ----------------------------------------------------------------------------- model
def init_mlp(dims: list[int], seeds: list[int], device) -> dict[str, list[torch.Tensor]]:
    """Per-seed weights (S, fan_in, fan_out), uniform(+-1/sqrt(fan_in)); BN gamma = 1,
    beta = 0 on hidden layers; linear biases only on the output (BN absorbs them)."""
    weights = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        ws = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed) * 7_777 + i)
            ws.append((torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * fan_in**-0.5)
        weights.append(torch.stack(ws).to(device))
    s, hidden = len(seeds), dims[1:-1]
    return {
        "weights": weights,
        "gamma": [torch.ones(s, 1, h, device=device) for h in hidden],
        "beta": [torch.zeros(s, 1, h, device=device) for h in hidden],
        "bias": [torch.zeros(s, 1, dims[-1], device=device)],
    }


def batch_norm(z: torch.Tensor, ghost: int | None):
    """Normalise (S, B, h) over the batch, or over each ghost batch of `ghost` rows.
    Returns the normalised tensor and the (S, h) batch mean / variance for running stats."""
    s, b, h = z.shape
    g = z if ghost is None or ghost >= b else z.reshape(s, b // ghost, ghost, h)
    mean = g.mean(-2, keepdim=True)
    var = g.var(-2, unbiased=False, keepdim=True)
    out = ((g - mean) / torch.sqrt(var + BN_EPS)).reshape(s, b, h)
    return out, z.mean(1).detach(), z.var(1, unbiased=True).detach()


def forward(params, x, ghost=None, running=None, update_running=False):
    """Batched MLP with BN before each ReLU. Training mode uses batch (or ghost) statistics and
    updates `running`; evaluation (ghost=None, running given, update_running False) uses them."""
    h = x
    for i, w in enumerate(params["weights"][:-1]):
        z = torch.bmm(h, w)
        if update_running or running is None:
            z, mean, var = batch_norm(z, ghost)
            if update_running:
                running["mean"][i].mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * mean[:, None])
                running["var"][i].mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * var[:, None])
        else:
            z = (z - running["mean"][i]) / torch.sqrt(running["var"][i] + BN_EPS)
        h = torch.relu(z * params["gamma"][i] + params["beta"][i])
    return torch.bmm(h, params["weights"][-1]) + params["bias"][0]


def arm_settings(arm: str, params: dict) -> dict:
    bs, bl, lr = params["batch_small"], params["batch_large"], params["lr"]
    k = bl // bs
    table = {
        "sb": (bs, lr, None, params["epochs"]),
        "lb": (bl, lr, None, params["epochs"]),
        "lb_sqrt": (bl, lr * k**0.5, None, params["epochs"]),
        "lb_sqrt_gbn": (bl, lr * k**0.5, bs, params["epochs"]),
        "lb_adapted": (bl, lr * k**0.5, bs, params["epochs"] * k),
    }
    batch, arm_lr, ghost, epochs = table[arm]
    return {"batch": batch, "lr": arm_lr, "ghost": ghost, "epochs": epochs}


def weight_distance(params, init) -> torch.Tensor:
    """||w_t - w_0|| over all linear weights, per seed."""
    sq = sum(((w - w0) ** 2).sum((1, 2)) for w, w0 in zip(params["weights"], init, strict=True))
    return torch.sqrt(sq)


def train_network(data, arm: str, params: dict, seeds: list[int], device) -> dict:
    cfg = arm_settings(arm, params)
    x = torch.as_tensor(data["x_train"], dtype=torch.float32, device=device)
    y = torch.as_tensor(data["y_train"], dtype=torch.long, device=device)
    s, n, d = x.shape
    dims = [d] + [params["width"]] * 2 + [params["classes"]]
    net = init_mlp(dims, seeds, device)
    leaves = net["weights"] + net["gamma"] + net["beta"] + net["bias"]
    for p in leaves:
        p.requires_grad_()
    init = [w.detach().clone() for w in net["weights"]]
    velocity = [torch.zeros_like(p) for p in leaves]
    running = {
        "mean": [torch.zeros(s, 1, h, device=device) for h in dims[1:-1]],
        "var": [torch.ones(s, 1, h, device=device) for h in dims[1:-1]],
    }
    steps_per_epoch = n // cfg["batch"]
    total = steps_per_epoch * cfg["epochs"]
    keep = runtime.log_spaced_steps(total, params["n_checkpoints"])
    keep_set, dist = set(int(k) for k in keep), []
    gens = [torch.Generator().manual_seed(int(seed) * 13 + 5) for seed in seeds]
    tick = runtime.Progress(cfg["epochs"], f"train {arm}")
    step = 0
    for epoch in range(cfg["epochs"]):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        for k in range(steps_per_epoch):
            idx = order[:, k * cfg["batch"] : (k + 1) * cfg["batch"]]
            xb = torch.gather(x, 1, idx[..., None].expand(-1, -1, d))
            yb = torch.gather(y, 1, idx)
            logits = forward(net, xb, cfg["ghost"], running, update_running=True)
            loss = (
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), reduction="sum"
                )
                / cfg["batch"]
            )  # sum over seeds of per-seed mean losses
            grads = torch.autograd.grad(loss, leaves)
            with torch.no_grad():
                for p, v, g in zip(leaves, velocity, grads, strict=True):
                    v.mul_(MOMENTUM).add_(g)
                    p.sub_(cfg["lr"] * v)
            step += 1
            if step in keep_set:
                dist.append(weight_distance(net, init))
        tick(epoch, loss=float(loss.detach()) / s)
    with torch.no_grad():
        xt = torch.as_tensor(data["x_test"], dtype=torch.float32, device=device)
        test_pred = forward(net, xt, running=running).argmax(-1).cpu().numpy()
        train_pred = forward(net, x, running=running).argmax(-1).cpu().numpy()
    return {
        "steps": keep,
        "distance": torch.stack(dist, 1).detach().cpu().numpy(),  # (S, K)
        "test_acc": np.mean(test_pred == data["y_test"], axis=1),
        "train_acc": np.mean(train_pred == data["y_train"], axis=1),
    }


def train_quadratic(params: dict, seeds: list[int], device) -> dict:
    """Control: online minibatch SGD on least squares, x ~ N(0, I_d), y = w*.x + sigma eps,
    started at w* (so only gradient noise moves it). Records ||w_t - w_0|| per seed."""
    q, bs = params["quadratic"], params["batch_small"]
    total = params["epochs"] * (params["n_train"] // bs)
    keep = runtime.log_spaced_steps(total, params["n_checkpoints"])
    keep_set, dist = set(int(k) for k in keep), []
    gen = torch.Generator().manual_seed(int(seeds[0]) * 101 + len(seeds))
    s, d = len(seeds), q["d"]
    err = torch.zeros(s, d, dtype=torch.float64)  # w_t - w*, and w_0 = w*
    for step in range(1, total + 1):
        x = torch.randn(s, bs, d, generator=gen, dtype=torch.float64)
        noise = q["sigma"] * torch.randn(s, bs, generator=gen, dtype=torch.float64)
        resid = torch.einsum("sbd,sd->sb", x, err) - noise  # prediction - label
        err = err - q["lr"] * torch.einsum("sb,sbd->sd", resid, x) / bs
        if step in keep_set:
            dist.append(err.norm(dim=1))
    return {"steps": keep, "distance": torch.stack(dist, 1).to(device).cpu().numpy()}


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    arm = point["arm"]
    if arm == "quadratic":
        return train_quadratic(params, seeds, device)
    return train_network(data, arm, params, seeds, device)


# ----------------------------------------------------------------------------- measure
def log_and_power_fits(t: np.ndarray, dist: np.ndarray) -> dict:
    """Least-squares fits of d = a + b log t and log d = log c + p log t on one curve.
    Returns R^2 of both (in d units) and AIC_log - AIC_power (negative favours the log)."""
    t, dist = np.asarray(t, dtype=float), np.asarray(dist, dtype=float)
    lt = np.log(t)
    design = np.stack([np.ones_like(lt), lt], 1)
    coef_log = np.linalg.lstsq(design, dist, rcond=None)[0]
    coef_pow = np.linalg.lstsq(design, np.log(dist), rcond=None)[0]
    pred = {"log": design @ coef_log, "power": np.exp(design @ coef_pow)}
    tss = np.sum((dist - dist.mean()) ** 2)
    rss = {k: float(np.sum((dist - v) ** 2)) for k, v in pred.items()}
    n = len(t)
    aic = {k: n * np.log(max(v, 1e-300) / n) + 2 * 2 for k, v in rss.items()}
    return {
        "r2_log": 1 - rss["log"] / tss,
        "r2_power": 1 - rss["power"] / tss,
        "aic_log_minus_power": aic["log"] - aic["power"],
        "b": float(coef_log[1]),
        "p": float(coef_pow[1]),
    }


def fit_window(steps: np.ndarray, frac: float) -> np.ndarray:
    """Checkpoints in the last two decades (t >= frac * T): the ballistic start is excluded."""
    steps = np.asarray(steps)
    return steps >= frac * steps[-1]


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    arms = {}
    for pid, point in points.items():
        run, arm = runs[pid], point["arm"]
        steps, dist = np.asarray(run["steps"]), np.asarray(run["distance"])
        win = fit_window(steps, params["fit_from"])
        fits = [log_and_power_fits(steps[win], row[win]) for row in dist]
        res = {
            "steps": steps,
            "distance": dist,
            "decade_ratio": decade_growth_ratio(steps, dist),
            **{key: [f[key] for f in fits] for key in fits[0]},
        }
        if "test_acc" in run:
            res["test_acc"] = run["test_acc"]
            res["train_acc"] = run["train_acc"]
        arms[arm] = res
    return {"arms": arms}


# ----------------------------------------------------------------------------- verdict
def closed_fraction(acc_arm, acc_lb, acc_sb, no_gap: float) -> list[float]:
    """Per seed (acc(arm) - acc(LB)) / (acc(SB) - acc(LB)) with the seed's own gap; a seed
    without a gap (acc(SB) <= acc(LB)) gets `no_gap` (the manifest's 'what' states which)."""
    gap = np.asarray(acc_sb) - np.asarray(acc_lb)
    gain = np.asarray(acc_arm) - np.asarray(acc_lb)
    safe = np.where(gap > 0, gap, 1.0)
    return [float(x) for x in np.where(gap > 0, gain / safe, no_gap)]


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (lists in seed order; each seed's arms share its data and teacher)."""
    a = metrics["arms"]
    acc = {k: np.asarray(a[k]["test_acc"], dtype=float) for k in a if "test_acc" in a[k]}

    def seeds(values) -> list[float]:
        return [float(x) for x in np.asarray(values, dtype=float)]

    return {
        "sb_log_r2": seeds(a["sb"]["r2_log"]),
        "sb_aic_log_minus_power": seeds(a["sb"]["aic_log_minus_power"]),
        "sb_decade_ratio": seeds(a["sb"]["decade_ratio"]),
        "adapted_decade_ratio": seeds(a["lb_adapted"]["decade_ratio"]),
        **{f"{k}_test_acc": seeds(v) for k, v in acc.items()},
        "gap_sb_minus_lb": seeds(acc["sb"] - acc["lb"]),
        # primary: a seed without a gap counts 0 (the check cannot pass on it)
        "gap_closed_fraction": closed_fraction(acc["lb_adapted"], acc["lb"], acc["sb"], 0.0),
        # ablation: the same without the extra updates; a seed without a gap counts 1
        "gbn_gap_closed_fraction": closed_fraction(acc["lb_sqrt_gbn"], acc["lb"], acc["sb"], 1.0),
        "quadratic_decade_ratio": seeds(a["quadratic"]["decade_ratio"]),
        "quadratic_log_r2": seeds(a["quadratic"]["r2_log"]),
        "theory_log_decade_ratio": float(theory["log_law_decade_ratio"]),
        "theory_ou_decade_ratio": float(theory["ou_decade_ratio"]),
        "theory_lr_ratio_sqrt": float(theory["lr_ratio_sqrt"]),
        "theory_lr_ratio_noise_matched": float(theory["lr_ratio_noise_matched"]),
    }
