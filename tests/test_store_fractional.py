"""Fractional outcomes in the store (schema v5): migration of older stores, the refusals, and a
replay of preference probabilities run end to end by ``llmpo run`` and resumed."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from llmpo.errors import StoreError
from llmpo.store import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, ComparisonRecord, Store
from llmpo.store.integrity import find_problems
from llmpo.testing.store import tamper
from tests.cli.test_run import invoke
from tests.conftest import SMALLEST


def _v4_store(path, outcomes):
    """A store as llmpo wrote it at schema v4: one experiment with the given outcomes."""
    connection = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 5):
        MIGRATIONS[version](connection)
    connection.execute("PRAGMA user_version=4")
    connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
    config = {"space": "unstructured", "delta": 0.1, "seed": 4, "ties": "half"}
    connection.execute(
        "INSERT INTO experiments (name, created_at, updated_at, status, code_version, config, "
        "policies) VALUES (NULL, 'x', 'x', 'interrupted', '0.1.0', ?, '[\"a\", \"b\"]')",
        (json.dumps(config),),
    )
    for seq, outcome in enumerate(outcomes, 1):
        connection.execute(
            "INSERT INTO comparisons (experiment_id, seq, policy_a, policy_b, task_id, outcome) "
            "VALUES (1, ?, 0, 1, 't', ?)",
            (seq, outcome),
        )
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # v4 admits verdicts only
        connection.execute(
            "INSERT INTO comparisons (experiment_id, seq, policy_a, policy_b, outcome) "
            "VALUES (1, 99, 0, 1, 0.7)"
        )
    connection.close()
    return config


def test_a_v4_store_is_migrated_in_place_keeping_every_row_and_its_statistic(tmp_path):
    path = tmp_path / "runs.db"
    config = _v4_store(path, [1.0, 0.5, 0.0, 1.0])
    with Store(path, readonly=True) as store:  # readers read it as it is (v5 only widens a CHECK)
        assert [c.outcome for c in store.comparisons(1)] == [1.0, 0.5, 0.0, 1.0]
    with tamper(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 4
    with Store(path, writer=True) as store:
        note = store.migration_note()
        assert note is not None and f"from schema v4 to v{SCHEMA_VERSION}" in note
        assert "[0, 1]" in note
        assert "statistic it was created with" in note
        assert store.experiment(1).config == config  # ties: half, as created
        assert [c.outcome for c in store.comparisons(1)] == [1.0, 0.5, 0.0, 1.0]
        store.append_comparison(1, ComparisonRecord(5, 1, 0, 0.73, task_id="u"))
    with Store(path, readonly=True) as store:
        assert store.migration_note() is None
        assert store.comparisons(1)[-1].outcome == pytest.approx(0.73)
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        assert not find_problems(connection)
        # The indexes the viewer pages by are rebuilt with the tables.
        names = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        assert {"comparisons_by_task", "evaluation_comparisons_by_task"} <= names
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # v5 admits [0, 1] only
            connection.execute(
                "INSERT INTO comparisons (experiment_id, seq, policy_a, policy_b, outcome) "
                "VALUES (1, 6, 0, 1, 1.5)"
            )
    finally:
        connection.close()
    with Store(path, writer=True) as store:  # a second opening migrates nothing
        assert store.migration_note() is None


@pytest.mark.parametrize(
    ("outcome", "raw", "problem"),
    [
        (math.nan, None, "not a number in \\[0, 1\\]"),
        (1.5, None, "not a number in \\[0, 1\\]"),
        (-0.25, None, "not a number in \\[0, 1\\]"),
        ("1", None, "is not a number"),
        (True, None, "is not a number"),
        (0.7, {"tie": True}, "flagged as a tie but is not 0.5"),
    ],
)
def test_a_bad_outcome_is_refused_naming_the_comparison_and_nothing_is_lost(
    tmp_path, outcome, raw, problem
):
    with Store(tmp_path / "runs.db", writer=True) as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 0.25))
        store.append_comparison(experiment_id, ComparisonRecord(2, 1, 0, 0.5, raw={"tie": True}))
        with pytest.raises(
            StoreError, match=rf"experiment {experiment_id}, comparison #3 .*task 'q7'.*{problem}"
        ):
            store.append_comparison(
                experiment_id, ComparisonRecord(3, 0, 1, outcome, task_id="q7", raw=raw)
            )
        evaluation_id = store.create_evaluation(experiment_id, "a", "b", {})
        with pytest.raises(StoreError, match=rf"evaluation {evaluation_id}, comparison #1 "):
            store.append_evaluation_comparison(
                evaluation_id, ComparisonRecord(1, 0, 1, outcome, raw=raw)
            )
        assert [c.outcome for c in store.comparisons(experiment_id)] == [0.25, 0.5]
        store.append_comparison(experiment_id, ComparisonRecord(3, 0, 1, 1.0))  # goes on


def _write_probabilities(folder, rounds=30):
    """A replay of preference probabilities in which alpha is preferred to both rivals."""
    lines = []
    for k in range(rounds):
        for a, b, y in (("alpha", "beta", 0.9), ("gamma", "alpha", 0.15), ("beta", "gamma", 0.6)):
            lines.append({"policy_a": a, "policy_b": b, "task_id": f"q{k}", "outcome": y})
        lines.append({"policy_a": "alpha", "policy_b": "beta", "task_id": f"q{k}", "outcome": 1})
    (folder / "judgments.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_a_replay_of_preference_probabilities_runs_and_resumes_through_llmpo_run(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _write_probabilities(tmp_path)
    (tmp_path / "experiment.yaml").write_text(SMALLEST)
    straight = invoke("run", "experiment.yaml", "--json", "--store", "straight.db")
    assert straight.exit_code == 0, straight.output
    whole = json.loads(straight.stdout)
    stopped = invoke("run", "experiment.yaml", "--max-comparisons", "6")
    assert stopped.exit_code == 3, stopped.output
    resumed = invoke("resume", "runs.db", "--max-comparisons", "100000", "--json")
    assert resumed.exit_code == 0, resumed.output
    after = json.loads(resumed.stdout)
    # The same seed gives the same run whether or not it was interrupted.
    for key in ("best", "n_comparisons", "certified"):
        assert after[key] == whole[key], key
    assert after["certified"] and after["best"] == "alpha"
    assert after["replayed_comparisons"] == 6
    with Store(tmp_path / "runs.db", readonly=True) as store:
        outcomes = {c.outcome for c in store.comparisons(1)}
    assert outcomes & {0.9, 0.15, 0.6}, outcomes  # stored as given, not rounded


def test_resume_says_it_migrated_an_older_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_probabilities(tmp_path)
    (tmp_path / "experiment.yaml").write_text(SMALLEST)
    assert invoke("run", "experiment.yaml", "--max-comparisons", "6").exit_code == 3
    with tamper(tmp_path / "runs.db") as connection:  # as the last llmpo of schema v4 left it
        connection.execute("DROP TABLE payments")  # added by v6
        connection.execute("PRAGMA user_version = 4")
    resumed = invoke("resume", "runs.db", "--max-comparisons", "100000")
    assert resumed.exit_code == 0, resumed.output
    assert f"store migrated in place from schema v4 to v{SCHEMA_VERSION}" in resumed.stderr
    again = invoke("resume", "runs.db", "--max-comparisons", "200000")
    assert "migrated" not in again.stderr


def test_reports_tally_a_fractional_outcome_by_the_rule_of_the_statistics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_probabilities(tmp_path, rounds=10)
    (tmp_path / "experiment.yaml").write_text(SMALLEST)
    assert invoke("run", "experiment.yaml").exit_code == 0
    report = json.loads(invoke("report", "runs.db", "--format", "json").stdout)
    with Store(tmp_path / "runs.db", readonly=True) as store:
        record = store.experiment()
        comparisons = store.comparisons(record.id)
    rows = {row["policy"]: row for row in report["costs"]["per_policy"]}
    for index, name in enumerate(record.policies):
        scores = [c.outcome for c in comparisons if c.policy_a == index] + [
            1 - c.outcome for c in comparisons if c.policy_b == index
        ]
        wins = sum(max(2 * y - 1, 0) for y in scores)
        losses = sum(max(1 - 2 * y, 0) for y in scores)
        assert rows[name]["wins"] == pytest.approx(wins)
        assert rows[name]["losses"] == pytest.approx(losses)
        assert rows[name]["ties"] == pytest.approx(len(scores) - wins - losses)


def test_a_held_out_evaluation_of_preference_probabilities_rates_their_mean(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _write_probabilities(tmp_path, rounds=40)
    (tmp_path / "experiment.yaml").write_text(
        SMALLEST + "holdout: {fraction: 0.3}\nbaseline: beta\n"
    )
    assert invoke("run", "experiment.yaml").exit_code == 0
    evaluated = invoke("evaluate", "runs.db", "1", "--comparisons", "20", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads(evaluated.stdout)
    with Store(tmp_path / "runs.db", readonly=True) as store:
        outcomes = [c.outcome for c in store.evaluation_comparisons(summary["evaluation_id"])]
    assert len(outcomes) == summary["comparisons"] == 20
    assert summary["wins"] + summary["ties"] / 2 == pytest.approx(sum(outcomes))
    assert summary["win_rate"] == pytest.approx(sum(outcomes) / 20)
    assert summary["losses"] == pytest.approx(sum(max(1 - 2 * y, 0) for y in outcomes))
