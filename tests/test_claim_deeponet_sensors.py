"""deeponet_sensors: the GP Bayes floor and its covariances against quadrature, a brute-force
discretised covariance and Monte Carlo; the Chebyshev class; the m* read-out; the batched nets;
the verdict on hand-made metrics; the smoke chain."""

import numpy as np
import pytest
from scipy import integrate

from replica import steps
from replica.claims import deeponet_sensors as claim

PARAMS = {"n_queries": 20, "chebyshev_degree": 5, "length_scales": [0.1], "n_train": 0}


def trapezoid_weights(grid: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A (len(y), len(grid)) matrix whose rows integrate a function on the grid from 0 to y."""
    h = grid[1] - grid[0]
    w = np.zeros((len(y), len(grid)))
    for j, yj in enumerate(y):
        n = int(round(yj / h))
        w[j, : n + 1] = h
        w[j, [0, n]] = h / 2
    return w


def test_input_target_covariance_matches_quadrature():
    length = 0.07
    for x, y in [(0.3, 0.5), (0.9, 0.2), (0.0, 1.0), (0.5, 0.5)]:
        quad, _ = integrate.quad(lambda t, x=x: np.exp(-((x - t) ** 2) / (2 * length**2)), 0, y)
        exact = claim.rbf_input_target(np.array([x]), np.array([y]), length)[0, 0]
        assert exact == pytest.approx(quad, rel=1e-10, abs=1e-13)


def test_target_covariance_matches_double_quadrature():
    length = 0.15
    for y1, y2 in [(0.4, 0.4), (0.2, 0.9), (1.0, 0.65)]:
        quad, _ = integrate.dblquad(
            lambda s, t: np.exp(-((s - t) ** 2) / (2 * length**2)), 0, y1, 0, y2
        )
        exact = claim.rbf_target_target(np.array([y1, y2]), length)[0, 1]
        assert exact == pytest.approx(quad, rel=1e-8)


def test_bayes_floor_matches_a_brute_force_discretised_covariance():
    """Condition a discretisation of the GRF (2401 points: every sensor and query on the grid)
    with G by the trapezoid rule."""
    grid = np.linspace(0, 1, 2401)
    y = claim.query_points(20)
    w = trapezoid_weights(grid, y)
    for length, m in [(0.1, 6), (0.05, 13), (0.2, 4)]:
        k = claim.rbf(grid, grid, length)
        idx = np.abs(grid[:, None] - claim.sensor_points(m)[None]).argmin(0)
        k_ss, k_sg, k_gg = k[np.ix_(idx, idx)], (k @ w.T)[idx], w @ k @ w.T
        cond = np.diag(k_gg) - np.einsum("sj,sj->j", k_sg, np.linalg.solve(k_ss, k_sg))
        brute = cond.mean() / np.diag(k_gg).mean()
        assert claim.bayes_floor("grf", m, length, PARAMS) == pytest.approx(brute, rel=2e-3)


def test_bayes_floor_matches_monte_carlo_of_gp_samples():
    """Kriging on GRF paths drawn on a fine grid (G by the trapezoid rule): its mean squared
    error is the floor, up to Monte Carlo error."""
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 801)
    y = claim.query_points(20)
    length, m = 0.1, 6
    paths = claim.sample_gaussian(claim.rbf(grid, grid, length), 20000, rng)
    targets = paths @ trapezoid_weights(grid, y).T
    idx = np.abs(grid[:, None] - claim.sensor_points(m)[None]).argmin(0)
    weights, _ = claim.gaussian_conditional(*claim.grf_blocks(grid[idx], y, length))
    mse = ((paths[:, idx] @ weights - targets) ** 2).mean()
    floor = claim.bayes_floor("grf", m, length, PARAMS) * claim.prior_variance(y, length)
    assert mse == pytest.approx(floor, rel=0.03)


def test_floor_falls_with_sensors_and_rises_with_roughness():
    f = [claim.bayes_floor("grf", m, 0.1, PARAMS) for m in (3, 6, 12)]
    assert f[0] > f[1] > f[2] > 0
    assert claim.bayes_floor("grf", 6, 0.05, PARAMS) > claim.bayes_floor("grf", 6, 0.2, PARAMS)
    # one sensor-free limit: with m = 2 sensors at 0 and 1 a very rough field is barely seen
    assert claim.bayes_floor("grf", 2, 0.01, PARAMS) > 0.9


def test_chebyshev_class_integrals_amplitude_and_cliff():
    degree, y = 5, claim.query_points(20)
    ints = claim.chebyshev_feature_integrals(y, degree)
    for k in range(degree + 1):
        t_k = np.polynomial.chebyshev.Chebyshev.basis(k)
        quad, _ = integrate.quad(lambda x, t_k=t_k: t_k(2 * x - 1), 0, y[7])
        assert ints[7, k] == pytest.approx(quad, abs=1e-12)
    # the amplitude gives the GRF's target variance
    c = claim.chebyshev_amplitude(degree, y, 0.1)
    _, _, k_gg = claim.chebyshev_blocks(y, y, degree, c)
    assert np.diag(k_gg).mean() == pytest.approx(claim.prior_variance(y, 0.1), rel=1e-12)
    # N + 1 sensors determine a degree-N polynomial: the floor drops to zero there
    assert claim.bayes_floor("chebyshev", degree, 0.1, PARAMS) > 1e-3
    assert claim.bayes_floor("chebyshev", degree + 1, 0.1, PARAMS) < 1e-9


def test_generated_data_have_the_closed_form_covariance():
    params = {
        **PARAMS,
        "data_seed": 3,
        "length_scales": [0.1],
        "sensors_grf": [4, 6],
        "sensors_chebyshev": [4],
        "n_train": 20000,
        "n_test": 0,
    }
    data = claim.generate(params, [0])
    u, g = data["grf_u__0"], data["grf_g__0"]
    _, k_xg, k_gg = claim.grf_blocks(data["grf_x"], data["y"], 0.1)
    assert np.allclose(u.T @ g / len(u), k_xg, atol=0.03)
    assert np.allclose(g.T @ g / len(g), k_gg, atol=0.03 * k_gg.max())
    cu, cg = data["chebyshev_u__0"], data["chebyshev_g__0"]
    assert cu.shape[1] == len(data["chebyshev_x"]) == 4 and cg.shape[1] == 20


def test_sensors_to_reach_interpolates_and_censors():
    counts = [4, 8, 16]
    rel = np.array([[0.5, 0.05, 0.005], [0.01, 0.001, 0.0], [0.9, 0.5, 0.3]])
    m = claim.sensors_to_reach(counts, rel, 0.05)
    assert m[0] == pytest.approx(8.0)  # exactly at the grid point
    assert m[1:].tolist() == pytest.approx([4.0, 16.0])  # below at the first count; never reached
    m = claim.sensors_to_reach(counts, rel[:1], np.sqrt(0.05 * 0.005))
    assert m[0] == pytest.approx(np.sqrt(8 * 16))  # halfway in log-log
    assert claim.loglog_slope([1, 2, 4], [8.0, 4.0, 2.0]) == pytest.approx(-1.0)
    errors = np.full((2, 3, 3), 0.001)
    errors[1, 0] = 0.5  # seed 1 never reaches eps at the first length scale
    exps = claim.censored_exponent([1, 2, 4], np.array([[8.0, 4, 2]] * 2), errors, 0.05, -7.0)
    assert exps.tolist() == pytest.approx([-1.0, -7.0])


def test_padded_inputs_do_not_change_a_net():
    torch = pytest.importorskip("torch")
    wide = claim.init_deeponets([3], 7, 8, [5])
    narrow = [w.clone() for w in wide]
    narrow[0] = wide[0][:, :3]
    u = torch.randn(1, 4, 3, dtype=torch.float64)
    y = torch.linspace(0.1, 1, 5, dtype=torch.float64)[:, None]
    padded = torch.nn.functional.pad(u, (0, 4))
    assert torch.allclose(claim.deeponet(wide, padded, y), claim.deeponet(narrow, u, y))
    assert (wide[0][0, 3:] == 0).all()
    # a seed's init does not depend on the other seeds in the batch
    both = claim.init_deeponets([3], 7, 8, [4, 5])
    assert torch.equal(both[0][1], wide[0][0])


def test_verdict_on_hand_made_metrics():
    lengths, counts = [0.1, 0.2, 0.4], [2, 4, 8, 16]
    # seed 0: m* = 8, 4, 2 (exponent -1); seed 1 never reaches eps at l = 0.1 (censored)
    rel0 = [[0.5, 0.1, 0.01, 0.001], [0.1, 0.01, 0.001, 0.001], [0.01, 0.001, 0.001, 0.001]]
    rel1 = [[0.5, 0.1, 0.05, 0.05], [0.1, 0.01, 0.001, 0.001], [0.01, 0.001, 0.001, 0.001]]
    rel = np.array([rel0, rel1])
    m_star = claim.sensors_to_reach(counts, rel, 0.01)
    cheb_rel = np.array([[[0.2, 0.05, 0.001, 0.001]] * 3] * 2)
    metrics = {
        "length_scales": lengths,
        "grf": {"sensors": counts, "relative_test_mse": rel.tolist(), "m_star": m_star.tolist()},
        "chebyshev": {
            "sensors": counts,
            "relative_test_mse": cheb_rel.tolist(),
            "m_star": claim.sensors_to_reach(counts, cheb_rel, 0.01).tolist(),
        },
    }
    floor = np.array([[0.4, 0.05, 0.005, 1e-4], [0.05, 0.005, 1e-4, 1e-6], [0.005, 1e-4, 0, 0]])
    floor[2, 2:] = 1e-9
    theory = {
        "grf": {
            "floor": floor.tolist(),
            "kriging_test": (floor + 1e-9).tolist(),
            "m_star_floor": [4.0, 2.0, 2.0],
            "floor_exponent": -0.5,
        },
        "sensor_exponent_paper": -1.0,
    }
    st = claim.verdict(metrics, theory, {"eps": 0.01})
    assert st["sensor_exponent"] == pytest.approx([-1.0, 0.0])
    assert st["censored_length_scales"] == [0.0, 1.0]
    # seed 0: max(8/4, 4/2, 2/2) = 2; seed 1 counts 2 x 16 at l = 0.1
    assert st["sensor_ratio_to_floor"] == pytest.approx([2.0, 8.0])
    # sensor-limited points (floor >= 0.01): (0.1, 2), (0.1, 4), (0.2, 2)
    assert st["floor_excess_sensor_limited"] == pytest.approx([2.0, 2.0])
    assert st["chebyshev_sensor_exponent"] == pytest.approx([0.0, 0.0])
    assert st["floor_sensor_exponent"] == -0.5 and st["sensor_exponent_paper"] == -1.0
    assert st["net_over_kriging_min"] == pytest.approx([1.25, 1.25])


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("deeponet_sensors", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
