"""Early learning, then memorization, even in a linear model; ELR prevents memorization.

Claim (Liu, Niles-Weed, Razavian & Fernandez-Granda, "Early-Learning Regularization Prevents
Memorization of Noisy Labels", NeurIPS 2020, arXiv 2007.00151): in high dimension, a linear
classifier trained by gradient descent on noisy labels first fits the *true* labels, including
on most of the wrongly-labelled training points ("early learning"), and only later fits the
wrong labels ("memorization"), which lowers its clean test accuracy. Adding the early-learning
regulariser (ELR), a pull towards a running average of the model's own past predictions,
stops the memorization phase.

Data (the paper's linear setting, a two-class Gaussian mixture): y = +-1 with equal odds,
x = y v + sigma xi in R^d with ||v|| = 1 (we take v = e_1 by rotation invariance) and
xi ~ N(0, I_d); a random subset of exactly round(Delta n) training labels is flipped.
Model: f(x) = theta . x, theta_0 = 0, full-batch GD on the mean logistic loss of the
(noisy) labels. ELR adds lambda / n sum_i log(1 - <p_i, t_i>) with p_i = (sigmoid(f), 1 -
sigmoid(f)) clamped to [1e-4, 1 - 1e-4] and the target t_i <- beta t_i + (1 - beta) p_i
updated every step (no gradient through t), as in the authors' code.

Theory (data only; never the trained model):
* Early learning. From theta_0 = 0 gradient descent moves along g_0 = (1/n) sum_i ~y_i x_i
  = (1 - 2 Delta_hat) v + sigma mean(~y xi). For sigma^2 d << n (1 - 2 Delta) this direction
  classifies the mislabelled training points by their true label; its clean test accuracy is
  exactly Phi(g_0 . v / (sigma ||g_0||)) (for any theta, y theta.x ~ N(theta.v, sigma^2
  ||theta||^2)). We report both numbers per dataset.
* Memorization. With d >= n the noisy training set is linearly separable (an LP tells), so
  the logistic loss has no minimiser and GD drives every training margin positive: in the
  limit all mislabelled points carry their noisy label (fraction 1), and the direction tends
  to the hard-margin SVM of the noisy labels (Soudry et al. 2018), whose test accuracy
  Phi(w.v / (sigma ||w||)) we compute by least-distance programming. With d << n (control)
  the LP margin is <= 0: the noisy labels cannot be fitted, memorization cannot happen.
* ELR threshold (our derivation for two classes). Once an example's own noise direction lets
  the model move its logit z freely (the memorization regime), the per-example gradient in the
  logit of its true class is, with the target tracking the prediction (t ~ p = P(true class)),
      CE: +p (pushes towards the wrong label),   ELR: -lambda (2p - 1) / 2,
  so the net drift near p = 1 is 1 - lambda / 2. For lambda > lambda_c = 2 an early-learned
  true label is an attractor (basin p > lambda / (2 (lambda - 1))); for lambda < 2 the drift
  is positive for every p and memorization only slows down. The paper's lambda = 3 is above the
  threshold; the control lambda = 1 is below it.

Measured (exactly, no test sampling): along the trajectory, (a) the fraction of mislabelled
training points predicted as their true label, (b) the fraction predicted as their noisy
label, and the clean test accuracy Phi(theta.v / (sigma ||theta||)).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import ndtr

from replica import runtime
from replica.blocks import margins

CLAMP = 1e-4  # the authors' clamp of the predicted probabilities inside ELR


# ----------------------------------------------------------------------------- data
def mixture(n: int, d: int, sigma: float, delta: float, seed: int):
    """One training set: x = y e_1 + sigma xi; a random subset of round(delta n) labels is
    flipped (an exact noise rate, so small sets do not draw a much cleaner or noisier one)."""
    rng = np.random.default_rng(seed)
    y = rng.choice([-1.0, 1.0], size=n)
    x = sigma * rng.normal(size=(n, d))
    x[:, 0] += y
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.permutation(n)[: round(delta * n)]] = True
    return x, y, np.where(flipped, -y, y), flipped


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """One dataset per seed for each shape: 'main' (d > n) and 'lowdim' (d << n, control)."""
    out = {}
    for shape in ("main", "lowdim"):
        n, d = params[shape]["n"], params[shape]["d"]
        sets = [
            mixture(n, d, params["sigma"], params["delta"], 1_000 * seed + len(shape))
            for seed in seeds
        ]
        keys = ("x", "y", "y_noisy", "flipped")
        for key, arr in zip(keys, zip(*sets, strict=True), strict=True):
            out[f"{shape}_{key}"] = np.stack(arr)
    return out


# ----------------------------------------------------------------------------- theory
def clean_accuracy(theta: np.ndarray, sigma: float) -> np.ndarray:
    """Exact clean test accuracy of x -> sign(theta.x): Phi(theta_1 / (sigma ||theta||))."""
    theta = np.asarray(theta, dtype=float)
    norm = np.linalg.norm(theta, axis=-1)
    return ndtr(theta[..., 0] / (sigma * np.maximum(norm, 1e-300)))


def first_gradient_direction(x: np.ndarray, y_noisy: np.ndarray) -> np.ndarray:
    """g_0 = (1/n) sum_i ~y_i x_i: the direction of the first GD step from theta = 0."""
    return np.einsum("...n,...nd->...d", y_noisy, x) / x.shape[-2]


def fraction_true_on_flipped(theta, x, y, flipped) -> np.ndarray:
    """(a): fraction of the mislabelled points that sign(theta.x) gives their TRUE label.

    theta (..., T, d) against one dataset x (n, d); returns (..., T)."""
    pred = np.sign(np.asarray(theta) @ x.T)
    return (pred[..., flipped] == y[flipped]).mean(-1)


def lp_margin(x: np.ndarray, y_noisy: np.ndarray) -> float:
    """l-inf max margin of the noisy labels, capped at 1: > 0 iff they are separable.
    Interior point with crossover: half the dual simplex's time on these dense rows."""
    return margins.linf_max_margin(y_noisy[:, None] * x, gamma_max=1.0, method="highs-ipm")[0]


def svm_direction(x: np.ndarray, y_noisy: np.ndarray) -> np.ndarray:
    """Hard-margin SVM direction of the noisy labels (the limit of GD on separable data)."""
    return margins.hard_margin_svm(y_noisy[:, None] * x)


def elr_drift(p, lam: float):
    """Net gradient (CE + ELR, target t = p) in the true-class logit of a mislabelled example
    whose logit is free to move; positive means it drifts towards its noisy label."""
    p = np.asarray(p, dtype=float)
    return p - lam * (2 * p - 1) / 2


def elr_critical_lambda(p_max: float = 1 - CLAMP) -> float:
    """Smallest lambda with a negative drift at the top of the clamped range: 2p / (2p - 1)."""
    return 2 * p_max / (2 * p_max - 1)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    sigma = params["sigma"]
    x, y_noisy = data["main_x"], data["main_y_noisy"]
    g0 = first_gradient_direction(x, y_noisy)  # (S, d)
    early_a = [
        fraction_true_on_flipped(g, xs, ys, fl)
        for g, xs, ys, fl in zip(g0, x, data["main_y"], data["main_flipped"], strict=True)
    ]
    margins_main = [lp_margin(xs, ys) for xs, ys in zip(x, y_noisy, strict=True)]
    margins_low = [
        lp_margin(xs, ys) for xs, ys in zip(data["lowdim_x"], data["lowdim_y_noisy"], strict=True)
    ]
    svm_acc = [
        float(clean_accuracy(svm_direction(xs, ys), sigma)) if m > 0 else None
        for xs, ys, m in zip(x, y_noisy, margins_main, strict=True)
    ]
    return {
        "early_frac_true": early_a,  # per seed, direction g_0
        "early_test_acc": clean_accuracy(g0, sigma),
        "lp_margin_main": margins_main,
        "lp_margin_lowdim": margins_low,
        "separable_main": all(m > 1e-9 for m in margins_main),
        "separable_lowdim": any(m > 1e-9 for m in margins_low),
        "memorized_limit_main": 1.0 if all(m > 1e-9 for m in margins_main) else None,
        "svm_test_acc": svm_acc,
        "elr_lambda_critical": elr_critical_lambda(),
        "elr_basin_p": params["lam"] / (2 * (params["lam"] - 1)),
    }


# ----------------------------------------------------------------------------- training
def elr_logit_grad(p: torch.Tensor, target: torch.Tensor, lam: float) -> torch.Tensor:
    """d/dz of lam * log(1 - <p, t>) with p = (sigmoid z, 1 - sigmoid z) clamped as in the
    authors' code (no gradient where the clamp is active) and t held fixed."""
    pc = p.clamp(CLAMP, 1 - CLAMP)
    inner = pc * target + (1 - pc) * (1 - target)
    live = ((p > CLAMP) & (p < 1 - CLAMP)).to(p.dtype)
    return -lam * live * (2 * target - 1) * p * (1 - p) / (1 - inner)


def run_gd(x, y_noisy, lr: float, steps: int, keep: np.ndarray, lam: float, beta: float, name):
    """Full-batch GD on mean logistic loss (+ ELR when lam > 0); seeds on the leading axis.

    x (S, n, d), y_noisy (S, n) in {-1, +1}. Returns theta at the `keep` steps, (S, K, d)."""
    s, n, d = x.shape
    theta = torch.zeros(s, d, dtype=x.dtype, device=x.device)
    label01 = (y_noisy > 0).to(x.dtype)
    target = torch.full_like(label01, 0.5)  # ELR running target of P(class +1)
    keep_set, saved = set(int(k) for k in keep), []
    tick = runtime.Progress(steps, f"train {name}")
    for step in range(1, steps + 1):
        z = torch.bmm(x, theta[:, :, None])[..., 0]
        p = torch.sigmoid(z)
        grad_z = p - label01  # d(logistic loss)/dz for the noisy label
        if lam > 0:
            target = beta * target + (1 - beta) * p.clamp(CLAMP, 1 - CLAMP)
            grad_z = grad_z + elr_logit_grad(p, target, lam)
        theta = theta - lr * torch.bmm(grad_z[:, None, :], x)[:, 0] / n
        if step in keep_set:
            saved.append(theta.clone())
        tick(step - 1, acc_noisy=float((torch.sign(z) == y_noisy).to(x.dtype).mean()))
    return torch.stack(saved, dim=1)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One arm: 'gd' (plain), 'elr' (lambda = lam), 'elr_weak' (lambda = lam_weak < 2),
    'lowdim' (plain GD on the d << n control data)."""
    arm = point["arm"]
    shape = "lowdim" if arm == "lowdim" else "main"
    lam = {"gd": 0.0, "lowdim": 0.0, "elr": params["lam"], "elr_weak": params["lam_weak"]}[arm]
    x = torch.as_tensor(data[f"{shape}_x"], dtype=torch.float64, device=device)
    y_noisy = torch.as_tensor(data[f"{shape}_y_noisy"], dtype=torch.float64, device=device)
    keep = runtime.log_spaced_steps(params["steps"], params["n_checkpoints"])
    thetas = run_gd(x, y_noisy, params["lr"], params["steps"], keep, lam, params["beta"], arm)
    return {"theta": thetas.cpu().numpy(), "steps": keep}


# ----------------------------------------------------------------------------- measure
def trajectory_metrics(theta: np.ndarray, x, y, y_noisy, flipped, sigma: float) -> dict:
    """Per seed and checkpoint: (a), (b), clean-label train accuracy, exact test accuracy.

    theta (S, T, d); x (S, n, d); label arrays (S, n)."""
    pred = np.sign(np.einsum("std,snd->stn", theta, x))
    fl = flipped[:, None, :]
    n_flipped = np.maximum(flipped.sum(-1), 1)[:, None]
    n_clean = np.maximum((~flipped).sum(-1), 1)[:, None]
    return {
        "frac_true": ((pred == y[:, None]) & fl).sum(-1) / n_flipped,
        "frac_noisy": ((pred == y_noisy[:, None]) & fl).sum(-1) / n_flipped,
        "clean_train_acc": ((pred == y[:, None]) & ~fl).sum(-1) / n_clean,
        "test_acc": clean_accuracy(theta, sigma),
    }


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    arms = {}
    for pid, point in points.items():
        arm = point["arm"]
        shape = "lowdim" if arm == "lowdim" else "main"
        keys = ("x", "y", "y_noisy", "flipped")
        x, y, y_noisy, flipped = (data[f"{shape}_{k}"] for k in keys)
        metrics = trajectory_metrics(
            runs[pid]["theta"], x, y, y_noisy, flipped.astype(bool), params["sigma"]
        )
        arms[arm] = {"steps": runs[pid]["steps"], **metrics}
    return {"arms": arms}


# ----------------------------------------------------------------------------- verdict
def phase_statistics(arm: dict) -> dict[str, np.ndarray]:
    """Per seed: peak of (a), test accuracy at that peak, best and final test accuracy,
    final (b), largest (b) over the run."""
    a, b = np.asarray(arm["frac_true"]), np.asarray(arm["frac_noisy"])
    acc = np.asarray(arm["test_acc"])
    at_peak = np.argmax(a, axis=1)
    rows = np.arange(len(a))
    return {
        "peak_frac_true": a.max(1),
        "test_acc_at_peak": acc[rows, at_peak],
        "best_test_acc": acc.max(1),
        "final_test_acc": acc[:, -1],
        "final_frac_noisy": b[:, -1],
        "max_frac_noisy": b.max(1),
    }


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (lists in seed order); the judge aggregates them."""
    arms = {name: phase_statistics(arm) for name, arm in metrics["arms"].items()}
    gd, elr, weak, low = arms["gd"], arms["elr"], arms["elr_weak"], arms["lowdim"]
    svm = [v for v in theory["svm_test_acc"] if v is not None]

    def seeds(values):
        return [float(x) for x in np.asarray(values, dtype=float)]

    return {
        "gd_peak_frac_true": seeds(gd["peak_frac_true"]),
        "gd_test_acc_at_peak": seeds(gd["test_acc_at_peak"]),
        "gd_final_frac_noisy": seeds(gd["final_frac_noisy"]),
        "gd_test_acc_drop": seeds(gd["best_test_acc"] - gd["final_test_acc"]),
        "gd_final_test_acc": seeds(gd["final_test_acc"]),
        "elr_final_frac_noisy": seeds(elr["final_frac_noisy"]),
        "elr_test_acc_drop": seeds(elr["best_test_acc"] - elr["final_test_acc"]),
        "elr_weak_final_frac_noisy": seeds(weak["final_frac_noisy"]),
        "lowdim_max_frac_noisy": seeds(low["max_frac_noisy"]),
        # theory (data only): per-seed data facts, and deterministic closed forms
        "lp_margin_main": seeds(theory["lp_margin_main"]),
        "lp_margin_lowdim": seeds(theory["lp_margin_lowdim"]),
        "theory_early_frac_true_per_seed": seeds(theory["early_frac_true"]),
        "theory_early_frac_true": float(np.mean(theory["early_frac_true"])),
        "theory_early_test_acc": float(np.mean(theory["early_test_acc"])),
        "theory_svm_test_acc": float(np.mean(svm)) if svm else None,
        "theory_memorized_limit": theory["memorized_limit_main"],
        "theory_elr_lambda_critical": theory["elr_lambda_critical"],
        "theory_lowdim_lp_margin": float(np.max(theory["lp_margin_lowdim"])),
    }
