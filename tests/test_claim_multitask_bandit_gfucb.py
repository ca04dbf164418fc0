"""Tests of the multitask_bandit_gfucb claim: the effective dimension against the rank of the
Jacobian of (B, Theta) -> B Theta^T, the greedy-regret Monte Carlo against quadrature and a
brute-force loop, the learners' linear algebra against direct solves, and the verdict on
hand-made metrics."""

import numpy as np
import pytest
from scipy import integrate, stats

from replica import steps
from replica.claims import multitask_bandit_gfucb as claim

PARAMS = {
    "data_seed": 5,
    "dim": 6,
    "rank": 2,
    "arms": 4,
    "noise": 0.1,
    "ridge": 1.0,
    "bonus_scale": 1.0,
    "n_tasks": 4,
    "pool_sizes": [1, 2, 4],
    "horizon": 30,
    "checkpoints": 8,
    "theory_grid": 8,
    "theory_samples": 300,
}


# ----------------------------------------------------------------------------- theory
def jacobian_rank(dim: int, rank: int, tasks: int, seed: int = 0) -> int:
    """Numerical rank of d(B Theta^T)/d(B, Theta) at a random point: the dimension of the
    manifold of d x M matrices of rank min(k, M) that the pooled fit searches."""
    rng = np.random.default_rng(seed)
    basis, theta = rng.standard_normal((dim, rank)), rng.standard_normal((tasks, rank))
    columns = []
    for i in range(dim):
        for j in range(rank):
            e = np.zeros((dim, rank))
            e[i, j] = 1
            columns.append((e @ theta.T).ravel())
    for i in range(tasks):
        for j in range(rank):
            e = np.zeros((tasks, rank))
            e[i, j] = 1
            columns.append((basis @ e.T).ravel())
    return int(np.linalg.matrix_rank(np.array(columns).T))


@pytest.mark.parametrize(("dim", "rank", "tasks"), [(6, 2, 1), (6, 2, 3), (8, 3, 5), (20, 3, 16)])
def test_effective_dimension_is_the_parameter_count_per_task(dim, rank, tasks):
    assert claim.effective_dimension(dim, rank, tasks) * tasks == pytest.approx(
        jacobian_rank(dim, rank, tasks)
    )


def test_effective_dimension_limits_and_the_ratio():
    assert claim.effective_dimension(20, 3, 1) == 20  # one task: all of w
    assert claim.regret_ratio_theory(20, 3, 1) == 1
    assert claim.regret_ratio_theory(20, 3, 10**9) == pytest.approx(20 / 3, rel=1e-6)
    assert claim.regret_ratio_theory(20, 3, 16) == pytest.approx(20 / (3 * 33 / 16))


@pytest.mark.parametrize("tasks", [1, 2, 4, 16])
def test_error_scales_add_up_to_the_effective_dimension(tasks):
    scales = claim.error_scales(20, 3, tasks)
    assert len(scales) == 20
    assert np.sum(scales**2) == pytest.approx(claim.effective_dimension(20, 3, tasks))
    if tasks == 1:
        assert np.allclose(scales, 1)  # isotropic, as for an independent learner


def test_greedy_regret_without_error_is_zero_and_with_huge_error_is_random_play():
    dim, arms = 5, 4
    scales = np.ones(dim)
    low, high = claim.greedy_regret([0.0, 1e8], scales, arms, 40_000, seed=1)
    assert low == 0
    # random play: E max of K N(0, 1/d) minus E of one of them (0), by quadrature
    density = lambda z: arms * z * stats.norm.pdf(z) * stats.norm.cdf(z) ** (arms - 1)  # noqa: E731
    expected_max = integrate.quad(density, -10, 10)[0] / np.sqrt(dim)
    assert high == pytest.approx(expected_max, rel=0.03)


def test_greedy_regret_matches_a_brute_force_loop():
    dim, arms, samples, seed, v = 4, 3, 200, 7, 0.3
    scales = claim.error_scales(dim, 1, 2)
    fast = claim.greedy_regret([v], scales, arms, samples, seed)[0]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, arms, dim)) / np.sqrt(dim)
    xi = rng.standard_normal((samples, dim)) * scales
    total = 0.0
    for s in range(samples):
        w = np.eye(dim)[0]
        estimate = w + np.sqrt(v) * xi[s]
        chosen = max(range(arms), key=lambda a: x[s, a] @ estimate)
        total += max(x[s, a] @ w for a in range(arms)) - x[s, chosen] @ w
    assert fast == pytest.approx(total / samples, abs=1e-12)


def test_predicted_regret_is_the_running_sum_of_one_round_regrets():
    params = {**PARAMS, "horizon": 5, "theory_grid": 500}  # the grid holds every round
    curve = claim.predicted_regret(params, 2, 5)
    t = np.arange(1, 6)
    per_round = claim.greedy_regret(
        params["noise"] ** 2 / (t / params["dim"] + params["ridge"]),
        claim.error_scales(params["dim"], params["rank"], 2),
        params["arms"],
        params["theory_samples"],
        params["data_seed"],
    )
    assert np.allclose(curve, np.cumsum(per_round))
    # pooling can only shrink the error: the pooled prediction is below the single-task one
    assert claim.predicted_regret(PARAMS, 4, 30)[-1] < claim.predicted_regret(PARAMS, 1, 30)[-1]


def test_bound_per_task_formula():
    assert claim.bound_per_task(20, 3, 16, 100) == pytest.approx(
        np.sqrt(300) + np.sqrt(100 * 60 / 16)
    )


def test_theory_on_generated_data():
    data = claim.generate(PARAMS, [0, 1])
    th = claim.theory(data, PARAMS)
    assert th["ratio_theory"][0] == pytest.approx(1.0)  # M = 1 is the independent model
    # M <= k tasks gain nothing (a rank-M fit of M tasks is every w); beyond k the gain grows
    assert th["ratio_asymptotic"][:2] == pytest.approx([1.0, 1.0])
    assert th["ratio_asymptotic"][2] == pytest.approx(6 / (2 * 8 / 4))
    assert max(th["shared_rank_gap"]) < 1e-12  # the shared tasks have rank k
    assert min(th["unshared_rank_gap"]) > 1e-3
    assert np.allclose(np.linalg.norm(data["w_shared"], axis=-1), 1)
    assert np.allclose(np.swapaxes(data["basis"], -1, -2) @ data["basis"], np.eye(2))


# ----------------------------------------------------------------------------- learners
def test_sherman_morrison_matches_a_direct_inverse():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 5, 5))
    v = a @ np.swapaxes(a, -1, -2) + np.eye(5)
    x = rng.standard_normal((3, 5))
    direct = np.linalg.inv(v + x[:, :, None] * x[:, None, :])
    assert np.allclose(claim.sherman_morrison(np.linalg.inv(v), x), direct)


def test_pooled_subspace_recovers_the_shared_basis_without_noise():
    rng = np.random.default_rng(3)
    basis = claim.orthonormal_basis(rng, 6, 2)
    w = claim.unit_rows(rng, (1, 4, 2)) @ basis.T  # (S=1, N=4, d)
    found = claim.pooled_subspace(w, 4, 2)  # (1, 4, 6, 2)
    assert found.shape == (1, 4, 6, 2)
    assert claim.subspace_distance(found, basis[None, None]).max() < 1e-10
    single = claim.pooled_subspace(w, 1, 2)  # one task: its own direction
    assert np.allclose(np.abs((single[..., 0] * w).sum(-1)), np.linalg.norm(w, axis=-1))


def test_subspace_distance_of_a_known_angle():
    angle = 0.3
    basis = np.array([[1.0], [0.0]])
    tilted = np.array([[np.cos(angle)], [np.sin(angle)]])
    assert claim.subspace_distance(tilted, basis) == pytest.approx(np.sin(angle))


def test_gfucb_with_one_task_and_an_isotropic_gram_is_linucb():
    """At M = 1 with Gram c I the split ellipsoid is LinUCB's and the refit mean its estimate."""
    rng = np.random.default_rng(4)
    dim, c = 5, 3.0
    lin = claim.LinUCB((1, 1), dim, 1.0)
    gf = claim.GFUCB((1, 1), dim, 1.0, 2, 1)
    b = rng.standard_normal((1, 1, dim))
    for learner in (lin, gf):
        learner.v_inv = np.eye(dim)[None, None] / (c + 1.0)
        learner.b = b.copy()
    gf.gram = c * np.eye(dim)[None, None]
    x = rng.standard_normal((1, 1, 4, dim))
    assert np.allclose(gf.scores(x, 0.7), lin.scores(x, 0.7))


def test_linucb_estimate_is_the_ridge_solution():
    rng = np.random.default_rng(5)
    lin = claim.LinUCB((1, 1), 3, 0.5)
    xs, ys = rng.standard_normal((10, 3)), rng.standard_normal(10)
    for x, y in zip(xs, ys, strict=True):
        lin.update(x[None, None], np.array([[y]]))
    ridge = np.linalg.solve(xs.T @ xs + 0.5 * np.eye(3), xs.T @ ys)
    assert np.allclose(lin.estimates()[0, 0], ridge)


def test_train_is_deterministic_and_regret_nonnegative():
    data = claim.generate(PARAMS, [0, 1])
    run = claim.train(data, {"environment": "shared"}, PARAMS, [0, 1], "cpu")
    again = claim.train(data, {"environment": "shared"}, PARAMS, [0, 1], "cpu")
    for key in run:
        assert np.array_equal(run[key], again[key]), key
    for name in claim.learner_names(PARAMS):
        regret = run[f"regret_{name}"]
        assert regret.shape == (2, 4, len(run["checkpoints"]))
        assert np.all(np.diff(regret, axis=-1) >= -1e-12)  # pseudo-regret only accumulates
    assert run["subspace_distance"].shape == (2, 4)


# ----------------------------------------------------------------------------- measure / verdict
def test_growth_exponent_of_a_power_law():
    t = np.array([1.0, 10, 50, 100])
    assert claim.growth_exponent(t, 3 * t**0.4) == pytest.approx(0.4)


def test_verdict_on_hand_made_metrics():
    def env(final):
        curves = {name: np.array([[1.0, v] for v in values]) for name, values in final.items()}
        return {"checkpoints": [1, 4], "regret": curves}

    shared = env(
        {
            "linucb": [6.0, 8.0],
            "gfucb_m1": [6.0, 8.0],
            "gfucb_m2": [4.0, 5.0],
            "gfucb_m4": [3.0, 4.0],
        }
    )
    shared["subspace_distance"] = [0.1, 0.2]
    unshared = env(
        {
            "linucb": [6.0, 6.0],
            "gfucb_m1": [6.0, 6.0],
            "gfucb_m2": [12.0, 12.0],
            "gfucb_m4": [60.0, 60.0],
        }
    )
    metrics = {"pool_sizes": [1, 2, 4], "environments": {"shared": shared, "unshared": unshared}}
    theory = {"ratio_theory": [1.0, 1.5, 2.5], "shared_rank_gap": [0.0, 0.0]}
    st = claim.verdict(metrics, theory, PARAMS)
    assert st["regret_ratio_max_pool"] == [2.0, 2.0]
    assert st["regret_ratio_no_pooling"] == [1.0, 1.0]
    assert st["regret_ratio_unshared"] == [0.1, 0.1]
    assert st["gain_monotone_in_tasks"] == [1.0, 1.0]
    assert st["regret_ratio_theory_max_pool"] == 2.5
    assert st["regret_exponent"] == pytest.approx([np.log(3) / np.log(4), np.log(4) / np.log(4)])
    assert st["subspace_distance"] == [0.1, 0.2]


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("multitask_bandit_gfucb", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
