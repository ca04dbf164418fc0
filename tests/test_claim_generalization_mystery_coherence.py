"""Tests of the generalization_mystery_coherence claim: the coherence metric against explicit
per-example gradients, its orthogonal limit and its random-label expectation by enumeration, the
lazy trajectory against parameter-space SGD of a linear model, the network's gradients against
finite differences and its tangent kernel against the infinite-width NTK, and M3 against
np.median."""

import itertools

import numpy as np
import pytest

from replica.blocks.kernel_ridge import relu_kernels
from replica.claims import generalization_mystery_coherence as claim

PARAMS = {
    "data_seed": 5,
    "dim": 6,
    "mean_norm": 3.0,
    "n_train": 24,
    "n_test": 10,
    "width": 8,
    "batch": 6,
    "lr": 1.0,
    "steps": 12,
    "checkpoints": 5,
    "early_fraction": 0.5,
}


@pytest.fixture(scope="module")
def data():
    return claim.generate(PARAMS, [0, 1])


def explicit_coherence(grads: np.ndarray) -> float:
    """The paper's alpha_m = ||mean g||^2 / mean ||g||^2, divided by alpha_perp_m = 1/m."""
    m = len(grads)
    alpha = (grads.mean(0) ** 2).sum() / (grads**2).sum(1).mean()
    return alpha / claim.orthogonal_limit(m)


def per_example_gradients(weights, x, y) -> np.ndarray:
    """Flattened gradients of each example's loss, one backward pass per example: (P, params)."""
    rows = []
    for i in range(x.shape[-2]):
        cache, f = claim.forward(weights, x[..., i : i + 1, :])
        grads, _, _ = claim.backward(weights, cache, claim.loss_derivative(f, y[..., i : i + 1]))
        rows.append(np.concatenate([g.ravel() for g in grads]))
    return np.asarray(rows)


def first_net(data, labels="real"):
    weights = [data[k][:1] for k in ("w1", "w2", "v")]
    return weights, data["x_train"][:1], data[f"y_{labels}"][:1]


# ----------------------------------------------------------------------------- theory
def test_orthogonal_and_identical_limits():
    m = 7
    orthogonal = np.eye(m) * np.arange(1, m + 1)[:, None]  # orthogonal, unequal norms
    assert explicit_coherence(orthogonal) == pytest.approx(1.0)
    assert claim.orthogonal_limit(m) == pytest.approx(1 / m)
    identical = np.tile(np.array([[0.3, -1.0, 2.0]]), (m, 1))
    assert explicit_coherence(identical) == pytest.approx(m)  # alpha = 1
    # the kernel form on the same vectors
    for grads in (orthogonal, identical):
        value = claim.coherence_from_kernel(grads @ grads.T, np.ones(m))
        assert value == pytest.approx(explicit_coherence(grads))


def test_kernel_form_matches_explicit_gradients():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((9, 5))  # grad f(x_i) of a linear model
    residual = rng.standard_normal(9)  # dl/df_i
    explicit = explicit_coherence(residual[:, None] * features)
    assert claim.coherence_from_kernel(features @ features.T, residual) == pytest.approx(explicit)


def test_random_labels_average_exactly_to_the_orthogonal_limit():
    """Enumerating every labelling: E_y[sum_ij y_i y_j K_ij / sum_i K_ii] = 1 for any kernel."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)) + 2.0  # far from orthogonal: the kernel's constant part
    _, kernel = relu_kernels(x, x, hidden_layers=2)
    labelings = np.array(list(itertools.product([-1.0, 1.0], repeat=6)))
    values = claim.coherence_from_kernel(kernel, -labelings / 2)
    assert values.mean() == pytest.approx(1.0, abs=1e-12)
    assert values.max() > 2  # a single draw can be far from it


def test_lazy_trajectory_matches_parameter_space_sgd():
    """A linear model f = Phi theta trained by SGD on the logistic loss has the function-space
    trajectory of its kernel Phi Phi^T (an independent, parameter-space computation)."""
    rng = np.random.default_rng(2)
    n, p, steps, lr = 12, 30, 15, 0.7
    phi = rng.standard_normal((n, p)) / np.sqrt(p)
    y = rng.choice([-1.0, 1.0], n)
    order = np.stack([rng.permutation(n)[:4] for _ in range(steps)])
    record = {0, 3, 7, 15}
    coherent, correct = claim.lazy_trajectory(phi @ phi.T, y, order, lr, record)
    theta, expected_c, expected_a = np.zeros(p), [], []
    for step in range(steps + 1):
        f = phi @ theta
        if step in record:
            grads = claim.loss_derivative(f, y)[:, None] * phi
            expected_c.append(explicit_coherence(grads))
            expected_a.append((np.where(f >= 0, 1, -1) == y).mean())
        if step < steps:
            b = order[step]
            theta -= lr * (claim.loss_derivative(f[b], y[b])[:, None] * phi[b]).mean(0)
    assert np.allclose(coherent, expected_c, rtol=1e-10)
    assert np.allclose(correct, expected_a)


def test_theory_at_init_uses_the_ntk(data):
    th = claim.theory(data, PARAMS)
    assert th["orthogonal_limit"] == pytest.approx(1 / PARAMS["n_train"])
    x, y = data["x_train"][1], data["y_real"][1]
    ntk = claim.antisymmetric_ntk(x)
    expected = (y @ ntk @ y) / np.trace(ntk)
    assert th["arms"]["real"]["init_coherence"][1] == pytest.approx(expected)
    # step 0 of the lazy trajectory is the initial value
    assert th["arms"]["real"]["lazy_coherence"][1][0] == pytest.approx(expected)


# ----------------------------------------------------------------------------- network
def test_loss_derivative_is_the_logistic_loss_slope():
    f = np.linspace(-30, 30, 13)
    for y in (-1.0, 1.0):
        eps = 1e-6
        numeric = (np.logaddexp(0, -y * (f + eps)) - np.logaddexp(0, -y * (f - eps))) / (2 * eps)
        assert np.allclose(claim.loss_derivative(f, y), numeric, atol=1e-8)


def test_antisymmetric_init_is_zero(data):
    weights = [data[k] for k in ("w1", "w2", "v")]
    _, f = claim.forward(weights, data["x_test"])
    assert np.abs(f).max() < 1e-12


def test_backward_matches_finite_differences(data):
    weights, x, y = first_net(data)
    rng = np.random.default_rng(3)
    weights = [w + 0.3 * rng.standard_normal(w.shape) for w in weights]  # away from f = 0

    def loss(ws):
        return np.logaddexp(0, -y * claim.forward(ws, x)[1]).sum()

    cache, f = claim.forward(weights, x)
    grads, _, _ = claim.backward(weights, cache, claim.loss_derivative(f, y))
    eps = 1e-6
    for layer, index in ((0, (0, 2, 3)), (1, (0, 5, 1)), (2, (0, 4))):
        up = [w.copy() for w in weights]
        down = [w.copy() for w in weights]
        up[layer][index] += eps
        down[layer][index] -= eps
        numeric = (loss(up) - loss(down)) / (2 * eps)
        assert grads[layer][index] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_coherence_matches_per_example_gradients(data):
    weights, x, y = first_net(data, "random")
    rng = np.random.default_rng(4)
    weights = [w + 0.3 * rng.standard_normal(w.shape) for w in weights]
    explicit = explicit_coherence(per_example_gradients(weights, x, y))
    assert claim.coherence(weights, x, y)[0] == pytest.approx(explicit, rel=1e-10)


def test_layer_kernels_sum_to_the_relu_ntk():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4)) * rng.uniform(0.5, 2, (6, 1))  # unequal norms
    parts = claim.layer_kernels(x)
    _, ntk = relu_kernels(x, x, hidden_layers=2)
    # arccos near u = 1 turns rounding of the correlation into ~1e-8 differences
    assert np.allclose(parts["w1"] + parts["w2"] + parts["v"], ntk, rtol=1e-6, atol=1e-6)
    assert np.allclose(claim.antisymmetric_ntk(x), parts["w2"] + parts["v"])


def empirical_kernel(weights, x) -> np.ndarray:
    """grad f(x_i) . grad f(x_j) from explicit per-example gradients; at f = 0 every loss
    derivative is -1/2 (y = 1), so the loss gradients are -grad f / 2."""
    _, f = claim.forward(weights, x[None])
    assert np.abs(f).max() < 1e-12
    grads = per_example_gradients(weights, x[None], np.ones((1, len(x))))
    return 4 * grads @ grads.T


def test_wide_network_tangent_kernels():
    """Averaged over 16 initialisations at width 1024 (the empirical kernel is an unbiased
    estimate whose error falls as 1/sqrt(width)): a fully Gaussian network's tangent kernel is
    relu_kernels' NTK (the scaling is the block's), and the antisymmetric initialisation's is
    antisymmetric_ntk, its first layer's gradient being exactly zero."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3))
    width, draws = 1024, 16
    anti_mean, full_mean = 0.0, 0.0
    for _ in range(draws):
        w1, w2, v = claim.init_weights(rng, 3, width)
        anti = [w1[None], w2[None], v[None]]
        cache, f = claim.forward(anti, x[None])
        grads, _, _ = claim.backward(anti, cache, np.ones_like(f))
        assert np.abs(grads[0]).max() < 1e-10 * np.abs(grads[1]).max()
        anti_mean = anti_mean + empirical_kernel(anti, x) / draws
        # independent Gaussian second layer and read-out (f_0 != 0: use f's own gradient)
        full = [w1[None], rng.standard_normal((1, width, width)), rng.standard_normal((1, width))]
        rows = []
        for i in range(len(x)):
            cache, f = claim.forward(full, x[None, i : i + 1])
            g, _, _ = claim.backward(full, cache, np.ones_like(f))  # dl/df = 1: grad f
            rows.append(np.concatenate([a.ravel() for a in g]))
        rows = np.asarray(rows)
        full_mean = full_mean + rows @ rows.T / draws
    expected = claim.antisymmetric_ntk(x)
    assert np.linalg.norm(anti_mean - expected) / np.linalg.norm(expected) < 0.06
    _, ntk = relu_kernels(x, x, hidden_layers=2)
    assert np.linalg.norm(full_mean - ntk) / np.linalg.norm(ntk) < 0.06
    # the two differ by the first layer's share, which the antisymmetric net lacks
    assert np.linalg.norm(ntk - expected) / np.linalg.norm(ntk) > 0.2


def test_median_of_three_and_m3_update(data):
    rng = np.random.default_rng(6)
    a, b, c = rng.standard_normal((3, 50))
    assert np.array_equal(claim.median_of_three(a, b, c), np.median([a, b, c], axis=0))
    weights, x, y = first_net(data)
    weights = [np.concatenate([w, w]) for w in weights]  # two nets: SGD, M3
    xb, yb = np.concatenate([x, x])[:, :6], np.concatenate([y, y])[:, :6]
    sgd, m3 = (
        [g[i] for g in claim.batch_update(weights, xb, yb, np.array([False, True]))] for i in (0, 1)
    )
    one = [w[:1] for w in weights]
    # SGD: the batch-mean gradient in one backward pass
    cache, f = claim.forward(one, xb[:1])
    full, _, _ = claim.backward(one, cache, claim.loss_derivative(f, yb[:1]) / 6)
    # M3: np.median of the three groups' mean gradients, each computed on its own
    groups = []
    for k in range(3):
        part = slice(2 * k, 2 * k + 2)
        cache, f = claim.forward(one, xb[:1, part])
        g, _, _ = claim.backward(one, cache, claim.loss_derivative(f, yb[:1, part]) / 2)
        groups.append(g)
    for layer in range(3):
        assert np.allclose(sgd[layer], full[layer][0], atol=1e-14)
        median = np.median([grp[layer][0] for grp in groups], axis=0)
        assert np.allclose(m3[layer], median, atol=1e-14)


# ----------------------------------------------------------------------------- data and verdict
def test_data_shapes_and_batches(data):
    assert data["x_train"].shape == (2, PARAMS["n_train"], PARAMS["dim"])
    assert data["order"].shape == (2, PARAMS["steps"], PARAMS["batch"])
    # each epoch visits every example once
    per_epoch = PARAMS["n_train"] // PARAMS["batch"]
    epoch = data["order"][0, :per_epoch].ravel()
    assert sorted(epoch) == list(range(PARAMS["n_train"]))

    # real labels are the mixture's side: the class means differ by about 2 mu (norm 6); the
    # random labels' class means differ only by chance
    def mean_gap(x, y):
        return np.linalg.norm(x[y > 0].mean(0) - x[y < 0].mean(0))

    for x, y_real, y_random in zip(data["x_train"], data["y_real"], data["y_random"], strict=True):
        assert 4 < mean_gap(x, y_real) < 8
        assert mean_gap(x, y_random) < mean_gap(x, y_real) / 1.5


def test_early_window_excludes_init():
    steps = [0, 1, 2, 5, 10, 50, 100]
    assert claim.early_window(steps, 100, 0.1).tolist() == [False, True, True, True, True] + [
        False,
        False,
    ]


def test_chain_runs_and_verdict_has_one_value_per_seed(data):
    seeds = [0, 1]
    runs = {
        f"labels-{lab}": claim.train(data, {"labels": lab}, PARAMS, seeds, "cpu")
        for lab in ("real", "random")
    }
    points = {f"labels-{lab}": {"labels": lab} for lab in ("real", "random")}
    metrics = claim.measure(data, runs, points, PARAMS)
    th = claim.theory(data, PARAMS)
    out = claim.verdict(metrics, th, PARAMS)
    for key, value in out.items():
        if isinstance(value, list):
            assert len(value) == len(seeds), key
            assert np.all(np.isfinite(value)), key
    # step 0 of training is the initialisation: the measured coherence is the network's own
    weights, x, y = first_net(data)
    assert out["init_coherence_real"][0] == pytest.approx(claim.coherence(weights, x, y)[0])
