"""Tests of the train_longer_ultraslow claim: the theory (noise-matching learning-rate ratio,
Ornstein-Uhlenbeck recursion) against Monte Carlo, the fits and the decade ratio on exact
curves, ghost BatchNorm against torch.nn.functional.batch_norm, and a smoke chain."""

import numpy as np
import pytest
import torch

from replica.claims import train_longer_ultraslow as tl
from replica.steps import run_chain


def test_noise_matching_ratio_matches_monte_carlo_without_replacement():
    rng = np.random.default_rng(0)
    n, b_small, b_large = 64, 4, 32
    g = rng.normal(size=n)  # per-example "gradients"
    var = {}
    for b in (b_small, b_large):
        means = [g[rng.permutation(n)[:b]].mean() for _ in range(40_000)]
        var[b] = np.var(means)
    mc_ratio = np.sqrt(var[b_small] / var[b_large])
    assert tl.noise_matching_lr_ratio(b_small, b_large, n) == pytest.approx(mc_ratio, rel=0.03)
    assert tl.noise_matching_lr_ratio(4, 32, 10**9) == pytest.approx(np.sqrt(8), rel=1e-6)


def test_ou_recursion_matches_simulation_and_stationary_value():
    d, batch, lr, sigma, steps = 8, 4, 0.1, 0.7, 60
    theory = tl.ou_second_moment(steps, lr, batch, d, sigma)
    rng = np.random.default_rng(1)
    reps = 20_000
    err = np.zeros((reps, d))
    for _ in range(steps):
        x = rng.normal(size=(reps, batch, d))
        resid = np.einsum("rbd,rd->rb", x, err) - sigma * rng.normal(size=(reps, batch))
        err = err - lr * np.einsum("rb,rbd->rd", resid, x) / batch
    assert np.mean(np.sum(err**2, 1)) == pytest.approx(theory[-1], rel=0.03)
    long = tl.ou_second_moment(3000, lr, batch, d, sigma)
    assert long[-1] == pytest.approx(tl.ou_stationary(lr, batch, d, sigma), rel=1e-9)


def test_decade_ratio_on_exact_curves():
    t = np.geomspace(1, 10_000, 50)
    assert tl.decade_growth_ratio(t, 2.0 + 0.7 * np.log(t)) == pytest.approx(1.0, abs=1e-6)
    assert tl.decade_growth_ratio(t, t**0.3) == pytest.approx(10**0.3, rel=0.02)
    assert tl.decade_growth_ratio(t, 1 - np.exp(-t / 20.0)) < 1e-6


def test_log_and_power_fits_recover_their_own_law():
    t = np.geomspace(10, 1000, 30)
    log_fit = tl.log_and_power_fits(t, 1.0 + 0.5 * np.log(t))
    assert log_fit["r2_log"] == pytest.approx(1.0) and log_fit["b"] == pytest.approx(0.5)
    assert log_fit["aic_log_minus_power"] < -10
    pow_fit = tl.log_and_power_fits(t, 0.2 * t**0.6)
    assert pow_fit["p"] == pytest.approx(0.6) and pow_fit["aic_log_minus_power"] > 10


def test_ghost_batch_norm_matches_torch_per_chunk():
    z = torch.randn(2, 12, 5, generator=torch.Generator().manual_seed(0))
    out, _, _ = tl.batch_norm(z, ghost=4)
    for s in range(2):
        for c in range(3):
            chunk = z[s, 4 * c : 4 * c + 4]
            ref = torch.nn.functional.batch_norm(chunk, None, None, training=True, eps=tl.BN_EPS)
            assert torch.allclose(out[s, 4 * c : 4 * c + 4], ref, atol=1e-6)
    full, _, _ = tl.batch_norm(z, ghost=None)
    ref = torch.nn.functional.batch_norm(z[0], None, None, training=True, eps=tl.BN_EPS)
    assert torch.allclose(full[0], ref, atol=1e-6)


def test_regime_adaptation_matches_update_counts():
    params = {"batch_small": 16, "batch_large": 256, "lr": 0.05, "epochs": 10}
    sb, ad = tl.arm_settings("sb", params), tl.arm_settings("lb_adapted", params)
    n = 2048
    assert (n // sb["batch"]) * sb["epochs"] == (n // ad["batch"]) * ad["epochs"]
    assert ad["lr"] == pytest.approx(0.05 * 4) and ad["ghost"] == 16


def test_closed_fraction_uses_each_seeds_own_gap():
    sb, lb = np.array([0.80, 0.70, 0.60]), np.array([0.70, 0.70, 0.65])
    arm = np.array([0.78, 0.75, 0.70])
    # seed 0: 0.08 / 0.10; seeds 1 and 2 have no gap and get the stated value
    assert tl.closed_fraction(arm, lb, sb, 0.0) == pytest.approx([0.8, 0.0, 0.0])
    assert tl.closed_fraction(arm, lb, sb, 1.0) == pytest.approx([0.8, 1.0, 1.0])


def test_verdict_returns_per_seed_lists():
    def arm(acc, ratio=1.0):
        return {
            "test_acc": acc,
            "r2_log": [0.99, 0.98],
            "aic_log_minus_power": [-12.0, -11.0],
            "decade_ratio": [ratio, ratio],
        }

    metrics = {
        "arms": {
            "sb": arm([0.8, 0.9]),
            "lb": arm([0.7, 0.8]),
            "lb_sqrt": arm([0.72, 0.82]),
            "lb_sqrt_gbn": arm([0.74, 0.83]),
            "lb_adapted": arm([0.79, 0.89]),
            "quadratic": {"r2_log": [0.1, 0.2], "decade_ratio": [0.02, 0.03]},
        }
    }
    theory = {
        "log_law_decade_ratio": 1.0,
        "ou_decade_ratio": 0.025,
        "lr_ratio_sqrt": 4.0,
        "lr_ratio_noise_matched": 4.1,
    }
    st = tl.verdict(metrics, theory, {})
    assert st["gap_sb_minus_lb"] == pytest.approx([0.1, 0.1])
    assert st["gap_closed_fraction"] == pytest.approx([0.9, 0.9])
    assert st["gbn_gap_closed_fraction"] == pytest.approx([0.4, 0.3])
    assert st["quadratic_decade_ratio"] == [0.02, 0.03]
    assert st["theory_log_decade_ratio"] == 1.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_smoke_chain(tmp_path):
    result = run_chain("train_longer_ultraslow", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
