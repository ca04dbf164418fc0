"""Tests of the ntk claim: theory against independent computations, the closed-form empirical
NTK and GD step against autograd, and the measurement code on hand-made inputs."""

import numpy as np
import pytest
import torch

from replica.claims import ntk

PARAMS = {
    "data_seed": 2018,
    "n_train": 8,
    "n_probe": 8,
    "jitter": 0.3,
    "beta": 0.1,
    "lr": 1.0,
    "steps": 30,
    "n_modes": 3,
    "dtype": "float64",
    "widths": {"ntk": [8, 16], "meanfield": [8, 16]},
}


@pytest.fixture(scope="module")
def data():
    return ntk.generate(PARAMS, [0, 1])


def arccos_kernel_deg1(x, y):
    """Cho & Saul's degree-1 arc-cosine kernel: E_w[relu(w.x) relu(w.y)] = k1 / 2."""
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    angle = np.arccos(np.clip(x @ y / (nx * ny), -1, 1))
    return nx * ny * (np.sin(angle) + (np.pi - angle) * np.cos(angle)) / np.pi


def test_relu_moments_special_cases():
    cov = np.array([[2.0, 0.0], [0.0, 0.5]])  # orthogonal inputs
    e_relu, e_step = ntk.relu_gaussian_moments(cov)
    assert np.allclose(np.diag(e_relu), [1.0, 0.25])  # E relu(u)^2 = var / 2
    assert np.allclose(np.diag(e_step), 0.5)
    assert np.isclose(e_relu[0, 1], 1.0 / (2 * np.pi))  # sqrt(2 * 0.5) / (2 pi)
    assert np.isclose(e_step[0, 1], 0.25)


def test_relu_moments_match_arccos_formula_and_monte_carlo():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    e_relu, e_step = ntk.relu_gaussian_moments(x @ x.T)  # (u, v) = (w.x, w.y), w ~ N(0, I)
    for i in range(3):
        for j in range(3):
            assert np.isclose(e_relu[i, j], arccos_kernel_deg1(x[i], x[j]) / 2)
    z = rng.normal(size=(400_000, 4)) @ x.T
    mc_relu = np.maximum(z, 0).T @ np.maximum(z, 0) / len(z)
    mc_step = (z > 0).T.astype(float) @ (z > 0) / len(z)
    assert np.allclose(e_relu, mc_relu, rtol=0.02, atol=0.01)
    assert np.allclose(e_step, mc_step, atol=0.005)


def test_limiting_ntk_matches_one_very_wide_random_layer(data):
    x = torch.as_tensor(data["x_all"][:6])
    theta_inf, sigma = ntk.limiting_kernels(data["x_all"][:6], beta=0.1, depth=1)
    ws, bs = ntk.init_net([2, 200_000, 1], [5], "cpu", torch.float64)
    theta = ntk.ntk_of(ws, bs, x, 0.1, 1.0)[0].numpy()
    assert ntk.relative_change(theta_inf, theta) < 0.01


def test_limiting_ntk_matches_wide_two_hidden_layer_nets(data):
    x = torch.as_tensor(data["x_all"][:4])
    theta_inf, _ = ntk.limiting_kernels(data["x_all"][:4], beta=0.1, depth=2)
    ws, bs = ntk.init_net([2, 1024, 1024, 1], list(range(12)), "cpu", torch.float64)
    theta_mean = ntk.ntk_of(ws, bs, x, 0.1, 1.0).mean(0).numpy()
    assert ntk.relative_change(theta_inf, theta_mean) < 0.04


def tiny_net_and_jacobian(out_scale, x):
    ws, bs = ntk.init_net([2, 5, 4, 1], [3], "cpu", torch.float64)
    params = [t[0].clone().requires_grad_() for t in ws + bs]

    def f(xx):
        wts = [p.unsqueeze(0) for p in params[:3]]
        bias = [p.unsqueeze(0) for p in params[3:]]
        return ntk.forward(wts, bias, xx, 0.1, out_scale)[0][0]

    rows = [
        torch.cat([g.flatten() for g in torch.autograd.grad(f(x[i : i + 1]).sum(), params)])
        for i in range(len(x))
    ]
    return ws, bs, params, f, torch.stack(rows)


@pytest.mark.parametrize("out_scale", [1.0, 0.3])
def test_closed_form_ntk_matches_autograd(data, out_scale):
    x = torch.as_tensor(data["x_all"][:5])
    ws, bs, _, _, jac = tiny_net_and_jacobian(out_scale, x)
    theta = ntk.ntk_of(ws, bs, x, 0.1, out_scale)[0]
    assert torch.allclose(theta, jac @ jac.T, atol=1e-12)


def test_gd_step_matches_autograd_gradient(data):
    x = torch.as_tensor(data["x_train"])
    y = torch.as_tensor(data["y_train"])
    ws, bs, params, f, _ = tiny_net_and_jacobian(0.5, x)
    loss = 0.5 * ((f(x) - y) ** 2).mean()
    grads = torch.autograd.grad(loss, params)
    out, inputs, masks = ntk.forward(ws, bs, x, 0.1, 0.5)
    deltas = ntk.backward_signals(ws, masks, 0.5)
    ntk.gd_step(ws, bs, inputs, deltas, (out - y) / len(y), 0.7, 0.1)
    for new, old, grad in zip(ws + bs, params, grads, strict=True):
        assert torch.allclose(new[0], old.detach() - 0.7 * grad, atol=1e-12)


def test_mode_decay_matches_kernel_gradient_descent(data):
    """Brute force: iterate r <- r - eta Theta_inf / N r and project on the eigenvectors."""
    th = ntk.theory(data, PARAMS)
    theta_inf, _ = ntk.limiting_kernels(data["x_train"], 0.1)
    _, vec = ntk.train_modes(data, PARAMS)
    r = np.random.default_rng(1).normal(size=8)
    traj = [r]
    for _ in range(PARAMS["steps"]):
        traj.append(traj[-1] - PARAMS["lr"] * theta_inf @ traj[-1] / 8)
    proj = (np.array(traj) @ vec[:, :3]).T[:, th["checkpoints"]]
    assert np.allclose(proj, np.asarray(th["mode_decay"]) * proj[:, :1], atol=1e-12)
    assert th["min_eigenvalue"] > 0  # positive definite on the circle (the paper's theorem)


def test_relative_change_and_slope_on_hand_made_input():
    a = np.eye(2)[None].repeat(3, 0)
    b = a * np.array([1.0, 1.1, 0.5])[:, None, None]
    assert np.allclose(ntk.relative_change(a, b), [0.0, 0.1, 0.5])
    widths = [32, 128, 512]
    assert np.isclose(ntk.loglog_slope(widths, 3.0 * np.asarray(widths) ** -0.5), -0.5)


def test_measure_and_verdict_on_exact_linear_dynamics(data):
    """Hand-made runs: outputs follow the theory exactly, kernels change by known amounts."""
    th = ntk.theory(data, PARAMS)
    theta_inf = np.asarray(th["theta_inf"])
    _, vec = ntk.train_modes(data, PARAMS)
    lam, t = np.asarray(th["mode_lambda"]), np.asarray(th["checkpoints"])
    r0 = np.random.default_rng(2).normal(size=(2, 8))  # two seeds
    resid = np.einsum("nk,sk,kt->stn", vec, r0 @ vec, (1 - lam[:, None]) ** t[None])
    runs, points = {}, {}
    for arm, changes in [("ntk", (0.4, 0.1)), ("meanfield", (0.5, 0.5))]:
        run = {"widths": np.array([8, 16])}
        for w, c, d in zip([8, 16], changes, (0.2, 0.05), strict=True):
            scale = (1.0 if arm == "ntk" else 1.0 / w) * (1 + d)
            run[f"theta0__w{w}"] = np.stack([theta_inf, theta_inf]) * scale
            run[f"thetaT__w{w}"] = run[f"theta0__w{w}"] * (1 + c)
            run[f"f_train__w{w}"] = resid + data["y_train"]
        runs[f"param-{arm}"], points[f"param-{arm}"] = run, {"param": arm}
    metrics = ntk.measure(data, runs, points, PARAMS)
    stats = ntk.verdict(metrics, th, PARAMS)
    for name, value in stats.items():  # per-seed lists of the seed count, or plain numbers
        assert isinstance(value, float) or len(value) == 2, name
    assert np.allclose(stats["kernel_change_widest"], 0.1)
    assert np.allclose(stats["kernel_change_narrowest"], 0.4)
    assert np.allclose(stats["kernel_change_slope"], -2.0)  # 0.4 -> 0.1 over 2x width
    assert np.allclose(stats["kernel_change_slope_wide"], -2.0)
    assert np.allclose(stats["meanfield_change_slope"], 0.0)
    assert np.allclose(stats["init_deviation_widest"], 0.05)
    assert np.allclose(stats["init_deviation_slope"], -2.0)  # 0.2 -> 0.05 over 2x
    assert np.allclose(stats["init_fluctuation_amplitude"], 0.05 * 4)
    assert np.max(stats["mode_error_widest"]) < 1e-10
    assert stats["init_deviation_slope_theory"] == -0.5 and stats["kernel_change_limit"] == 0.0
    # 30 steps of the exact linear dynamics do not shrink the loss 1000-fold: the mean-field
    # arm counts as untrained (0 change, slope -1), whatever its kernel did
    ok = ntk.converged(metrics["arms"]["meanfield"])
    assert not ok.any()
    assert np.allclose(stats["meanfield_converged_fraction"], 0.0)
    assert np.allclose(stats["meanfield_change_widest_trained"], 0.0)
    assert np.allclose(stats["meanfield_change_slope_trained"], -1.0)


def test_unconverged_meanfield_seed_cannot_discriminate():
    arm = {
        "widths": [8, 16],
        "kernel_change": [[2.0, 2.0], [3.0, 3.0]],
        "train_loss_initial": [[1.0, 1.0], [1.0, 1.0]],
        "train_loss_final": [[1e-6, 1e-6], [1e-6, 0.5]],  # seed 1 stalls at width 16
    }
    ok = ntk.converged(arm)
    assert ok.tolist() == [[True, True], [True, False]]
    base = {
        "widths": [8, 16],
        "kernel_change": [[0.4, 0.4], [0.1, 0.1]],
        "init_deviation": [[0.2, 0.2], [0.1, 0.1]],
        "mode_residual": [np.zeros((2, 3, 2))] * 2,
    }
    th = {"mode_decay": np.ones((3, 2)), "mode_scale": np.ones(3), "min_eigenvalue": 0.1}
    th["init_deviation_slope"] = -0.5
    stats = ntk.verdict({"arms": {"ntk": base, "meanfield": arm}}, th, PARAMS)
    assert stats["meanfield_change_widest_trained"] == [3.0, 0.0]
    assert stats["meanfield_change_slope_trained"][1] == -1.0
    assert stats["meanfield_converged_fraction"] == [1.0, 0.5]


def test_verdict_of_the_manifest_on_hand_made_statistics():
    """The judge on the manifest: a kernel that freezes with width passes the primary check."""
    from replica import registry, verdicts

    manifest = registry.load_manifest(registry.CLAIMS_DIR / "ntk.yaml").data
    n = 6
    stats = {
        "kernel_change_widest": [0.04] * 3 + [0.045] * 3,
        "kernel_change_slope": [-0.8, -0.7, -0.9, -0.8, -0.75, -0.85],
        "kernel_change_slope_wide": [-1.0, -0.9, -1.1, -0.95, -1.05, -1.0],
        "init_deviation_slope": [-0.5, -0.45, -0.55, -0.5, -0.48, -0.52],
        "init_deviation_widest": [0.06] * n,
        "mode_error_widest": [0.03] * n,
        "kernel_change_narrowest": [1.5] * n,
        "meanfield_change_widest_trained": [15.0] * n,
        "meanfield_change_slope_trained": [0.05, 0.0, 0.1, 0.06, 0.04, 0.02],
        "meanfield_converged_fraction": [1.0] * n,
        "min_eigenvalue": 0.01,
        "init_deviation_slope_theory": -0.5,
        "kernel_change_limit": 0.0,
    }
    v = verdicts.judge(manifest, stats, n_seeds=n, resamples=20)
    assert v["status"] == "replicated", v["reason"]
    assert v["primary"] == "kernel_freezes_with_width"
    flat = dict(stats, kernel_change_slope=[0.1, 0.0, 0.2, 0.1, 0.05, 0.15])  # does not freeze
    assert verdicts.judge(manifest, flat, n_seeds=n, resamples=0)["status"] == "not-replicated"
    stalled = dict(stats, meanfield_change_widest_trained=[0.0] * n)
    assert verdicts.judge(manifest, stalled, n_seeds=n, resamples=0)["status"] == "partial"


@pytest.mark.parametrize("interrupt_after", [10, 45])  # inside the first width, inside the second
def test_interrupted_training_resumes_to_identical_results(
    data, tmp_path, monkeypatch, interrupt_after
):
    from replica import runtime

    point = {"param": "ntk"}
    reference = ntk.train(data, point, PARAMS, [0, 1], torch.device("cpu"))
    real_step, calls = ntk.gd_step, {"n": 0}

    def dying_step(*args):
        calls["n"] += 1
        if calls["n"] > interrupt_after:
            raise KeyboardInterrupt("killed")
        real_step(*args)

    out = tmp_path / "ntk.npz"
    monkeypatch.setattr(ntk, "gd_step", dying_step)
    with pytest.raises(KeyboardInterrupt), runtime.checkpointing(out, every_s=0):
        ntk.train(data, point, PARAMS, [0, 1], torch.device("cpu"))
    assert int(runtime.read_npz(f"{out}.ckpt.npz")["step"]) > 0
    monkeypatch.setattr(ntk, "gd_step", real_step)
    with runtime.checkpointing(out, every_s=0):
        resumed = ntk.train(data, point, PARAMS, [0, 1], torch.device("cpu"))
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
