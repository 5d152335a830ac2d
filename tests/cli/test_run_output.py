"""What `llmpo run` / `llmpo resume` print for people, their exit codes, continuing a run with a
larger budget, and re-running an identical experiment (issue 13, points 3 and 4)."""

import json
import re
import shlex

from llmpo.store import Store
from llmpo.testing.store import tamper
from tests.cli.test_run import assert_clean_error, invoke

SENTENCE = re.compile(
    r"^alpha is the best of 3 policies, with 95% confidence, after (\d+) comparisons "
    r"\(recorded judgments, no LLM calls, [\d.]+ s\)\.$"
)


def test_certified_run_opens_with_one_plain_sentence_and_explains_its_columns(project):
    result = invoke("run", "experiment.yaml")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert SENTENCE.match(lines[0]), lines[0]
    for column in ("comparisons", "best wins", "evidence", "needed", "verdict"):
        assert any(line.strip().startswith(column + " ") for line in lines[3:]), column
    assert "GLR statistic" not in result.stdout and "margin" not in result.stdout
    assert "ruled out" in result.stdout and "llmpo report" in result.stdout
    assert "Continue" not in result.stdout


def test_uncertified_run_says_what_is_known_and_the_command_that_continues_it(project):
    result = invoke("run", "experiment.yaml", "--max-comparisons", "6")
    assert result.exit_code == 3, result.output  # documented: finished without a certificate
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        "No policy certified yet: the comparison budget (max_comparisons) ran out after 6 "
        "comparisons"
    )
    assert "leads 3 policies" in first and "still undecided at 95% confidence" in first
    command = next(line.strip() for line in result.stdout.splitlines() if "llmpo resume" in line)
    assert "3 finished without a certificate" in invoke("run", "--help").stdout
    # Run the printed command until the experiment is certified: it continues experiment 1.
    for _ in range(6):
        continued = invoke(*shlex.split(command)[1:])
        if continued.exit_code == 0:
            break
        assert continued.exit_code == 3, continued.output
        command = next(
            line.strip() for line in continued.stdout.splitlines() if "llmpo resume" in line
        )
    assert SENTENCE.match(continued.stdout.splitlines()[0]), continued.stdout
    rows = json.loads(invoke("experiments", "runs.db", "--json").stdout)
    assert [(row["id"], row["status"]) for row in rows] == [(1, "certified")]
    # The continued run reached the certificate an uninterrupted run reaches (batch size 1).
    fresh = json.loads(invoke("run", "experiment.yaml", "--store", "fresh.db", "--json").stdout)
    again = json.loads(invoke("resume", "runs.db", "1", "--json").stdout)
    assert again["rivals"] == fresh["rivals"] and again["n_comparisons"] == fresh["n_comparisons"]


def test_json_carries_the_same_facts(project):
    result = invoke("run", "experiment.yaml", "--max-comparisons", "6", "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["exit_code"] == 3 and data["summary"].startswith("No policy certified yet")
    assert data["continue_command"].startswith("llmpo resume ")
    assert data["llm_calls"] is None and data["cost_usd"] is None and data["tokens"] is None
    assert data["wall_seconds"] >= 0 and data["n_comparisons"] == 6
    assert {row["policy"] for row in data["undecided"]} <= {"beta", "gamma"}
    assert data["undecided"] and all(not row["ruled_out"] for row in data["undecided"])
    certified = json.loads(invoke("run", "experiment.yaml", "--store", "b.db", "--json").stdout)
    assert certified["exit_code"] == 0 and certified["continue_command"] is None
    assert SENTENCE.match(certified["summary"]) and certified["undecided"] == []


def test_resume_accepts_a_larger_budget_and_refuses_a_smaller_one(project):
    assert invoke("run", "experiment.yaml", "--max-comparisons", "5").exit_code == 3
    assert_clean_error(
        invoke("run", "experiment.yaml", "--resume", "--max-comparisons", "4"),
        "already has 5 comparisons",
        "Fix: give a budget above 5",
    )
    more = invoke("run", "experiment.yaml", "--resume", "--max-comparisons", "9", "--json")
    assert more.exit_code == 3, more.output
    data = json.loads(more.stdout)
    assert data["experiment_id"] == 1 and data["n_comparisons"] == 9
    assert data["replayed_comparisons"] == 5 and data["new_comparisons"] == 4
    assert "max_comparisons 5 → 9" in more.stderr
    with Store(project / "runs.db", readonly=True) as store:
        assert [kind for _, kind, _ in store.events(1)].count("budget_extended") == 1
        assert store.experiment(1).config["max_comparisons"] == 9


def test_a_larger_budget_continues_a_batched_run_whose_last_batch_was_cut(project):
    first = invoke("run", "experiment.yaml", "--batch-size", "4", "--max-comparisons", "10")
    assert first.exit_code == 3, first.output
    more = invoke("resume", "runs.db", "--max-comparisons", "30", "--json")
    assert more.exit_code in (0, 3), more.output
    data = json.loads(more.stdout)
    assert data["replayed_comparisons"] == 10 and data["n_comparisons"] > 10
    # Resuming again replays the whole history exactly (the store is checked pair by pair).
    assert json.loads(invoke("resume", "runs.db", "--json").stdout)["rivals"] == data["rivals"]


def test_refused_resume_names_each_setting_that_differs(project):
    invoke("run", "experiment.yaml")
    result = invoke("run", "experiment.yaml", "--resume", "--delta", "0.1", "--epsilon", "0.02")
    assert_clean_error(
        result,
        "the closest, experiment 1, differs in",
        "delta: 0.05 stored vs 0.1 now",
        "epsilon: 0.0 stored vs 0.02 now",
        "run without --resume",
    )


def test_an_identical_finished_experiment_is_shown_not_duplicated(project):
    first = invoke("run", "experiment.yaml", "--json")
    again = invoke("run", "experiment.yaml", "--json")
    assert again.exit_code == 0, again.output
    assert "An identical experiment, 1" in again.stderr and "--new" in again.stderr
    assert json.loads(again.stdout)["rivals"] == json.loads(first.stdout)["rivals"]
    assert len(json.loads(invoke("experiments", "runs.db", "--json").stdout)) == 1
    other = json.loads(invoke("run", "experiment.yaml", "--new", "--json").stdout)
    assert other["experiment_id"] == 2
    assert_clean_error(invoke("run", "experiment.yaml", "--new", "--resume"), "contradict")


def test_an_identical_interrupted_experiment_is_not_duplicated_either(project):
    invoke("run", "experiment.yaml", "--max-comparisons", "5")
    with tamper(project / "runs.db") as connection:
        connection.execute("UPDATE experiments SET status = 'interrupted'")
    assert_clean_error(
        invoke("run", "experiment.yaml", "--max-comparisons", "5"),
        "an identical experiment, 1",
        "stopped after 5 comparisons (interrupted)",
        "--resume",
        "--new",
    )
    assert len(json.loads(invoke("experiments", "runs.db", "--json").stdout)) == 1


def test_a_new_run_with_another_budget_points_at_the_stopped_one(project):
    invoke("run", "experiment.yaml", "--max-comparisons", "5")
    result = invoke("run", "experiment.yaml", "--max-comparisons", "9")
    assert "Note: experiment 1 has these settings but another budget" in result.stderr
    assert "llmpo run experiment.yaml --resume --max-comparisons 9" in result.stderr
    assert len(json.loads(invoke("experiments", "runs.db", "--json").stdout)) == 2


def test_usage_counts_calls_tokens_and_seconds_over_sessions_and_local_models_cost_nothing(
    tmp_path,
):
    from llmpo.runtime.setup import usage_of
    from llmpo.store import ComparisonRecord

    local = {"type": "local", "model": "smollm2"}
    config = {
        "environment": {"type": "llm", "judge": {"type": "reference"}},
        "policies": [{"name": "a", "backend": local}, {"name": "b", "backend": local}],
    }
    with Store(tmp_path / "runs.db", writer=True) as store:
        experiment = store.create_experiment(config, ["a", "b"])
        for seq in (1, 2):
            store.append_comparison(
                experiment, ComparisonRecord(seq, 0, 1, 1.0, "t", "ab", None, 0.0, 1.0, None, 7, 3)
            )
        store.add_event(experiment, "interrupted", {"backend_calls": 4, "seconds": 1.5})
        store.add_event(experiment, "finished", {"backend_calls": 2, "seconds": 2.0})
        usage = usage_of(store, store.experiment(experiment))
    assert (usage.llm_calls, usage.input_tokens, usage.output_tokens) == (6, 14, 6)
    assert usage.cost_usd == 0.0 and usage.wall_seconds == 3.5
    assert usage.to_dict()["tokens"] == 20


def test_a_larger_budget_for_a_certified_experiment_just_shows_it(project):
    first = json.loads(invoke("run", "experiment.yaml", "--json").stdout)
    again = invoke("resume", "runs.db", "--max-comparisons", "5000", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rivals"] == first["rivals"]
    with Store(project / "runs.db", readonly=True) as store:
        assert store.experiment(1).config["max_comparisons"] is None


def test_the_table_shows_wins_ties_and_losses_per_rival(project):
    result = invoke("run", "experiment.yaml", "--json")
    data = json.loads(result.stdout)
    printed = invoke("run", "experiment.yaml").stdout  # the identical finished run, shown again
    assert "W/T/L" in printed and "ties left out" in printed
    for rival in data["rivals"]:
        wins, ties, losses = rival["wins"], rival["ties"], rival["losses"]
        assert wins + ties + losses == rival["comparisons"]
        row = next(line for line in printed.splitlines() if line.split()[:1] == [rival["policy"]])
        assert f"{wins:,.4g}/{ties:,.4g}/{losses:,.4g}" in row


def test_a_run_stopped_on_a_near_tie_names_epsilon_as_the_fix(tmp_path, monkeypatch):
    """Two equally good policies are never certified apart with ε = 0: the summary says they
    look tied and how to certify either; not before 100 comparisons, never once ε is set."""
    monkeypatch.chdir(tmp_path)
    half, better = 0.5, 0.75
    instance = {
        "policies": ["a", "b", "c"],
        "win_prob": [[half, half, better], [half, half, better], [1 - better, 1 - better, half]],
    }
    (tmp_path / "tied.json").write_text(json.dumps(instance))
    (tmp_path / "tied.yaml").write_text(
        "space: unstructured\ndelta: 0.05\nseed: 3\n"
        "environment: {type: synthetic, instance: tied.json}\nstore: runs.db\n"
    )
    result = invoke("run", "tied.yaml", "--max-comparisons", "600", "--json")
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["near_ties"] == [data["undecided"][0]["policy"]] and data["winner"] in "ab"
    assert "look nearly tied" in data["summary"] and "`epsilon: 0.05`" in data["summary"]
    early = json.loads(
        invoke("run", "tied.yaml", "--store", "b.db", "--max-comparisons", "20", "--json").stdout
    )
    assert early["near_ties"] == [] and "nearly tied" not in early["summary"]
    within = invoke("run", "tied.yaml", "--store", "c.db", "--epsilon", "0.05", "--json")
    assert within.exit_code == 0 and json.loads(within.stdout)["near_ties"] == []
