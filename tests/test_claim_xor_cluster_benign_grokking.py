"""Tests of the XOR-cluster benign-overfitting claim: the Bayes accuracy and the chance-level
symmetry against Monte Carlo, the Gram-space GD against explicit weight-space GD (autograd),
the measurement helpers on hand-made inputs, and the smoke chain."""

import numpy as np
import pytest
import torch

from replica.blocks.signal_noise import logistic_loss
from replica.claims import xor_cluster_benign_grokking as xg
from replica.steps import run_chain


def test_bayes_accuracy_special_cases_and_monte_carlo():
    assert xg.bayes_xor_accuracy(0.0) == pytest.approx(0.5, abs=1e-10)  # no signal: a coin
    assert xg.bayes_xor_accuracy(25.0) == pytest.approx(1.0, abs=1e-12)
    assert xg.bayes_linear_accuracy(0.0) == 0.5
    rng = np.random.default_rng(0)
    for r in (0.5, 1.3, 2.5):
        z = rng.standard_normal((400_000, 2))
        mc = np.mean(np.abs(r + z[:, 0]) > np.abs(z[:, 1]))
        assert xg.bayes_xor_accuracy(r) == pytest.approx(mc, abs=0.003)


def test_bayes_rule_on_generated_xor_data_matches_quadrature():
    """The Bayes rule applied to the generator's own samples (independent of the formula)."""
    rng = np.random.default_rng(1)
    r = 1.5
    k, s, y = xg.cluster_draw(rng, 200_000, "xor")
    x = xg.inputs(rng, k, s, 3, r)
    pred = np.where(np.abs(x[:, 0]) > np.abs(x[:, 1]), 1, -1)
    assert np.mean(pred == y) == pytest.approx(xg.bayes_xor_accuracy(r), abs=0.004)


def test_any_linear_rule_is_at_chance_on_xor_but_not_on_linear_clusters():
    rng = np.random.default_rng(2)
    k, s, y = xg.cluster_draw(rng, 200_000, "xor")
    x = xg.inputs(rng, k, s, 5, 3.0)
    for _ in range(3):
        v = rng.standard_normal(5)
        assert np.mean(np.sign(x @ v) == y) == pytest.approx(0.5, abs=0.005)
    k, s, y = xg.cluster_draw(rng, 20_000, "linear")
    x = xg.inputs(rng, k, s, 5, 3.0)
    assert np.mean(np.sign(x[:, 0]) == y) == pytest.approx(xg.bayes_linear_accuracy(3.0), abs=0.01)


def test_gram_space_gd_equals_weight_space_gd():
    """Coefficient GD on Gram statistics == autograd GD on explicit weights (same init)."""
    rng = np.random.default_rng(3)
    n, d, m, lr, steps = 12, 30, 8, 0.7, 5
    x = rng.standard_normal((n, d))
    y = torch.as_tensor(rng.choice([-1.0, 1.0], size=n))
    w0 = 0.3 * rng.standard_normal((m, d))
    a = xg.output_weights(m, torch.float64, "cpu")
    # weight space
    w = torch.tensor(w0, requires_grad=True)
    xt = torch.as_tensor(x)
    for _ in range(steps):
        f = torch.relu(xt @ w.T) @ a
        (grad,) = torch.autograd.grad(logistic_loss(y * f).mean(), w)
        with torch.no_grad():
            w -= lr * grad
    # Gram space (seed axis of size 1)
    gram = torch.as_tensor(x @ x.T)[None]
    proj0 = torch.as_tensor(w0 @ x.T)[None]
    coef = torch.zeros_like(proj0)
    for _ in range(steps):
        z = xg.preact(coef, proj0, gram)
        xg.gd_step(coef, z, xg.net_output(z, a), y[None], a, lr)
    w_gram = torch.as_tensor(w0) + coef[0] @ xt
    assert torch.allclose(w_gram, w.detach(), atol=1e-12)
    # the alignment from Gram statistics equals the explicit cosine
    mu = np.zeros((2, d))
    mu[0, 0] = mu[1, 1] = 2.0
    arrays = {
        "mu_w0": torch.as_tensor(w0 @ mu.T)[None],
        "mu_x": torch.as_tensor(x @ mu.T)[None],
        "w0_sq": torch.as_tensor((w0**2).sum(1))[None],
        "proj0": proj0,
        "gram": gram,
    }
    wd = w.detach().numpy()
    cos = np.abs(wd @ mu.T).max(1) / (np.linalg.norm(wd, axis=1) * 2.0)
    assert xg.alignment(coef, arrays, 2.0).item() == pytest.approx(cos.mean(), rel=1e-10)


def test_measurement_helpers_on_hand_made_inputs():
    t = np.array([0, 1, 2, 5, 10])
    v = np.array([[0.1, 0.5, 0.95, 0.99, 1.0], [0.2, 0.3, 0.4, 0.5, 0.6]])
    np.testing.assert_array_equal(xg.at_step(v, t, 1), [0.5, 0.3])
    np.testing.assert_array_equal(xg.first_crossing(v, t, 0.9), [2.0, 11.0])
    correct = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False, False]])
    assert xg.fraction_where(correct, mask).item() == 0.5
    assert xg.fraction_where(correct, ~mask).item() == 1.0
    assert list(xg.checkpoints(200)[:12]) == list(range(11)) + [11]


def test_generate_is_deterministic_and_shapes_are_right():
    params = {
        "data_seed": 1,
        "n": 6,
        "n_test": 300,
        "dim": 20,
        "dim_lowdim": 8,
        "mu_exp": 0.35,
        "flip_rate": 0.5,
        "width": 4,
        "init_std": 1e-3,
    }
    a, b = xg.generate(params, [0, 1]), xg.generate(params, [0, 1])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["xor__gram_test"].shape == (2, 300, 6)
    assert a["lowdim__proj0_test"].shape == (2, 4, 300)
    np.testing.assert_array_equal(a["xor__label"] != a["xor__clean_label"], a["xor__flipped"])


def test_smoke_chain(tmp_path):
    result = run_chain("xor_cluster_benign_grokking", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
    assert {r["name"] for r in result["controls"]} >= {"low_dim_does_not_memorise_at_step1"}


def test_verdict_returns_per_seed_lists():
    def arm(test1, final):
        step1 = {"train_acc": [1.0, 0.99], "flipped_fit": [1.0, 1.0], "test_acc": test1}
        final = {"train_acc": [1.0, 1.0], "flipped_fit": [1.0, 1.0], "test_acc": final}
        return {"step1": step1, "final": final, "grok_step": [5.0, 201.0]}

    metrics = {
        "arms": {
            "xor": arm([0.45, 0.56], [0.99, 0.85]),
            "linear": arm([1.0, 0.9], [1.0, 1.0]),
            "lowdim": arm([0.5, 0.5], [0.9, 0.9]),
        }
    }
    theory = {"step1_test_acc": 0.5, "xor_bayes_clean_acc": 0.999}
    stats = xg.verdict(metrics, theory, {})
    assert stats["step1_test_acc"] == pytest.approx([0.45, 0.56])
    assert stats["step1_test_gap"] == pytest.approx([0.05, 0.06])
    assert stats["final_test_acc"] == pytest.approx([0.99, 0.85])
    assert stats["linear_step1_test_gap"] == pytest.approx([0.5, 0.4])
    assert stats["theory_step1_test_acc"] == 0.5
    for name, value in stats.items():
        assert isinstance(value, float if name.startswith("theory_") else list), name
