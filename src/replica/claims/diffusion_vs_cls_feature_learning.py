"""Feature learning under denoising vs classification (Han, Huang, Cao, Zou, ICLR 2025,
arXiv 2412.01021, "On the Feature Learning in Diffusion Models").

Claim. On the two-patch signal-noise data x = [mu_y, xi] (mu_{+1} perpendicular to mu_{-1},
|mu_{+1}| = |mu_{-1}|, xi ~ N(0, sigma^2 I) orthogonal to both), the same two-layer patch
network learns the signal and memorises the noise in a *balanced* way when it is trained by
denoising score matching (DSM): the stationary ratio of signal learning to noise memorisation
grows like n SNR^2 (slope 1 in log-log, one curve for every n). Trained for classification it
instead shows a phase transition on the same axis: for n SNR^2 above a constant it learns the
signal and ignores the noise, below it memorises the noise (winner takes all).
SNR = |mu| / (sigma sqrt(d)) and n is the number of training samples.

Networks (filters from the shared signal-noise module; activation sigma(z) = z^2):
  - denoiser, one shared filter bank w_1..w_m applied to each patch (n_classes = 1):
        s(x_t)^(p) = (1/m) sum_r sigma(<w_r, x_t^(p)>) w_r,
    trained to predict the clean patch x_0^(p) from x_t = alpha x_0 + beta eps (DSM at one
    diffusion time t, alpha = e^-t, beta = sqrt(1 - e^-2t)). The loss is averaged over eps
    *exactly*: z_r = <w_r, x_t> is Gaussian with mean a_r = alpha <w_r, x_0> and covariance
    beta^2 <w_r, w_r'>, so E z_r^2 and E z_r^2 z_r'^2 (Isserlis) are closed forms; GD is
    then deterministic.
  - classifier, the shared f = F_{+1} - F_{-1} with F_j = (1/m) sum_r sum_p sigma(<w_{j,r}, x_p>)
    and the logistic loss.

Measurement: the shared signal-noise decomposition w - w_0 = sum_k gamma_k mu_k/|mu_k|^2 +
sum_i rho_i xi_i/|xi_i|^2, then R = Gamma_sig / Gamma_noise with Gamma_sig = mean_k max_{j,r}
|gamma_{j,r,k}| and Gamma_noise = mean_i max_{j,r} |rho_{j,r,i}| (shared noise_memorization).

Theory (closed form, data only).
  - DSM: when the diffusion noise dominates the pre-activations (beta |w| >> alpha <w, x_0>),
    E_eps s(x_t) = (beta^2/m) sum_r |w_r|^2 w_r is input-independent, so the population
    optimum is the constant that fits both patches of every sample: s* = (mean_i mu_{y_i} +
    mean_i xi_i) / 2, and every filter moves along s*. Its coefficients are
    gamma_k = n_k |mu|^2 / (2n) and rho_i = |xi_i|^2 / (2n), hence
        R_theory = n |mu|^2 / (2 mean_i |xi_i|^2) = n SNR^2 / 2 * d/(d - 2)     (slope 1).
    Every sample pushes along its own signal but only sample i pushes along xi_i.
  - Classification: with sigma(z) = z^2 the early growth of <w_{j,r}, mu_j> and of
    <w_{j,r}, xi_i> is exponential with rates proportional to n |mu|^2 / 2 and |xi_i|^2, whose
    ratio is n SNR^2 / 2: whichever is faster fits the data first and the other stays at its
    initial scale, so R jumps (exponentially in training time) where the rates are equal,
    n SNR^2 = 2 (d - 2)/d.

Data scale. Each configuration is rescaled to a fixed energy |mu|^2 + E|xi|^2 per sample
(SNR and n SNR^2 are scale-free), so one learning rate and one diffusion time serve the whole
400x range of n SNR^2.
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime
from replica.blocks import signal_noise as sn

SIGNAL_KIND = "orthogonal"
# Ablation arm: classification at the DSM arm's initial filter norm and step budget, so that it
# differs from the DSM arm in the objective (and the objective's own step rule) only.
ABLATION = "cls_at_dsm"


def arm_settings(objective: str, params: dict) -> tuple[str, float, int]:
    """(loss, initial filter norm, steps) of a grid arm."""
    if objective == ABLATION:
        return "cls", params["init_norm_dsm"], params["steps_dsm"]
    return objective, params[f"init_norm_{objective}"], params[f"steps_{objective}"]


def square(z: torch.Tensor) -> torch.Tensor:
    """The activation sigma(z) = z^2 (polynomial activation of degree 2)."""
    return z * z


# ----------------------------------------------------------------------------- data
def n_snr2_grid(params: dict) -> np.ndarray:
    return np.geomspace(params["n_snr2_min"], params["n_snr2_max"], params["n_snr2_count"])


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """One signal-noise draw per (seed, n) with |mu| = 1; configurations are built from it.

    For each n SNR^2 value the signal patch is rescaled to |mu| = sigma sqrt(d n SNR^2 / n) and
    then the whole sample to the fixed energy (see config_batch): the same noise patches serve
    every grid value of a seed (common random numbers across the n SNR^2 axis).
    """
    out = {"n_snr2": n_snr2_grid(params), "seeds": np.asarray(seeds)}
    for n in params["sample_sizes"]:
        draws = []
        for seed in seeds:
            rng = np.random.default_rng([params["data_seed"], seed, n])
            draws.append(sn.patch_dataset(rng, n, params["dim"], 1.0, 1.0, kind=SIGNAL_KIND))
        stacked = sn.stack_seeds(draws)
        out[f"xi_n{n}"] = stacked["x"][:, :, 1]  # (S, n, d)
        out[f"label_n{n}"] = stacked["label"]  # (S, n)
        out[f"signal_norm_n{n}"] = np.array(
            [sn.signal_norm_for(v, n, 1.0, params["dim"]) for v in out["n_snr2"]]
        )
    return out


def config_batch(data: dict, n: int, energy: float) -> dict[str, np.ndarray]:
    """All (seed, n SNR^2) configurations of sample size n as one batch of B = S * G.

    Returns x0 (B, n, 2, d), mu (B, 2, d), xi (B, n, d), label (B, n), scale (B,).
    """
    xi, label = data[f"xi_n{n}"], data[f"label_n{n}"]
    norms = data[f"signal_norm_n{n}"]
    n_seeds, _, dim = xi.shape
    unit_mu = sn.signal_vectors(dim, 1.0, SIGNAL_KIND)
    noise_energy = (xi**2).sum(-1).mean(-1)  # (S,)
    scale = np.sqrt(energy / (norms[None, :] ** 2 + noise_energy[:, None]))  # (S, G)
    mu = unit_mu[None, None] * (norms[None, :, None, None] * scale[..., None, None])
    xi_b = xi[:, None] * scale[..., None, None]  # (S, G, n, d)
    x0 = np.empty((*xi_b.shape[:3], 2, dim))
    x0[:, :, :, 0] = signal_patches(mu, label)
    x0[:, :, :, 1] = xi_b
    flat = n_seeds * len(norms)
    return {
        "x0": x0.reshape(flat, n, 2, dim),
        "mu": mu.reshape(flat, 2, dim),
        "xi": xi_b.reshape(flat, n, dim),
        "label": np.repeat(label[:, None], len(norms), axis=1).reshape(flat, n),
        "scale": scale.reshape(flat),
    }


def signal_patches(mu: np.ndarray, label: np.ndarray) -> np.ndarray:
    """x^(1)_i = mu_{y_i}: mu (S, G, 2, d) (row 0 is class +1), label (S, n) -> (S, G, n, d)."""
    plus = label[:, None, :, None] > 0
    return np.where(plus, mu[:, :, None, 0], mu[:, :, None, 1])


# ----------------------------------------------------------------------------- theory
def mean_denoiser_ratio(mu: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """R of the constant (input-independent) DSM optimum: n |mu|^2 / (2 mean_i |xi_i|^2).

    mu (..., 2, d) with |mu_{+1}| = |mu_{-1}|, xi (..., n, d)."""
    n = xi.shape[-2]
    return n * (mu[..., 0, :] ** 2).sum(-1) / (2 * (xi**2).sum(-1).mean(-1))


def mean_denoiser(x0: np.ndarray) -> np.ndarray:
    """The constant output minimising sum_p mean_i |s - x0_i^(p)|^2: (B, d)."""
    return x0.mean(axis=(1, 2))


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    grid = np.asarray(data["n_snr2"])
    dim = params["dim"]
    out = {
        "n_snr2": grid,
        "theory_slope": 1.0,
        # classification: signal and noise growth rates n |mu|^2 / 2 and E|xi|^2 are equal here
        "cls_transition_n_snr2": 2.0 * (dim - sn.signal_span_dim(SIGNAL_KIND)) / dim,
        "dsm_ratio_closed_form": (grid / 2 * dim / (dim - 2)).tolist(),
    }
    for n in params["sample_sizes"]:
        batch = config_batch(data, n, params["energy"])
        ratio = mean_denoiser_ratio(batch["mu"], batch["xi"]).reshape(-1, len(grid))
        out[f"dsm_ratio_n{n}"] = ratio.mean(0)  # exact for the drawn noise norms
    return out


# ----------------------------------------------------------------------------- model
def expected_dsm_loss(filters: torch.Tensor, x0: torch.Tensor, alpha: float, beta: float):
    """E_eps sum_p |s(alpha x0 + beta eps)^(p) - x0^(p)|^2, averaged over samples: (B,).

    filters (B, 1, m, d) (one shared bank), x0 (B, n, P, d), sigma(z) = z^2. With
    z_r = <w_r, x_t> ~ N(a_r, C), a_r = alpha <w_r, x0>, C = beta^2 W W^T (Isserlis):
        E z_r^2 = a_r^2 + C_rr,
        E z_r^2 z_q^2 = (a_r^2 + C_rr)(a_q^2 + C_qq) + 2 C_rq^2 + 4 a_r a_q C_rq.
    """
    w = filters[:, 0]
    m = w.shape[1]
    gram = torch.einsum("bmd,bqd->bmq", w, w)  # (B, m, m)
    proj = torch.einsum("bmd,bnpd->bnpm", w, x0)  # <w_r, x0^(p)_i>
    a = alpha * proj
    cov = beta**2 * gram[:, None, None]  # (B, 1, 1, m, m)
    second = a**2 + beta**2 * torch.diagonal(gram, dim1=1, dim2=2)[:, None, None]
    fourth = (
        second[..., :, None] * second[..., None, :]
        + 2 * cov**2
        + 4 * a[..., :, None] * a[..., None, :] * cov
    )
    out_sq = (fourth * gram[:, None, None]).sum((-1, -2)) / m**2  # E |s|^2
    out_x0 = (second * proj).sum(-1) / m  # E <s, x0>
    per_patch = out_sq - 2 * out_x0 + (x0**2).sum(-1)
    return per_patch.sum(-1).mean(-1)


def classification_loss(filters: torch.Tensor, x0: torch.Tensor, label: torch.Tensor):
    """Mean logistic loss of f = F_{+1} - F_{-1} per configuration: (B,)."""
    margins = label * sn.margin_output(sn.class_outputs(filters, x0, square))
    return sn.logistic_loss(margins).mean(-1)


def dsm_step_sizes(x0: np.ndarray, beta: float, width: int, lr: float) -> torch.Tensor:
    """Per-configuration GD step: lr * m / (beta^4 |w*|^4), shape (B, 1, 1, 1).

    At the mean-denoiser optimum every filter has |w*| = (|s*| / beta^2)^(1/3), and moving
    all filters together changes s by 3 beta^2 |w*|^2 per unit, so the loss curvature of that
    mode is 36 beta^4 |w*|^4 / m (GD is stable for lr < 1/18 in these units). A data-only
    preconditioner: one dimensionless lr for the whole n SNR^2 grid and every n."""
    target = np.linalg.norm(mean_denoiser(x0), axis=-1)
    w_star = (target / beta**2) ** (1 / 3)
    return torch.as_tensor(lr * width / (beta**4 * w_star**4))[:, None, None, None]


def checkpoints(steps: int, count: int) -> np.ndarray:
    """Log-spaced steps from 1 (at 0 nothing has moved and R is 0/0), plus 80 % of the run
    (for the stationarity check) and the end."""
    base = np.geomspace(1, steps, count).round().astype(int)
    return np.unique(np.concatenate([base, [int(0.8 * steps), steps]]))


def signal_strength(gamma: torch.Tensor) -> torch.Tensor:
    """Gamma_sig = mean_k max_{j,r} |gamma_{j,r,k}|: (B,). Same as the shared
    signal_learning for one filter bank; for two classes it does not average in the
    (unlearned) cross terms <w_{+1,r}, mu_{-1}>."""
    return gamma.abs().amax(dim=(1, 2)).mean(-1)


def ratio_of(filters, init, mu, xi) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gamma, rho, _ = sn.decompose(filters, init, mu, xi)
    return signal_strength(gamma) / sn.noise_memorization(rho), gamma, rho


def train_size(data, objective: str, n: int, params: dict, seeds, device) -> dict:
    """GD on every (seed, n SNR^2) configuration of one sample size, batched."""
    batch = config_batch(data, n, params["energy"])
    as_t = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in batch.items()}
    n_configs, width, dim = len(batch["scale"]), params["width"], params["dim"]
    gen = torch.Generator().manual_seed(int(seeds[0]) * 7919 + n)
    loss_kind, init_norm, steps = arm_settings(objective, params)
    classes = 1 if loss_kind == "dsm" else 2
    init = sn.init_filters(gen, n_configs, width, dim, init_norm / dim**0.5, classes).to(device)
    w = init.clone().requires_grad_()
    if loss_kind == "dsm":
        alpha = float(np.exp(-params["diffusion_time"]))
        beta = float(np.sqrt(1 - alpha**2))
        lr = dsm_step_sizes(batch["x0"], beta, width, params["lr_dsm"]).to(device)

        def loss_fn(filters):
            return expected_dsm_loss(filters, as_t["x0"], alpha, beta)
    else:
        # the noise of sample i is pushed by that sample alone: lr grows with n
        lr = params["lr_cls_per_sample"] * n

        def loss_fn(filters):
            return classification_loss(filters, as_t["x0"], as_t["label"])

    keep = set(checkpoints(steps, params["n_checkpoints"]).tolist())
    ratios, losses = [], []
    tick = runtime.Progress(steps + 1, f"train {objective} n={n}")
    for step in range(steps + 1):
        loss = loss_fn(w)
        if step in keep:
            with torch.no_grad():
                ratios.append(ratio_of(w, init, as_t["mu"], as_t["xi"])[0])
                losses.append(loss.detach())
        if step < steps:
            (grad,) = torch.autograd.grad(loss.sum(), w)
            with torch.no_grad():
                w -= lr * grad
        tick(step, loss=float(loss.detach().mean()))
    with torch.no_grad():
        _, gamma, rho = ratio_of(w, init, as_t["mu"], as_t["xi"])
    shape = (len(seeds), -1)
    return {
        "gamma": gamma.reshape(*shape, *gamma.shape[1:]),  # (S, G, C, m, 2)
        "rho": rho.reshape(*shape, *rho.shape[1:]),  # (S, G, C, m, n)
        "ratio_traj": torch.stack(ratios, -1).reshape(*shape, len(ratios)),  # (S, G, T)
        "loss_traj": torch.stack(losses, -1).reshape(*shape, len(losses)),
        "checkpoints": torch.as_tensor(sorted(keep)),
    }


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One objective (point['objective']), every sample size and n SNR^2 value batched."""
    out = {}
    for n in params["sample_sizes"]:
        res = train_size(data, point["objective"], n, params, seeds, device)
        for key, value in res.items():
            out[f"{key}__n{n}"] = value.detach().cpu().numpy()
    return out


# ----------------------------------------------------------------------------- measure
def filter_fraction(gamma: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Fraction of filters whose signal coefficient beats every noise coefficient.

    gamma (..., C, m, 2), rho (..., C, m, n) -> (...,)."""
    signal = np.abs(gamma).max(-1)
    noise = np.abs(rho).max(-1)
    return (signal > noise).mean(axis=(-2, -1))


def relative_change(traj: np.ndarray, steps_kept: np.ndarray, steps: int) -> np.ndarray:
    """|R(T) / R(0.8 T) - 1| per configuration, traj (..., T)."""
    at = int(np.flatnonzero(steps_kept == int(0.8 * steps))[0])
    return np.abs(traj[..., -1] / traj[..., at] - 1)


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    out = {"n_snr2": data["n_snr2"], "sample_sizes": params["sample_sizes"], "objectives": {}}
    for pid, point in points.items():
        obj, run = point["objective"], runs[pid]
        steps = arm_settings(obj, params)[2]
        per_n = {}
        for n in params["sample_sizes"]:
            traj = run[f"ratio_traj__n{n}"]
            per_n[str(n)] = {
                "log10_ratio": np.log10(traj[..., -1]),  # (S, G)
                "filter_fraction": filter_fraction(run[f"gamma__n{n}"], run[f"rho__n{n}"]),
                "stationary_change": relative_change(traj, run[f"checkpoints__n{n}"], steps),
                "final_loss": run[f"loss_traj__n{n}"][..., -1],
                "ratio_traj": traj,
                "checkpoints": run[f"checkpoints__n{n}"],
            }
        out["objectives"][obj] = per_n
    return out


# ----------------------------------------------------------------------------- verdict
def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Slope, intercept and R^2 of the least-squares line y ~ x."""
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    r2 = 1 - (resid**2).sum() / ((y - y.mean()) ** 2).sum()
    return float(slope), float(intercept), float(r2)


def pooled_fits(per_n: dict, log_x: dict) -> np.ndarray:
    """Per seed: (slope, R^2) of log10 R against log10 x pooled over the sample sizes.

    log_x: {n: (G,)} abscissae per sample size."""
    curves = [np.asarray(per_n[n]["log10_ratio"]) for n in per_n]  # each (S, G)
    xs = np.concatenate([log_x[n] for n in per_n])
    fits = []
    for s in range(curves[0].shape[0]):
        slope, _, r2 = ols(xs, np.concatenate([c[s] for c in curves]))
        fits.append((slope, r2))
    return np.asarray(fits)


def slope1_violation(fits: np.ndarray) -> np.ndarray:
    """Per seed max(|slope - 1| / 0.2, (1 - R^2) / 0.05): a curve passes the DSM slope-1 test
    (slope in [0.8, 1.2] and R^2 >= 0.95) iff this is <= 1. fits (S, 2) -> (S,)."""
    return np.maximum(np.abs(fits[:, 0] - 1) / 0.2, (1 - fits[:, 1]) / 0.05)


def max_local_slope(log_x: np.ndarray, log_y: np.ndarray) -> float:
    return float(np.max(np.diff(log_y) / np.diff(log_x)))


def crossing(log_x: np.ndarray, log_y: np.ndarray, level: float = 0.0) -> float | None:
    """First abscissa where the piecewise-linear curve log_y crosses level upward."""
    above = log_y >= level
    idx = np.flatnonzero(~above[:-1] & above[1:])
    if len(idx) == 0:
        return None
    i = idx[0]
    frac = (level - log_y[i]) / (log_y[i + 1] - log_y[i])
    return float(log_x[i] + frac * (log_x[i + 1] - log_x[i]))


def jump_width(log_x: np.ndarray, fraction: np.ndarray, cap: float = 10.0) -> float:
    """Decades between the last point with fraction <= 0.2 and the first later one >= 0.8.

    `cap` (a finite stand-in for 'never') when the fraction does not make the jump."""
    hi = np.flatnonzero(fraction >= 0.8)
    if len(hi) == 0:
        return cap
    lo = np.flatnonzero(fraction[: hi[0]] <= 0.2)
    if len(lo) == 0:
        return cap
    return float(log_x[hi[0]] - log_x[lo[-1]])


def snr2_only_gap(y_lo: np.ndarray, y_hi: np.ndarray, n_lo: int, n_hi: int, log_grid) -> float:
    """Mean |log10 R(n_lo) - log10 R(n_hi)| at equal SNR^2 (not n SNR^2), interpolated, over
    the overlapping SNR^2 range; y_lo, y_hi one seed's curves on the n SNR^2 grid."""
    x_lo, x_hi = log_grid - np.log10(n_lo), log_grid - np.log10(n_hi)
    common = x_lo[(x_lo >= x_hi.min()) & (x_lo <= x_hi.max())]
    if len(common) == 0:
        return 0.0
    return float(np.mean(np.abs(np.interp(common, x_hi, y_hi) - np.interp(common, x_lo, y_lo))))


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one fit / curve / crossing per seed, in seed order)."""
    log_grid = np.log10(np.asarray(metrics["n_snr2"], dtype=float))
    objectives = metrics["objectives"]
    dsm, cls = objectives["dsm"], objectives["cls"]
    ns = sorted(dsm, key=int)
    same_axis = {n: log_grid for n in ns}
    dsm_fit, cls_fit = pooled_fits(dsm, same_axis), pooled_fits(cls, same_axis)
    curve = {
        obj: {n: np.asarray(v["log10_ratio"], dtype=float) for n, v in per_n.items()}
        for obj, per_n in objectives.items()
    }
    n_seeds = dsm_fit.shape[0]
    theory_log = np.log10(theory["cls_transition_n_snr2"])

    def offset(y):  # a curve that never crosses R = 1: an offset larger than the grid itself
        c = crossing(log_grid, y)
        return abs(c - theory_log) if c is not None else 10.0

    per_seed = {k: [] for k in ("gap", "dsm_jump", "stat", "cls_jump", "frac", "off", "snr2")}
    for s in range(n_seeds):
        d = {n: curve["dsm"][n][s] for n in ns}
        c = {n: curve["cls"][n][s] for n in ns}
        per_seed["gap"].append(float(np.max(np.abs(d[ns[0]] - d[ns[-1]]))))
        per_seed["dsm_jump"].append(max(max_local_slope(log_grid, d[n]) for n in ns))
        per_seed["stat"].append(
            max(float(np.max(np.asarray(dsm[n]["stationary_change"])[s])) for n in ns)
        )
        per_seed["cls_jump"].append(min(max_local_slope(log_grid, c[n]) for n in ns))
        per_seed["frac"].append(
            max(jump_width(log_grid, np.asarray(cls[n]["filter_fraction"])[s]) for n in ns)
        )
        per_seed["off"].append(max(offset(c[n]) for n in ns))
        per_seed["snr2"].append(
            snr2_only_gap(d[ns[0]], d[ns[-1]], int(ns[0]), int(ns[-1]), log_grid)
        )
    out = {
        "dsm_slope": dsm_fit[:, 0].tolist(),
        "dsm_r2": dsm_fit[:, 1].tolist(),
        "dsm_collapse_gap": per_seed["gap"],
        "dsm_max_local_slope": per_seed["dsm_jump"],
        "dsm_stationary_change": per_seed["stat"],
        "cls_max_local_slope": per_seed["cls_jump"],
        "cls_fraction_jump_decades": per_seed["frac"],
        "cls_transition_offset_decades": per_seed["off"],
        "cls_slope": cls_fit[:, 0].tolist(),
        "cls_r2": cls_fit[:, 1].tolist(),
        "cls_slope1_violation": slope1_violation(cls_fit).tolist(),
        "dsm_snr2_only_gap": per_seed["snr2"],
        "theory_slope": float(theory["theory_slope"]),
    }
    if ABLATION in objectives:
        abl_fit = pooled_fits(objectives[ABLATION], same_axis)
        out["cls_at_dsm_slope"] = abl_fit[:, 0].tolist()
        out["cls_at_dsm_r2"] = abl_fit[:, 1].tolist()
        out["cls_at_dsm_slope1_violation"] = slope1_violation(abl_fit).tolist()
    return out
