"""Tests of the task_structure_nonlinearity claim: the NNGP kernels and the closed-form input
alignment against independent computations, the hand-written GD step against autograd, and
the CKA / parallelism measurements on hand-made inputs."""

import numpy as np
import pytest
import torch

from replica.claims import task_structure_nonlinearity as tsn
from replica.steps import run_chain

PARAMS = {
    "data_seed": 1,
    "d": 12,
    "n_per_cluster": 2,
    "sigma": 0.1,
    "alignments": [0.25, 0.5, 1.0],
}


def test_nngp_kernels_match_monte_carlo():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)) / 2
    gram = x @ x.T
    z = rng.normal(size=(400_000, 6)) @ x.T  # (u_i) = w.x_i with w ~ N(0, I)
    for act, fn in (("tanh", np.tanh), ("relu", lambda v: np.maximum(v, 0))):
        mc = fn(z).T @ fn(z) / len(z)
        assert np.allclose(tsn.NNGP[act](gram), mc, rtol=0.02, atol=0.005), act


def test_relu_nngp_special_cases():
    k = tsn.relu_nngp(np.array([[2.0, 0.0], [0.0, 0.5]]))
    assert np.allclose(np.diag(k), [1.0, 0.25])  # E relu(u)^2 = var / 2
    assert np.isclose(k[0, 1], 1.0 / (2 * np.pi))  # orthogonal inputs: sqrt(s s') / 2 pi


def test_input_alignment_closed_form_matches_centroids():
    u = np.linalg.qr(np.random.default_rng(3).normal(size=(9, 3)))[0]
    for a in (0.25, 0.7, 2.0):
        c = tsn.centroids(u, a, 1.0)
        assert np.allclose(np.linalg.norm(c, axis=1), 1.0)
        assert np.isclose(tsn.cka(c @ c.T, tsn.label_gram()), tsn.input_label_alignment(a))
    c = tsn.centroids(u, 1.0, 0.0)  # control: input geometry = label geometry
    assert np.isclose(tsn.cka(c @ c.T, tsn.label_gram()), 1.0)


def test_cka_on_hand_made_kernels():
    y = tsn.latents()
    k1, k3 = np.outer(y[:, 0], y[:, 0]), np.outer(y[:, 2], y[:, 2])
    assert np.isclose(tsn.cka(k1, 5 * k1), 1.0)  # scale invariant
    assert np.isclose(tsn.cka(k1, k3), 0.0)  # orthogonal latents
    assert np.isclose(tsn.cka(k1 + 10.0, k1), 1.0)  # centring removes constants
    assert np.isclose(tsn.cka(k1, tsn.label_gram()), 1 / np.sqrt(2))


def test_parallelism_score_on_hand_made_representations():
    z = tsn.latents()
    linear = z @ np.random.default_rng(1).normal(size=(3, 7))  # factorised code: PS = 1
    assert np.isclose(tsn.parallelism_score(linear), 1.0)
    # one-hot cluster code: coding vectors have disjoint supports, PS = 0
    assert np.isclose(tsn.parallelism_score(np.eye(8)), 0.0)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_gd_step_matches_autograd(act):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    w, a = tsn.init_net(3, 5, 6, 4, "cpu", torch.float64)
    gamma, lr = 2.0, 0.3
    wg, ag = w.clone().requires_grad_(), a.clone().requires_grad_()
    f = torch.bmm(tsn.activation(act)(torch.bmm(x, wg.transpose(1, 2))), ag) / (gamma * 6**0.5)
    loss = 0.5 * ((f - y) ** 2).sum((-1, -2)) / 8
    gw, ga = torch.autograd.grad(loss.sum(), [wg, ag])
    assert torch.allclose(f, torch.zeros_like(f))  # paired init: f = 0
    tsn.train_gd(x, y, w, a, act, gamma, lr, 1, "test")
    assert torch.allclose(w, wg.detach() - lr * gamma**2 * gw, atol=1e-12)
    assert torch.allclose(a, ag.detach() - lr * gamma**2 * ga, atol=1e-12)


def test_generate_and_theory_shapes():
    data = tsn.generate(PARAMS, [0, 1])
    assert data["x"].shape == (2, 4, 16, 12) and data["centroids"].shape == (2, 4, 8, 12)
    th = tsn.theory(data, PARAMS)
    assert np.allclose(th["input_cka_y"][:3], th["input_cka_y_closed_form"])
    assert np.isclose(th["input_cka_y"][3], 1.0)


def test_smoke_chain(tmp_path):
    result = run_chain("task_structure_nonlinearity", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]


def _fake_metrics(n_seeds=3, n_align=4):
    """Hand-made measurements (K settings x S seeds) with known per-seed statistics."""
    k = n_align + 1
    base = np.zeros((k, n_seeds))
    seeds = np.arange(n_seeds)
    # rich: tanh label gap 0.3 + 0.01 * seed at the first two settings, 0.05 at the others
    gap = np.full((k, n_seeds), 0.05)
    gap[:2] = 0.3 + 0.01 * seeds
    arm = {
        "ps": base + 0.5,
        "ps_init": base + 0.4,
        "cka_x": base + 0.5,
        "train_loss": base + 0.001,
        "weight_change": base + 0.2,
    }
    arms = {
        "tanh_rich": {**arm, "cka_y": 0.6 + gap, "ps": base + 0.6, "weight_change": base + 0.3},
        "relu_rich": {**arm, "cka_y": base + 0.6, "cka_x": base + 0.6},
        "tanh_lazy": {**arm, "cka_y": base + 0.5 + 0.01 * seeds, "weight_change": base + 0.002},
        "relu_lazy": {**arm, "cka_y": base + 0.5, "weight_change": base + 0.004},
    }
    return {"arms": {a: {key: val.tolist() for key, val in rec.items()} for a, rec in arms.items()}}


def test_verdict_statistics_are_per_seed():
    params = {"alignments": [0.25, 0.5, 0.75, 1.0], "label_gap_min": 0.1, "input_gap_min": 0.05}
    theory = {
        "nngp_cka_y_tanh": [0.5] * 5,
        "nngp_cka_y_relu": [0.48] * 5,
        "nngp_label_gap_mean": 0.02,
    }
    stats = tsn.verdict(_fake_metrics(), theory, params)
    for name, value in stats.items():
        assert not isinstance(value, dict), name
        assert isinstance(value, float) or len(value) == 3, name
    assert np.allclose(stats["label_gap_mean"], [(0.6 + 0.1 + 0.02 * s) / 4 for s in range(3)])
    assert stats["label_gap_settings"] == [2.0, 2.0, 2.0]  # 0.05 < 0.1 in the last two
    assert np.allclose(stats["input_gap_mean"], 0.1) and stats["input_gap_settings"] == [4.0] * 3
    assert np.allclose(stats["aligned_label_gap"], 0.05)
    assert np.allclose(stats["ps_gap_mean"], 0.1)  # raw PS(T) gap
    assert np.allclose(stats["ps_learned_gap_mean"], 0.1)  # (0.6 - 0.4) - (0.5 - 0.4)
    assert np.allclose(stats["lazy_label_gap_mean"], [0.0, 0.01, 0.02])
    assert np.allclose(stats["lazy_nngp_max_dev"], [0.02, 0.02, 0.02])  # relu lazy 0.5 vs 0.48
    assert np.allclose(stats["lazy_weight_change"], 0.004)  # the larger of the two activations
    assert np.allclose(stats["rich_weight_change"], 0.2)  # the smaller of the two activations
    assert stats["nngp_label_gap_mean"] == 0.02


def test_verdict_judged_by_the_manifest():
    from replica import registry, verdicts

    manifest = registry.load_manifest(registry.CLAIMS_DIR / "task_structure_nonlinearity.yaml")
    data = manifest.data if hasattr(manifest, "data") else manifest
    params = {"alignments": [0.25, 0.5, 0.75, 1.0], "label_gap_min": 0.1, "input_gap_min": 0.05}
    theory = {
        "nngp_cka_y_tanh": [0.5] * 5,
        "nngp_cka_y_relu": [0.48] * 5,
        "nngp_label_gap_mean": 0.02,
    }
    result = verdicts.judge(data, tsn.verdict(_fake_metrics(), theory, params), 3, resamples=0)
    rows = {r["name"]: r for r in result["checks"] + result["controls"]}
    assert result["primary"] == "label_gap_mean" and rows["label_gap_mean"]["outcome"] == "pass"
    assert rows["tanh_more_label_aligned_in_most_settings"]["outcome"] == "fail"
    assert rows["relu_more_input_aligned_in_most_settings"]["outcome"] == "pass"
    assert result["status"] == "partial"
