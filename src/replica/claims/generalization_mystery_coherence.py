"""Gradient coherence on real and random labels (Chatterjee & Zielinski, "On the Generalization
Mystery in Deep Learning", arXiv 2203.10036).

Claim. Gradient descent generalises when the per-example gradients are coherent: a step along
their mean helps many examples at once. The paper's metric over a sample of m examples with
per-example loss gradients g_1..g_m is
    alpha_m = ||(1/m) sum_i g_i||^2 / ((1/m) sum_i ||g_i||^2)  =  E[g_z . g_z'] / E[g_z . g_z]
(z, z' drawn independently from the sample), reported against its orthogonal limit
alpha_perp_m = 1/m (pairwise orthogonal gradients); alpha_m / alpha_perp_m is the number of
examples of the sample that a small step along one example's gradient helps, on average. The paper
finds it very different on real and random labels: with real labels each example helps tens of
others during training, with random labels only one or two. Robust averaging of per-example
gradients (median of means) suppresses the weak directions that memorisation needs, and so
attenuates memorisation.

Setting. A two-class Gaussian mixture in R^d: labels y = +-1, inputs x = y mu + N(0, I), ||mu||
fixed; random labels are fresh fair coins for the same inputs. A bias-free ReLU MLP d-h-h-1 in the
NTK-style scaling of replica.blocks.kernel_ridge.relu_kernels (unit Gaussian weights, He factors
in the forward pass), logistic loss log(1 + exp(-y f)), minibatch SGD. The second hidden layer is
initialised antisymmetrically (its second half copies the first, with the read-out negated), so
f_0 = 0 exactly.

Theory. (Paper) alpha_perp_m = 1/m. (Ours) At f_0 = 0 the loss derivative is -y/2 for every
example, so g_i = -(y_i / 2) grad f(x_i) and
    alpha_m / alpha_perp_m = sum_ij y_i y_j Theta_ij / sum_i Theta_ii,
with Theta the tangent kernel at initialisation. For labels independent of x, E[y_i y_j] = 0
(i != j) gives an expectation of exactly 1, the orthogonal limit. For the mixture's real labels
the infinite-width kernel gives the value at initialisation, computed on the data alone, and its
lazy (kernel-regime) trajectory under SGD in function space on the same minibatches. The kernel is
the ReLU NTK of relu_kernels less its first layer's share: with the antisymmetric second layer the
signal back-propagated to W1 cancels exactly, so W1 has no gradient at initialisation.

Experiment. Both label sets (one training job each), and in each two optimisers on the same
minibatches from the same initialisation: plain SGD (the mean of the batch gradient) and M3
(the per-coordinate median of the mean gradients of three equal groups of the batch). All seeds
and both optimisers train together as one batch of networks (numpy, a hand-written backward
pass). At log-spaced checkpoints: alpha_m / alpha_perp_m over the whole training set (m = n),
from the per-example gradient norms (each layer's gradient of one example is an outer product,
so its squared norm is a product of two squared norms) and the norm of the summed gradient;
training and test accuracy.

Controls. Random labels (the label-input relation removed; same inputs, init, batches, SGD): the
coherence must stay near the orthogonal limit. M3 is compared with plain SGD on the same batches.
"""

from __future__ import annotations

import numpy as np

from replica import runtime
from replica.blocks.kernel_ridge import arccos0, arccos1

OPTIMISERS = ("sgd", "m3")  # the batch axis of a training job: optimiser-major, then seeds
M3_GROUPS = 3


# ----------------------------------------------------------------------------- data
def mixture(rng: np.random.Generator, mean: np.ndarray, n: int):
    """n draws of the two-class mixture: labels +-1, inputs y mu + N(0, I)."""
    y = rng.choice([-1.0, 1.0], n)
    return y[:, None] * mean + rng.standard_normal((n, len(mean))), y


def init_weights(rng: np.random.Generator, dim: int, width: int):
    """Unit Gaussian weights; the second hidden layer's second half copies its first half and the
    read-out negates it there, so the network is exactly 0 at initialisation."""
    half = width // 2
    w1 = rng.standard_normal((dim, width))
    w2_half = rng.standard_normal((width, half))
    v_half = rng.standard_normal(half)
    return w1, np.concatenate([w2_half, w2_half], 1), np.concatenate([v_half, -v_half])


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: the mean direction, training inputs with real and random labels, a test set,
    the initial weights and the minibatch order (shared by every arm of the seed)."""
    dim, n, width = params["dim"], params["n_train"], params["width"]
    batches_per_epoch = n // params["batch"]
    epochs = -(-params["steps"] // batches_per_epoch)
    out: dict[str, list] = {
        k: []
        for k in ("x_train", "y_real", "y_random", "x_test", "y_test", "w1", "w2", "v", "order")
    }
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        direction = rng.standard_normal(dim)
        mean = params["mean_norm"] * direction / np.linalg.norm(direction)
        x, y = mixture(rng, mean, n)
        x_test, y_test = mixture(rng, mean, params["n_test"])
        w1, w2, v = init_weights(rng, dim, width)
        # epochs of shuffled batches, cut to the step budget: (steps, batch)
        order = np.concatenate(
            [rng.permutation(n)[: batches_per_epoch * params["batch"]] for _ in range(epochs)]
        )
        order = order.reshape(-1, params["batch"])[: params["steps"]]
        for key, value in (
            ("x_train", x),
            ("y_real", y),
            ("y_random", rng.choice([-1.0, 1.0], n)),
            ("x_test", x_test),
            ("y_test", y_test),
            ("w1", w1),
            ("w2", w2),
            ("v", v),
            ("order", order),
        ):
            out[key].append(value)
    return {key: np.asarray(value) for key, value in out.items()}


def checkpoint_steps(params: dict) -> np.ndarray:
    """Steps (0 = initialisation) at which coherence and accuracies are recorded."""
    return runtime.log_spaced_steps(params["steps"], params["checkpoints"], with_zero=True)


# ----------------------------------------------------------------------------- theory
def orthogonal_limit(m: int) -> float:
    """alpha_perp_m = 1/m: alpha_m of m pairwise orthogonal gradients (the paper's reference)."""
    return 1.0 / m


def coherence_from_kernel(kernel: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """alpha_m / alpha_perp_m for per-example gradients g_i = r_i grad f(x_i) whose tangent
    kernel is `kernel` (..., m, m): sum_ij r_i r_j K_ij / sum_i r_i^2 K_ii."""
    together = np.einsum("...i,...ij,...j->...", residual, kernel, residual)
    alone = np.einsum("...i,...ii->...", residual**2, kernel)
    return together / alone


def layer_kernels(x: np.ndarray) -> dict[str, np.ndarray]:
    """The infinite-width tangent kernel of the d-h-h-1 net split by layer: the contribution of
    the gradients in W1, W2 and v (they sum to relu_kernels(x, x, hidden_layers=2)'s NTK).
    Sigma_1 = x x'/d, Sigma_{l+1} = sqrt(s s') kappa1(u_l), u_l the correlation of Sigma_l."""
    cov = x @ x.T / x.shape[-1]
    norm = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    corr1 = np.clip(cov / norm, -1, 1)
    cov2 = norm * arccos1(corr1)  # the second layer's input kernel (the diagonal is kept)
    corr2 = np.clip(cov2 / norm, -1, 1)
    cov3 = norm * arccos1(corr2)  # the read-out's input kernel
    return {
        "w1": cov * arccos0(corr1) * arccos0(corr2),
        "w2": cov2 * arccos0(corr2),
        "v": cov3,
    }


def antisymmetric_ntk(x: np.ndarray) -> np.ndarray:
    """The tangent kernel of the network as initialised here: the two halves of the second
    hidden layer cancel in the back-propagated signal to the first layer, so W1's gradient is
    exactly zero at initialisation and only W2 and v contribute."""
    parts = layer_kernels(x)
    return parts["w2"] + parts["v"]


def lazy_trajectory(kernel, y, order, lr: float, record) -> tuple[np.ndarray, np.ndarray]:
    """The network's linearisation at infinite width: SGD in function space with the fixed
    tangent kernel, f <- f - lr K[:, batch] dl/df[batch] / |batch|, from f_0 = 0 on the same
    minibatches. Returns coherence and training accuracy at the `record` steps."""
    f = np.zeros(len(y))
    coherent, correct = [], []
    for step in range(len(order) + 1):
        if step in record:
            coherent.append(coherence_from_kernel(kernel, loss_derivative(f, y)))
            correct.append((predicted_label(f) == y).mean())
        if step == len(order):
            break
        batch = order[step]
        f = f - lr * kernel[:, batch] @ loss_derivative(f[batch], y[batch]) / len(batch)
    return np.asarray(coherent), np.asarray(correct)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    """From each seed's data alone (inputs, labels, minibatch order) and the infinite-width
    NTK of the network: coherence at initialisation (f_0 = 0, loss derivative -y/2), and the
    lazy (kernel-regime) trajectory of coherence and training accuracy under SGD."""
    record = set(checkpoint_steps(params).tolist())
    out: dict = {
        "m": int(params["n_train"]),
        "orthogonal_limit": orthogonal_limit(int(params["n_train"])),
        "init_coherence_random_expected": 1.0,
        "steps": checkpoint_steps(params).tolist(),
        "arms": {},
    }
    kernels = [antisymmetric_ntk(x) for x in data["x_train"]]
    for labels in ("real", "random"):
        init, coherent, correct = [], [], []
        for kernel, y, order in zip(kernels, data[f"y_{labels}"], data["order"], strict=True):
            init.append(coherence_from_kernel(kernel, loss_derivative(np.zeros(len(y)), y)))
            c, a = lazy_trajectory(kernel, y, order, params["lr"], record)
            coherent.append(c)
            correct.append(a)
        out["arms"][labels] = {
            "init_coherence": init,
            "lazy_coherence": np.asarray(coherent),  # (S, T)
            "lazy_train_accuracy": np.asarray(correct),
        }
    return out


# ----------------------------------------------------------------------------- network
def forward(weights, x):
    """Batched over networks B: x (B, P, d) -> activations and output f (B, P).
    f = sqrt(2/h) v . relu(u2), u2 = sqrt(2/h) relu(u1) W2, u1 = x W1 / sqrt(d)."""
    w1, w2, v = weights
    dim, width = w1.shape[-2], w1.shape[-1]
    c1, c2 = 1 / np.sqrt(dim), np.sqrt(2 / width)
    u1 = c1 * (x @ w1)
    h1 = np.maximum(u1, 0)
    u2 = c2 * (h1 @ w2)
    h2 = np.maximum(u2, 0)
    f = c2 * (h2 @ v[..., None])[..., 0]
    return (x, u1, h1, u2, h2), f


def loss_derivative(f, y):
    """d/df log(1 + exp(-y f)) = -y sigmoid(-y f), computed stably."""
    return -y * 0.5 * (1 - np.tanh(y * f / 2))


def backward(weights, cache, dl_df):
    """Per-layer back-propagated signals and the summed gradient sum_i dl_i/dtheta.
    Returns (grads (W1, W2, v), deltas (d1, d2, d_out) per example, layer inputs)."""
    w1, w2, v = weights
    x, u1, h1, u2, h2 = cache
    dim, width = w1.shape[-2], w1.shape[-1]
    c1, c2 = 1 / np.sqrt(dim), np.sqrt(2 / width)
    d_out = dl_df  # (B, P)
    d2 = c2 * d_out[..., None] * v[..., None, :] * (u2 > 0)  # dl/du2 (B, P, h)
    d1 = c2 * (d2 @ np.swapaxes(w2, -1, -2)) * (u1 > 0)  # dl/du1 (B, P, h)
    grad_v = c2 * (np.swapaxes(h2, -1, -2) @ d_out[..., None])[..., 0]
    grad_w2 = c2 * (np.swapaxes(h1, -1, -2) @ d2)
    grad_w1 = c1 * (np.swapaxes(x, -1, -2) @ d1)
    return (grad_w1, grad_w2, grad_v), (d1, d2, d_out), (x, h1, h2)


def coherence(weights, x, y) -> np.ndarray:
    """alpha_m / alpha_perp_m = ||sum_i g_i||^2 / sum_i ||g_i||^2 over the m = P examples, per
    network (B,). An example's gradient in each weight matrix is the outer product of the layer's
    input and back-propagated signal (times the layer's scale), so its squared norm is the product
    of their squared norms."""
    cache, f = forward(weights, x)
    grads, deltas, inputs = backward(weights, cache, loss_derivative(f, y))
    w1 = weights[0]
    scales = (1 / w1.shape[-2], 2 / w1.shape[-1], 2 / w1.shape[-1])  # squared layer scales
    d1, d2, d_out = deltas
    x_in, h1, h2 = inputs
    per_example = (
        scales[0] * (x_in**2).sum(-1) * (d1**2).sum(-1)
        + scales[1] * (h1**2).sum(-1) * (d2**2).sum(-1)
        + scales[2] * (h2**2).sum(-1) * d_out**2
    )  # (B, P)
    together = sum((g**2).sum(tuple(range(1, g.ndim))) for g in grads)
    return together / per_example.sum(-1)


def predicted_label(f):
    """The class of an output: +1 where f >= 0 (so f = 0 exactly is a guess, not an error)."""
    return np.where(f >= 0, 1.0, -1.0)


def accuracy(weights, x, y) -> np.ndarray:
    _, f = forward(weights, x)
    return (predicted_label(f) == y).mean(-1)


# ----------------------------------------------------------------------------- training
def median_of_three(a, b, c):
    """Per-coordinate median of three arrays (np.median sorts: several times slower here)."""
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def batch_update(weights, x, y, robust: np.ndarray):
    """The step direction per network: the batch-mean gradient (SGD) or, where `robust`, M3's
    per-coordinate median of the mean gradients of three equal consecutive groups."""
    b, n_batch = x.shape[:2]
    group = n_batch // M3_GROUPS
    # the three groups of every network side by side: weights broadcast over the group axis
    grouped = [w[:, None] for w in weights]
    xg = x.reshape(b, M3_GROUPS, group, x.shape[-1])
    cache, f = forward(grouped, xg)
    dl_df = loss_derivative(f, y.reshape(b, M3_GROUPS, group)) / group
    grads, _, _ = backward(grouped, cache, dl_df)  # (b, groups, ...): each group's mean
    out = []
    for g in grads:
        step = g.mean(1)  # SGD: the batch mean (the groups are equal)
        step[robust] = median_of_three(*(g[robust, k] for k in range(M3_GROUPS)))
        out.append(step)
    return out


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One label set: SGD and M3 for every seed as one batch of 2 S networks, the same batches."""
    labels = point["labels"]
    n_opt, n_seed = len(OPTIMISERS), len(seeds)

    def batch(a):  # (S, ...) -> (O * S, ...), optimiser-major
        return np.broadcast_to(a, (n_opt, *a.shape)).reshape(n_opt * n_seed, *a.shape[1:])

    weights = [batch(data[k]).copy() for k in ("w1", "w2", "v")]
    x, y = batch(data["x_train"]), batch(data[f"y_{labels}"])
    x_test, y_test = batch(data["x_test"]), batch(data["y_test"])
    order = batch(data["order"])  # (B, steps, batch)
    robust = np.repeat([opt == "m3" for opt in OPTIMISERS], n_seed)
    rows = np.arange(len(robust))[:, None]
    record = set(checkpoint_steps(params).tolist())
    log = {"coherence": [], "train_accuracy": [], "test_accuracy": []}
    tick = runtime.Progress(params["steps"] + 1, f"train {labels}")
    for step in range(params["steps"] + 1):
        if step in record:
            log["coherence"].append(coherence(weights, x, y))
            log["train_accuracy"].append(accuracy(weights, x, y))
            log["test_accuracy"].append(accuracy(weights, x_test, y_test))
        if step == params["steps"]:
            break
        idx = order[:, step]
        direction = batch_update(weights, x[rows, idx], y[rows, idx], robust)
        for w, g in zip(weights, direction, strict=True):
            w -= params["lr"] * g
        tick(step, train_acc=float(log["train_accuracy"][-1].mean()))

    def unbatch(rows_):  # list over checkpoints of (O * S,) -> (O, S, T)
        a = np.stack(rows_, axis=-1)
        return a.reshape(n_opt, n_seed, a.shape[-1])

    return {key: unbatch(value) for key, value in log.items()}


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per label set and optimiser: coherence and accuracies at every checkpoint (seeds, T)."""
    out = {"steps": checkpoint_steps(params).tolist(), "optimisers": list(OPTIMISERS), "arms": {}}
    for pid, point in points.items():
        run = runs[pid]
        out["arms"][point["labels"]] = {
            opt: {key: np.asarray(run[key])[i] for key in run} for i, opt in enumerate(OPTIMISERS)
        }
    return out


# ----------------------------------------------------------------------------- verdict
def early_window(steps, total: int, fraction: float) -> np.ndarray:
    """Checkpoints during the first `fraction` of training, initialisation excluded."""
    steps = np.asarray(steps)
    return (steps > 0) & (steps <= fraction * total)


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (seed order) and theory constants."""
    window = early_window(metrics["steps"], params["steps"], params["early_fraction"])
    real, rand = metrics["arms"]["real"], metrics["arms"]["random"]

    def early(arm):
        return np.asarray(arm["coherence"])[:, window].mean(-1)

    coh_real, coh_random = early(real["sgd"]), early(rand["sgd"])
    init_real = np.asarray(real["sgd"]["coherence"])[:, 0]
    init_random = np.asarray(rand["sgd"]["coherence"])[:, 0]
    kernel_real = np.asarray(theory["arms"]["real"]["init_coherence"])
    lazy_real = np.asarray(theory["arms"]["real"]["lazy_coherence"])[:, window].mean(-1)
    lazy_random = np.asarray(theory["arms"]["random"]["lazy_coherence"])[:, window].mean(-1)
    last = -1
    return {
        "coherence_real_early": coh_real.tolist(),
        "coherence_random_early": coh_random.tolist(),
        "coherence_ratio_real_random": (coh_real / coh_random).tolist(),
        "lazy_coherence_real_early": lazy_real.tolist(),
        "lazy_coherence_random_early": lazy_random.tolist(),
        "coherence_random_m3_early": early(rand["m3"]).tolist(),
        "coherence_real_m3_early": early(real["m3"]).tolist(),
        "orthogonal_limit_units": 1.0,  # alpha_perp / alpha_perp
        "m3_memorization_drop": (
            np.asarray(rand["sgd"]["train_accuracy"])[:, last]
            - np.asarray(rand["m3"]["train_accuracy"])[:, last]
        ).tolist(),
        "m3_real_test_cost": (
            np.asarray(real["sgd"]["test_accuracy"])[:, last]
            - np.asarray(real["m3"]["test_accuracy"])[:, last]
        ).tolist(),
        "sgd_random_train_accuracy": np.asarray(rand["sgd"]["train_accuracy"])[:, last].tolist(),
        "sgd_real_test_accuracy": np.asarray(real["sgd"]["test_accuracy"])[:, last].tolist(),
        "init_coherence_real_relative_error": np.abs(init_real / kernel_real - 1).tolist(),
        "init_coherence_real": init_real.tolist(),
        "init_coherence_real_kernel": kernel_real.tolist(),
        "init_coherence_random": init_random.tolist(),
    }
