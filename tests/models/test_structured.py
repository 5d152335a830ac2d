"""The structured model: aggregated statistics, estimates, GLR statistics and thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from llmpo.models.structured import RIDGE, SCREEN_SHARE, StructuredModel
from llmpo.stats.bernoulli import kl_bernoulli
from llmpo.stats.structured import fit_mle, log_likelihood
from llmpo.stats.thresholds import GK16HeuristicThreshold, KTThreshold, UniversalInferenceThreshold


def one_hot(k: int) -> np.ndarray:
    return np.eye(k)[:, : k - 1]


@pytest.mark.parametrize(
    ("ties", "counts", "wins"),
    # 50 wins of 0 and 50 ties, then 3 beats 2: ties count ½ ("half") or not at all ("decisive",
    # Bradley–Terry on the decisive outcomes).
    [("half", [100, 1], [75, 0]), ("decisive", [50, 1], [50, 0])],
)
def test_pair_statistics_are_aggregated_per_distinct_pair(ties, counts, wins):
    model = StructuredModel(one_hot(4), 0.05, UniversalInferenceThreshold(), ties=ties)
    for _ in range(50):
        model.tell(0, 1, 1.0)
        model.tell(1, 0, 0.5)  # the same pair told the other way round; a tie
    model.tell(2, 3, 0.0)
    assert model.n_pairs == 2 and model.n_told == 101
    rows, cols, z, n, s = model.pair_statistics()
    assert list(zip(rows, cols, strict=True)) == [(0, 1), (2, 3)]
    np.testing.assert_allclose(n, counts)
    np.testing.assert_allclose(s, wins)
    np.testing.assert_allclose(model.estimate(), fit_mle(z, n, s, ridge=RIDGE), atol=1e-5)


def test_storage_grows_past_its_initial_capacity():
    model = StructuredModel(np.random.default_rng(0).normal(size=(30, 3)), 0.05, KTThreshold())
    for a in range(30):
        for b in range(a + 1, 30):
            model.tell(a, b, 1.0 if (a + b) % 3 else 0.0)
    assert model.n_pairs == 435
    assert model.counts().sum() == 2 * 435


def test_pending_counts():
    model = StructuredModel(one_hot(3), 0.05, KTThreshold())
    model.tell(0, 1, 1.0)
    model.mark_pending(1, 0)
    model.mark_pending(0, 1)
    assert model.effective_count(0, 1) == 3 and model.n_pending == 2
    assert model.unmark_pending(0, 1) and model.unmark_pending(1, 0)
    assert not model.unmark_pending(0, 1)
    assert model.effective_count(1, 0) == 1 and model.effective_count(1, 2) == 0


def test_predictive_log_likelihood_scores_each_outcome_with_the_earlier_estimate():
    model = StructuredModel(one_hot(2), 0.05, UniversalInferenceThreshold())
    model.tell(0, 1, 1.0)  # predicted with θ̃ = 0: log ½
    assert model.predictive_log_likelihood == pytest.approx(math.log(0.5))
    theta = model.estimate()[0]
    model.tell(0, 1, 0.0)  # predicted with the estimate after one win
    expected = math.log(0.5) + math.log(1 / (1 + math.exp(theta)))
    assert model.predictive_log_likelihood == pytest.approx(expected)


def test_two_policies_statistic_is_the_bernoulli_glr():
    # K = 2, d = 1: the alternative is λ = 0 (p = ½), so Z = LL(θ̂) − n·log ½ ≤ n·d(p̂, ½), with
    # equality up to the ridge shrinkage of θ̂.
    model = StructuredModel(one_hot(2), 0.05, KTThreshold())
    for k in range(200):
        model.tell(0, 1, 1.0 if k % 10 < 7 else 0.0)
    statistic = model.certificate().statistics[0]
    saturated = 200 * kl_bernoulli(0.7, 0.5)
    assert statistic <= saturated
    assert statistic == pytest.approx(saturated, rel=1e-3)


def test_gaussian_screen_runs_the_exact_check_when_it_matters():
    # The screen triggers the exact check once every screened value exceeds SCREEN_SHARE·β, so
    # it must not fall below SCREEN_SHARE × the exact statistic where stopping decisions are
    # made (statistics of order 1–30). Here it is 65–100% of it.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3))
    theta = np.array([0.4, -0.2, 0.3])
    model = StructuredModel(x, 0.05, UniversalInferenceThreshold())
    for _ in range(150):
        a, b = rng.choice(6, size=2, replace=False)
        p = 1 / (1 + np.exp(-(x[a] - x[b]) @ theta))
        model.tell(int(a), int(b), float(rng.random() < p))
    _, screened, _ = model.gaussian_statistics()
    exact = model.certificate().statistics
    assert 1 < exact.max() < 30
    assert np.all(screened >= SCREEN_SHARE * exact)
    assert np.all(screened <= 1.2 * exact)


def test_thresholds():
    x = one_hot(3)
    outcomes = [(0, 1, 1.0), (0, 1, 0.0), (0, 2, 1.0), (1, 2, 0.5)]
    models = {}
    for threshold in (UniversalInferenceThreshold(), KTThreshold(), GK16HeuristicThreshold()):
        model = StructuredModel(x, 0.01, threshold)
        for a, b, y in outcomes:
            model.tell(a, b, y)
        models[threshold.name] = model
    log_inverse = math.log(100)
    # KT, saturated: log(1/δ) + Σ over the 3 distinct pairs of (½ log n + log 2).
    assert models["kt"].stopping_threshold() == pytest.approx(
        log_inverse + 0.5 * math.log(2) + 3 * math.log(2)
    )
    assert models["gk16-heuristic"].stopping_threshold() == pytest.approx(
        math.log((1 + math.log(4)) / 0.01)
    )
    universal = models["universal"]
    _, _, z, n, s = universal.pair_statistics()
    regret = log_likelihood(universal.estimate(), z, n, s) - universal.predictive_log_likelihood
    assert universal.stopping_threshold() == pytest.approx(log_inverse + regret)
    certificate = universal.certificate()
    assert np.all(certificate.thresholds == certificate.thresholds[0])


def universal_inference_crossings(runs: int, horizon: int) -> int:
    """Runs (of ``horizon`` random comparisons among 8 policies, δ = 0.1) in which the universal
    inference process M_t − LL_t(θ) reaches log(1/δ) under the true θ."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(8, 3))
    theta = np.array([0.5, -0.3, 0.2])
    crossings = 0
    for _ in range(runs):
        model = StructuredModel(x, 0.1, UniversalInferenceThreshold())
        for _ in range(horizon):
            a, b = rng.choice(8, size=2, replace=False)
            p = 1 / (1 + np.exp(-(x[a] - x[b]) @ theta))
            model.tell(int(a), int(b), float(rng.random() < p))
            _, _, z, n, s = model.pair_statistics()
            if model.predictive_log_likelihood - log_likelihood(theta, z, n, s) >= math.log(10):
                crossings += 1
                break
    return crossings


def test_universal_inference_process_rarely_crosses_under_the_truth():
    """Ville: P(∃t: M_t − LL_t(θ) ≥ log(1/δ)) ≤ δ. One-sided binomial test at 1% that the
    crossing rate is ≤ δ = 0.1 (100 runs: refuted from 18 crossings on)."""
    crossings = universal_inference_crossings(100, 100)
    assert binomtest(crossings, 100, 0.1, alternative="greater").pvalue > 0.01


@pytest.mark.slow
def test_universal_inference_process_rarely_crosses_under_the_truth_long_runs():
    """As above with 300 runs of 300 comparisons (refuted from 42 crossings on)."""
    crossings = universal_inference_crossings(300, 300)
    assert binomtest(crossings, 300, 0.1, alternative="greater").pvalue > 0.01


def test_leader_and_utilities_rank_untested_policies():
    # Features from two factors; policies 0 and 5 are never compared, yet ranked.
    x = np.array([[a, b] for a in (0.0, 1.0, 2.0) for b in (0.0, 1.0)])
    theta = np.array([1.0, -0.5])
    rng = np.random.default_rng(0)
    model = StructuredModel(x, 0.05, UniversalInferenceThreshold())
    for _ in range(2000):
        a, b = rng.choice([1, 2, 3, 4], size=2, replace=False)
        p = 1 / (1 + np.exp(-(x[a] - x[b]) @ theta))
        model.tell(int(a), int(b), float(rng.random() < p))
    assert model.leader == 4  # (2, 0): the true best, compared
    assert np.argsort(model.utilities())[0] == 1  # (0, 1): the true worst, never compared
    intervals = model.utility_intervals()
    assert intervals[model.leader, 0] == pytest.approx(0.0) and intervals.shape == (6, 2)


def _random_model(seed: int, n_policies: int, n_comparisons: int, epsilon: float = 0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_policies, 4)) / 2.0
    theta = rng.normal(size=4)
    model = StructuredModel(x, 0.05, UniversalInferenceThreshold(), epsilon)
    for _ in range(n_comparisons):
        a, b = rng.choice(n_policies, size=2, replace=False)
        p = 1 / (1 + np.exp(-(x[a] - x[b]) @ theta))
        model.tell(int(a), int(b), float(rng.random() < p))
    return model


@pytest.mark.parametrize("epsilon", [0.0, 0.05])
@pytest.mark.parametrize(("seed", "n_comparisons"), [(0, 40), (1, 300), (2, 3000), (3, 10000)])
def test_statistic_lower_bounds_never_exceed_the_exact_statistics(seed, n_comparisons, epsilon):
    model = _random_model(seed, 25, n_comparisons, epsilon)
    rivals, _, alternatives = model.gaussian_statistics()
    lower = model.statistic_lower_bounds(rivals)
    exact = np.array(
        [model.exact_statistic(int(j), lam) for j, lam in zip(rivals, alternatives, strict=True)]
    )
    assert np.all(lower >= 0.0)
    assert np.all(lower <= exact + 1e-8)
    if n_comparisons >= 3000:  # once data pin θ down, over half the exact value where stopping
        near = exact <= max(40.0, exact.min())  # decisions are made (statistics of order 10–40)
        assert np.all(lower[near] > 0.5 * exact[near])


def test_large_k_certification_fits_only_the_rivals_near_the_threshold():
    # K = 1,000 rivals: the bounds clear (almost) all of them without a constrained fit.
    from llmpo import Experiment, Structured
    from llmpo.environments.structured import StructuredEnvironment
    from llmpo.harness.instances import make_structured_instance

    rng = np.random.default_rng(5)
    x = rng.normal(size=(1000, 5)) / math.sqrt(5)
    theta = rng.normal(size=5)
    instance = make_structured_instance(x, 1.5 * theta / np.linalg.norm(theta))
    experiment = Experiment(Structured(instance.features), 0.05, seed=0)
    environment = StructuredEnvironment(instance, 0)
    while not experiment.done:
        for a, b in experiment.ask():
            experiment.tell(a, b, environment.outcome(a, b))
    result = experiment.result
    assert result.certified and result.best == instance.best
    assert experiment.model.exact_fits_last_check < 50
    assert min(result.statistics) > result.thresholds[0]


def test_epsilon_moves_the_alternative_by_the_utility_margin():
    model = _random_model(4, 10, 500, epsilon=0.1)
    gamma = math.log(0.6 / 0.4)
    assert model.margin == pytest.approx(gamma)
    plain = _random_model(4, 10, 500)
    # Same data: every statistic grows with the margin, and the alternative hyperplane moves.
    _, screened_eps, alternatives = model.gaussian_statistics()
    rivals, screened, _ = plain.gaussian_statistics()
    assert np.all(screened_eps > screened)
    gaps = model.features[rivals] - model.features[model.leader]
    np.testing.assert_allclose(np.einsum("jd,jd->j", alternatives, gaps), gamma, atol=1e-9)
    assert model.exact_statistic(int(rivals[0])) > plain.exact_statistic(int(rivals[0]))


def test_bradley_terry_on_decisive_outcomes_is_consistent_under_davidson_ties():
    """Davidson ties (P(tie) ∝ ν√(π_a π_b), ν = 3: about 60% ties): the fit on the decisive
    outcomes recovers θ, while counting ties ½ shrinks it towards 0 (6,000 comparisons, seed 0;
    measured 0.78, 0.33 against 0.31, 0.14 for θ = 0.8, 0.3)."""
    theta = np.array([0.8, 0.3])
    features = one_hot(3)
    strength = np.exp(features @ theta)
    rng = np.random.default_rng(0)
    models = {
        ties: StructuredModel(features, 0.05, UniversalInferenceThreshold(), ties=ties)
        for ties in ("decisive", "half")
    }
    for _ in range(6000):
        a, b = (int(i) for i in rng.choice(3, 2, replace=False))
        tie = 3.0 * np.sqrt(strength[a] * strength[b])
        draw = rng.random() * (strength[a] + strength[b] + tie)
        outcome = 1.0 if draw < strength[a] else 0.0 if draw < strength[a] + strength[b] else 0.5
        for model in models.values():
            model.tell(a, b, outcome)
    np.testing.assert_allclose(models["decisive"].estimate(), theta, atol=0.1)
    assert np.all(models["half"].estimate() < 0.6 * theta)
