"""Maximum-margin separators of signed data z_i = y_i x_i, solved exactly (LP and NNLS).

Implicit-bias claims compare a trained direction with one of these: gradient descent on a
separable logistic loss tends to the l2 (hard-margin SVM) direction, sign-like methods to
the l-inf one. Both are computed from the data alone.
"""

from __future__ import annotations

import numpy as np

# scipy.optimize is imported where it is used: half a second of start-up that the jobs of
# these claims which never solve a margin (training) need not pay.


def linf_max_margin(
    z: np.ndarray,
    *,
    tilt: np.ndarray | None = None,
    gamma_max: float | None = None,
    method: str = "highs",
) -> tuple[float, np.ndarray]:
    """max gamma s.t. z_i . w >= gamma, |w_j| <= 1 (HiGHS LP). Returns (gamma, w).

    gamma > 0 iff the rows are linearly separable through the origin. `tilt` adds a tiny
    linear term to the objective (whether w moves tells a unique vertex from a face);
    `gamma_max` caps gamma where only its sign matters. `method` is linprog's: "highs-ipm"
    (interior point, then crossover to an optimal vertex) is about twice as fast as the
    default's dual simplex on large dense rows, with the optimum equal to solver tolerance.
    """
    from scipy.optimize import linprog

    n, d = z.shape
    cost = np.zeros(d + 1)
    cost[-1] = -1.0  # maximise gamma
    if tilt is not None:
        cost[:d] += tilt
    a_ub = np.hstack([-z, np.ones((n, 1))])  # gamma - z_i.w <= 0
    bounds = [(-1.0, 1.0)] * d + [(None, gamma_max)]
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(n), bounds=bounds, method=method)
    if res.status != 0:
        raise RuntimeError(f"max-margin LP failed: {res.message}")
    return float(res.x[-1]), res.x[:d]


def hard_margin_svm(z: np.ndarray) -> np.ndarray:
    """w of least norm with z w >= 1 (separable rows only), as least-distance programming.

    Lawson & Hanson (1974, ch. 23): with E = [z^T; 1^T] and f = e_{d+1}, NNLS gives u >= 0
    with residual r = E u - f, and w = -r[:d] / r[d]. Its l2 margin is 1 / ||w||.
    """
    from scipy.optimize import nnls

    n, d = z.shape
    e = np.vstack([z.T, np.ones((1, n))])
    f = np.zeros(d + 1)
    f[-1] = 1.0
    u, _ = nnls(e, f, maxiter=50 * n)
    r = e @ u - f
    return -r[:d] / r[d]
