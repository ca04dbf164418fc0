"""Extreme simplicity bias: networks rely only on the linear feature of LMS-5 data.

Claim (Shah, Tamuly, Raghunathan, Jain & Netrapalli, "The Pitfalls of Simplicity Bias in
Neural Networks", NeurIPS 2020, arXiv 2006.07710): SGD-trained fully connected networks on
data with one simple (linear) and many complex (5-slab) features, each fully predictive of the
label, depend *exclusively* on the linear one: randomising it across the test set drops the
accuracy to chance, randomising all the complex ones changes nothing. The bias persists when
the linear feature is only 95 % predictive, so the network is then worse than it could be.

Data (LMS-5, with the authors' constants: width 1, margins 0.1). y = +-1 equally likely;
coordinates are independent given y:
    x_1 = y * U[0.1, 1]                                   (linear; margin 0.1 around 0)
    x_j, j >= 2: five slabs of width w = (2 - 8 * 0.1) / 5 = 0.24 separated by gaps 0.2:
        y = +1: |x_j| in [0.32, 0.56]      (the two "positive" slabs)
        y = -1: |x_j| < 0.12 (prob. 3/4)   or |x_j| in [0.76, 1] (prob. 1/4)
Variants (grid axis `variant`): `lms` as above; `lin95`: the sign of x_1 is flipped on a random
5 % of the points (train and test), so x_1 is 95 % predictive and each slab still 100 %;
`noise` (negative control): x_1 replaced by U[-1, 1] noise, so only the slabs carry the label.
Model: ReLU MLP, width 100, depth 1-3 (PyTorch's default uniform init), logistic loss, SGD.

Theory (the paper's Theorem 1, for a one-hidden-layer net on linear + slab data: the trained
net is a function of x_1 alone). A classifier that depends only on x_1 has, exactly:
  * S-randomised accuracy (x_1 permuted across the test set) = 1/2: its prediction becomes
    independent of the label;
  * S^c-randomised accuracy (the slab block permuted across the test set) = clean accuracy;
  * clean accuracy = the accuracy of sign(x_1): 1 on LMS-5, 0.95 on the 95 % variant, although
    the slabs allow 1 there (the Bayes accuracy).
When x_1 is noise the only usable features are the slabs, so the opposite holds: S^c
randomisation must drop a trained net to chance. We compute each reference by Monte Carlo on
fresh data with the same test-time permutations, applying the x_1-only rule sign(x_1) and the
slab-only rule (majority vote of the per-coordinate slab labels): data only, no trained model.
"""

from __future__ import annotations

import numpy as np
import torch

from replica import runtime

LIN_MARGIN = 0.1  # linear margin (fraction of the data width 1), the authors' default
SLAB_MARGIN = 0.1  # half of the gap between neighbouring slabs
SLAB_WIDTH = (2 - 8 * SLAB_MARGIN) / 5  # five slabs and four gaps of 2 * margin fill [-1, 1]
P_CENTRE = 0.75  # y = -1 points in the centre slab (else in the two outer slabs)
CONDITIONS = ("clean", "s_rand", "sc_rand")


# ----------------------------------------------------------------------------- data
def lms5(n: int, d: int, rng: np.random.Generator):
    """n points of LMS-5 in d dimensions (coordinate 0 linear, 1..d-1 five-slab)."""
    y = rng.choice([-1.0, 1.0], size=n)
    x = np.empty((n, d))
    x[:, 0] = y * (LIN_MARGIN + (1 - LIN_MARGIN) * rng.random(n))
    u = rng.random((n, d - 1))
    sign = rng.choice([-1.0, 1.0], size=(n, d - 1))
    positive = sign * (SLAB_WIDTH / 2 + 2 * SLAB_MARGIN + SLAB_WIDTH * u)
    outer = sign * (1.5 * SLAB_WIDTH + 4 * SLAB_MARGIN + SLAB_WIDTH * u)
    centre = sign * SLAB_WIDTH * u / 2
    negative = np.where(rng.random((n, d - 1)) < P_CENTRE, centre, outer)
    x[:, 1:] = np.where(y[:, None] > 0, positive, negative)
    return x, y


def slab_label(x: np.ndarray) -> np.ndarray:
    """The label a single 5-slab coordinate implies: +1 on the middle-distance slabs."""
    a = np.abs(x)
    return np.where((a > SLAB_WIDTH / 2) & (a < 1.5 * SLAB_WIDTH + 4 * SLAB_MARGIN), 1.0, -1.0)


def exact_subset(n: int, frac: float, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: round(frac * n)]] = True
    return mask


def one_seed(params: dict, seed: int) -> dict[str, np.ndarray]:
    """Train and test sets of one seed, with everything the variants and test conditions need."""
    rng = np.random.default_rng(seed)
    n, n_test, d = params["n_train"], params["n_test"], params["d"]
    x, y = lms5(n, d, rng)
    xt, yt = lms5(n_test, d, rng)
    return {
        "x_train": x,
        "y_train": y,
        "x_test": xt,
        "y_test": yt,
        "flip_train": exact_subset(n, params["lin_corrupt"], rng),  # lin95: x_1 sign flips
        "flip_test": exact_subset(n_test, params["lin_corrupt"], rng),
        "noise_train": rng.uniform(-1, 1, n),  # noise: replaces x_1
        "noise_test": rng.uniform(-1, 1, n_test),
        "perm_s": rng.permutation(n_test),  # S-randomisation of x_1
        "perm_sc": rng.permutation(n_test),  # S^c-randomisation of the slab block
    }


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    parts = [one_seed(params, 7919 * seed + 11) for seed in seeds]
    return {key: np.stack([p[key] for p in parts]) for key in parts[0]}


def variant_x(x: np.ndarray, flip: np.ndarray, noise: np.ndarray, variant: str) -> np.ndarray:
    """Apply a variant to the linear coordinate (x, flip, noise carry a leading seed axis
    or not)."""
    x = x.copy()
    if variant == "lin95":
        x[..., 0] = np.where(flip, -x[..., 0], x[..., 0])
    elif variant == "noise":
        x[..., 0] = noise
    elif variant != "lms":
        raise ValueError(f"unknown variant {variant}")
    return x


def randomised_test_sets(x: np.ndarray, perm_s: np.ndarray, perm_sc: np.ndarray) -> dict:
    """clean, S-randomised (x_1 permuted) and S^c-randomised (slab block permuted) test
    inputs; x (n, d) for one seed."""
    s_rand = x.copy()
    s_rand[:, 0] = x[perm_s, 0]
    sc_rand = x.copy()
    sc_rand[:, 1:] = x[perm_sc, 1:]
    return {"clean": x, "s_rand": s_rand, "sc_rand": sc_rand}


# ----------------------------------------------------------------------------- theory
def rule_accuracies(params: dict, variant: str, n: int, seed: int) -> dict[str, dict]:
    """Monte Carlo accuracy of the x_1-only rule sign(x_1) and of the slab-only rule (majority
    of the per-coordinate slab labels) under the three test conditions, on fresh data."""
    sample = one_seed({**params, "n_train": 1, "n_test": n}, seed)
    x = variant_x(sample["x_test"], sample["flip_test"], sample["noise_test"], variant)
    y = sample["y_test"]
    out = {"linear_rule": {}, "slab_rule": {}}
    for cond, xc in randomised_test_sets(x, sample["perm_s"], sample["perm_sc"]).items():
        out["linear_rule"][cond] = float(np.mean(np.sign(xc[:, 0]) == y))
        out["slab_rule"][cond] = float(np.mean(np.sign(slab_label(xc[:, 1:]).sum(1)) == y))
    return out


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    n = params["n_theory"]
    rules = {v: rule_accuracies(params, v, n, 2020 + i) for i, v in enumerate(params["variants"])}
    return {
        "rules": rules,
        # extreme SB: the net behaves like the x_1-only rule when x_1 is informative ...
        "sb_s_rand_acc": rules["lms"]["linear_rule"]["s_rand"],
        "sb_sc_rand_acc": rules["lms"]["linear_rule"]["sc_rand"],
        "sb_lin95_acc": rules["lin95"]["linear_rule"]["clean"],
        "bayes_lin95_acc": rules["lin95"]["slab_rule"]["clean"],
        # ... and like the slab-only rule when it is noise (control)
        "noise_sc_rand_acc": rules["noise"]["slab_rule"]["sc_rand"],
        "noise_clean_acc": rules["noise"]["slab_rule"]["clean"],
    }


# ----------------------------------------------------------------------------- model
def init_mlp(d: int, width: int, depth: int, seeds: list[int], device, dtype):
    """Per-seed weights stacked on a leading axis, PyTorch's default Linear init
    (uniform(+-1/sqrt(fan_in)) for weights and biases); W (S, fan_in, fan_out)."""
    dims = [d] + [width] * depth + [1]
    params = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        w, b = [], []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 97 * depth + fan_out)
            bound = fan_in**-0.5
            w.append((torch.rand(fan_in, fan_out, generator=gen, dtype=dtype) * 2 - 1) * bound)
            b.append((torch.rand(1, fan_out, generator=gen, dtype=dtype) * 2 - 1) * bound)
        params += [torch.stack(w).to(device), torch.stack(b).to(device)]
    return [p.requires_grad_() for p in params]


def mlp(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Batched ReLU MLP: x (S, B, d) -> logits (S, B)."""
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = torch.baddbmm(params[2 * i + 1], h, params[2 * i])
        if i < n_layers - 1:
            h = torch.relu(h)
    return h[..., 0]


def train_depth(x, y, depth: int, params: dict, seeds: list[int], device, label: str):
    """Minibatch SGD with heavy-ball momentum on the mean logistic loss, seeds batched;
    each seed draws its own batch order."""
    s, n, d = x.shape
    weights = init_mlp(d, params["width"], depth, seeds, device, x.dtype)
    velocity = [torch.zeros_like(w) for w in weights]
    gens = [torch.Generator().manual_seed(int(seed) * 31 + depth) for seed in seeds]
    bsz, lr, mom = params["batch"], params["lr"], params["momentum"]
    steps_per_epoch = n // bsz
    tick = runtime.Progress(params["epochs"], f"train {label} depth {depth}")
    for epoch in range(params["epochs"]):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        for k in range(steps_per_epoch):
            idx = order[:, k * bsz : (k + 1) * bsz]
            xb = torch.gather(x, 1, idx[..., None].expand(-1, -1, d))
            yb = torch.gather(y, 1, idx)
            # sum over seeds of per-seed mean losses: each seed gets its own gradient
            loss = torch.nn.functional.softplus(-yb * mlp(weights, xb)).mean(1).sum()
            grads = torch.autograd.grad(loss, weights)
            with torch.no_grad():
                for w, v, g in zip(weights, velocity, grads, strict=True):
                    v.mul_(mom).add_(g)
                    w.sub_(lr * v)
        tick(epoch, loss=float(loss.detach()) / s)
    return weights


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One variant, every depth; returns test logits under each condition and train accuracy."""
    variant = point["variant"]
    dtype = torch.float32
    x_train = variant_x(data["x_train"], data["flip_train"], data["noise_train"], variant)
    x_test = variant_x(data["x_test"], data["flip_test"], data["noise_test"], variant)
    perms = zip(x_test, data["perm_s"], data["perm_sc"], strict=True)
    conds = [randomised_test_sets(*args) for args in perms]
    xt = torch.as_tensor(x_train, dtype=dtype, device=device)
    yt = torch.as_tensor(data["y_train"], dtype=dtype, device=device)
    out = {"depths": np.asarray(params["depths"])}
    for depth in params["depths"]:
        weights = train_depth(xt, yt, depth, params, seeds, device, variant)
        with torch.no_grad():
            out[f"train_logits__d{depth}"] = mlp(weights, xt).cpu().numpy()
            for cond in CONDITIONS:
                xc = torch.as_tensor(np.stack([c[cond] for c in conds]), dtype=dtype)
                out[f"{cond}_logits__d{depth}"] = mlp(weights, xc.to(device)).cpu().numpy()
    return out


# ----------------------------------------------------------------------------- measure
def accuracy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-seed accuracy of sign(logit); logits and y (S, n). A zero logit counts as wrong."""
    return np.mean(np.sign(logits) == y, axis=-1)


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    out = {}
    for pid, point in points.items():
        run = runs[pid]
        depths = [int(d) for d in run["depths"]]
        res = {"depths": depths, "train": []}
        for cond in CONDITIONS:
            res[cond] = []
        for depth in depths:
            res["train"].append(accuracy(run[f"train_logits__d{depth}"], data["y_train"]))
            for cond in CONDITIONS:
                res[cond].append(accuracy(run[f"{cond}_logits__d{depth}"], data["y_test"]))
        out[point["variant"]] = res  # lists (depths, seeds)
    return {"variants": out}


# ----------------------------------------------------------------------------- verdict
def worst_depth(values, worst: str) -> list[float]:
    """Per seed, the worst of that seed's depths ('min' or 'max'); values (depths, seeds)."""
    v = np.asarray(values, dtype=float)
    return (v.min(0) if worst == "min" else v.max(0)).tolist()


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and the data-only references."""
    lms, lin95, noise = (metrics["variants"][k] for k in ("lms", "lin95", "noise"))
    return {
        "lms_clean_acc": worst_depth(lms["clean"], "min"),
        "lms_s_rand_acc": worst_depth(lms["s_rand"], "max"),
        "lms_sc_rand_acc": worst_depth(lms["sc_rand"], "min"),
        "lin95_test_acc": worst_depth(lin95["clean"], "max"),
        "lin95_s_rand_acc": worst_depth(lin95["s_rand"], "max"),
        # per seed, averaged over that seed's depths
        "noise_clean_acc": np.mean(noise["clean"], axis=0).tolist(),
        "noise_sc_rand_acc": np.mean(noise["sc_rand"], axis=0).tolist(),
        "theory_s_rand_acc": float(theory["sb_s_rand_acc"]),
        "theory_sc_rand_acc": float(theory["sb_sc_rand_acc"]),
        "theory_lin95_acc": float(theory["sb_lin95_acc"]),
        "theory_bayes_lin95_acc": float(theory["bayes_lin95_acc"]),
        "theory_noise_sc_rand_acc": float(theory["noise_sc_rand_acc"]),
    }
