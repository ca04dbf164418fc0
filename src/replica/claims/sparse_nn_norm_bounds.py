"""Norm-based generalization bounds for compositionally sparse networks (Galanti, Xu, Galanti,
Poggio, "Norm-based Generalization Bounds for Compositionally Sparse Neural Networks",
NeurIPS 2023, arXiv 2301.12033).

Claim. For sparse ReLU networks, where each neuron sees only a few inputs (convolutional nets
included), the Rademacher complexity is controlled by the norms of the convolutional filters
and the degrees of the neurons, not by the norms of the unrolled (Toeplitz) weight matrices,
whatever the weight sharing. The resulting bound is valid, can be orders of magnitude tighter
than the standard norm-based bound, and is close to non-vacuous.

Setting. z ~ N(0, I_D), D = 2^L, inputs on the unit sphere x = z / ||z||, labels
y = sign(h(sqrt(D) x) - t) with h a depth-L binary tree of g(a, b) = (a + b + a b) / sqrt(3): the
target is compositionally sparse along the same tree as the network; t, the median of h, balances
the classes. Seeds change the training
sample, the random labels and the initialisation; the test inputs are shared.

Network. A 1-D tree CNN: L bias-free ReLU convolutions with kernel = stride = 2 (layer l has
P_l = D / 2^l output positions and filter w_l of shape (2 C_{l-1}, C_l)), then a linear
read-out u of the last single position. rho = prod_l ||w_l||_F ||u||.

Theory (our derivation for this architecture by the paper's peeling technique; the paper's
form with d_l = 2 and K = 1). For the class with norm product <= rho on a sample of m points,
    sparse:  R_S <= rho 2^{L/2} s (1 + sqrt(2 (L log 2 + log D))) / m,
             s = max_j sqrt(sum_i x_ij^2)  (a sum over the 2 children per layer, D leaf paths),
    dense:   R_S <= rho_T sqrt(sum_i ||x_i||^2) (1 + sqrt(2 L log 2)) / m  (Golowich et al.),
             rho_T = rho prod_l sqrt(P_l)  (the Toeplitz matrix of a stride-2 conv repeats
             the filter P_l times).
Either one in the binary margin bound with the authors' union bound over integer levels of
c = rho / gamma: with probability 1 - delta, for every gamma at once,
    test error <= train margin error at gamma + 2 (c + 1) A / m
                  + 3 sqrt(log(2 (c + 2)^2 / delta) / (2 m)),
A the data factor above (rho divided out). The data factors and their ratio come from the data
alone (theory step); the bounds are evaluated on the trained weights, as in the paper.

Experiment. One batch of networks (sample sizes x seeds) trained by minibatch Adam on the
logistic loss, once with the tree labels and once with random labels (same inputs, init and
steps). Measure: each bound minimised over gamma on the training margins, the held-out error.

Primary. The sparse bound of the trained CNN at the largest training set is non-vacuous (< 1).
Ablation. Random labels (the target's structure removed): the sparse bound must rise.
Preconditions: the dense/sparse ratio (both bounds share the norm product, so the architecture
and the data fix it); for a fully connected network of the same depth the two forms agree.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from replica import runtime

KERNEL = 2  # every neuron sees 2 positions of the layer below (kernel = stride = 2)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


# ----------------------------------------------------------------------------- data
def tree_target(z: np.ndarray) -> np.ndarray:
    """h(z): a binary tree of g(a, b) = (a + b + a b) / sqrt(3) over adjacent pairs:
    (..., D) -> (...)."""
    h = np.asarray(z, dtype=float)
    while h.shape[-1] > 1:
        a, b = h[..., 0::2], h[..., 1::2]
        h = (a + b + a * b) / np.sqrt(3)
    return h[..., 0]


MEDIAN_DRAWS = 2**16  # Monte Carlo draws for the label threshold (class balance within about 0.4 %)


@cache
def label_threshold(dim: int) -> float:
    """The median of h(sqrt(dim) x) for x uniform on the sphere (fixed Monte Carlo sample):
    h is skewed (its median is below 0), so thresholding there balances the two classes."""
    z = np.random.default_rng(2301).standard_normal((MEDIAN_DRAWS, dim))
    x = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return float(np.median(tree_target(np.sqrt(dim) * x)))


def sample_inputs(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm inputs x = z / ||z|| and their tree labels sign(h(sqrt(dim) x) - median) in
    {-1, +1}."""
    z = rng.standard_normal((n, dim))
    x = z / np.linalg.norm(z, axis=-1, keepdims=True)
    y = np.where(tree_target(np.sqrt(dim) * x) >= label_threshold(dim), 1.0, -1.0)
    return x, y


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: the largest training sample (smaller ones are its prefixes), tree and random
    labels; one shared test set with tree labels and per-seed random test labels."""
    dim, n_max = 2 ** params["depth"], max(params["sample_sizes"])
    out: dict[str, list] = {"x_train": [], "y_train_tree": [], "y_train_random": []}
    out["y_test_random"] = []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        x, y = sample_inputs(rng, n_max, dim)
        out["x_train"].append(x.astype(np.float32))
        out["y_train_tree"].append(y)
        out["y_train_random"].append(rng.choice([-1.0, 1.0], n_max))
        out["y_test_random"].append(rng.choice([-1.0, 1.0], params["n_test"]))
    data = {key: np.asarray(value) for key, value in out.items()}
    x_test, y_test = sample_inputs(
        np.random.default_rng([params["data_seed"]]), params["n_test"], dim
    )
    data["x_test"], data["y_test_tree"] = x_test.astype(np.float32), y_test
    return data


# ----------------------------------------------------------------------------- theory
def output_positions(depth: int) -> np.ndarray:
    """P_l = D / 2^l output positions of conv layer l = 1..L."""
    return 2 ** (depth - np.arange(1, depth + 1))


def sparse_data_factor(x: np.ndarray, depth: int) -> np.ndarray:
    """A_sparse = 2^{L/2} max_j sqrt(sum_i x_ij^2) (1 + sqrt(2 (L log 2 + log D))) for x of
    shape (..., m, D), per leading axis."""
    dim = x.shape[-1]
    s = np.sqrt((np.asarray(x, float) ** 2).sum(-2).max(-1))
    paths = np.log(KERNEL) * depth  # log of the number of leaf paths, D = KERNEL^L
    assert np.isclose(np.exp(paths), dim)
    return KERNEL ** (depth / 2) * s * (1 + np.sqrt(2 * (depth * np.log(2) + paths)))


def dense_data_factor(x: np.ndarray, depth: int) -> np.ndarray:
    """A_dense = sqrt(sum_i ||x_i||^2) (1 + sqrt(2 L log 2)): Golowich et al.'s Frobenius bound,
    which multiplies the product rho_T of the Toeplitz norms."""
    total = np.sqrt((np.asarray(x, float) ** 2).sum((-2, -1)))
    return total * (1 + np.sqrt(2 * depth * np.log(2)))


def toeplitz_factor(depth: int) -> float:
    """rho_T / rho = prod_l sqrt(P_l): the Toeplitz matrix of a stride-2 conv holds the filter
    once per output position, so ||T_l||_F = sqrt(P_l) ||w_l||_F."""
    return float(np.sqrt(output_positions(depth).astype(float)).prod())


def mlp_data_ratio(x: np.ndarray, depth: int) -> np.ndarray:
    """Dense over sparse data factor for a fully connected ReLU net of the same depth: its first
    layer has degree D (one position), deeper layers degree 1, so the sparse form is
    sqrt(D) s (1 + sqrt(2 (L log 2 + log D))) against
    sqrt(sum_i ||x_i||^2) (1 + sqrt(2 L log 2))."""
    x = np.asarray(x, float)
    dim = x.shape[-1]
    s = np.sqrt((x**2).sum(-2).max(-1))
    sparse = np.sqrt(dim) * s * (1 + np.sqrt(2 * (depth * np.log(2) + np.log(dim))))
    dense = np.sqrt((x**2).sum((-2, -1))) * (1 + np.sqrt(2 * depth * np.log(2)))
    return dense / sparse


def data_factors(data: dict, params: dict) -> dict[str, np.ndarray]:
    """Sparse and dense data factors per sample size and seed: (N, S)."""
    depth, x = params["depth"], data["x_train"]
    sizes = params["sample_sizes"]
    return {
        "sparse": np.stack([sparse_data_factor(x[:, :n], depth) for n in sizes]),
        "dense": np.stack([dense_data_factor(x[:, :n], depth) for n in sizes]),
    }


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    factors = data_factors(data, params)
    x_largest = data["x_train"][:, : max(params["sample_sizes"])]
    return {
        "sample_sizes": list(params["sample_sizes"]),
        "sparse_factor": factors["sparse"],
        "dense_factor": factors["dense"],
        # the ratio of the two bounds when rho / gamma is large (the +1 terms negligible)
        "architecture_ratio": toeplitz_factor(params["depth"])
        * factors["dense"]
        / factors["sparse"],
        "mlp_architecture_ratio": mlp_data_ratio(x_largest, params["depth"]),
    }


def gap_bound(c: np.ndarray, factor, m: int, delta: float) -> np.ndarray:
    """Bound on test error - train margin error:
    2 (c + 1) A / m + 3 sqrt(log(2 (c + 2)^2 / delta) / (2 m))."""
    c = np.asarray(c, float)
    return 2 * (c + 1) * factor / m + 3 * np.sqrt(np.log(2 * (c + 2) ** 2 / delta) / (2 * m))


def best_margin_bound(margins: np.ndarray, rho: float, factor: float, delta: float):
    """min over gamma of [train margin error at gamma + gap_bound(rho / gamma)]. The margin loss
    of the theorem is the ramp min(1, max(0, 1 - t / gamma)), at most the fraction of margins
    t < gamma; that fraction is constant between two training margins while gap_bound falls
    with gamma, so the minimum sits at a training margin: gamma runs over the positive ones.
    Returns (bound, gamma*, train margin error at gamma*)."""
    m = len(margins)
    sorted_margins = np.sort(np.asarray(margins, float))
    margin_error = np.searchsorted(sorted_margins, sorted_margins, side="left") / m  # t < gamma
    positive = sorted_margins > 0
    if not positive.any():
        return 1.0 + float(gap_bound(0.0, factor, m, delta)), np.inf, 1.0
    gammas, errors = sorted_margins[positive], margin_error[positive]
    bounds = errors + gap_bound(rho / gammas, factor, m, delta)
    best = int(np.argmin(bounds))
    return float(bounds[best]), float(gammas[best]), float(errors[best])


# ----------------------------------------------------------------------------- network
def init_weights(rng: np.random.Generator, depth: int, channels: int) -> list[np.ndarray]:
    """He-initialised filters (2 C_{l-1}, C_l) for l = 1..L and a read-out (C_L, 1), float32."""
    weights, fan_in_channels = [], 1
    for _ in range(depth):
        fan_in = KERNEL * fan_in_channels
        w = rng.standard_normal((fan_in, channels)) * np.sqrt(2 / fan_in)
        weights.append(w.astype(np.float32))
        fan_in_channels = channels
    weights.append((rng.standard_normal((channels, 1)) / np.sqrt(channels)).astype(np.float32))
    return weights


class Workspace:
    """Reusable output arrays by name and shape. Why: numpy allocates every large temporary
    afresh and this machine's allocator hands arrays above 128 KiB back to the OS, so a training
    step with fresh arrays spent as much time in page faults as in arithmetic (measured: 8.6 s
    of system time against 8.9 s of user time for the quick run)."""

    def __init__(self):
        self.arrays: dict = {}

    def __call__(self, name, shape, dtype) -> np.ndarray:
        key = (name, tuple(shape), np.dtype(dtype))
        if key not in self.arrays:
            self.arrays[key] = np.empty(shape, dtype)
        return self.arrays[key]


def fresh(name, shape, dtype) -> np.ndarray:
    return np.empty(shape, dtype)


def forward(weights: list[np.ndarray], x: np.ndarray, space=fresh):
    """Batched tree CNN. weights[l]: (B, 2 C, C'), x: (B, n, D). A stride-2 kernel-2 conv is a
    reshape of adjacent positions into rows followed by one matmul. Returns the outputs (B, n)
    and the per-layer inputs and pre-activations for the backward pass (held in `space`)."""
    batch, n, _ = x.shape
    dtype = np.result_type(x, weights[0])
    rows = x.reshape(batch, -1, KERNEL)  # (B, n * P_1, 2): each row one neuron's receptive field
    inputs, pre = [], []
    for layer, w in enumerate(weights[:-1]):
        inputs.append(rows)
        u = np.matmul(rows, w, out=space(("pre", layer), (*rows.shape[:-1], w.shape[-1]), dtype))
        pre.append(u)
        if layer < len(weights) - 2:  # pair adjacent positions for the next layer
            act = np.maximum(u, 0, out=space(("act", layer), u.shape, dtype))
            rows = act.reshape(batch, -1, KERNEL * w.shape[-1])
    last = np.maximum(pre[-1], 0, out=space("last", pre[-1].shape, dtype))  # (B, n, C_L)
    return (last @ weights[-1])[..., 0], inputs, pre, last


def logistic_gradients(weights, x, y, space=fresh):
    """Gradients of the mean logistic loss log(1 + exp(-y f(x))) in every weight, batched."""
    out, inputs, pre, last = forward(weights, x, space)
    d_out = -y / (1 + np.exp(np.clip(y * out, -50, 50))) / x.shape[1]  # (B, n)
    grads = [None] * len(weights)
    grads[-1] = np.swapaxes(last, 1, 2) @ d_out[..., None]
    d_act = d_out[..., None] * np.swapaxes(weights[-1], 1, 2)  # (B, n, C_L)
    for layer in range(len(weights) - 2, -1, -1):
        u = pre[layer]
        mask = np.greater(u, 0, out=space(("mask", layer), u.shape, bool))
        d_pre = np.multiply(d_act, mask, out=space(("d_pre", layer), u.shape, u.dtype))
        grads[layer] = np.swapaxes(inputs[layer], 1, 2) @ d_pre
        if layer:  # back to the receptive fields of the layer below
            w_t = np.swapaxes(weights[layer], 1, 2)
            shape = (*d_pre.shape[:-1], w_t.shape[-1])
            d_rows = np.matmul(d_pre, w_t, out=space(("d_rows", layer), shape, u.dtype))
            d_act = d_rows.reshape(d_rows.shape[0], -1, weights[layer - 1].shape[-1])
    return grads


def predict(weights, x: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Outputs (B, n) in chunks of points: activations that stay in the CPU cache (chunks of 128
    points ran 3x faster than 1024 here), in reused arrays."""
    space = Workspace()
    return np.concatenate(
        [forward(weights, x[:, lo : lo + chunk], space)[0] for lo in range(0, x.shape[1], chunk)],
        axis=1,
    )


# ----------------------------------------------------------------------------- training
# networks per gradient call: first-layer activations of about this many bytes (kept in the
# CPU cache; with reused arrays, chunks of 8 networks ran faster than 24 at once or 1 at a time)
CHUNK_BYTES = 2**19


def network_chunks(n_networks: int, activations_per_network: int) -> list[slice]:
    per_chunk = max(1, CHUNK_BYTES // (4 * activations_per_network))  # float32
    return [slice(lo, lo + per_chunk) for lo in range(0, n_networks, per_chunk)]


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """Every sample size and seed as one batch of N x S networks (numpy float32), minibatch AdamW
    on the logistic loss; the same initialisation per seed for every sample size and label arm."""
    labels, sizes = point["labels"], np.asarray(params["sample_sizes"])
    depth, channels, steps = params["depth"], params["channels"], params["steps"]
    n_sizes, n_seeds = len(sizes), len(seeds)
    x_all = data["x_train"]  # (S, n_max, D)
    y_all = data[f"y_train_{labels}"].astype(np.float32)
    n_max, dim = x_all.shape[1:]
    x_flat, y_flat = x_all.reshape(-1, dim), y_all.reshape(-1)
    space = Workspace()
    inits = [
        init_weights(np.random.default_rng([params["data_seed"], s, 1]), depth, channels)
        for s in seeds
    ]
    # network k = (size index, seed index), size-major
    seed_of = np.tile(np.arange(n_seeds), n_sizes)
    size_of = np.repeat(sizes, n_seeds)
    weights = [np.stack([inits[s][layer] for s in seed_of]) for layer in range(depth + 1)]
    moments = [np.zeros_like(w) for w in weights]
    squares = [np.zeros_like(w) for w in weights]
    rng = np.random.default_rng([params["data_seed"], 2])
    lr, decay, (b1, b2) = params["learning_rate"], params["weight_decay"], ADAM_BETAS
    tick = runtime.Progress(steps, f"train {labels}")
    chunks = network_chunks(len(seed_of), params["batch_size"] * 2 ** (depth - 1) * channels)
    for step in range(1, steps + 1):
        # each network draws its minibatch from its own first n training points
        idx = (rng.random((len(seed_of), params["batch_size"])) * size_of[:, None]).astype(int)
        for c in chunks:  # independent networks: chunking changes the speed, not the result
            flat = (seed_of[c, None] * n_max + idx[c]).ravel()  # rows of x_flat
            x_batch = np.take(x_flat, flat, axis=0, out=space("x", (len(flat), dim), x_flat.dtype))
            y_batch = y_flat[flat].reshape(-1, params["batch_size"])
            x_batch = x_batch.reshape(-1, params["batch_size"], dim)
            grads = logistic_gradients([w[c] for w in weights], x_batch, y_batch, space)
            for w, g, mom, sq in zip(weights, grads, moments, squares, strict=True):
                mom[c] = b1 * mom[c] + (1 - b1) * g
                sq[c] = b2 * sq[c] + (1 - b2) * g * g
                adam = (mom[c] / (1 - b1**step)) / (np.sqrt(sq[c] / (1 - b2**step)) + ADAM_EPS)
                w[c] -= lr * (adam + decay * w[c])  # decoupled weight decay (AdamW)
        if step % max(1, steps // 10) == 0:
            tick(step - 1)
    x_test = np.broadcast_to(data["x_test"], (len(seed_of), *data["x_test"].shape))

    def by_size(a):  # (N * S, ...) -> (N, S, ...)
        return a.reshape(n_sizes, n_seeds, *a.shape[1:])

    out = {f"w{layer}": by_size(w) for layer, w in enumerate(weights)}
    # outputs on each network's own training points (padded with 0 to the largest size)
    f_train = np.zeros((n_sizes, n_seeds, x_all.shape[1]), dtype=np.float32)
    for i, n in enumerate(sizes):
        group = [w[i * n_seeds : (i + 1) * n_seeds] for w in weights]
        f_train[i, :, :n] = predict(group, x_all[:, :n])
    out["f_train"] = f_train
    out["f_test"] = by_size(predict(weights, x_test))
    return out


# ----------------------------------------------------------------------------- measure
def norm_product(run: dict, depth: int) -> np.ndarray:
    """rho = prod_l ||w_l||_F ||u||, (N, S)."""
    norms = [
        np.sqrt((np.asarray(run[f"w{layer}"], float) ** 2).sum((-2, -1)))
        for layer in range(depth + 1)
    ]
    return np.prod(norms, axis=0)


def toeplitz_norm_product(run: dict, depth: int) -> np.ndarray:
    """rho_T = prod_l ||T_l||_F ||u|| with ||T_l||_F = sqrt(P_l) ||w_l||_F (stride = kernel)."""
    return norm_product(run, depth) * toeplitz_factor(depth)


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per label arm, sample size and seed: both bounds at the sparse bound's best margin."""
    depth, delta, sizes = params["depth"], params["delta"], params["sample_sizes"]
    factors = data_factors(data, params)
    out: dict = {"sample_sizes": list(sizes), "arms": {}}
    for pid, point in points.items():
        run, labels = runs[pid], point["labels"]
        y_train, rho = data[f"y_train_{labels}"], norm_product(run, depth)
        y_test = data["y_test_tree"] if labels == "tree" else data["y_test_random"]
        rho_toeplitz = toeplitz_norm_product(run, depth)
        f_train, f_test = np.asarray(run["f_train"], float), np.asarray(run["f_test"], float)
        keys = ("sparse_bound", "dense_bound", "sparse_gap_bound", "dense_gap_bound", "gamma_star")
        keys += ("normalised_margin", "train_margin_error", "train_error", "test_error", "rho")
        arm = {key: np.zeros((len(sizes), f_train.shape[1])) for key in keys}
        for i, n in enumerate(sizes):
            for s in range(f_train.shape[1]):
                margins = y_train[s, :n] * f_train[i, s, :n]
                bound, gamma, margin_err = best_margin_bound(
                    margins, rho[i, s], factors["sparse"][i, s], delta
                )
                dense_gap = gap_bound(rho_toeplitz[i, s] / gamma, factors["dense"][i, s], n, delta)
                arm["sparse_bound"][i, s] = bound
                arm["sparse_gap_bound"][i, s] = bound - margin_err
                arm["dense_gap_bound"][i, s] = dense_gap
                arm["dense_bound"][i, s] = margin_err + dense_gap
                arm["gamma_star"][i, s] = gamma
                arm["normalised_margin"][i, s] = gamma / rho[i, s]
                arm["train_margin_error"][i, s] = margin_err
                arm["train_error"][i, s] = np.mean(margins <= 0)
                test_margins = (y_test if y_test.ndim == 1 else y_test[s]) * f_test[i, s]
                arm["test_error"][i, s] = np.mean(test_margins <= 0)
                arm["rho"][i, s] = rho[i, s]
        out["arms"][labels] = arm
    return out


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics at the largest sample size (index -1) and over all of them."""
    tree, random = metrics["arms"]["tree"], metrics["arms"]["random"]

    def last(arm, key):
        return np.asarray(arm[key])[-1]

    slack = [
        np.asarray(arm["sparse_bound"]) - np.asarray(arm["test_error"]) for arm in (tree, random)
    ]
    return {
        "bound_ratio_dense_over_sparse": (
            last(tree, "dense_gap_bound") / last(tree, "sparse_gap_bound")
        ).tolist(),
        "architecture_ratio": np.asarray(theory["architecture_ratio"])[-1].tolist(),
        "sparse_bound_slack": np.min(np.concatenate(slack, axis=0), axis=0).tolist(),
        "sparse_bound_largest_n": last(tree, "sparse_bound").tolist(),
        "dense_bound_largest_n": last(tree, "dense_bound").tolist(),
        "sparse_bound_over_test_error": (
            last(tree, "sparse_bound") / last(tree, "test_error")
        ).tolist(),
        "bound_rise_random_labels": (
            last(random, "sparse_bound") - last(tree, "sparse_bound")
        ).tolist(),
        "mlp_architecture_ratio": list(theory["mlp_architecture_ratio"]),
        "test_error_true_largest_n": last(tree, "test_error").tolist(),
        "test_error_random_largest_n": last(random, "test_error").tolist(),
    }
