"""Held-out evaluation of the certified policy against the baseline: configuration, the seeded
split recorded in the store, replay on PandaLM split by prompt, synthetic coverage end to end."""

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import ConfigError, load_config
from llmpo.datasets import load_pandalm
from llmpo.holdout import split_holdout
from llmpo.runtime.evaluation import Evaluation, EvaluationError
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import check_config, find_experiment, start_experiment
from llmpo.store import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Store
from llmpo.testing.store import tamper

PANDALM = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve() / (
    "pandalm_testset-v1.json"
)

runner = CliRunner()


def write(folder: Path, text: str) -> Path:
    path = folder / "experiment.yaml"
    path.write_text(text)
    return path


# ---- configuration -------------------------------------------------------------------------------
SYNTHETIC = """\
space: unstructured
delta: 0.05
seed: SEED
environment:
  type: synthetic
  instance: instance.json
store: runs.db
"""


def write_instance(folder: Path) -> None:
    # "best" beats "today" with P(win) = 0.55, P(tie) = 0.2: a win rate of 0.65 (ties ½);
    # "other" loses to both.
    (folder / "instance.json").write_text(
        json.dumps(
            {
                "policies": ["today", "best", "other"],
                "win_prob": [[0.5, 0.35, 0.7], [0.65, 0.5, 0.8], [0.3, 0.2, 0.5]],
                "tie_prob": [[0.0, 0.2, 0.1], [0.2, 0.0, 0.1], [0.1, 0.1, 0.0]],
            }
        )
    )


def test_baseline_must_be_a_policy_and_the_error_names_the_field_and_the_fix(tmp_path):
    write_instance(tmp_path)
    text = SYNTHETIC.replace("SEED", "1") + "policies: [today, best]\nbaseline: yesterday\n"
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    message = str(error.value)
    assert "'baseline'" in message and "'yesterday'" in message and "today" in message
    assert "Fix:" in message
    # Without a policy list the data's policies are checked when the run is set up.
    text = SYNTHETIC.replace("SEED", "1") + "baseline: yesterday\n"
    with pytest.raises(ConfigError, match="baseline: 'yesterday' is not one of the policies"):
        check_config(load_config(write(tmp_path, text)))


def test_holdout_needs_exactly_one_source_and_tasks(tmp_path):
    write_instance(tmp_path)
    base = SYNTHETIC.replace("SEED", "1")
    with pytest.raises(ConfigError, match="'holdout': needs exactly one of fraction and tasks"):
        load_config(write(tmp_path, base + "holdout: {}\n"))
    with pytest.raises(ConfigError, match="synthetic environment has no tasks"):
        load_config(write(tmp_path, base + "holdout: {fraction: 0.2}\n"))
    with pytest.raises(ConfigError, match=r"'holdout\.fraction'"):
        load_config(write(tmp_path, base + "holdout: {fraction: 1.5}\n"))


def test_split_is_a_function_of_the_ids_and_the_seed():
    ids = [f"t{k}" for k in range(50)]
    first = split_holdout(ids, 0.2, seed=11)
    assert len(first) == 10 and set(first) <= set(ids)
    assert split_holdout(reversed(ids), 0.2, seed=11) == first  # file order does not matter
    assert split_holdout(ids, 0.2, seed=12) != first
    assert len(split_holdout(ids[:3], 0.01, seed=1)) == 1  # at least one held out
    assert len(split_holdout(ids[:3], 0.99, seed=1)) == 2  # at least one left to the run
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(["only"], 0.5, seed=1)


# ---- store ---------------------------------------------------------------------------------------
def test_a_schema_v2_store_migrates_and_its_runs_still_resume(tmp_path):
    path = tmp_path / "runs.db"
    config = {"space": "unstructured", "delta": 0.1, "seed": 4}
    with tamper(path) as connection:  # a store as llmpo wrote it at schema v2
        for version in (1, 2):
            MIGRATIONS[version](connection)
        connection.execute("PRAGMA user_version=2")
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute(
            "INSERT INTO experiments (name, created_at, updated_at, status, code_version, "
            "config, policies) VALUES (NULL, 'x', 'x', 'running', '0.1.0', ?, '[\"a\", \"b\"]')",
            (json.dumps(config),),
        )
    with Store(path) as store:
        assert store.experiment(1).config == config
        assert store.holdout_tasks(1) is None and store.evaluations(1) == []
    with tamper(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6


def test_a_config_stored_before_baseline_and_holdout_existed_is_found_for_resume(tmp_path):
    write_instance(tmp_path)
    config = load_config(write(tmp_path, SYNTHETIC.replace("SEED", "1")))
    stored = config.to_json()
    del stored["baseline"], stored["holdout"]
    with Store(tmp_path / "runs.db") as store:
        store.create_experiment(stored, ["today", "best", "other"])
        record = find_experiment(config, store)
    assert record is not None and record.id == 1


# ---- replay: PandaLM split by prompt -------------------------------------------------------------
PANDALM_CONFIG = f"""\
space: unstructured
delta: 0.05
seed: 5
holdout: {{fraction: 0.2}}
environment:
  type: replay
  format: pandalm
  path: {PANDALM}
store: runs.db
"""


@pytest.mark.skipif(not PANDALM.is_file(), reason="shared PandaLM data absent")
def test_pandalm_replay_split_by_prompt_evaluates_only_held_out_prompts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, PANDALM_CONFIG)
    run = runner.invoke(app, ["run", "experiment.yaml", "--json"])
    assert run.exit_code == 0, run.output
    winner = json.loads(run.stdout)["winner"]
    evaluation = runner.invoke(app, ["evaluate", "runs.db", "--comparisons", "500", "--json"])
    assert evaluation.exit_code == 0, evaluation.output
    summary = json.loads(evaluation.stdout)
    judgments = load_pandalm(PANDALM)
    prompts = {j.task_id for j in judgments}
    assert len(prompts) == 170  # a task id is a prompt, shared by the items of that prompt
    with Store(tmp_path / "runs.db", readonly=True) as store:
        held = set(store.holdout_tasks(1) or ())
        selection = {c.task_id for c in store.comparisons(1)}
        evaluated = store.evaluation_comparisons(summary["evaluation_id"])
        record = store.experiment(1)
    assert held == set(split_holdout(prompts, 0.2, seed=5)) and len(held) == 34
    assert selection and not selection & held  # the run never drew a held-out prompt
    assert {c.task_id for c in evaluated} <= held
    baseline = record.policies[0]  # no baseline configured: the first policy
    assert summary["winner"] == winner and summary["baseline"] == baseline
    assert all(
        (record.policies[c.policy_a], record.policies[c.policy_b]) == (winner, baseline)
        for c in evaluated
    )
    # Each held-out record of the pair is used exactly once (500 asked: capped at the records).
    held_records = Counter(
        (j.task_id, j.outcome if j.policy_a == winner else 1 - j.outcome)
        for j in judgments
        if {j.policy_a, j.policy_b} == {winner, baseline} and j.task_id in held
    )
    assert Counter((c.task_id, c.outcome) for c in evaluated) == held_records
    n = len(evaluated)
    wins = sum(c.outcome == 1 for c in evaluated)
    ties = sum(c.outcome == 0.5 for c in evaluated)
    assert (summary["comparisons"], summary["wins"], summary["ties"]) == (n, wins, ties)
    low, high = summary["interval"]
    assert low < (wins + ties / 2) / n < high
    assert summary["sentence"].startswith(f"Policy {winner} ")
    assert f"today's policy {baseline} in " in summary["sentence"]
    assert "on recorded judgments of held-out tasks" in summary["sentence"]
    report = runner.invoke(app, ["report", "runs.db", "--format", "md"])
    assert "## Gain over baseline" in report.stdout and summary["sentence"] in report.stdout
    html = runner.invoke(app, ["report", "runs.db", "--output", "report.html"])
    assert html.exit_code == 0
    page = (tmp_path / "report.html").read_text()
    assert 'id="gain"' in page and f"{n} comparisons of {winner} against the baseline" in page


@pytest.mark.skipif(not PANDALM.is_file(), reason="shared PandaLM data absent")
def test_held_out_file_with_a_selection_task_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, PANDALM_CONFIG)
    assert runner.invoke(app, ["run", "experiment.yaml"]).exit_code == 0
    with Store(tmp_path / "runs.db", readonly=True) as store:
        used = store.comparisons(1)[0].task_id
    (tmp_path / "held.jsonl").write_text(json.dumps({"id": used}) + "\n")
    result = runner.invoke(app, ["evaluate", "runs.db", "--tasks", "held.jsonl"])
    assert result.exit_code == 2
    assert "open to the selection run" in result.output and used in result.output
    with Store(tmp_path / "runs.db", readonly=True) as store:
        assert store.evaluations(1) == []


def test_evaluation_without_held_out_tasks_or_of_an_unfinished_run_is_refused(tmp_path):
    (tmp_path / "judgments.jsonl").write_text(
        "".join(
            json.dumps({"policy_a": "a", "policy_b": "b", "task_id": f"q{k}", "outcome": k % 2})
            + "\n"
            for k in range(40)
        )
    )
    text = PANDALM_CONFIG.replace("format: pandalm", "format: judgments").replace(
        f"path: {PANDALM}", "path: judgments.jsonl"
    )
    config = load_config(write(tmp_path, text.replace("holdout: {fraction: 0.2}\n", "")))
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        with pytest.raises(EvaluationError, match="evaluate it once it has finished"):
            Evaluation(store, experiment_id)
        store.set_status(experiment_id, "max_comparisons", {"best": "b", "certified": False})
        with pytest.raises(ConfigError, match="no held-out records to evaluate on"):
            Evaluation(store, experiment_id)


def test_a_run_without_seed_records_the_split_of_the_seed_it_drew(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [
        # 30 tasks of 10 records, a winning 3 or 4 of each task's 10: whatever the drawn seed
        # holds out, b wins about two thirds of the held-out records.
        {"policy_a": "a", "policy_b": "b", "task_id": f"q{k // 10}", "outcome": float(k % 3 == 0)}
        for k in range(300)
    ]
    (tmp_path / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = (
        "space: unstructured\ndelta: 0.1\nholdout: {fraction: 0.3}\nenvironment:\n"
        "  type: replay\n  path: judgments.jsonl\nstore: runs.db\n"
    )
    write(tmp_path, text)
    run = runner.invoke(app, ["run", "experiment.yaml", "--json"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["winner"] == "b"
    with Store(tmp_path / "runs.db", readonly=True) as store:
        seed = store.experiment(1).config["seed"]
        held = store.holdout_tasks(1)
    assert held == list(split_holdout({r["task_id"] for r in rows}, 0.3, seed))
    evaluation = runner.invoke(app, ["evaluate", "runs.db", "--json"])
    assert evaluation.exit_code == 0, evaluation.output
    summary = json.loads(evaluation.stdout)
    assert summary["comparisons"] == 90  # 9 held-out tasks × 10 records, each once
    assert summary["baseline"] == "a" and summary["interval"][0] > 0.5


# ---- synthetic: coverage end to end through the store --------------------------------------------
def run_and_evaluate(folder: Path, seed: int, comparisons: int) -> dict:
    text = SYNTHETIC.replace("SEED", str(seed)) + "baseline: today\n"
    config = load_config(write(folder, text))
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        outcome = Runner(store, experiment_id).run()
        assert outcome.result.best_name == "best"
        return Evaluation(store, experiment_id, comparisons).run()


def test_synthetic_evaluation_end_to_end_is_stored_and_reproducible(tmp_path):
    write_instance(tmp_path)
    summary = run_and_evaluate(tmp_path, seed=3, comparisons=200)
    assert summary["winner"] == "best" and summary["baseline"] == "today"
    assert summary["comparisons"] == 200 == summary["wins"] + summary["ties"] + summary["losses"]
    with Store(tmp_path / "runs.db", readonly=True) as store:
        rows = store.evaluation_comparisons(summary["evaluation_id"])
        stored = store.evaluations(1)[0]
    assert [c.seq for c in rows] == list(range(1, 201))
    assert stored.status == "done" and stored.result == summary
    again = tmp_path / "again"
    again.mkdir()
    write_instance(again)
    assert run_and_evaluate(again, seed=3, comparisons=200)["interval"] == summary["interval"]


def test_progress_counts_every_outcome_and_ends_with_the_total(tmp_path, monkeypatch):
    write_instance(tmp_path)
    run_and_evaluate(tmp_path, seed=5, comparisons=10)  # creates the store and a first evaluation
    reports = []
    with Store(tmp_path / "runs.db", writer=True) as store:
        summary = Evaluation(
            store, 1, 120, on_progress=reports.append, progress_interval=0.0
        ).run()
    assert [p.done for p in reports] == [*range(1, 121), 120]  # each comparison, then the end
    final = reports[-1]
    assert (final.wins, final.ties, final.losses) == (
        summary["wins"],
        summary["ties"],
        summary["losses"],
    )
    assert final.total == 120 and final.elapsed_seconds >= 0
    monkeypatch.chdir(tmp_path)
    shown = runner.invoke(app, ["evaluate", "runs.db", "--comparisons", "30"])
    assert shown.exit_code == 0, shown.output
    assert "[llmpo] evaluation 30/30 comparisons · winner vs baseline" in shown.stderr


def test_export_of_evaluations_gives_their_comparisons_with_policy_names(tmp_path, monkeypatch):
    write_instance(tmp_path)
    summary = run_and_evaluate(tmp_path, seed=3, comparisons=60)
    monkeypatch.chdir(tmp_path)
    exported = runner.invoke(app, ["export", "runs.db", "--evaluations"])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 60 and [int(r["seq"]) for r in rows] == list(range(1, 61))
    assert {(r["evaluation_id"], r["name_a"], r["name_b"]) for r in rows} == {
        (str(summary["evaluation_id"]), "best", "today")
    }
    wins = sum(r["outcome"] == "1.0" for r in rows)
    assert wins == summary["wins"]
    runs = runner.invoke(app, ["export", "runs.db"])  # the selection run's, as before
    run_rows = list(csv.DictReader(io.StringIO(runs.stdout)))
    assert run_rows and "evaluation_id" not in run_rows[0]


def test_when_the_winner_is_todays_policy_nothing_is_compared(tmp_path, monkeypatch):
    write_instance(tmp_path)
    monkeypatch.chdir(tmp_path)
    write(tmp_path, SYNTHETIC.replace("SEED", "2") + "baseline: best\n")
    assert runner.invoke(app, ["run", "experiment.yaml"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", "runs.db"])
    assert result.exit_code == 0
    assert "chose today's policy best: there is nothing to switch to" in result.stdout
    with Store(tmp_path / "runs.db", readonly=True) as store:
        assert store.evaluations(1) == []


@pytest.mark.slow
def test_interval_covers_the_known_win_rate_in_at_least_93_of_100_end_to_end_runs(tmp_path):
    # Selection run + held-out evaluation through the store, 100 seeds; truth 0.55 + 0.2/2.
    covered = 0
    for seed in range(100):
        folder = tmp_path / str(seed)
        folder.mkdir()
        write_instance(folder)
        low, high = run_and_evaluate(folder, seed, comparisons=200)["interval"]
        covered += low <= 0.65 <= high
    assert covered >= 93, covered
