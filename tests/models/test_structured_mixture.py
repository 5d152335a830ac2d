"""The Gaussian-mixture and hybrid thresholds of the structured space (docs/structured-stopping.md).

Formulas against brute force (the Jaakkola–Jordan bound, the mixture integral by quadrature) and
the stopping processes by Monte Carlo under the true θ, next to a deliberately too-small
threshold that the same check must refute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import log_expit
from scipy.stats import binomtest, multivariate_normal

from llmpo.models.structured import StructuredModel, jaakkola_jordan_curvature
from llmpo.stats.bernoulli import kl_bernoulli
from llmpo.stats.structured import log_likelihood
from llmpo.stats.thresholds import (
    GaussianMixtureThreshold,
    HybridThreshold,
    LeanHybridThreshold,
    make_threshold,
)


def test_jaakkola_jordan_bound_is_a_tangent_lower_bound_of_log_sigmoid():
    rng = np.random.default_rng(0)
    u = rng.normal(scale=4.0, size=2000)
    xi = rng.normal(scale=4.0, size=2000)
    xi[:5] = 0.0  # the series branch
    c = jaakkola_jordan_curvature(xi)
    bound = log_expit(xi) + (u - xi) / 2 - c / 2 * (u**2 - xi**2)
    assert np.all(log_expit(u) >= bound - 1e-12)
    # tight (value and slope) at u = ±ξ
    np.testing.assert_allclose(log_expit(-xi) - (log_expit(xi) - xi), 0.0, atol=1e-12)
    assert np.all(c <= 0.25) and jaakkola_jordan_curvature(np.array([0.0]))[0] == 0.25


def tell_random(model: StructuredModel, theta, rng, comparisons: int) -> None:
    x = model.features
    for _ in range(comparisons):
        a, b = rng.choice(x.shape[0], size=2, replace=False)
        p = 1 / (1 + np.exp(-(x[a] - x[b]) @ theta))
        model.tell(int(a), int(b), float(rng.random() < p))


@pytest.mark.parametrize("precision", [0.3, 1.0, 4.0])
def test_mixture_regret_bounds_the_mixture_integral_by_quadrature(precision):
    """LL(θ̂) − regret ≤ log ∫ e^{LL(θ)} N(θ; 0, I/ρ) dθ, and within 1 nat of it (d = 2)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 2))
    theta = np.array([0.8, -0.5])
    model = StructuredModel(x, 0.05, GaussianMixtureThreshold(precision))
    tell_random(model, theta, rng, 60)
    _, _, z, n, s = model.pair_statistics()
    grid = np.linspace(-8, 8, 321)
    step = grid[1] - grid[0]
    points = np.array(np.meshgrid(grid, grid)).reshape(2, -1).T
    margins = points @ z.T
    values = log_expit(margins) @ s + log_expit(-margins) @ (n - s)
    values += multivariate_normal(np.zeros(2), np.eye(2) / precision).logpdf(points)
    top = values.max()
    integral = top + math.log(np.exp(values - top).sum() * step**2)
    lower = log_likelihood(model.estimate(), z, n, s) - model.mixture_regret()
    assert lower <= integral
    assert integral - lower < 1.0


def test_mixture_stopping_threshold():
    model = StructuredModel(np.eye(4)[:, :3], 0.01, make_threshold("mixture"))
    for a, b, y in [(0, 1, 1.0), (0, 2, 0.0), (1, 3, 0.5), (0, 3, 1.0)]:
        model.tell(a, b, y)
    theta = model.estimate()
    _, _, z, n, _ = model.pair_statistics()
    c = jaakkola_jordan_curvature(z @ theta)
    information = (z.T * (n * c)) @ z
    expected = math.log(100) + 0.5 * theta @ theta + 0.5 * math.log(
        np.linalg.det(np.eye(3) + information)
    )
    assert model.stopping_threshold() == pytest.approx(expected)
    hybrid = StructuredModel(np.eye(4)[:, :3], 0.01, HybridThreshold())
    for a, b, y in [(0, 1, 1.0), (0, 2, 0.0), (1, 3, 0.5), (0, 3, 1.0)]:
        hybrid.tell(a, b, y)
    assert hybrid.stopping_threshold() == pytest.approx(expected + math.log(2))
    # hybrid-lean: universal inference at 0.9δ, the direct route at 0.1δ/(K − 1).
    lean = StructuredModel(np.eye(4)[:, :3], 0.01, LeanHybridThreshold())
    for a, b, y in [(0, 1, 1.0), (0, 2, 0.0), (1, 3, 0.5), (0, 3, 1.0)]:
        lean.tell(a, b, y)
    _, _, z, n, s = lean.pair_statistics()
    universal = log_likelihood(lean.estimate(), z, n, s) - lean.predictive_log_likelihood
    assert lean.stopping_threshold() == pytest.approx(math.log(1 / 0.009) + universal)
    _, direct, counts = lean.direct_statistics(np.array([1, 2, 3]))
    np.testing.assert_allclose(
        direct, math.log(3 / 0.001) + 0.5 * np.log(np.maximum(counts, 1)) + math.log(2)
    )
    with pytest.raises(ValueError, match="prior_precision"):
        GaussianMixtureThreshold(0.0)
    with pytest.raises(ValueError, match="direct_share"):
        HybridThreshold(direct_share=1.0)


def mixture_crossings(runs: int, horizon: int, slack: bool) -> int:
    """Runs (``horizon`` random comparisons among 8 policies, d = 3, δ = 0.1) in which the
    mixture process LL(θ̂) − regret − LL(θ) reaches log(1/δ) under the true θ; with
    ``slack=False`` the regret term is left out (a too-small threshold: plain GLR at log 1/δ)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(8, 3))
    theta = np.array([0.5, -0.3, 0.2])
    crossings = 0
    for _ in range(runs):
        model = StructuredModel(x, 0.1, GaussianMixtureThreshold())
        for _ in range(horizon):
            tell_random(model, theta, rng, 1)
            _, _, z, n, s = model.pair_statistics()
            excess = log_likelihood(model.estimate(), z, n, s) - log_likelihood(theta, z, n, s)
            if slack:
                excess -= model.mixture_regret()
            if excess >= math.log(10):
                crossings += 1
                break
    return crossings


def test_mixture_process_rarely_crosses_under_the_truth_and_a_too_small_threshold_does():
    """Ville: P(∃t: log mixture_t − LL_t(θ) ≥ log(1/δ)) ≤ δ. One-sided binomial test at 1% that
    the crossing rate is ≤ δ = 0.1 (60 runs of 60 comparisons). The same check with the regret
    left out must fail: the GLR LL(θ̂) − LL(θ) ≈ χ²₃/2 crosses log 10 far more often than δ."""
    crossings = mixture_crossings(60, 60, slack=True)
    assert binomtest(crossings, 60, 0.1, alternative="greater").pvalue > 0.01
    too_small = mixture_crossings(60, 60, slack=False)
    assert binomtest(too_small, 60, 0.1, alternative="greater").pvalue < 0.01


@pytest.mark.slow
def test_mixture_process_rarely_crosses_under_the_truth_long_runs():
    """As above with 300 runs of 300 comparisons."""
    crossings = mixture_crossings(300, 300, slack=True)
    assert binomtest(crossings, 300, 0.1, alternative="greater").pvalue > 0.01


def factor_features() -> np.ndarray:
    """2 factors of 3 levels, one-hot without the first level (K = 9, d = 4)."""
    rows = []
    for a in range(3):
        for b in range(3):
            row = np.zeros(4)
            if a:
                row[a - 1] = 1
            if b:
                row[2 + b - 1] = 1
            rows.append(row)
    return np.array(rows)


def test_direct_statistics_pool_pairs_with_the_same_difference():
    # Policies 0, 3, 6 have factor b = 0 and 1, 4, 7 have b = 1: (0,1), (4,3), (6,7) all differ
    # by ±(x_1 − x_0), so the direct test of the leader 1 against rival 0 pools all three.
    x = factor_features()
    model = StructuredModel(x, 0.1, HybridThreshold())
    model._theta, model._leader, model._stale = np.array([0.0, 0.0, 1.0, 0.0]), 1, False
    model._slot(0, 1), model._slot(4, 3), model._slot(6, 7), model._slot(0, 2)
    counts = {(0, 1): (10, 3.0), (3, 4): (20, 4.5), (6, 7): (5, 1.0), (0, 2): (7, 7.0)}
    for (a, b), (n, w) in counts.items():  # wins of the first (smaller) policy
        slot = model._index[(a, b)]
        model._counts[slot], model._wins[slot] = n, w
    statistics, thresholds, n = model.direct_statistics(np.array([0, 2]))
    ahead = (10 - 3.0) + (20 - 4.5) + (5 - 1.0)  # wins of the side with b = 1
    assert n[0] == 35 and n[1] == 0
    assert statistics[0] == pytest.approx(35 * kl_bernoulli(ahead / 35, 0.5))
    assert statistics[1] == 0.0
    assert thresholds[0] == pytest.approx(
        math.log(2 * 8 / 0.1) + 0.5 * math.log(35) + math.log(2)
    )


def direct_route_crossings(level_log: float, runs: int = 4000, horizon: int = 400) -> int:
    """Runs of ``horizon`` fair comparisons (p = ½: the boundary of the wrong leader's
    alternative) in which the direct test n·kl(p̂, ½) (p̂ > ½) ever exceeds
    ``level_log`` + ½ log n + log 2."""
    rng = np.random.default_rng(18)
    wins = np.cumsum(rng.random((runs, horizon)) < 0.5, axis=1)
    n = np.arange(1, horizon + 1)
    rate = wins / n
    statistic = np.where(rate > 0.5, n * np.asarray(kl_bernoulli(rate, 0.5)), 0.0)
    bar = level_log + 0.5 * np.log(n) + math.log(2)
    return int(np.sum(np.any(statistic > bar, axis=1)))


def test_the_direct_route_errs_at_most_its_share_of_delta():
    """The split of δ between the two routes, checked where it can fail: with K = 2 and
    δ = 0.9, hybrid-lean's direct route may err with probability ηδ/(K − 1) = 0.09. Its bar,
    as the threshold computes it, is crossed by a fair sequence in ≤ 9% of 4,000 runs
    (binomial test at 1%; measured 2.5%), while the bar of a route given all of δ (no split)
    or half of it (hybrid's split applied to hybrid-lean's budget) is crossed far more often
    than 9% (measured 32% and 17%): a wrong split fails this test."""
    delta, share = 0.9, LeanHybridThreshold().direct_share
    level = share * delta
    correct = direct_route_crossings(LeanHybridThreshold().direct_log_inverse_delta(delta, 2))
    assert binomtest(correct, 4000, level, alternative="greater").pvalue > 0.01
    for wrong in (math.log(1 / delta), math.log(2 / delta)):
        crossings = direct_route_crossings(wrong)
        assert binomtest(crossings, 4000, level, alternative="greater").pvalue < 0.01


def test_hybrid_certifies_a_close_rival_through_the_direct_test():
    """Leader 1 and rival 0 differ in one factor level; 4,000 comparisons of that difference
    at p = .6 clear it directly, while the structured GLR of the other rivals carries the rest."""
    x = factor_features()
    theta = np.array([-1.0, -1.5, 0.4, -1.0])
    rng = np.random.default_rng(5)
    model = StructuredModel(x, 0.05, HybridThreshold())
    pairs = [(1, 0), (4, 3), (7, 6), (1, 2), (1, 4), (1, 7), (1, 3), (1, 5)]
    for k in range(6000):
        a, b = pairs[k % len(pairs)] if k % 2 else pairs[k % 3]
        p = 1 / (1 + np.exp(-(x[a] - x[b]) @ theta))
        model.tell(a, b, float(rng.random() < p))
    assert model.leader == 1
    statistics, thresholds, _ = model.direct_statistics(np.array([0]))
    assert statistics[0] > thresholds[0]
    certificate = model.certificate()
    assert certificate.certified == model.is_certified()


def test_hybrid_sampling_routes_a_close_rival_to_its_direct_pair():
    """Policies 0 and 1 differ in one factor level by 0.05 in utility, every other policy trails
    by ≥ 1; after 2,000 random comparisons the structured statistic of the close rival is far
    from its bar and the direct test is the shorter route, so the hybrid model proposes the
    direct pair of the leader and its close rival; the mixture model never does."""
    x = factor_features()
    theta = np.array([-1.0, -1.5, 0.05, -1.0])
    models = {}
    for threshold in (HybridThreshold(), GaussianMixtureThreshold()):
        model = StructuredModel(x, 0.05, threshold)
        tell_random(model, theta, np.random.default_rng(2), 2000)
        models[threshold.name] = model
    hybrid = models["hybrid"]
    leader = hybrid.leader
    assert leader in (0, 1)  # 2,000 comparisons do not settle a 0.05 gap
    rivals, screened, _ = hybrid.gaussian_statistics(include_pending=True)
    assert hybrid.direct_pair(rivals, screened) == (leader, 1 - leader)
    rivals, screened, _ = models["mixture"].gaussian_statistics(include_pending=True)
    assert models["mixture"].direct_pair(rivals, screened) is None


def test_likelihood_thresholds_are_refused_without_a_likelihood_model():
    for name in ("mixture", "hybrid", "hybrid-lean"):
        with pytest.raises(ValueError, match=f"'{name}' needs a likelihood model"):
            make_threshold(name).pair(np.ones(3), 10.0, 0.05, 0.0)
