"""Tests of the diffusion_vs_cls_feature_learning claim: the exact eps-averaged DSM loss against
Monte Carlo, the mean-denoiser theory against the shared decomposition, the data rescaling, the
measurement helpers on hand-made curves, and the smoke chain."""

import numpy as np
import pytest
import torch

from replica import steps
from replica.blocks import signal_noise as sn
from replica.claims import diffusion_vs_cls_feature_learning as claim

PARAMS = {
    "data_seed": 1,
    "sample_sizes": [4, 16],
    "dim": 60,
    "energy": 1.0,
    "n_snr2_min": 0.05,
    "n_snr2_max": 20.0,
    "n_snr2_count": 5,
}


@pytest.fixture(scope="module")
def data():
    return claim.generate(PARAMS, [0, 1])


def test_expected_dsm_loss_matches_monte_carlo_over_the_diffusion_noise():
    gen = torch.Generator().manual_seed(0)
    w = 0.4 * torch.randn(1, 1, 3, 5, generator=gen, dtype=torch.float64)
    x0 = torch.randn(1, 2, 2, 5, generator=gen, dtype=torch.float64)
    alpha, beta = 0.6, 0.8
    exact = claim.expected_dsm_loss(w, x0, alpha, beta).item()
    eps = torch.randn(400_000, 1, 2, 2, 5, generator=gen, dtype=torch.float64)
    xt = alpha * x0 + beta * eps  # (draws, 1, n, P, d)
    pre = torch.einsum("md,knpd->knpm", w[0, 0], xt[:, 0])
    out = torch.einsum("knpm,md->knpd", pre**2, w[0, 0]) / 3
    mc = ((out - x0[0]) ** 2).sum(-1).sum(-1).mean(-1)  # per draw
    assert exact == pytest.approx(mc.mean().item(), abs=4 * mc.std().item() / 400_000**0.5)


def test_rescaled_configurations_keep_n_snr2_and_unit_energy(data):
    for n in PARAMS["sample_sizes"]:
        batch = claim.config_batch(data, n, PARAMS["energy"])
        mu, xi, x0 = batch["mu"], batch["xi"], batch["x0"]
        mu_sq = (mu[:, 0] ** 2).sum(-1)
        noise_sq = (xi**2).sum(-1).mean(-1)
        assert np.allclose(mu_sq + noise_sq, 1.0)
        # n SNR^2 with the nominal noise scale sigma = 1 * scale is the grid value
        n_snr2 = (n * mu_sq / (batch["scale"] ** 2 * PARAMS["dim"])).reshape(2, -1)
        assert np.allclose(n_snr2, data["n_snr2"][None], rtol=1e-12)
        plus = batch["label"] > 0
        assert np.array_equal(
            x0[:, :, 0][plus], np.broadcast_to(mu[:, None, 0], x0[:, :, 0].shape)[plus]
        )
        assert np.array_equal(
            x0[:, :, 0][~plus], np.broadcast_to(mu[:, None, 1], x0[:, :, 0].shape)[~plus]
        )


def test_mean_denoiser_ratio_matches_the_shared_decomposition(data):
    """Brute force: put every filter on the numerically computed constant optimum s*, decompose
    with the shared signal-noise code and measure R; it must equal the closed form."""
    batch = claim.config_batch(data, 16, 1.0)
    s_star = claim.mean_denoiser(batch["x0"])  # (B, d)
    init = torch.zeros(len(s_star), 1, 3, PARAMS["dim"], dtype=torch.float64)
    filters = (
        init
        + torch.as_tensor(s_star)[:, None, None, :]
        * torch.tensor([1.0, 0.5, 2.0])[None, None, :, None].double()
    )
    ratio, _, _ = claim.ratio_of(
        filters, init, torch.as_tensor(batch["mu"]), torch.as_tensor(batch["xi"])
    )
    closed = claim.mean_denoiser_ratio(batch["mu"], batch["xi"])
    assert np.allclose(ratio.numpy(), closed, rtol=1e-8)
    th = claim.theory(data, PARAMS)
    assert np.allclose(th["dsm_ratio_n16"], closed.reshape(2, -1).mean(0))
    # and close to n SNR^2 / 2 * d / (d - 2): equal up to the chi-square sampling of |xi_i|^2
    # (16 samples in 58 dimensions: a few per cent)
    assert np.allclose(th["dsm_ratio_n16"], th["dsm_ratio_closed_form"], rtol=0.1)


def test_expected_dsm_gradient_moves_filters_along_the_mean_in_the_noise_limit(data):
    """alpha -> 0: the first GD step from identical tiny filters is a*s* + b*w (theory: the
    drift is along the mean denoiser, plus a term along the filter itself)."""
    batch = claim.config_batch(data, 4, 1.0)
    x0 = torch.as_tensor(batch["x0"][:1])
    w = torch.full((1, 1, 2, PARAMS["dim"]), 1e-3, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(claim.expected_dsm_loss(w, x0, 0.0, 1.0).sum(), w)
    s_star = claim.mean_denoiser(batch["x0"][:1])[0]
    w_hat = w[0, 0, 0].detach().numpy() / np.linalg.norm(w[0, 0, 0].detach().numpy())
    direction = -grad[0, 0, 0].numpy()
    direction -= (direction @ w_hat) * w_hat
    target = s_star - (s_star @ w_hat) * w_hat
    cos = direction @ target / np.linalg.norm(direction) / np.linalg.norm(target)
    assert cos > 1 - 1e-9


def test_measurement_helpers_on_hand_made_curves():
    x = np.log10(np.array([0.1, 1.0, 10.0, 100.0]))
    slope, intercept, r2 = claim.ols(x, 2 * x + 1)
    assert (slope, intercept, r2) == pytest.approx((2.0, 1.0, 1.0))
    assert claim.max_local_slope(x, np.array([0.0, 1.0, 4.0, 5.0])) == pytest.approx(3.0)
    assert claim.crossing(x, np.array([-2.0, -1.0, 1.0, 2.0])) == pytest.approx(0.5)
    assert claim.crossing(x, np.array([-2.0, -1.0, -0.5, -0.1])) is None
    assert claim.jump_width(x, np.array([0.0, 0.1, 0.9, 1.0])) == pytest.approx(1.0)
    assert claim.jump_width(x, np.array([0.0, 0.5, 0.5, 0.5])) == 10.0
    gamma = np.zeros((1, 2, 3, 2))
    rho = np.ones((1, 2, 3, 4))
    gamma[0, 0, :2, 0] = 2.0  # two of six filters are signal-dominated
    assert claim.filter_fraction(gamma, rho)[0] == pytest.approx(1 / 3)
    traj = np.array([[1.0, 2.0, 2.2]])
    assert claim.relative_change(traj, np.array([1, 8, 10]), 10)[0] == pytest.approx(0.1)


def test_verdict_on_ideal_hand_made_metrics():
    """DSM exactly on n SNR^2 / 2, classification a step: every statistic is known."""
    grid = np.geomspace(0.05, 20, 8)
    seeds = 3

    def per_n(log_r, frac):
        return {
            "log10_ratio": np.tile(log_r, (seeds, 1)),
            "filter_fraction": np.tile(frac, (seeds, 1)),
            "stationary_change": np.zeros((seeds, 8)),
        }

    dsm_curve = np.log10(grid / 2)
    step = np.where(grid > 2, 3.0, -3.0)
    frac = (grid > 2).astype(float)
    metrics = {
        "n_snr2": grid,
        "objectives": {
            "dsm": {"10": per_n(dsm_curve, frac), "40": per_n(dsm_curve, frac)},
            "cls": {"10": per_n(step, frac), "40": per_n(step, frac)},
        },
    }
    metrics["objectives"]["cls_at_dsm"] = metrics["objectives"]["cls"]
    stats = claim.verdict(metrics, {"theory_slope": 1.0, "cls_transition_n_snr2": 2.0}, {})
    # one value per seed for every noisy statistic, a plain float for the theory
    for name, value in stats.items():
        if name != "theory_slope":
            assert len(value) == seeds, name
    assert isinstance(stats["theory_slope"], float)
    assert stats["dsm_slope"] == pytest.approx([1.0] * seeds)
    assert stats["dsm_r2"] == pytest.approx([1.0] * seeds)
    assert stats["dsm_collapse_gap"] == pytest.approx([0.0] * seeds)
    assert stats["dsm_max_local_slope"] == pytest.approx([1.0] * seeds)
    # against SNR^2 alone the n = 10 and n = 40 curves sit log10(4) apart
    assert stats["dsm_snr2_only_gap"] == pytest.approx([np.log10(4)] * seeds)
    assert min(stats["cls_max_local_slope"]) > 10
    assert min(stats["cls_slope1_violation"]) > 1
    assert stats["cls_at_dsm_slope1_violation"] == stats["cls_slope1_violation"]
    assert stats["cls_fraction_jump_decades"] == pytest.approx(
        [np.log10(grid[5] / grid[4])] * seeds
    )
    assert max(stats["cls_transition_offset_decades"]) < np.log10(grid[1] / grid[0])


def test_per_seed_statistics_keep_seed_noise_and_order():
    """A seed whose classifier never crosses R = 1 gets the cap 10 alone; the others keep
    their own offsets (no pooling over the seed-mean curve)."""
    grid = np.geomspace(0.05, 20, 8)
    step = np.where(grid > 2, 3.0, -3.0)
    cls_curves = np.stack([step, step, np.full(8, -3.0)])  # seed 2 never crosses

    def per_n(log_r):
        return {
            "log10_ratio": log_r,
            "filter_fraction": (log_r > 0).astype(float),
            "stationary_change": np.zeros((3, 8)),
        }

    dsm_curves = np.stack([np.log10(grid / 2) * k for k in (1.0, 0.9, 1.1)])
    metrics = {
        "n_snr2": grid,
        "objectives": {
            "dsm": {"10": per_n(dsm_curves), "40": per_n(dsm_curves)},
            "cls": {"10": per_n(cls_curves), "40": per_n(cls_curves)},
        },
    }
    stats = claim.verdict(metrics, {"theory_slope": 1.0, "cls_transition_n_snr2": 2.0}, {})
    assert stats["dsm_slope"] == pytest.approx([1.0, 0.9, 1.1])
    assert stats["cls_transition_offset_decades"][2] == 10.0
    assert max(stats["cls_transition_offset_decades"][:2]) < 0.5
    assert stats["cls_fraction_jump_decades"][2] == 10.0
    assert "cls_at_dsm_slope1_violation" not in stats


def test_slope1_violation_is_the_dsm_test():
    fits = np.array([[1.0, 1.0], [1.2, 0.95], [1.3, 1.0], [1.0, 0.9]])
    assert claim.slope1_violation(fits) == pytest.approx([0.0, 1.0, 1.5, 2.0])


def test_ablation_arm_is_classification_at_the_dsm_settings():
    params = {"init_norm_dsm": 0.1, "init_norm_cls": 0.01, "steps_dsm": 600, "steps_cls": 800}
    assert claim.arm_settings("cls_at_dsm", params) == ("cls", 0.1, 600)
    assert claim.arm_settings("cls", params) == ("cls", 0.01, 800)
    assert claim.arm_settings("dsm", params) == ("dsm", 0.1, 600)


def test_classifier_uses_the_shared_network():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 5, 2, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([[1.0, -1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    pre = torch.einsum("cmd,npd->ncmp", w[0], x[0])
    f = (pre**2).sum(-1).mean(-1)  # F_j = (1/m) sum_r sum_p sigma(<w, x_p>)
    manual = torch.nn.functional.softplus(-y[0] * (f[:, 0] - f[:, 1])).mean()
    assert claim.classification_loss(w, x, y).item() == pytest.approx(manual.item())
    assert sn.SIGNAL_KINDS[1] == claim.SIGNAL_KIND


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("diffusion_vs_cls_feature_learning", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
