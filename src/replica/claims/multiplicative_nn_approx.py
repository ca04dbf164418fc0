"""Multiplicative networks approximate smooth functions with fewer neurons than ReLU networks
(Ben-Shaul, Galanti & Dekel, "Exploring the Approximation Capabilities of Multiplicative Neural
Networks for Smooth Functions", TMLR 2023, arXiv 2301.04605).

Claim. Networks whose neurons are joined by multiplications (as in self-attention and
hypernetworks) approximate generalised bandlimited functions and Sobolev-type balls with
significantly fewer layers and neurons than ReLU networks, in terms of both the input dimension
and the approximation error.

Setting. Inputs x uniform on [-1, 1]^d. The smooth target is a bandlimited sum of K planar
cosines f(x) = sum_k a_k cos(<omega_k, x> + phi_k) with ||omega_k|| = B (bandwidth), random
directions, phases and amplitudes; the ablation's target is the same sum with cos replaced by
the triangle wave of the same period and range (piecewise linear: the smoothness removed). Seeds
change the target draw, the initialisations and the training batches.

Theory (the mechanism; constants are ours). A product gate computes x y exactly in one neuron. A
ReLU network can only emulate it: Yarotsky's (2017) square network with m sawtooth layers,
    x^2 ~ x - sum_{s=1}^m g_s(x) / 4^s,  g_s = g o ... o g (s times), g the hat map on [0, 1],
has sup error exactly 4^{-(m+1)} (it is the piecewise-linear interpolant of x^2 on the grid of
step 2^{-m}), so an eps-accurate product costs m(eps) = ceil(log_4(1/eps)) - 1 layers of ReLU
neurons. Chaining products (Taylor polynomials of cos) multiplies this cost. The paper's rates
are upper bounds (constructions) whose exact form and constants we could not retrieve (abstract
only), so no value is predicted for a trained network: the checks are the comparison the paper
claims.

Experiment. Two architectures of the same depth, trained by the same Adam rule on the same
fresh batches drawn from the data distribution (so the test error is approximation error, not
overfitting):
    multiplicative: h_l = (U_l h_{l-1} + a_l) * (V_l h_{l-1} + b_l)   (elementwise product),
    ReLU:           h_l = relu(W_l h_{l-1} + c_l),
each with a linear read-out, at several parameter budgets; the ReLU width at each budget is the
smallest whose parameter count is at least the multiplicative one's (the comparison favours
ReLU). All seeds of one width train together as one batch of networks (numpy, hand-written
backpropagation and Adam).

Measure. Relative test MSE (MSE / target variance) on a fixed test sample per seed; the per-seed
statistic is log10(MSE_ReLU / MSE_mult) at matched parameter budget.

Controls. The same two architectures, budgets and training on the triangle-wave target (the
smoothness the theory relies on removed): a ReLU network represents the piecewise-linear target
with few kinks, so the multiplicative advantage should vanish or reverse.
"""

from __future__ import annotations

import math

import numpy as np

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# multiplicative layers start near (1 + u)(1 + v) = 1 + u + v + u v: the linear part is present
# from the start and the product terms are small, so deep products do not blow up at init
GATE_BIAS_INIT = 1.0
GATE_WEIGHT_SCALE = 0.5
ARCHITECTURES = ("multiplicative", "relu")


# ----------------------------------------------------------------------------- targets
def draw_target(rng: np.random.Generator, dim: int, n_terms: int, bandwidth: float) -> dict:
    """Frequencies on the sphere of radius `bandwidth`, uniform phases, Gaussian amplitudes
    scaled so that the sum has variance about 1."""
    omega = rng.standard_normal((n_terms, dim))
    omega *= bandwidth / np.linalg.norm(omega, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, n_terms)
    amplitude = rng.standard_normal(n_terms) * np.sqrt(2 / n_terms)
    return {"omega": omega, "phase": phase, "amplitude": amplitude}


def triangle_wave(t: np.ndarray) -> np.ndarray:
    """The piecewise-linear wave with cos's period, extrema and zeros: 1 at t = 0, -1 at pi."""
    return 2 * np.abs(np.mod(t, 2 * np.pi) - np.pi) / np.pi - 1


WAVES = {"bandlimited": np.cos, "triangle": triangle_wave}


def target_values(x: np.ndarray, omega, phase, amplitude, kind: str) -> np.ndarray:
    """f(x) = sum_k a_k wave(<omega_k, x> + phi_k), batched: x (..., n, d) with per-seed
    parameters omega (..., K, d), phase (..., K), amplitude (..., K) -> (..., n)."""
    t = x @ np.swapaxes(omega, -1, -2) + phase[..., None, :]
    return (WAVES[kind](t) * amplitude[..., None, :]).sum(-1)


# ----------------------------------------------------------------------------- networks
def parameter_count(arch: str, dim: int, width: int, depth: int) -> int:
    """Weights and biases: a multiplicative layer has two linear branches, a ReLU layer one."""
    branches = 2 if arch == "multiplicative" else 1
    fan_ins = [dim] + [width] * (depth - 1)
    hidden = sum(branches * (fan + 1) * width for fan in fan_ins)
    return hidden + width + 1


def matched_relu_width(dim: int, mult_width: int, depth: int) -> int:
    """The smallest ReLU width whose parameter count is at least the multiplicative net's."""
    budget = parameter_count("multiplicative", dim, mult_width, depth)
    width = 1
    while parameter_count("relu", dim, width, depth) < budget:
        width += 1
    return width


def init_network(rng, n_nets: int, arch: str, dim: int, width: int, depth: int) -> list:
    """[W_1, b_1, ..., W_L, b_L, w_out, b_out], each with a leading batch axis of networks.
    A multiplicative layer stores its two branches side by side: W (in, 2 width)."""
    params, fan = [], dim
    for _ in range(depth):
        if arch == "multiplicative":
            w = rng.standard_normal((n_nets, fan, 2 * width)) * GATE_WEIGHT_SCALE / np.sqrt(fan)
            b = np.full((n_nets, 1, 2 * width), GATE_BIAS_INIT)
        else:  # He initialisation
            w = rng.standard_normal((n_nets, fan, width)) * np.sqrt(2 / fan)
            b = np.zeros((n_nets, 1, width))
        params += [w, b]
        fan = width
    params += [rng.standard_normal((n_nets, fan, 1)) / np.sqrt(fan), np.zeros((n_nets, 1, 1))]
    return params


def forward(params: list, x: np.ndarray, arch: str):
    """Network outputs (B, n) and the per-layer (input, pre-activation) for backpropagation."""
    h, cache = x, []
    for w, b in zip(params[:-2:2], params[1:-2:2], strict=True):
        z = h @ w
        z += b  # in place: no second (networks, n, width) temporary
        cache.append((h, z))
        if arch == "multiplicative":
            half = z.shape[-1] // 2
            h = z[..., :half] * z[..., half:]  # the product gate
        else:
            h = np.maximum(z, 0)
    out = h @ params[-2]
    out += params[-1]
    return out[..., 0], cache, h


def loss_and_gradients(params: list, x: np.ndarray, y: np.ndarray, arch: str, grads=None):
    """Mean squared error per network (B,) and its gradient in every parameter. With `grads`
    (arrays shaped like params, e.g. views of one flat buffer) the gradients are written there."""
    out, cache, h_last = forward(params, x, arch)
    residual = (out - y)[..., None]  # (B, n, 1)
    grad_out = 2 * residual / x.shape[-2]
    if grads is None:
        grads = [np.empty_like(p) for p in params]
    np.matmul(np.swapaxes(h_last, -1, -2), grad_out, out=grads[-2])
    grad_out.sum(-2, keepdims=True, out=grads[-1])
    grad_h = grad_out @ np.swapaxes(params[-2], -1, -2)
    for layer in reversed(range(len(cache))):
        h_in, z = cache[layer]
        if arch == "multiplicative":
            half = z.shape[-1] // 2
            grad_z = np.empty_like(z)
            np.multiply(grad_h, z[..., half:], out=grad_z[..., :half])
            np.multiply(grad_h, z[..., :half], out=grad_z[..., half:])
        else:
            grad_z = grad_h * (z > 0)
        np.matmul(np.swapaxes(h_in, -1, -2), grad_z, out=grads[2 * layer])
        grad_z.sum(-2, keepdims=True, out=grads[2 * layer + 1])
        if layer > 0:
            grad_h = grad_z @ np.swapaxes(params[2 * layer], -1, -2)
    return (residual[..., 0] ** 2).mean(-1), grads


def flat_views(arrays: list) -> tuple[np.ndarray, list]:
    """One contiguous buffer holding copies of `arrays`, and views of it shaped like them (an
    elementwise update of the buffer updates every array, in one numpy call instead of one per
    array)."""
    flat = np.empty(sum(a.size for a in arrays))
    views, offset = [], 0
    for a in arrays:
        view = flat[offset : offset + a.size].reshape(a.shape)
        view[...] = a
        views.append(view)
        offset += a.size
    return flat, views


def adam_train(models: list, sample_batch, steps: int, lr: float) -> list:
    """Adam with a cosine learning-rate decay to 0 for several batches of networks at once,
    models = [(params, arch), ...], all on the same fresh batch (x, y) every step.
    Returns the loss of the last batch per model, each (networks,). Each model's parameters
    become views of one flat buffer (updated in place, the list itself is kept), so Adam's
    elementwise rule runs once per model and step, in the same operation order per element."""
    beta1, beta2 = ADAM_BETAS
    state = []
    for params, _ in models:
        flat, views = flat_views(params)
        params[:] = views
        grad_flat, grads = flat_views(params)
        state.append((flat, grad_flat, grads, np.zeros_like(flat), np.zeros_like(flat)))
    scratch = np.empty(max(s[0].size for s in state))
    scratch2 = np.empty_like(scratch)
    losses = [None] * len(models)
    for step in range(1, steps + 1):
        x, y = sample_batch(step)
        rate = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        c1, c2 = 1 - beta1**step, 1 - beta2**step
        for i, (params, arch) in enumerate(models):
            p, g, grads, m, v = state[i]
            losses[i], _ = loss_and_gradients(params, x, y, arch, grads)
            t, u = scratch[: p.size], scratch2[: p.size]
            # m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g g
            m *= beta1
            np.multiply(g, 1 - beta1, out=t)
            m += t
            v *= beta2
            np.multiply(g, 1 - beta2, out=t)
            t *= g
            v += t
            # p -= rate (m / c1) / (sqrt(v / c2) + eps)
            np.divide(m, c1, out=t)
            t *= rate
            np.divide(v, c2, out=u)
            np.sqrt(u, out=u)
            u += ADAM_EPS
            t /= u
            p -= t
    return losses


# ----------------------------------------------------------------------------- data
def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per dimension and seed: the target's frequencies, phases and amplitudes (shared by the
    smooth and the triangle target) and a fixed test sample."""
    data: dict[str, np.ndarray] = {}
    for dim in params["dims"]:
        draws, tests = [], []
        for seed in seeds:
            rng = np.random.default_rng([params["data_seed"], dim, seed])
            draws.append(draw_target(rng, dim, params["n_terms"], params["bandwidth"]))
            tests.append(rng.uniform(-1, 1, (params["n_test"], dim)))
        for key in ("omega", "phase", "amplitude"):
            data[f"{key}_d{dim}"] = np.stack([draw[key] for draw in draws])
        data[f"x_test_d{dim}"] = np.stack(tests)
    return data


def target_of(data: dict, dim: int, kind: str, x: np.ndarray) -> np.ndarray:
    return target_values(
        x, data[f"omega_d{dim}"], data[f"phase_d{dim}"], data[f"amplitude_d{dim}"], kind
    )


# ----------------------------------------------------------------------------- theory
def hat(x: np.ndarray) -> np.ndarray:
    """Yarotsky's hat map on [0, 1] as a ReLU layer of 3 neurons: 2x, then 2(1 - x)."""
    relu = lambda u: np.maximum(u, 0)  # noqa: E731
    return 2 * relu(x) - 4 * relu(x - 0.5) + 2 * relu(x - 1)


def relu_square(x: np.ndarray, sawtooth_layers: int) -> np.ndarray:
    """Yarotsky's ReLU approximation of x^2 on [0, 1]: x - sum_s g_s(x) / 4^s."""
    out, tooth = np.array(x, dtype=float), np.array(x, dtype=float)
    for s in range(1, sawtooth_layers + 1):
        tooth = hat(tooth)
        out = out - tooth / 4.0**s
    return out


def relu_square_sup_error(sawtooth_layers: int) -> float:
    """Exact sup error of relu_square on [0, 1]: the interpolant of x^2 on a grid of step
    h = 2^-m errs by h^2 / 4 at the cell midpoints, 4^-(m+1)."""
    return 4.0 ** -(sawtooth_layers + 1)


def relu_layers_for_product(eps: float) -> int:
    """Sawtooth layers m for which Yarotsky's square reaches sup error <= eps."""
    return max(0, math.ceil(math.log(1 / eps, 4) - 1 - 1e-12))


def measured_square_error(sawtooth_layers: int, grid_level: int) -> float:
    """Sup error of relu_square on the dyadic grid of step 2^-grid_level (which contains the
    cell midpoints of every m < grid_level, where the error peaks)."""
    x = np.arange(2**grid_level + 1) / 2**grid_level
    return float(np.abs(relu_square(x, sawtooth_layers) - x**2).max())


def target_variance(data: dict, dim: int, kind: str) -> np.ndarray:
    """Per-seed variance of the target on its test sample (Monte Carlo on the data)."""
    return target_of(data, dim, kind, data[f"x_test_d{dim}"]).var(-1)


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    depth, widths = params["depth"], params["mult_widths"]
    layers = list(range(1, params["square_layers_max"] + 1))
    out: dict = {
        "square_layers": layers,
        "square_error_formula": [relu_square_sup_error(m) for m in layers],
        "square_error_measured": [
            measured_square_error(m, params["square_layers_max"] + 2) for m in layers
        ],
        "product_eps": params["product_eps"],
        "relu_layers_per_product": relu_layers_for_product(params["product_eps"]),
        "budgets": {},
        "target_variance": {},
    }
    for dim in params["dims"]:
        relu_widths = [matched_relu_width(dim, w, depth) for w in widths]
        out["budgets"][f"d{dim}"] = {
            "mult_widths": list(widths),
            "relu_widths": relu_widths,
            "mult_params": [parameter_count("multiplicative", dim, w, depth) for w in widths],
            "relu_params": [parameter_count("relu", dim, w, depth) for w in relu_widths],
        }
        out["target_variance"][f"d{dim}"] = {
            kind: target_variance(data, dim, kind).tolist() for kind in WAVES
        }
    return out


# ----------------------------------------------------------------------------- training
def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One (target, dimension): both architectures at every budget, seeds as one batch.
    Returns the relative test MSE per architecture, (S, budgets)."""
    kind, dim, depth = point["target"], int(point["dim"]), params["depth"]
    n_seeds, batch = len(seeds), params["batch"]
    x_test = data[f"x_test_d{dim}"]
    y_test = target_of(data, dim, kind, x_test)
    variance = y_test.var(-1)
    mse = {arch: [] for arch in ARCHITECTURES}
    last_loss = {arch: [] for arch in ARCHITECTURES}
    for width_index, mult_width in enumerate(params["mult_widths"]):
        widths = {"multiplicative": mult_width, "relu": matched_relu_width(dim, mult_width, depth)}
        models = []
        for arch in ARCHITECTURES:
            # the same init stream for the two architectures at one budget (their shapes differ)
            init_rng = np.random.default_rng([params["train_seed"], dim, width_index, *seeds])
            models.append((init_network(init_rng, n_seeds, arch, dim, widths[arch], depth), arch))
        batch_seed = [params["train_seed"], 1, dim, width_index, *seeds]

        def sample_batch(step, batch_seed=batch_seed):
            rng = np.random.default_rng([*batch_seed, step])
            x = rng.uniform(-1, 1, (n_seeds, batch, dim))
            return x, target_of(data, dim, kind, x)

        # both architectures train on the same batches: only the architecture differs
        losses = adam_train(models, sample_batch, params["steps"], params["lr"])
        for (net, arch), loss in zip(models, losses, strict=True):
            prediction = forward(net, x_test, arch)[0]
            mse[arch].append(((prediction - y_test) ** 2).mean(-1) / variance)
            last_loss[arch].append(loss / variance)
    out = {}
    for arch in ARCHITECTURES:
        out[f"mse_{arch}"] = np.stack(mse[arch], axis=1)  # (S, budgets)
        out[f"train_loss_{arch}"] = np.stack(last_loss[arch], axis=1)
    return out


# ----------------------------------------------------------------------------- measure
def measure(data, runs: dict, points: dict, params: dict) -> dict:
    """Per (target, dimension): relative test MSE of both architectures and their log ratio."""
    out: dict = {"dims": list(params["dims"]), "targets": {}}
    for pid, point in points.items():
        run = runs[pid]
        mult, relu = np.asarray(run["mse_multiplicative"]), np.asarray(run["mse_relu"])
        entry = out["targets"].setdefault(point["target"], {})
        entry[f"d{int(point['dim'])}"] = {
            "mse_multiplicative": mult.tolist(),
            "mse_relu": relu.tolist(),
            "log_mse_ratio": np.log10(relu / mult).tolist(),  # (S, budgets): > 0 favours mult
            "train_loss_multiplicative": np.asarray(run["train_loss_multiplicative"]).tolist(),
            "train_loss_relu": np.asarray(run["train_loss_relu"]).tolist(),
        }
    return out


# ----------------------------------------------------------------------------- verdict
def log_ratios(metrics: dict, kind: str) -> np.ndarray:
    """(dims, S, budgets) of log10(MSE_ReLU / MSE_mult), dimensions in increasing order."""
    dims = sorted(metrics["dims"])
    return np.stack([np.asarray(metrics["targets"][kind][f"d{d}"]["log_mse_ratio"]) for d in dims])


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (one value per seed, in seed order) and deterministic constants."""
    smooth, kinked = log_ratios(metrics, "bandlimited"), log_ratios(metrics, "triangle")
    d_max = max(metrics["dims"])
    largest_mult = np.asarray(metrics["targets"]["bandlimited"][f"d{d_max}"]["mse_multiplicative"])
    formula = np.asarray(theory["square_error_formula"])
    measured = np.asarray(theory["square_error_measured"])
    return {
        "log_mse_ratio_smooth": smooth.mean(axis=(0, 2)).tolist(),
        "log_mse_ratio_smooth_min": smooth.min(axis=(0, 2)).tolist(),
        "log_mse_ratio_growth_dim": (smooth[-1].mean(-1) - smooth[0].mean(-1)).tolist(),
        "log_mse_ratio_growth_budget": (smooth[..., -1] - smooth[..., 0]).mean(0).tolist(),
        "log_mse_ratio_kinked": kinked.mean(axis=(0, 2)).tolist(),
        "log_mse_ratio_kinked_largest_budget": kinked[..., -1].mean(0).tolist(),
        "mult_fit_largest_budget": largest_mult[:, -1].tolist(),
        "square_error_law_deviation": float(np.abs(measured / formula - 1).max()),
        "relu_layers_per_product": float(theory["relu_layers_per_product"]),
    }
