"""Does learning require memorization? A short tale about a long tail
(Feldman, STOC 2020, arXiv 1906.05271).

Claim. Data come from N subpopulations x with frequencies D_x and an independent random label
per subpopulation. A training set S of n examples sees many subpopulations exactly once
(singletons). A learner cannot tell a singleton from a subpopulation of frequency ~1/n (worth
fitting) from one of frequency << 1/n (worthless), so every training singleton it misclassifies
costs it, in expectation, the mean frequency of a subpopulation seen once:
    err(A) >= opt + sum_l tau_l errn_S(A, l),
    tau_l = E[alpha^(l+1) (1 - alpha)^(n-l)] / E[alpha^l (1 - alpha)^(n-l)],
with errn_S(A, l) the number of training examples whose subpopulation appears l times in S and
on which A errs, and alpha a subpopulation's frequency. For long-tailed (Zipf) frequencies
tau_1 is of order 1/n: memorising singletons is necessary. For frequencies far below 1/n
(uniform over N = 100 n) tau_1 = 1/N and memorisation is nearly worthless.

Setting (the triage's design). Frequencies: a fixed vector, Zipf D_i ~ 1/i with N = n, or uniform
with N = 100 n; subpopulations are exchangeable to the learner, so the frequency of a
subpopulation is the uniform mixture over the D_i and
    tau_l = sum_i D_i^(l+1) (1 - D_i)^(n-l) / sum_i D_i^l (1 - D_i)^(n-l)      (exact).
Each subpopulation is a Gaussian cluster in R^d (centre ~ N(0, I), std 0.1) with a uniform label
in k classes.

Theory (exact sums, no training). tau_l; the expected number of singletons
sum_x n D_x (1 - D_x)^(n-1); the exact expected excess of the discrete learner that refuses
singletons and guesses uniformly, (1 - 1/k) sum_x D_x n D_x (1 - D_x)^(n-1).

Experiment. A one-hidden-layer ReLU MLP, full-batch Adam on cross-entropy plus an L2 weight
penalty lambda = c / n (a singleton weighs 1/n in the mean loss). c = 0 interpolates and is the
reference; larger c leaves more singletons unfit. All seeds and levels are one batched model
(numpy with a hand-written backward pass).
Population test error per subpopulation is measured on fresh points of each cluster and
weighted by the known D. Measured: per level, errn_S(A, l) and the excess over the reference on
the subpopulations seen once and on all of them. Verdict: the slope of the singleton excess
against errn_S(A, 1) is tau_1 (primary); the total excess follows sum_l tau_l errn_S(A, l); the
bound holds. Control: the same learner and budget with the uniform prior, where dropping
singletons must cost almost nothing.
"""

from __future__ import annotations

import numpy as np

from replica import runtime

PRIORS = ("zipf", "uniform")
PRIOR_CODE = {"zipf": 0, "uniform": 1}  # enters the random streams


# ----------------------------------------------------------------------------- data
def frequencies(prior: str, params: dict) -> np.ndarray:
    """The fixed frequency vector D (sums to 1): Zipf 1/i over n_zipf, or uniform over n_uniform."""
    if prior == "zipf":
        d = 1.0 / np.arange(1, params["n_zipf"] + 1)
        return d / d.sum()
    return np.full(params["n_uniform"], 1.0 / params["n_uniform"])


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per prior: D, and per seed the subpopulation labels and the training sample's
    subpopulation indices (n draws from D). Cluster geometry is drawn in `cluster_inputs`."""
    out = {}
    for prior in PRIORS:
        d = frequencies(prior, params)
        labels, sample = [], []
        for seed in seeds:
            rng = np.random.default_rng([params["data_seed"], seed, PRIOR_CODE[prior]])
            labels.append(rng.integers(params["classes"], size=len(d)))
            sample.append(rng.choice(len(d), size=params["n_train"], p=d))
        out[f"freq_{prior}"] = d
        out[f"labels_{prior}"] = np.asarray(labels, dtype=np.int16)
        out[f"sample_{prior}"] = np.asarray(sample, dtype=np.int64)
    return out


def cluster_inputs(params: dict, prior: str, seed: int, sample: np.ndarray):
    """(centres (N, d), training inputs (n, d), test inputs (N, t, d)) of one seed, float32.

    Centres ~ N(0, I_d); a point of cluster x is its centre plus N(0, std^2 I_d) noise."""
    rng = np.random.default_rng([params["data_seed"], seed, PRIOR_CODE[prior], 1])
    n_clusters = params["n_zipf"] if prior == "zipf" else params["n_uniform"]
    dim, std, t = params["dim"], params["cluster_std"], params["test_per_cluster"]
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    x_train = centres[sample] + std * rng.standard_normal((len(sample), dim), dtype=np.float32)
    x_test = centres[:, None] + std * rng.standard_normal((n_clusters, t, dim), dtype=np.float32)
    return centres, x_train, x_test


def sample_counts(sample: np.ndarray, n_clusters: int) -> np.ndarray:
    """How many times each subpopulation appears in each seed's sample: (S, N)."""
    return np.stack([np.bincount(s, minlength=n_clusters) for s in np.atleast_2d(sample)])


# ----------------------------------------------------------------------------- theory
def tau(d: np.ndarray, n: int, l_max: int) -> np.ndarray:
    """tau_l for l = 1..l_max: the expected frequency of a subpopulation seen exactly l times,
    sum_i D_i^(l+1) (1-D_i)^(n-l) / sum_i D_i^l (1-D_i)^(n-l) (the binomial factor cancels);
    in log space, since the weights underflow for large l."""
    d = np.asarray(d, dtype=float)
    ls = np.arange(1, l_max + 1)[:, None]
    log_w = ls * np.log(d)[None] + (n - ls) * np.log1p(-d)[None]  # (l, N)
    log_w -= log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w)
    return (w * d[None]).sum(1) / w.sum(1)


def expected_singletons(d: np.ndarray, n: int) -> float:
    """E[# subpopulations seen exactly once] = sum_x n D_x (1 - D_x)^(n-1)."""
    return float((n * d * (1 - d) ** (n - 1)).sum())


def refuse_singletons_excess(d: np.ndarray, n: int, k: int) -> float:
    """Exact expected excess of the learner that guesses uniformly on singletons and is right
    elsewhere: (1 - 1/k) sum_x D_x P(x seen once) = (1 - 1/k) tau_1 E[# singletons]."""
    return float((1 - 1 / k) * (d * n * d * (1 - d) ** (n - 1)).sum())


def tau_range(d: np.ndarray, n: int) -> int:
    """Largest multiplicity worth tabulating: the most frequent subpopulation's mean count plus
    ten standard deviations (beyond it the probability of a count is negligible)."""
    mean = n * float(np.max(d))
    return int(np.ceil(mean + 10 * np.sqrt(mean) + 10))


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    n, k = params["n_train"], params["classes"]
    out = {}
    for prior in PRIORS:
        d = np.asarray(data[f"freq_{prior}"])
        taus = tau(d, n, min(n, tau_range(d, n)))
        out[prior] = {
            "tau": taus,  # tau[l - 1] = tau_l
            "tau1_times_n": float(n * taus[0]),
            "expected_singletons": expected_singletons(d, n),
            "refuse_singletons_excess": refuse_singletons_excess(d, n, k),
        }
    return out


# ----------------------------------------------------------------------------- training
# numpy, not torch: a one-hidden-layer MLP has a two-line backward pass, and a short CPU job
# would otherwise spend seconds importing torch. Every array carries a leading model axis
# M = seeds x levels (seed-major); the models share nothing, so the batch trains each alone.
def init_mlp(seeds: list[int], levels: int, dim: int, width: int, classes: int) -> dict:
    """Weights of S x levels MLPs, float32: every level of a seed starts from the same init, so
    the weight-decay-0 model is that seed's reference. W ~ N(0, 1/fan_in), biases 0."""
    w1, w2 = [], []
    for seed in seeds:
        rng = np.random.default_rng([1906, int(seed)])
        w1.append(rng.standard_normal((dim, width)) / dim**0.5)
        w2.append(rng.standard_normal((width, classes)) / width**0.5)
    models = len(seeds) * levels
    return {
        "w1": np.repeat(np.asarray(w1, dtype=np.float32), levels, axis=0),
        "b1": np.zeros((models, 1, width), dtype=np.float32),
        "w2": np.repeat(np.asarray(w2, dtype=np.float32), levels, axis=0),
        "b2": np.zeros((models, 1, classes), dtype=np.float32),
    }


def forward(weights: dict, x: np.ndarray):
    """Logits (M, P, k) of the M MLPs on inputs x (M, P, d), and the hidden pre-activations."""
    pre = x @ weights["w1"] + weights["b1"]
    return np.maximum(pre, 0) @ weights["w2"] + weights["b2"], pre


def loss_and_gradients(weights: dict, x: np.ndarray, onehot: np.ndarray, decay: np.ndarray):
    """Per model: mean cross-entropy + decay / 2 (||W1||^2 + ||W2||^2), and its gradients."""
    z, pre = forward(weights, x)
    z = z - z.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    n = x.shape[1]
    lam = decay[:, None, None]
    penalty = (weights["w1"] ** 2).sum((1, 2)) + (weights["w2"] ** 2).sum((1, 2))
    loss = -(log_p * onehot).sum((1, 2)) / n + 0.5 * decay * penalty
    d_z = (np.exp(log_p) - onehot) / n  # d loss / d logits
    hidden = np.maximum(pre, 0)
    d_pre = (d_z @ weights["w2"].transpose(0, 2, 1)) * (pre > 0)
    grads = {
        "w1": x.transpose(0, 2, 1) @ d_pre + lam * weights["w1"],
        "b1": d_pre.sum(1, keepdims=True),
        "w2": hidden.transpose(0, 2, 1) @ d_z + lam * weights["w2"],
        "b2": d_z.sum(1, keepdims=True),
    }
    return loss, grads


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


def fit(weights: dict, x, y, decay, steps: int, lr: float, classes: int) -> list[float]:
    """Full-batch Adam (torch.optim.Adam's update, written out) on every model, in place."""
    onehot = np.eye(classes, dtype=np.float32)[y]
    decay = np.asarray(decay, dtype=np.float32)
    (b1, b2), losses = ADAM_BETAS, []
    first = {k: np.zeros_like(w) for k, w in weights.items()}
    second = {k: np.zeros_like(w) for k, w in weights.items()}
    tick = runtime.Progress(steps, "adam")
    for step in range(1, steps + 1):
        loss, grads = loss_and_gradients(weights, x, onehot, decay)
        for key, g in grads.items():
            first[key] = b1 * first[key] + (1 - b1) * g
            second[key] = b2 * second[key] + (1 - b2) * g * g
            denom = np.sqrt(second[key] / (1 - b2**step)) + ADAM_EPS
            weights[key] -= (lr / (1 - b1**step)) * first[key] / denom
        losses.append(float(loss.mean()))
        tick(step - 1, loss=losses[-1])
    return losses


def predict(weights: dict, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Class predictions (M, P) of every model on inputs x (M or 1, P, d), in chunks of P."""
    out = []
    for lo in range(0, x.shape[1], chunk):
        out.append(forward(weights, x[:, lo : lo + chunk])[0].argmax(-1).astype(np.int16))
    return np.concatenate(out, axis=1)


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One prior: S seeds x weight-decay levels as one batched model (numpy, CPU, any device).

    Returns the predictions on the training set and the number of misclassified test points of
    every subpopulation, per seed and level."""
    prior, n = point["prior"], params["n_train"]
    levels = np.asarray(params["weight_decay_times_n"], dtype=float)
    n_levels, n_seeds = len(levels), len(seeds)
    labels, sample = data[f"labels_{prior}"].astype(np.int64), data[f"sample_{prior}"]
    x_train = np.stack(
        [cluster_inputs(params, prior, s, sample[i])[1] for i, s in enumerate(seeds)]
    )  # (S, n, d)
    y_train = np.take_along_axis(labels, sample, axis=1)  # (S, n)
    weights = init_mlp(seeds, n_levels, params["dim"], params["width"], params["classes"])
    rep = lambda a: np.repeat(a, n_levels, axis=0)  # noqa: E731  (S, ...) -> (M, ...)
    decay = np.tile(levels / n, n_seeds)
    steps, lr, classes = params["steps"], params["lr"], params["classes"]
    losses = fit(weights, rep(x_train), rep(y_train), decay, steps, lr, classes)
    train_pred = predict(weights, rep(x_train)).reshape(n_seeds, n_levels, n)
    test_wrong = []
    for i, seed in enumerate(seeds):  # one seed at a time: N x t test points (regenerated)
        x_test = cluster_inputs(params, prior, seed, sample[i])[2]
        n_clusters, t, dim = x_test.shape
        own = {k: w[i * n_levels : (i + 1) * n_levels] for k, w in weights.items()}
        pred = predict(own, x_test.reshape(1, -1, dim))  # (levels, N t)
        wrong = pred.reshape(n_levels, n_clusters, t) != labels[i][None, :, None]
        test_wrong.append(wrong.sum(-1).astype(np.int16))
    return {
        "train_pred": train_pred,  # (S, levels, n)
        "test_wrong": np.stack(test_wrong),  # (S, levels, N): wrong test points per cluster
        "loss_trace": np.asarray(losses),
    }


# ----------------------------------------------------------------------------- measure
def errors_by_multiplicity(train_wrong: np.ndarray, counts_of_example: np.ndarray) -> np.ndarray:
    """errn_S(A, l): misclassified training examples whose subpopulation appears l times in S.

    train_wrong (..., n) booleans, counts_of_example (n,) -> (..., max count), entry l - 1."""
    top = int(counts_of_example.max())
    onehot = counts_of_example[:, None] == np.arange(1, top + 1)[None]  # (n, top)
    return train_wrong.astype(float) @ onehot


def excess_errors(test_wrong: np.ndarray, t: int, d: np.ndarray, counts: np.ndarray):
    """Population excess test error over the level-0 model of the same seed: (total, on the
    subpopulations seen once), each (S, levels); error at x = wrong test points / t."""
    err = test_wrong / t
    diff = (err - err[:, :1]) * d[None, None]
    once = (counts == 1)[:, None]
    return diff.sum(-1), (diff * once).sum(-1)


def refuse_learner_excess(params: dict, seeds, labels, counts, d) -> np.ndarray:
    """Monte Carlo of the discrete refuse-singletons learner on each seed's sample: a uniform
    guess on every subpopulation seen once (right elsewhere seen); excess sum_x D_x 1[wrong]."""
    out = []
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng([params["data_seed"], seed, 2])
        guess = rng.integers(params["classes"], size=len(d))
        out.append(float((d * (counts[i] == 1) * (guess != labels[i])).sum()))
    return np.asarray(out)


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    seeds = list(range(np.asarray(data["labels_zipf"]).shape[0]))
    out = {"levels": list(params["weight_decay_times_n"]), "n_train": params["n_train"]}
    for pid, point in points.items():
        prior, run = point["prior"], runs[pid]
        d, labels = np.asarray(data[f"freq_{prior}"]), data[f"labels_{prior}"]
        sample = data[f"sample_{prior}"]
        counts = sample_counts(sample, len(d))  # (S, N)
        y_train = np.take_along_axis(labels, sample, axis=1)
        wrong = run["train_pred"] != y_train[:, None]  # (S, levels, n)
        per_seed = [
            errors_by_multiplicity(wrong[i], counts[i][sample[i]]) for i in range(len(seeds))
        ]
        top = max(e.shape[-1] for e in per_seed)
        errn = np.stack([np.pad(e, ((0, 0), (0, top - e.shape[-1]))) for e in per_seed])
        total, once = excess_errors(run["test_wrong"], params["test_per_cluster"], d, counts)
        out[prior] = {
            "errn": errn,  # (S, levels, l): errn_S(A, l) at entry l - 1
            "excess_total": total,  # (S, levels)
            "excess_singletons": once,
            "singletons": (counts == 1).sum(1),
            "train_accuracy": 1 - wrong.mean(-1),  # (S, levels)
            "final_loss": float(run["loss_trace"][-1]),
        }
        if prior == "zipf":
            out[prior]["refuse_excess_mc"] = refuse_learner_excess(params, seeds, labels, counts, d)
    return out


# ----------------------------------------------------------------------------- verdict
def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x (with intercept)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc**2).sum())


MIN_SPREAD_SINGLETONS = 5  # levels spanning fewer misclassified singletons give no slope
MIN_SPREAD_THEOREM = 0.01  # ... or less than this spread of the theorem's predicted excess


def theorem_prediction(errn: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """sum_l tau_l errn_S(A, l) for every seed and level."""
    errn = np.asarray(errn)
    if errn.shape[-1] > len(taus):
        raise ValueError(f"a count {errn.shape[-1]} beyond the tabulated tau_l ({len(taus)})")
    return errn @ np.asarray(taus)[: errn.shape[-1]]


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    n = params["n_train"]
    z, u = metrics["zipf"], metrics["uniform"]
    tau_z = np.asarray(theory["zipf"]["tau"])
    errn1_z = np.asarray(z["errn"])[..., 0]  # (S, levels)
    errn1_u = np.asarray(u["errn"])[..., 0]
    ex_once, ex_total = np.asarray(z["excess_singletons"]), np.asarray(z["excess_total"])
    predicted = theorem_prediction(z["errn"], tau_z)

    def per_seed_slope(x, y, min_spread, undefined):
        return [
            slope(xs, ys) if np.ptp(xs) >= min_spread else undefined
            for xs, ys in zip(x, y, strict=True)
        ]

    cost = per_seed_slope(errn1_z, ex_once, MIN_SPREAD_SINGLETONS, 0.0)
    uniform_cost = per_seed_slope(errn1_u, u["excess_total"], MIN_SPREAD_SINGLETONS, 1 / n)
    strongest = errn1_z[:, -1]
    bound = np.where(strongest > 0, ex_total[:, -1] / (tau_z[0] * np.maximum(strongest, 1)), 0.0)
    refuse = np.asarray(z["refuse_excess_mc"]) / theory["zipf"]["refuse_singletons_excess"]
    return {
        "singleton_cost": [n * c for c in cost],
        "singleton_cost_theory": theory["zipf"]["tau1_times_n"],
        "total_excess_vs_theorem_slope": per_seed_slope(
            predicted, ex_total, MIN_SPREAD_THEOREM, 0.0
        ),
        "singleton_bound_ratio": bound.tolist(),
        "uniform_singleton_cost": [n * c for c in uniform_cost],
        "uniform_singleton_cost_theory": theory["uniform"]["tau1_times_n"],
        "discrete_refuse_ratio": refuse.tolist(),
        "reference_train_accuracy": np.asarray(z["train_accuracy"])[:, 0].tolist(),
        "singletons_dropped_fraction": (strongest / np.asarray(z["singletons"])).tolist(),
    }
