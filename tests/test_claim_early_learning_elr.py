"""Tests of the early_learning_elr claim: theory against independent computations (Monte
Carlo, scipy's SLSQP, a brute-force one-logit ELR simulation with autograd), the training
gradients against autograd, the measurements on hand-made inputs, and a smoke chain."""

import numpy as np
import pytest
import torch

from replica.claims import early_learning_elr as elr
from replica.steps import run_chain


def test_clean_accuracy_matches_monte_carlo():
    rng = np.random.default_rng(0)
    d, sigma = 6, 0.7
    theta = rng.normal(size=d)
    y = rng.choice([-1.0, 1.0], size=400_000)
    x = sigma * rng.normal(size=(len(y), d))
    x[:, 0] += y
    mc = np.mean(np.sign(x @ theta) == y)
    assert abs(elr.clean_accuracy(theta, sigma) - mc) < 0.003


def test_first_gradient_direction_is_minus_the_logistic_gradient_at_zero():
    x, _, y_noisy, _ = elr.mixture(30, 8, 0.3, 0.4, seed=1)
    theta = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y_noisy)
    loss = torch.nn.functional.softplus(-yt * (xt @ theta)).mean()
    (grad,) = torch.autograd.grad(loss, theta)
    assert np.allclose(elr.first_gradient_direction(x, y_noisy), -2 * grad.numpy())


def test_mixture_flips_exactly_delta_n_labels():
    x, y, y_noisy, flipped = elr.mixture(50, 4, 0.1, 0.4, seed=3)
    assert flipped.sum() == 20
    assert np.all((y_noisy != y) == flipped)


@pytest.mark.parametrize(("n", "d"), [(40, 60), (60, 3)])
def test_lp_margin_matches_the_margin_blocks_simplex(n, d):
    """The interior-point solve of the margin LP gives the dual simplex's optimum (the shared
    block), on separable (d > n) and non-separable (d << n) noisy labels."""
    from replica.blocks import margins

    x, _, y_noisy, _ = elr.mixture(n, d, 0.3, 0.4, seed=5)
    simplex = margins.linf_max_margin(y_noisy[:, None] * x, gamma_max=1.0)[0]
    assert elr.lp_margin(x, y_noisy) == pytest.approx(simplex, rel=1e-8, abs=1e-10)
    assert (simplex > 1e-9) == (d > n)


def simulate_one_free_logit(lam: float, steps: int = 4000) -> float:
    """Brute force: one mislabelled example whose true-class logit z moves freely under
    CE(noisy label) + ELR (clamped p, running target), gradients by autograd. Returns the
    final probability of the TRUE class, starting from an early-learned p = 0.99."""
    z = torch.tensor(np.log(99.0), dtype=torch.float64, requires_grad=True)
    target = torch.tensor(0.99, dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(z)  # P(true class); the noisy label is the other class
        pc = p.clamp(elr.CLAMP, 1 - elr.CLAMP)
        target = 0.7 * target + 0.3 * pc.detach()
        loss = -torch.log(1 - p) + lam * torch.log(1 - (pc * target + (1 - pc) * (1 - target)))
        (g,) = torch.autograd.grad(loss, z)
        with torch.no_grad():
            z -= 0.5 * g
    return float(torch.sigmoid(z.detach()))


def test_elr_threshold_matches_brute_force_single_logit():
    lam_c = elr.elr_critical_lambda()
    assert abs(lam_c - 2.0) < 1e-3
    assert simulate_one_free_logit(lam_c - 0.4) < 0.1  # memorizes
    assert simulate_one_free_logit(lam_c + 0.4) > 0.9  # keeps the true label
    # the drift changes sign at p = lambda / (2 (lambda - 1)) for lambda > 2
    assert abs(elr.elr_drift(0.75, 3.0)) < 1e-12


def test_elr_logit_gradient_matches_autograd():
    z = torch.tensor([-2.0, -0.3, 0.4, 3.0], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.2, 0.9, 0.6, 0.95], dtype=torch.float64)
    p = torch.sigmoid(z)
    pc = p.clamp(elr.CLAMP, 1 - elr.CLAMP)
    reg = 3.0 * torch.log(1 - (pc * target + (1 - pc) * (1 - target))).sum()
    (g,) = torch.autograd.grad(reg, z)
    assert torch.allclose(elr.elr_logit_grad(p.detach(), target, 3.0), g, atol=1e-12)


def test_one_gd_step_matches_autograd():
    x, _, y_noisy, _ = elr.mixture(20, 5, 0.5, 0.3, seed=5)
    xt = torch.as_tensor(x)[None]
    yt = torch.as_tensor(y_noisy)[None]
    theta = elr.run_gd(xt, yt, 0.8, 2, np.array([1, 2]), 0.0, 0.7, "test")[0]
    ref = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    for _ in range(2):
        loss = torch.nn.functional.softplus(-yt[0] * (xt[0] @ ref)).mean()
        (g,) = torch.autograd.grad(loss, ref)
        ref = (ref - 0.8 * g).detach().requires_grad_()
    assert torch.allclose(theta[1], ref.detach(), atol=1e-12)


def test_trajectory_metrics_on_hand_made_input():
    # 4 points on the first axis; points 2 and 3 mislabelled
    x = np.array([[[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    y = np.array([[1.0, -1.0, 1.0, -1.0]])
    flipped = np.array([[False, False, True, True]])
    y_noisy = np.where(flipped, -y, y)
    theta = np.array([[[1.0, 0.0], [-1.0, 0.0]]])  # true-label classifier, then its opposite
    m = elr.trajectory_metrics(theta, x, y, y_noisy, flipped, sigma=1.0)
    assert np.allclose(m["frac_true"], [[1.0, 0.0]])
    assert np.allclose(m["frac_noisy"], [[0.0, 1.0]])
    assert np.allclose(m["clean_train_acc"], [[1.0, 0.0]])
    assert np.allclose(m["test_acc"], [[0.8413447, 0.1586553]], atol=1e-6)  # Phi(+-1)


def test_phase_statistics_on_hand_made_input():
    arm = {
        "frac_true": [[0.5, 0.95, 0.2], [0.6, 0.7, 0.9]],
        "frac_noisy": [[0.5, 0.05, 0.8], [0.4, 0.3, 0.1]],
        "test_acc": [[0.9, 0.99, 0.7], [0.8, 0.85, 0.9]],
    }
    s = elr.phase_statistics(arm)
    assert np.allclose(s["peak_frac_true"], [0.95, 0.9])
    assert np.allclose(s["test_acc_at_peak"], [0.99, 0.9])
    assert np.allclose(s["best_test_acc"] - s["final_test_acc"], [0.29, 0.0])
    assert np.allclose(s["final_frac_noisy"], [0.8, 0.1])
    assert np.allclose(s["max_frac_noisy"], [0.8, 0.4])


def test_verdict_returns_per_seed_lists():
    arm = {
        "frac_true": [[0.5, 0.95, 0.2], [0.6, 0.7, 0.9]],
        "frac_noisy": [[0.5, 0.05, 0.8], [0.4, 0.3, 0.1]],
        "test_acc": [[0.9, 0.99, 0.7], [0.8, 0.85, 0.9]],
    }
    metrics = {"arms": {name: arm for name in ("gd", "elr", "elr_weak", "lowdim")}}
    theory = {
        "svm_test_acc": [0.7, None],
        "lp_margin_main": [0.1, 0.2],
        "lp_margin_lowdim": [-0.3, -0.1],
        "early_frac_true": [0.9, 0.8],
        "early_test_acc": [0.99, 0.98],
        "memorized_limit_main": 1.0,
        "elr_lambda_critical": 2.0,
    }
    stats = elr.verdict(metrics, theory, {})
    assert stats["gd_final_frac_noisy"] == pytest.approx([0.8, 0.1])
    assert stats["gd_test_acc_drop"] == pytest.approx([0.29, 0.0])
    assert stats["lowdim_max_frac_noisy"] == pytest.approx([0.8, 0.4])
    assert stats["lp_margin_lowdim"] == pytest.approx([-0.3, -0.1])
    assert stats["theory_svm_test_acc"] == pytest.approx(0.7)
    assert stats["theory_lowdim_lp_margin"] == pytest.approx(-0.1)
    for name, value in stats.items():
        if not name.startswith("theory_") or name.endswith("_per_seed"):
            assert isinstance(value, list) and len(value) == 2, name


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_smoke_chain(tmp_path):
    result = run_chain("early_learning_elr", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
