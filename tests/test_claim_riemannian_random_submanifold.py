"""Tests of the riemannian_random_submanifold claim: the closed-form fraction against exhaustive
enumeration and scipy's Haar sampler, the PCA rate against scipy's matrix exponential, the
submanifold step against explicit n x n matrices, the measurements on hand-made inputs, and one
smoke chain."""

import itertools

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from scipy.stats import ortho_group

from replica import steps
from replica.claims import riemannian_random_submanifold as rs

SLUG = "riemannian_random_submanifold"


def random_skew(rng, n):
    m = rng.standard_normal((n, n))
    return (m - m.T) / 2


def test_fraction_is_exact_for_uniform_permutations():
    """Average over every r-subset (a uniform permutation's leading block) - exhaustive."""
    rng = np.random.default_rng(0)
    n, r = 7, 3
    omega = random_skew(rng, n)
    subsets = list(itertools.combinations(range(n), r))
    mean_sq = np.mean([(omega[np.ix_(s, s)] ** 2).sum() for s in subsets])
    assert mean_sq == pytest.approx(rs.submanifold_fraction(n, r) * (omega**2).sum(), rel=1e-12)
    # the expected step is the same fraction of the full one: E[P^T diag(block, 0) P]
    step = np.zeros((n, n))
    for s in subsets:
        step[np.ix_(s, s)] += omega[np.ix_(s, s)] / len(subsets)
    np.testing.assert_allclose(step, rs.submanifold_fraction(n, r) * omega, atol=1e-14)


def test_fraction_matches_scipy_haar_monte_carlo():
    rng = np.random.default_rng(1)
    n, r, draws = 6, 3, 20000
    omega = random_skew(rng, n)
    ps = ortho_group.rvs(n, size=draws, random_state=2)
    blocks = np.einsum("kia,ab,kjb->kij", ps[:, :r], omega, ps[:, :r])
    vals = (blocks**2).sum((1, 2)) / (omega**2).sum()
    se = vals.std() / np.sqrt(draws)
    assert abs(vals.mean() - rs.submanifold_fraction(n, r)) < 4 * se
    assert rs.submanifold_fraction(n, 1) == 0.0 and rs.submanifold_fraction(n, n) == 1.0


def pca_problem(n=8, p=2, seed=3):
    data = rs.generate(
        {
            "data_seed": seed,
            "p": p,
            "lambda_hi": 1.5,
            "lambda_lo": 0.5,
            "near_scale": 1e-3,
            "ratio_n": [n],
            "n": n,
        },
        [0],
    )
    return data, data["A"][0], np.linalg.eigh(data["A"][0])[1][:, ::-1][:, :p]


def test_optimal_value_matches_eigendecomposition():
    data, a, _ = pca_problem()
    top = np.sort(np.linalg.eigvalsh(a))[::-1][:2]
    assert rs.optimal_value(2, 1.5) == pytest.approx(-0.5 * top.sum(), abs=1e-12)
    x = data["X0"][0]
    np.testing.assert_allclose(x.T @ x, np.eye(2), atol=1e-12)


def test_full_step_contracts_the_gap_at_the_exact_rate():
    """Near X*, one RGD step X <- expm(-eta Omega) X (scipy) shrinks F - F* by (1 - eta c/2)^2."""
    _, a, x_star = pca_problem()
    rng = np.random.default_rng(4)
    x = np.linalg.qr(x_star + 1e-4 * rng.standard_normal(x_star.shape))[0]
    eta, c = 0.2, 1.0
    f_star = rs.optimal_value(2, 1.5)

    def f(z):
        return -0.5 * np.trace(z.T @ a @ z)

    omega = (-(a @ x) @ x.T - (-(a @ x) @ x.T).T) / 2
    x_next = expm(-eta * omega) @ x
    ratio = (f(x_next) - f_star) / (f(x) - f_star)
    assert -np.log(ratio) == pytest.approx(rs.predicted_rate(8, 8, eta, c), rel=1e-3)
    assert rs.predicted_rate(40, 10, eta, c) == pytest.approx(90 / 1560 * eta * c)


def haar_rows_by_qr(gen, s, n, r):
    """The r x n rows Q^T of the sign-fixed (diag R > 0) QR of the same Gaussian Z."""
    q, rr = torch.linalg.qr(rs.gaussian(gen, (s, n, r), "cpu"))
    return (q * torch.sign(torch.diagonal(rr, dim1=-2, dim2=-1))[:, None, :]).transpose(1, 2)


def test_haar_rows_by_cholesky_match_the_qr_sampler():
    """haar_rows_of and sample_rows('haar') (Cholesky for r <= n / 4) draw the same Z as a QR
    sampler would and give its P_r G, P_r X."""
    rng = np.random.default_rng(2)
    g, x = (torch.as_tensor(rng.standard_normal((2, 30, 3))) for _ in range(2))
    gens = [torch.Generator().manual_seed(9) for _ in range(3)]
    pg, px = rs.haar_rows_of(gens[0], g, x, 4, 7)
    rows = haar_rows_by_qr(gens[1], 8, 30, 7)
    for got, m in ((pg, g), (px, x)):
        torch.testing.assert_close(
            got, rs.rows_of(m.repeat_interleave(4, 0), rows), rtol=0, atol=1e-13
        )
    torch.testing.assert_close(rs.sample_rows("haar", gens[2], 8, 30, 7, "cpu"), rows)
    assert all(torch.equal(gens[0].get_state(), gen.get_state()) for gen in gens[1:])


@pytest.mark.parametrize("sampler", ["perm", "fixed"])
def test_ratio_draws_index_rows_per_seed(sampler):
    """Draw i of a chunk uses seed i // chunk: the ratio equals the one from explicit rows."""
    rng = np.random.default_rng(4)
    g, x = (torch.as_tensor(rng.standard_normal((2, 12, 3))) for _ in range(2))
    got = rs.ratio_draws(g, x, sampler, 4, 6, torch.Generator().manual_seed(1), 3)
    gen = torch.Generator().manual_seed(1)
    vals = []
    for _ in range(2):  # two chunks of 3 draws per seed
        rows = rs.sample_rows(sampler, gen, 6, 12, 4, "cpu")
        gr, xr = g.repeat_interleave(3, 0), x.repeat_interleave(3, 0)
        block = rs.sub_gradient(rs.rows_of(gr, rows), rs.rows_of(xr, rows))
        omega = (rs.skew(g @ x.transpose(1, 2)) ** 2).sum((-1, -2))
        vals.append((block**2).sum((-1, -2)).reshape(2, 3) / omega[:, None])
    vals = torch.cat(vals, 1).numpy()
    np.testing.assert_array_equal(got[:, 0], vals.mean(1))


@pytest.mark.parametrize("sampler", ["perm", "haar", "fixed"])
def test_step_matches_explicit_orthogonal_matrices(sampler):
    data, a_np, _ = pca_problem()
    a = torch.as_tensor(a_np)[None]
    x = torch.as_tensor(data["X0"])
    n, r, eta = 8, 3, 0.2
    gen = torch.Generator().manual_seed(5)
    new = rs.submanifold_step(a, x, sampler, r, eta, gen)
    rows = rs.sample_rows(sampler, torch.Generator().manual_seed(5), 1, n, r, "cpu")[0].numpy()
    if rows.ndim == 1:  # a row selection: complete it to a permutation matrix
        order = np.r_[rows, [i for i in range(n) if i not in rows]]
        p_full = np.eye(n)[order]
    else:  # Haar rows: complete to an orthogonal matrix
        p_full = np.linalg.qr(np.c_[rows.T, np.random.default_rng(6).normal(size=(n, n - r))])[0].T
        p_full[:r] = rows
    x_np = data["X0"][0]
    omega = (-(a_np @ x_np) @ x_np.T - (-(a_np @ x_np) @ x_np.T).T) / 2
    block = (p_full @ omega @ p_full.T)[:r, :r]
    u = np.eye(n)
    u[:r, :r] = expm(-eta * block)
    np.testing.assert_allclose(new[0].numpy(), p_full.T @ u @ p_full @ x_np, atol=1e-12)
    np.testing.assert_allclose(new[0].T @ new[0], np.eye(2), atol=1e-12)
    if sampler == "fixed":  # rows r..n never move: the negative control's mechanism
        np.testing.assert_array_equal(new[0, r:].numpy(), x_np[r:])


def test_fit_and_pooling_on_hand_made_inputs():
    k = np.arange(400)
    rate, r2, count = rs.log_linear_fit(np.exp(-0.05 * k), 1e-8, 1e-2)
    assert rate == pytest.approx(0.05) and r2 == pytest.approx(1.0) and count > 5
    assert rs.log_linear_fit(np.ones(50), 1e-8, 1e-2)[0] is None  # never in the window
    # two seeds, values {1, 3} and {5, 7}: pooled mean 4, sample variance 20/3
    summary = np.array([[2.0, np.sqrt(2.0), 2], [6.0, np.sqrt(2.0), 2]])
    mean, se = rs.pooled_ratio(summary)
    assert mean == pytest.approx(4.0) and se == pytest.approx(np.sqrt(20 / 3 / 4))
    gap = rs.relative_gap(np.array([[3.0, 2.0, 1.0 - 1e-17]]), 1.0)
    np.testing.assert_allclose(gap, [[1.0, 0.5, 0.0]])
    assert rs.loglog_slope([2, 20, 200], [3, 30, 300]) == pytest.approx(1.0)


def hand_made_metrics(rates_perm, fixed_gap):
    """Two seeds, conv_r = [2, 3], n = 4: rates, R^2, gaps and ratios set by hand."""

    def conv(rates, gaps):
        return {
            f"r{r}": {
                "rate": rates[i],
                "r2": [0.99, 1.0],
                "final_gap": gaps[i],
                "final_ratio": [0.0, 0.0],
            }
            for i, r in enumerate([2, 3, 4])
        }

    ratio = {
        "rand_n4_r2": {
            "n": 4,
            "r": 2,
            "seed_mean": [1 / 6, 0.2],
            "seed_se": [0.01, 0.01],
            "theory": 1 / 6,
        },
        "rand_n4_r4": {
            "n": 4,
            "r": 4,
            "seed_mean": [1.0, 1.0],
            "seed_se": [1e-18, 0.0],
            "theory": 1.0,
        },
    }
    good = [[1e-10, 1e-12]] * 3
    return {
        "samplers": {
            "perm": {"ratio": ratio, "conv": conv(rates_perm, good)},
            "haar": {"ratio": ratio, "conv": conv(rates_perm, good)},
            "fixed": {"ratio": {}, "conv": conv(rates_perm, fixed_gap)},
        }
    }


def test_verdict_statistics_are_per_seed():
    params = {"n": 4, "conv_r": [2, 3], "rel_err_min_r": 2}
    theory = {"rate": {"r2": 0.1, "r3": 0.3, "r4": 1.0}, "rate_slope": 1.0}
    # seed 0 on theory; seed 1 has rate 0.12 at r = 2 and no rate at r = 3
    metrics = hand_made_metrics([[0.1, 0.12], [0.3, None], [1.0, 0.99]], [[0.5, 0.9]] * 3)
    out = rs.verdict(metrics, theory, params)
    assert out["rate_slope_perm"] == pytest.approx([1.0, 0.0])  # undefined seed counts 0
    assert out["rate_worst_ratio"] == pytest.approx([1.0, 0.0])  # undefined rate counts 0
    assert out["rgd_rate_ratio"] == pytest.approx([1.0, 0.99])
    assert out["ratio_max_abs_z"] == pytest.approx([0.0, (0.2 - 1 / 6) / 0.01])  # r = n skipped
    assert out["ratio_max_rel_err"] == pytest.approx([0.0, 0.2])  # includes r = n
    assert out["conv_min_r2"] == pytest.approx([0.99, 1.0])
    assert out["conv_max_final_gap"] == pytest.approx([1e-10, 1e-12])
    assert out["fixed_min_final_gap"] == pytest.approx([0.5, 0.9])
    assert all(len(v) == 2 for k, v in out.items() if k != "theory_rate_slope")


def test_smoke_chain_and_determinism(tmp_path):
    result = steps.run_chain(SLUG, "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
    assert result["primary"] == "linear_convergence"
    assert {row["name"] for row in result["controls"]} == {
        "fixed_submanifold_stalls",
        "fixed_submanifold_gradient_vanishes",
    }
    root = tmp_path / "smoke" / SLUG
    first = np.load(root / "train" / "sampler-haar.npz")["conv_f_r4"]
    steps.train(SLUG, "smoke", "sampler-haar", root / "data.npz", tmp_path / "again.npz")
    np.testing.assert_array_equal(first, np.load(tmp_path / "again.npz")["conv_f_r4"])
