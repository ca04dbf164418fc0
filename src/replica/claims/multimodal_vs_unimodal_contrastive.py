"""Multi-modal vs single-modal contrastive learning (Huang, Han, Chen, Cao, Xu, Suzuki,
NeurIPS 2024, arXiv 2411.02837).

Claim. Both modalities follow the signal-noise patch model (src/replica/signal_noise.py):
modality 1 is x = [y mu, xi], modality 2 is x~ = [y mu~, xi~], with the same label y and
independent Gaussian noise patches. A two-layer ReLU patch network
h_r(x) = sum_p relu(<w_r, x_p>), r = 1..m, gives an m-dimensional embedding, trained by full-batch
GD on the InfoNCE (InfoMax) objective with inner-product similarity and temperature tau.
  * single-modal: the two views of a positive pair are augmentations of the same x (the noise
    patch is kept, up to masking and jitter), so the pair shares xi;
  * multi-modal: the positive pair is (x_i, x~_i), embedded by two separate networks.
The signal-to-noise ratio SNR = |mu| / (sigma sqrt(d)) decides what the modality-1 network
learns: at low n SNR^2 single-modal training memorises the noise patches, while multi-modal
training, helped by a high-SNR partner modality, still learns the signal; downstream, a linear
probe on frozen modality-1 features is then accurate for multi-modal and not for single-modal.

Theory (our linearisation of the paper's early phase; the paper states the regimes up to
constants). At a small initialisation the similarities are ~0 and the InfoNCE weights are
uniform, so d L / d s_ij = -(delta_ij - 1/n) / (n tau): gradient descent increases the
centred positive-pair similarity. For one neuron with signal coefficient g = <w, mu> > 0 and noise
coefficients r_i = <w, xi_i> > 0, keeping the first-order terms,
    single-modal (both views use w):
        dg/dt = |mu|^2 g / (2 tau),      dr_i/dt = 2 |xi|^2 r_i / (n tau);
    multi-modal (partner w~, coefficients g~, r~_i):
        dg/dt = |mu|^2 g~ / (4 tau),     dg~/dt = |mu~|^2 g / (4 tau),
        dr_i/dt = |xi|^2 r~_i / (n tau), dr~_i/dt = |xi~|^2 r_i / (n tau).
Signal and noise grow exponentially; the faster mode wins. The rate ratio (signal over noise) is
    single-modal: n SNR^2 / 4,           multi-modal: n SNR SNR~ / 4   (|xi|^2 ~ sigma^2 d),
so the single-modal transition sits at n SNR^2 = 4 and the multi-modal one at
n SNR^2 = 16 / (n SNR~^2): a high-SNR partner moves it down by the factor n SNR~^2 / 4. With a
partner as weak as modality 1 (SNR~ = SNR, the negative control) the two transitions coincide
and the multi-modal advantage must vanish.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from replica import runtime
from replica.blocks import signal_noise as sn

ARMS = ("single", "multi", "multi_weak")  # multi_weak: partner with SNR~ = SNR (control)
BALANCE = 4.0  # rate ratio 1 at n SNR1 SNR2 = 4 (see module docstring)
RECORDED_STEPS = 30  # log-spaced steps at which the dynamics are kept


# ----------------------------------------------------------------------------- data
def generate(params: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per seed: labels, modality-1 noise patches xi and independent modality-2 noise xi~.

    The signal norms are set per grid value of n SNR^2 at training time (the same noise draw
    serves every SNR value: common random numbers across the sweep)."""
    n, d, sigma = params["n"], params["d"], params["sigma"]
    labels, xi1, xi2 = [], [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed])
        draw = sn.patch_dataset(rng, n, d, signal_norm=1.0, sigma=sigma)
        labels.append(draw["label"])
        xi1.append(draw["x"][:, 1])
        xi2.append(sn.noise_patches(rng, n, d, sigma))
    return {
        "label": np.stack(labels),
        "xi": np.stack(xi1),
        "xi_partner": np.stack(xi2),
        "n_snr2": np.asarray(params["n_snr2"], dtype=float),
    }


# ----------------------------------------------------------------------------- theory
def growth_rates(n_snr2_1, n_snr2_2, n: int, tau: float, sigma: float, d: int, arm: str):
    """(signal rate, noise rate) of the linearised early dynamics, per unit of GD time."""
    norm1 = np.asarray([sn.signal_norm_for(v, n, sigma, d) for v in np.atleast_1d(n_snr2_1)])
    norm2 = np.asarray([sn.signal_norm_for(v, n, sigma, d) for v in np.atleast_1d(n_snr2_2)])
    xi_sq = sigma**2 * (d - sn.signal_span_dim("antipodal"))  # E |xi|^2
    if arm == "single":
        return norm1**2 / (2 * tau), np.full_like(norm1, 2 * xi_sq / (n * tau))
    return norm1 * norm2 / (4 * tau), np.full_like(norm1, xi_sq / (n * tau))


def predicted_transition(partner_n_snr2: float | None) -> float:
    """n SNR^2 of modality 1 at which the signal and noise rates are equal."""
    if partner_n_snr2 is None:  # single-modal
        return BALANCE
    return BALANCE**2 / partner_n_snr2


def theory(data: dict, params: dict) -> dict:
    grid, n, tau = data["n_snr2"], params["n"], params["tau"]
    sigma, d = params["sigma"], params["d"]
    rates = {}
    for arm in ARMS:
        partner = grid if arm == "multi_weak" else np.full_like(grid, params["partner_n_snr2"])
        sig, noi = growth_rates(grid, partner, n, tau, sigma, d, arm)
        rates[arm] = {"signal_rate": sig, "noise_rate": noi, "rate_ratio": sig / noi}
    single = predicted_transition(None)
    multi = predicted_transition(params["partner_n_snr2"])
    return {
        "rates": rates,
        "transition_single": single,
        "transition_multi": multi,
        "transition_weak": single,  # SNR~ = SNR: n SNR^2 / 4 = 1, same as single-modal
        "crossing_ratio": single / multi,
        "crossing_ratio_weak": 1.0,
    }


# ----------------------------------------------------------------------------- model
def signal_norms(data: dict, params: dict, arm: str) -> tuple[np.ndarray, np.ndarray]:
    """|mu| and |mu~| for every grid value of modality-1 n SNR^2."""
    n, d, sigma = params["n"], params["d"], params["sigma"]
    grid = data["n_snr2"]
    mu1 = np.array([sn.signal_norm_for(v, n, sigma, d) for v in grid])
    if arm == "multi_weak":
        return mu1, mu1.copy()
    mu2 = np.full_like(mu1, sn.signal_norm_for(params["partner_n_snr2"], n, sigma, d))
    return mu1, mu2


def patches(label: torch.Tensor, xi: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Batched inputs x = [y mu, xi]: (S*K, n, 2, d) for labels (S, n), noise (S, n, d), K norms.

    The signal direction is e_0 (the shared model's antipodal signal, sn.signal_vectors)."""
    s, n, d = xi.shape
    k = norms.shape[0]
    x = torch.zeros(s, k, n, 2, d, dtype=xi.dtype, device=xi.device)
    x[:, :, :, 0, 0] = label[:, None, :] * norms[None, :, None]
    x[:, :, :, 1] = xi[:, None]
    return x.reshape(s * k, n, 2, d)


def embed(filters: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """h_r(x) = sum_p relu(<w_r, x_p>): (B, n, m) for filters (B, 1, m, d), x (B, n, 2, d)."""
    pre = torch.einsum("bmd,bnpd->bnmp", filters[:, 0], x)
    return torch.relu(pre).sum(-1)


# Below this many columns the CPU gemm takes a small-matrix path that sums in another order;
# from 16 on, a column's value does not depend on how many columns the product has (tested).
_GEMM_MIN_COLUMNS = 16


@functools.cache
def _patch_preactivations():
    """The autograd Function below, defined on first use: a class deriving from a torch
    class at module level would import torch in every job that imports this module."""

    class PatchPreactivations(torch.autograd.Function):
        """<w_r, x_{i,p}> for the two patches, exploiting that the signal patch is (y |mu|, 0, ...,
        0) and the noise patch is 0 on e_0 (both exactly, also after augment_noise()).

        embed() computes both patches in one product (filters x patches); half of it multiplies
        by exact zeros. Here the signal inner product is the single nonzero term w_0 y |mu| and
        only the noise patch goes through a matrix product, forward and backward, which halves
        the flops. The K = B / S models of one seed share its noise patch (S, n, d), so their
        filters are stacked into one (K m, d) operand: one gemm per seed instead of K small ones
        (~2.5x faster at quick; the gemm then sums in another order, equal to rounding, ~1e-12).
        With K = 1 every value equals the einsum/autograd one bit for bit: a sum with exact zeros
        added in is the same sum, and each remaining product is the same gemm on the same
        operands (operand order and layout as torch.einsum uses; checked by the tests).
        filters (B, m, d), signal patches (B, n, d), noise patches (S, n, d); returns (signal,
        noise) pre-activations (B, n, m)."""

        @staticmethod
        def forward(ctx, w, signal_patch, noise_patch):
            ctx.save_for_backward(signal_patch, noise_patch)
            (b, m, d), s = w.shape, noise_patch.shape[0]
            per_seed = w.reshape(s, b // s * m, d)  # the K models of a seed, stacked
            noise = torch.matmul(per_seed, noise_patch.transpose(1, 2)).reshape(b, m, -1)
            signal = w[..., :1] * signal_patch[:, None, :, 0]
            return signal.transpose(1, 2), noise.transpose(1, 2)

        @staticmethod
        def backward(ctx, grad_signal, grad_noise):
            signal_patch, noise_patch = ctx.saved_tensors
            # (B, n, m) -> (B, m, n) in the layout autograd hands back, as einsum's backward does
            (b, n, m), s = grad_noise.shape, noise_patch.shape[0]
            per_seed = grad_noise.transpose(1, 2).reshape(s, b // s * m, n)
            grad = torch.matmul(per_seed, noise_patch).reshape(b, m, -1)
            # coordinate 0: the noise term there is a sum of exact zeros; the signal term is the
            # same sum over samples as in the two-patch product (a gemm, so the same order)
            cols = signal_patch[..., :_GEMM_MIN_COLUMNS]
            signal = torch.matmul(grad_signal.transpose(1, 2), cols)
            grad[..., 0] = signal[..., 0]
            return grad, None, None

    return PatchPreactivations


def train_embed(filters: torch.Tensor, signal_patch, noise_patch) -> torch.Tensor:
    """embed(filters, x) for x = [signal_patch, noise_patch] at half the cost: signal_patch
    (B, n, d) per model, noise_patch (S, n, d) per seed, shared by its B / S models (see
    _patch_preactivations; bit for bit when S = B)."""
    signal, noise = _patch_preactivations().apply(filters[:, 0], signal_patch, noise_patch)
    # the sum over the two patches, laid out (B, n, m) like embed()'s, so that info_nce runs
    # the same kernels on it (and hands back gradients in the same layout)
    return (torch.relu(signal) + torch.relu(noise)).contiguous()


def info_nce(h_a: torch.Tensor, h_b: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE with inner-product similarity, one loss per model: (B,)."""
    logits = torch.einsum("bim,bjm->bij", h_a, h_b) / tau
    pos = torch.diagonal(logits, dim1=1, dim2=2)
    rows = torch.logsumexp(logits, dim=2) - pos
    cols = torch.logsumexp(logits, dim=1) - pos
    return 0.5 * (rows + cols).mean(-1)


def augment_noise(xi: torch.Tensor, params: dict, gen: torch.Generator) -> torch.Tensor:
    """The noise patch (S, n, d) of a single-modal view, for per-seed noise xi (S, n, d): kept
    up to random masking and a small jitter (the signal patch is unchanged, so training needs
    only this part of the view).

    One augmentation draw per (seed, sample), shared by the k SNR values of that seed (the
    models of one seed see the same views: common random numbers, and k times fewer draws).
    The K models of a seed also share its noise patch, so the view is built once per seed (the
    same values as augmenting the K copies one by one); train_embed takes it per seed."""
    s, n, d = xi.shape
    shape = (s, 1, n, d)
    keep = torch.rand(shape, generator=gen, dtype=xi.dtype) >= params["mask_rate"]
    jitter = params["jitter"] * params["sigma"] * torch.randn(shape, generator=gen, dtype=xi.dtype)
    jitter[..., 0] = 0.0  # stay orthogonal to the signal direction
    keep, jitter = keep.to(xi.device), jitter.to(xi.device)
    return (xi[:, None] * keep + jitter)[:, 0]


def init_pair(seeds, k: int, params: dict, device):
    """Modality-1 and partner filters, one init per seed shared by every SNR value."""
    m, d, s0 = params["width"], params["d"], params["sigma0"]
    out = []
    for role in (1, 2):
        per_seed = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + role)
            per_seed.append(sn.init_filters(gen, 1, m, d, s0, n_classes=1)[0])
        w = torch.stack(per_seed).repeat_interleave(k, dim=0)  # (S*K, 1, m, d)
        out.append(w.to(device))
    return out


def train(data, point: dict, params: dict, seeds: list[int], device) -> dict[str, np.ndarray]:
    """One arm, every seed x SNR value as one batch of B = S*K independent models."""
    arm = point["arm"]
    s, k = len(seeds), len(data["n_snr2"])
    mu1, mu2 = (
        torch.as_tensor(v, dtype=torch.float64, device=device)
        for v in signal_norms(data, params, arm)
    )
    label = torch.as_tensor(data["label"], dtype=torch.float64, device=device)
    xi1 = torch.as_tensor(data["xi"], device=device)  # (S, n, d): x1's noise patch, per seed
    x1 = patches(label, xi1, mu1)
    xi2 = torch.as_tensor(data["xi_partner"], device=device)
    x2 = patches(label, xi2, mu2)
    w1, w2 = init_pair(seeds, k, params, device)
    init = w1.clone()
    w1.requires_grad_(True)
    w2.requires_grad_(arm != "single")
    gen = torch.Generator().manual_seed(int(seeds[0]) * 7 + 11)
    keep = set(runtime.log_spaced_steps(params["steps"], RECORDED_STEPS).tolist())
    hist_signal, hist_noise, hist_loss = [], [], []
    tick = runtime.Progress(params["steps"], f"train {arm}")
    for step in range(1, params["steps"] + 1):
        if arm == "single":
            loss = info_nce(
                train_embed(w1, x1[:, :, 0], augment_noise(xi1, params, gen)),
                train_embed(w1, x1[:, :, 0], augment_noise(xi1, params, gen)),
                params["tau"],
            )
            grads = (torch.autograd.grad(loss.sum(), w1)[0], None)
        else:
            loss = info_nce(
                train_embed(w1, x1[:, :, 0], xi1),
                train_embed(w2, x2[:, :, 0], xi2),
                params["tau"],
            )
            grads = torch.autograd.grad(loss.sum(), (w1, w2))
        with torch.no_grad():
            w1 -= params["lr"] * grads[0]
            if grads[1] is not None:
                w2 -= params["lr"] * grads[1]
        if step in keep:
            with torch.no_grad():
                sig = w1[:, 0, :, 0].abs().amax(-1) * mu1.repeat(s)  # max_r |<w_r, mu>|
                noi = torch.einsum("bmd,bnd->bmn", w1[:, 0], x1[:, :, 1]).abs().amax(1).mean(-1)
            hist_signal.append(sig)
            hist_noise.append(noi)
            hist_loss.append(loss.detach())
        tick(step - 1, loss=float(loss.detach().mean()))
    probe = probe_features(w1.detach(), mu1, seeds, params, device)
    shape = (s, k)
    return {
        "filters": w1.detach().reshape(*shape, params["width"], params["d"]).cpu().numpy(),
        "init": init.reshape(*shape, params["width"], params["d"]).cpu().numpy(),
        "signal_inner": torch.stack(hist_signal, -1).reshape(*shape, -1).cpu().numpy(),
        "noise_inner": torch.stack(hist_noise, -1).reshape(*shape, -1).cpu().numpy(),
        "loss": torch.stack(hist_loss, -1).reshape(*shape, -1).cpu().numpy(),
        "checkpoints": np.asarray(sorted(keep)),
        **probe,
    }


def probe_features(w1, mu1, seeds, params: dict, device) -> dict[str, np.ndarray]:
    """Frozen modality-1 features of fresh labelled data (probe train + test), per model."""
    n_p = params["probe_train"] + params["probe_test"]
    labels, xis = [], []
    for seed in seeds:
        rng = np.random.default_rng([params["data_seed"], seed, 99])
        draw = sn.patch_dataset(rng, n_p, params["d"], signal_norm=1.0, sigma=params["sigma"])
        labels.append(draw["label"])
        xis.append(draw["x"][:, 1])
    label = torch.as_tensor(np.stack(labels), dtype=torch.float64, device=device)
    x = patches(label, torch.as_tensor(np.stack(xis), device=device), mu1)
    with torch.no_grad():
        feats = embed(w1, x)
    s, k = len(seeds), mu1.shape[0]
    return {
        "probe_features": feats.reshape(s, k, n_p, -1).cpu().numpy(),
        "probe_label": np.stack(labels),
    }


# ----------------------------------------------------------------------------- measure
def probe_accuracy(features: np.ndarray, label: np.ndarray, n_train: int, ridge: float) -> float:
    """Linear probe on frozen features: standardise, ridge least squares on +-1 labels, test
    accuracy on the held-out rest. Closed form, so the probe itself adds no randomness."""
    train_x, test_x = features[:n_train], features[n_train:]
    mean, scale = train_x.mean(0), train_x.std(0) + 1e-12  # dead neurons: constant features
    design = np.c_[(train_x - mean) / scale, np.ones(n_train)]
    coef = np.linalg.solve(
        design.T @ design + ridge * n_train * np.eye(design.shape[1]), design.T @ label[:n_train]
    )
    pred = np.c_[(test_x - mean) / scale, np.ones(len(test_x))] @ coef
    return float(np.mean(np.sign(pred) == label[n_train:]))


def signal_noise_split(run: dict, data: dict, params: dict, arm: str):
    """Signal learning and noise memorisation of the modality-1 filters (shared decomposition).

    Returns (S, K) arrays: max_r |gamma_r| and the mean over samples of max_r |rho_{r,i}|."""
    filters = torch.as_tensor(run["filters"])
    s, k, m, d = filters.shape
    mu1, _ = signal_norms(data, params, arm)
    mu = torch.zeros(s, k, 1, d, dtype=torch.float64)
    mu[..., 0, 0] = torch.as_tensor(mu1)
    xi = torch.as_tensor(data["xi"])[:, None].expand(s, k, -1, -1)
    gamma, rho, _ = sn.decompose(
        filters.reshape(s * k, 1, m, d),
        torch.as_tensor(run["init"]).reshape(s * k, 1, m, d),
        mu.reshape(s * k, 1, d),
        xi.reshape(s * k, -1, d),
    )
    return (
        sn.signal_learning(gamma).reshape(s, k).numpy(),
        sn.noise_memorization(rho).reshape(s, k).numpy(),
    )


def measure(data, runs: dict, points: dict, params: dict) -> dict:
    arms = {}
    for pid, point in points.items():
        arm, run = point["arm"], runs[pid]
        feats, label = run["probe_features"], run["probe_label"]
        acc = [
            [
                probe_accuracy(feats[s, k], label[s], params["probe_train"], params["ridge"])
                for k in range(feats.shape[1])
            ]
            for s in range(feats.shape[0])
        ]
        signal, noise = signal_noise_split(run, data, params, arm)
        arms[arm] = {
            "probe_accuracy": np.asarray(acc),  # (S, K)
            "signal_learning": signal,
            "noise_memorization": noise,
            "signal_inner": run["signal_inner"],  # (S, K, checkpoints)
            "noise_inner": run["noise_inner"],
            "final_loss": run["loss"][..., -1],
        }
    return {"n_snr2": data["n_snr2"], "checkpoints": runs[pid]["checkpoints"], "arms": arms}


# ----------------------------------------------------------------------------- verdict
def crossing(n_snr2: np.ndarray, acc: np.ndarray, level: float) -> float:
    """n SNR^2 where the accuracy curve first rises through `level` (log-linear interpolation).

    Censored at the grid ends: the smallest grid value if the curve starts above the level,
    the largest if it never reaches it (so ratios of crossings are bounds there)."""
    logs = np.log(np.asarray(n_snr2, dtype=float))
    acc = np.asarray(acc, dtype=float)
    if acc[0] >= level:
        return float(n_snr2[0])
    for i in range(1, len(acc)):
        if acc[i - 1] < level <= acc[i]:
            frac = (level - acc[i - 1]) / (acc[i] - acc[i - 1])
            return float(np.exp(logs[i - 1] + frac * (logs[i] - logs[i - 1])))
    return float(n_snr2[-1])


def window_decades(n_snr2: np.ndarray, gap: np.ndarray, level: float) -> float:
    """Total width, in decades of n SNR^2, of the region where the (interpolated) gap >= level."""
    logs = np.log10(np.asarray(n_snr2, dtype=float))
    fine = np.linspace(logs[0], logs[-1], 2001)
    above = np.interp(fine, logs, np.asarray(gap, dtype=float)) >= level
    return float(above.sum() * (fine[1] - fine[0]))


def verdict(metrics: dict, theory: dict, params: dict) -> dict:
    """Per-seed statistics (each seed's own accuracy curves), theory values as floats."""
    grid = np.asarray(metrics["n_snr2"], dtype=float)
    arms = metrics["arms"]
    acc = {arm: np.asarray(arms[arm]["probe_accuracy"], dtype=float) for arm in ARMS}  # (S, K)
    level, margin = params["crossing_level"], params["gap_level"]

    def gap_stats(arm):
        gap = acc[arm] - acc["single"]  # (S, K), one curve per seed
        return gap.max(1).tolist(), [window_decades(grid, g, margin) for g in gap]

    def crossing_ratio(arm):
        return [
            crossing(grid, a_s, level) / crossing(grid, a_m, level)
            for a_s, a_m in zip(acc["single"], acc[arm], strict=True)
        ]

    gap_max, window = gap_stats("multi")
    gap_max_weak, window_weak = gap_stats("multi_weak")
    top_single, top_multi = acc["single"][:, -1], acc["multi"][:, -1]
    sm_cross = np.array([crossing(grid, a, level) for a in acc["single"]])
    low = grid < theory["transition_multi"]  # where theory says even multi-modal is slow
    low = low if low.any() else grid == grid[0]

    def ratio_low(arm_a, arm_b, key):
        a = np.asarray(arms[arm_a][key])[:, low]
        b = np.asarray(arms[arm_b][key])[:, low]
        return np.exp(np.log(a / b).mean(1)).tolist()  # per seed: geometric mean over low SNR

    t_single = float(theory["transition_single"])
    return {
        "gap_max": gap_max,
        "gap_window_decades": window,
        "acc_min_highest": np.minimum(top_single, top_multi).tolist(),
        "gap_highest": np.abs(top_multi - top_single).tolist(),
        "crossing_ratio": crossing_ratio("multi"),
        "sm_crossing": sm_cross.tolist(),
        "sm_crossing_factor": np.maximum(sm_cross / t_single, t_single / sm_cross).tolist(),
        "signal_gain_low_snr": ratio_low("multi", "single", "signal_learning"),
        "noise_excess_low_snr": ratio_low("single", "multi", "noise_memorization"),
        "gap_max_weak": gap_max_weak,
        "gap_window_decades_weak": window_weak,
        "crossing_ratio_weak": crossing_ratio("multi_weak"),
        "theory_crossing_ratio": float(theory["crossing_ratio"]),
        "theory_crossing_ratio_weak": float(theory["crossing_ratio_weak"]),
        "theory_sm_crossing": t_single,
    }
