"""Tests of the ib_generalization_bound claim: the binning estimator against scipy and a
brute-force count, the known law's exact entropy against Monte Carlo, the bounds against their
inequalities and a brute force over every head, the encoder's gradients against finite
differences, the ablation's nearest-neighbour head against a k-d tree, the ablation's ceiling
against a brute force over every order of the widths, and the measurements on hand-made inputs."""

import itertools

import numpy as np
import pytest
from scipy.stats import entropy, spearmanr

from replica.claims import ib_generalization_bound as claim

PARAMS = {
    "data_seed": 5,
    "classes": 3,
    "input_dim": 4,
    "class_separation": 1.0,
    "n_encoder": 60,
    "n_train": 50,
    "n_test": 200,
    "widths": [4, 8],
    "bins": [2, 4],
    "encoder_steps": 20,
    "learning_rate": 0.01,
    "delta": 0.05,
    "bias_law_bins": 6,
    "bias_law_mean": 0.5,
    "bias_law_scale": 0.5,
}


def test_entropy_bits_matches_scipy():
    p = np.random.default_rng(0).dirichlet(np.ones(7))
    assert claim.entropy_bits(np.append(p, 0.0)) == pytest.approx(entropy(p, base=2))


def test_plugin_conditional_entropy_brute_force():
    rng = np.random.default_rng(1)
    cell, y = rng.integers(0, 5, 80), rng.integers(0, 3, 80)
    expected = 0.0
    for label in range(3):
        sel = cell[y == label]
        counts = np.array([np.sum(sel == k) for k in range(5)])
        expected += len(sel) / len(y) * entropy(counts[counts > 0], base=2)
    assert claim.conditional_entropy_plugin(cell, y, 5, 3) == pytest.approx(expected)


def test_cells_on_hand_inputs():
    z = np.array([[-1.0, -1.0], [-0.01, 0.99], [0.5, -0.5], [1.0, 1.0]])
    assert claim.cells(z, 2).tolist() == [0, 1, 2, 3]
    assert claim.cells(z, 4).tolist() == [0, 7, 13, 15]


def test_known_law_probabilities_against_monte_carlo():
    params, bins = PARAMS, 5
    probs = claim.known_law_cell_probabilities(params, bins)
    assert probs.sum(1) == pytest.approx(np.ones(params["classes"]))
    z, y = claim.sample_known_law(np.random.default_rng(2), params, 400_000)
    cell = claim.cells(z, bins)
    for label in range(params["classes"]):
        freq = np.bincount(cell[y == label], minlength=bins * bins) / np.sum(y == label)
        assert np.abs(freq - probs[label]).max() < 0.005
    plugin = claim.conditional_entropy_plugin(cell, y, bins * bins, params["classes"])
    assert plugin == pytest.approx(claim.known_law_entropy(params, bins), abs=0.01)


def test_cell_bound_inverts_bretagnolle_huber_carol():
    n_cells, classes, n, delta = 9, 3, 200, 0.01
    b = claim.cell_bound(n_cells, classes, n, delta)
    l1 = 2 * b  # gap <= TV = ||p_hat - p||_1 / 2
    assert 2 ** (n_cells * classes) * np.exp(-n * l1**2 / 2) == pytest.approx(delta)


def test_ib_bound_formula():
    info, n, delta = np.array([0.0, 3.0]), 100, 0.1
    expected = np.sqrt((info * np.log(2) + np.log(1 / delta)) / (2 * n))
    assert claim.ib_bound(info, n, delta) == pytest.approx(expected)


def test_every_head_gap_at_most_total_variation():
    """Brute force over all C^K heads on a small (cell, label) law: the largest 0-1 gap of any
    head is at most TV(p, p_hat), the step the cell-count bound rests on."""
    rng = np.random.default_rng(3)
    k, c, n = 3, 2, 20
    p = rng.dirichlet(np.ones(k * c)).reshape(k, c)
    draws = rng.choice(k * c, size=n, p=p.ravel())
    p_hat = np.bincount(draws, minlength=k * c).reshape(k, c) / n
    tv = 0.5 * np.abs(p - p_hat).sum()
    gaps = []
    for head in itertools.product(range(c), repeat=k):
        wrong = np.ones((k, c))
        wrong[np.arange(k), head] = 0.0
        gaps.append(((p - p_hat) * wrong).sum())
    assert max(gaps) <= tv + 1e-12


def test_gradients_against_finite_differences():
    rng = np.random.default_rng(4)
    p = {k: v[None] for k, v in claim.init_encoder(rng, 3, 5, 3).items()}
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}  # nonzero biases
    x = rng.standard_normal((1, 7, 3))
    y = np.eye(3)[rng.integers(0, 3, 7)][None]
    _, grads = claim.loss_and_gradients(p, x, y)
    eps = 1e-6
    for key in p:
        flat = p[key].ravel()
        for j in range(0, flat.size, max(1, flat.size // 4)):
            up = {k: v.copy() for k, v in p.items()}
            down = {k: v.copy() for k, v in p.items()}
            up[key].ravel()[j] += eps
            down[key].ravel()[j] -= eps
            numeric = (
                claim.loss_and_gradients(up, x, y)[0] - claim.loss_and_gradients(down, x, y)[0]
            ) / (2 * eps)
            assert grads[key].ravel()[j] == pytest.approx(numeric[0], rel=1e-4, abs=1e-8)


def test_bottleneck_seed_by_seed_is_the_batched_encoder_bit_for_bit():
    rng = np.random.default_rng(4)
    seeds, dim, width = 3, 5, 7
    p = claim.init_encoder(rng, dim, width, 3)
    p = {
        k: np.stack([v + 0.1 * rng.standard_normal(v.shape) for _ in range(seeds)])
        for k, v in p.items()
    }
    x = rng.standard_normal((seeds, 500, dim))
    assert np.array_equal(claim.encode_bottleneck(p, x), claim.encode(p, x)[1])


def test_plugin_head_majority_and_empty_cells():
    cell = np.array([0, 0, 0, 2, 2])
    y = np.array([1, 1, 0, 2, 0])
    # cell 0: majority 1; cell 1 empty: overall majority (0 and 1 tie: 0); cell 2 tie: 0
    assert claim.plugin_head(cell, y, 3, 3).tolist() == [1, 0, 0]


def test_spearman_per_seed_matches_scipy_and_ties():
    rng = np.random.default_rng(6)
    gaps, info = rng.standard_normal((9, 2)), rng.standard_normal((9, 2))
    got = claim.spearman_per_seed(info, gaps)
    assert got[1] == pytest.approx(spearmanr(info[:, 1], gaps[:, 1]).statistic)
    assert claim.spearman_per_seed(np.arange(9.0), np.zeros((9, 1))) == [0.0]


def test_nearest_neighbour_labels_against_kd_tree():
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(7)
    z_ref, z_query = rng.uniform(-1, 1, (150, 2)), rng.uniform(-1, 1, (5000, 2))
    y_ref = rng.integers(0, 4, 150)
    _, index = cKDTree(z_ref).query(z_query, k=1)
    assert np.array_equal(claim.nearest_neighbour_labels(z_query, z_ref, y_ref), y_ref[index])


def test_nearest_neighbour_ties_and_unbinned_errors_by_hand():
    z_train = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # a duplicate with another label
    y_train = np.array([2, 0, 1])
    z_test = np.array([[0.1, 0.0], [0.9, 0.9], [0.6, 0.6]])
    y_test = np.array([2, 0, 1])
    # ties go to the lowest reference index: both copies of (0, 0) predict label 2
    assert claim.nearest_neighbour_labels(z_train, z_train, y_train).tolist() == [2, 2, 1]
    train_error, test_error = claim.unbinned_errors(z_train, z_test, y_train, y_test)
    assert train_error == pytest.approx(1 / 3)
    assert test_error == pytest.approx(1 / 3)  # (0.9, 0.9) -> 1, wrong; the others right


def test_rho_ceiling_brute_force_over_width_orders():
    """The ceiling equals the largest Spearman correlation over every order of the widths of a
    gap constant within a width, and bounds every such gap's correlation in absolute value."""
    rng = np.random.default_rng(8)
    widths, bins = [4, 8, 16, 32], 3
    groups = np.repeat(widths, bins)
    values = (
        rng.standard_normal((len(groups), 3)) + 0.7 * np.repeat(rng.standard_normal(4), 3)[:, None]
    )
    ceiling = claim.rho_ceiling(values, groups)
    for s in range(values.shape[1]):
        best = -1.0
        for order in itertools.permutations(range(len(widths))):
            gap = np.repeat(np.asarray(order, dtype=float), bins)
            rho = spearmanr(gap, values[:, s]).statistic
            best = max(best, rho)
            assert abs(rho) <= ceiling[s] + 1e-12
        assert ceiling[s] == pytest.approx(best)


def test_chain_runs_on_a_small_problem():
    seeds = [0, 1]
    data = claim.generate(PARAMS, seeds)
    th = claim.theory(data, PARAMS)
    run = claim.train(data, {"arm": "bottleneck"}, PARAMS, seeds, "cpu")
    metrics = claim.measure(data, {"arm=bottleneck": run}, {}, PARAMS)
    stats = claim.verdict(metrics, th, PARAMS)
    assert len(stats["spearman_gap_ib"]) == 2
    assert len(stats["spearman_unbinned_gap_ib"]) == len(stats["unbinned_rho_ceiling"]) == 2
    unbinned = np.asarray(metrics["unbinned_gap"]).reshape(2, 2, 2)  # (widths, bins, seeds)
    assert np.array_equal(unbinned[:, 0], unbinned[:, 1])  # the ablation's head ignores the bins
    assert np.all(
        np.abs(stats["spearman_unbinned_gap_ib"])
        <= np.asarray(stats["unbinned_rho_ceiling"]) + 1e-12
    )
    gap = np.asarray(metrics["gap"])
    assert gap.shape == (4, 2)
    assert np.all(
        np.asarray(metrics["info_bits"]) <= 2 * np.log2(np.asarray([2, 4] * 2))[:, None] + 1e-12
    )
