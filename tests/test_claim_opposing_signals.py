"""Tests of the opposing_signals claim: the theory (stability limit, data curvature direction)
against independent computations, the power iteration against an explicit Hessian, the GD step
against autograd, and the measurements on hand-made curves."""

import numpy as np
import pytest
import torch

from replica.claims import opposing_signals as ops
from replica.steps import run_chain

PARAMS = {
    "data_seed": 5,
    "modes": ["opposing", "none", "aligned"],
    "d": 5,
    "n_background": 30,
    "n_outliers": 5,
    "mu_norm": 1.0,
    "sigma": 0.0,
    "u_norm": 10.0,
    "lr": 0.1,
}


def test_stability_limit_matches_gd_on_a_quadratic():
    """Independent check of 2/eta: iterate GD on 0.5 lam w^2 just below and above the limit."""
    limit = ops.theory(ops.generate(PARAMS, [0]), PARAMS)["eos_threshold"]
    for lam, grows in ((0.99 * limit, False), (1.01 * limit, True)):
        w = 1.0
        for _ in range(2000):
            w -= PARAMS["lr"] * lam * w
        assert (abs(w) > 1.0) == grows


def test_top_input_direction_is_the_outlier_feature_exactly_without_noise():
    """sigma = 0: M = ((n_bg + 2 n_out) mu mu^T + 2 n_out u u^T) / n, cross terms cancel."""
    data = ops.generate(PARAMS, [0])
    th = ops.theory(data, PARAMS)
    assert np.isclose(th["input_top_eig_opposing"][0], th["outlier_eig_estimate"])
    assert np.isclose(th["input_top_dir_on_u_opposing"][0], 1.0)
    assert np.isclose(th["input_top_eig_none"][0], 1.0)  # |mu|^2 along e_1
    assert np.isclose(th["input_top_dir_on_u_none"][0], 0.0)


def test_top_input_direction_matches_power_iteration():
    x = np.random.default_rng(0).normal(size=(50, 4)) * [3, 1, 1, 0.5]
    lam, vec = ops.top_input_direction(x)
    m, b = x.T @ x / 50, np.ones(4)
    for _ in range(500):
        b = m @ b / np.linalg.norm(m @ b)
    assert np.isclose(lam, b @ m @ b) and np.isclose(abs(vec @ b), 1.0)


def small_problem():
    params = {**PARAMS, "sigma": 0.5, "d": 3, "n_background": 8, "n_outliers": 2}
    data = ops.generate(params, [0, 1])
    x = torch.as_tensor(data["x_opposing"])
    y = torch.as_tensor(data["y_opposing"])
    w, v = ops.init_net(2, 3, 4, 0, "cpu")
    return x, y, w, v


def test_power_iteration_matches_explicit_hessian():
    x, y, w, v = small_problem()
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(w.shape, generator=gen, dtype=w.dtype), torch.zeros_like(v)]
    lam, _ = ops.top_hessian_eig(w, v, x, y, start, 300)
    for s in range(2):

        def loss(flat, s=s):
            ws, vs = flat[:12].reshape(4, 3), flat[12:]
            return ops.per_point_loss(ws[None], vs[None], x[s : s + 1], y[s : s + 1]).mean()

        hess = torch.autograd.functional.hessian(loss, torch.cat([w[s].flatten(), v[s]]))
        eigs = torch.linalg.eigvalsh(hess)
        top = eigs[eigs.abs().argmax()]
        assert torch.isclose(lam[s], top, rtol=1e-6)


def test_gd_step_matches_autograd():
    x, y, w, v = small_problem()
    wg, vg = w.clone().requires_grad_(), v.clone().requires_grad_()
    loss = ops.per_point_loss(wg, vg, x, y).mean(1).sum()
    gw, gv = torch.autograd.grad(loss, [wg, vg])
    w_new, v_new, per = ops.gd_step(w, v, x, y, 0.3)
    assert torch.allclose(w_new, w - 0.3 * gw, atol=1e-12)
    assert torch.allclose(v_new, v - 0.3 * gv, atol=1e-12)
    assert torch.allclose(per.mean(1).sum(), loss)


def test_antiphase_correlation_on_hand_made_curves():
    t = np.arange(200)
    trend = 1.0 / (1 + 0.01 * t)
    wiggle = 0.01 * (-1.0) ** t
    assert np.isclose(ops.antiphase_correlation(trend + wiggle, trend - wiggle), -1.0, atol=0.05)
    assert np.isclose(ops.antiphase_correlation(trend + wiggle, 2 * trend + wiggle), 1.0, atol=0.05)
    assert ops.antiphase_correlation(np.ones(10), np.ones(10)) == 0.0  # undefined -> 0


def test_onset_and_fraction_at_eos_on_hand_made_curves():
    eig = np.array([5.0, 8.0, 9.5, 10.2, 9.0, 10.0])  # threshold 10
    onset = ops.eos_onset(eig, 10.0, 0.9)
    assert onset == 2
    assert np.isclose(ops.fraction_at_eos(eig, 10.0, onset, 0.1), 1.0)
    assert np.isclose(ops.fraction_at_eos(eig, 10.0, onset, 0.06), 0.75)
    assert ops.eos_onset(eig, 100.0, 0.9) is None
    assert ops.fraction_at_eos(eig, 100.0, None, 0.1) == 0.0
    assert np.isclose(ops.max_loss_jump(np.array([1.0, 0.5, 0.6, 0.3])), 0.2)


def test_eigvec_input_direction_of_a_rank_one_block():
    b = np.array([0.0, 0.6, 0.8])
    block = np.outer([1.0, -2.0, 0.5, 0.0], b)
    assert np.isclose(abs(ops.eigvec_input_direction(block) @ b), 1.0)


@pytest.mark.parametrize("mode", ["opposing", "aligned"])
def test_outlier_groups_share_or_flip_the_large_feature(mode):
    x, y, group = ops.one_dataset({**PARAMS, "sigma": 0.0}, mode, 0)
    sign_b = 1.0 if mode == "opposing" else -1.0
    assert np.allclose(x[group == 1, 1], 10.0) and np.allclose(x[group == 2, 1], sign_b * 10.0)
    assert np.all(y[group == 1] == 1) and np.all(y[group == 2] == -1)


def test_smoke_chain(tmp_path):
    result = run_chain("opposing_signals", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]


def test_measure_gives_a_per_seed_sharpness_level_for_every_seed():
    """A seed that never reaches the onset gets the mean of the second half (below the band)."""
    params = {
        "lr": 0.1,
        "onset_frac": 0.9,
        "eos_tol": 0.1,
        "steps": 40,
        "min_window": 10,
    }  # 2 / eta = 20
    eig = np.array([[10.0, 15.0, 19.0, 20.0, 20.5], [5.0, 6.0, 7.0, 8.0, 9.0]])
    t = np.arange(41)
    loss = np.stack([np.stack([1 / (1 + t), 1 / (1 + t), 1 / (1 + t)], -1)] * 2)
    run = {
        "eig": eig,
        "eig_steps": np.arange(0, 50, 10),
        "loss": loss,
        "eigvec_w_last": np.ones((2, 3, 2)),
    }
    rec = ops.measure_mode(run, params, [np.array([1.0, 0.0])] * 2)
    np.testing.assert_allclose(rec["eos_eig_ratio"], [np.mean([19, 20, 20.5]) / 20, 8.0 / 20])
    assert rec["onset_step"] == [20, None] and rec["eos_fraction"][1] == 0.0
