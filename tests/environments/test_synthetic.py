import numpy as np
import pytest

from llmpo.environments import SyntheticEnvironment
from llmpo.harness.instances import make_unstructured_instance


def test_outcome_frequencies_match_win_and_tie_probabilities():
    """100,000 draws per pair: frequencies within 5 standard errors of the truth."""
    instance = make_unstructured_instance(
        [[0.5, 0.7, 0.4], [0.3, 0.5, 0.5], [0.6, 0.5, 0.5]],
        tie_prob=[[0, 0.2, 0], [0.2, 0, 0.6], [0, 0.6, 0]],
        require_winner=False,
    )
    environment = SyntheticEnvironment(instance, 5)
    n = 100_000
    for a, b in [(0, 1), (1, 0), (1, 2), (2, 0)]:
        outcomes = np.array([environment.outcome(a, b) for _ in range(n)])
        tie = instance.tie_prob[a, b]
        win = instance.win_prob[a, b] - tie / 2
        for value, probability in [(1.0, win), (0.5, tie)]:
            frequency = np.mean(outcomes == value)
            assert (
                abs(frequency - probability)
                <= 5 * np.sqrt(probability * (1 - probability) / n) + 1e-12
            )
        assert outcomes.mean() == pytest.approx(instance.win_prob[a, b], abs=5 * 0.5 / np.sqrt(n))


def test_same_seed_same_outcomes_per_pair_whatever_the_order():
    instance = make_unstructured_instance([[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.3, 0.4, 0.5]])
    first = SyntheticEnvironment(instance, 9)
    second = SyntheticEnvironment(instance, 9)
    along = [first.outcome(0, 1) for _ in range(600)]
    interleaved = []
    for _ in range(600):
        second.outcome(1, 2)  # other pairs do not shift the (0, 1) stream
        interleaved.append(second.outcome(0, 1))
    assert along == interleaved
    third = SyntheticEnvironment(instance, 10)
    assert [third.outcome(0, 1) for _ in range(600)] != along
    assert first.compare(0, 2).outcome in (0.0, 0.5, 1.0)
