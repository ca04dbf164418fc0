"""Sample complexity of tuning a network hyperparameter over a distribution of tasks (Balcan,
Nguyen & Sharma, NeurIPS 2025, arXiv 2501.13734).

Claim. A hyperparameter alpha is tuned to do well on average over tasks x drawn from a
distribution. The per-task utility u_x(alpha) is defined implicitly by training the network; when
its dependence on alpha is structured (the paper's example: an activation interpolating two
activations), u_x has boundedly many discontinuities and oscillations, so the family
{x -> u_x(alpha)} has bounded pseudo-dimension and the average utility over T tasks converges to
the expected one uniformly in alpha at the sample-complexity rate T^{-1/2}.

Setting. A task is a random 2-D two-moons problem (random rotation and noise level), 32 training
and 64 validation points, with its own random first layer z = W x + b. The learner's features are
sigma_alpha(z) = alpha relu(z) + (1 - alpha) tanh(z); the readout is ridge regression on the +-1
labels, (Phi^T Phi + n ridge I) w = Phi^T y (the exact minimiser of the training loss, standing in
for the paper's inner optimisation); u_x(alpha) is the validation accuracy of sign(Phi_val w), on a
fine alpha grid and on the grid `refine` times coarser (every refine-th point).

Theory (ours, for this learner). Phi_alpha is linear in alpha, so each validation decision value
is a ratio of polynomials in alpha with a positive denominator det(Phi^T Phi + n ridge I) and a
numerator of degree <= 2 min(n_train, features): u_x has at most N = 2 n_val min(n_train, features)
discontinuities. T tasks then induce at most 2 T N + 1 distinct utility vectors, hence
    Pdim <= max{d : 2^d <= 2 d N + 1},
    E sup_alpha |U_T(alpha) - U(alpha)| <= 2 sqrt(2 ln(2 (2 T N + 1)) / T)
(symmetrisation and Massart's finite-class lemma), whose rate is T^{-1/2}; for a class of bounded
complexity sqrt(T) sup |U_T - U| converges in law, so the log-log slope of the mean deviation is
-1/2. U(alpha) = E_x u_x(alpha) is Monte Carlo over a reference pool of fresh tasks.

Experiment. Per seed, a pool of tuning tasks split into disjoint blocks of T tasks for every T of
the scale; per block the uniform deviation sup_alpha |U_T - U| on both grids; per task the number
of grid steps where u_x changes (jumps).

Controls. The same tasks, features, readout and grids with the structure removed: the
interpolation weight oscillates with the pre-activation, c = (1 + cos(omega alpha z)) / 2, so the
oscillations of u_x grow with omega |z| without bound (after the classical sin(alpha z) class of
unbounded pseudo-dimension): refining the grid keeps finding new jumps, and the sup-deviation
grows with the grid instead of settling.
"""

from __future__ import annotations

import numpy as np

INPUT_DIM = 2
ARMS = ("interpolation", "oscillating")  # the paper's structured family, and its ablation
REFERENCE_STREAM = 10**6  # RNG stream of the reference pool, apart from every seed's stream
TASK_CHUNK_BYTES = 2**20  # feature tensors of one chunk of tasks and alphas stay in cache
ALPHA_CHUNK = 16


# ----------------------------------------------------------------------------- data
def moons_task(rng: np.random.Generator, params: dict) -> dict[str, np.ndarray]:
    """One task: a rotated, noisy two-moons problem (train + validation) and its first layer."""
    n, n_val, m = params["n_train"], params["n_val"], params["features"]
    total = n + n_val
    labels = np.where(rng.random(total) < 0.5, 1.0, -1.0)
    t = rng.uniform(0, np.pi, total)
    upper = np.stack([np.cos(t), np.sin(t)], axis=-1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=-1)
    points = np.where(labels[:, None] > 0, upper, lower) - np.array([0.5, 0.25])
    noise = rng.uniform(*params["noise_range"])
    points = points + noise * rng.standard_normal(points.shape)
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T
    weights = params["weight_scale"] * rng.standard_normal((m, INPUT_DIM))
    bias = rng.standard_normal(m)
    return {
        "x_train": points[:n],
        "y_train": labels[:n],
        "x_val": points[n:],
        "y_val": labels[n:],
        "weights": weights,
        "bias": bias,
    }


def draw_tasks(rng: np.random.Generator, count: int, params: dict) -> dict[str, np.ndarray]:
    tasks = [moons_task(rng, params) for _ in range(count)]
    return {key: np.stack([task[key] for task in tasks]) for key in tasks[0]}


def alpha_grid(params: dict) -> np.ndarray:
    return np.linspace(0.0, 1.0, int(params["grid_points"]))


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed a pool of tuning tasks (S, P, ...); one reference pool of fresh tasks (R, ...),
    with its utilities on the fine grid for every arm (the Monte Carlo estimate of U)."""
    per_seed = [
        draw_tasks(
            np.random.default_rng([params["data_seed"], seed]), params["tasks_per_seed"], params
        )
        for seed in seeds
    ]
    data = {f"tune_{k}": np.stack([pool[k] for pool in per_seed]) for k in per_seed[0]}
    rng = np.random.default_rng([params["data_seed"], REFERENCE_STREAM])
    reference = draw_tasks(rng, params["reference_tasks"], params)
    data.update({f"reference_{k}": v for k, v in reference.items()})
    alphas = alpha_grid(params)
    for arm in ARMS:
        data[f"reference_utility_{arm}"] = utilities(reference, alphas, arm, params)
    return data


# ----------------------------------------------------------------------------- learner
def relu_weights(z: np.ndarray, alphas: np.ndarray, arm: str, omega: float):
    """The weight c of relu in sigma_alpha(z) = c relu(z) + (1 - c) tanh(z), in runs of
    ALPHA_CHUNK alphas: yields (slice of alphas, c of shape (B, run, P, m) or broadcastable).

    interpolation: c = alpha (the paper's structured family). oscillating: c = (1 + cos(omega
    alpha z)) / 2 (the ablation: it oscillates with the pre-activation z). cos is most of the
    ablation's cost, so on the uniform grid alpha = a_0 + k h it is built by angle addition from
    one table of cos / sin(k omega h z), k < ALPHA_CHUNK, and one cos / sin(omega a_0 z) per run
    (equal to the direct cos to rounding, about 1e-12 at omega = 2000)."""
    runs = [slice(lo, lo + ALPHA_CHUNK) for lo in range(0, len(alphas), ALPHA_CHUNK)]
    if arm == "interpolation":
        for run in runs:
            yield run, alphas[run][None, :, None, None]
        return
    if arm != "oscillating":
        raise ValueError(f"unknown arm {arm!r}")
    step = alphas[1] - alphas[0] if len(alphas) > 1 else 0.0
    if not np.allclose(np.diff(alphas), step, rtol=0, atol=1e-12):
        raise ValueError("the oscillating weight needs a uniform alpha grid")
    offsets = (omega * step) * np.arange(ALPHA_CHUNK)[None, :, None, None] * z[:, None]
    # halved tables: (1 + cos_a) / 2 = 1/2 + cos/2 exactly (halving is exact), one pass less
    half_cos_k, half_sin_k = np.cos(offsets) / 2, np.sin(offsets) / 2
    for run in runs:
        start = (omega * alphas[run.start]) * z[:, None]
        size = len(alphas[run])
        c = np.cos(start) * half_cos_k[:, :size]
        c -= np.sin(start) * half_sin_k[:, :size]
        c += 0.5
        yield run, c


def utilities(tasks: dict, alphas: np.ndarray, arm: str, params: dict) -> np.ndarray:
    """u_x(alpha): validation accuracy of the ridge readout of every task at every alpha,
    (tasks, G); in chunks of tasks and alphas whose feature tensors stay in cache."""
    n, omega = params["n_train"], float(params["omega"])
    count, n_points = len(tasks["y_train"]), params["n_train"] + params["n_val"]
    per_task = ALPHA_CHUNK * n_points * params["features"] * 8 * 4  # a few float64 tensors
    per_chunk = max(1, TASK_CHUNK_BYTES // per_task)
    out = np.empty((count, len(alphas)))
    for lo in range(0, count, per_chunk):
        chunk = {key: value[lo : lo + per_chunk] for key, value in tasks.items()}
        w_t = np.swapaxes(chunk["weights"], -1, -2)
        z = np.concatenate([chunk["x_train"], chunk["x_val"]], axis=1) @ w_t
        z = z + chunk["bias"][:, None]  # pre-activations, (B, n + n_val, m)
        tanh = np.tanh(z)[:, None]
        relu_minus_tanh = np.maximum(z, 0)[:, None] - tanh
        y = chunk["y_train"][:, None, :, None]
        for run, c in relu_weights(z, alphas, arm, omega):
            phi = tanh + c * relu_minus_tanh  # sigma_alpha(z), (B, run, n + n_val, m)
            phi_train, phi_val = phi[..., :n, :], phi[..., n:, :]
            gram = np.swapaxes(phi_train, -1, -2) @ phi_train
            gram += n * params["ridge"] * np.eye(phi.shape[-1])
            readout = np.linalg.solve(gram, np.swapaxes(phi_train, -1, -2) @ y)
            decision = (phi_val @ readout)[..., 0]  # (B, run, n_val)
            correct = np.sign(decision) == chunk["y_val"][:, None, :]
            out[lo : lo + per_chunk, run] = correct.mean(-1)
    return out


# ----------------------------------------------------------------------------- theory
def discontinuity_bound(n_train: int, n_val: int, features: int) -> int:
    """Most jumps of u_x on [0, 1] for the interpolation family: each of the n_val decision values
    is a ratio of polynomials in alpha with a numerator of degree <= 2 min(n_train, features)."""
    return 2 * n_val * min(n_train, features)


def pseudo_dimension_bound(jumps: int) -> int:
    """Largest d that T = d tasks can shatter: 2^d labelings need 2^d <= 2 d N + 1 distinct
    utility vectors (d N breakpoints cut [0, 1] into <= 2 d N + 1 constant pieces)."""
    d = 1
    while 2 ** (d + 1) <= 2 * (d + 1) * jumps + 1:
        d += 1
    return d


def expected_deviation_bound(tasks: int, jumps: int) -> float:
    """E sup_alpha |U_T - U| <= 2 E Rademacher <= 2 sqrt(2 ln(2 M) / T), M = 2 T N + 1 distinct
    utility vectors with entries in [0, 1] (Massart's lemma; the 2 covers the absolute value)."""
    vectors = 2 * tasks * jumps + 1
    return 2 * np.sqrt(2 * np.log(2 * vectors) / tasks)


def expected_utility(data: dict, arm: str) -> tuple[np.ndarray, np.ndarray]:
    """U(alpha) on the fine grid from the reference pool, and its standard error."""
    u = np.asarray(data[f"reference_utility_{arm}"])
    return u.mean(0), u.std(0, ddof=1) / np.sqrt(len(u))


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    jumps = discontinuity_bound(params["n_train"], params["n_val"], params["features"])
    out = {
        "alphas": alpha_grid(params).tolist(),
        "task_counts": list(params["task_counts"]),
        "discontinuity_bound": jumps,
        "pseudo_dimension_bound": pseudo_dimension_bound(jumps),
        "deviation_bound": [expected_deviation_bound(t, jumps) for t in params["task_counts"]],
        "deviation_slope": -0.5,
        "expected_utility": {},
        "expected_utility_se": {},
    }
    for arm in ARMS:
        mean, se = expected_utility(data, arm)
        out["expected_utility"][arm], out["expected_utility_se"][arm] = mean, se
    return out


# ----------------------------------------------------------------------------- training
def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """Train the readout of every tuning task of every seed at every alpha: u (S, P, G)."""
    arm, alphas = point["arm"], alpha_grid(params)
    tasks = {
        key[len("tune_") :]: value.reshape(-1, *value.shape[2:])
        for key, value in data.items()
        if key.startswith("tune_")
    }
    u = utilities(tasks, alphas, arm, params)
    return {"utility": u.reshape(len(seeds), params["tasks_per_seed"], len(alphas))}


# ----------------------------------------------------------------------------- measure
def jump_counts(u: np.ndarray) -> np.ndarray:
    """Grid steps at which u_x(alpha) changes value, per task: (..., G) -> (...)."""
    return (np.diff(u, axis=-1) != 0).sum(-1)


def block_deviations(u: np.ndarray, expected: np.ndarray, tasks: int, refine: int):
    """Mean over disjoint blocks of `tasks` tasks of sup_alpha |U_T - U|, on the fine grid and on
    every refine-th point: u (S, P, G) -> two arrays (S,)."""
    n_blocks = u.shape[1] // tasks
    blocks = u[:, : n_blocks * tasks].reshape(u.shape[0], n_blocks, tasks, -1).mean(2)
    deviation = np.abs(blocks - expected)  # (S, blocks, G)
    return deviation.max(-1).mean(-1), deviation[..., ::refine].max(-1).mean(-1)


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    refine = int(params["refine"])
    out = {"task_counts": list(params["task_counts"]), "refine": refine, "arms": {}}
    for pid, point in points.items():
        arm, u = point["arm"], runs[pid]["utility"]
        expected, _ = expected_utility(data, arm)
        sup = np.asarray(
            [block_deviations(u, expected, t, refine) for t in params["task_counts"]]
        )  # (T, fine / coarse, S)
        out["arms"][arm] = {
            "jumps_fine": jump_counts(u),  # (S, P)
            "jumps_coarse": jump_counts(u[..., ::refine]),
            "sup_deviation_fine": sup[:, 0],  # (T, S)
            "sup_deviation_coarse": sup[:, 1],
            "mean_utility": u.mean(1),  # (S, G): each seed's pool average
            "example_utility": u[0, :3],  # three tasks of the first seed, for the figure
        }
    return out


# ----------------------------------------------------------------------------- verdict
def log_log_slopes(task_counts, deviation: np.ndarray) -> np.ndarray:
    """Least-squares slope of log deviation against log T, per seed: (T, S) -> (S,)."""
    x = np.log(np.asarray(task_counts, dtype=float))
    y = np.log(deviation)
    xc = x - x.mean()
    return (xc[:, None] * (y - y.mean(0))).sum(0) / (xc**2).sum()


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    counts = metrics["task_counts"]
    stats: dict = {"deviation_slope_theory": theory["deviation_slope"]}
    stats["pseudo_dimension_bound"] = theory["pseudo_dimension_bound"]
    for arm, suffix in (("interpolation", ""), ("oscillating", "_oscillating")):
        m = metrics["arms"][arm]
        fine, coarse = np.asarray(m["sup_deviation_fine"]), np.asarray(m["sup_deviation_coarse"])
        jumps_fine, jumps_coarse = np.asarray(m["jumps_fine"]), np.asarray(m["jumps_coarse"])
        stats[f"deviation_slope{suffix}"] = log_log_slopes(counts, fine).tolist()
        # a seed whose coarse grid sees no jump at all counts its fine jumps over 1
        ratio = jumps_fine.sum(1) / np.maximum(jumps_coarse.sum(1), 1)
        stats[f"jump_refinement_ratio{suffix}"] = ratio.tolist()
        stats[f"deviation_refinement_ratio{suffix}"] = (fine / coarse).mean(0).tolist()
        stats[f"median_jumps{suffix}"] = np.median(jumps_fine, axis=1).tolist()
    interp = metrics["arms"]["interpolation"]
    fine = np.asarray(interp["sup_deviation_fine"])
    stats["jump_bound_tightness"] = (
        np.asarray(interp["jumps_fine"]).max(1) / theory["discontinuity_bound"]
    ).tolist()
    bound = np.asarray(theory["deviation_bound"])[:, None]
    stats["deviation_bound_tightness"] = (fine / bound).max(0).tolist()
    se = np.asarray(theory["expected_utility_se"]["interpolation"]).max()
    stats["reference_noise_ratio"] = (se / fine[-1]).tolist()
    return stats
