"""Tests of the label_noise_feature_learning claim: the theory helpers against independent
computations, the signal-noise-coordinate GD against autograd on the shared patch network, the
measurements on hand-made inputs, and the smoke chain."""

import numpy as np
import pytest
import torch
from scipy.stats import entropy, mannwhitneyu

from replica import steps
from replica.blocks import signal_noise as sn
from replica.claims import label_noise_feature_learning as lnf

PARAMS = {
    "n_train": 8,
    "dim": 12,
    "dim_benign": 30,
    "sigma": 1.0,
    "flip_rate": 0.3,
    "width": 3,
    "sigma0": 0.3,
    "lr": 0.5,
    "steps": 6,
    "n_checkpoints": 4,
    "n_test": 5,
    "nsnr2_list": [2.0, 4.0],
    "nsnr2_main": 2.0,
    "stage1_clean_acc": 0.99,
    "stage1_noisy_fit": 0.3,
}


def test_binary_entropy_matches_scipy():
    for p in (0.05, 0.15, 0.5):
        assert lnf.binary_entropy(p) == pytest.approx(entropy([p, 1 - p]))
    assert lnf.binary_entropy(0.0) == 0.0


def test_noisy_label_error_matches_monte_carlo_flips():
    rng = np.random.default_rng(0)
    correct = rng.random(200_000) > 0.07  # clean-label error 0.07
    flips = rng.random(200_000) < 0.15
    noisy_correct = correct != flips  # a flip turns a right prediction wrong and vice versa
    assert 1 - noisy_correct.mean() == pytest.approx(lnf.noisy_label_error(0.07, 0.15), abs=0.003)


def test_benign_indicator_algebra_and_flip_fraction():
    # n |mu|^4 / (sigma^4 d) = (n SNR^2)^2 d / n for sigma = 1
    assert lnf.benign_indicator(100, 200, 3.0, 1.0) == pytest.approx(9.0 * 200 / 100)
    assert lnf.benign_indicator(50, 400, 2.0, 2.0) == pytest.approx(4.0 * 400 / 50)
    flipped = np.array([[True, False, False, True], [False] * 4])
    np.testing.assert_allclose(lnf.flip_fraction(flipped), [0.5, 0.0])


def autograd_gd(w0, x, y_obs, lr, n_steps):
    """Plain GD on the d-dimensional filters with the shared network and autograd."""
    w = w0.clone().requires_grad_()
    margins = []
    for _ in range(n_steps + 1):
        f = sn.margin_output(sn.class_outputs(w, x, sn.activation("relu")))
        margins.append((y_obs * f).detach())
        loss = sn.logistic_loss(y_obs * f).mean(-1).sum()  # seeds are independent
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= lr * grad
    w_last = w.detach() + lr * grad  # the iterate before the last (unrecorded) update
    return torch.stack(margins, 1), w_last


def test_signal_noise_coordinates_reproduce_autograd_gd_and_decomposition():
    seeds, dim, nsnr2 = [0, 1], PARAMS["dim"], 2.0
    data = lnf.generate(PARAMS, seeds)
    arrays = lnf.prepare(data, PARAMS, seeds, dim, PARAMS["flip_rate"], "cpu")
    norm = sn.signal_norm_for(nsnr2, PARAMS["n_train"], 1.0, dim)
    mu = torch.zeros(dim, dtype=torch.float64)
    mu[0] = norm
    sig0, noise0, test0 = lnf.init_projections(
        torch.Generator().manual_seed(3),
        seeds,
        PARAMS,
        dim,
        arrays["xi"],
        arrays["xi_test"],
        mu,
        "cpu",
    )
    keep = np.arange(PARAMS["steps"] + 1)
    res = lnf.run_gd(
        {**arrays, "sig0": sig0, "noise0": noise0, "test0": test0, "mu2": norm**2},
        PARAMS,
        PARAMS["steps"],
        keep,
        "test",
    )
    w0 = sn.init_filters(
        torch.Generator().manual_seed(3), 2, PARAMS["width"], dim, PARAMS["sigma0"]
    )
    x = torch.stack([arrays["y_clean"][..., None] * mu, arrays["xi"]], dim=2)  # (S, n, 2, d)
    margins, w_last = autograd_gd(w0, x, arrays["y_obs"], PARAMS["lr"], PARAMS["steps"])
    np.testing.assert_allclose(res["train_margin"], margins.numpy(), rtol=1e-10, atol=1e-12)
    assert float(torch.abs(margins[:, -1] - margins[:, 0]).max()) > 1e-2  # the test is not vacuous
    gamma, rho, resid = sn.decompose(w_last, w0, mu[None], arrays["xi"])
    assert float(resid.max()) < 1e-8
    np.testing.assert_allclose(res["gamma"][:, -1], sn.signal_learning(gamma).numpy(), rtol=1e-8)
    np.testing.assert_allclose(res["rho"][:, -1], rho.abs().amax(dim=(1, 2)).numpy(), rtol=1e-8)
    # test accuracy from the coordinates equals a direct evaluation of the final filters
    x_test = torch.stack([arrays["y_test"][..., None] * mu, arrays["xi_test"]], dim=2)
    f_test = sn.margin_output(sn.class_outputs(w_last, x_test, sn.activation("relu")))
    direct = ((arrays["y_test"] * f_test) > 0).double().mean(-1).numpy()
    np.testing.assert_allclose(res["test_acc"][:, -1], direct)


def test_small_loss_auc_matches_mann_whitney():
    rng = np.random.default_rng(1)
    loss = rng.exponential(size=40)
    noisy = np.zeros(40, bool)
    noisy[:9] = True
    loss[noisy] += 0.5
    u = mannwhitneyu(loss[noisy], loss[~noisy]).statistic  # noisy above clean
    assert lnf.small_loss_auc(loss, noisy) == pytest.approx(u / (9 * 31))
    assert lnf.small_loss_auc(np.r_[np.zeros(3), np.ones(2)], np.r_[[False] * 3, [True] * 2]) == 1.0


def test_longest_window_and_stage_one_on_hand_made_curves():
    assert lnf.longest_window(np.array([0, 1, 1, 0, 1, 1, 1, 0], bool)) == (4, 6)
    assert lnf.longest_window(np.zeros(4, bool)) is None
    t = np.array([0, 1, 10, 100, 1000], float)
    clean = np.array([0.5, 1.0, 1.0, 1.0, 1.0])
    noisy_fit = np.array([0.5, 0.1, 0.2, 0.9, 1.0])
    st = lnf.stage_one(clean, noisy_fit, t, PARAMS)
    assert st["decades"] == pytest.approx(1.0) and (st["start"], st["end"]) == (1, 2)
    assert lnf.stage_one(clean, np.ones(5), t, PARAMS)["decades"] == 0.0


def test_measure_run_on_hand_made_margins():
    """Two seeds, 4 samples (sample 3 mislabelled); seed 0 has a Stage I, seed 1 fits it at once."""
    t = np.array([0, 1, 10, 100])
    m0 = np.array([[-1, -1, -1, -1], [1, 1, 1, -2], [2, 2, 2, -1], [3, 3, 3, 1]], float)
    m1 = np.array([[-1, -1, -1, -1], [1, 1, 1, 1], [2, 2, 2, 1], [3, 3, 3, 2]], float)
    run = {
        "checkpoints": t,
        "train_margin__k0": np.stack([m0, m1]),
        "test_acc__k0": np.array([[0.5, 0.9, 1.0, 0.95], [0.5, 0.9, 0.9, 0.9]]),
        "test_loss__k0": np.zeros((2, 4)),
        "gamma__k0": np.zeros((2, 4)),
        "rho__k0": np.zeros((2, 4, 4)),
    }
    flipped = np.array([[False, False, False, True]] * 2)
    out = lnf.measure_run(run, 0, flipped, PARAMS)
    np.testing.assert_allclose(out["stage1_decades"], [1.0, 0.0])
    assert out["auc_stage1_min"] == [1.0, 0.5]  # seed 1 has no Stage I: chance
    assert (
        out["train_acc_stage1_mid"][0] == pytest.approx(0.75)
        and out["train_acc_stage1_mid"][1] is None
    )
    np.testing.assert_allclose(out["early_stop_gain"], [0.05, 0.0])
    np.testing.assert_allclose(out["noisy_fit_final"], [1.0, 1.0])


def test_verdict_keeps_every_seed_with_stated_values():
    """Seed 1 has no Stage I: it stays in every statistic (length 0, AUC 0.5, gap 1), and the
    Spearman correlation is computed per seed, not on the seed-mean lengths."""
    t = np.array([0, 1, 10, 100])
    m0 = np.array([[-1, -1, -1, -1], [1, 1, 1, -2], [2, 2, 2, -1], [3, 3, 3, 1]], float)
    m1 = np.array([[-1, -1, -1, -1], [1, 1, 1, 1], [2, 2, 2, 1], [3, 3, 3, 2]], float)
    run = {
        "checkpoints": t,
        "train_margin__k0": np.stack([m0, m1]),
        "test_acc__k0": np.array([[0.5, 0.9, 1.0, 0.95], [0.5, 0.9, 0.9, 0.9]]),
        "test_loss__k0": np.zeros((2, 4)),
        "gamma__k0": np.zeros((2, 4)),
        "rho__k0": np.zeros((2, 4, 4)),
    }
    flipped = np.array([[False, False, False, True]] * 2)
    main = lnf.measure_run(run, 0, flipped, PARAMS)
    longer = dict(main, stage1_decades=[2.0, 0.0])
    metrics = {
        "arms": {
            "noisy": {"nsnr2": [3.0, 5.0], "runs": [main, longer]},
            "clean": {"nsnr2": [3.0], "runs": [main]},
            "benign": {"nsnr2": [3.0], "runs": [main]},
        }
    }
    theory = {"tau_hat": [0.25, 0.25], "stage1_train_accuracy_mean": 0.75}
    stats = lnf.verdict(metrics, theory, {"nsnr2_main": 3.0})
    for name, value in stats.items():
        if not isinstance(value, float):
            assert len(value) == 2, name
    assert stats["stage1_decades"] == pytest.approx([1.0, 0.0])
    assert stats["auc_stage1_min"] == pytest.approx([1.0, 0.5])
    assert stats["plateau_gap"] == pytest.approx([0.0, 1.0])
    # seed 0 lengthens (1 -> 2 decades), seed 1 has no Stage I at either value (ties: 0)
    assert stats["stage1_length_spearman"] == pytest.approx([1.0, 0.0])
    assert stats["stage1_min_decades"] == 0.3


def test_spearman_on_hand_made_input():
    assert lnf.spearman([1, 2, 3, 4, 5], [0.1, 0.5, 0.4, 0.9, 1.2]) == pytest.approx(0.9)


def test_smoke_chain(tmp_path):
    result = steps.run_chain("label_noise_feature_learning", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
    names = {row["name"] for row in result["checks"] + result["controls"]}
    assert "memorisation_degrades_test_accuracy" in names
