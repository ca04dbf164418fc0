"""Tests of the sgd_noise_perceptron claim: the quadrature theory against Monte Carlo on the data
distribution and closed-form limits, the event-driven SGD on hand-made inputs (exact T scaling,
geometric idle steps), the exponent fits on synthetic power laws, and the smoke chain."""

import math

import numpy as np
import pytest
import torch
from scipy import special

from replica import steps
from replica.claims import sgd_noise_perceptron as claim

KINDS = ["chi0", "chi1", "chi2", "gap"]


@pytest.mark.parametrize("kind", KINDS)
def test_sampler_matches_closed_form_cdf(kind):
    x = claim.sample_abs_x1(np.random.default_rng(0), kind, 200_000, 0.2)
    for q in (0.1, 0.3, 0.8, 1.5):
        assert np.mean(x < q) == pytest.approx(claim.abs_x1_cdf(q, kind, 0.2), abs=4e-3)
    if kind == "gap":
        assert x.min() >= 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_unfit_fraction_and_mean_z_by_monte_carlo(kind):
    rng = np.random.default_rng(1)
    n, u = 1_000_000, 4.0
    x1 = claim.sample_abs_x1(rng, kind, n, 0.2)
    z = rng.standard_normal(n)
    unfit = u * x1 < z
    assert unfit.mean() == pytest.approx(claim.unfit_fraction(u, kind), rel=0.03)
    assert z[unfit].mean() == pytest.approx(claim.mean_z_unfitted(u, kind), rel=0.02)


@pytest.mark.parametrize("chi", [0.0, 1.0, 2.0])
def test_unfit_fraction_power_law_limit(chi):
    """q(u) u^(1+chi) -> E[z_+^(1+chi)] 2^(-(1+chi)/2) / Gamma((chi+3)/2) (small-x gammainc)."""
    k = 1.0 + chi
    z_moment = 2 ** (k / 2) * math.gamma((k + 1) / 2) / (2 * math.sqrt(math.pi))
    c = z_moment * 2 ** (-k / 2) / math.gamma((chi + 3) / 2)
    kind = f"chi{int(chi)}"
    assert claim.unfit_fraction(300.0, kind) * 300.0**k == pytest.approx(c, rel=2e-3)
    assert claim.mean_z_unfitted(300.0, kind) == pytest.approx(
        claim.mean_z_unfitted_asymptotic(chi), rel=2e-3
    )


@pytest.mark.parametrize("kind", ["chi0", "chi1", "chi2"])
def test_smallest_margin_scaling_by_monte_carlo(kind):
    """E[min |x1|] over P draws: quadrature vs Monte Carlo, and its slope -> -1/(1+chi)."""
    rng = np.random.default_rng(2)
    p = 500
    mc = np.mean([claim.sample_abs_x1(rng, kind, p, 0.2).min() for _ in range(3000)])
    assert mc == pytest.approx(claim.expected_min_abs_x1(p, kind), rel=0.05)
    chi = claim.CHI[kind]
    m1, m2 = claim.expected_min_abs_x1(10**3, kind), claim.expected_min_abs_x1(10**5, kind)
    assert -math.log(m2 / m1) / math.log(100) == pytest.approx(1 / (1 + chi), abs=0.02)


@pytest.mark.parametrize("kind", ["chi0", "chi1", "chi2"])
def test_stopping_ratio_solves_and_scales(kind):
    u = claim.stopping_ratio(4096, kind)
    assert 4096 * claim.unfit_fraction(u, kind) == pytest.approx(1.0, rel=1e-6)
    ps = [10**4, 10**5, 10**6]
    slope = claim.loglog_slope(ps, [claim.stopping_ratio(p, kind) for p in ps])
    assert slope == pytest.approx(claim.exponents(claim.CHI[kind])["a"], abs=0.02)


def test_gap_exponent_is_small_and_decreasing():
    ps = [256, 4096, 65536]
    u = [claim.stopping_ratio(p, "gap") for p in ps]
    s1, s2 = math.log(u[1] / u[0]) / math.log(16), math.log(u[2] / u[1]) / math.log(16)
    assert 0 < s2 < s1 < 0.2


def test_wperp_balance_closed_form():
    # d = 16, chi = 1: E[z | unfit] -> sqrt(2) Gamma(2) / Gamma(3/2) = 2 sqrt(2 / pi)
    mz = claim.mean_z_unfitted_asymptotic(1.0)
    assert mz == pytest.approx(2 * math.sqrt(2 / math.pi), rel=1e-12)
    assert claim.wperp_balance(16, mz) == pytest.approx(4 * (15 / 16) / (2 * mz), rel=1e-12)
    assert special.gamma(1.5) == pytest.approx(math.sqrt(math.pi) / 2)


def test_sgd_is_exactly_proportional_to_temperature():
    z = torch.as_tensor(
        np.stack(
            [claim.signed_inputs(np.random.default_rng(s), "chi1", 300, 8, 0.2) for s in range(3)]
        )
    )
    runs = [
        claim.perceptron_sgd(z, t, torch.Generator().manual_seed(5), 100_000, "test")
        for t in (1.0, 0.01)
    ]
    assert torch.allclose(runs[1][0], 0.01 * runs[0][0], rtol=1e-9, atol=0)
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])
    dw, _, _, fin = runs[0]
    assert bool(fin.all())
    assert bool(((z @ dw[:, :, None]).squeeze(-1) > 0).all())  # every point fitted at the end


def test_geometric_idle_steps_on_orthogonal_points():
    """P = 4 orthogonal points: each update fits exactly its own point, so there are 4 updates
    and E[steps] = 4/4 + 4/3 + 4/2 + 4/1 (coupon collector)."""
    s, d = 4000, 4
    z = (math.sqrt(d) * torch.eye(d, dtype=torch.float64)).expand(s, d, d).contiguous()
    dw, kicks, steps_, fin = claim.perceptron_sgd(
        z, 1.0, torch.Generator().manual_seed(0), 100, "t"
    )
    assert bool(fin.all()) and bool((kicks == 4).all())
    assert steps_.mean().item() == pytest.approx(1 + 4 / 3 + 2 + 4, rel=0.03)
    assert torch.allclose(dw, torch.ones(s, d, dtype=torch.float64))


def test_measure_recovers_synthetic_exponents():
    ps = np.array([100, 400, 1600])
    seeds = 3
    dw = np.zeros((seeds, 3, 4))
    dw[..., 0] = 10.0 * ps**0.5  # w1 ~ P^0.5
    dw[..., 1] = 2.0  # |w_perp| flat
    run = {
        "dw": dw,
        "kicks": np.ones((seeds, 3)),
        "steps": 7.0 * np.tile(ps.astype(float) ** 2, (seeds, 1)),
        "finished": np.ones((seeds, 3)),
        "test_error": np.zeros((seeds, 3)),
        "p_values": ps,
        "temperature": np.array(1.0),
    }
    out = claim.measure({}, {"data-chi1": run}, {"data-chi1": {"data": "chi1"}}, {"d": 4})
    m = out["chi1"]
    assert len(m["b"]) == seeds  # one fit per seed, aggregated by the judge
    assert m["b"] == pytest.approx([2.0] * seeds, abs=1e-9)
    assert m["wperp_slope"] == pytest.approx([0.0] * seeds, abs=1e-9)
    assert m["u_slope"] == pytest.approx([0.5] * seeds, abs=1e-9)
    # |dw| = sqrt(w1^2 + 4) is close to w1: a just below 0.5
    assert all(0.49 < a < 0.5 for a in m["a"])


def _kind_metrics(a, b, wperp_slope, finished=1.0):
    return {
        "a": a,
        "b": b,
        "u_slope": a,
        "wperp_slope": wperp_slope,
        "wperp_over_t": [[1.0, 1.0]],
        "all_finished": finished,
    }


def test_verdict_returns_per_seed_statistics_and_undefined_runs_are_none():
    theory = {
        k: {"a": 1 / (1 + c), "b": (3 + c) / (1 + c), "wperp_over_t": [1.0, 1.0]}
        for k, c in claim.CHI.items()
    }
    theory["gap"] = {"a": 0.15}
    metrics = {
        "chi0": _kind_metrics([1.0, 0.9], [3.0, 2.8], [0.02, -0.05]),
        "chi1": _kind_metrics([0.5, 0.45], [2.0, 1.9], [-0.08, 0.01]),
        "chi2": _kind_metrics([0.3, 0.35], [1.6, 1.7], [0.0, 0.03]),
        "gap": _kind_metrics([0.1, 0.12], [1.0, 1.0], [0.0, 0.0]),
    }
    st = claim.verdict(metrics, theory, {})
    assert st["a_spread_chi0_chi2"] == pytest.approx([0.7, 0.55])
    assert st["wperp_slope_max"] == pytest.approx([0.08, 0.05])  # one max per seed
    assert st["a_chi1"] == [0.5, 0.45] and st["a_theory_chi1"] == 0.5
    assert st["a_gap"] == [0.1, 0.12]
    metrics["chi1"]["all_finished"] = 0.0  # a run hit max_kicks: exponents undefined
    st = claim.verdict(metrics, theory, {})
    assert st["a_chi1"] is None and st["wperp_slope_max"] is None


def test_smoke_chain(tmp_path):
    result = steps.run_chain("sgd_noise_perceptron", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
