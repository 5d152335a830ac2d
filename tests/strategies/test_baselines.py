"""Baselines of issue 6: top-two, successive elimination, knockout.

δ-correctness is a one-sided binomial test at level 1% of H0: error rate ≤ δ, fixed seeds.
"""

import numpy as np
import pytest
from scipy.stats import binomtest

from llmpo import Experiment
from llmpo.environments.synthetic import SyntheticEnvironment
from llmpo.harness.reference import reference_instance
from llmpo.harness.simulate import STRATEGIES, simulate
from llmpo.models.unstructured import UnstructuredModel
from llmpo.spaces import Structured
from llmpo.stats.thresholds import KTThreshold
from llmpo.strategies.base import SelfStopping
from llmpo.strategies.baselines import (
    UNSTRUCTURED_BASELINES,
    Knockout,
    SuccessiveElimination,
    TopTwo,
)

DELTA = 0.1
REPS = 60


def model_with(outcomes: dict[tuple[int, int], list[float]], n_policies: int = 4):
    model = UnstructuredModel(n_policies, DELTA, KTThreshold())
    for (a, b), results in outcomes.items():
        for outcome in results:
            model.tell(a, b, outcome)
    return model


@pytest.mark.slow  # Monte Carlo: ~1 min in all on 2 cores
@pytest.mark.parametrize("strategy", list(UNSTRUCTURED_BASELINES))
@pytest.mark.parametrize("instance_name", ["BT5", "CYC4"])
def test_baseline_is_delta_correct(strategy, instance_name):
    summary = simulate(
        reference_instance(instance_name), strategy, DELTA, reps=REPS, seed=6, workers=2
    )
    test = binomtest(summary["errors"], summary["reps"], DELTA, alternative="greater")
    assert test.pvalue > 0.01, summary
    assert summary["uncertified"] == 0


def test_baselines_are_registered_everywhere():
    for name in UNSTRUCTURED_BASELINES:
        assert name in STRATEGIES
        assert Experiment(4, strategy=name).strategy.name == name
    with pytest.raises(ValueError, match="top-two"):
        Experiment(4, strategy="no-such-rule")
    with pytest.raises(ValueError, match="unknown 'knockout'"):
        Experiment(Structured([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), strategy="knockout")


@pytest.mark.parametrize("name", ["successive-elimination", "knockout"])
def test_elimination_baselines_refuse_epsilon_and_class_b(name):
    for options in ({"epsilon": 0.05}, {"assume_condorcet": True}):
        experiment = Experiment(4, strategy=name, **options)
        with pytest.raises(ValueError, match="epsilon"):
            experiment.ask()


def test_top_two_splits_between_leader_pair_and_challenger_witness_pair():
    # Leader 0 beats 1, 2, 3; policy 1 is the challenger (smallest margin); 1's strongest
    # opponent is 3 (it lost every comparison against 3). Every pair is sampled enough that
    # forced exploration is quiet.
    model = model_with(
        {
            (0, 1): [1, 0] * 5 + [1],
            (0, 2): [1] * 20,
            (0, 3): [1] * 20,
            (1, 3): [0] * 10,
            (1, 2): [1] * 5,
            (2, 3): [1] * 5,
        }
    )
    assert model.leader == 0
    rng = np.random.default_rng(0)
    pairs = [TopTwo().select(model, rng) for _ in range(400)]
    share = pairs.count((0, 1)) / len(pairs)
    assert set(pairs) == {(0, 1), (3, 1)}
    assert 0.4 < share < 0.6


def test_top_two_explores_a_winner_that_lost_early():
    # CYC4-like stall: policy 0 lost its only comparisons, the cycle 1 → 2 → 3 → 1 is well
    # estimated. Forced exploration must return to a pair of policy 0.
    cycle = {(1, 2): [1] * 4 + [0], (2, 3): [1] * 4 + [0], (3, 1): [1] * 4 + [0]}
    model = model_with({(0, 1): [0], (0, 2): [0], (0, 3): [0], **cycle})
    assert 0 in TopTwo().select(model, np.random.default_rng(0))


def test_successive_elimination_samples_active_pairs_and_stops_on_the_survivor():
    strategy = SuccessiveElimination()
    model = model_with({(0, 1): [1] * 60}, n_policies=3)
    assert not strategy.is_certified(model)
    rng = np.random.default_rng(0)
    # Policy 1 is out: only the pair of the two active policies is proposed.
    assert {strategy.select(model, rng) for _ in range(5)} == {(0, 2)}
    for _ in range(60):
        model.tell(2, 0, 0.0)
    assert strategy.is_certified(model)
    certificate = strategy.certificate(model)
    assert certificate.leader == 0
    assert certificate.certified
    # The recorded evidence survives later comparisons that move the estimate.
    for _ in range(80):
        model.tell(0, 1, 0.0)
    assert strategy.certificate(model).certified


def test_knockout_plays_a_bracket_and_crowns_the_champion():
    strategy = Knockout()
    model = UnstructuredModel(4, DELTA, KTThreshold())
    rng = np.random.default_rng(3)
    first = strategy.select(model, rng)
    players = list(strategy._round)
    assert sorted(players) == [0, 1, 2, 3]
    assert first in [(players[0], players[1]), (players[2], players[3])]
    # The lower index wins every comparison: 0 must be champion, via two rounds of matches.
    rounds = set()
    while not strategy.is_certified(model):
        a, b = strategy.select(model, rng)
        rounds.add(len(strategy._round))
        model.tell(a, b, 1.0 if a < b else 0.0)
    assert rounds == {4, 2}
    certificate = strategy.certificate(model)
    assert certificate.leader == 0 and certificate.certified
    # Each pair met at most once: three matches in all.
    counts = model.counts()
    assert np.count_nonzero(np.triu(counts)) == 3


def test_self_stopping_strategies_drive_the_experiment():
    instance = reference_instance("BT5")
    for strategy in (SuccessiveElimination(), Knockout()):
        assert isinstance(strategy, SelfStopping)
        environment = SyntheticEnvironment(instance, 1)
        experiment = Experiment(instance.policies, delta=DELTA, strategy=strategy, seed=1)
        while not experiment.done:
            for a, b in experiment.ask(4):
                experiment.tell(a, b, environment.outcome(a, b))
                if experiment.done:
                    break
        result = experiment.result
        assert result.certified and result.best == 0
        assert result.strategy == strategy.name
        assert result.min_margin > 0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["uniform", "oracle"])
@pytest.mark.parametrize("instance_name", ["BT5", "CYC4"])
def test_reference_strategies_are_delta_correct(strategy, instance_name):
    """uniform and oracle stop with the model's GLR rule: the same binomial test at 1%."""
    summary = simulate(
        reference_instance(instance_name), strategy, DELTA, reps=REPS, seed=6, workers=2
    )
    test = binomtest(summary["errors"], summary["reps"], DELTA, alternative="greater")
    assert test.pvalue > 0.01, summary
    assert summary["uncertified"] == 0
