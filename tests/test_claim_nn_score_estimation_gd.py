"""nn_score_estimation_gd: the kernel-GD theory against brute force, the network's hand-written
gradients and tangent kernel against autograd and the analytic limit, the measurements on
hand-made curves, the manifest's verdict, and the smoke chain."""

import numpy as np
import pytest
import torch

from replica import registry, steps, verdicts
from replica.blocks.kernel_ridge import relu_kernels
from replica.claims import nn_score_estimation_gd as claim

PARAMS = registry.load_manifest(registry.CLAIMS_DIR / "nn_score_estimation_gd.yaml").scale("smoke")[
    "params"
]


@pytest.fixture(scope="module")
def data():
    return claim.generate(PARAMS, [0, 1])


# ----------------------------------------------------------------------------- data
def test_dsm_labels_average_to_the_true_score():
    """E[-eps / sigma | x] = grad log p_sigma(x): the noisy labels minus the exact score average
    to zero, and their spread is about 1 / sigma per coordinate."""
    params = dict(PARAMS, n_train=20_000)
    d = claim.generate(params, [3])
    noise = d["y_noisy"][0] - d["y_exact"][0]
    assert np.abs(noise.mean(0)).max() < 4 * noise.std(0).max() / np.sqrt(len(noise))
    assert 0.5 / PARAMS["sigma"] < noise.std(0).min() < 1.0 / PARAMS["sigma"]


def test_generate_shapes_and_seeds(data):
    n = PARAMS["n_train"]
    assert data["x_train"].shape == data["y_noisy"].shape == data["y_exact"].shape == (2, n, 2)
    assert data["x_test"].shape == data["score_test"].shape == (PARAMS["n_test"], 2)
    assert not np.allclose(data["x_train"][0], data["x_train"][1])  # a training set per seed
    assert data["checkpoints"][0] == 0 and data["checkpoints"][-1] == PARAMS["steps"]


# ----------------------------------------------------------------------------- theory
def brute_force_kernel_gd(gram, cross, y, lr, steps):
    """Iterate f <- f - (lr / n) K (f - y) on the training set, carrying the test predictions."""
    n = len(gram)
    f, f_test, out = np.zeros_like(y), np.zeros((len(cross), y.shape[1])), {}
    for k in range(max(steps) + 1):
        if k in steps:
            out[k] = f_test.copy()
        step = (lr / n) * (f - y)
        f, f_test = f - gram @ step, f_test - cross @ step
    return np.stack([out[k] for k in steps])


@pytest.mark.parametrize("lr", [0.3, 1.0, 1.9 / 1.5])
def test_kernel_gd_closed_form_matches_the_iteration(data, lr):
    x, y = data["x_train"][0], data["y_noisy"][0]
    gram = claim.ntk_gram(x, x, 1.0)
    cross = claim.ntk_gram(data["x_test"][:50], x, 1.0)
    steps_ = [0, 1, 2, 7, 40, 150]
    closed = claim.kernel_gd_predictions(gram, cross, y, lr, np.array(steps_))
    np.testing.assert_allclose(closed, brute_force_kernel_gd(gram, cross, y, lr, steps_), atol=1e-9)


def test_kernel_gd_gain_limits():
    d = np.array([0.0, 1e-14, 1e-3, 0.7, 1.4])
    k = np.array([0, 1, 5, 1000])
    gain = claim.kernel_gd_gain(d, 1.0, k)
    direct = np.array([[(1 - (1 - di) ** ki) / di if di > 1e-10 else ki for di in d] for ki in k])
    np.testing.assert_allclose(gain, direct, rtol=1e-6)
    # long training interpolates: the gain tends to 1 / d (f -> K K^{-1} y)
    np.testing.assert_allclose(claim.kernel_gd_gain(d[2:], 1.0, [10**6])[0], 1 / d[2:])


def test_kernel_gd_interpolates_the_labels_in_the_long_run(data):
    x, y = data["x_train"][0], data["y_noisy"][0]
    gram = claim.ntk_gram(x, x, 1.0)
    fit = claim.kernel_gd_predictions(gram, gram, y, 1.0, np.array([10**9]))[0]
    np.testing.assert_allclose(fit, y, atol=1e-6)


def test_theory_curves(data):
    th = claim.theory(data, PARAMS)
    assert th["mse_noisy"].shape == th["mse_exact"].shape == (2, len(data["checkpoints"]))
    at_init = ((data["score_test"]) ** 2).sum(1).mean()  # f_0 = 0
    np.testing.assert_allclose(th["mse_noisy"][:, 0], at_init)
    assert np.all(th["lr_times_top_eigenvalue"] < 2)


# ----------------------------------------------------------------------------- the network
def autograd_net(w, a, u):
    """The same net written with autograd on first-layer inputs u: f (S, 2, P)."""
    z = torch.einsum("spk,skm->spm", u, w)
    return torch.einsum("sjm,spm->sjp", a, torch.relu(z)) * np.sqrt(2.0 / w.shape[-1])


def test_antisymmetric_init_starts_at_zero():
    w, a = claim.init_net(16, [0, 1], torch.float64)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.allclose(claim.forward(w, a, x)[0], torch.zeros(2, 2, 5, dtype=torch.float64))


def test_gd_step_matches_autograd():
    torch.manual_seed(0)
    w, a = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 2, 8, dtype=torch.float64)
    x, y = torch.randn(2, 6, 3, dtype=torch.float64), torch.randn(2, 2, 6, dtype=torch.float64)
    wg, ag = w.clone().requires_grad_(), a.clone().requires_grad_()
    loss = 0.5 * ((autograd_net(wg, ag, x) - y) ** 2).sum() / x.shape[1]
    loss.backward()
    f, h = claim.forward(w, a, x)
    claim.gd_step(w, a, x, h, f - y, lr=0.1)
    torch.testing.assert_close(w, wg.detach() - 0.1 * wg.grad)
    torch.testing.assert_close(a, ag.detach() - 0.1 * ag.grad)


def test_empirical_ntk_matches_jacobian_inner_products():
    torch.manual_seed(1)
    w, a = torch.randn(1, 3, 6, dtype=torch.float64), torch.randn(1, 2, 6, dtype=torch.float64)
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda w_, a_: autograd_net(w_, a_, x), (w, a))
    flat = torch.cat([j.reshape(2, 4, -1) for j in jac], dim=-1)  # (out, point, params)
    expected = torch.einsum("jpq,krq->jkpr", flat, flat)
    torch.testing.assert_close(claim.empirical_ntk(w, a, x)[0], expected)


def test_empirical_cross_kernel_matches_jacobians():
    torch.manual_seed(2)
    w, a = torch.randn(1, 3, 6, dtype=torch.float64), torch.randn(1, 2, 6, dtype=torch.float64)
    x, x2 = torch.randn(1, 4, 3, dtype=torch.float64), torch.randn(1, 3, 3, dtype=torch.float64)

    def jacobian(points):
        jac = torch.autograd.functional.jacobian(
            lambda w_, a_: autograd_net(w_, a_, points), (w, a)
        )
        return torch.cat([j.reshape(2, points.shape[1], -1) for j in jac], dim=-1)

    expected = torch.einsum("jpq,krq->jkpr", jacobian(x), jacobian(x2))
    torch.testing.assert_close(claim.empirical_ntk(w, a, x, x2)[0], expected)


def test_trained_net_follows_its_init_kernel_in_the_linear_regime(data):
    """With labels scaled down the weights barely move, so the trained net's test curve is the
    kernel-GD curve of its own tangent kernel at init (the training loop against a closed form)."""
    small = dict(data, y_noisy=1e-4 * data["y_noisy"], score_test=1e-4 * data["score_test"])
    # lr 0.5: at width 32 the init kernel's top eigenvalue can exceed 2 / lr = 2 (lr 1)
    res = claim.train_width(small, "noisy", 32, dict(PARAMS, lr=0.5), [0, 1], "cpu")
    nn, linear = res["test_mse"].numpy(), res["init_kernel_test_mse"].numpy()
    np.testing.assert_allclose(nn, linear, rtol=1e-3)
    limit = claim.theory(small, dict(PARAMS, lr=0.5))["mse_noisy"]
    assert claim.relative_gap(linear, limit).max() > 1e-2  # a finite-width kernel, not the limit


def test_analytic_ntk_matches_a_very_wide_net():
    """The infinite-width kernel K (x) I_2 against the empirical NTK at width 200k."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2)) * 1.5
    w, a = claim.init_net(200_000, [7], torch.float64)
    xb = torch.as_tensor(claim.first_layer_inputs(x, 1.0))[None]
    theta = claim.empirical_ntk(w, a, xb)[0].numpy()
    limit = claim.ntk_gram(x, x, 1.0)
    np.testing.assert_allclose(theta[0, 0], limit, rtol=0.02, atol=0.02)
    np.testing.assert_allclose(theta[1, 1], limit, rtol=0.02, atol=0.02)
    assert np.abs(theta[0, 1]).max() < 0.02 * limit.max()
    # and the kernel is the block's: relu_kernels on (x, 1)
    augmented = claim.with_bias(x, 1.0)
    np.testing.assert_allclose(limit, relu_kernels(augmented, augmented)[1])


# ----------------------------------------------------------------------------- measure
def test_curve_measurements_on_hand_made_curves():
    curve = np.array([[4.0, 2.0, 1.0, 1.5, 2.0], [4.0, 3.0, 2.0, 1.0, 1.0]])
    np.testing.assert_allclose(claim.overfit_ratio(curve), [2.0, 1.0])
    np.testing.assert_array_equal(claim.best_checkpoint(curve), [2, 3])
    reference = np.array([[4.0, 2.0, 1.25, 1.5, 2.0]] * 2)
    np.testing.assert_allclose(claim.relative_gap(curve, reference), [0.2, 0.6])
    np.testing.assert_allclose(claim.test_mse(np.ones((3, 2)), np.zeros((3, 2))), 2.0)


def test_ntk_deviation_on_hand_made_kernels():
    limit = np.eye(3)[None] * 2.0
    theta = np.zeros((1, 2, 2, 3, 3))
    theta[0, 0, 0] = theta[0, 1, 1] = limit[0]
    np.testing.assert_allclose(claim.ntk_deviation(theta, limit), [0.0])
    theta[0, 0, 1] = limit[0]  # one off-diagonal output block as large as a diagonal one
    np.testing.assert_allclose(claim.ntk_deviation(theta, limit), [np.sqrt(0.5)])
    np.testing.assert_allclose(claim.kernel_change(theta, 2 * theta), [1.0])


def test_verdict_of_the_manifest_on_hand_made_statistics():
    manifest = registry.load_manifest(registry.CLAIMS_DIR / "nn_score_estimation_gd.yaml").data
    n = 6
    stats = {
        "curve_gap_wide": [0.03, 0.04, 0.05, 0.02, 0.04, 0.03],
        "overfit_ratio_wide": [1.6, 1.7, 1.5, 1.8, 1.6, 1.55],
        "early_stop_log_ratio": [0.0, 0.19, -0.19, 0.0, 0.0, 0.19],
        "stopping_excess_wide": [1.0, 1.01, 1.0, 1.02, 1.0, 1.01],
        "overfit_ratio_exact": [1.0] * n,
        "curve_gap_narrow": [0.6, 0.7, 0.5, 0.8, 0.6, 0.65],
        "overfit_ratio_theory": [1.6] * n,
        "overfit_ratio_exact_theory": [1.0] * n,
        "lr_times_top_eigenvalue": [1.4] * n,
        "init_ntk_deviation_wide": [0.05] * n,
    }
    v = verdicts.judge(manifest, stats, n_seeds=n, resamples=20)
    assert v["status"] == "replicated", v["reason"]
    assert v["primary"] == "nn_tracks_kernel_gd"
    drifted = dict(stats, curve_gap_wide=[0.3, 0.4, 0.35, 0.3, 0.45, 0.4])
    assert verdicts.judge(manifest, drifted, n_seeds=n, resamples=0)["status"] == "not-replicated"
    lazy_narrow = dict(stats, curve_gap_narrow=[0.05] * n)
    assert verdicts.judge(manifest, lazy_narrow, n_seeds=n, resamples=0)["status"] == "partial"


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("nn_score_estimation_gd", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
