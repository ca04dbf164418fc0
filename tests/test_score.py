"""The score block against independent computations: finite differences of the log density,
scipy's densities, Monte Carlo regressions, exact Gaussian flows, and closed-form divergences."""

import numpy as np
import pytest
from scipy import integrate, stats

from replica.blocks import score as sc


def _mixture():
    return sc.GaussianMixture(
        weights=np.array([0.5, 0.3, 0.2]),
        means=np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]),
        covs=np.array(
            [[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.6]], [[0.4, -0.1], [-0.1, 0.2]]]
        ),
    )


def test_log_density_is_scipys_mixture_density():
    law = _mixture()
    x = np.random.default_rng(0).standard_normal((20, 2)) * 2
    expected = np.log(
        sum(
            w * stats.multivariate_normal(m, c).pdf(x)
            for w, m, c in zip(law.weights, law.means, law.covs, strict=True)
        )
    )
    assert np.allclose(law.log_density(x), expected, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.0, 0.3, 2.0])
def test_score_is_the_gradient_of_the_log_density(sigma):
    law = _mixture().ve(sigma)
    x = np.random.default_rng(1).standard_normal((15, 2)) * 2
    h = 1e-5
    fd = np.stack(
        [(law.log_density(x + h * e) - law.log_density(x - h * e)) / (2 * h) for e in np.eye(2)],
        axis=1,
    )
    assert np.allclose(law.score(x), fd, atol=1e-6)


def test_noised_laws_have_the_moments_of_samples():
    law = _mixture()
    rng = np.random.default_rng(2)
    x = law.sample(200_000, rng)
    assert np.allclose(x.mean(0), law.mean(), atol=0.02)
    assert np.allclose(np.cov(x.T), law.cov(), atol=0.03)
    alpha = sc.vp_alpha(0.3)
    vp = law.vp(0.3)
    z = alpha * x + np.sqrt(1 - alpha**2) * rng.standard_normal(x.shape)
    assert np.allclose(np.cov(z.T), vp.cov(), atol=0.02)
    # alpha_t against the integral of the linear beta schedule
    integral = integrate.quad(lambda s: 0.1 + s * (20.0 - 0.1), 0, 0.3)[0]
    assert alpha == pytest.approx(np.exp(-integral / 2), rel=1e-12)


def test_dsm_targets_regress_to_the_score_of_the_noised_law():
    """E[-eps / sigma | x0 + sigma eps] = grad log p_sigma: linear for Gaussian data, slope
    -1 / (v + sigma^2), checked by least squares on samples."""
    rng = np.random.default_rng(3)
    v, sigma = 0.7, 0.5
    x0 = np.sqrt(v) * rng.standard_normal(400_000)
    x, target = sc.dsm_pairs(x0, sigma, rng.standard_normal(x0.shape))
    slope = np.sum(x * target) / np.sum(x * x)
    assert slope == pytest.approx(-1 / (v + sigma**2), rel=0.01)
    law = sc.gaussian([0.0], [[v]])
    assert law.ve(sigma).score(np.array([[1.0]]))[0, 0] == pytest.approx(-1 / (v + sigma**2))


def test_tweedie_denoiser_is_the_posterior_mean_for_gaussian_data():
    mean, cov, sigma = np.array([1.0, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]]), 0.8
    x = np.random.default_rng(4).standard_normal((5, 2))
    posterior = mean + (x - mean) @ np.linalg.solve(cov + sigma**2 * np.eye(2), cov)
    assert np.allclose(sc.ve_denoiser(sc.gaussian(mean, cov), x, sigma), posterior)


def test_probability_flow_converges_to_the_exact_gaussian_flow_at_its_order():
    mean, cov = np.array([0.5, -0.5]), np.array([[1.0, 0.4], [0.4, 0.3]])
    law = sc.gaussian(mean, cov)
    x_start = np.random.default_rng(5).standard_normal((50, 2)) * 10
    exact = sc.gaussian_flow(x_start, mean, cov, 10.0, 0.05)

    def error(method, steps):
        sigmas = sc.ve_sigmas(10.0, 0.05, steps)
        out = sc.probability_flow(lambda x, s: law.ve(s).score(x), x_start, sigmas, method)
        return np.abs(out - exact).max()

    euler = error("euler", 40) / error("euler", 80)
    heun = error("heun", 40) / error("heun", 80)
    assert 1.7 < euler < 2.3  # first order
    assert 3.4 < heun < 4.6  # second order
    assert error("heun", 400) < 1e-4


def test_euler_maruyama_covariance_recursion_matches_the_samples():
    mean, cov = np.zeros(2), np.array([[1.0, 0.4], [0.4, 0.3]])
    law = sc.gaussian(mean, cov)
    sigmas = sc.ve_sigmas(20.0, 0.01, 30)
    start = cov + sigmas[0] ** 2 * np.eye(2)
    rng = np.random.default_rng(6)
    x = rng.multivariate_normal(mean, start, size=100_000)
    out = sc.reverse_sde(lambda y, s: law.ve(s).score(y), x, sigmas, rng)
    predicted = sc.gaussian_em_covariance(cov, start, sigmas)
    assert np.allclose(np.cov(out.T), predicted, atol=0.015)
    target = cov + 0.01**2 * np.eye(2)  # the law the chain must reach at sigma_min

    def error(steps):
        end = sc.gaussian_em_covariance(cov, start, sc.ve_sigmas(20.0, 0.01, steps))
        return np.abs(end - target).max()

    assert 7 < error(300) / error(3000) < 13  # the step error vanishes at first order


def test_gaussian_w2_special_cases():
    assert sc.gaussian_w2([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(np.sqrt(9 + 1))
    c1, c2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])  # commuting: sum of (sqrt l1 - sqrt l2)^2
    assert sc.gaussian_w2([0, 0], c1, [0, 0], c2) == pytest.approx(np.sqrt(4 + 1))
    rot = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    c = np.array([[2.0, 0.5], [0.5, 1.0]])
    assert sc.gaussian_w2([0, 0], c, [0, 0], rot @ c @ rot.T) > 0.05
    assert sc.gaussian_w2([1, 2], c, [1, 2], c) == pytest.approx(0.0, abs=1e-7)


def test_sliced_w2_in_one_dimension_is_the_sorted_coupling():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((500, 1)), 2 + rng.standard_normal((500, 1))
    exact = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    assert sc.sliced_w2(x, y, 3, rng) == pytest.approx(exact)


def test_sliced_w2_of_gaussian_samples_approaches_its_closed_form():
    """For Gaussians: SW2^2 = E_theta[(theta.dm)^2 + (sqrt(t'C1 t) - sqrt(t'C2 t))^2]."""
    rng = np.random.default_rng(8)
    c1, c2 = np.array([[1.0, 0.3], [0.3, 0.5]]), np.diag([2.0, 0.2])
    dm = np.array([1.0, -0.5])
    x = rng.multivariate_normal([0, 0], c1, 40_000)
    y = rng.multivariate_normal(dm, c2, 40_000)
    angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    t = np.stack([np.cos(angles), np.sin(angles)], 1)
    s1 = np.sqrt(np.einsum("ni,ij,nj->n", t, c1, t))
    s2 = np.sqrt(np.einsum("ni,ij,nj->n", t, c2, t))
    closed = np.sqrt(np.mean((t @ dm) ** 2 + (s1 - s2) ** 2))
    assert sc.sliced_w2(x, y, 400, rng) == pytest.approx(closed, rel=0.03)


def test_energy_distance_in_one_dimension_is_twice_the_cdf_gap():
    """1-D: energy distance = 2 int (F - G)^2 for the two empirical laws (V-statistic form)."""
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((300, 1)), 0.5 + rng.standard_normal((300, 1))
    grid = np.sort(np.concatenate([x[:, 0], y[:, 0]]))
    f = np.searchsorted(np.sort(x[:, 0]), grid, side="right") / 300
    g = np.searchsorted(np.sort(y[:, 0]), grid, side="right") / 300
    cdf_gap = 2 * np.sum((f[:-1] - g[:-1]) ** 2 * np.diff(grid))
    # the U-statistic within-sample terms differ from the V-statistic by n/(n-1)
    n = 300
    d_xx = np.abs(x - x.T).mean() * n / (n - 1)
    d_yy = np.abs(y - y.T).mean() * n / (n - 1)
    correction = (d_xx + d_yy) / n  # V uses mean over n^2 pairs, U over n(n-1)
    assert sc.energy_distance(x, y) == pytest.approx(cdf_gap - correction, rel=1e-9)


def test_mmd_of_gaussian_samples_matches_its_closed_form():
    """For X - Y ~ N(dm, s^2 I) in d dimensions (s^2 the summed variances):
    E k(X, Y) = (h^2 / (h^2 + s^2))^(d/2) exp(-|dm|^2 / (2 (h^2 + s^2)))."""
    rng = np.random.default_rng(10)
    d, h = 2, 1.0
    dm = np.array([0.8, 0.0])

    def mean_k(shift, var):
        return (h * h / (h * h + var)) ** (d / 2) * np.exp(-(shift @ shift) / (2 * (h * h + var)))

    closed = 2 * mean_k(np.zeros(d), 2.0) - 2 * mean_k(dm, 2.0)
    x, y = rng.standard_normal((3000, d)), dm + rng.standard_normal((3000, d))
    assert sc.mmd2_rbf(x, y, h) == pytest.approx(closed, abs=0.01)
    same = sc.mmd2_rbf(x, rng.standard_normal((3000, d)), h)
    assert abs(same) < 0.005  # unbiased: near zero for one law
