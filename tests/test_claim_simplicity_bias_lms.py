"""Tests of the simplicity_bias_lms claim: the LMS-5 generator against its definition, the
Monte Carlo references against their closed forms, the batched MLP against per-seed
torch.nn models, the measurements on hand-made inputs, and a smoke chain."""

import numpy as np
import pytest
import torch

from replica.claims import simplicity_bias_lms as sb
from replica.steps import run_chain

PARAMS = {"n_train": 10, "n_test": 20_000, "d": 6, "lin_corrupt": 0.05}


def test_lms5_slabs_and_linear_margin_follow_the_definition():
    x, y = sb.lms5(50_000, 4, np.random.default_rng(0))
    assert np.all(y * x[:, 0] >= 0.1) and np.all(np.abs(x[:, 0]) <= 1)
    a, pos = np.abs(x[:, 1:]), y > 0
    assert np.all((a[pos] >= 0.32) & (a[pos] <= 0.56))  # the two positive slabs
    neg = a[~pos]
    assert np.all((neg <= 0.12) | (neg >= 0.76)) and np.all(neg <= 1.0)
    assert abs(np.mean(neg <= 0.12) - 0.75) < 0.01  # centre slab holds 3/4 of the negatives
    # every slab coordinate alone classifies perfectly; none is linearly informative
    assert np.all(sb.slab_label(x[:, 1:]) == y[:, None])
    assert abs(np.corrcoef(x[:, 1], y)[0, 1]) < 0.02


def test_rule_accuracies_match_closed_forms():
    lms = sb.rule_accuracies(PARAMS, "lms", 20_000, seed=1)
    assert lms["linear_rule"]["clean"] == 1.0 and lms["linear_rule"]["sc_rand"] == 1.0
    assert abs(lms["linear_rule"]["s_rand"] - 0.5) < 4 * 0.5 / np.sqrt(20_000)
    assert lms["slab_rule"]["clean"] == 1.0
    assert abs(lms["slab_rule"]["sc_rand"] - 0.5) < 4 * 0.5 / np.sqrt(20_000)
    lin95 = sb.rule_accuracies(PARAMS, "lin95", 20_000, seed=2)
    assert lin95["linear_rule"]["clean"] == pytest.approx(0.95)  # exact 5 % flips
    noise = sb.rule_accuracies(PARAMS, "noise", 20_000, seed=3)
    assert abs(noise["linear_rule"]["clean"] - 0.5) < 4 * 0.5 / np.sqrt(20_000)


def test_randomised_test_sets_permute_only_their_block():
    x = np.arange(12.0).reshape(4, 3)
    perm = np.array([3, 2, 1, 0])
    sets = sb.randomised_test_sets(x, perm, perm)
    s_rand, sc_rand = sets["s_rand"], sets["sc_rand"]
    assert np.all(s_rand[:, 0] == x[perm, 0]) and np.all(s_rand[:, 1:] == x[:, 1:])
    assert np.all(sc_rand[:, 1:] == x[perm, 1:]) and np.all(sc_rand[:, 0] == x[:, 0])


def test_batched_mlp_matches_per_seed_torch_modules():
    weights = sb.init_mlp(5, 7, 2, [0, 1], "cpu", torch.float64)
    x = torch.randn(2, 9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = sb.mlp(weights, x)
    for s in range(2):
        layers = []
        for i in range(3):
            lin = torch.nn.Linear(*weights[2 * i].shape[1:], dtype=torch.float64)
            lin.weight.data = weights[2 * i][s].detach().T.clone()
            lin.bias.data = weights[2 * i + 1][s, 0].detach().clone()
            layers += [lin, torch.nn.ReLU()]
        ref = torch.nn.Sequential(*layers[:-1])(x[s])[:, 0]
        assert torch.allclose(out[s], ref, atol=1e-12)
    # PyTorch's default bound 1/sqrt(fan_in)
    assert weights[0].abs().max() <= 5**-0.5 and weights[2].abs().max() <= 7**-0.5


def test_training_a_tiny_net_is_deterministic_and_seeds_are_independent():
    x, y = sb.lms5(256, 4, np.random.default_rng(5))
    xt = torch.as_tensor(np.stack([x, x]), dtype=torch.float32)
    yt = torch.as_tensor(np.stack([y, y]), dtype=torch.float32)
    p = {"width": 8, "batch": 64, "lr": 0.1, "momentum": 0.9, "epochs": 2}
    a = sb.train_depth(xt, yt, 1, p, [3, 4], "cpu", "test")
    b = sb.train_depth(xt[:1], yt[:1], 1, p, [3], "cpu", "test")
    assert torch.equal(a[0][0], b[0][0])  # seed 3 alone gives the same weights


def test_accuracy_and_worst_depth_on_hand_made_input():
    logits = np.array([[1.0, -2.0, 0.0, 3.0]])
    y = np.array([[1.0, 1.0, 1.0, 1.0]])
    assert sb.accuracy(logits, y)[0] == 0.5  # zero logit counts as wrong
    values = [[0.9, 0.8], [0.5, 0.6], [0.99, 0.97]]  # (depths, seeds)
    assert sb.worst_depth(values, "min") == pytest.approx([0.5, 0.6])  # per seed
    assert sb.worst_depth(values, "max") == pytest.approx([0.99, 0.97])


def test_verdict_statistics_are_per_seed_and_judged_by_the_manifest():
    from replica import registry, verdicts

    acc = {"clean": [[1.0, 1.0]] * 3, "s_rand": [[0.5, 0.501]] * 3, "sc_rand": [[1.0, 0.999]] * 3}
    lin95 = {"clean": [[0.95, 0.951]] * 3, "s_rand": [[0.5, 0.5]] * 3, "sc_rand": [[0.95] * 2] * 3}
    noise = {
        "clean": [[0.97, 0.971]] * 3,
        "s_rand": [[0.97, 0.971]] * 3,
        "sc_rand": [[0.5, 0.501]] * 3,
    }
    metrics = {"variants": {"lms": acc, "lin95": lin95, "noise": noise}}
    theory = {
        "sb_s_rand_acc": 0.5,
        "sb_sc_rand_acc": 1.0,
        "sb_lin95_acc": 0.95,
        "bayes_lin95_acc": 1.0,
        "noise_sc_rand_acc": 0.5,
    }
    stats = sb.verdict(metrics, theory, {})
    for name, value in stats.items():
        assert isinstance(value, float) or len(value) == 2, name
    assert stats["noise_clean_acc"] == pytest.approx([0.97, 0.971])
    manifest = registry.load_manifest(registry.CLAIMS_DIR / "simplicity_bias_lms.yaml").data
    v = verdicts.judge(manifest, stats, n_seeds=2, resamples=0)
    assert v["status"] == "replicated", v["reason"]
    assert v["primary"] == "linear_randomised_gives_chance"
    slabs_used = dict(stats, lms_s_rand_acc=[0.9, 0.91])  # the net uses the slabs
    assert (
        verdicts.judge(manifest, slabs_used, n_seeds=2, resamples=0)["status"] == "not-replicated"
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_smoke_chain(tmp_path):
    result = run_chain("simplicity_bias_lms", "smoke", tmp_path)
    assert result["status"] != "error", result["reason"]
