"""The shared signal-noise data model, patch network and decomposition, tested on their own."""

import numpy as np
import pytest
import torch

from replica.blocks import signal_noise as sn


@pytest.mark.parametrize("kind", sn.SIGNAL_KINDS)
def test_noise_is_orthogonal_to_signals_and_has_the_stated_variance(kind):
    rng = np.random.default_rng(0)
    data = sn.patch_dataset(rng, n=400, dim=300, signal_norm=3.0, sigma=2.0, kind=kind)
    xi, mu = data["x"][:, 1], data["mu"]
    assert np.abs(xi @ mu.T).max() == 0.0
    free = 300 - sn.signal_span_dim(kind)
    # E|xi|^2 = sigma^2 (d - k): 400 samples put the mean within ~1% of it
    assert np.mean((xi**2).sum(1)) == pytest.approx(4.0 * free, rel=0.02)
    assert np.linalg.norm(mu, axis=1) == pytest.approx([3.0, 3.0])
    if kind == "orthogonal":
        assert mu[0] @ mu[1] == 0.0
    else:
        np.testing.assert_array_equal(mu[1], -mu[0])


def test_signal_patch_follows_the_clean_label_and_flips_hit_the_rate():
    rng = np.random.default_rng(1)
    data = sn.patch_dataset(rng, n=20000, dim=8, signal_norm=1.0, flip_rate=0.15)
    clean, label = data["clean_label"], data["label"]
    np.testing.assert_array_equal(data["x"][:, 0, 0], clean.astype(float))
    np.testing.assert_array_equal(label != clean, data["flipped"])
    assert data["flipped"].mean() == pytest.approx(0.15, abs=0.01)
    assert (clean == 1).mean() == pytest.approx(0.5, abs=0.015)


def test_sparse_noise_has_s_entries_of_magnitude_sigma_off_the_signal():
    rng = np.random.default_rng(2)
    xi = sn.noise_patches(rng, 50, 40, 0.5, kind="orthogonal", noise="sparse", sparsity=5)
    assert ((xi != 0).sum(1) == 5).all()
    assert set(np.unique(np.abs(xi[xi != 0]))) == {0.5}
    assert (xi[:, :2] == 0).all()
    with pytest.raises(ValueError, match="sparsity"):
        sn.noise_patches(rng, 1, 4, 1.0, noise="sparse", sparsity=9)


def test_snr_helpers_invert_each_other():
    norm = sn.signal_norm_for(n_snr2=2.5, n=80, sigma=1.3, dim=1000)
    assert 80 * sn.signal_to_noise(norm, 1.3, 1000) ** 2 == pytest.approx(2.5)


def test_batched_network_matches_a_per_sample_loop():
    gen = torch.Generator().manual_seed(0)
    filters = sn.init_filters(gen, n_seeds=3, width=4, dim=6, sigma0=1.0)
    x = torch.randn(3, 5, 2, 6, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 2, 4, generator=gen, dtype=torch.float64)
    act = sn.activation("relu")
    for out_weights in (None, v):
        got = sn.class_outputs(filters, x, act, out_weights)
        for s in range(3):
            for i in range(5):
                for j in range(2):
                    terms = [
                        (1 / 4 if out_weights is None else float(v[s, j, r]))
                        * sum(max(float(filters[s, j, r] @ x[s, i, p]), 0.0) for p in range(2))
                        for r in range(4)
                    ]
                    assert float(got[s, i, j]) == pytest.approx(sum(terms), rel=1e-12)
    f = sn.margin_output(sn.class_outputs(filters, x, act))
    assert f.shape == (3, 5)


def test_logistic_loss_is_stable_for_large_margins():
    loss = sn.logistic_loss(torch.tensor([-800.0, 0.0, 800.0], dtype=torch.float64))
    assert torch.isfinite(loss).all()
    assert float(loss[1]) == pytest.approx(np.log(2))
    assert float(loss[0]) == pytest.approx(800.0)


@pytest.mark.parametrize("kind", sn.SIGNAL_KINDS)
def test_decomposition_recovers_planted_coefficients(kind):
    rng = np.random.default_rng(3)
    draws = [sn.patch_dataset(rng, n=6, dim=50, signal_norm=2.0, kind=kind) for _ in range(2)]
    data = {k: torch.as_tensor(v) for k, v in sn.stack_seeds(draws).items()}
    mu, xi = data["mu"], data["x"][:, :, 1]
    k = 1 if kind == "antipodal" else 2
    gen = torch.Generator().manual_seed(1)
    init = sn.init_filters(gen, 2, 3, 50, sigma0=0.1)
    gamma = torch.randn(2, 2, 3, k, generator=gen, dtype=torch.float64)
    rho = torch.randn(2, 2, 3, 6, generator=gen, dtype=torch.float64)
    unit_mu = mu[:, :k] / (mu[:, :k] ** 2).sum(-1, keepdim=True)
    unit_xi = xi / (xi**2).sum(-1, keepdim=True)
    filters = (
        init
        + torch.einsum("scmk,skd->scmd", gamma, unit_mu)
        + torch.einsum("scmn,snd->scmd", rho, unit_xi)
    )
    got_gamma, got_rho, residual = sn.decompose(filters, init, mu, xi)
    torch.testing.assert_close(got_gamma, gamma)
    torch.testing.assert_close(got_rho, rho)
    assert float(residual.max()) < 1e-10
    # movement outside the data span shows up as residual, not as coefficients
    span = torch.cat([mu[:, :k], xi], dim=1).reshape(-1, 50)  # every seed's data directions
    q, _ = torch.linalg.qr(span.T)
    off_span = torch.randn(50, generator=gen, dtype=torch.float64)
    off_span -= q @ (q.T @ off_span)
    _, _, residual = sn.decompose(init + off_span, init, mu, xi)
    assert float(residual.min()) > 0.99


def test_summaries_take_the_best_filter_then_average():
    gamma = torch.tensor([[[[1.0], [-3.0]], [[2.0], [0.5]]]])  # (S=1, C=2, m=2, K=1)
    assert float(sn.signal_learning(gamma)[0]) == pytest.approx((3.0 + 2.0) / 2)
    rho = torch.tensor([[[[1.0, -4.0]], [[2.0, 0.0]]]])  # (S=1, C=2, m=1, n=2)
    assert float(sn.noise_memorization(rho)[0]) == pytest.approx((2.0 + 4.0) / 2)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="activation"):
        sn.activation("gelu2")
    with pytest.raises(ValueError, match="signal kind"):
        sn.signal_vectors(4, 1.0, "diagonal")
    with pytest.raises(ValueError, match="noise kind"):
        sn.noise_patches(np.random.default_rng(0), 2, 4, 1.0, noise="laplace")
