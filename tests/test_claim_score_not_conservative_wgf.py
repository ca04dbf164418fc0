"""Tests of the score_not_conservative_wgf claim: the divergence identity against an analytic
Gaussian case and a non-identity, the finite-difference Jacobian and asymmetry against exact
matrices, the circulation against fields with known curl, the exact-score samplers against the
exact Gaussian flow (with and without the divergence-free rotation), the batched torch network
against a per-seed loop, the verdict on hand-made inputs, and the smoke chain."""

import numpy as np
import pytest

from replica import steps
from replica.blocks.score import gaussian, gaussian_flow, probability_flow, ve_sigmas
from replica.claims import score_not_conservative_wgf as claim

PARAMS = {
    "weights": [0.4, 0.35, 0.25],
    "means": [[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]],
    "covs": [[[0.6, 0.3], [0.3, 0.4]], [[0.3, -0.15], [-0.15, 0.5]], [[0.8, 0.0], [0.0, 0.15]]],
    "asym_sigmas": [0.1, 1.0],
    "fd_step": 1e-4,
    "fd_grid": 31,
}


def test_rotate90_is_the_quarter_turn():
    v = np.array([[1.0, 0.0], [0.3, -2.0]])
    assert np.allclose(claim.rotate90(v), v @ np.array([[0.0, -1.0], [1.0, 0.0]]).T)
    assert np.allclose(claim.rotate90(claim.rotate90(v)), -v)


def test_divergence_identity_residual_is_tiny_and_a_wrong_flux_is_not():
    law = claim.mixture(PARAMS)
    assert claim.divergence_identity_residual(law, PARAMS) < 1e-6
    # an independent check of the finite-difference divergence itself: for p = N(0, I),
    # div(grad p) = (|x|^2 - 2) p, at x = (1, 0.5)
    h, x = 1e-4, np.array([1.0, 0.5])
    pts = claim.stencil(x, h)
    grad_p = -pts * np.exp(-(pts**2).sum(-1, keepdims=True) / 2) / (2 * np.pi)
    div = (grad_p[0, 0] - grad_p[1, 0] + grad_p[2, 1] - grad_p[3, 1]) / (2 * h)
    expected = ((x**2).sum() - 2) * np.exp(-(x**2).sum() / 2) / (2 * np.pi)
    assert div == pytest.approx(expected, rel=1e-6)


def test_jacobian_and_asymmetry_on_linear_fields():
    rng = np.random.default_rng(0)
    a = np.array([[1.0, 2.0], [-0.5, 3.0]])
    x = rng.standard_normal((50, 2))
    values = claim.stencil(x, 1e-3) @ a.T  # s(x) = A x
    jac = claim.jacobian_from_stencil(values, 1e-3)
    assert np.allclose(jac, a, atol=1e-9)
    anti, sym = np.linalg.norm(a - a.T), np.linalg.norm(a + a.T)
    assert claim.asymmetry(jac) == pytest.approx(anti / sym)
    symmetric = np.broadcast_to(np.array([[2.0, 1.0], [1.0, -1.0]]), (50, 2, 2))
    assert claim.asymmetry(symmetric) == 0.0


def test_exact_score_has_a_symmetric_jacobian():
    law = claim.mixture(PARAMS)
    x = law.ve(0.5).sample(40, np.random.default_rng(1))
    values = law.ve(0.5).score(claim.stencil(x, 1e-4).reshape(-1, 2)).reshape(40, 4, 2)
    assert claim.asymmetry(claim.jacobian_from_stencil(values, 1e-4)) < 1e-6


def test_loop_circulation_of_known_fields():
    loops, tangent = claim.circles(np.array([[0.0, 0.0], [1.0, -1.0]]), 0.5, 64)
    # solid rotation J x: circulation = circumference |s| everywhere on the circle at the origin
    rot = claim.rotate90(loops)
    assert claim.loop_circulation(rot, tangent)[0] == pytest.approx(1.0)
    # a gradient field (grad of x1^2 x2) has zero circulation
    grad = np.stack([2 * loops[..., 0] * loops[..., 1], loops[..., 0] ** 2], -1)
    assert np.all(claim.loop_circulation(grad, tangent) < 1e-12)
    # a constant curl 2 field J x offset: |mean s.t| = r (curl / 2) = 0.5 around any centre
    shifted = claim.rotate90(loops)
    mean_speed = np.linalg.norm(shifted[1], axis=-1).mean()
    assert claim.loop_circulation(shifted, tangent)[1] == pytest.approx(0.5 / mean_speed)


def test_divergence_free_rotation_keeps_the_gaussian_law_and_solid_rotation_breaks_it():
    """For N(mu, C) data the exact PF-ODE map is known in closed form (gaussian_flow). Adding
    c sigma J grad log p_sigma keeps the law N(mu, C + sigma_min^2 I) (the samples' covariance)
    but not the map; the solid rotation of an anisotropic law changes the covariance."""
    mean, cov = np.array([0.5, -0.3]), np.array([[1.0, 0.6], [0.6, 0.5]])
    law = gaussian(mean, cov)
    rng = np.random.default_rng(2)
    start = law.ve(10.0).sample(4000, rng)
    sigmas = ve_sigmas(10.0, 0.01, 200)
    plain = probability_flow(claim.exact_field(law, 0.0, 0.0), start, sigmas)
    assert np.allclose(plain, gaussian_flow(start, mean, cov, 10.0, 0.01), atol=2e-3)
    target = cov + 0.01**2 * np.eye(2)
    # the covariance the exact map gives to these start points (sampling noise included)
    reference = np.cov(gaussian_flow(start, mean, cov, 10.0, 0.01).T)
    turned = probability_flow(claim.exact_field(law, 2.0, 0.0), start, sigmas)
    assert np.allclose(np.cov(turned.T), reference, atol=0.05)
    assert np.allclose(np.cov(turned.T), target, atol=0.1)
    assert not np.allclose(turned, plain, atol=0.05)  # a different map, the same law
    solid = probability_flow(claim.exact_field(law, 0.0, 2.0), start, sigmas)
    assert np.abs(np.cov(solid.T) - target).max() > 0.2


def test_perturbed_score_reduces_to_the_isotropic_case():
    """For an isotropic Gaussian the divergence-free and the solid rotation coincide."""
    law = gaussian([1.0, -1.0], 0.7 * np.eye(2))
    x = np.random.default_rng(3).standard_normal((20, 2))
    tau2 = claim.isotropic_variance(law)
    assert tau2 == pytest.approx(0.7)
    s = law.ve(0.4).score(x)
    div_free = claim.perturbed_score(s, x, 0.4, 1.5, 0.0, law.mean(), tau2)
    solid = claim.perturbed_score(s, x, 0.4, 0.0, 1.5, law.mean(), tau2)
    assert np.allclose(div_free, solid)


def test_batched_network_matches_each_seed_alone():
    import torch

    weights = claim.init_mlp(8, [0, 1, 2])
    x = torch.randn(3, 5, 2)
    out = claim.net_score([w.detach() for w in weights], x, 0.3, 2.0)
    for s in range(3):
        alone = claim.init_mlp(8, [s])
        assert torch.allclose(
            claim.net_score([w.detach() for w in alone], x[s : s + 1], 0.3, 2.0)[0], out[s]
        )


def test_verdict_on_hand_made_metrics():
    metrics = {
        "run_kind": ["none", "div_free", "solid"],
        "run_c": [0.0, 2.0, 2.0],
        "distance": [[0.02, 0.04], [0.02, 0.06], [0.1, 0.2]],  # (runs, seeds)
        "asymmetry": [[0.1, 0.2], [0.3, 0.1]],  # (sigmas, seeds)
        "perturbed_asymmetry": [[1.0, 2.0], [1.5, 0.5]],
        "loop_circulation": [0.01, 0.03],
    }
    theory = {
        "gaussian_distance": 0.2,
        "exact_distance": [0.01, 0.012, 0.1],
        "floor_distance": 0.002,
        "divergence_identity_residual": 1e-9,
        "exact_asymmetry": [1e-9, 2e-9],
    }
    st = claim.verdict(metrics, theory, {"c_gate": 2.0})
    assert st["free_relative_excess"] == pytest.approx([0.05, 0.15])
    assert st["free_asymmetry_max"] == [0.3, 0.2]
    assert st["free_loop_circulation"] == [0.01, 0.03]
    assert st["div_free_rotation_change"] == pytest.approx([0.0, 0.1])
    assert st["solid_rotation_change"] == pytest.approx([0.4, 0.8])
    assert st["div_free_perturbed_asymmetry"] == [1.5, 2.0]
    assert st["exact_div_free_rotation_change"] == pytest.approx(0.01)
    assert st["exact_solid_rotation_change"] == pytest.approx(0.45)
    assert st["estimator_floor_relative"] == pytest.approx(0.01)
    assert st["exact_sampler_relative"] == pytest.approx(0.05)
    assert st["exact_asymmetry_max"] == 2e-9


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("score_not_conservative_wgf", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
