"""Full-batch Adam on separable data converges in direction to the maximum l-infinity margin.

Claim (Zhang, Zou & Cao, "The Implicit Bias of Adam on Separable Data", NeurIPS 2024,
arXiv 2406.10650): for linearly separable data, logistic loss, full-batch Adam with
beta1 < beta2, stability constant eps -> 0 and a decaying step size eta_t = Theta(t^-a),
a in (0, 1], the normalised l-infinity margin of the iterates,

    gamma_inf(w) = min_i y_i <w, x_i> / ||w||_inf,

converges to the maximum l-infinity margin gamma_inf* = max_{||w||_inf <= 1} min_i y_i <w, x_i>
(a linear programme), polynomially fast in t for a < 1. Gradient descent instead goes to the
l2 max margin (Soudry et al. 2018), gamma_2* = max_{||w||_2 <= 1} min_i y_i <w, x_i> (a QP).

Experiment: anisotropic Gaussian data where the two geometries disagree, three optimizers run
for T steps (one dataset per seed, seeds batched along a leading axis):
  - adam_eps0     Adam with eps = 0 (the claim), no bias correction as in the paper;
  - adam_eps1e-8  Adam with eps = 1e-8 in true-gradient units (torch's default): once the
                  gradients fall below eps it stops behaving like sign descent (control);
  - ngd           normalised gradient descent w += eta_t * g / ||g||_2, the l2 reference.
Theory values (gamma_inf*, gamma_2*, w_inf*, w_2*, the cross ratios) come from the LP and the
hard-margin SVM on the data alone; they never see a trained model.

Numerics: the logistic gradients underflow (margins reach hundreds), so everything is kept in
log-scaled units: with a reference c ~ min_i y_i <w, x_i>, the gradient is stored as
g' = sum_i exp(c - z_i) y_i x_i (= -n grad L / exp(-c)) and Adam's moments in the same units.
With eps = 0 the update m / sqrt(v) is scale-free, so this is exact; the reference is reset
every few dozen steps (rescaling the moments by exp(c_new - c_old) and its square).
"""

from __future__ import annotations

import numpy as np

from replica import runtime
from replica.blocks import margins

BETA1, BETA2 = 0.9, 0.99
# Steps between resets of the log-scale reference; margins move by < ~5 per step here,
# far from the ~700 that would overflow exp() inside one block.
RESCALE_EVERY = 64
# Above this margin 1 + exp(-margin) rounds to 1 in float64 (exp(-37) < 2^-53 / 2).
TAIL_MARGIN = 50.0


# ----------------------------------------------------------------------------- data
def _one_dataset(n: int, d: int, s_min: float, s_max: float, reject: float, seed: int):
    """x ~ N(0, diag(s^2)), y = sign<w*, x>, points too close to the teacher plane rejected."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(np.log10(s_min), np.log10(s_max), d)
    teacher = rng.normal(size=d)
    pool = rng.normal(size=(6 * n, d)) * scales
    dist = pool @ teacher / np.linalg.norm(teacher)
    keep = np.abs(dist) >= reject * np.median(np.abs(dist))
    x = pool[keep][:n]
    y = np.sign(dist[keep][:n])
    assert x.shape[0] == n, "rejection pool too small"
    return x, y, teacher


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    sets = [
        _one_dataset(
            params["n"],
            params["d"],
            params["scale_min"],
            params["scale_max"],
            params["reject_frac"],
            seed,
        )
        for seed in seeds
    ]
    x, y, teacher = (np.stack(parts) for parts in zip(*sets, strict=True))
    return {"x": x, "y": y, "teacher": teacher, "seeds": np.asarray(seeds)}


# --------------------------------------------------------------------------- theory
def linf_max_margin(z: np.ndarray, perturb: np.ndarray | None = None):
    """The l-inf max-margin LP (|w_j| <= 1). Returns (normalised margin of its w, w)."""
    _, w = margins.linf_max_margin(z, tilt=perturb)
    return float(np.min(z @ w) / np.max(np.abs(w))), w


def l2_max_margin(z: np.ndarray):
    """Hard-margin SVM. Returns (gamma_2*, unit w_2*)."""
    w = margins.hard_margin_svm(z)
    return float(1.0 / np.linalg.norm(w)), w / np.linalg.norm(w)


def linf_margin(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Normalised l-inf margin min_i z_i.w / ||w||_inf, batched over leading axes of w."""
    return np.min(w @ np.swapaxes(z, -1, -2), axis=-1) / np.max(np.abs(w), axis=-1)


def l2_margin(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Normalised l2 margin; z (n, d) with w (d,), or z (S, n, d) with w (S, K, d)."""
    return np.min(w @ np.swapaxes(z, -1, -2), axis=-1) / np.linalg.norm(w, axis=-1)


def _signed(data) -> np.ndarray:
    return data["y"][..., None] * data["x"]  # (S, n, d): z_i = y_i x_i


def reference_solutions(data) -> list[dict]:
    """Per seed: both max-margin solutions and the cross ratios (data only, no training)."""
    out = []
    for k, z in enumerate(_signed(data)):
        g_inf, w_inf = linf_max_margin(z)
        g_2, w_2 = l2_max_margin(z)
        tilt = 1e-6 * np.random.default_rng(int(data["seeds"][k])).normal(size=z.shape[1])
        _, w_tilt = linf_max_margin(z, tilt)
        unit = w_inf / np.linalg.norm(w_inf)
        shift = float(np.linalg.norm(w_tilt / np.linalg.norm(w_tilt) - unit))
        out.append(
            {
                "gamma_linf": g_inf,
                "gamma_l2": g_2,
                "w_linf": w_inf,
                "w_l2": w_2,
                "cross_linf_of_l2": float(linf_margin(z, w_2) / g_inf),
                "cross_l2_of_linf": float(l2_margin(z, w_inf) / g_2),
                "lp_perturb_shift": shift,
                "cos_linf_l2": float(unit @ w_2),
            }
        )
    return out


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    refs = reference_solutions(data)
    per_seed = {key: [r[key] for r in refs] for key in refs[0]}
    return {
        **per_seed,
        "linf_ratio_theory": 1.0,  # Adam(eps=0) reaches the LP optimum: ratio 1
        "l2_ratio_theory": 1.0,  # NGD reaches the QP optimum: ratio 1
        "lp_unique": [s < 1e-3 for s in per_seed["lp_perturb_shift"]],
    }


# ---------------------------------------------------------------------------- train
class _Buffers:
    """Work arrays of one step, allocated once: the loop runs 1e6 steps on (S, 60, 20) arrays,
    where numpy's per-call overhead and fresh allocations, not the arithmetic, set the cost.
    Every op below is the same ufunc or matmul kernel on the same operands as the plain
    expressions in the comments, only written into these buffers (bit-identical results)."""

    def __init__(self, n_seeds: int, n: int, d: int):
        self.margins = np.empty((n_seeds, n, 1))
        self.weights = np.empty((n_seeds, n, 1))
        self.grad = np.empty((n_seeds, 1, d))
        self.tmp = np.empty((n_seeds, 1, d))
        self.norm = np.empty((n_seeds, 1, 1))


def _logscale_grad(z, w, ref, tail: bool, buf: _Buffers) -> np.ndarray:
    """g' = sum_i sigmoid(-z_i.w) z_i / exp(-ref), i.e. -n grad L(w) in units of exp(-ref).

    sigmoid(-m) / e^-ref = e^(ref - m) / (1 + e^-m). Once every margin exceeds TAIL_MARGIN,
    1 + e^-m == 1 in float64 and the division is skipped (exact, and 3 ops cheaper).
    Shapes: z (S, n, d), w (S, d, 1), ref (S, 1, 1) -> (S, 1, d), returned in buf.grad.
    """
    sample_margins = np.matmul(z, w, out=buf.margins)  # z @ w, (S, n, 1)
    weights = np.exp(np.subtract(ref, sample_margins, out=buf.weights), out=buf.weights)
    if not tail:  # weights /= 1 + exp(-margins)
        denom = np.exp(np.negative(sample_margins, out=buf.margins), out=buf.margins)
        weights /= np.add(1.0, denom, out=denom)
    return np.matmul(weights.transpose(0, 2, 1), z, out=buf.grad)


def _run(data, optimizer: str, params: dict):
    """All seeds at once; returns w at log-spaced checkpoints, shape (S, K, d)."""
    z = _signed(data)
    n_seeds, n, d = z.shape
    total = int(params["steps"])
    eta = (params["lr0"] * (np.arange(total) + 2.0) ** -params["lr_decay"]).tolist()
    marks = runtime.log_spaced_steps(total, params["n_checkpoints"])
    eps = {"adam_eps0": 0.0, "adam_eps1e-8": 1e-8, "ngd": None}[optimizer]
    # Adam step -eta m/(sqrt(v)+eps) in rescaled units m'' = -m n/((1-b1) s),
    # v'' = v n^2/((1-b2) s^2), with s = exp(-ref):
    # w += eta (1-b1)/sqrt(1-b2) m''/(sqrt(v'') + eps n/(s sqrt(1-b2))).
    gain = (1 - BETA1) / np.sqrt(1 - BETA2)
    w = np.zeros((n_seeds, d, 1))
    w_row = w.transpose(0, 2, 1)  # (S, 1, d) view of w, for the update w += u^T
    m = np.zeros((n_seeds, 1, d))
    v = np.zeros((n_seeds, 1, d))
    ref = np.zeros((n_seeds, 1, 1))
    buf = _Buffers(n_seeds, n, d)
    u = np.empty((n_seeds, 1, d))
    saved, t = [], 0
    tick = runtime.Progress(len(marks), f"train {optimizer}")
    for i, mark in enumerate(marks):
        while t < mark:
            new_ref = np.min(z @ w, axis=1, keepdims=True)
            factor = np.exp(new_ref - ref)  # exact change of units for the moments
            m *= factor
            v *= factor * factor
            ref = new_ref
            eps_scaled = (
                0.0 if not eps else eps * n * np.exp(np.minimum(ref, 700.0)) / np.sqrt(1 - BETA2)
            )
            tail = bool(np.min(ref) > TAIL_MARGIN)
            stop = min(mark, t + RESCALE_EVERY)
            for step in range(t, stop):
                g = _logscale_grad(z, w, ref, tail, buf)
                if eps is None:  # normalised GD: u = g / sqrt(sum(g * g, axis=2))
                    np.sum(np.multiply(g, g, out=buf.tmp), axis=2, keepdims=True, out=buf.norm)
                    np.divide(g, np.sqrt(buf.norm, out=buf.norm), out=u)
                else:  # m = b1 m + g; v = b2 v + g^2; u = gain m / (sqrt(v) + eps)
                    m *= BETA1
                    m += g
                    v *= BETA2
                    v += np.multiply(g, g, out=buf.tmp)
                    np.sqrt(v, out=u)
                    if eps:
                        u += eps_scaled
                    np.divide(m, u, out=u)
                    u *= gain
                u *= eta[step]
                w_row += u
            t = stop
        saved.append(w[:, :, 0].copy())
        tick(i, step=t)
    return marks, np.stack(saved, axis=1)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    # numpy on CPU: at (S, 60, 20) one step is ~15 tiny ops, and torch's per-op overhead is
    # ~3x numpy's (measured 22 vs 8 us/step); `device` is therefore not used.
    steps, weights = _run(data, point["optimizer"], params)
    return {"steps": steps, "weights": weights}


# -------------------------------------------------------------------------- measure
def log_loss(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """log of the mean logistic loss, stable for margins in the hundreds. w: (S, K, d)."""
    sample_margins = np.einsum("snd,skd->skn", z, w)
    log_terms = np.where(
        sample_margins > 30,
        -sample_margins,
        np.log(np.log1p(np.exp(-np.minimum(sample_margins, 30)))),
    )
    top = log_terms.max(axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.mean(np.exp(log_terms - top), axis=-1))


def gap_exponent(steps: np.ndarray, ratio: np.ndarray, t_from: float) -> np.ndarray:
    """Slope p of log(1 - ratio) ~ -p log t over t >= t_from, per seed (ratio: (S, K))."""
    sel = steps >= t_from
    if sel.sum() < 3:  # too few checkpoints to fit a slope
        return np.full(ratio.shape[0], np.nan)
    gap = np.maximum(1.0 - ratio[:, sel], 1e-15)
    slopes = [np.polyfit(np.log(steps[sel]), np.log(g), 1)[0] for g in gap]
    return -np.asarray(slopes)


def measure(data, runs: dict[str, dict[str, np.ndarray]], points: dict[str, dict], params) -> dict:
    z = _signed(data)
    refs = reference_solutions(data)
    g_inf = np.array([r["gamma_linf"] for r in refs])[:, None]
    g_2 = np.array([r["gamma_l2"] for r in refs])[:, None]
    u_inf = np.stack([r["w_linf"] / np.linalg.norm(r["w_linf"]) for r in refs])
    u_2 = np.stack([r["w_l2"] for r in refs])
    out = {}
    for pid, run in runs.items():
        steps, w = run["steps"], run["weights"]  # (K,), (S, K, d)
        unit = w / np.linalg.norm(w, axis=-1, keepdims=True)
        linf = linf_margin(z, w) / g_inf
        l2 = l2_margin(z, w) / g_2
        out[points[pid]["optimizer"]] = {
            "steps": steps,
            "linf_ratio": linf,
            "l2_ratio": l2,
            "log_loss": log_loss(z, w),
            "cos_linf": np.einsum("skd,sd->sk", unit, u_inf),
            "cos_l2": np.einsum("skd,sd->sk", unit, u_2),
            "final_linf_ratio": linf[:, -1],
            "final_l2_ratio": l2[:, -1],
            "gap_exponent": gap_exponent(steps, linf, steps[-1] / 10),
        }
    return out


# -------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one dataset per seed, in seed order) and the theory constants."""
    adam, eps, ngd = metrics["adam_eps0"], metrics["adam_eps1e-8"], metrics["ngd"]
    pred_l2_of_linf = np.asarray(theory["cross_l2_of_linf"], dtype=float)
    pred_linf_of_l2 = np.asarray(theory["cross_linf_of_l2"], dtype=float)
    adam_l2 = np.asarray(adam["final_l2_ratio"], dtype=float)
    gap = np.asarray(adam["gap_exponent"], dtype=float)
    out = {
        "adam_linf_ratio": adam["final_linf_ratio"],
        "adam_l2_excess": adam_l2 - pred_l2_of_linf,
        "ngd_l2_ratio": ngd["final_l2_ratio"],
        "ngd_linf_ratio": ngd["final_linf_ratio"],
        "ngd_linf_excess": np.asarray(ngd["final_linf_ratio"]) - pred_linf_of_l2,
        "eps_linf_ratio": eps["final_linf_ratio"],
        "eps_l2_gain": np.asarray(eps["final_l2_ratio"]) - adam_l2,
        "cross_linf_of_l2": pred_linf_of_l2,
        "cross_l2_of_linf": pred_l2_of_linf,
        "lp_perturb_shift": theory["lp_perturb_shift"],
        "linf_ratio_theory": float(theory["linf_ratio_theory"]),
        "l2_ratio_theory": float(theory["l2_ratio_theory"]),
    }
    out = {
        k: v if isinstance(v, float) else np.asarray(v, dtype=float).tolist()
        for k, v in out.items()
    }
    # reported, not gated; undefined (too few checkpoints, smoke scale) leaves it out
    if np.all(np.isfinite(gap)):
        out["adam_gap_exponent"] = gap.tolist()
    return out
