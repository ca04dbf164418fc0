"""Tests of the critical_batch_size_scaling claim: the second-moment recursion against Monte Carlo
SGD and a deterministic special case, the omitted-coordinate noise, the CBS rule on hand-made
curves, and the smoke chain."""

import numpy as np
import pytest

from replica import steps
from replica.claims import critical_batch_size_scaling as cbs

PARAMS = {"a": 1.5, "b": 1.5, "sigma": 0.1, "full_dim": 200, "data_sizes": [64, 128]}


def monte_carlo_sgd(lam, beta2, noise_var, batch, eta, n_steps, runs, seed=0):
    """Independent numpy SGD on sampled Gaussian data: mean exact risk per step."""
    rng = np.random.default_rng(seed)
    e = -np.tile(np.sqrt(beta2), (runs, 1))
    out = []
    for _ in range(n_steps + 1):
        out.append(0.5 * ((e**2 * lam).sum(1) + noise_var).mean())
        x = rng.standard_normal((runs, batch, len(lam))) * np.sqrt(lam)
        resid = np.einsum("rbm,rm->rb", x, e) - np.sqrt(noise_var) * rng.standard_normal(
            (runs, batch)
        )
        e -= eta / batch * np.einsum("rb,rbm->rm", resid, x)
    return np.array(out)


def test_recursion_matches_monte_carlo_sgd():
    lam = np.array([1.0, 0.5, 0.2, 0.05])
    beta2 = np.array([1.0, 0.8, 0.5, 2.0])
    risk = cbs.recursion_risk(lam, beta2, 0.3, batch=2, etas=[0.4], n_steps=25)[:, 0]
    mc = monte_carlo_sgd(lam, beta2, 0.3, 2, 0.4, 25, runs=40_000)
    np.testing.assert_allclose(risk, mc, rtol=0.02)
    assert risk[-1] < 0.7 * risk[0]  # the comparison covers real progress


def test_recursion_is_the_textbook_loop_bit_for_bit():
    """The in-place loop computes the docstring's recursion with the same operations."""
    lam, beta2, noise_var, batch = np.array([1.0, 0.4, 0.1]), np.array([0.7, 1.0, 2.0]), 0.2, 4
    eta = np.array([0.5, 0.1])[:, None]
    c, expected = np.tile(beta2, (2, 1)), []
    for _ in range(31):
        trace = c @ lam
        expected.append(0.5 * (trace + noise_var))
        keep = (1 - eta * lam) ** 2 + eta**2 * lam**2 / batch
        c = keep * c + eta**2 / batch * lam * (trace[:, None] + noise_var)
    got = cbs.recursion_risk(lam, beta2, noise_var, batch, eta[:, 0], 30)
    assert np.array_equal(got, np.array(expected))


def test_recursion_without_gradient_noise_is_gradient_descent():
    lam = np.array([1.0, 0.3, 0.01])
    beta2 = np.array([0.5, 1.0, 3.0])
    eta, t = 0.7, np.arange(41)[:, None]
    risk = cbs.recursion_risk(lam, beta2, 0.0, batch=10**12, etas=[eta], n_steps=40)[:, 0]
    exact = 0.5 * (lam * beta2 * (1 - eta * lam) ** (2 * t)).sum(1)
    np.testing.assert_allclose(risk, exact, rtol=1e-9)


def test_omitted_coordinates_are_exact_extra_noise():
    prob = cbs.model_problem(PARAMS, 10)
    lam, beta2 = cbs.spectrum(PARAMS)
    assert (lam * beta2).sum() == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    x_tail = rng.standard_normal((100_000, 190)) * np.sqrt(lam[10:])
    tail = x_tail @ np.sqrt(beta2[10:])
    assert tail.var() + 0.01 == pytest.approx(prob["noise_var"], rel=0.02)


def test_torch_sgd_matches_recursion():
    """The experiment's batched SGD, averaged over many seeds, follows the recursion."""
    prob = cbs.model_problem(PARAMS, 8)
    etas = cbs.lr_grid(prob["lam"], 4, {"lr_spacing": 1.0, "n_lr": 2})
    sim = cbs.sgd_risk(prob, 4, etas, 30, list(range(3000)), "cpu", cbs.torch.float64).mean(0)
    theory = cbs.recursion_risk(prob["lam"], prob["beta2"], prob["noise_var"], 4, etas, 30)
    np.testing.assert_allclose(sim, theory, rtol=0.03)


def test_cbs_rule_on_hand_made_curves():
    t = np.arange(200, dtype=float)[:, None]
    # batch 1 reaches 1/(1+D) at D steps; batch 2 is perfectly parallel; batch 4 needs 0.35 D steps
    curves = {1: 1 / (1 + t), 2: 1 / (1 + 2 * t), 4: 1 / (1 + t / 0.35)}
    cbs_values, targets = cbs.critical_batch_sizes(curves, [40, 80])
    assert cbs_values == [2, 2] and targets == pytest.approx([1 / 41, 1 / 81])
    curves[4] = 1 / (1 + t / 0.3)  # B * S = 1.2 D: exactly on the rule's edge, accepted
    assert cbs.critical_batch_sizes(curves, [40])[0] == [4]
    assert cbs.first_hit(np.array([[3.0, 2.0], [1.0, 2.0]]), 0.5) == float("inf")
    assert cbs.first_hit(np.array([[3.0, 2.0], [1.0, 0.4]]), 1.0) == 1.0


def test_slopes_on_hand_made_input():
    assert cbs.loglog_slope([1, 4, 16], [2, 4, 8]) == pytest.approx(0.5)
    table = {"16": {"cbs": [8, 32]}, "64": {"cbs": [8, 16]}}
    assert cbs.model_slope(table, [16, 64], [1]) == pytest.approx(-0.5)  # signed
    assert cbs.model_slope(table, [16, 64], [0]) == 0.0
    assert cbs.model_slope(table, [16, 64], [0, 1]) == pytest.approx(-0.25)


def test_per_seed_tables_and_curve_error():
    sim = {"16": {"cbs_per_seed": [[1, 2], [4, 8]]}}
    assert cbs.seed_tables(sim, 1) == {"16": {"cbs": [4, 8]}}
    theory_curves = {"1": [[1.5, 2.5], [1.25, 2.0]]}  # (P, L), best step size j = 0
    seed_risks = {"1": {"per_seed": [[[1.5, 9.0], [1.25, 9.0]], [[2.5, 9.0], [1.5, 9.0]]]}}
    # noise_var 1: excess theory [1.0, 0.75]; seed 0 exact, seed 1 errors [1.0, 1/3]
    got = cbs.curve_rel_error(theory_curves, seed_risks, 1.0)
    assert got == pytest.approx([0.0, (1.0 + 1 / 3) / 2])


def test_smoke_chain(tmp_path):
    result = steps.run_chain("critical_batch_size_scaling", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
    assert [row["name"] for row in result["controls"]] == [
        "simulated_capacity_limited_depends_on_model_size"
    ]
    assert result["primary"] == "simulated_cbs_grows_with_data"
    n = 2  # smoke seeds: every simulated statistic is per seed
    for row in result["checks"] + result["controls"]:
        if row["statistic"].startswith("sim_"):
            assert row["n"] == n and len(row["per_seed"]) == n, row["name"]
