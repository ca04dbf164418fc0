"""Wide deep CNNs adapt to the spatial scale of the target (Cagnetta, Favero, Wyart, ICML 2023,
arXiv 2208.01003, "What Can Be Learnt With Wide Convolutional Neural Networks?").

Claim. Kernel regression with the neural tangent kernel (NTK) of an infinitely wide hierarchical
CNN - non-overlapping patches, each neuron seeing only its own children (a tree) - learns a target
that depends on one meta-patch of adjacent variables at a rate set by that meta-patch's effective
dimension, not by the input dimension; a target of the full input is learnt at the slow rate.

Setting (the paper's, sizes reduced). d = s1 s2 ... sL input variables cut into P = d / s1 patches,
each patch uniform on the sphere S^(s1-1). The student is the depth-L tree NTK with filter sizes
[s1, ..., sL]; a teacher is a shallower tree NTK [s1, ..., s_lt], which on the full input is the
average of independent Gaussian fields on the level-lt meta-patches. Targets are teacher samples,
learnt by (nearly) ridgeless kernel regression on n inputs and tested on fresh ones.
Here d = 8, s = 2 (the authors' example): patches on the circle, student [2, 2, 2], teachers
[2] (single patches, d_eff = 1), [2, 2] (pairs of patches, d_eff = 2), [2, 2, 2] (full, d_eff = 4).

Theory (closed form, no regression). d_eff(l) = (s1 - 1) s2 ... sl. Level-l eigenfunctions of a
tree kernel have eigenvalues ~ k^-(alpha + d_eff(l)), alpha = 1 for the NTK (the paper). Ridgeless
regression learns the n largest student modes; their count is dominated by the top level, so the
cut-off eigenvalue is n^-(1 + alpha_s / d_eff(L)), and the teacher's level-lt variance left beyond
it gives (our reading of the paper's spectral-bias argument)
    beta(lt) = alpha_t (1 + alpha_s / d_eff(L)) / (alpha_s + d_eff(lt)),
which is alpha_t / d_eff(L) for the full input. The fully-connected NTK of the same inputs is a
cusp kernel on the P (s1 - 1)-dimensional torus with no hierarchy: beta_FC = alpha_t / (P (s1-1)).

Experiment. Per seed: inputs, three teacher draws on n_max + n_test points (generate); the CNN
student and the fully-connected student (same depth, same relative ridge) on nested training
sets n in the grid, test MSE on the same test set (train); the exponent beta is minus the
least-squares slope of log MSE against log n, per seed (measure).
Controls (ablations): the fully-connected NTK on the meta-patch and patch targets must learn them
more slowly than the CNN by at least half the predicted gap.
"""

from __future__ import annotations

import numpy as np

from replica.blocks.kernel_ridge import relu_kernels, ridge_predict

TARGETS = ("patch", "meta", "full")  # teacher names in the manifest, shallowest first
ROW_CHUNK = 32  # Gram rows per chunk: keeps the (patches, rows, cols) arrays in cache


# ----------------------------------------------------------------------------- data
def sample_inputs(rng: np.random.Generator, n: int, dim: int, patch: int) -> np.ndarray:
    """n inputs of dim variables whose consecutive patch-sized blocks are uniform on S^(patch-1)."""
    x = rng.standard_normal((n, dim // patch, patch))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x.reshape(n, dim)


def gaussian_field(rng: np.random.Generator, gram: np.ndarray, jitter: float) -> np.ndarray:
    """One draw of the centred Gaussian field with covariance gram on its points."""
    scale = float(np.mean(np.diag(gram)))
    chol = np.linalg.cholesky(gram + jitter * scale * np.eye(len(gram)))
    return chol @ rng.standard_normal(len(gram))


def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: n_max + n_test inputs (training first) and one draw of every teacher on them."""
    patch, filters = params["patch"], params["student_filters"]
    dim = int(np.prod(filters))
    total = max(params["n_grid"]) + params["n_test"]
    xs, ys = [], {name: [] for name in TARGETS}
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        x = sample_inputs(rng, total, dim, patch)
        xs.append(x)
        # every teacher is a truncation of the deepest tree: one pass gives all of them
        grams = tree_ntk_levels(x, x, filters, patch)
        for name in TARGETS:
            gram = grams[len(params["targets"][name]) - 1]
            ys[name].append(gaussian_field(rng, gram, params["teacher_jitter"]))
    return {"x": np.stack(xs), **{f"y_{k}": np.stack(v) for k, v in ys.items()}}


# ----------------------------------------------------------------------------- kernels
def relu_moments(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kappa0(u), kappa1(u)) with one arccos: the arc-cosine kernels of the shared block
    (replica.blocks.kernel_ridge.arccos0/arccos1), fused because they dominate the cost."""
    u = np.clip(u, -1.0, 1.0)
    rest = np.pi - np.arccos(u)
    return rest / np.pi, (np.sqrt(1.0 - u * u) + u * rest) / np.pi


def patch_cosines(x1: np.ndarray, x2: np.ndarray, patch: int) -> np.ndarray:
    """(P, n1, n2): cosine between the same-position patches of every pair of inputs."""
    p1 = x1.reshape(len(x1), -1, patch)
    p2 = x2.reshape(len(x2), -1, patch)
    p1 = p1 / np.linalg.norm(p1, axis=-1, keepdims=True)
    p2 = p2 / np.linalg.norm(p2, axis=-1, keepdims=True)
    return np.stack([p1[:, p] @ p2[:, p].T for p in range(p1.shape[1])])


def tree_ntk_levels_from_cosines(cos: np.ndarray, filters: list[int]) -> list[np.ndarray]:
    """The NTKs of the trees [s1], [s1, s2], ..., [s1, ..., sL] on the full input, from the
    patch cosines (P, n1, n2).

    Node by node, the ReLU recursion of a fully-connected NTK with the children averaged: with
    c the correlation of a node's input and T its tangent kernel (c = T = patch cosine at the
    leaves), a hidden node over children C has correlation mean_C kappa1(c) and tangent kernel
    mean_C kappa0(c) T + mean_C kappa1(c). Level l groups s_(l+1) children. The tree
    [s1, ..., sl] stops at level l and reads out the average of all its level-l nodes (a sum of
    independent functions of the meta-patches): with equal groups that is the average over
    nodes of the deeper tree's level-l output, so one pass gives every level.
    The node axis comes first, so that averaging a few children adds whole (n1, n2) slices
    rather than running a tiny inner loop per matrix entry (numpy adds fewer than 8 terms in
    order on any axis, so the numbers are those of a node-last layout)."""
    corr, tangent = cos, cos
    levels = []
    for level in range(len(filters)):
        k0, k1 = relu_moments(corr)
        tangent, corr = k0 * tangent + k1, k1  # every node, before its parent averages
        levels.append(tangent.mean(0))
        group = filters[level + 1] if level + 1 < len(filters) else corr.shape[0]
        shape = (corr.shape[0] // group, group, *corr.shape[1:])
        tangent, corr = tangent.reshape(shape).mean(1), corr.reshape(shape).mean(1)
    return levels


def tree_ntk_levels(x1: np.ndarray, x2: np.ndarray, filters: list[int], patch: int):
    """Gram matrices of every truncated tree (see above), row chunks bounding the memory."""
    out = [np.empty((len(x1), len(x2))) for _ in filters]
    for start in range(0, len(x1), ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        levels = tree_ntk_levels_from_cosines(patch_cosines(x1[rows], x2, patch), filters)
        for gram, level in zip(out, levels, strict=True):
            gram[rows] = level
    return out


def tree_ntk(x1: np.ndarray, x2: np.ndarray, filters: list[int], patch: int) -> np.ndarray:
    """NTK Gram matrix of the tree network with filter sizes [s1, ..., sL]."""
    return tree_ntk_levels(x1, x2, filters, patch)[-1]


def fc_ntk(x1: np.ndarray, x2: np.ndarray, hidden_layers: int) -> np.ndarray:
    """NTK of the fully-connected ReLU net of the same depth (the hierarchy removed)."""
    return relu_kernels(x1, x2, hidden_layers)[1]


# ----------------------------------------------------------------------------- theory
def effective_dimensions(filters: list[int]) -> list[int]:
    """d_eff(l) = (s1 - 1) s2 ... sl for l = 1 ... L: a level-l meta-patch is a product of
    s2 ... sl spheres S^(s1-1)."""
    return [
        int((filters[0] - 1) * np.prod(filters[1:level])) for level in range(1, len(filters) + 1)
    ]


def exponent_tree(d_target: float, d_top: float, alpha_t: float, alpha_s: float) -> float:
    """beta = alpha_t (1 + alpha_s / d_top) / (alpha_s + d_target): ridgeless learning of a
    teacher living on meta-patches of dimension d_target by a tree kernel whose top level has
    dimension d_top (spectral-bias counting on the level-wise eigenvalue asymptotics)."""
    return alpha_t * (1.0 + alpha_s / d_top) / (alpha_s + d_target)


def exponent_flat(d_manifold: float, alpha_t: float) -> float:
    """beta = alpha_t / d: every mode of a d-dimensional cusp kernel competes with the others."""
    return alpha_t / d_manifold


def theory(data: dict[str, np.ndarray], params: dict) -> dict:
    filters, patch = params["student_filters"], params["patch"]
    alpha_t, alpha_s = params["alpha_teacher"], params["alpha_student"]
    d_eff = effective_dimensions(filters)
    d_top = d_eff[-1]
    n_patches = int(np.prod(filters)) // patch
    d_torus = n_patches * (patch - 1)  # the input manifold: a product of patch spheres
    out = {"d_eff_student": d_eff, "d_manifold": d_torus}
    for name in TARGETS:
        d_t = d_eff[len(params["targets"][name]) - 1]
        out[f"d_eff_{name}"] = d_t
        out[f"beta_{name}_theory"] = exponent_tree(d_t, d_top, alpha_t, alpha_s)
        out[f"beta_{name}_simple_reading"] = alpha_t / d_t
        out[f"beta_fc_{name}_theory"] = exponent_flat(d_torus, alpha_t)
    return out


# ----------------------------------------------------------------------------- training
def learning_curves(gram: np.ndarray, ys: np.ndarray, n_grid, n_test: int, ridge: float):
    """Test MSE (targets, n) of kernel regression on the first n points, tested on the last
    n_test. gram: (all points, first n_max points); ridge is relative to the mean diagonal of
    the training Gram matrix."""
    test = slice(len(gram) - n_test, None)
    mse = np.empty((len(ys), len(n_grid)))
    for j, n in enumerate(n_grid):
        k_train = gram[:n, :n]
        lam = ridge * float(np.mean(np.diag(k_train)))
        pred = ridge_predict(k_train, gram[test, :n], ys[:, :n].T, lam)
        mse[:, j] = np.mean((pred.T - ys[:, test]) ** 2, axis=1)
    return mse


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One student (CNN tree NTK or fully-connected NTK) on every teacher target, every seed.

    numpy on the CPU whatever the device: one Gram matrix and a few Cholesky solves per seed."""
    n_grid, n_test = params["n_grid"], params["n_test"]
    n_max = max(n_grid)
    mse = []
    for s in range(len(seeds)):
        x = data["x"][s]
        train_x = x[:n_max]  # only the columns of training points enter a fit or a prediction
        if point["student"] == "cnn":
            gram = tree_ntk(x, train_x, params["student_filters"], params["patch"])
        else:
            gram = fc_ntk(x, train_x, params["fc_hidden_layers"])
        ys = np.stack([data[f"y_{name}"][s] for name in TARGETS])
        mse.append(learning_curves(gram, ys, n_grid, n_test, params["ridge"]))
    mse = np.stack(mse)  # (seeds, targets, n)
    return {f"mse_{name}": mse[:, i] for i, name in enumerate(TARGETS)}


# ----------------------------------------------------------------------------- measure
def fitted_exponent(n_grid, mse: np.ndarray) -> np.ndarray:
    """Per row (seed): beta = minus the least-squares slope of log mse against log n."""
    logn = np.log(np.asarray(n_grid, dtype=float))
    return -np.polyfit(logn, np.log(np.atleast_2d(mse)).T, 1)[0]


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    n_test = params["n_test"]
    metrics = {"n_grid": list(params["n_grid"])}
    for student in ("cnn", "fc"):
        arm = runs[f"student-{student}"]
        for name in TARGETS:
            mse = np.asarray(arm[f"mse_{name}"])
            # relative error: MSE over the seed's mean squared test target
            scale = np.mean(np.asarray(data[f"y_{name}"])[:, -n_test:] ** 2, axis=1)
            metrics[f"{student}_{name}_relative_mse"] = mse / scale[:, None]
            metrics[f"{student}_{name}_beta"] = fitted_exponent(params["n_grid"], mse)
    return metrics


# ----------------------------------------------------------------------------- verdict
def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    beta = {k: np.asarray(v, dtype=float) for k, v in metrics.items() if k.endswith("_beta")}

    def per_seed(values) -> list[float]:
        return [float(v) for v in values]

    stats = {}
    for name in TARGETS:
        stats[f"beta_{name}"] = per_seed(beta[f"cnn_{name}_beta"])
        stats[f"beta_fc_{name}"] = per_seed(beta[f"fc_{name}_beta"])
        stats[f"beta_{name}_theory"] = float(theory[f"beta_{name}_theory"])
    stats["locality_gap"] = per_seed(beta["cnn_meta_beta"] - beta["cnn_full_beta"])
    stats["fc_gap_meta"] = per_seed(beta["cnn_meta_beta"] - beta["fc_meta_beta"])
    stats["fc_gap_patch"] = per_seed(beta["cnn_patch_beta"] - beta["fc_patch_beta"])
    return stats
