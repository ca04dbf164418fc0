"""Tests of the topk_moe_rates claim: the Hellinger quadrature against the closed-form Gaussian
case, against Monte Carlo and against scipy's adaptive quadrature; the top-K gate; the sampler;
the exact top-1 fitter against brute force; the paper's top-K condition against an enumeration
of Voronoi cell structures; the top-1 Hellinger floor against scipy quadrature and optimisation;
the measurements and the verdict on hand-made inputs; and the smoke chain."""

import itertools

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from replica import steps
from replica.claims import topk_moe_rates as claim

PARAMS = {
    "true_gate_slope": [3.0, -3.0],
    "true_gate_bias": [0.0, 0.0],
    "true_a": [1.0, -1.0],
    "true_b": [0.5, -0.5],
    "true_variance": 0.1,
    "true_top_k": 1,
    "over_true_gate_slope": [3.0, -3.0],
    "over_true_gate_bias": [0.0, 0.0],
    "over_true_top_k": 2,
    "settings": {
        "exact": {"experts": 2, "top_k": 1, "truth": "exact"},
        "over_valid": {"experts": 3, "top_k": 3, "truth": "over"},
        "over_small": {"experts": 3, "top_k": 1, "truth": "over"},
    },
    "floor_quad_x": 64,
    "quad_x": 400,
    "quad_y": 800,
    "y_range": [-6.0, 7.0],
    "variance_floor": 0.005,
    "min_segment": 3,
    "coordinate_sweeps": 4,
}


def single_expert(mean, var):
    """A one-expert 'MoE' with constant conditional density N(mean, var)."""
    return {
        "beta1": np.zeros(1),
        "beta0": np.zeros(1),
        "a": np.zeros(1),
        "b": np.array([mean]),
        "nu": np.array([var]),
        "top_k": 1,
    }


@pytest.mark.parametrize(("m1", "v1", "m2", "v2"), [(0.0, 0.1, 0.3, 0.1), (0.2, 0.05, -0.4, 0.3)])
def test_hellinger_matches_the_gaussian_closed_form(m1, v1, m2, v2):
    h = claim.hellinger(single_expert(m1, v1), single_expert(m2, v2), PARAMS)
    # independent closed form via the Bhattacharyya coefficient of two normals
    s1, s2 = np.sqrt(v1), np.sqrt(v2)
    bc = np.sqrt(2 * s1 * s2 / (v1 + v2)) * np.exp(-((m1 - m2) ** 2) / (4 * (v1 + v2)))
    assert h == pytest.approx(np.sqrt(1 - bc), rel=1e-6)
    assert claim.gaussian_hellinger(m1, v1, m2, v2) == pytest.approx(np.sqrt(1 - bc), rel=1e-12)


def pointwise_density(moe, x, y):
    """p(y_i | x_i) for paired samples (not on a grid): independent of conditional_density."""
    w = claim.top_k_weights(np.outer(x, moe["beta1"]) + moe["beta0"], int(moe["top_k"]))
    mean = np.outer(x, moe["a"]) + moe["b"]
    return (w * stats.norm.pdf(y[:, None], mean, np.sqrt(moe["nu"]))).sum(1)


def test_hellinger_matches_monte_carlo_for_a_top2_model():
    truth = claim.true_moe(PARAMS)
    fit = {
        "beta1": np.array([-1.0, 0.0, 1.0]),
        "beta0": np.array([-0.1, 0.0, -0.2]),
        "a": np.array([-0.9, 0.3, 1.1]),
        "b": np.array([-0.4, 0.1, 0.45]),
        "nu": np.array([0.12, 0.2, 0.09]),
        "top_k": 2,
    }
    h = claim.hellinger(fit, truth, PARAMS)
    # Monte Carlo over the true joint law: h^2 = E_{p*}[1 - sqrt(p_fit / p*)]
    x, y = claim.sample(truth, 400_000, np.random.default_rng(3))
    mc = 1 - np.sqrt(pointwise_density(fit, x, y) / pointwise_density(truth, x, y))
    assert h**2 == pytest.approx(mc.mean(), abs=4 * mc.std() / np.sqrt(len(mc)))


@pytest.mark.parametrize("shift", [0.01, 1e-4])
def test_hellinger_of_a_moved_gate_boundary_matches_scipy(shift):
    """Truth with its top-1 boundary moved to x = shift: only x in (0, shift) differs, where the
    wrong expert is picked; h^2 = 1/2 int_0^shift (1 - BC(N(x+.5, .1), N(-x-.5, .1))) dx."""
    truth = claim.true_moe(PARAMS)
    moved = {**truth, "beta0": np.array([-3.0 * shift, 3.0 * shift])}
    h = claim.hellinger(moved, truth, PARAMS)
    bc = lambda x: np.exp(-((2 * x + 1) ** 2) / (8 * 0.1))  # noqa: E731 - equal variances
    h2 = 0.5 * integrate.quad(lambda x: 1 - bc(x), 0, shift)[0]
    assert h == pytest.approx(np.sqrt(h2), rel=1e-6)


def test_top_k_weights_and_sampler():
    logits = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    w = claim.top_k_weights(logits, 2)
    assert w[0, 0] == 0 and w[1, 1] == 0
    assert w[0, 1] == pytest.approx(1 / (1 + np.exp(-1)))
    assert np.allclose(w.sum(1), 1)
    assert np.allclose(claim.top_k_weights(logits, 1), [[0, 1, 0], [0, 0, 1]])
    truth = claim.true_moe(PARAMS)
    x, y = claim.sample(truth, 100_000, np.random.default_rng(0))
    right = x > 0
    resid = np.where(right, y - (x + 0.5), y - (-x - 0.5))
    assert stats.kstest(resid / np.sqrt(0.1), "norm").pvalue > 1e-3
    assert stats.kstest((x + 1) / 2, "uniform").pvalue > 1e-3


def brute_force_top1(x, y, experts, m_min, floor):
    """Every contiguous partition into `experts` segments, one np.polyfit line each."""
    order = np.argsort(x)
    xs, ys = x[order], y[order]
    n = len(xs)

    def nll(lo, hi):
        a, b = np.polyfit(xs[lo:hi], ys[lo:hi], 1)
        sse = ((ys[lo:hi] - a * xs[lo:hi] - b) ** 2).sum()
        nu = max(sse / (hi - lo), floor)
        return 0.5 * (hi - lo) * np.log(2 * np.pi * nu) + sse / (2 * nu)

    best = np.inf
    if experts == 2:
        for i in range(m_min, n - m_min + 1):
            best = min(best, nll(0, i) + nll(i, n))
    else:
        for i in range(m_min, n - 2 * m_min + 1):
            for j in range(i + m_min, n - m_min + 1):
                best = min(best, nll(0, i) + nll(i, j) + nll(j, n))
    return best


def fitted_nll(fit, x, y):
    return -np.log(np.diag(claim.conditional_density(fit, x, y))).sum()


@pytest.mark.parametrize("experts", [2, 3])
def test_top1_scan_reaches_the_brute_force_mle(experts):
    truth = claim.true_moe(PARAMS)
    x, y = claim.sample(truth, 60, np.random.default_rng(5))
    fit = claim.fit_top1(x, y, experts, PARAMS)
    brute = brute_force_top1(x, y, experts, 3, 0.005)
    assert fitted_nll(fit, x, y) == pytest.approx(brute, rel=1e-6, abs=1e-6)


def test_parameter_error_and_slopes_on_hand_made_inputs():
    truth = claim.true_moe(PARAMS)
    fit = {
        "beta1": np.array([-1.0, 1.0]),
        "beta0": np.array([0.0, 0.0]),
        "a": np.array([-1.1, 1.0]),
        "b": np.array([-0.5, 0.55]),
        "nu": np.array([0.1, 0.13]),
        "top_k": 1,
    }  # expert 0 holds x < 0 (true expert 2), expert 1 holds x > 0 (true expert 1)
    assert claim.parameter_error(fit, truth, by_region=True) == pytest.approx(0.1)
    assert claim.parameter_error(fit, truth, by_region=False) == pytest.approx(0.1)
    slope = claim.log_corrected_slope([500, 8000])
    expected = 0.5 * np.log(np.log(8000) / 8000 / (np.log(500) / 500)) / np.log(16)
    assert slope == pytest.approx(expected)


def test_verdict_on_hand_made_metrics():
    ns = [100, 400]
    metrics = {
        "sample_sizes": ns,
        "exact": {"hellinger": [[0.2, 0.4], [0.1, 0.2]], "parameter_error": [[1, 1], [0.5, 0.5]]},
        "over_valid": {"hellinger": [[0.2, 0.2], [0.1, 0.05]], "parameter_error": [[1, 1], [1, 1]]},
        "over_small": {"hellinger": [[0.3, 0.3], [0.3, 0.3]], "parameter_error": [[1, 1], [1, 1]]},
    }
    theory = {"density_exponent_theory": -0.5, "density_exponent_with_log": -0.45}
    st = claim.verdict(metrics, {**theory, "top1_hellinger_floor": 0.1}, {})
    assert st["hellinger_exponent_exact"] == pytest.approx([-0.5, -0.5])
    assert st["hellinger_exponent_over_valid"] == pytest.approx([-0.5, -1.0])
    assert st["parameter_exponent_over_valid"] == pytest.approx([0.0, 0.0])
    assert st["hellinger_exponent_over_small"] == pytest.approx([0.0, 0.0])
    assert st["hellinger_ratio_small_over_valid"] == pytest.approx([3.0, 6.0])
    assert st["hellinger_small_over_floor"] == pytest.approx([3.0, 3.0])
    assert st["density_exponent_theory"] == -0.5


def brute_force_required_top_k(moe, experts, grid=20001):
    """Selected sets from a dense x grid; every surjective map of fitted atoms onto true atoms
    (a Voronoi cell structure); the largest total cell size of a selected set, over maps."""
    x = np.linspace(-1, 1, grid)
    logits = np.outer(x, moe["beta1"]) + moe["beta0"]
    top = np.argsort(-logits, axis=1)[:, : int(moe["top_k"])]
    sets = {frozenset(int(i) for i in row) for row in top}
    k_star = len(moe["a"])
    best, least = 0, np.inf
    for cells in itertools.product(range(k_star), repeat=experts):
        if len(set(cells)) < k_star:
            continue
        sizes = np.bincount(cells, minlength=k_star)
        need = max(sum(sizes[j] for j in s) for s in sets)
        best, least = max(best, need), min(least, need)
    return best, least


def test_required_top_k_matches_an_enumeration_of_voronoi_cells():
    exact, over = claim.true_moe(PARAMS), claim.true_moe(PARAMS, "over")
    three = {  # three experts, top-2, with three different selected pairs on [-1, 1]
        "beta1": np.array([3.0, 0.0, -3.0]),
        "beta0": np.array([0.0, 1.0, 0.0]),
        "a": np.zeros(3),
        "b": np.arange(3.0),
        "nu": np.ones(3),
        "top_k": 2,
    }
    for moe, experts in [(exact, 3), (exact, 4), (over, 3), (over, 4), (three, 4), (three, 5)]:
        best, least = brute_force_required_top_k(moe, experts)
        assert claim.required_top_k(moe, experts) == best
        assert least >= moe["top_k"]  # K below the true K* breaks the condition for any cells
    assert claim.selected_sets(over) == [(0, 1)]
    assert claim.selected_sets(three) == [(0, 1), (1, 2)]
    assert claim.required_top_k(over, 3) == 3 and claim.required_top_k(exact, 3) == 2


def scipy_floor_at(moe, x0):
    """min over (m, log v) of 1 - BC(N(m, v), p*(.|x0)): BC by Simpson's rule on its own y grid,
    a coarse grid start, then Powell; independent of the module's grid, trapezoid and
    Nelder-Mead."""
    yy = np.linspace(-8, 9, 4001)
    dens = claim.conditional_density(moe, np.array([x0]), yy)[0]

    def gap(t):
        f = np.sqrt(stats.norm.pdf(yy, t[0], np.exp(t[1] / 2)) * dens)
        return 1 - integrate.simpson(f, x=yy)

    grid = [(m, s) for m in np.linspace(-2, 2, 41) for s in np.log([0.03, 0.1, 0.3, 1.0, 3.0])]
    start = min(grid, key=gap)
    opts = {"xtol": 1e-8, "ftol": 1e-13}
    return optimize.minimize(gap, start, method="Powell", options=opts).fun


def test_top1_floor_matches_scipy_on_an_x_constant_mixture():
    """Gates and experts constant in x: the floor is one per-x minimum, checked with scipy."""
    const = {
        "beta1": np.zeros(2),
        "beta0": np.array([0.3, -0.2]),
        "a": np.zeros(2),
        "b": np.array([0.6, -0.7]),
        "nu": np.array([0.1, 0.15]),
        "top_k": 2,
    }
    floor = claim.top1_hellinger_floor(const, PARAMS)
    assert floor**2 == pytest.approx(scipy_floor_at(const, 0.0), rel=1e-5)


def test_top1_floor_of_the_over_truth_against_scipy_and_a_top1_fit():
    over = claim.true_moe(PARAMS, "over")
    xs = np.array([-0.9, -0.5, -0.1, 0.1, 0.25, 0.3, 0.6, 0.95])  # around the peak near 0.25
    gaps = claim.top1_gaps(over, xs, PARAMS)
    expected = [scipy_floor_at(over, x0) for x0 in xs]
    assert gaps == pytest.approx(expected, rel=1e-4, abs=1e-8)
    floor = claim.top1_hellinger_floor(over, PARAMS)
    # E_X of the same gaps by an independent x rule (composite Simpson, 401 nodes, kink-tolerant)
    xx = np.linspace(-1, 1, 401)
    ref = integrate.simpson(claim.top1_gaps(over, xx, PARAMS), x=xx) / 2
    assert floor**2 == pytest.approx(ref, rel=1e-3)
    # any top-1 model is at least that far: the exact top-1 MLE on a large sample, and the truth
    # with its top-2 gate replaced by top-1
    x, y = claim.sample(over, 20_000, np.random.default_rng(1))
    fit = claim.fit_top1(x, y, 3, PARAMS)
    assert claim.hellinger(fit, over, PARAMS) >= floor
    assert claim.hellinger({**over, "top_k": 1}, over, PARAMS) >= floor
    # and a mixture of two identical experts has no floor
    same = {**over, "a": np.array([1.0, 1.0]), "b": np.array([0.5, 0.5])}
    assert claim.top1_hellinger_floor(same, PARAMS) < 1e-4


def test_over_truth_sampler_mixes_both_experts():
    over = claim.true_moe(PARAMS, "over")
    x, y = claim.sample(over, 200_000, np.random.default_rng(2))
    w1 = 1 / (1 + np.exp(-6 * x))  # top-2 of two experts is the full softmax of (3x, -3x)
    mean = w1 * (x + 0.5) + (1 - w1) * (-x - 0.5)
    var = 0.1 + w1 * (1 - w1) * (2 * x + 1) ** 2
    z = (y - mean) / np.sqrt(var)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.02
    data = claim.generate({**PARAMS, "data_seed": 1, "sample_sizes": [50]}, [0, 1])
    assert data["x__n50"].shape == data["xo__n50"].shape == (2, 50)
    assert not np.allclose(data["x__n50"], data["xo__n50"])


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("topk_moe_rates", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
