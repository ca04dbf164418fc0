"""Tests of the hparam_tuning_sample_complexity claim: the degree bound on the discontinuities
against the polynomial structure of the ridge readout, the pseudo-dimension and Rademacher bounds
against brute force, the learner against a direct ridge solve, the fast oscillating weight against
the direct cosine, and the measurements on hand-made inputs."""

import itertools

import numpy as np
import pytest

from replica.claims import hparam_tuning_sample_complexity as claim

PARAMS = {
    "data_seed": 7,
    "n_train": 12,
    "n_val": 20,
    "features": 4,
    "ridge": 0.1,
    "weight_scale": 1.5,
    "noise_range": [0.1, 0.3],
    "omega": 2000.0,
    "grid_points": 33,
    "refine": 4,
    "task_counts": [2, 4],
    "tasks_per_seed": 8,
    "reference_tasks": 10,
}


def one_task(seed=0, **overrides):
    params = {**PARAMS, **overrides}
    return claim.draw_tasks(np.random.default_rng(seed), 1, params), params


def direct_decisions(task, alpha, params, arm="interpolation"):
    """The ridge readout at one alpha by a direct solve, on one task's validation points."""
    z_train = task["x_train"][0] @ task["weights"][0].T + task["bias"][0]
    z_val = task["x_val"][0] @ task["weights"][0].T + task["bias"][0]

    def sigma(z):
        oscillating = (1 + np.cos(params["omega"] * alpha * z)) / 2
        c = alpha if arm == "interpolation" else oscillating
        return c * np.maximum(z, 0) + (1 - c) * np.tanh(z)

    phi, phi_val = sigma(z_train), sigma(z_val)
    n = params["n_train"]
    w = np.linalg.solve(
        phi.T @ phi + n * params["ridge"] * np.eye(phi.shape[1]), phi.T @ task["y_train"][0]
    )
    return phi_val @ w, phi


# ----------------------------------------------------------------------------- learner
@pytest.mark.parametrize("arm", claim.ARMS)
def test_utilities_match_a_direct_ridge_solve(arm):
    task, params = one_task(3)
    alphas = np.linspace(0, 1, 21)
    u = claim.utilities(task, alphas, arm, params)[0]
    for k, alpha in enumerate(alphas):
        decisions, _ = direct_decisions(task, alpha, params, arm)
        assert u[k] == pytest.approx(np.mean(np.sign(decisions) == task["y_val"][0]))


def test_oscillating_weight_equals_the_direct_cosine():
    rng = np.random.default_rng(1)
    z = 2 * rng.standard_normal((3, 7, 5))
    alphas = np.linspace(0, 1, 41)  # more than one run of ALPHA_CHUNK, a partial last run
    fast = np.concatenate([c for _, c in claim.relu_weights(z, alphas, "oscillating", 2000.0)], 1)
    direct = (1 + np.cos(2000.0 * alphas[None, :, None, None] * z[:, None])) / 2
    assert np.allclose(fast, direct, atol=1e-10, rtol=0)


# ----------------------------------------------------------------------------- theory
@pytest.mark.parametrize("n_train,features", [(12, 4), (3, 5)])
def test_decision_value_is_a_ratio_of_polynomials_of_bounded_degree(n_train, features):
    """f_alpha(x) det(Phi^T Phi + n ridge I) is a polynomial in alpha of degree <= 2 min(n, m):
    interpolated exactly at 2 min(n, m) + 1 nodes, it predicts every other alpha."""
    task, params = one_task(5, n_train=n_train, features=features)
    degree = 2 * min(n_train, features)

    def scaled(alpha):
        decisions, phi = direct_decisions(task, alpha, params)
        det = np.linalg.det(phi.T @ phi + n_train * params["ridge"] * np.eye(features))
        return decisions * det

    nodes = 0.5 + 0.5 * np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    values = np.array([scaled(a) for a in nodes])  # (nodes, n_val)
    cheb = np.polynomial.chebyshev
    coef = cheb.chebfit(2 * nodes - 1, values, degree)  # exact interpolation, (degree + 1, n_val)
    for alpha in (0.03, 0.41, 0.77, 0.99):
        got = cheb.chebval(2 * alpha - 1, coef)
        assert np.allclose(got, scaled(alpha), rtol=1e-6, atol=1e-8 * np.abs(values).max())


def test_jumps_stay_within_the_degree_bound_on_a_very_fine_grid():
    tasks, params = claim.draw_tasks(np.random.default_rng(2), 5, PARAMS), PARAMS
    u = claim.utilities(tasks, np.linspace(0, 1, 4001), "interpolation", params)
    bound = claim.discontinuity_bound(params["n_train"], params["n_val"], params["features"])
    assert bound == 2 * 20 * 4
    assert claim.jump_counts(u).max() <= bound


def test_pseudo_dimension_bound_by_brute_force():
    for jumps in (1, 3, 10, 160, 2048, 10**6):
        largest = max(d for d in range(1, 200) if 2**d <= 2 * d * jumps + 1)
        assert claim.pseudo_dimension_bound(jumps) == largest


def test_deviation_bound_dominates_the_rademacher_average_of_a_finite_class():
    """Massart: E sup_a |sum sigma_i a_i| / T <= sqrt(2 ln(2M) / T) for M vectors in [0, 1]^T;
    the bound is twice that with M = 2 T N + 1."""
    rng = np.random.default_rng(4)
    tasks, jumps = 6, 1
    vectors = rng.random((2 * tasks * jumps + 1, tasks))
    signs = np.array(list(itertools.product([-1, 1], repeat=tasks)))  # every sign pattern
    rademacher = np.abs(signs @ vectors.T).max(1).mean() / tasks
    assert 2 * rademacher <= claim.expected_deviation_bound(tasks, jumps)
    assert claim.expected_deviation_bound(tasks, jumps) == pytest.approx(
        2 * np.sqrt(2 * np.log(2 * 13) / 6)
    )


# ----------------------------------------------------------------------------- measure
def test_jump_counts_and_block_deviations_on_hand_made_inputs():
    u = np.array([[0.5, 0.5, 0.6, 0.6, 0.5], [0.1, 0.2, 0.2, 0.2, 0.2]])
    assert claim.jump_counts(u).tolist() == [2, 1]
    rng = np.random.default_rng(0)
    pool = rng.random((2, 7, 9))  # seeds, tasks, grid
    expected = rng.random(9)
    fine, coarse = claim.block_deviations(pool, expected, 3, 4)
    for s in range(2):
        blocks = [pool[s, 3 * b : 3 * b + 3].mean(0) for b in range(2)]  # the 7th task is left over
        assert fine[s] == pytest.approx(np.mean([np.abs(b - expected).max() for b in blocks]))
        assert coarse[s] == pytest.approx(
            np.mean([np.abs(b - expected)[::4].max() for b in blocks])
        )


def test_log_log_slopes_match_polyfit():
    counts = [5, 10, 20, 40]
    rng = np.random.default_rng(1)
    deviation = np.exp(rng.standard_normal((4, 3)))
    for s in range(3):
        slope = np.polyfit(np.log(counts), np.log(deviation[:, s]), 1)[0]
        assert claim.log_log_slopes(counts, deviation)[s] == pytest.approx(slope)


def test_chain_shapes_and_statistics_per_seed():
    seeds = [0, 1]
    data = claim.generate(PARAMS, seeds)
    theory = claim.theory(data, PARAMS)
    points = {f"arm-{arm}": {"arm": arm} for arm in claim.ARMS}
    runs = {pid: claim.train(data, p, PARAMS, seeds, "cpu") for pid, p in points.items()}
    assert runs["arm-interpolation"]["utility"].shape == (2, 8, 33)
    metrics = claim.measure(data, runs, points, PARAMS)
    stats = claim.verdict(metrics, theory, PARAMS)
    for name in ("deviation_slope", "jump_refinement_ratio_oscillating", "reference_noise_ratio"):
        assert len(stats[name]) == 2 and np.all(np.isfinite(stats[name]))
    assert stats["deviation_slope_theory"] == -0.5
