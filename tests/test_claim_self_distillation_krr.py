"""Tests of the self_distillation_krr claim: the closed-form iterates against direct solves, the
authors' recursion and brute-force limits; the effective-ridge fit against scipy; the network's
tangent kernel and gradients against finite differences; the measurements on hand-made inputs."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from replica import steps
from replica.blocks.kernel_ridge import SpectralRidge, relu_kernels
from replica.claims import self_distillation_krr as claim

PARAMS = {
    "data_seed": 7,
    "n_train": 10,
    "n_test": 6,
    "noise": 0.5,
    "ridge": 0.3,
    "alphas": [0.0, 0.25, 0.5],
    "rounds": 4,
    "gd_steps": 20,
    "lr_factor": 1.5,
    "widths": {"wide": 64, "narrow": 8},
}


@pytest.fixture(scope="module")
def data():
    return claim.generate(PARAMS, [0, 1])


def rbf_problem(n=12, seed=3):
    """An RBF-kernel regression problem (the paper's toy setting) with a cross kernel."""
    rng = np.random.default_rng(seed)
    x, x_test = rng.uniform(0, 1, n), np.linspace(0, 1, 5)
    gram = np.exp(-8 * (x[:, None] - x[None, :]) ** 2)
    cross = np.exp(-8 * (x_test[:, None] - x[None, :]) ** 2)
    y = np.sin(2 * np.pi * x) + 0.3 * rng.standard_normal(n)
    return gram, cross, y


# ----------------------------------------------------------------------------- theory
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_iterates_match_direct_solves_each_round(alpha):
    gram, cross, y = rbf_problem()
    ridge = 0.05
    train, test = claim.distillation_iterates(SpectralRidge(gram), cross, y, ridge, alpha, 5)
    target = y
    for t in range(5):
        coef = np.linalg.solve(gram + ridge * np.eye(len(y)), target)
        assert np.allclose(train[t], gram @ coef, atol=1e-10)
        assert np.allclose(test[t], cross @ coef, atol=1e-10)
        target = alpha * y + (1 - alpha) * gram @ coef


def test_iterates_follow_the_authors_recursion():
    """In the eigenbasis: B_1 = A = D (D + lambda)^{-1}, B_t = A ((1 - alpha) B_{t-1} + alpha I)."""
    gram, cross, y = rbf_problem()
    ridge, alpha = 0.05, 0.4
    d, vec = np.linalg.eigh(gram)
    a = np.diag(d / (d + ridge))
    b = a.copy()
    train, _ = claim.distillation_iterates(SpectralRidge(gram), cross, y, ridge, alpha, 6)
    for t in range(6):
        assert np.allclose(train[t], vec @ b @ vec.T @ y, atol=1e-10)
        b = a @ ((1 - alpha) * b + alpha * np.eye(len(y)))


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8])
def test_iterates_converge_to_ridge_lambda_over_alpha(alpha):
    gram, cross, y = rbf_problem()
    ridge = 0.05
    train, test = claim.distillation_iterates(SpectralRidge(gram), cross, y, ridge, alpha, 400)
    limit = np.linalg.solve(gram + claim.limit_ridge(ridge, alpha) * np.eye(len(y)), y)
    assert np.allclose(train[-1], gram @ limit, atol=1e-9)
    assert np.allclose(test[-1], cross @ limit, atol=1e-9)
    # the authors' form alpha k (alpha K + lambda I)^{-1} y is the same function
    other = alpha * cross @ np.linalg.solve(alpha * gram + ridge * np.eye(len(y)), y)
    assert np.allclose(test[-1], other, atol=1e-9)


def test_pure_self_distillation_is_a_power_of_the_smoother():
    gram, cross, y = rbf_problem()
    ridge = 0.05
    train, _ = claim.distillation_iterates(SpectralRidge(gram), cross, y, ridge, 0.0, 7)
    smoother = gram @ np.linalg.inv(gram + ridge * np.eye(len(y)))
    assert np.allclose(train[-1], np.linalg.matrix_power(smoother, 7) @ y, atol=1e-9)


def test_effective_ridge_recovers_a_known_ridge_and_matches_scipy():
    gram, _, y = rbf_problem()
    fit = SpectralRidge(gram[None])
    ridge = 0.05
    outputs = np.stack([fit.fitted(y[None], r)[0] for r in (0.05, 0.2, 1.7)])
    amp = claim.effective_ridge(fit, y[None], outputs[None], ridge)
    assert amp[0] == pytest.approx([1.0, 4.0, 34.0], rel=1e-6)
    # a noisy output: the vectorised golden section finds scipy's bounded minimiser
    rng = np.random.default_rng(0)
    noisy = outputs[1] + 0.05 * rng.standard_normal(len(y))
    amp = claim.effective_ridge(fit, y[None], noisy[None], ridge)[0]
    d, vec = np.linalg.eigh(gram)

    def misfit(log_r):
        return np.sum((vec.T @ noisy - d / (d + np.exp(log_r)) * (vec.T @ y)) ** 2)

    lo, hi = np.log(ridge * 1e-2), np.log(ridge * 1e4)
    best = minimize_scalar(misfit, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9})
    assert amp == pytest.approx(np.exp(best.x) / ridge, rel=1e-5)


# ----------------------------------------------------------------------------- network
def test_antisymmetric_init_gives_zero_output_and_shares_the_kernel(data):
    z = claim.points(data)
    for arm in PARAMS["widths"]:
        f0 = claim.network(data[f"w_{arm}"], data[f"v_{arm}"], z)
        assert np.abs(f0).max() < 1e-12
        assert data[f"kernel_{arm}"].shape == (2, 16, 16)


def test_empirical_ntk_matches_finite_difference_jacobian():
    rng = np.random.default_rng(1)
    w, v = claim.init_weights(rng, 6)
    w, v = w + 0.1 * rng.standard_normal(w.shape), v + 0.1 * rng.standard_normal(v.shape)
    z = claim.circle(rng.uniform(0, 2 * np.pi, 5))
    theta = np.concatenate([w.ravel(), v])
    h, jac = 1e-6, []
    for i in range(len(theta)):
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        f_up = claim.network(up[: w.size].reshape(w.shape), up[w.size :], z)
        f_down = claim.network(down[: w.size].reshape(w.shape), down[w.size :], z)
        jac.append((f_up - f_down) / (2 * h))
    jac = np.array(jac).T  # (points, params)
    assert np.allclose(claim.empirical_ntk(w, v, z), jac @ jac.T, atol=1e-7)


def test_empirical_ntk_approaches_the_analytic_kernel_at_large_width():
    rng = np.random.default_rng(2)
    w, v = claim.init_weights(rng, 200_000)
    z = claim.circle(np.linspace(0, 2 * np.pi, 7, endpoint=False))
    _, analytic = relu_kernels(z, z, hidden_layers=1)
    assert np.abs(claim.empirical_ntk(w, v, z) - analytic).max() < 0.02


def test_gradients_match_finite_differences_of_the_loss():
    rng = np.random.default_rng(3)
    w0, v0 = claim.init_weights(rng, 8)
    w, v = w0 + 0.2 * rng.standard_normal(w0.shape), v0 + 0.2 * rng.standard_normal(v0.shape)
    z = claim.circle(rng.uniform(0, 2 * np.pi, 4))
    target, ridge = rng.standard_normal(4), 0.3

    def loss(w_, v_):
        f = claim.network(w_, v_, z)
        return 0.5 * np.sum((f - target) ** 2) + ridge / 2 * (
            np.sum((w_ - w0) ** 2) + np.sum((v_ - v0) ** 2)
        )

    gw, gv = claim.gradients(w[None], v[None], w0[None], v0[None], z[None], target[None], ridge)
    h = 1e-6
    for idx in [(0, 0), (1, 3), (0, 7)]:
        up, down = w.copy(), w.copy()
        up[idx] += h
        down[idx] -= h
        assert gw[0][idx] == pytest.approx((loss(up, v) - loss(down, v)) / (2 * h), abs=1e-7)
    for j in (0, 5):
        up, down = v.copy(), v.copy()
        up[j] += h
        down[j] -= h
        assert gv[0][j] == pytest.approx((loss(w, up) - loss(w, down)) / (2 * h), abs=1e-7)


def test_a_wide_round_of_gd_lands_on_kernel_ridge_regression():
    """Linearised regime: GD on the ridge-penalised loss from theta_0 gives KRR with the
    tangent kernel at init (within the finite-width error)."""
    rng = np.random.default_rng(4)
    w0, v0 = claim.init_weights(rng, 8192)
    z = claim.circle(rng.uniform(0, 2 * np.pi, 6))
    y, ridge = np.sin(2 * np.arctan2(z[:, 1], z[:, 0])), 0.3
    kernel = claim.empirical_ntk(w0, v0, z)
    lr = np.array([1.5 / (np.linalg.eigvalsh(kernel)[-1] + ridge)])
    w, v, g0, g1 = claim.train_round(w0[None], v0[None], z[None], y[None], ridge, lr, 400)
    krr = kernel @ np.linalg.solve(kernel + ridge * np.eye(6), y)
    f = claim.network(w, v, z[None])[0]
    assert np.linalg.norm(f - krr) / np.linalg.norm(krr) < 0.02
    # ReLU kinks leave GD with a fixed step a small gradient floor (masks flip near zero)
    assert g1[0] < 0.05 * g0[0]


# ----------------------------------------------------------------------------- measure / verdict
def test_relative_distance_and_closed_form_errors_on_hand_made_inputs():
    closed = np.ones((2, 1, 3, 4))  # (alphas, seeds, rounds, points)
    net = closed.copy()
    net[1, 0, 2] *= 1.1  # 10 % off at the last round of the second alpha
    dist = claim.relative_distance(net, net, closed, closed)
    assert dist[1, 0, 2] == pytest.approx(0.1)
    arm_net = {"f_train": net, "f_test": net}
    arm_closed = {"f_train": closed, "f_test": closed}
    errors = claim.closed_form_errors(arm_net, arm_closed, [0.25, 0.5])
    assert errors == pytest.approx([0.1])
    with pytest.raises(ValueError):
        claim.alpha_index([0.0, 0.5], 0.25)


def test_verdict_on_hand_made_metrics():
    rounds, seeds = 4, 2
    amp = np.ones((3, seeds, rounds))
    amp[0] = [[1.0, 2.0, 3.0, 5.0], [1.0, 2.5, 4.0, 5.0]]  # alpha = 0: growth 5/2 and 5/2.5
    amp[1, :, -1] = [3.9, 4.1]
    amp[2, :, -1] = [2.0, 2.2]
    zeros = np.zeros((3, seeds, rounds, 2))
    arm = {"f_train": zeros + 1, "f_test": zeros + 1, "amplification": amp}
    wide = {**arm, "gradient_reduction": np.full((3, seeds, rounds), 0.01)}
    narrow = {**arm, "f_train": zeros + 1.2, "f_test": zeros + 1.2}
    metrics = {
        "alphas": [0.0, 0.25, 0.5],
        "rounds": rounds,
        "arms": {"wide": wide, "narrow": narrow},
    }
    theory_arm = {"f_train": zeros + 1, "f_test": zeros + 1, "amplification": amp}
    theory = {
        "arms": {"wide": theory_arm, "narrow": theory_arm},
        "init_kernel_deviation": [0.1, 0.2],
    }
    st = claim.verdict(metrics, theory, PARAMS)
    assert st["amplification_alpha_0p5"] == [2.0, 2.2]
    assert st["amplification_alpha_0p25"] == [3.9, 4.1]
    assert st["amplification_paper_alpha_0p5"] == 2.0
    assert st["amplification_paper_alpha_0p25"] == 4.0
    assert st["amplification_growth_alpha_0"] == pytest.approx([2.5, 2.0])
    assert st["closed_form_error"] == [0.0, 0.0]
    assert st["closed_form_error_narrow"] == pytest.approx([0.2, 0.2])
    assert st["gradient_reduction"] == [0.01, 0.01]
    assert st["init_kernel_deviation"] == [0.1, 0.2]


def test_theory_and_train_shapes_on_the_smoke_settings(data):
    th = claim.theory(data, PARAMS)
    arm = th["arms"]["wide"]
    assert arm["f_train"].shape == (3, 2, 4, 10)
    assert arm["f_test"].shape == (3, 2, 4, 6)
    assert np.isnan(arm["limit_test_mse"][0]).all()  # no limit without ground truth
    run = claim.train(data, {"arm": "narrow"}, PARAMS, [0, 1], "cpu")
    assert run["f_train"].shape == (3, 2, 4, 10)
    assert run["grad_end"].shape == (3, 2, 4)


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("self_distillation_krr", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
