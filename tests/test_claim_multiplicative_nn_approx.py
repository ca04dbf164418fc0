"""Tests of the multiplicative_nn_approx claim: Yarotsky's ReLU square network against the linear
interpolant of x^2 and brute-force sup errors; the triangle wave against its Fourier series; the
parameter counts against the arrays the networks hold; backpropagation against finite
differences; the product gate's exactness; the verdict on hand-made inputs; the smoke chain."""

import math

import numpy as np
import pytest

from replica import steps
from replica.claims import multiplicative_nn_approx as claim

PARAMS = {
    "data_seed": 3,
    "train_seed": 5,
    "dims": [2, 3],
    "n_terms": 4,
    "bandwidth": 2.0,
    "n_test": 64,
    "depth": 3,
    "mult_widths": [2, 4],
    "batch": 32,
    "steps": 20,
    "lr": 0.01,
    "square_layers_max": 6,
    "product_eps": 1e-3,
}


# ----------------------------------------------------------------------------- theory
def test_hat_is_the_tent_map():
    x = np.linspace(0, 1, 1001)
    assert np.allclose(claim.hat(x), np.where(x < 0.5, 2 * x, 2 * (1 - x)), atol=1e-14)


@pytest.mark.parametrize("m", [0, 1, 2, 3, 5])
def test_relu_square_is_the_linear_interpolant_of_x_squared(m):
    """Yarotsky: f_m interpolates x^2 linearly on the grid of step 2^-m."""
    knots = np.linspace(0, 1, 2**m + 1)
    x = np.random.default_rng(m).uniform(0, 1, 2000)
    assert np.allclose(claim.relu_square(x, m), np.interp(x, knots, knots**2), atol=1e-13)


@pytest.mark.parametrize("m", [1, 2, 4, 6])
def test_sup_error_formula_against_brute_force(m):
    x = np.linspace(0, 1, 2**14 + 1)  # contains every cell midpoint for m < 14
    brute = np.abs(claim.relu_square(x, m) - x**2).max()
    assert brute == pytest.approx(claim.relu_square_sup_error(m), rel=1e-12)
    assert claim.measured_square_error(m, m + 2) == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("eps", [0.3, 0.0625, 1e-3, 1e-6])
def test_relu_layers_for_product_is_the_smallest_sufficient_depth(eps):
    m = claim.relu_layers_for_product(eps)
    brute = next(k for k in range(60) if 4.0 ** -(k + 1) <= eps)
    assert m == brute


def test_product_gate_computes_products_exactly():
    """One multiplicative layer with hand-set branches: h = (x1 + 0)(x2 + 0) = x1 x2."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, 50, 2))
    w = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # branch u = x1, branch v = x2
    params = [w, np.zeros((1, 1, 2)), np.ones((1, 1, 1)), np.zeros((1, 1, 1))]
    out, _, _ = claim.forward(params, x, "multiplicative")
    assert np.array_equal(out[0], x[0, :, 0] * x[0, :, 1])


def test_triangle_wave_matches_its_fourier_series():
    """tri(t) = (8 / pi^2) sum_k cos((2k+1) t) / (2k+1)^2: same period and extrema as cos."""
    t = np.linspace(-7, 7, 301)
    k = np.arange(4000)[:, None]
    series = 8 / np.pi**2 * (np.cos((2 * k + 1) * t) / (2 * k + 1) ** 2).sum(0)
    assert np.allclose(claim.triangle_wave(t), series, atol=1e-3)
    assert claim.triangle_wave(np.array([0.0, np.pi]))[0] == 1.0
    assert claim.triangle_wave(np.array([np.pi]))[0] == -1.0


def test_target_values_against_a_loop():
    rng = np.random.default_rng(1)
    draw = claim.draw_target(rng, 3, 5, 2.0)
    assert np.allclose(np.linalg.norm(draw["omega"], axis=1), 2.0)
    x = rng.uniform(-1, 1, (7, 3))
    for kind, wave in (("bandlimited", math.cos), ("triangle", None)):
        got = claim.target_values(x, draw["omega"], draw["phase"], draw["amplitude"], kind)
        for i, xi in enumerate(x):
            terms = [w @ xi + p for w, p in zip(draw["omega"], draw["phase"], strict=True)]
            if wave is None:
                values = claim.triangle_wave(np.array(terms))
            else:
                values = np.array([wave(t) for t in terms])
            assert got[i] == pytest.approx(float(values @ draw["amplitude"]), abs=1e-12)


def test_target_variance_against_the_closed_form_of_one_cosine():
    """x ~ U[-1, 1]^d, f = a cos(<w, x> + phi): E cos(<w, x> + phi) = cos(phi) prod_j sinc(w_j),
    so Var f = a^2 / 2 (1 + cos(2 phi) prod_j sinc(2 w_j)) - a^2 cos(phi)^2 prod_j sinc(w_j)^2."""
    omega, phase, amplitude = np.array([[1.3, -0.7]]), np.array([0.4]), np.array([1.5])
    x = np.random.default_rng(6).uniform(-1, 1, (1, 400_000, 2))
    data = {"omega_d2": omega[None], "phase_d2": phase[None], "amplitude_d2": amplitude[None]}
    data["x_test_d2"] = x
    sinc = lambda w: np.prod(np.sin(w) / w)  # noqa: E731
    mean = amplitude[0] * np.cos(phase[0]) * sinc(omega[0])
    second = amplitude[0] ** 2 / 2 * (1 + np.cos(2 * phase[0]) * sinc(2 * omega[0]))
    got = claim.target_variance(data, 2, "bandlimited")[0]
    assert got == pytest.approx(second - mean**2, rel=1e-2)


@pytest.mark.parametrize("arch", claim.ARCHITECTURES)
@pytest.mark.parametrize("dim,width,depth", [(2, 4, 3), (4, 7, 2)])
def test_parameter_count_matches_the_arrays(arch, dim, width, depth):
    params = claim.init_network(np.random.default_rng(0), 1, arch, dim, width, depth)
    assert claim.parameter_count(arch, dim, width, depth) == sum(p[0].size for p in params)


@pytest.mark.parametrize("dim,width", [(2, 4), (2, 16), (4, 8), (8, 32)])
def test_matched_relu_width_is_the_smallest_at_least_the_budget(dim, width):
    budget = claim.parameter_count("multiplicative", dim, width, 3)
    relu = claim.matched_relu_width(dim, width, 3)
    assert claim.parameter_count("relu", dim, relu, 3) >= budget
    assert claim.parameter_count("relu", dim, relu - 1, 3) < budget


@pytest.mark.parametrize("arch", claim.ARCHITECTURES)
def test_gradients_against_finite_differences(arch):
    rng = np.random.default_rng(2)
    params = claim.init_network(rng, 2, arch, 3, 4, 3)
    for bias in params[1::2]:  # off zero: a ReLU layer fed an all-zero row sits on its kink
        bias += 0.1 * rng.standard_normal(bias.shape)
    x = rng.uniform(-1, 1, (2, 16, 3))
    y = rng.standard_normal((2, 16))
    _, grads = claim.loss_and_gradients(params, x, y, arch)
    step = 1e-6
    for p, g in zip(params, grads, strict=True):
        for index in [(0,) + tuple(rng.integers(0, s) for s in p.shape[1:]) for _ in range(3)]:
            saved = p[index]
            p[index] = saved + step
            up = claim.loss_and_gradients(params, x, y, arch)[0][0]
            p[index] = saved - step
            down = claim.loss_and_gradients(params, x, y, arch)[0][0]
            p[index] = saved
            assert g[index] == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-8)


def test_adam_fits_a_product_with_a_product_gate():
    """Training sanity: a one-layer multiplicative net learns x1 x2 far below its variance."""
    rng = np.random.default_rng(4)
    params = claim.init_network(rng, 1, "multiplicative", 2, 2, 1)

    def sample(step):
        x = np.random.default_rng([9, step]).uniform(-1, 1, (1, 128, 2))
        return x, x[..., 0] * x[..., 1]

    loss = claim.adam_train([(params, "multiplicative")], sample, 1500, 0.02)[0]
    assert loss[0] < 1e-3 * (1 / 9)  # Var(x1 x2) = 1/9


# ----------------------------------------------------------------------------- chain pieces
def test_generate_and_theory_shapes():
    data = claim.generate(PARAMS, [0, 1])
    assert data["omega_d3"].shape == (2, 4, 3)
    assert data["x_test_d2"].shape == (2, 64, 2)
    th = claim.theory(data, PARAMS)
    assert th["square_error_measured"] == th["square_error_formula"]
    assert th["relu_layers_per_product"] == 4
    budgets = th["budgets"]["d2"]
    assert all(r >= m for r, m in zip(budgets["relu_params"], budgets["mult_params"], strict=True))


def test_verdict_on_hand_made_metrics():
    """Two dimensions, two seeds, two budgets with known ratios."""
    mult = np.array([[1e-2, 1e-3], [1e-2, 1e-3]])

    def entry(ratio):  # log10 ratios (S, budgets)
        return {
            "mse_multiplicative": mult.tolist(),
            "mse_relu": (mult * 10 ** np.asarray(ratio)).tolist(),
            "log_mse_ratio": ratio,
        }

    metrics = {
        "dims": [2, 4],
        "targets": {
            "bandlimited": {
                "d2": entry([[0.2, 0.4], [0.1, 0.3]]),
                "d4": entry([[0.5, 0.9], [0.3, 0.7]]),
            },
            "triangle": {"d2": entry([[-1.0, -1.0], [0.0, 0.0]]), "d4": entry([[0.0, 0.0]] * 2)},
        },
    }
    theory = {
        "square_error_formula": [0.25, 0.0625],
        "square_error_measured": [0.25, 0.0625],
        "relu_layers_per_product": 4,
    }
    stats = claim.verdict(metrics, theory, PARAMS)
    assert stats["log_mse_ratio_smooth"] == pytest.approx([0.5, 0.35])
    assert stats["log_mse_ratio_smooth_min"] == pytest.approx([0.2, 0.1])
    assert stats["log_mse_ratio_growth_dim"] == pytest.approx([0.4, 0.3])
    assert stats["log_mse_ratio_growth_budget"] == pytest.approx([0.3, 0.3])
    assert stats["log_mse_ratio_kinked"] == pytest.approx([-0.5, 0.0])
    assert stats["mult_fit_largest_budget"] == pytest.approx([1e-3, 1e-3])
    assert stats["square_error_law_deviation"] == 0.0


def test_smoke_chain(tmp_path):
    result = steps.run_chain("multiplicative_nn_approx", "smoke", tmp_path)
    assert result["status"] != "error", result.get("reason")
    assert len(result["checks"]) == 4 and len(result["controls"]) == 1
