"""The incremental model agrees with the pure functions of llmpo.stats.unstructured."""

import math

import numpy as np
import pytest

from llmpo.models.unstructured import UnstructuredModel
from llmpo.stats.thresholds import GK16HeuristicThreshold, KTThreshold
from llmpo.stats.unstructured import empirical_leader, glr_class_a, glr_class_b


def told_model(seed: int, epsilon: float = 0.0, assume_condorcet: bool = False, threshold=None):
    rng = np.random.default_rng(seed)
    model = UnstructuredModel(
        5, 0.05, threshold or KTThreshold(), epsilon=epsilon, assume_condorcet=assume_condorcet
    )
    counts = np.zeros((5, 5))
    wins = np.zeros((5, 5))
    for _ in range(300):
        a, b = rng.choice(5, size=2, replace=False)
        outcome = float(
            rng.choice([0.0, 0.5, 1.0], p=[0.3, 0.1, 0.6] if a < b else [0.6, 0.1, 0.3])
        )
        model.tell(int(a), int(b), outcome)
        counts[a, b] += 1
        counts[b, a] += 1
        wins[a, b] += outcome
        wins[b, a] += 1 - outcome
    with np.errstate(invalid="ignore"):
        hat = np.where(counts > 0, wins / np.maximum(counts, 1), 0.5)
    np.fill_diagonal(hat, 0.5)
    return model, counts, hat


@pytest.mark.parametrize("seed", range(5))
def test_incremental_state_matches_batch_formulas(seed):
    model, counts, hat = told_model(seed, epsilon=0.05)
    np.testing.assert_allclose(model.win_prob_hat(), hat)
    np.testing.assert_array_equal(model.counts(), counts)
    assert model.leader == empirical_leader(hat)
    certificate = model.certificate()
    expected = glr_class_a(counts, hat, model.leader, level=0.45)
    np.testing.assert_allclose(certificate.statistics, np.delete(expected, model.leader))
    kt = KTThreshold().pair(counts[model.leader, certificate.rivals], 300, 0.05, math.log(4))
    np.testing.assert_allclose(certificate.thresholds, kt)
    assert model.is_certified() == certificate.certified


@pytest.mark.parametrize("seed", range(5))
def test_class_b_state_matches_batch_formulas(seed):
    model, counts, hat = told_model(seed, assume_condorcet=True)
    certificate = model.certificate()
    expected, witnesses = glr_class_b(counts, hat, model.leader)
    np.testing.assert_allclose(certificate.statistics, np.delete(expected, model.leader))
    for rival, threshold in zip(certificate.rivals, certificate.thresholds, strict=True):
        in_set = counts[witnesses[:, rival], rival]
        assert threshold == pytest.approx(
            KTThreshold().pair_set(in_set, 300, 0.05, 4 * math.log(2))
        )
    assert model.is_certified() == certificate.certified


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
    model, _, _ = told_model(11)
    rows, cols, shares = model.plugin_weights()
    leader = model.leader
    assert np.all(rows == leader) and shares.sum() == pytest.approx(1.0)
    assert sorted(cols) == [k for k in range(5) if k != leader]
    assert [tuple(p[:2]) for p in model.target_proportions()] == [
        (min(leader, c), max(leader, c)) for c in cols
    ]
