"""Probabilistic stability of SGD (Ziyin, Li, Galanti, Ueda 2023, arXiv 2303.13093; v4 is
"Type-II Saddles and Probabilistic Stability of Stochastic Gradient Descent").

Claim. Near a saddle where the gradient noise vanishes, SGD is a product of random matrices, and
whether it is attracted to the saddle is decided by the sign of a Lyapunov exponent
(convergence in probability), not by moments of the iterates: SGD can collapse onto a
low-rank saddle when the gradient noise is large, where every moment-based (variance,
"linear stability") criterion says the saddle is unstable.

Setting (the paper's minimal example). x ~ N(0, 1), y = x + s eps (label noise s), a rank-one
"network" f(x) = u v x, loss l = (u v x - y)^2 / 2, SGD with learning rate lam and batch B:
    u <- u - lam mean_b[(u v x_b - y_b) v x_b],   v <- v - lam mean_b[(u v x_b - y_b) u x_b].
The saddle is (u, v) = (0, 0); the global minima are u v = 1.

Theory. Linearised at the saddle the step is [u, v] <- [[1, lam h], [lam h, 1]] [u, v] with
h = mean_b x_b y_b. The matrices commute; along (1, 1)/sqrt 2 the multiplier is 1 + lam h and
along (1, -1)/sqrt 2 it is 1 - lam h, so after t steps the two components are products of
i.i.d. factors and, by the law of large numbers for their logarithms,
    Lambda_pm = E log|1 pm lam h|      (Monte Carlo over the data distribution).
The saddle attracts (u, v) -> 0 in probability iff Lambda_+ < 0 and Lambda_- < 0.
The moment criterion instead asks E(1 + lam h)^2 < 1; since E h = E x y = 1 > 0,
E(1 + lam h)^2 = 1 + 2 lam + lam^2 E h^2 > 1 for every lam: it predicts no collapse anywhere.
For small lam, Lambda_+ ~ lam - lam^2 (3 + s^2)/2 (B = 1), negative once the label noise is
large. A larger batch averages h, shrinks its variance by B and with it the collapse region.

Pitfall (from the design's prototype): a sign-symmetric initialisation u = +-v lies on an
invariant line of the dynamics (the multiplier is 1 + lam h on u = v and 1 - lam h on u = -v),
so half of such runs collapse along u = -v whenever Lambda_- < 0, even without label noise.
The claim is tested with i.i.d. initialisation; the symmetric init is run as a control arm.
"""

from __future__ import annotations

import numpy as np

from replica import runtime

ARMS = {"b1": 1, "b16": 16, "signsym": 1}  # arm -> batch size
COLLAPSE_TOL = 1e-8  # |u|, |v| below this at the end: collapsed onto the saddle
FLUSH = 1e-100  # below this the iterate is set to the fixed point 0 (avoids denormals)
BLOWUP = 1e8  # |u v| above this: diverged (recorded as a flag, iterate frozen at 0)


# ----------------------------------------------------------------------------- data
def lr_grid(params: dict) -> np.ndarray:
    return np.geomspace(params["lr_min"], params["lr_max"], params["lr_count"])


def noise_grid(params: dict) -> np.ndarray:
    return np.linspace(0.0, params["noise_max"], params["noise_count"])


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """The (lr, noise) grid and per-seed i.i.d. initial weights u, v ~ N(0, init_std^2).

    Training data are streamed (fresh x, eps every step), so only the grid and the
    initialisation are data here."""
    init = np.stack([np.random.default_rng([params["data_seed"], s]).normal(size=2) for s in seeds])
    return {
        "lr": lr_grid(params),
        "noise": noise_grid(params),
        "init": params["init_std"] * init,  # (S, 2)
    }


# ----------------------------------------------------------------------------- theory
def products(rng: np.random.Generator, noise: np.ndarray, batch: int, samples: int) -> np.ndarray:
    """Samples of h = mean_b x_b y_b with y = x + s eps: (len(noise), samples)."""
    x = rng.standard_normal((samples, batch))
    eps = rng.standard_normal((samples, batch))
    xx, xe = (x * x).mean(1), (x * eps).mean(1)
    return xx[None, :] + noise[:, None] * xe[None, :]


def mean_and_std(values: np.ndarray, scratch: np.ndarray) -> tuple[float, float]:
    """values.mean() and values.std() of a 1-D array, computed as numpy computes them (bit for
    bit: the sum over n, then the root mean square of the deviations from the mean), sharing the
    sum and writing the deviations into scratch rather than into fresh temporaries."""
    n = len(values)
    mean = values.sum() / n
    np.subtract(values, mean, out=scratch)
    np.multiply(scratch, scratch, out=scratch)
    return mean, np.sqrt(scratch.sum() / n)


def lyapunov_exponents(
    lr: np.ndarray, noise: np.ndarray, batch: int, samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monte Carlo Lambda_pm = E log|1 pm lam h| on the (noise, lr) grid, and standard errors.

    Common random numbers across the grid (one sample set), so neighbouring cells are smooth.
    Returns Lambda_+ and Lambda_- (noise, lr) and the larger of their standard errors.
    One noise level at a time, in three preallocated sample-sized buffers: the cost is the
    logarithms, not allocating and faulting in fresh (noise, samples) arrays for every term."""
    rng = np.random.default_rng(seed)
    h = products(rng, noise, batch, samples)  # (N_s, samples)
    plus = np.empty((len(noise), len(lr)))
    minus, se = np.empty_like(plus), np.empty_like(plus)
    step, logs, scratch = np.empty(samples), np.empty(samples), np.empty(samples)
    for i, h_row in enumerate(h):
        for j, lam in enumerate(lr):
            np.multiply(lam, h_row, out=step)  # lam h
            np.log(np.abs(np.add(1, step, out=logs), out=logs), out=logs)  # log|1 + lam h|
            plus[i, j], sd_plus = mean_and_std(logs, scratch)
            np.log(np.abs(np.subtract(1, step, out=logs), out=logs), out=logs)  # log|1 - lam h|
            minus[i, j], sd_minus = mean_and_std(logs, scratch)
            se[i, j] = np.maximum(sd_plus, sd_minus) / np.sqrt(samples)
    return plus, minus, se


def moment_growth(lr: np.ndarray, noise: np.ndarray, batch: int) -> np.ndarray:
    """E(1 + lam h)^2 in closed form: E h = 1, Var h = (2 + s^2) / B. (noise, lr)."""
    second = 1 + (2 + noise[:, None] ** 2) / batch
    return 1 + 2 * lr[None, :] + lr[None, :] ** 2 * second


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    lr, noise = np.asarray(data["lr"]), np.asarray(data["noise"])
    out = {"lr": lr, "noise": noise}
    for arm, batch in (("b1", 1), ("b16", 16)):
        plus, minus, se = lyapunov_exponents(
            lr, noise, batch, params["mc_samples"], params["mc_seed"]
        )
        out[arm] = {
            "lyap_plus": plus,
            "lyap_minus": minus,
            "lyap_max": np.maximum(plus, minus),
            "mc_se": se,
            "moment_growth": moment_growth(lr, noise, batch),
        }
    return out


# ----------------------------------------------------------------------------- training
def batch_statistics(rng: np.random.Generator, noise, batch: int, shape) -> tuple:
    """One SGD step's data through its sufficient statistics, exactly in distribution:
    A = mean_b x_b^2 ~ chi2_B / B and H = mean_b x_b y_b = A + s sqrt(A / B) z, z ~ N(0, 1)
    (given x, sum_b x_b eps_b ~ N(0, sum_b x_b^2)). The cost does not grow with B."""
    if batch == 1:
        x = rng.standard_normal(shape)
        a = x * x
    else:
        a = rng.standard_gamma(batch / 2, shape) * (2 / batch)
    h = a + noise * np.sqrt(a / batch) * rng.standard_normal(shape)
    return a, h


def sgd(
    init: np.ndarray, lr: np.ndarray, noise: np.ndarray, batch: int, steps: int, seed: int
) -> dict[str, np.ndarray]:
    """SGD on l = (u v x - y)^2 / 2 for every (seed, noise, lr) at once.

    The mini-batch gradient is mean_b (u v x_b - y_b) x_b (v, u) = (u v A - H) (v, u).
    init (S, 2) -> u, v arrays (S, N_s, N_lr). Fresh data every step from one generator.
    Divergence is recorded as a flag (the iterate is then frozen at the fixed point 0)."""
    rng = np.random.default_rng(seed)
    shape = (init.shape[0], len(noise), len(lr))
    u = np.broadcast_to(init[:, 0, None, None], shape).copy()
    v = np.broadcast_to(init[:, 1, None, None], shape).copy()
    lam, s = lr[None, None, :], noise[None, :, None]
    diverged = np.zeros(shape, dtype=bool)
    tick = runtime.Progress(steps, f"sgd B={batch}")
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(steps):
            a, h = batch_statistics(rng, s, batch, shape)
            grad = lam * (u * v * a - h)
            u, v = u - grad * v, v - grad * u
            if step % 64 == 63 or step == steps - 1:
                blown = ~np.isfinite(u * v) | (np.abs(u * v) > BLOWUP)
                diverged |= blown
                u[blown], v[blown] = 0.0, 0.0
                tiny = (np.abs(u) < FLUSH) & (np.abs(v) < FLUSH)
                u[tiny], v[tiny] = 0.0, 0.0
                tick(step, frac_small=float(tiny.mean()))
    return {"u": u, "v": v, "diverged": diverged}


def sign_symmetric(init: np.ndarray) -> np.ndarray:
    """u = |u0| sign, v = +-u: the artefact-prone initialisation (random sign per seed)."""
    sym = np.abs(init[:, :1]).repeat(2, axis=1)
    sym[:, 1] *= np.sign(init[:, 1])
    return sym


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One arm: batch 1 (the claim), batch 16 (control), or batch 1 with u = +-v init.

    Runs in numpy whatever the device: each step is a few element-wise operations on
    S x N_s x N_lr scalars, far below what would pay for a device transfer."""
    arm = point["arm"]
    init = np.asarray(data["init"])
    if arm == "signsym":
        init = sign_symmetric(init)
    noise = np.asarray(data["noise"])
    lr = np.asarray(data["lr"])
    run_seed = int(params["data_seed"]) * 1000 + list(ARMS).index(arm) + 10 * int(seeds[0])
    return sgd(init, lr, noise, ARMS[arm], params["steps"], run_seed)


# ----------------------------------------------------------------------------- measure
def outcomes(u: np.ndarray, v: np.ndarray, diverged: np.ndarray) -> dict[str, np.ndarray]:
    """Per-cell fractions over seeds (axis 0) of the four outcome classes, and the per-seed
    collapse indicator (S, N_s, N_lr) that the verdict's per-seed statistics are built from."""
    alive = ~diverged
    collapse = alive & (np.abs(u) < COLLAPSE_TOL) & (np.abs(v) < COLLAPSE_TOL)
    prod = u * v
    return {
        "collapsed": collapse.astype(np.uint8),
        "collapse": collapse.mean(0),
        "correct": (alive & (prod > 0.1)).mean(0),
        "incorrect": (alive & (prod < -0.1)).mean(0),
        "diverged": diverged.mean(0),
    }


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    out = {"lr": data["lr"], "noise": data["noise"], "seeds": int(len(data["init"])), "arms": {}}
    for pid, point in points.items():
        run = runs[pid]
        out["arms"][point["arm"]] = outcomes(run["u"], run["v"], run["diverged"])
    return out


# ----------------------------------------------------------------------------- verdict
def sign_agreement(collapsed: np.ndarray, lyap_max: np.ndarray) -> np.ndarray:
    """Per seed: the fraction of cells where 'this seed collapsed' equals 'Lambda_max < 0'.

    collapsed (S, N_s, N_lr) of 0/1 or a single (N_s, N_lr) map -> (S,) or a number."""
    agree = (np.asarray(collapsed) >= 0.5) == (np.asarray(lyap_max) < 0)
    return agree.mean(axis=(-2, -1))


def share_in(collapsed: np.ndarray, cells: np.ndarray) -> list[float] | None:
    """Per seed, the share of the selected cells in which the seed collapsed (None: no cell)."""
    if not cells.any():
        return None
    return [float(x) for x in collapsed[:, cells].mean(1)]


def at_extreme_cell(collapsed: np.ndarray, cells: np.ndarray, lowest: bool) -> list[float] | None:
    """Per seed, 0/1 at the selected cell with the lowest (or highest) collapse probability over
    all seeds: the seed mean is the old min (max) over cells of P(collapse)."""
    if not cells.any():
        return None
    p = collapsed.mean(0).astype(float)
    masked = np.where(cells, p, np.inf if lowest else -np.inf)
    flat = int(np.argmin(masked) if lowest else np.argmax(masked))
    i, j = np.unravel_index(flat, p.shape)
    return [float(x) for x in collapsed[:, i, j]]


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (lists in seed order) for every gated quantity; see the manifest."""
    margin = params["margin"]
    c1, c16, csym = (
        np.asarray(metrics["arms"][a]["collapsed"], dtype=float) for a in ("b1", "b16", "signsym")
    )
    lam1 = np.asarray(theory["b1"]["lyap_max"])
    lam16 = np.asarray(theory["b16"]["lyap_max"])
    stable, unstable = lam1 <= -margin, lam1 >= margin
    noise = np.asarray(metrics["noise"])
    minus1 = np.asarray(theory["b1"]["lyap_minus"])
    artefact_cells = (noise[:, None] == 0) & (minus1 <= -margin)
    no_noise = np.broadcast_to(noise[:, None] == 0, lam1.shape)
    everywhere = np.ones_like(lam1, dtype=bool)
    n1, n16 = c1.sum((1, 2)), c16.sum((1, 2))  # collapsed cells per seed
    b1_map = np.asarray(metrics["arms"]["b1"]["collapse"])
    b16_map = np.asarray(metrics["arms"]["b16"]["collapse"])
    return {
        "collapse_where_stable_mean": share_in(c1, stable),
        "collapse_where_stable_min": at_extreme_cell(c1, stable, lowest=True),
        "collapse_where_unstable_max": at_extreme_cell(c1, unstable, lowest=False),
        "sign_agreement_b1": [float(x) for x in sign_agreement(c1, lam1)],
        "sign_agreement_b16": [float(x) for x in sign_agreement(c16, lam16)],
        # the old majority-vote agreement over cells, reported next to the per-seed one
        "sign_agreement_majority_b1": float(sign_agreement(b1_map, lam1)),
        "sign_agreement_majority_b16": float(sign_agreement(b16_map, lam16)),
        "n_stable_cells": int(stable.sum()),
        "n_unstable_cells": int(unstable.sum()),
        # ablations
        "collapse_without_noise_max": at_extreme_cell(c1, no_noise, lowest=False),
        "collapse_cells_ratio_b16_b1": [float(x) for x in n16 / np.maximum(n1, 1)],
        # preconditions and reported numbers
        "max_collapse_b1": at_extreme_cell(c1, everywhere, lowest=False),
        "max_moment_growth_b1_min": float(np.asarray(theory["b1"]["moment_growth"]).min()),
        "signsym_artefact_collapse": share_in(csym, artefact_cells),
        "iid_collapse_same_cells": share_in(c1, artefact_cells),
        "diverged_fraction_b1": float(np.asarray(metrics["arms"]["b1"]["diverged"]).mean()),
        "theory_agreement": 1.0,
    }
