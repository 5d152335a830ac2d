"""The incremental model agrees with the pure functions of llmpo.stats.unstructured."""

import math

import numpy as np
import pytest

from llmpo.models.unstructured import UnstructuredModel
from llmpo.stats.bernoulli import kl_bernoulli
from llmpo.stats.thresholds import GK16HeuristicThreshold, KTThreshold
from llmpo.stats.unstructured import empirical_leader, glr_class_a, glr_class_b


def told_model(
    seed: int,
    epsilon: float = 0.0,
    assume_condorcet: bool = False,
    threshold=None,
    ties: str = "decisive",
):
    """A model told 300 random outcomes, with brute-force counts, statistic counts and p̂.

    With ``ties="decisive"`` the statistic's count is wins + losses and p̂ = wins/(wins +
    losses); with ``"half"`` it is the comparisons and the mean outcome.
    """
    rng = np.random.default_rng(seed)
    model = UnstructuredModel(
        5,
        0.05,
        threshold or KTThreshold(),
        epsilon=epsilon,
        assume_condorcet=assume_condorcet,
        ties=ties,
    )
    counts = np.zeros((5, 5))
    wins = np.zeros((5, 5))
    ties_seen = np.zeros((5, 5))
    for _ in range(300):
        a, b = rng.choice(5, size=2, replace=False)
        outcome = float(
            rng.choice([0.0, 0.5, 1.0], p=[0.3, 0.3, 0.4] if a < b else [0.4, 0.3, 0.3])
        )
        model.tell(int(a), int(b), outcome)
        counts[a, b] += 1
        counts[b, a] += 1
        wins[a, b] += outcome == 1.0
        wins[b, a] += outcome == 0.0
        ties_seen[a, b] += outcome == 0.5
        ties_seen[b, a] += outcome == 0.5
    stat_counts = counts - ties_seen if ties == "decisive" else counts
    stat_wins = wins if ties == "decisive" else wins + ties_seen / 2
    with np.errstate(invalid="ignore"):
        hat = np.where(stat_counts > 0, stat_wins / np.maximum(stat_counts, 1), 0.5)
    np.fill_diagonal(hat, 0.5)
    return model, counts, stat_counts, hat, (wins, ties_seen)


@pytest.mark.parametrize("ties", ["decisive", "half"])
@pytest.mark.parametrize("seed", range(5))
def test_incremental_state_matches_batch_formulas(seed, ties):
    model, counts, stat_counts, hat, (wins, ties_seen) = told_model(seed, epsilon=0.05, ties=ties)
    np.testing.assert_allclose(model.win_prob_hat(), hat)
    np.testing.assert_array_equal(model.counts(), counts)
    for a, b in [(0, 1), (3, 2), (4, 0)]:
        assert model.outcome_counts(a, b) == (wins[a, b], ties_seen[a, b], wins[b, a])
    assert model.leader == empirical_leader(hat)
    certificate = model.certificate()
    expected = glr_class_a(stat_counts, hat, model.leader, level=0.45)
    np.testing.assert_allclose(certificate.statistics, np.delete(expected, model.leader))
    kt = KTThreshold().pair(stat_counts[model.leader, certificate.rivals], 300, 0.05, math.log(4))
    np.testing.assert_allclose(certificate.thresholds, kt)
    assert model.is_certified() == certificate.certified


@pytest.mark.parametrize("ties", ["decisive", "half"])
@pytest.mark.parametrize("seed", range(5))
def test_class_b_state_matches_batch_formulas(seed, ties):
    model, _, stat_counts, hat, _ = told_model(seed, assume_condorcet=True, ties=ties)
    certificate = model.certificate()
    expected, witnesses = glr_class_b(stat_counts, hat, model.leader)
    np.testing.assert_allclose(certificate.statistics, np.delete(expected, model.leader))
    for rival, threshold in zip(certificate.rivals, certificate.thresholds, strict=True):
        in_set = stat_counts[witnesses[:, rival], rival]
        assert threshold == pytest.approx(
            KTThreshold().pair_set(in_set, 300, 0.05, 4 * math.log(2))
        )
    assert model.is_certified() == certificate.certified


def test_fractional_outcomes_enter_as_decisive_weights():
    """y adds (2y − 1)⁺ to the wins and (1 − 2y)⁺ to the losses; ½ adds nothing."""
    decisive = UnstructuredModel(2, 0.05, KTThreshold())
    half = UnstructuredModel(2, 0.05, KTThreshold(), ties="half")
    for outcome in (0.8, 0.5, 0.3, 1.0, 0.9):
        decisive.tell(0, 1, outcome)
        half.tell(0, 1, outcome)
    alpha, beta = 0.6 + 1.0 + 0.8, 0.4
    assert decisive.outcome_counts(0, 1) == pytest.approx((alpha, 5 - alpha - beta, beta))
    assert decisive.win_prob_hat()[0, 1] == pytest.approx(alpha / (alpha + beta))
    assert half.win_prob_hat()[0, 1] == pytest.approx(3.5 / 5)
    statistic = decisive.certificate().statistics[0]
    assert statistic == pytest.approx((alpha + beta) * kl_bernoulli(alpha / (alpha + beta), 0.5))
    # Never below the half statistic (joint convexity), and paid on fewer counts.
    assert statistic >= half.certificate().statistics[0]
    assert decisive.certificate().thresholds[0] < half.certificate().thresholds[0]


def test_stopping_check_agrees_with_certificate_along_a_run():
    """The O(1) check equals the full certificate after every tell (t-based heuristic threshold)."""
    rng = np.random.default_rng(3)
    model = UnstructuredModel(4, 0.1, GK16HeuristicThreshold())
    agreements = 0
    for _ in range(2000):
        a, b = rng.choice(4, size=2, replace=False)
        model.tell(
            int(a), int(b), float(rng.random() < (0.75 if min(a, b) == 0 and a == 0 else 0.4))
        )
        assert model.is_certified() == model.certificate().certified
        agreements += model.certificate().certified
    assert agreements > 0  # the run does reach certified states


def test_pending_counts_and_least_sampled_pair():
    model = UnstructuredModel(3, 0.05, KTThreshold())
    model.mark_pending(0, 1)
    model.mark_pending(1, 0)
    assert model.effective_count(1, 0) == 2 and model.n_pending == 2
    assert model.unmark_pending(0, 1) and model.n_pending == 1
    assert not model.unmark_pending(0, 2)
    assert model.least_sampled_pair(0.5) == (0, 2)
    model.tell(0, 2, 1.0)
    model.tell(1, 2, 1.0)
    assert model.least_sampled_pair(1.0) is None  # every pair has ≥ 1 effective comparison
    assert model.least_sampled_pair(1.5) in {(0, 1), (0, 2), (1, 2)}


def test_plugin_weights_follow_the_closed_form():
    model, counts, stat_counts, hat, _ = told_model(11)
    rows, cols, shares = model.plugin_weights()
    leader = model.leader
    assert np.all(rows == leader) and shares.sum() == pytest.approx(1.0)
    assert sorted(cols) == [k for k in range(5) if k != leader]
    # w ∝ 1/(r̂·d(p̂, ½)): the decisive rate r̂ turns decisive information into comparisons.
    rate = stat_counts[leader, cols] / counts[leader, cols]
    divergence = np.where(hat[leader, cols] > 0.5, kl_bernoulli(hat[leader, cols], 0.5), 0.0)
    inverse = 1.0 / np.maximum(rate * divergence, 1e-9)
    np.testing.assert_allclose(shares, inverse / inverse.sum())
    assert [tuple(p[:2]) for p in model.target_proportions()] == [
        (min(leader, c), max(leader, c)) for c in cols
    ]
