"""Multitask representation learning in contextual bandits (Lu, Zhao, Du & Huang, "Provable
General Function Class Representation Learning in Multitask Bandits and MDPs", NeurIPS 2022,
arXiv 2205.15701).

Claim. An agent that plays M contextual bandits concurrently, whose rewards are linear in a
shared representation phi in a class Phi, and that fits phi jointly across the tasks with
optimism (GFUCB, Generalized Functional UCB), has a lower per-task regret than an agent that
learns each task on its own; the benefit grows with M.

Setting (the triage's linear case). d-dimensional contexts x_{t,a} ~ N(0, I / d) for K arms,
reward y = x . w_i + N(0, noise^2) in task i, with w_i = B theta_i, B a d x k orthonormal
matrix shared by every task (phi(x) = B^T x) and theta_i uniform on the unit sphere of R^k.
Each seed draws N tasks; pooling groups of M tasks (M in pool_sizes, M divides N) play the
very same tasks, contexts and reward noise, so that only the pooling changes between arms.
The ablation environment ('unshared') draws every w_i uniformly on the sphere of R^d: no
representation of dimension k is shared.

Learners (every one sees the same contexts and noise, common random numbers).
  Independent LinUCB per task: ridge estimate w_hat = V^{-1} b, V = lambda I + sum x x^T, and
  the score x . w_hat + beta_t ||x||_{V^{-1}}.
  GFUCB (our tractable reading): per group of M tasks, the joint least-squares fit of a rank-r
  matrix W = B theta^T (r = min(k, M)) by truncated SVD of the per-task ridge estimates (exact
  when every task's Gram matrix is the same multiple of I, approximately so with isotropic
  contexts), then theta_i refit on the features z = B_hat^T x. Optimism over the paper's joint
  confidence set is approximated per task by the ellipsoid
      bonus^2 = z^T (B_hat^T V B_hat)^{-1} z + min(1, r / M) x_perp^T V^{-1} x_perp,
  x_perp = (I - B_hat B_hat^T) x: the uncertainty inside the learned subspace is the task's own,
  the uncertainty of the subspace itself is shared by M tasks and shrinks as r / M. At M = 1 the
  fit is the task's ridge estimate and the ellipsoid is (nearly) LinUCB's: the single-task
  algorithm is the same learner with the pooling removed. Every learner uses the same radius
  beta_t = bonus_scale * noise * sqrt(log(1 + t)).

Theory (ours; the paper's bounds carry unspecified constants and only predict a trend). With
diverse contexts the regret of a least-squares learner is dominated by its estimation error,
whose size is the number of free parameters per task: d for an independent learner and
    p_eff(M) = r (d + M - r) / M,  r = min(k, M)
for a pooled rank-k fit (the dimension of rank-r d x M matrices, shared by M tasks). The
predicted regret ratio is R_indep / R_GFUCB = d / p_eff(M): 1 at M = 1, 3.23 at M = 16 for
d = 20, k = 3, and d / k in the limit. The paper's bound (our reading) scales per task as
sqrt(k T) + sqrt(T log N(Phi) / M) with log N(Phi) ~ d k for the linear class, against d sqrt(T)
for independent LinUCB: the same trend, growing in M. Regret is sublinear: the paper's bound
grows as sqrt(T).

Measure. Pseudo-regret max_a x_a . w - x_chosen . w summed over rounds, averaged over the N
tasks; per seed the ratio of LinUCB's to GFUCB's at each M; the growth exponent of GFUCB's
cumulative regret from T / 2 to T; the distance between the learned and the true subspace.

Controls. No pooling (M = 1, the same tasks): the gain must vanish. No shared structure
('unshared' environment, M = 16): the gain must vanish.
"""

from __future__ import annotations

import numpy as np

from replica import runtime

ENVIRONMENTS = ("shared", "unshared")


# ----------------------------------------------------------------------------- data
def unit_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal rows normalised to the unit sphere along the last axis."""
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def orthonormal_basis(rng: np.random.Generator, dim: int, rank: int) -> np.ndarray:
    """A uniformly random d x k matrix with orthonormal columns (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, rank)))
    return q * np.sign(np.diag(r))  # sign fix: the QR factor is then Haar distributed


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: the shared basis B (d, k), the shared environment's task vectors w_i = B
    theta_i and the unshared environment's w_i (both (N, d), unit norm). Contexts and reward
    noise are drawn round by round in training from each seed's own stream."""
    d, k, n_tasks = params["dim"], params["rank"], params["n_tasks"]
    out: dict[str, list] = {"basis": [], "w_shared": [], "w_unshared": []}
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed, 0])
        basis = orthonormal_basis(rng, d, k)
        theta = unit_rows(rng, (n_tasks, k))
        out["basis"].append(basis)
        out["w_shared"].append(theta @ basis.T)
        out["w_unshared"].append(unit_rows(rng, (n_tasks, d)))
    return {key: np.asarray(value) for key, value in out.items()}


def context_streams(params: dict, seeds: list[int]) -> list[np.random.Generator]:
    """One generator per seed for the contexts and reward noise (independent of the seed set)."""
    return [np.random.default_rng([params["data_seed"], seed, 1]) for seed in seeds]


def draw_round(streams, n_tasks: int, arms: int, dim: int, noise: float):
    """Contexts (S, N, K, d) ~ N(0, I / d) and reward noise (S, N, K) for one round."""
    x, eps = [], []
    for rng in streams:
        x.append(rng.standard_normal((n_tasks, arms, dim)) / np.sqrt(dim))
        eps.append(noise * rng.standard_normal((n_tasks, arms)))
    return np.asarray(x), np.asarray(eps)


# ----------------------------------------------------------------------------- theory
def effective_dimension(dim: int, rank: int, tasks: int) -> float:
    """Free parameters per task of a rank-min(k, M) fit of a d x M matrix: r (d + M - r) / M."""
    r = min(rank, tasks)
    return r * (dim + tasks - r) / tasks


def regret_ratio_theory(dim: int, rank: int, tasks: int) -> float:
    """Predicted R_indep / R_pooled = d / p_eff(M) (estimation-error-dominated regret)."""
    return dim / effective_dimension(dim, rank, tasks)


def bound_per_task(dim: int, rank: int, tasks: int, horizon: int) -> float:
    """Our reading of the paper's per-task bound without constants or logs:
    sqrt(k T) + sqrt(T d k / M) (log N(Phi) ~ d k for linear Phi)."""
    return np.sqrt(rank * horizon) + np.sqrt(horizon * dim * rank / tasks)


def error_scales(dim: int, rank: int, tasks: int) -> np.ndarray:
    """Per-coordinate standard deviation of a pooled estimate's error, in units of the
    single-task one: 1 inside the r-dim learned subspace, sqrt(r / M) across it (the subspace
    is estimated from M tasks); at M = 1 the error is isotropic, as for LinUCB."""
    r = min(rank, tasks)
    return np.concatenate([np.ones(r), np.full(dim - r, np.sqrt(r / tasks))])


def greedy_regret(variances, scales, arms: int, samples: int, seed: int) -> np.ndarray:
    """Monte Carlo on the data distribution: the expected one-round regret of playing
    argmax_a x_a . (w + delta), x_a ~ N(0, I / d), w = e_1 (unit norm, any direction by
    isotropy), delta ~ N(0, v diag(scales)^2), for each error variance v (common draws)."""
    rng = np.random.default_rng(seed)
    dim = len(scales)
    x = rng.standard_normal((samples, arms, dim)) / np.sqrt(dim)
    xi = rng.standard_normal((samples, dim)) * scales
    best = x[..., 0].max(-1)
    out = []
    for v in np.atleast_1d(variances):
        chosen = (x @ (np.eye(dim)[0] + np.sqrt(v) * xi)[..., None])[..., 0].argmax(-1)
        out.append(np.mean(best - x[np.arange(samples), chosen, 0]))
    return np.asarray(out)


def predicted_regret(params: dict, tasks: int, horizon: int) -> np.ndarray:
    """Cumulative regret of a greedy least-squares learner through round `horizon` (1..T):
    after t rounds its single-task error variance per coordinate is noise^2 / (t / d + ridge)
    (isotropic Gram matrix t / d I plus the ridge), shaped by error_scales for M tasks. The
    one-round regret is computed on a log grid of t and interpolated in log t."""
    d, k = params["dim"], params["rank"]
    grid = np.unique(np.geomspace(1, horizon, params["theory_grid"]).round())
    variances = params["noise"] ** 2 / (grid / d + params["ridge"])
    scales = error_scales(d, k, tasks)
    per_round = greedy_regret(
        variances, scales, params["arms"], params["theory_samples"], params["data_seed"]
    )
    rounds = np.arange(1, horizon + 1)
    return np.cumsum(np.interp(np.log(rounds), np.log(grid), per_round))


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    d, k, horizon = params["dim"], params["rank"], params["horizon"]
    pools = list(params["pool_sizes"])
    bound_indep = d * np.sqrt(horizon)  # OFUL / LinUCB: d sqrt(T) per task
    single = predicted_regret(params, 1, horizon)  # independent learner = the M = 1 model
    pooled = {m: predicted_regret(params, m, horizon) for m in pools}
    # data only: the shared task matrix has rank k, the unshared one rank min(N, d)
    sv_shared = np.linalg.svd(data["w_shared"], compute_uv=False)
    sv_unshared = np.linalg.svd(data["w_unshared"], compute_uv=False)
    return {
        "pool_sizes": pools,
        "effective_dimension": [effective_dimension(d, k, m) for m in pools],
        "ratio_asymptotic": [regret_ratio_theory(d, k, m) for m in pools],
        "ratio_theory": [float(single[-1] / pooled[m][-1]) for m in pools],
        "predicted_regret_single": single,
        "predicted_regret_pooled": [pooled[m] for m in pools],
        "bound_ratio": [bound_indep / bound_per_task(d, k, m, horizon) for m in pools],
        "shared_rank_gap": (sv_shared[:, k] / sv_shared[:, k - 1]).tolist(),
        "unshared_rank_gap": (sv_unshared[:, k] / sv_unshared[:, k - 1]).tolist(),
    }


# ----------------------------------------------------------------------------- learners
def sherman_morrison(v_inv: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(V + x x^T)^{-1} from V^{-1}, batched: v_inv (..., d, d), x (..., d)."""
    vx = (v_inv @ x[..., None])[..., 0]
    return v_inv - vx[..., :, None] * vx[..., None, :] / (1 + (x * vx).sum(-1))[..., None, None]


def quadratic_form(x: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """x^T M x for every arm: x (S, N, K, p), mat (S, N, p, p) -> (S, N, K)."""
    return ((x @ mat) * x).sum(-1)


def per_arm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x_a . w for every arm: x (S, N, K, p), w (S, N, p) -> (S, N, K)."""
    return (x @ w[..., None])[..., 0]


class LinUCB:
    """Independent ridge regression and an ellipsoidal bonus per task."""

    def __init__(self, shape: tuple[int, int], dim: int, ridge: float):
        self.v_inv = np.broadcast_to(np.eye(dim) / ridge, (*shape, dim, dim)).copy()
        self.b = np.zeros((*shape, dim))

    def estimates(self) -> np.ndarray:
        return (self.v_inv @ self.b[..., None])[..., 0]

    def scores(self, x: np.ndarray, beta: float) -> np.ndarray:
        mean = per_arm(x, self.estimates())
        return mean + beta * np.sqrt(quadratic_form(x, self.v_inv))

    def update(self, x_chosen: np.ndarray, y: np.ndarray) -> None:
        self.v_inv = sherman_morrison(self.v_inv, x_chosen)
        self.b += y[..., None] * x_chosen


def pooled_subspace(w_hat: np.ndarray, pool: int, rank: int) -> np.ndarray:
    """Per group of `pool` consecutive tasks, the top-r left singular vectors of the stacked
    ridge estimates (S, N, d) -> bases (S, N, d, r), repeated for every task of the group."""
    s, n, d = w_hat.shape
    if pool == 1:  # a single task: the rank-1 fit is its own estimate's direction
        norm = np.linalg.norm(w_hat, axis=-1, keepdims=True)
        first_axis = np.eye(d)[0]  # before any data the estimate is 0: any direction will do
        return np.where(norm > 0, w_hat / np.where(norm > 0, norm, 1), first_axis)[..., None]
    groups = w_hat.reshape(s, n // pool, pool, d).transpose(0, 1, 3, 2)  # (S, G, d, M)
    u, _, _ = np.linalg.svd(groups, full_matrices=False)
    basis = u[..., : min(rank, pool)]  # (S, G, d, r)
    return np.repeat(basis, pool, axis=1)


class GFUCB(LinUCB):
    """Pooled rank-r least squares per group of M tasks, a k-dim fit per task on the shared
    features, and the split ellipsoid bonus (see the module docstring)."""

    def __init__(self, shape, dim: int, ridge: float, rank: int, pool: int):
        super().__init__(shape, dim, ridge)
        self.ridge, self.rank, self.pool = ridge, rank, pool
        self.gram = np.zeros((*shape, dim, dim))  # sum x x^T (without the ridge)
        self.shared_share = min(1.0, min(rank, pool) / pool)

    def basis(self) -> np.ndarray:
        return pooled_subspace(self.estimates(), self.pool, self.rank)

    def scores(self, x: np.ndarray, beta: float) -> np.ndarray:
        basis = self.basis()  # (S, N, d, r)
        r = basis.shape[-1]
        gram_z = np.swapaxes(basis, -1, -2) @ self.gram @ basis + self.ridge * np.eye(r)
        gram_z_inv = np.linalg.inv(gram_z)
        theta = (gram_z_inv @ (np.swapaxes(basis, -1, -2) @ self.b[..., None]))[..., 0]
        z = x @ basis  # (S, N, K, r)
        x_perp = x - z @ np.swapaxes(basis, -1, -2)
        mean = per_arm(z, theta)
        width2 = quadratic_form(z, gram_z_inv) + self.shared_share * quadratic_form(
            x_perp, self.v_inv
        )
        return mean + beta * np.sqrt(width2)

    def update(self, x_chosen, y) -> None:
        super().update(x_chosen, y)
        self.gram += x_chosen[..., :, None] * x_chosen[..., None, :]


def subspace_distance(basis_hat: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """sin of the largest principal angle ||(I - B B^T) B_hat||_2, batched."""
    resid = basis_hat - basis @ (np.swapaxes(basis, -1, -2) @ basis_hat)
    return np.linalg.norm(resid, ord=2, axis=(-2, -1))


# ----------------------------------------------------------------------------- training
def learner_names(params: dict) -> list[str]:
    return ["linucb"] + [f"gfucb_m{m}" for m in params["pool_sizes"]]


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """All learners in lockstep on one environment, seeds and tasks batched (numpy, float64).
    Returns cumulative pseudo-regret per learner at the checkpoints, (S, N, C)."""
    env = point["environment"]
    w = data[f"w_{env}"]  # (S, N, d)
    d, k, arms, horizon = params["dim"], params["rank"], params["arms"], params["horizon"]
    shape = w.shape[:2]
    learners = {"linucb": LinUCB(shape, d, params["ridge"])}
    for m in params["pool_sizes"]:
        learners[f"gfucb_m{m}"] = GFUCB(shape, d, params["ridge"], k, m)
    streams = context_streams(params, seeds)
    checkpoints = runtime.log_spaced_steps(horizon, params["checkpoints"])
    record = set(checkpoints.tolist())
    regret = {name: np.zeros(shape) for name in learners}
    curves = {name: [] for name in learners}
    rows = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    tick = runtime.Progress(horizon, f"train {env}")
    for t in range(1, horizon + 1):
        x, eps = draw_round(streams, shape[1], arms, d, params["noise"])
        mean_reward = per_arm(x, w)
        best = mean_reward.max(-1)
        beta = params["bonus_scale"] * params["noise"] * np.sqrt(np.log(1 + t))
        for name, learner in learners.items():
            choice = learner.scores(x, beta).argmax(-1)  # (S, N)
            regret[name] += best - mean_reward[(*rows, choice)]
            learner.update(x[(*rows, choice)], mean_reward[(*rows, choice)] + eps[(*rows, choice)])
        if t in record:
            for name in learners:
                curves[name].append(regret[name].copy())
        tick(t - 1, linucb=float(regret["linucb"].mean()))
    out = {f"regret_{name}": np.stack(curves[name], axis=-1) for name in learners}
    out["checkpoints"] = np.asarray(checkpoints)
    if env == "shared":
        largest = max(params["pool_sizes"])
        basis_hat = learners[f"gfucb_m{largest}"].basis()  # (S, N, d, r)
        out["subspace_distance"] = subspace_distance(basis_hat, data["basis"][:, None])
    return out


# ----------------------------------------------------------------------------- measure
def growth_exponent(steps: np.ndarray, regret: np.ndarray) -> np.ndarray:
    """Log-log slope of cumulative regret between the checkpoint nearest T / 2 and T."""
    half = int(np.argmin(np.abs(steps - steps[-1] / 2)))
    return np.log(regret[..., -1] / regret[..., half]) / np.log(steps[-1] / steps[half])


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per environment and learner: per-task regret curves (seed x checkpoint, task mean)."""
    out: dict = {"pool_sizes": list(params["pool_sizes"]), "environments": {}}
    for pid, point in points.items():
        run = runs[pid]
        env_out: dict = {"checkpoints": run["checkpoints"].tolist(), "regret": {}}
        for name in learner_names(params):
            env_out["regret"][name] = run[f"regret_{name}"].mean(axis=1)  # (S, C)
        if "subspace_distance" in run:
            env_out["subspace_distance"] = run["subspace_distance"].max(axis=1)  # worst task
        out["environments"][point["environment"]] = env_out
    return out


# ----------------------------------------------------------------------------- verdict
def regret_ratios(env_metrics: dict, pools) -> np.ndarray:
    """Per seed and pool size, LinUCB's final per-task regret over GFUCB's: (M, S)."""
    indep = np.asarray(env_metrics["regret"]["linucb"])[:, -1]
    return np.stack(
        [indep / np.asarray(env_metrics["regret"][f"gfucb_m{m}"])[:, -1] for m in pools]
    )


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and theory constants."""
    pools = list(metrics["pool_sizes"])
    largest, smallest = pools.index(max(pools)), pools.index(min(pools))
    shared, unshared = metrics["environments"]["shared"], metrics["environments"]["unshared"]
    ratios = regret_ratios(shared, pools)
    ratios_unshared = regret_ratios(unshared, pools)
    order = np.argsort(pools)
    monotone = np.all(np.diff(ratios[order], axis=0) > 0, axis=0)
    steps = np.asarray(shared["checkpoints"], dtype=float)
    exponent = growth_exponent(steps, np.asarray(shared["regret"][f"gfucb_m{max(pools)}"]))
    stats = {
        "regret_ratio_max_pool": ratios[largest].tolist(),
        "regret_ratio_no_pooling": ratios[smallest].tolist(),
        "regret_ratio_unshared": ratios_unshared[largest].tolist(),
        "gain_monotone_in_tasks": monotone.astype(float).tolist(),
        "regret_ratio_theory_max_pool": float(theory["ratio_theory"][largest]),
        "regret_exponent": exponent.tolist(),
        "regret_exponent_over_bound": (exponent / 0.5).tolist(),
        "subspace_distance": list(shared["subspace_distance"]),
        "shared_rank_gap": list(theory["shared_rank_gap"]),
    }
    for i, m in enumerate(pools):
        stats[f"regret_ratio_m{m}"] = ratios[i].tolist()
        stats[f"regret_ratio_unshared_m{m}"] = ratios_unshared[i].tolist()
    return stats
