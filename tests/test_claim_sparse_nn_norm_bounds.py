"""Tests of the sparse_nn_norm_bounds claim: the tree CNN against a per-position loop and its
unrolled Toeplitz matrices, its gradients against finite differences, the sparse Rademacher
bound against a brute-force Rademacher complexity (depth 1, where the supremum is a search over
one angle), the margin-bound minimisation against a fine grid, and the verdict on hand-made
inputs."""

import numpy as np
import pytest

from replica import steps
from replica.claims import sparse_nn_norm_bounds as claim

PARAMS = {
    "data_seed": 5,
    "depth": 3,
    "channels": 3,
    "sample_sizes": [40, 80],
    "n_test": 50,
    "steps": 20,
    "batch_size": 16,
    "learning_rate": 0.003,
    "weight_decay": 0.05,
    "delta": 0.001,
}


def batched(weights):
    return [w[None].astype(float) for w in weights]


def loop_forward(weights, x):
    """The tree CNN one neuron at a time: position p of layer l reads positions 2p, 2p + 1."""
    h = [np.array([v]) for v in x]  # leaves: one channel each
    for w in weights[:-1]:
        h = [
            np.maximum(np.concatenate([h[2 * p], h[2 * p + 1]]) @ w, 0) for p in range(len(h) // 2)
        ]
    return float(h[0] @ weights[-1][:, 0])


def toeplitz_matrices(weights, depth):
    """Each conv layer unrolled into its dense matrix on the flat (position, channel) vector."""
    mats, channels_in = [], 1
    for layer, w in enumerate(weights[:-1]):
        positions = 2 ** (depth - layer - 1)
        t = np.zeros((positions * w.shape[1], 2 * positions * channels_in))
        for p in range(positions):
            t[
                p * w.shape[1] : (p + 1) * w.shape[1],
                2 * p * channels_in : (2 * p + 2) * channels_in,
            ] = w.T
        mats.append(t)
        channels_in = w.shape[1]
    return mats


# ----------------------------------------------------------------------------- data
def test_tree_target_composes_the_node_function():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4))

    def g(a, b):
        return (a + b + a * b) / np.sqrt(3)

    expected = g(g(z[:, 0], z[:, 1]), g(z[:, 2], z[:, 3]))
    assert np.allclose(claim.tree_target(z), expected)


def test_labels_are_balanced_and_inputs_unit_norm():
    x, y = claim.sample_inputs(np.random.default_rng(1), 40_000, 64)
    assert np.allclose(np.linalg.norm(x, axis=1), 1)
    assert abs(np.mean(y > 0) - 0.5) < 0.01  # the median threshold balances the skewed h


def test_generate_shapes_and_nested_samples():
    data = claim.generate(PARAMS, [0, 1])
    assert data["x_train"].shape == (2, 80, 8)
    assert data["x_test"].shape == (50, 8)
    assert data["y_test_random"].shape == (2, 50)
    assert set(np.unique(data["y_train_random"])) == {-1.0, 1.0}


# ----------------------------------------------------------------------------- network
def test_forward_matches_a_per_position_loop_and_the_toeplitz_product():
    rng = np.random.default_rng(2)
    depth = 3
    weights = [w.astype(float) for w in claim.init_weights(rng, depth, 3)]
    x = rng.standard_normal((6, 2**depth))
    out = claim.forward(batched(weights), x[None])[0][0]
    assert np.allclose(out, [loop_forward(weights, xi) for xi in x])
    # the same network as dense Toeplitz layers: T_L relu(... relu(T_1 x))
    mats = toeplitz_matrices(weights, depth)
    for xi, fi in zip(x, out, strict=True):
        h = xi
        for t in mats:
            h = np.maximum(t @ h, 0)
        assert h @ weights[-1][:, 0] == pytest.approx(fi)
    # ||T_l||_F = sqrt(P_l) ||w_l||_F, so rho_T / rho = prod_l sqrt(P_l)
    ratio = np.prod(
        [np.linalg.norm(t) / np.linalg.norm(w) for t, w in zip(mats, weights, strict=False)]
    )
    assert ratio == pytest.approx(claim.toeplitz_factor(depth))


def test_output_is_at_most_rho_times_the_input_norm():
    """|f(x)| <= rho ||x||: the normalised margin of unit-norm inputs is at most 1."""
    rng = np.random.default_rng(3)
    weights = [w.astype(float) for w in claim.init_weights(rng, 4, 5)]
    run = {f"w{layer}": w for layer, w in enumerate(weights)}
    x = rng.standard_normal((200, 16))
    out = claim.forward(batched(weights), x[None])[0][0]
    assert np.all(np.abs(out) <= claim.norm_product(run, 4) * np.linalg.norm(x, axis=1) + 1e-9)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    weights = batched(claim.init_weights(rng, 3, 2))
    x, y = rng.standard_normal((1, 7, 8)), np.sign(rng.standard_normal((1, 7)))

    def loss(ws):
        return np.mean(np.log1p(np.exp(-y * claim.forward(ws, x)[0])))

    grads = claim.logistic_gradients(weights, x, y)
    h = 1e-6
    for layer in range(len(weights)):
        for idx in [(0, 0, 0), (0, -1, -1)]:
            up = [w.copy() for w in weights]
            down = [w.copy() for w in weights]
            up[layer][idx] += h
            down[layer][idx] -= h
            numeric = (loss(up) - loss(down)) / (2 * h)
            assert grads[layer][idx] == pytest.approx(numeric, abs=1e-7)


# ----------------------------------------------------------------------------- theory
def brute_force_rademacher_depth1(x, draws, rng, angles=4096):
    """E_sigma sup over ||u|| ||W||_F <= 1 of (1/m) sum_i sigma_i u . relu(W x_i) for x in R^2:
    the supremum is attained by a rank-one W (one direction w), so it is
    max over unit w of |sum_i sigma_i relu(w . x_i)|, a search over one angle."""
    theta = np.linspace(0, 2 * np.pi, angles, endpoint=False)
    w = np.stack([np.cos(theta), np.sin(theta)])  # (2, angles)
    act = np.maximum(x @ w, 0)  # (m, angles)
    sigma = rng.choice([-1.0, 1.0], (draws, len(x)))
    return np.abs(sigma @ act).max(1).mean() / len(x)


def test_sparse_bound_dominates_the_brute_force_rademacher_complexity():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 2))
    exact = brute_force_rademacher_depth1(x, 4000, rng)
    bound = claim.sparse_data_factor(x, depth=1) / len(x)  # rho = 1
    assert bound >= exact
    assert bound < 10 * exact  # valid and not absurdly loose at depth 1


def test_dense_and_sparse_factors_by_hand():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 8))
    s = np.sqrt((x**2).sum(0).max())
    sparse = 2**1.5 * s * (1 + np.sqrt(2 * (3 * np.log(2) + np.log(8))))
    dense = np.linalg.norm(x) * (1 + np.sqrt(2 * 3 * np.log(2)))
    assert claim.sparse_data_factor(x, 3) == pytest.approx(sparse)
    assert claim.dense_data_factor(x, 3) == pytest.approx(dense)
    assert claim.toeplitz_factor(3) == pytest.approx(np.sqrt(4 * 2 * 1))
    mlp = dense / (np.sqrt(8) * s * (1 + np.sqrt(2 * (3 * np.log(2) + np.log(8)))))
    assert claim.mlp_data_ratio(x, 3) == pytest.approx(mlp)
    assert mlp < 1  # no gain without sparsity: sqrt(sum ||x||^2) <= sqrt(D) s


def test_gap_bound_by_hand():
    c, factor, m, delta = 3.0, 5.0, 100, 0.01
    expected = 2 * 4 * 5 / 100 + 3 * np.sqrt(np.log(2 * 25 / 0.01) / 200)
    assert claim.gap_bound(c, factor, m, delta) == pytest.approx(expected)


def test_best_margin_bound_matches_a_fine_grid_of_margins():
    rng = np.random.default_rng(7)
    margins = rng.normal(0.3, 0.4, 500)
    rho, factor, delta = 4.0, 30.0, 0.001
    bound, gamma, err = claim.best_margin_bound(margins, rho, factor, delta)
    grid = np.linspace(1e-4, margins.max(), 200_001)
    sorted_m = np.sort(margins)
    errors = np.searchsorted(sorted_m, grid, side="left") / len(margins)  # margins < gamma
    grid_bounds = errors + claim.gap_bound(rho / grid, factor, len(margins), delta)
    assert bound <= grid_bounds.min() + 1e-12  # the candidates include every breakpoint
    assert bound == pytest.approx(grid_bounds.min(), abs=1e-3)
    assert err == pytest.approx(np.mean(margins < gamma))
    assert bound == pytest.approx(err + claim.gap_bound(rho / gamma, factor, len(margins), delta))
    # no positive margin: the trivial bound
    assert claim.best_margin_bound(-np.abs(margins), rho, factor, delta)[2] == 1.0


# ----------------------------------------------------------------------------- measure / verdict
def test_verdict_on_hand_made_metrics():
    def arm(sparse, dense_gap, sparse_gap, test_error):
        return {
            "sparse_bound": sparse,
            "dense_gap_bound": dense_gap,
            "sparse_gap_bound": sparse_gap,
            "dense_bound": dense_gap,
            "test_error": test_error,
        }

    tree = arm(
        [[3.0, 4.0], [1.0, 2.0]],
        [[0, 0], [50.0, 80.0]],
        [[1, 1], [0.5, 1.0]],
        [[0.2, 0.3], [0.1, 0.2]],
    )
    random = arm(
        [[5.0, 6.0], [3.0, 3.5]], [[0, 0], [0, 0]], [[1, 1], [1, 1]], [[0.5, 0.5], [0.48, 0.52]]
    )
    theory = {
        "architecture_ratio": [[1.0, 1.0], [100.0, 110.0]],
        "mlp_architecture_ratio": [0.7, 0.8],
    }
    st = claim.verdict({"arms": {"tree": tree, "random": random}}, theory, PARAMS)
    assert st["bound_ratio_dense_over_sparse"] == [100.0, 80.0]
    assert st["architecture_ratio"] == [100.0, 110.0]
    assert st["sparse_bound_largest_n"] == [1.0, 2.0]
    assert st["bound_rise_random_labels"] == [2.0, 1.5]
    assert st["sparse_bound_slack"] == pytest.approx([0.9, 1.8])
    assert st["sparse_bound_over_test_error"] == pytest.approx([10.0, 10.0])
    assert st["test_error_random_largest_n"] == [0.48, 0.52]


def test_train_and_measure_shapes_on_small_settings():
    data = claim.generate(PARAMS, [0, 1])
    run = claim.train(data, {"labels": "tree"}, PARAMS, [0, 1], "cpu")
    assert run["f_train"].shape == (2, 2, 80)
    assert run["f_test"].shape == (2, 2, 50)
    assert np.all(run["f_train"][0, :, 40:] == 0)  # outputs only on each network's own sample
    points = {"labels-tree": {"labels": "tree"}}
    metrics = claim.measure(data, {"labels-tree": run}, points, PARAMS)
    tree = metrics["arms"]["tree"]
    assert tree["sparse_bound"].shape == (2, 2)
    assert np.all(tree["normalised_margin"] <= 1 + 1e-6)


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("sparse_nn_norm_bounds", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
