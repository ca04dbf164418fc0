"""Tests of the multimodal_vs_unimodal_contrastive claim: the linearised growth rates against
autograd gradients of the InfoNCE loss at a small initialisation, the transitions, and the
measurements on hand-made inputs, plus one smoke chain."""

import numpy as np
import pytest
import torch

from replica import steps
from replica.blocks import signal_noise as sn
from replica.claims import multimodal_vs_unimodal_contrastive as mm

SLUG = "multimodal_vs_unimodal_contrastive"
TAU, N, D = 0.5, 8, 12


def balanced_signal_inputs(norm: float):
    """n = 8 samples, half of each label, noise patch zero: x = [y mu, 0] as (1, n, 2, d)."""
    y = torch.tensor([1.0, -1.0] * (N // 2), dtype=torch.float64)
    x = torch.zeros(1, N, 2, D, dtype=torch.float64)
    x[0, :, 0, 0] = y * norm
    return x


def orthonormal_noise_inputs():
    """Signal patch zero, noise patches xi_i = e_{i+1} (orthonormal, |xi|^2 = 1)."""
    x = torch.zeros(1, N, 2, D, dtype=torch.float64)
    x[0, torch.arange(N), 1, torch.arange(N) + 1] = 1.0
    return x


def neg_grad(loss_fn, *filters):
    ws = [f.clone().requires_grad_() for f in filters]
    return [-g for g in torch.autograd.grad(loss_fn(*ws).sum(), ws)]


def one_neuron(coords: dict[int, float]) -> torch.Tensor:
    w = torch.zeros(1, 1, 1, D, dtype=torch.float64)
    for i, v in coords.items():
        w[0, 0, 0, i] = v
    return w


def test_single_modal_signal_rate_matches_autograd():
    norm, g = 0.7, 1e-5
    x = balanced_signal_inputs(norm)
    w = one_neuron({0: g / norm})  # <w, mu> = g
    (grad,) = neg_grad(lambda w_: mm.info_nce(mm.embed(w_, x), mm.embed(w_, x), TAU), w)
    dg = float(grad[0, 0, 0, 0]) * norm  # d<w, mu>/dt = <-grad, mu>
    rate, _ = mm.growth_rates(N * (norm / np.sqrt(D)) ** 2, 1.0, N, TAU, 1.0, D, "single")
    assert dg / g == pytest.approx(float(rate[0]), rel=1e-4)


def test_single_modal_noise_rate_matches_autograd():
    x = orthonormal_noise_inputs()
    r = 1e-5 * (1 + np.arange(N) / N)  # all neurons active, distinct coefficients
    w = one_neuron({i + 1: r[i] for i in range(N)})
    (grad,) = neg_grad(lambda w_: mm.info_nce(mm.embed(w_, x), mm.embed(w_, x), TAU), w)
    dr = grad[0, 0, 0, 1 : N + 1].numpy()
    # |xi|^2 = 1: the rate formula with sigma^2 (d - 1) = 1
    _, rate = mm.growth_rates(1.0, 1.0, N, TAU, (D - 1) ** -0.5, D, "single")
    np.testing.assert_allclose(dr, float(rate[0]) * (r - r.mean()), rtol=1e-4)


def test_multi_modal_rates_match_autograd():
    norm1, norm2, g1, g2 = 0.3, 1.1, 1e-5, 2e-5
    x1, x2 = balanced_signal_inputs(norm1), balanced_signal_inputs(norm2)
    w1, w2 = one_neuron({0: g1 / norm1}), one_neuron({0: g2 / norm2})
    grads = neg_grad(lambda a, b: mm.info_nce(mm.embed(a, x1), mm.embed(b, x2), TAU), w1, w2)
    dg1 = float(grads[0][0, 0, 0, 0]) * norm1
    snr1, snr2 = N * (norm1 / np.sqrt(D)) ** 2, N * (norm2 / np.sqrt(D)) ** 2
    rate, _ = mm.growth_rates(snr1, snr2, N, TAU, 1.0, D, "multi")
    # the coupled mode: dg1/dt = |mu1|^2 g2 / (4 tau); the rate is its geometric mean
    assert dg1 == pytest.approx(norm1**2 * g2 / (4 * TAU), rel=1e-4)
    dg2 = float(grads[1][0, 0, 0, 0]) * norm2
    assert np.sqrt(dg1 * dg2 / (g1 * g2)) == pytest.approx(float(rate[0]), rel=1e-4)
    # noise: the partner's noise coefficients drive modality 1's (pairwise coupling)
    xn = orthonormal_noise_inputs()
    r1 = np.full(N, 1e-9)  # modality 1 barely active on every sample
    r2 = 1e-5 * (1 + np.arange(N)[::-1] / N)
    w1n = one_neuron({i + 1: r1[i] for i in range(N)})
    w2n = one_neuron({i + 1: r2[i] for i in range(N)})
    grads = neg_grad(lambda a, b: mm.info_nce(mm.embed(a, xn), mm.embed(b, xn), TAU), w1n, w2n)
    _, noise_rate = mm.growth_rates(1.0, 1.0, N, TAU, (D - 1) ** -0.5, D, "multi")
    dr1 = grads[0][0, 0, 0, 1 : N + 1].numpy()
    np.testing.assert_allclose(dr1, float(noise_rate[0]) * (r2 - r2.mean()), rtol=1e-3)


def test_transitions_are_where_the_rates_balance():
    d, n, sigma = 400, 50, 0.05
    for arm, partner in [("single", None), ("multi", 50.0)]:
        t = mm.predicted_transition(partner)
        p = t if partner is None else partner
        sig, noise = mm.growth_rates(t, p, n, TAU, sigma, d, arm)
        # |xi|^2 = sigma^2 (d - 1) in the rates vs sigma^2 d in the SNR: ratio d / (d - 1)
        assert sig[0] / noise[0] == pytest.approx(d / (d - 1), rel=1e-12)
    th = mm.theory(
        {"n_snr2": np.array([0.1, 1.0])},
        {"n": n, "tau": TAU, "sigma": sigma, "d": d, "partner_n_snr2": 50.0},
    )
    assert th["crossing_ratio"] == pytest.approx(12.5)
    np.testing.assert_allclose(
        th["rates"]["multi_weak"]["rate_ratio"], th["rates"]["single"]["rate_ratio"]
    )


def test_crossing_and_window_on_hand_made_curves():
    grid = np.array([0.1, 1.0, 10.0])
    assert mm.crossing(grid, [0.5, 0.7, 0.8], 0.75) == pytest.approx(10**0.5)
    assert mm.crossing(grid, [0.8, 0.9, 1.0], 0.75) == 0.1  # censored low
    assert mm.crossing(grid, [0.5, 0.6, 0.7], 0.75) == 10.0  # censored high
    # gap 0.3 at the middle only: >= 0.15 on half of each neighbouring decade -> 1 decade
    assert mm.window_decades(grid, [0.0, 0.3, 0.0], 0.15) == pytest.approx(1.0, abs=2e-3)


def test_verdict_statistics_are_per_seed():
    """Two seeds with different gap curves: each keeps its own max, window and crossing."""
    grid = np.array([0.1, 1.0, 10.0])
    single = np.array([[0.5, 0.6, 1.0], [0.5, 0.5, 1.0]])
    multi = np.array([[0.9, 1.0, 1.0], [0.5, 0.9, 1.0]])
    ones = np.ones((2, 3))
    arms = {
        "single": {
            "probe_accuracy": single,
            "signal_learning": ones,
            "noise_memorization": 2 * ones,
        },
        "multi": {"probe_accuracy": multi, "signal_learning": 3 * ones, "noise_memorization": ones},
        "multi_weak": {
            "probe_accuracy": single,
            "signal_learning": ones,
            "noise_memorization": ones,
        },
    }
    metrics = {"n_snr2": grid, "arms": arms}
    theory = {
        "transition_single": 4.0,
        "transition_multi": 0.32,
        "crossing_ratio": 12.5,
        "crossing_ratio_weak": 1.0,
    }
    stats = mm.verdict(metrics, theory, {"crossing_level": 0.75, "gap_level": 0.15})
    for name, value in stats.items():
        if not name.startswith("theory"):
            assert len(value) == 2, name
        else:
            assert isinstance(value, float)
    assert stats["gap_max"] == pytest.approx([0.4, 0.4])
    assert stats["gap_highest"] == pytest.approx([0.0, 0.0])
    assert stats["gap_max_weak"] == pytest.approx([0.0, 0.0])
    assert stats["crossing_ratio_weak"] == pytest.approx([1.0, 1.0])
    # seed 0: single crosses 0.75 at 10^0.375, multi is above at the first point (censored 0.1)
    assert stats["crossing_ratio"][0] == pytest.approx(10**0.375 / 0.1)
    assert stats["crossing_ratio"][0] != pytest.approx(stats["crossing_ratio"][1])
    assert stats["signal_gain_low_snr"] == pytest.approx([3.0, 3.0])
    assert stats["noise_excess_low_snr"] == pytest.approx([2.0, 2.0])
    assert stats["gap_window_decades"][0] > stats["gap_window_decades"][1] > 0


def test_probe_accuracy_on_separable_and_pure_noise_features():
    rng = np.random.default_rng(0)
    y = rng.choice([-1.0, 1.0], size=600)
    noise = rng.normal(size=(600, 3))
    assert mm.probe_accuracy(np.c_[y, noise], y, 200, 1e-3) == 1.0
    assert abs(mm.probe_accuracy(noise, y, 200, 1e-3) - 0.5) < 0.08


def test_signal_noise_split_recovers_planted_coefficients():
    params = {"n": 6, "d": 30, "sigma": 0.2, "partner_n_snr2": 50.0}
    data = {
        "n_snr2": np.array([1.0, 4.0]),
        "xi": sn.noise_patches(np.random.default_rng(1), 6, 30, 0.2)[None],
    }
    mu1, _ = mm.signal_norms(data, params, "single")
    init = np.random.default_rng(2).normal(size=(1, 2, 3, 30))
    filters = init.copy()
    xi0 = data["xi"][0, 0]
    for k in range(2):
        filters[0, k, 1, 0] += 0.7 / mu1[k]  # gamma = 0.7 on neuron 1: 0.7 mu / |mu|^2
        filters[0, k, 2] += 0.4 * xi0 / (xi0 @ xi0)  # rho_{2,0} = 0.4
    signal, noise = mm.signal_noise_split(
        {"filters": filters, "init": init}, data, params, "single"
    )
    np.testing.assert_allclose(signal, 0.7, rtol=1e-8)
    np.testing.assert_allclose(noise, 0.4 / 6, rtol=1e-8)  # mean over 6 samples of max_r |rho|


def test_smoke_chain_and_determinism(tmp_path):
    result = steps.run_chain(SLUG, "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
    root = tmp_path / "smoke" / SLUG
    first = np.load(root / "train" / "arm-single.npz")["filters"]
    steps.train(SLUG, "smoke", "arm-single", root / "data.npz", tmp_path / "again.npz")
    np.testing.assert_array_equal(first, np.load(tmp_path / "again.npz")["filters"])


@pytest.mark.parametrize(
    ("b", "n", "d", "exact"), [(40, 60, 300, True), (8, 30, 120, False)], ids=["quick", "small"]
)
def test_training_embedding_equals_the_two_patch_product(b, n, d, exact):
    """train_embed (signal patch as one product, noise patch alone in the gemm) is embed(),
    loss and gradients of both encoders through the InfoNCE loss: bit for bit at the quick
    scale's shapes (B = 5 seeds x 8 SNR values, n = 60, d = 300), where the CPU gemm sums the
    smaller products in the same order; at other shapes it may pick another kernel, so there
    only to rounding."""
    gen = torch.Generator().manual_seed(3)
    m = 10
    label = torch.where(torch.rand(b, n, generator=gen) < 0.5, -1.0, 1.0).double()
    xs = []
    for _ in range(2):
        x = torch.zeros(b, n, 2, d, dtype=torch.float64)
        x[:, :, 0, 0] = 2.0 * label
        x[:, :, 1, 1:] = torch.randn(b, n, d - 1, generator=gen, dtype=torch.float64) / d**0.5
        xs.append(x)
    w0 = [0.3 * torch.randn(b, 1, m, d, generator=gen, dtype=torch.float64) for _ in range(2)]
    out = []
    for split in (False, True):
        w1, w2 = (w.clone().requires_grad_() for w in w0)
        h = [
            mm.train_embed(w, x[:, :, 0], x[:, :, 1]) if split else mm.embed(w, x)
            for w, x in zip((w1, w2), xs, strict=True)
        ]
        loss = mm.info_nce(h[0], h[1], 0.5)
        out.append((loss.detach(), *torch.autograd.grad(loss.sum(), (w1, w2))))
    for ref, new in zip(*out, strict=True):
        if exact:
            assert torch.equal(ref, new)
        else:
            assert torch.allclose(ref, new, rtol=1e-12, atol=1e-15)
