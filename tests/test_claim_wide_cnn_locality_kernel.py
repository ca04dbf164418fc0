"""wide_cnn_locality_kernel: the tree kernels, the exponents and the measurements against
independent computations (the shared fully-connected NTK, a finite random tree network, the
kernels of the sub-inputs, a brute-force spectral count, direct solves, hand-made curves)."""

from __future__ import annotations

import numpy as np
import pytest

from replica import registry, steps
from replica.blocks.kernel_ridge import arccos0, arccos1, relu_kernels
from replica.claims import wide_cnn_locality_kernel as claim

PARAMS = registry.load_manifest(registry.CLAIMS_DIR / "wide_cnn_locality_kernel.yaml").scale(
    "quick"
)["params"]


# ----------------------------------------------------------------------------- data
def test_inputs_are_products_of_unit_patches():
    x = claim.sample_inputs(np.random.default_rng(0), 4000, 8, 2)
    patches = x.reshape(4000, 4, 2)
    assert np.allclose(np.linalg.norm(patches, axis=-1), 1.0)
    # uniform on the circle: mean of cos(angle) and of cos(2 angle) near 0
    angle = np.arctan2(patches[..., 1], patches[..., 0])
    assert abs(np.cos(angle).mean()) < 0.03 and abs(np.cos(2 * angle).mean()) < 0.03


def test_gaussian_field_has_the_teacher_covariance():
    gram = np.array([[2.0, 0.8, 0.1], [0.8, 1.5, -0.3], [0.1, -0.3, 1.0]])
    rng = np.random.default_rng(1)
    draws = np.stack([claim.gaussian_field(rng, gram, 1e-10) for _ in range(20000)])
    assert np.allclose(np.cov(draws.T), gram, atol=0.05)


# ----------------------------------------------------------------------------- kernels
def test_relu_moments_match_the_shared_arc_cosine_kernels():
    u = np.linspace(-1.0, 1.0, 2001)
    k0, k1 = claim.relu_moments(u)
    assert np.allclose(k0, arccos0(u), atol=1e-14) and np.allclose(k1, arccos1(u), atol=1e-14)


def test_patch_cosines_by_brute_force():
    rng = np.random.default_rng(2)
    x1, x2 = rng.standard_normal((3, 6)), rng.standard_normal((4, 6))
    cos = claim.patch_cosines(x1, x2, 3)
    for i in range(3):
        for j in range(4):
            for p in range(2):
                a, b = x1[i, 3 * p : 3 * p + 3], x2[j, 3 * p : 3 * p + 3]
                assert cos[p, i, j] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("patch", [2, 3])
def test_a_tree_over_one_patch_is_the_fully_connected_ntk(patch):
    """Filters [s1, 1, 1] on a d = s1 input: each level has one child, so the tree is a
    three-hidden-layer fully-connected ReLU net on the (unit) patch; the shared block's NTK uses
    Sigma_0 = x.x' / dim, i.e. the same kernel divided by s1."""
    x = claim.sample_inputs(np.random.default_rng(3), 20, patch, patch)
    for filters, layers in (([patch], 1), ([patch, 1, 1], 3)):
        tree = claim.tree_ntk(x, x, filters, patch)
        assert np.allclose(tree / patch, relu_kernels(x, x, layers)[1], atol=1e-12)


def test_every_level_is_the_sum_over_its_meta_patches():
    """Tree [2] on d = 8 averages the single-patch NTK over the 4 patches; tree [2, 2] averages
    the d = 4 tree NTK over the two halves; the one-pass levels must equal both."""
    rng = np.random.default_rng(4)
    x1, x2 = claim.sample_inputs(rng, 7, 8, 2), claim.sample_inputs(rng, 5, 8, 2)
    levels = claim.tree_ntk_levels(x1, x2, [2, 2, 2], 2)
    one = np.mean(
        [
            claim.tree_ntk(x1[:, 2 * p : 2 * p + 2], x2[:, 2 * p : 2 * p + 2], [2], 2)
            for p in range(4)
        ],
        axis=0,
    )
    two = np.mean(
        [
            claim.tree_ntk(x1[:, 4 * h : 4 * h + 4], x2[:, 4 * h : 4 * h + 4], [2, 2], 2)
            for h in range(2)
        ],
        axis=0,
    )
    assert np.allclose(levels[0], one, atol=1e-13)
    assert np.allclose(levels[1], two, atol=1e-13)
    assert np.allclose(levels[2], claim.tree_ntk(x1, x2, [2, 2, 2], 2))


def test_row_chunks_do_not_change_the_gram(monkeypatch):
    x = claim.sample_inputs(np.random.default_rng(5), 70, 8, 2)
    full = claim.tree_ntk(x, x[:30], [2, 2, 2], 2)
    monkeypatch.setattr(claim, "ROW_CHUNK", 7)
    assert np.allclose(claim.tree_ntk(x, x[:30], [2, 2, 2], 2), full, atol=1e-15)


def test_tree_ntk_matches_a_finite_random_tree_network():
    """Empirical NTK (sum over all parameters of gradient products, by autograd) of a wide
    random locally connected tree net on d = 4 (two patches of 2, one node over both):
        h1_p = sqrt(2) relu(W1_p x_p),  z2 = sum_p W2_p h1_p / sqrt(2 H),
        f = v . sqrt(2) relu(z2) / sqrt(H),   all weights standard normal."""
    import torch

    torch.manual_seed(0)
    width, patch = 3000, 2
    x = claim.sample_inputs(np.random.default_rng(6), 4, 4, patch)
    params = [
        torch.randn(width, patch, dtype=torch.float64, requires_grad=True),
        torch.randn(width, patch, dtype=torch.float64, requires_grad=True),
        torch.randn(width, width, dtype=torch.float64, requires_grad=True),
        torch.randn(width, width, dtype=torch.float64, requires_grad=True),
        torch.randn(width, dtype=torch.float64, requires_grad=True),
    ]

    def net(xi):
        w1a, w1b, w2a, w2b, v = params
        h1 = [
            torch.sqrt(torch.tensor(2.0)) * torch.relu(w @ xi[patch * p : patch * p + patch])
            for p, w in enumerate((w1a, w1b))
        ]
        z2 = (w2a @ h1[0] + w2b @ h1[1]) / np.sqrt(2 * width)
        return v @ (np.sqrt(2.0) * torch.relu(z2)) / np.sqrt(width)

    grads = []
    for xi in torch.from_numpy(x):
        out = net(xi)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params)]))
    jac = torch.stack(grads)
    empirical = (jac @ jac.T).numpy()
    theory = claim.tree_ntk(x, x, [2, 2], patch)
    assert np.allclose(empirical, theory, rtol=0.06, atol=0.06)


# ----------------------------------------------------------------------------- theory
def test_effective_dimensions_of_the_meta_patches():
    assert claim.effective_dimensions([4, 2]) == [3, 6]  # the paper's Fig. 1: 3 and 6
    assert claim.effective_dimensions([2, 2, 2]) == [1, 2, 4]
    assert claim.effective_dimensions([3, 2, 2]) == [2, 4, 8]


def _cutoff_error(n_values, d_levels, d_target, alpha_t, alpha_s, k_max):
    """Brute-force spectral-bias learning curve: modes of level l have degrees k = 1..k_max[l],
    multiplicity k^(d_l - 1), student eigenvalue k^-(alpha_s + d_l); the teacher lives on the
    level with dimension d_target with variance k^-(alpha_t + d_target) per mode. Ridgeless
    regression learns the n largest student modes; the error is the teacher variance left,
    plus the teacher's tail beyond k_max in closed form (int k^-(alpha_t + 1) dk)."""
    lam, weight, variance, tail = [], [], [], 0.0
    for d_l, kmax in zip(d_levels, k_max, strict=True):
        k = np.arange(1, kmax + 1, dtype=float)
        lam.append(k ** -(alpha_s + d_l))
        weight.append(k ** (d_l - 1))
        teacher = k ** -(alpha_t + d_l) if d_l == d_target else np.zeros_like(k)
        variance.append(teacher * weight[-1])
        if d_l == d_target:
            tail = kmax**-alpha_t / alpha_t
    lam, weight, variance = map(np.concatenate, (lam, weight, variance))
    order = np.argsort(-lam)
    count = np.cumsum(weight[order])
    left = np.cumsum(variance[order][::-1])[::-1] + tail  # variance from rank i on
    out = []
    for n in n_values:
        first_unlearnt = np.searchsorted(count, n)
        out.append(left[first_unlearnt])
    return np.array(out)


@pytest.mark.parametrize("d_target", [1, 2])
def test_tree_exponent_against_a_brute_force_spectral_count(d_target):
    """Levels of dimension 1, 2 and 3 (the top): the slope of the counted learning curve far in
    the tail matches alpha_t (1 + alpha_s / d_top) / (alpha_s + d_target)."""
    d_levels, k_max = [1, 2, 3], [3_000_000, 60_000, 2_500]
    n_values = np.geomspace(2e7, 2e8, 6)
    err = _cutoff_error(n_values, d_levels, d_target, 1.0, 1.0, k_max)
    slope = -np.polyfit(np.log(n_values), np.log(err), 1)[0]
    assert slope == pytest.approx(claim.exponent_tree(d_target, 3, 1.0, 1.0), rel=0.05)


def test_full_input_exponent_and_flat_kernel_exponent():
    assert claim.exponent_tree(4, 4, 1.0, 1.0) == pytest.approx(0.25)
    assert claim.exponent_tree(3, 3, 2.0, 1.0) == pytest.approx(2.0 / 3.0)
    assert claim.exponent_flat(4, 1.0) == 0.25
    # a flat kernel: one level of dimension 3, teacher on it -> alpha_t / d
    n_values = np.geomspace(1e7, 1e8, 5)
    err = _cutoff_error(n_values, [3], 3, 1.0, 1.0, [3000])
    slope = -np.polyfit(np.log(n_values), np.log(err), 1)[0]
    assert slope == pytest.approx(claim.exponent_flat(3, 1.0), rel=0.05)


def test_theory_of_the_manifest_setting():
    th = claim.theory({}, PARAMS)
    assert th["d_eff_student"] == [1, 2, 4] and th["d_manifold"] == 4
    assert th["beta_patch_theory"] == pytest.approx(1.25 / 2)
    assert th["beta_meta_theory"] == pytest.approx(1.25 / 3)
    assert th["beta_full_theory"] == pytest.approx(0.25)
    assert th["beta_meta_simple_reading"] == pytest.approx(0.5)
    assert th["beta_fc_meta_theory"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------- measure
def test_learning_curves_against_direct_solves():
    rng = np.random.default_rng(7)
    x = claim.sample_inputs(rng, 60, 8, 2)
    gram = claim.tree_ntk(x, x[:40], [2, 2, 2], 2)
    ys = rng.standard_normal((2, 60))
    mse = claim.learning_curves(gram, ys, [10, 40], 20, 1e-6)
    for j, n in enumerate((10, 40)):
        k = gram[:n, :n] + 1e-6 * np.mean(np.diag(gram[:n, :n])) * np.eye(n)
        pred = gram[40:, :n] @ np.linalg.solve(k, ys[:, :n].T)
        assert np.allclose(mse[:, j], np.mean((pred.T - ys[:, 40:]) ** 2, axis=1))


def test_fitted_exponent_on_hand_made_power_laws():
    n = np.array([64, 128, 256, 512])
    mse = np.stack([3.0 * n**-0.4, 0.1 * n**-0.75])
    assert claim.fitted_exponent(n, mse) == pytest.approx([0.4, 0.75])


def test_measure_and_verdict_on_hand_made_runs():
    n = [16, 64]
    data = {f"y_{t}": np.ones((2, 10)) * 2.0 for t in claim.TARGETS}  # mean square 4
    runs = {}
    exps = {
        "cnn": {"patch": 0.6, "meta": 0.5, "full": 0.25},
        "fc": {"patch": 0.3, "meta": 0.3, "full": 0.2},
    }
    for student, by_target in exps.items():
        runs[f"student-{student}"] = {
            f"mse_{t}": np.array([[4 * n[0] ** -b, 4 * n[1] ** -b]] * 2)
            for t, b in by_target.items()
        }
    metrics = claim.measure(data, runs, {}, {"n_grid": n, "n_test": 4})
    assert np.allclose(metrics["cnn_meta_relative_mse"][0], [16**-0.5, 64**-0.5])
    th = claim.theory({}, PARAMS)
    st = claim.verdict(metrics, th, PARAMS)
    assert st["beta_meta"] == pytest.approx([0.5, 0.5])
    assert st["locality_gap"] == pytest.approx([0.25, 0.25])
    assert st["fc_gap_meta"] == pytest.approx([0.2, 0.2])
    assert st["fc_gap_patch"] == pytest.approx([0.3, 0.3])
    assert st["beta_meta_theory"] == pytest.approx(1.25 / 3)


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("wide_cnn_locality_kernel", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
