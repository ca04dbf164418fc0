"""Tests of the benign_overfit_trainable_cnn claim: the conservation law and the GD drift
formula against autograd, the exact reduced coordinates against a full-dimensional run, the
boundary formula, and the measurements on hand-made inputs."""

import numpy as np
import pytest
import torch

from replica import steps
from replica.blocks import signal_noise as sn
from replica.claims import benign_overfit_trainable_cnn as claim

PARAMS = {
    "dims": [60],
    "n": 6,
    "width": 3,
    "sigma_p": 1.0,
    "flip_rate": 0.2,
    "init_norm": 0.3,
    "v0_large": 1.0,
    "v0_small": 1e-3,
    "lr_scaled": 4.0,
    "steps": 20,
    "n_test": 50,
    "mu_grid": [1.0, 4.0, 3],
    "error_level": 0.05,
    "arms": ["relu_large", "relu_small", "softplus_small"],
}


def random_net(seed=0, d=7, act="relu"):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(2, 2, 3, d, generator=gen, dtype=torch.float64).requires_grad_()
    v = torch.randn(2, 2, 3, generator=gen, dtype=torch.float64).requires_grad_()
    x = torch.randn(2, 5, 2, d, generator=gen, dtype=torch.float64)
    y = torch.tensor([1.0, -1, 1, 1, -1], dtype=torch.float64).expand(2, 5)
    loss = sn.logistic_loss(claim.margins(w, v, x, y, sn.activation(act))).mean(-1).sum()
    gw, gv = torch.autograd.grad(loss, (w, v))
    return w.detach(), v.detach(), gw, gv


def test_homogeneity_identity_holds_for_relu_and_fails_for_softplus():
    """<w, dL/dw> = v dL/dv per neuron (the reason ||w||^2 - v^2 is conserved)."""
    w, v, gw, gv = random_net(act="relu")
    assert torch.allclose((w * gw).sum(-1), v * gv, atol=1e-14)
    w, v, gw, gv = random_net(act="softplus")
    assert not torch.allclose((w * gw).sum(-1), v * gv, atol=1e-3)


def test_one_gd_step_changes_the_conserved_quantity_by_eta_squared_terms():
    w, v, gw, gv = random_net(seed=3)
    eta = 0.37
    before = claim.conserved((w**2).sum(-1), v)
    after = claim.conserved(((w - eta * gw) ** 2).sum(-1), v - eta * gv)
    predicted = eta**2 * ((gw**2).sum(-1) - gv**2)
    assert torch.allclose(torch.as_tensor(after - before), predicted, atol=1e-13)


def test_balanced_norm_and_kou_boundary_closed_forms():
    c, v = np.array([0.25, 0.0]), np.array([0.0, 2.0])
    assert np.allclose(claim.balanced_hidden_norm(c, v), [0.5, 2.0])
    ratio = np.array([10.0, 40.0, 160.0])
    mu = claim.kou_critical_mu(ratio, sigma_p=1.5, const=2.0)
    assert np.allclose(mu**4, 2.0**4 * 1.5**4 * ratio)  # n |mu|^4 = C^4 sigma_p^4 d
    assert claim.loglog_slope(ratio, mu) == pytest.approx(0.25)


def test_reduced_basis_is_orthonormal_with_e0_first():
    rng = np.random.default_rng(0)
    noise = sn.noise_patches(rng, 6, 50, 1.0)
    q = claim.reduced_basis(noise, rng.normal(size=(4, 50)))
    assert np.allclose(q.T @ q, np.eye(11), atol=1e-12)
    assert np.allclose(q[:, 0], np.eye(50)[0])
    assert np.allclose(q @ (q.T @ noise.T), noise.T)  # the noise lies in the span


def test_projected_isotropic_noise_has_the_law_used_for_test_patches():
    """Monte Carlo: Q^T xi for xi ~ N(0, sigma^2 I) off e_0 is N(0, sigma^2) on coords 1..k-1."""
    rng = np.random.default_rng(1)
    q = claim.reduced_basis(sn.noise_patches(rng, 5, 40, 1.0), rng.normal(size=(3, 40)))
    xi = sn.noise_patches(rng, 40_000, 40, 2.0)
    cov = np.cov((xi @ q).T)
    target = 4.0 * np.diag([0.0] + [1.0] * (q.shape[1] - 1))
    assert np.abs(cov - target).max() < 0.15


def test_reduced_training_equals_full_dimensional_training():
    """Independent check of the whole trick: GD in R^d vs GD in the reduced coordinates."""
    seed, d, mu, steps_ = 4, 60, 2.5, 15
    data = claim.generate(PARAMS, [seed])
    rng = np.random.default_rng([seed, d])
    draw = sn.patch_dataset(rng, PARAMS["n"], d, 1.0, 1.0, PARAMS["flip_rate"])
    gen = torch.Generator().manual_seed(seed * 100_003 + d)
    w_full = sn.init_filters(gen, 1, PARAMS["width"], d, PARAMS["init_norm"] / np.sqrt(d))
    x_full = torch.as_tensor(draw["x"] * np.array([mu, 1.0])[:, None])[None]
    y = torch.as_tensor(draw["label"], dtype=torch.float64)[None]
    batch = claim.batch_for_mu(data, d, np.array([mu]), "cpu")
    lr = claim.step_sizes(PARAMS, d, np.array([mu]), 1, "cpu")
    act = sn.activation("relu")
    runs = []
    for w, x in [(w_full, x_full), (batch["w0"], batch["x"])]:
        w = w.clone().requires_grad_()
        v = torch.full(w.shape[:3], 0.5, dtype=torch.float64, requires_grad=True)
        for _ in range(steps_):
            loss = sn.logistic_loss(claim.margins(w, v, x, y, act)).mean()
            gw, gv = torch.autograd.grad(loss, (w, v))
            with torch.no_grad():
                w -= lr * gw
                v -= lr[..., 0] * gv
        runs.append((claim.margins(w, v, x, y, act).detach(), (w.detach() ** 2).sum(-1), v))
    for full, reduced in zip(*runs, strict=True):
        assert torch.allclose(full, reduced.detach(), rtol=1e-9, atol=1e-12)
    assert torch.allclose(batch["y"], y)


def test_conservation_drift_and_medians_on_hand_made_arrays():
    w2 = np.ones((1, 3, 2, 2))  # (models, T, C, m)
    v = np.zeros((1, 3, 2, 2))
    w2[0, 2, 1, 0] = 1.5  # one neuron's c moves by 0.5 at the last checkpoint
    assert claim.conservation_drift(w2, v) == pytest.approx([0.5 / 1.5])
    w2b, vb = w2.copy(), v.copy()
    vb[0, 2, 1, 0] = np.sqrt(0.5)  # balanced move: c unchanged
    assert claim.conservation_drift(w2b, vb) == pytest.approx([0.0])
    assert claim.median_neuron(np.arange(8.0).reshape(2, 2, 2)) == pytest.approx([1.5, 5.5])


def test_critical_mu_interpolates_the_crossing_and_reports_none():
    mus = np.array([1.0, 2.0, 4.0])
    assert claim.critical_mu(mus, [0.3, 0.1, 0.0], 0.05) == pytest.approx(2.0 * 2**0.5)
    assert claim.critical_mu(mus, [0.3, 0.2, 0.1], 0.05) is None


def test_boundary_slopes_recover_a_planted_exponent():
    dims, n = [400, 1600, 6400], 40
    crit = {str(d): {"mu_crit": [1.3 * (d / n) ** 0.3, 0.7 * (d / n) ** 0.3]} for d in dims}
    assert np.allclose(claim.boundary_slopes(crit, dims, n), [0.3, 0.3])
    crit["1600"]["mu_crit"][0] = None
    # a seed with a missing crossing counts slope 0 (against the band); the other keeps its own
    assert np.allclose(claim.boundary_slopes(crit, dims, n), [0.0, 0.3])


def test_fitted_min_is_per_seed_and_counts_an_unfitted_seed_zero():
    drift = np.array([[0.5, 0.05, 0.2], [0.3, 0.4, 0.6]])
    fitted = np.array([[True, True, False], [False, False, False]])
    assert claim.fitted_min(drift, fitted) == pytest.approx([0.05, 0.0])


def test_verdict_returns_one_value_per_seed():
    """Hand-made metrics: two seeds, two d, three ||mu||; every noisy statistic is per seed."""
    seeds, mus, dims = 2, 3, [400, 1600]

    def arm(drift, ratio, train_error, crit):
        return {
            str(d): {
                "drift": np.full((seeds, mus), drift),
                "ratio_final": np.full((seeds, mus), ratio),
                "v_rel_change": np.full((seeds, mus), 0.01),
                "v_growth": np.full((seeds, mus), 100.0),
                "w_growth": np.full((seeds, mus), 20.0),
                "train_error": np.array([[0.0] * mus, [train_error] * mus]),
                "mu_crit": [c * (d / 40) ** 0.25 for c in crit],
            }
            for d in dims
        }

    metrics = {
        "dims": dims,
        "arms": {
            "relu_large": arm(0.01, 0.1, 0.0, [1.0, 2.0]),
            "relu_small": arm(0.005, 1.0, 0.05, [1.0, 1.0]),
            "softplus_small": arm(0.1, 1.2, 0.0, [1.0, 1.0]),
        },
    }
    stats = claim.verdict(metrics, {"kou_slope": 0.25, "rival_slope": 0.5}, {"n": 40})
    for name, value in stats.items():
        if name not in ("kou_slope", "rival_slope"):
            assert len(value) == seeds, name
    assert stats["relu_drift_max"] == pytest.approx([0.01, 0.01])
    assert stats["max_train_error"] == pytest.approx([0.0, 0.05])
    assert stats["small_ratio"] == pytest.approx([1.0, 1.0])
    assert stats["large_boundary_slope"] == pytest.approx([0.25, 0.25])
    assert stats["rival_slope_distance"] == pytest.approx([0.25, 0.25])
    assert stats["softplus_drift_min"] == pytest.approx([0.1, 0.1])
    assert stats["small_v_growth"] == pytest.approx([2.0, 2.0])


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("benign_overfit_trainable_cnn", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]


@pytest.mark.parametrize("act_name", ["relu", "softplus"])
def test_training_margins_equal_the_two_patch_product_bit_for_bit(act_name):
    """train_margins (signal patch as one product, noise patch alone in the gemm) is the
    shared class_outputs path exactly, forward and gradients, on reduced-coordinate inputs of
    the quick scale's shapes (4 seeds x 12 ||mu||, n = 40, m = 10, k = 1 + n + 2m); the CPU
    gemm sums the smaller products in the same order there (at other shapes it may pick
    another kernel and agree only to rounding)."""
    gen = torch.Generator().manual_seed(5)
    s, n, c, m, k = 48, 40, 2, 10, 61
    x = torch.zeros(s, n, 2, k, dtype=torch.float64)
    y = torch.where(torch.rand(s, n, generator=gen) < 0.5, -1.0, 1.0).double()
    x[:, :, 0, 0] = 3.0 * y
    x[:, :, 1, 1:] = torch.randn(s, n, k - 1, generator=gen, dtype=torch.float64)
    w0 = torch.randn(s, c, m, k, generator=gen, dtype=torch.float64)
    v0 = torch.randn(s, c, m, generator=gen, dtype=torch.float64)
    act = sn.activation(act_name)
    out = []
    for fn in (claim.margins, claim.train_margins):
        w, v = w0.clone().requires_grad_(), v0.clone().requires_grad_()
        loss = sn.logistic_loss(fn(w, v, x, y, act)).mean(-1)
        out.append((loss.detach(), *torch.autograd.grad(loss.sum(), (w, v))))
    for ref, new in zip(*out, strict=True):
        assert torch.equal(ref, new)
