"""Tests of the lr_batch_size_rmt claim: BBP against Monte Carlo spectra, the 2x2 mean-square
recursion against the full second-moment operator and a known special case, and the
threshold finder on problems whose answer is known in closed form."""

import numpy as np
import pytest
import torch

from replica import steps
from replica.claims import lr_batch_size_rmt as claim


def spiked_rows(rng, n, d, theta):
    x = rng.standard_normal((n, d))
    x[:, 0] *= np.sqrt(theta)
    return x


@pytest.mark.parametrize(("batch", "theta"), [(600, 5.0), (150, 5.0), (150, 1.5)])
def test_bbp_limit_matches_monte_carlo_spectra(batch, theta):
    """gamma = 0.5 and 2 with a separated spike, and a spike below threshold (bulk edge)."""
    rng = np.random.default_rng(0)
    d = 300
    tops = [
        np.linalg.eigvalsh(x.T @ x / batch)[-1]
        for x in (spiked_rows(rng, batch, d, theta) for _ in range(6))
    ]
    assert np.mean(tops) == pytest.approx(claim.bbp_top_eigenvalue(d, batch, theta), rel=0.04)


def test_batch_top_eigenvalues_uses_the_right_gram():
    rng = np.random.default_rng(1)
    x = spiked_rows(rng, 50, 8, 3.0)
    for batch in (3, 20):
        got = claim.batch_top_eigenvalues(x, batch, 1, np.random.default_rng(5))[0]
        xb = x[np.random.default_rng(5).integers(0, 50, batch)]
        assert got == pytest.approx(np.linalg.eigvalsh(xb.T @ xb / batch)[-1], rel=1e-10)


def test_isserlis_fourth_moment_by_monte_carlo():
    rng = np.random.default_rng(2)
    sigma = np.diag([3.0, 1.0, 1.0])
    a = rng.normal(size=(3, 3))
    a = a + a.T
    x = rng.standard_normal((400_000, 3)) @ np.sqrt(sigma)
    q = np.einsum("ni,ij,nj->n", x, a, x)
    mc = np.einsum("n,ni,nj->ij", q, x, x) / len(x)
    exact = 2 * sigma @ a @ sigma + np.trace(sigma @ a) * sigma
    assert np.allclose(mc, exact, atol=0.15 * np.abs(exact).max())


def full_second_moment_operator(eta, batch, sigma):
    """A -> E[(I - eta H_B) A (I - eta H_B)] on all d x d matrices (Isserlis), as a matrix."""
    d = len(sigma)
    ops = []
    for k in range(d * d):
        a = np.zeros(d * d)
        a[k] = 1
        a = a.reshape(d, d)
        fourth = 2 * sigma @ a @ sigma + np.trace(sigma @ a) * sigma
        h_a_h = (1 - 1 / batch) * sigma @ a @ sigma + fourth / batch
        ops.append((a - eta * (sigma @ a + a @ sigma) + eta**2 * h_a_h).ravel())
    return np.array(ops).T


@pytest.mark.parametrize("batch", [1, 3, 10])
def test_ms_threshold_is_where_the_full_operator_turns_unstable(batch):
    d, theta = 4, 6.0
    sigma = np.diag([theta] + [1.0] * (d - 1))
    eta = claim.ms_threshold(batch, d, theta)

    def radius(e):
        return np.abs(np.linalg.eigvals(full_second_moment_operator(e, batch, sigma))).max()

    assert radius(eta * 0.999) < 1 < radius(eta * 1.001)


def test_ms_threshold_special_cases():
    # B = 1, isotropic: E|e'|^2 = |e|^2 (1 - 2 eta + eta^2 (d + 2))  ->  eta = 2 / (d + 2)
    assert claim.ms_threshold(1, 50, 1.0) == pytest.approx(2 / 52, rel=1e-9)
    # B -> infinity: plain GD on Sigma, eta = 2 / theta
    assert claim.ms_threshold(10**9, 50, 7.0) == pytest.approx(2 / 7, rel=1e-6)


def test_mbb_and_bbp_limits():
    assert claim.mbb_threshold(1, 400.0, 10.0) == pytest.approx(2 / 400)
    assert claim.mbb_threshold(10**9, 400.0, 10.0) == pytest.approx(2 / 10, rel=1e-6)
    assert claim.bbp_top_eigenvalue(100, 10**9, 5.0) == pytest.approx(5.0)
    assert claim.bbp_top_eigenvalue(100, 1, 5.0) == pytest.approx(121.0)  # (1 + 10)^2


def test_sgd_growth_rate_is_exact_on_a_one_dimensional_problem():
    """Every row is the scalar a: e <- (1 - eta a^2) e, so the rate is log|1 - eta a^2|."""
    a = 1.7
    x = torch.full((2, 30, 1), a, dtype=torch.float64)
    rates = torch.tensor([[0.3, 0.6, 0.8]] * 2, dtype=torch.float64)
    e0 = torch.ones(2, 3, 1, dtype=torch.float64)
    got = claim.run_sgd(x, e0, rates, 4, 100, torch.Generator().manual_seed(0))
    assert torch.allclose(got, torch.log(torch.abs(1 - rates * a**2)), atol=1e-12)


def test_hessian_paths_match_the_design_matrix():
    """Full-batch GD and Adam's loss through H = X^T X / N equal the X^T (X e) forms."""
    rng = np.random.default_rng(3)
    x = torch.as_tensor(np.stack([spiked_rows(rng, 200, 6, 4.0) for _ in range(2)]))
    e = torch.as_tensor(rng.standard_normal((2, 5, 6)))
    hess = claim.data_hessian(x)
    direct = torch.einsum("snd,sgn->sgd", x, torch.einsum("snd,sgd->sgn", x, e)) / x.shape[1]
    torch.testing.assert_close(torch.bmm(e, hess), direct, rtol=1e-13, atol=0)
    rates = torch.full((2, 5), 0.1, dtype=torch.float64)
    by_h = claim.run_sgd(x, e, rates, 200, 50, None, full_batch=True)
    # the same 50 steps through X, unnormalised: growth rate of |e| over the second half
    err, norms = e.clone(), []
    for _ in range(50):
        resid = torch.einsum("snd,sgd->sgn", x, err)
        err = err - 0.1 * torch.einsum("snd,sgn->sgd", x, resid) / 200
        norms.append(err.norm(dim=-1).log())
    rate = (norms[49] - norms[24]) / 25
    torch.testing.assert_close(by_h, rate, rtol=1e-10, atol=1e-12)
    loss = 0.5 * (torch.einsum("snd,sgd->sgn", x, e) ** 2).mean(-1)
    torch.testing.assert_close(0.5 * (torch.bmm(e, hess) * e).sum(-1), loss, rtol=1e-13, atol=0)


def test_sample_batch_picks_the_drawn_rows():
    x = torch.arange(2 * 10 * 3, dtype=torch.float64).reshape(2, 10, 3)
    got = claim.sample_batch(x, 4, torch.Generator().manual_seed(1))
    rows = torch.randint(10, (2, 4), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, x[torch.arange(2)[:, None], rows], rtol=0, atol=0)


def test_crossing_and_refine_on_hand_made_scores():
    rates = np.array([1.0, 2.0, 4.0, 8.0])
    assert claim.crossing(rates, np.array([-2.0, -1.0, 1.0, 3.0])) == pytest.approx(2 * 2**0.5)
    # a noisy positive blip below the threshold is ignored: the all-unstable tail decides
    assert claim.crossing(rates, np.array([-2.0, 0.1, -1.0, 1.0])) == pytest.approx(4 * 2**0.5)
    assert claim.crossing(rates, np.array([-1.0, -1.0, -1.0, -1.0])) is None
    assert claim.crossing(rates, np.array([1.0, 1.0, 1.0, 1.0])) is None
    fine = claim.refine(rates, np.array([-2.0, -1.0, 1.0, 3.0]), 3)
    assert fine.min() > 2.0 and fine.max() < 4.0 and len(fine) == 3


def test_slopes_and_verdict_on_hand_made_metrics():
    params = {"small_batch_max": 4, "large_batch_min": 16, "spectral_min_batch": 4}
    b = np.array([1, 2, 4, 16, 32])
    thr = np.array([[0.01, 0.02, 0.04, 0.1, 0.1], [0.02, 0.04, 0.08, 0.2, 0.2]])
    small, large = claim.small(b, params), claim.large(b, params)
    assert claim.per_seed_slopes(b, thr, small, 0.0) == pytest.approx([1.0, 1.0])
    assert claim.per_seed_slopes(b, thr, large, 1.0) == pytest.approx([0.0, 0.0])
    thr[0, 1] = np.nan  # seed 0 unbracketed at B = 2: the stated failing value, per seed
    assert claim.per_seed_slopes(b, thr, small, 0.0) == pytest.approx([0.0, 1.0])
    assert claim.per_seed_slopes(b, thr, large, 1.0) == pytest.approx([0.0, 0.0])


def test_worst_ratio_keeps_the_sign_of_the_largest_miss():
    level = np.array([[1.1, 0.7, 1.2], [1.4, 1.0, 0.9], [1.0, np.nan, 1.0]])
    ref = np.ones(3)
    assert claim.worst_ratio(level, ref) == pytest.approx([0.7, 1.4, 0.0])


def test_verdict_returns_per_seed_lists():
    params = {"small_batch_max": 2, "large_batch_min": 8, "spectral_min_batch": 2}
    b = [1, 2, 8, 16]
    theory = {
        "lambda_bbp": np.array([4.0, 2.0, 1.0, 1.0]),
        "eta_paper": np.array([0.5, 1.0, 2.0, 2.0]),
        "eta_ms": np.array([0.4, 0.8, 1.6, 1.6]),
        "eta_full_batch": np.array([2.0, 2.0, 2.0]),
        "paper_small_batch_slope": 1.0,
    }
    metrics = {
        "batch_sizes": b,
        "top_eigenvalue_mean": [[4.0, 2.2, 1.0, 0.9]] * 3,
        "sgd_threshold": [[0.5, 1.0, 2.0, 2.0], [0.5, 1.0, 2.4, 2.4], [0.5, None, 2.0, 2.0]],
        "adam_threshold": [[0.1, 0.1414, 0.2, 0.2]] * 3,
        "sgd_full_batch_threshold": [2.0, 2.04, None],
    }
    out = claim.verdict(metrics, theory, params)
    assert out["bbp_max_deviation"] == pytest.approx([0.1] * 3)
    assert out["sgd_small_batch_slope"] == pytest.approx([1.0, 1.0, 0.0])
    assert out["sgd_level_worst_ratio"] == pytest.approx([1.0, 1.2, 0.0])
    assert out["full_batch_deviation"] == pytest.approx([0.0, 0.02, 1.0])
    assert out["adam_small_batch_slope"][0] == pytest.approx(0.5, abs=1e-3)


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("lr_batch_size_rmt", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
