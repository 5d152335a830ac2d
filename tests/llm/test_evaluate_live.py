"""Held-out evaluation of live LLM policies through the real ``openai`` client and a local server:
held-out tasks never reach the selection run, evaluation answers are fresh samples, resume."""

import json
from collections import Counter

from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.store import Store

runner = CliRunner()


def declare_holdout(project) -> None:
    path = project / "live.yaml"
    path.write_text(path.read_text() + "baseline: loose\nholdout: {fraction: 0.25}\n")


def answer_keys(store: Store, experiment_id: int) -> list[tuple[str, str, int]]:
    """(policy, task, replicate) of every answer told, selection and evaluations."""
    names = store.experiment(experiment_id).policies
    rows = list(store.comparisons(experiment_id))
    for evaluation in store.evaluations(experiment_id):
        rows += store.evaluation_comparisons(evaluation.id)
    return [
        (names[policy], row.task_id, replicate)
        for row in rows
        for policy, replicate in zip(
            (row.policy_a, row.policy_b), row.raw["replicates"], strict=True
        )
    ]


def test_live_evaluation_uses_only_held_out_tasks_and_fresh_answers(project, server):
    declare_holdout(project)
    run = runner.invoke(app, ["run", "live.yaml", "--json", "--concurrency", "4"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["winner"] == "careful"
    with Store(project / "runs.db", readonly=True) as store:
        held = set(store.holdout_tasks(1) or ())
        selection = {c.task_id for c in store.comparisons(1)}
        cached_before = store.generation_count()
    assert len(held) == 5  # a quarter of the 20 tasks, recorded when the run started
    assert selection and not selection & held
    requests_before = server.served

    result = runner.invoke(
        app, ["evaluate", "runs.db", "--comparisons", "30", "--concurrency", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["winner"], summary["baseline"], summary["comparisons"]) == (
        "careful",
        "loose",
        30,
    )
    with Store(project / "runs.db", readonly=True) as store:
        evaluated = store.evaluation_comparisons(summary["evaluation_id"])
        # Every answer is new: two generations per comparison, none taken from the cache.
        assert store.generation_count() == cached_before + 60
        assert server.served == requests_before + 60
        assert all(row.raw["cached"] == [False, False] for row in evaluated)
        calls = summary["calls"]  # what the evaluation paid, next to its comparisons
        assert (calls["comparisons"], calls["generation_calls"], calls["judge_calls"]) == (
            30,
            60,
            0,
        )
        assert {row.task_id for row in evaluated} <= held
        # Each held-out task is used before any repeats (30 comparisons over 5 tasks: 6 each).
        assert set(Counter(row.task_id for row in evaluated).values()) == {6}
        keys = answer_keys(store, 1)
        assert len(keys) == len(set(keys))  # no (policy, task, replicate) told twice
    # Reference judge: careful is always right, so it wins exactly when loose is wrong and
    # ties otherwise; accuracies come with their intervals.
    accuracy = summary["accuracy"]
    assert accuracy["careful"]["accuracy"] == 1.0 and accuracy["careful"]["n"] == 30
    loose = accuracy["loose"]
    assert summary["wins"] == 30 - loose["correct"] and summary["ties"] == loose["correct"]
    assert summary["losses"] == 0
    assert summary["win_rate"] == 1 - loose["accuracy"] / 2
    low, high = loose["interval"]
    assert low <= loose["accuracy"] <= high < 1
    low, high = summary["interval"]
    assert low <= summary["win_rate"] <= high
    assert summary["input_tokens"] > 0
    # 30 comparisons over 5 tasks: the interval is about these tasks, and says so.
    assert "on these 5 tasks, not on new questions at large" in summary["sentence"]
    report = runner.invoke(app, ["report", "runs.db", "--format", "md"])
    assert summary["sentence"] in report.stdout and "Accuracy of careful: 1.000" in report.stdout


def test_second_evaluation_draws_fresh_samples_and_a_failed_one_resumes(project, server):
    declare_holdout(project)
    assert runner.invoke(app, ["run", "live.yaml"]).exit_code == 0
    assert runner.invoke(app, ["evaluate", "runs.db", "--comparisons", "10"]).exit_code == 0
    server.faults.append("401")  # an unauthorized key is not retried: the call fails
    failed = runner.invoke(
        app, ["evaluate", "runs.db", "--comparisons", "12", "--concurrency", "1"]
    )
    assert failed.exit_code == 1
    assert "--resume" in failed.output
    with Store(project / "runs.db", readonly=True) as store:
        second = store.evaluations(1)[-1]
        assert second.status == "interrupted"
        stored = len(store.evaluation_comparisons(second.id))
    assert stored < 12
    resumed = runner.invoke(app, ["evaluate", "runs.db", "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert summary["evaluation_id"] == second.id and summary["comparisons"] == 12
    with Store(project / "runs.db", readonly=True) as store:
        assert [e.status for e in store.evaluations(1)] == ["done", "done"]
        keys = answer_keys(store, 1)
        assert len(keys) == len(set(keys))
        held = set(store.holdout_tasks(1) or ())
        assert {key[1] for key in keys if key[1] in held}  # evaluations answered held-out tasks
        selection = {c.task_id for c in store.comparisons(1)}
    assert not selection & held
