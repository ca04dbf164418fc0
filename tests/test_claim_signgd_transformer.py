"""Tests of the signgd_transformer claim: the stage-I theory against closed forms and against
one autograd step of the network, the sparse forward pass against a dense one, and the
measurement code on hand-made inputs."""

import numpy as np
import pytest
import torch

from replica.blocks import signal_noise as sn
from replica.claims import signgd_transformer as claim
from replica.steps import run_chain

PARAMS = {
    "n_train": 12,
    "n_test": 10,
    "dim": 300,
    "sparsity": 4,
    "sigma": 1.0,
    "signal_norm": 1.5,
    "m_k": 3,
    "m_v": 3,
    "sigma0": 0.01,
}


@pytest.fixture(scope="module")
def data():
    return claim.generate(PARAMS, [0, 1])


def test_sparse_tokens_round_trip_and_generate_is_deterministic(data):
    rng = np.random.default_rng(3)
    draw = sn.patch_dataset(rng, 6, 50, 2.0, noise="sparse", sparsity=3)
    idx, val = claim.sparse_tokens(draw["x"], 3)
    dense = np.zeros_like(draw["x"])
    for i in range(6):
        for p in range(2):
            np.add.at(dense[i, p], idx[i, p], val[i, p])
    np.testing.assert_array_equal(dense, draw["x"])
    again = claim.generate(PARAMS, [0, 1])
    assert all(np.array_equal(again[k], data[k]) for k in data)
    assert not np.array_equal(data["train_idx"][:, :10], data["test_idx"])


def test_stage_one_ratios_equal_closed_form_on_disjoint_supports():
    n, s, sigma, mu = 5, 3, 0.7, 2.0
    idx = np.arange(1, n * s + 1).reshape(1, n, s)  # every coordinate owned by one sample
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(1, n, s))
    label = np.array([[1, -1, 1, 1, -1]])
    r_sign, r_gd = claim.stage_one_ratios(idx, sigma * signs, label, mu)
    assert r_sign[0] == pytest.approx(s * sigma / mu)
    assert r_gd[0] == pytest.approx(s * sigma**2 / (n * mu**2))


def _one_step_ratio(data, kind: str, lr: float) -> float:
    """Autograd: one step from W_V = 0 with W_Q = W_K = 0 (uniform attention, equal loss
    derivatives), then value noise / value signal of the moved value layer."""
    tensors = {k: torch.as_tensor(v[:1]) for k, v in data.items()}
    y = tensors["train_label"].double()
    weights = {
        "wq": torch.zeros(1, 3, PARAMS["dim"], dtype=torch.float64, requires_grad=True),
        "wk": torch.zeros(1, 3, PARAMS["dim"], dtype=torch.float64, requires_grad=True),
        "wv": torch.zeros(1, 6, PARAMS["dim"], dtype=torch.float64, requires_grad=True),
    }
    init = {k: w.detach().clone() for k, w in weights.items()}
    f, _ = claim.forward(weights, tensors["train_idx"], tensors["train_val"])
    torch.nn.functional.softplus(-y * f).mean().backward()
    claim.Optimizer(kind, lr).step(weights)
    snap = claim.snapshot(weights, init, tensors, PARAMS)
    return float(snap["value_noise"][0] / snap["value_signal"][0])


def test_theory_matches_one_autograd_step_of_the_network(data):
    th = claim.theory(data, PARAMS)
    assert _one_step_ratio(data, "signgd", 1e-3) == pytest.approx(th["ratio_sign"][0], rel=1e-10)
    assert _one_step_ratio(data, "gd", 1e-2) == pytest.approx(th["ratio_gd"][0], rel=1e-10)
    # Adam's first bias-corrected step is a sign step (eps negligible)
    assert _one_step_ratio(data, "adam", 1e-3) == pytest.approx(th["ratio_sign"][0], rel=1e-6)


def test_sparse_forward_matches_dense_attention(data):
    weights = claim.init_weights([4], {**PARAMS, "sigma0": 0.3}, "cpu")
    idx, val = torch.as_tensor(data["train_idx"][:1]), torch.as_tensor(data["train_val"][:1])
    f, attn = claim.forward(weights, idx, val)
    x = np.zeros((12, 2, PARAMS["dim"]))
    for i in range(12):
        for p in range(2):
            np.add.at(x[i, p], data["train_idx"][0, i, p], data["train_val"][0, i, p])
    wq, wk, wv = (weights[k][0].detach().numpy() for k in ("wq", "wk", "wv"))
    for i in range(12):
        scores = (x[i] @ wq.T) @ (x[i] @ wk.T).T  # (query l, key a)
        soft = np.exp(scores - scores.max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        values = x[i] @ wv.T  # (token, 2 m_v)
        v_pos, v_neg = values[:, :3].mean(1), values[:, 3:].mean(1)
        assert f[0, i].item() == pytest.approx((soft @ v_pos).sum() - (soft @ v_neg).sum())
        np.testing.assert_allclose(attn[0, i].detach().numpy(), soft, atol=1e-12)


def test_measurement_helpers_on_hand_made_input():
    run = {
        "steps": np.array([0, 5, 10, 20]),
        "value_noise": np.array([[0.0, 1.0, 2.0, 4.0]]),
        "value_signal": np.array([[0.0, 0.5, 0.5, 1.0]]),
    }
    assert claim.ratio_at(run, 9)[0] == pytest.approx(4.0)
    assert claim.first_step_above(run["steps"], [[0.1, 0.5, 0.95, 1.0]], 0.9) == [10.0]
    assert claim.first_step_above(run["steps"], [[0.1, 0.2, 0.3, 0.4]], 0.9) == [None]
    np.testing.assert_allclose(claim.relative_error([1.1, 0.5], [1.0, 1.0]), [0.1, 0.5])


def test_smoke_chain_runs(tmp_path):
    result = run_chain("signgd_transformer", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]


def test_adam_eps_dominated_share_on_hand_made_state():
    opt = claim.Optimizer("adam", 1e-3, eps=1e-12)
    opt.t = 1  # bias correction 1 - 0.999 = 1e-3: sqrt(v_hat) = sqrt(v / 1e-3)
    v = torch.tensor([[[1e-30, 1e-3, 0.0, 1e-3]], [[1e-3, 1e-3, 1e-3, 1e-3]]], dtype=torch.float64)
    opt.state["wv"] = (torch.zeros_like(v), v)
    share = opt.eps_dominated_share(1e-12, seeds=2)
    # seed 0: sqrt(1e-27) < 1e-10 counts, sqrt(1) does not, v = 0 is inactive
    np.testing.assert_allclose(share.numpy(), [1 / 3, 0.0])


def test_verdict_returns_per_seed_lists():
    def arm(test_loss, train_loss=1e-4):
        final = {
            "train_loss": np.full(3, train_loss),
            "test_loss": np.asarray(test_loss),
            "train_attn_noise": np.ones(3),
            "test_acc": np.full(3, 0.5),
        }
        return {
            "final": final,
            "stage_one_ratio": np.full(3, 2.0),
            "eps_dominated_share": np.zeros(3),
            "eps_dominated_share_1e-8": np.zeros(3),
        }

    metrics = {"signgd": arm([0.5, 0.4, 0.2]), "adam": arm([0.5, 0.8, 0.2]), "gd": arm([0.01] * 3)}
    theory = {
        "ratio_sign": np.full(3, 2.0),
        "ratio_gd": np.full(3, 0.1),
        "test_loss_unlearned": 0.69,
    }
    stats = claim.verdict(metrics, theory, {})
    assert stats["adam_signgd_test_ratio"] == pytest.approx([1.0, 2.0, 1.0])
    assert stats["signgd_stage_one_error"] == pytest.approx([0.0, 0.0, 0.0])
    assert stats["adam_eps_dominated_share"] == pytest.approx([0.0, 0.0, 0.0])
    for name, value in stats.items():
        assert isinstance(value, float if name.startswith("theory_") else list), name
        if isinstance(value, list):
            assert len(value) == 3, name
