"""The ask/tell Experiment: bad input, budget, ε-optimal stopping, batches, results."""

import numpy as np
import pytest

from llmpo import Experiment, Unstructured
from llmpo.environments import SyntheticEnvironment
from llmpo.harness.reference import reference_instance
from llmpo.strategies import Oracle


def run(experiment: Experiment, environment: SyntheticEnvironment, batch: int = 1) -> None:
    while not experiment.done:
        for a, b in experiment.ask(batch):
            experiment.tell(a, b, environment.outcome(a, b))
            if experiment.done:
                break


@pytest.mark.parametrize(
    ("i", "j", "outcome", "message"),
    [
        (0, 1, 1.2, r"comparison \(0, 1\): outcome must be a number in \[0, 1\]"),
        (0, 1, -0.1, r"comparison \(0, 1\): outcome must be a number in \[0, 1\]"),
        (0, 1, "1", r"comparison \(0, 1\): outcome must be a number in \[0, 1\]"),
        (0, 1, True, r"comparison \(0, 1\): outcome must be a number in \[0, 1\]"),
        (2, 1, float("nan"), r"comparison \(2, 1\): outcome must be a number in \[0, 1\]"),
        (0, 0, 1.0, "unknown pair"),
        (0, 3, 1.0, "unknown policy 3: indices run 0..2"),
        (-1, 2, 1.0, "unknown policy -1"),
        ("a", 1, 1.0, "unknown policy 'a'; the policies are 'p0', 'p1', 'p2'"),
        ("p1", 1, 1.0, "compared with itself"),
        (0.0, 1, 1.0, "give a name or an integer index"),
    ],
)
def test_bad_tell_raises_and_changes_nothing(i, j, outcome, message):
    experiment = Experiment(3, delta=0.1)
    pairs = experiment.ask(2)
    experiment.tell(*pairs[0], 1.0)
    before = experiment.result
    with pytest.raises(ValueError, match=message):
        experiment.tell(i, j, outcome)
    after = experiment.result
    assert after.n_comparisons == before.n_comparisons == 1
    np.testing.assert_array_equal(after.counts, before.counts)
    np.testing.assert_array_equal(after.win_prob_hat, before.win_prob_hat)
    assert experiment.n_pending == 1


def test_ask_gives_and_tell_takes_policy_names():
    names = ["concise", "chain-of-thought", "persona"]
    by_index, by_name = Experiment(names, seed=3), Experiment(names, seed=3)
    pairs = by_index.ask(4)
    named = by_name.ask(4, names=True)
    assert named == [(names[a], names[b]) for a, b in pairs]
    for (a, b), (x, y) in zip(pairs, named, strict=True):
        by_index.tell(a, b, 1)
        by_name.tell(x, y, 1)
    assert by_name.n_pending == 0
    # Names and indices mix: the same comparisons told either way give the same model.
    by_index.tell(0, 1, 0.5)
    by_name.tell("concise", 1, 0.5)
    np.testing.assert_array_equal(by_index.result.counts, by_name.result.counts)
    np.testing.assert_array_equal(by_index.result.win_prob_hat, by_name.result.win_prob_hat)
    by_index.tell(2, 0, 1)
    by_name.tell("persona", "concise", 1)
    np.testing.assert_array_equal(by_index.result.win_prob_hat, by_name.result.win_prob_hat)


def test_constructor_refuses_bad_parameters():
    with pytest.raises(ValueError, match="delta"):
        Experiment(3, delta=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        Experiment(3, epsilon=0.5)
    with pytest.raises(ValueError, match="max_comparisons"):
        Experiment(3, max_comparisons=0)
    with pytest.raises(ValueError, match="strategy: unknown 'best'"):
        Experiment(3, strategy="best")
    with pytest.raises(ValueError, match="at least 2 policies"):
        Experiment(["only"])
    with pytest.raises(ValueError, match="duplicate names"):
        Experiment(["a", "b", "a"])
    with pytest.raises(ValueError, match="epsilon > 0"):
        Experiment(3, epsilon=0.1, assume_condorcet=True)


def test_certified_result_and_tell_after_done():
    instance = reference_instance("BT4")
    experiment = Experiment(Unstructured(instance.policies), delta=0.05, seed=1)
    run(experiment, SyntheticEnvironment(instance, 1))
    result = experiment.result
    assert result.certified and result.stop_reason == "certified" and result.best == 0
    assert all(s > b for s, b in zip(result.statistics, result.thresholds, strict=True))
    assert result.min_margin > 0
    assert result.n_comparisons == int(np.triu(result.counts).sum())
    assert experiment.ask(4) == []
    with pytest.raises(RuntimeError, match="done"):
        experiment.tell(0, 1, 1.0)
    as_dict = result.to_dict()
    assert as_dict["best"] == "p0" and len(as_dict["rivals"]) == 3
    assert sum(row["share"] for row in as_dict["target_proportions"]) == pytest.approx(1.0)


def test_budget_stops_uncertified_with_best_so_far():
    instance = reference_instance("BT10")
    experiment = Experiment(instance.n_policies, delta=0.01, max_comparisons=300)
    environment = SyntheticEnvironment(instance, 0)
    asked = 0
    while not experiment.done:
        pairs = experiment.ask(7)
        asked += len(pairs)
        for a, b in pairs:
            experiment.tell(a, b, environment.outcome(a, b))
    result = experiment.result
    assert asked == 300 and result.n_comparisons == 300
    assert not result.certified and result.stop_reason == "max_comparisons"
    assert result.min_margin < 0  # the certificate is visibly incomplete
    assert len(result.statistics) == 9


def test_epsilon_optimal_stopping_certifies_a_near_tie_quickly():
    """Two policies tied at the top: exact identification is impossible, ε-optimal is not."""
    matrix = np.array([[0.5, 0.5, 0.8], [0.5, 0.5, 0.8], [0.2, 0.2, 0.5]])
    # p_01 = ½ exactly: no Condorcet winner, so build the environment directly from the matrix.
    from llmpo.harness.instances import make_unstructured_instance

    instance = make_unstructured_instance(matrix, require_winner=False)
    experiment = Experiment(3, delta=0.05, epsilon=0.1, max_comparisons=20_000)
    run(experiment, SyntheticEnvironment(instance, 4))
    result = experiment.result
    assert result.certified and result.best in (0, 1)
    assert result.n_comparisons < 5_000


def test_batches_spread_over_pairs_and_count_pending():
    experiment = Experiment(5, delta=0.05)
    pairs = experiment.ask(16)
    assert len(pairs) == 16 and experiment.n_pending == 16
    assert len(set(pairs)) == 4  # the balance rule cycles over the leader's 4 pairs
    experiment.tell(*pairs[0], 0.5)
    assert experiment.n_pending == 15


def test_oracle_strategy_and_tracking_rule_reach_the_winner():
    instance = reference_instance("BT5")
    oracle = Oracle([(0, k) for k in range(1, 5)], [0.696, 0.177, 0.080, 0.047])
    for strategy in (oracle, "llmpo-tracking", "uniform"):
        experiment = Experiment(5, delta=0.1, strategy=strategy)
        run(experiment, SyntheticEnvironment(instance, 2))
        assert experiment.result.certified and experiment.result.best == 0
    with pytest.raises(ValueError, match="one share per pair"):
        Oracle([(0, 1)], [0.5, 0.5])


def test_result_reports_wins_ties_losses_and_the_statistic():
    experiment = Experiment(["a", "b", "c"], delta=0.1)
    for outcome in (1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.75):
        experiment.tell(0, 1, outcome)
    experiment.tell(2, 0, 0.0)
    result = experiment.result
    assert result.best == 0 and result.ties == "decisive"
    rivals = {r["policy"]: r for r in result.to_dict()["rivals"]}
    assert result.to_dict()["ties"] == "decisive"
    # 0.75 is half a win and half a tie.
    assert (rivals["b"]["wins"], rivals["b"]["ties"], rivals["b"]["losses"]) == (2.5, 3.5, 1.0)
    assert rivals["b"]["comparisons"] == 7
    assert rivals["b"]["win_prob_hat"] == pytest.approx(2.5 / 3.5)  # P(win | decisive)
    assert (rivals["c"]["wins"], rivals["c"]["ties"], rivals["c"]["losses"]) == (1.0, 0.0, 0.0)


def test_ties_option_chooses_the_statistic():
    decisive, half = Experiment(2, delta=0.1), Experiment(2, delta=0.1, ties="half")
    # 85% ties, decisive outcomes 3:1 for policy 0: the decisive statistic certifies first.
    rng = np.random.default_rng(0)
    while not decisive.done:
        draw = rng.random()
        outcome = 0.5 if draw < 0.85 else (1.0 if draw < 0.85 + 0.15 * 0.75 else 0.0)
        decisive.tell(0, 1, outcome)
        if not half.done:
            half.tell(0, 1, outcome)
    assert decisive.result.certified and not half.done
    assert half.result.ties == "half"
    with pytest.raises(ValueError, match="ties: unknown 'third'"):
        Experiment(2, ties="third")


# ---- the closed API runners and reports use ------------------------------------------------------
def test_mark_pending_and_abandon_count_comparisons_that_were_not_told():
    experiment = Experiment(["a", "b", "c"], delta=0.1)
    (pair,) = experiment.ask(1)
    assert experiment.n_pending == 1
    experiment.abandon(*pair)  # its verdict was invalid: it will never be told
    assert experiment.n_pending == 0 and experiment.n_comparisons == 0
    experiment.mark_pending("a", "c")  # dispatched again without ask
    assert experiment.n_pending == 1
    experiment.tell("a", "c", 1.0)
    assert experiment.n_pending == 0 and experiment.n_comparisons == 1


def test_from_comparisons_rebuilds_the_experiment_that_told_them():
    instance = reference_instance("BT4")
    environment = SyntheticEnvironment(instance, seed=4)
    live = Experiment(instance.policies, delta=0.1, seed=4)
    told = []
    while not live.done:
        for a, b in live.ask(3):
            if live.done:
                break
            outcome = environment.compare(a, b).outcome
            live.tell(a, b, outcome)
            told.append((a, b, outcome))
    seen = []
    rebuilt = Experiment.from_comparisons(
        instance.policies, told, 0.1, on_told=lambda n, e: seen.append(e.n_comparisons)
    )
    assert seen == list(range(1, len(told) + 1))
    assert rebuilt.done and rebuilt.result.to_dict() == live.result.to_dict()
    # Half of them: not done, the same state as the live experiment had then.
    half = Experiment.from_comparisons(instance.policies, told[: len(told) // 2], 0.1)
    assert not half.done and half.n_comparisons == len(told) // 2
    counts = half.pair_counts()
    assert counts.sum() / 2 == len(told) // 2


def test_structured_is_decided_by_the_space():
    from llmpo import Structured

    structured = Experiment(Structured([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), delta=0.1)
    assert structured.structured and not Experiment(3).structured
    with pytest.raises(ValueError, match="no K×K counts"):
        structured.pair_counts()
