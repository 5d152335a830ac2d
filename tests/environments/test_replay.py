"""Replay of recorded judgments and pair counts, and the Arena dense-subset replay."""

import json
from pathlib import Path

import numpy as np
import pytest

from llmpo import Experiment
from llmpo.datasets import load_arena_counts
from llmpo.environments.replay import (
    PairCount,
    ReplayEnvironment,
    ReplayError,
    dense_policy_subset,
    detect_format,
    read_judgments,
    read_pair_counts,
)
from llmpo.stats.unstructured import condorcet_winner

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ARENA = SHARED_DATA / "chatbotarena_20240814.json"


def needs(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path.name} not found in {SHARED_DATA.resolve()} (shared test data absent)")


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def judgment(a, b, outcome, task="t", **extra):
    return {"policy_a": a, "policy_b": b, "task_id": task, "outcome": outcome, **extra}


def test_judgments_are_sampled_with_replacement_at_their_empirical_rate(tmp_path):
    records = [judgment("a", "b", 1, f"t{k}", order="ab") for k in range(3)] + [
        judgment("b", "a", 1, "t9", order="ab", judge="gpt")
    ]
    environment = ReplayEnvironment.from_judgments(
        read_judgments(write_jsonl(tmp_path / "j.jsonl", records)), seed=0
    )
    assert environment.policies == ("a", "b")
    outcomes = [environment.compare(0, 1) for _ in range(4000)]
    assert np.mean([c.outcome for c in outcomes]) == pytest.approx(0.75, abs=0.03)
    lost = next(c for c in outcomes if c.outcome == 0)
    assert lost.task_id == "t9" and lost.raw == "gpt" and lost.order == "ba"  # seen from a
    reverse = [environment.compare(1, 0).outcome for _ in range(4000)]
    assert np.mean(reverse) == pytest.approx(0.25, abs=0.03)


def test_reseeding_makes_a_comparison_a_function_of_the_seed(tmp_path):
    records = [judgment("a", "b", o, str(k)) for k, o in enumerate([0, 0.5, 1, 1, 0])]
    environment = ReplayEnvironment.from_judgments(
        read_judgments(write_jsonl(tmp_path / "j.jsonl", records))
    )
    draws = []
    for _ in range(2):
        environment.reseed((7, 3))
        draws.append([environment.compare(0, 1).task_id for _ in range(5)])
    assert draws[0] == draws[1]


def test_pair_counts_replay_wins_losses_and_ties(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"policy_a": "a", "policy_b": "b", "wins": 60, "losses": 20, "ties": 20}],
    )
    assert detect_format(path) == "counts"
    environment = ReplayEnvironment.from_counts(read_pair_counts(path), seed=1)
    outcomes = np.array([environment.compare(1, 0).outcome for _ in range(5000)])
    assert np.mean(outcomes == 0.5) == pytest.approx(0.2, abs=0.02)
    assert np.mean(outcomes) == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"policy_a": "a", "policy_b": "b", "task_id": "t", "outcome": 2}', "'outcome'"),
        ('{"policy_a": "a", "policy_b": "b", "task_id": "t", "outcome": true}', "'outcome'"),
        ('{"policy_a": "a", "policy_b": "b", "outcome": NaN}', "NaN is not a number"),
        ('{"policy_a": "a", "policy_b": "b", "outcome": -0.1}', "'outcome' must be a number"),
        ('{"policy_a": "a", "policy_b": "b", "outcome": 0.7, "tie": true}', "not a tie"),
        ('{"policy_a": "a", "policy_b": "b", "outcome": 1, "tie": true}', "not a tie"),
        ('{"policy_a": "a", "policy_b": "b", "tie": "yes"}', "'tie' must be true or false"),
        ('{"policy_b": "b", "task_id": "t", "outcome": 1}', "'policy_a'"),
        ('{"policy_a": "a", "policy_b": "a", "task_id": "t", "outcome": 1}', "both"),
        ('{"policy_a": "a", "policy_b": "b", "outcome": 1, "order": "x"}', "'order'"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_judgment_line_is_reported_with_its_number(tmp_path, line, problem):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(judgment("a", "b", 1)) + "\n\n" + line + "\n")
    with pytest.raises(ReplayError) as error:
        read_judgments(path)
    assert f"{path}, line 3" in str(error.value) and problem in str(error.value)


def test_preference_probabilities_and_tie_flags_are_read(tmp_path):
    path = write_jsonl(
        tmp_path / "j.jsonl",
        [
            judgment("a", "b", 0.83),
            {"policy_a": "a", "policy_b": "b", "tie": True},
            judgment("a", "b", 0.5, tie=True),
            judgment("b", "a", 0),
        ],
    )
    assert [j.outcome for j in read_judgments(path)] == [0.83, 0.5, 0.5, 0.0]


def test_malformed_count_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"policy_a": "a", "policy_b": "b", "wins": 1, "losses": -2}\n')
    with pytest.raises(ReplayError, match=r"line 1: 'losses' must be a count"):
        read_pair_counts(path)


def test_pair_without_records_is_refused_or_dense_subset_drops_policies():
    counts = [
        PairCount("a", "b", 5, 5),
        PairCount("a", "c", 5, 5),
        PairCount("b", "c", 5, 5),
        PairCount("a", "d", 5, 5),
    ]
    with pytest.raises(ReplayError, match=r"2 pairs have fewer than 1 records.*\(b, d\).*dense"):
        ReplayEnvironment.from_counts(counts)
    environment = ReplayEnvironment.from_counts(counts, dense_subset=True)
    assert environment.policies == ("a", "b", "c") and environment.dropped == ("d",)
    restricted = ReplayEnvironment.from_counts(counts, ["a", "d"])
    assert restricted.policies == ("a", "d") and restricted.record_count(0, 1) == 10


def test_unknown_policy_names_are_refused():
    with pytest.raises(ReplayError, match=r"unknown policies \['zed'\].*known policies: a, b"):
        ReplayEnvironment.from_counts([PairCount("a", "b", 1, 1)], ["a", "zed"])


def test_dense_subset_needs_min_records_per_pair():
    records = np.array([[0, 60, 60, 10], [60, 0, 60, 60], [60, 60, 0, 60], [10, 60, 60, 0]])
    assert dense_policy_subset(records, 50) == [0, 1, 2]  # tie: the later one goes
    assert dense_policy_subset(records, 5) == [0, 1, 2, 3]


def test_arena_dense_subset_replay_names_the_subset_condorcet_winner():
    needs(ARENA)
    assert detect_format(ARENA) == "arena"
    counts = load_arena_counts(ARENA)
    environment = ReplayEnvironment.from_counts(
        counts, dense_subset=True, min_pair_records=50, seed=5
    )
    names = environment.policies
    assert len(names) == 35 and len(environment.dropped) == 129 - 35
    # The full-data win probabilities of the subset, ties counted 1/2.
    index = {name: k for k, name in enumerate(names)}
    wins, totals = np.zeros((35, 35)), np.zeros((35, 35))
    for c in counts:
        if c.policy_a in index and c.policy_b in index:
            a, b = index[c.policy_a], index[c.policy_b]
            n = c.wins + c.losses + c.ties
            wins[a, b] += c.wins + c.ties / 2
            wins[b, a] += c.losses + c.ties / 2
            totals[a, b] += n
            totals[b, a] += n
    assert totals[~np.eye(35, dtype=bool)].min() >= 50
    win_prob = np.where(totals > 0, wins / np.maximum(totals, 1), 0.5)
    winner = condorcet_winner(win_prob)
    assert winner is not None and names[winner] == "gpt-4o-2024-05-13"

    experiment = Experiment(names, delta=0.05, seed=5)
    while not experiment.done:
        for a, b in experiment.ask(64):
            if not experiment.done:
                experiment.tell(a, b, environment.compare(a, b).outcome)
    assert experiment.result.certified, experiment.result.n_comparisons
    assert experiment.result.best_name == names[winner]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps(judgment("a", "b", 1)) + "\n", "judgments"),
        ('{"policy_a": "a", "policy_b": "b", "wins": 1, "losses": 0}\n', "counts"),
        (json.dumps({"models": ["a"], "X": [], "Y": []}, indent=2), "arena"),
        (json.dumps([{"cmp_key": "a_b", "annotator1": 1}], indent=2), "pandalm"),
    ],
)
def test_format_detection(tmp_path, content, expected):
    path = tmp_path / "data"
    path.write_text(content)
    assert detect_format(path) == expected


def test_unknown_format_asks_for_it(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n')
    with pytest.raises(ReplayError, match=r"set environment\.format"):
        detect_format(path)
