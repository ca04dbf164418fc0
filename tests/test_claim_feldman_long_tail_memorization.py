"""Tests of the feldman_long_tail_memorization claim: tau_l and the refuse-singletons excess
against exhaustive enumeration and Monte Carlo of the discrete model, the batched MLP against
one model trained alone, the measurements and slopes on hand-made inputs, the verdict of the
manifest, and the smoke chain."""

import itertools

import numpy as np
import pytest
import torch

from replica import registry, steps, verdicts
from replica.claims import feldman_long_tail_memorization as claim

PARAMS = {
    "data_seed": 7,
    "n_train": 40,
    "n_zipf": 40,
    "n_uniform": 400,
    "classes": 4,
    "dim": 8,
    "cluster_std": 0.1,
    "width": 32,
    "steps": 60,
    "lr": 0.01,
    "weight_decay_times_n": [0.0, 15.0],
    "test_per_cluster": 2,
}


def zipf(n_clusters):
    d = 1.0 / np.arange(1, n_clusters + 1)
    return d / d.sum()


def test_tau_matches_exhaustive_enumeration_of_the_discrete_model():
    """Every sequence of n = 5 draws from 3 subpopulations, weighted by its probability:
    tau_l = E[sum of D over subpopulations seen l times] / E[number of them]."""
    d, n = np.array([0.5, 0.3, 0.2]), 5
    mass, count = np.zeros(n + 1), np.zeros(n + 1)
    for seq in itertools.product(range(3), repeat=n):
        prob = np.prod(d[list(seq)])
        c = np.bincount(seq, minlength=3)
        for x in range(3):
            mass[c[x]] += prob * d[x]
            count[c[x]] += prob
    exact = mass[1:] / count[1:]
    assert np.allclose(claim.tau(d, n, n), exact, rtol=1e-12)


def test_tau_and_refuse_excess_match_monte_carlo_of_the_discrete_model():
    rng = np.random.default_rng(0)
    d, n, k, trials = zipf(200), 200, 10, 4000
    mass, count, refuse = np.zeros(3), np.zeros(3), []
    for _ in range(trials):
        c = np.bincount(rng.choice(len(d), size=n, p=d), minlength=len(d))
        for ell in (1, 2, 3):
            mass[ell - 1] += d[c == ell].sum()
            count[ell - 1] += (c == ell).sum()
        labels, guess = rng.integers(k, size=len(d)), rng.integers(k, size=len(d))
        refuse.append((d * (c == 1) * (guess != labels)).sum())
    assert np.allclose(claim.tau(d, n, 3), mass / count, rtol=0.02)
    assert claim.expected_singletons(d, n) == pytest.approx(count[0] / trials, rel=0.01)
    assert claim.refuse_singletons_excess(d, n, k) == pytest.approx(np.mean(refuse), rel=0.02)


def test_special_cases_of_the_theory():
    d, n = np.full(1000, 1e-3), 50
    assert np.allclose(claim.tau(d, n, 5), 1e-3)  # uniform: tau_l = 1/N for every l
    # refuse excess = (1 - 1/k) tau_1 E[#singletons], for any frequency vector
    d = zipf(300)
    lhs = claim.refuse_singletons_excess(d, 300, 10)
    assert lhs == pytest.approx(0.9 * claim.tau(d, 300, 1)[0] * claim.expected_singletons(d, 300))
    # the triage's discrete numbers at n = N = 5000: 0.0887 and 955 singletons
    d = zipf(5000)
    assert claim.refuse_singletons_excess(d, 5000, 10) == pytest.approx(0.0887, abs=5e-4)
    assert claim.expected_singletons(d, 5000) == pytest.approx(955, abs=1)
    # Zipf frequencies have density ~ alpha^-2, so in the bulk tau_l is a ratio of Beta
    # integrals, B(l, n-l+1) / B(l-1, n-l+1) = (l - 1) / n; tau_l is non-decreasing and at most
    # the largest frequency; the table reaches beyond the top subpopulation's mean count
    taus = claim.tau(d, 5000, claim.tau_range(d, 5000))
    assert taus[[4, 9]] == pytest.approx(np.array([4, 9]) / 5000, rel=1e-4)
    assert taus[2] == pytest.approx(2 / 5000, rel=0.01)  # the lower cutoff still shows
    assert np.all(np.diff(taus) >= -1e-15) and taus.max() <= d[0] * (1 + 1e-12)
    assert claim.tau_range(d, 5000) > 5000 * d[0]


def test_generate_and_cluster_inputs():
    data = claim.generate(PARAMS, [0, 1])
    assert data["freq_zipf"].sum() == pytest.approx(1.0)
    assert data["labels_uniform"].shape == (2, 400) and data["sample_zipf"].shape == (2, 40)
    centres, x_train, x_test = claim.cluster_inputs(PARAMS, "zipf", 0, data["sample_zipf"][0])
    assert x_test.shape == (40, 2, 8)
    # points sit at their centres (std 0.1 in 8 dimensions)
    assert np.linalg.norm(x_train - centres[data["sample_zipf"][0]], axis=1).max() < 1.0
    again = claim.cluster_inputs(PARAMS, "zipf", 0, data["sample_zipf"][0])
    assert np.array_equal(again[2], x_test)  # deterministic: train and test regenerate it


def torch_loss(weights, x, y, decay):
    """The same objective in torch (autograd supplies the reference gradients)."""
    hidden = torch.relu(torch.baddbmm(weights["b1"], x, weights["w1"]))
    z = torch.baddbmm(weights["b2"], hidden, weights["w2"])
    ce = torch.nn.functional.cross_entropy(
        z.reshape(-1, z.shape[-1]), y.reshape(-1), reduction="none"
    ).reshape(y.shape)
    penalty = weights["w1"].square().sum((1, 2)) + weights["w2"].square().sum((1, 2))
    return ce.mean(1) + 0.5 * decay * penalty


def toy_problem(models=2, n=20, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((models, n, 8)).astype(np.float32)
    return x, rng.integers(4, size=(models, n))


def test_hand_written_gradients_match_torch_autograd():
    x, y = toy_problem()
    weights = claim.init_mlp([5, 6], 1, 8, 16, 4)
    weights["b1"] += 0.1  # non-zero biases reach every term
    decay = np.array([0.0, 0.3], dtype=np.float32)
    loss, grads = claim.loss_and_gradients(weights, x, np.eye(4, dtype=np.float32)[y], decay)
    ref = {k: torch.tensor(w, dtype=torch.float64, requires_grad=True) for k, w in weights.items()}
    as64 = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    ref_loss = torch_loss(ref, as64(x), torch.tensor(y), as64(decay))
    ref_loss.sum().backward()
    assert np.allclose(loss, ref_loss.detach().numpy(), atol=1e-5)
    for key, g in grads.items():
        assert np.allclose(g, ref[key].grad.numpy(), atol=1e-5), key


def test_written_out_adam_matches_torch_optim_adam():
    x, y = toy_problem()
    decay = np.array([0.0, 0.3], dtype=np.float32)
    ours = claim.init_mlp([5, 6], 1, 8, 16, 4)
    ref = {k: torch.tensor(w, requires_grad=True) for k, w in ours.items()}
    claim.fit(ours, x, y, decay, 25, 0.01, 4)
    opt = torch.optim.Adam(list(ref.values()), lr=0.01)
    for _ in range(25):
        opt.zero_grad()
        torch_loss(ref, torch.tensor(x), torch.tensor(y), torch.tensor(decay)).sum().backward()
        opt.step()
    for key, w in ours.items():
        assert np.allclose(w, ref[key].detach().numpy(), atol=1e-4), key


def test_batched_models_train_as_if_alone():
    """Two seeds x two levels in one batch give the same weights as each model alone."""
    x, y = toy_problem(n=30, seed=1)
    batched = claim.init_mlp([3, 4], 2, 8, 16, 4)
    decay = np.array([0.0, 0.2, 0.0, 0.2])
    claim.fit(batched, np.repeat(x, 2, 0), np.repeat(y, 2, 0), decay, 30, 0.01, 4)
    for m, (seed, lam) in enumerate([(3, 0.0), (3, 0.2), (4, 0.0), (4, 0.2)]):
        alone = claim.init_mlp([seed], 1, 8, 16, 4)  # the same init as every level of the seed
        s = slice(m // 2, m // 2 + 1)
        claim.fit(alone, x[s], y[s], np.array([lam]), 30, 0.01, 4)
        for key, w in alone.items():
            assert np.allclose(w, batched[key][m : m + 1], atol=1e-5), key
    assert claim.predict(batched, np.repeat(x, 2, 0), chunk=7).shape == (4, 30)


def test_errors_by_multiplicity_and_excess_on_hand_made_input():
    # subpopulations 0 (seen 3 times), 1 (twice), 2 and 3 (once), 4 unseen
    sample = np.array([0, 0, 0, 1, 1, 2, 3])
    counts = claim.sample_counts(sample, 5)
    assert counts.tolist() == [[3, 2, 1, 1, 0]]
    wrong = np.array([[0, 0, 1, 0, 1, 1, 0]], dtype=bool)  # one level
    assert claim.errors_by_multiplicity(wrong, counts[0][sample]).tolist() == [[1.0, 1.0, 1.0]]
    d = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    test_wrong = np.array([[[0, 0, 0, 0, 1], [2, 0, 2, 1, 2]]])  # (S, levels, N), t = 2
    total, once = claim.excess_errors(test_wrong, 2, d, counts)
    assert total[0].tolist() == pytest.approx([0.0, 0.4 + 0.1 + 0.05 + 0.05])
    assert once[0].tolist() == pytest.approx([0.0, 0.1 + 0.05])
    assert claim.slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    taus = np.array([0.1, 0.2, 0.3])
    assert claim.theorem_prediction(np.array([[1.0, 2.0, 0.0]]), taus).tolist() == [0.5]
    with pytest.raises(ValueError):
        claim.theorem_prediction(np.ones((1, 4)), taus)


def hand_made_metrics(cost_scale, uniform_scale, seeds=4):
    """Metrics whose excess is exactly cost_scale x tau_1 per misclassified singleton."""
    tau1, n = 0.002, 500
    errn = np.zeros((seeds, 3, 2))
    errn[:, :, 0] = [0, 20, 60]
    errn[:, :, 1] = [0, 1, 3]
    ex_once = cost_scale * tau1 * errn[:, :, 0]
    zipf_arm = {
        "errn": errn,
        "excess_singletons": ex_once,
        "excess_total": ex_once + 0.004 * errn[:, :, 1],
        "singletons": [100] * seeds,
        "train_accuracy": np.ones((seeds, 3)),
        "refuse_excess_mc": [0.1] * seeds,
    }
    uniform_arm = {"errn": errn, "excess_total": uniform_scale * errn[:, :, 0] / n}
    theory = {
        "zipf": {"tau": [tau1, 0.004], "tau1_times_n": tau1 * n, "refuse_singletons_excess": 0.1},
        "uniform": {"tau": [1 / 50000], "tau1_times_n": 0.01},
    }
    return {"zipf": zipf_arm, "uniform": uniform_arm}, theory, {"n_train": n}


def test_verdict_statistics_on_hand_made_metrics():
    metrics, theory, params = hand_made_metrics(1.0, 0.01)
    st = claim.verdict(metrics, theory, params)
    assert np.allclose(st["singleton_cost"], 1.0)  # n tau_1 = 500 x 0.002
    assert np.allclose(st["total_excess_vs_theorem_slope"], 1.0)
    assert np.allclose(st["singleton_bound_ratio"], (0.12 + 0.012) / 0.12)
    assert np.allclose(st["uniform_singleton_cost"], 0.01)
    assert np.allclose(st["discrete_refuse_ratio"], 1.0)
    assert np.allclose(st["singletons_dropped_fraction"], 0.6)
    flat = dict(metrics["uniform"], errn=np.zeros((4, 3, 1)))  # nothing dropped: counts 1
    st = claim.verdict({**metrics, "uniform": flat}, theory, params)
    assert np.allclose(st["uniform_singleton_cost"], 1.0)


def test_verdict_of_the_manifest_on_hand_made_metrics():
    manifest = registry.load_manifest(
        registry.CLAIMS_DIR / "feldman_long_tail_memorization.yaml"
    ).data
    rng = np.random.default_rng(3)

    def judged(cost_scale, uniform_scale):
        metrics, theory, params = hand_made_metrics(cost_scale, uniform_scale)
        jitter = 1 + 0.02 * rng.standard_normal((4, 1))
        for key in ("excess_singletons", "excess_total"):
            metrics["zipf"][key] = metrics["zipf"][key] * jitter
        st = claim.verdict(metrics, theory, params)
        return verdicts.judge(manifest, st, n_seeds=4, resamples=0)["status"]

    assert judged(1.0, 0.01) == "replicated"
    assert judged(0.3, 0.01) == "not-replicated"  # singletons cost a third of tau_1
    assert judged(1.0, 1.0) == "partial"  # the uniform ablation does not discriminate


def test_smoke_chain_runs(tmp_path):
    result = steps.run_chain("feldman_long_tail_memorization", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
