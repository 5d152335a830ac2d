"""`llmpo run / resume / report / export`: the smallest config as written, JSON output, and every
bad input of issue 4 as a clear error without traceback that changes nothing stored."""

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.store import Store
from llmpo.testing.store import tamper
from tests.conftest import SMALLEST

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_smallest_config_as_written_prints_one_json_result(project):
    result = invoke("run", "experiment.yaml", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["winner"] == "alpha" and data["certified"] is True
    assert data["experiment_id"] == 1 and data["n_comparisons"] > 0
    assert {r["policy"] for r in data["rivals"]} == {"beta", "gamma"}
    assert all(r["statistic"] > r["threshold"] for r in data["rivals"])
    assert (project / "runs.db").is_file()


def test_resume_of_a_finished_run_changes_nothing(project):
    first = json.loads(invoke("run", "experiment.yaml", "--json").stdout)
    before = digest(project / "runs.db")
    again = invoke("run", "experiment.yaml", "--resume", "--json")
    assert again.exit_code == 0
    second = json.loads(again.stdout)
    assert second["experiment_id"] == first["experiment_id"] and second["new_comparisons"] == 0
    assert second["rivals"] == first["rivals"]
    via_store = json.loads(invoke("resume", "runs.db", "--json").stdout)
    assert via_store["n_comparisons"] == first["n_comparisons"]
    assert digest(project / "runs.db") == before


def test_command_line_flags_override_the_file(project):
    data = json.loads(invoke("run", "experiment.yaml", "--json", "--max-comparisons", "5").stdout)
    assert data["n_comparisons"] == 5 and data["stop_reason"] == "max_comparisons"
    assert not data["certified"]


def test_plain_output_names_winner_and_report_command(project):
    result = invoke("run", "experiment.yaml")
    assert result.exit_code == 0
    assert result.stdout.startswith("alpha is the best") and "llmpo report" in result.stdout


def test_report_and_export_commands(project):
    invoke("run", "experiment.yaml")
    result = invoke("report", "runs.db")
    assert result.exit_code == 0 and (project / "runs-1.html").is_file()
    markdown = invoke("report", "runs.db", "1", "--format", "md")
    assert "Best policy: alpha" in markdown.stdout
    as_json = json.loads(invoke("report", "runs.db", "--format", "json").stdout)
    assert as_json["answer"]["best"] == "alpha"
    exported = invoke("export", "runs.db")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == as_json["answer"]["n_comparisons"]
    assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["name_a"] for r in rows} <= {"alpha", "beta", "gamma"} and rows[0]["task_id"]


def test_experiments_lists_the_store(project):
    invoke("run", "experiment.yaml")
    invoke("run", "experiment.yaml", "--max-comparisons", "3", "--seed", "9")
    rows = json.loads(invoke("experiments", "runs.db", "--json").stdout)
    assert [(r["id"], r["status"], r["best"]) for r in rows] == [
        (1, "certified", "alpha"),
        (2, "max_comparisons", rows[1]["best"]),
    ]
    assert rows[1]["comparisons"] == 3 and not rows[1]["certified"]
    table = invoke("experiments", "runs.db")
    assert table.exit_code == 0 and "certified" in table.stdout
    assert "max_comparisons" in table.stdout


def test_export_parquet(project):
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    invoke("run", "experiment.yaml")
    result = invoke("export", "runs.db", "--format", "parquet", "-o", "runs.parquet")
    assert result.exit_code == 0, result.output
    table = pyarrow_parquet.read_table(project / "runs.parquet")
    assert table.num_rows > 0 and "outcome" in table.column_names


def assert_clean_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_bad_config_names_file_field_and_fix(project):
    (project / "bad.yaml").write_text(SMALLEST.replace("delta: 0.05", "delta: 2"))
    assert_clean_error(invoke("run", "bad.yaml"), "bad.yaml", "field 'delta'", "Fix:")
    assert not (project / "runs.db").exists()


def test_unknown_strategy_and_threshold(project):
    (project / "s.yaml").write_text(SMALLEST + "strategy: magic\n")
    assert_clean_error(invoke("run", "s.yaml"), "s.yaml: strategy: unknown 'magic'", "llmpo")
    (project / "t.yaml").write_text(SMALLEST + "threshold: nope\n")
    assert_clean_error(invoke("run", "t.yaml"), "t.yaml: unknown threshold 'nope'", "kt")
    assert not (project / "runs.db").exists()  # refused before the store was touched


def test_unknown_policy_names(project):
    (project / "named.yaml").write_text(SMALLEST + "policies: [alpha, omega]\n")
    assert_clean_error(invoke("run", "named.yaml"), "unknown policies ['omega']", "alpha")


def test_malformed_replay_line_changes_nothing_stored(project):
    invoke("run", "experiment.yaml")
    before = digest(project / "runs.db")
    with (project / "judgments.jsonl").open("a") as handle:
        handle.write('{"policy_a": "alpha", "policy_b": "beta", "outcome": "won"}\n')
    result = invoke("run", "experiment.yaml", "--seed", "4")
    assert_clean_error(result, "judgments.jsonl, line 101", "'outcome'")
    assert digest(project / "runs.db") == before


def test_pair_without_records_is_refused_unless_dense_subset(project):
    with (project / "judgments.jsonl").open("a") as handle:
        handle.write(
            json.dumps({"policy_a": "alpha", "policy_b": "delta", "task_id": "x", "outcome": 1})
            + "\n"
        )
    assert_clean_error(invoke("run", "experiment.yaml"), "(beta, delta)", "dense-subset")
    result = invoke("run", "experiment.yaml", "--dense-subset", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["policies"]) == {"alpha", "beta", "gamma"}
    assert json.loads(result.stdout)["dropped_policies"] == ["delta"]
    assert "dropped 1 without enough records of every pair: delta" in result.stderr
    markdown = invoke("report", "runs.db", "--format", "md").stdout
    assert "Dense subset: 1 policy was left out" in markdown and "delta" in markdown
    with Store(project / "runs.db", readonly=True) as store:
        details = [d for _, kind, d in store.events(1) if kind == "dense_subset"]
    assert details == [{"dropped": ["delta"]}]


def test_corrupt_and_foreign_stores_are_refused_unchanged(project):
    (project / "runs.db").write_bytes(b"garbage" * 500)
    before = digest(project / "runs.db")
    assert_clean_error(invoke("run", "experiment.yaml"), "corrupt or not a store")
    assert_clean_error(invoke("report", "runs.db"), "corrupt or not a store")
    assert_clean_error(invoke("resume", "runs.db"), "corrupt or not a store")
    assert digest(project / "runs.db") == before
    foreign = project / "foreign.db"
    with tamper(foreign) as connection:
        connection.execute("CREATE TABLE t (x)")
    before = digest(foreign)
    assert_clean_error(invoke("export", "foreign.db"), "another application")
    assert_clean_error(
        invoke("run", "experiment.yaml", "--store", "foreign.db"), "another application"
    )
    assert digest(foreign) == before


def test_newer_store_is_refused(project):
    invoke("run", "experiment.yaml")
    with tamper(project / "runs.db") as connection:
        connection.execute("PRAGMA user_version = 99")
    before = digest(project / "runs.db")
    assert_clean_error(invoke("run", "experiment.yaml", "--resume"), "newer llmpo", "upgrade")
    assert digest(project / "runs.db") == before


def test_resume_without_a_matching_experiment(project):
    assert_clean_error(invoke("run", "experiment.yaml", "--resume"), "run without --resume")
    assert_clean_error(invoke("resume", "absent.db"), "no such store")
    assert_clean_error(invoke("report", "absent.db"), "no such store")
    invoke("run", "experiment.yaml")
    assert_clean_error(invoke("report", "runs.db", "9"), "no experiment 9")


def test_unwritable_outputs_are_clean_errors(project):
    invoke("run", "experiment.yaml")
    missing = str(project / "no" / "such" / "folder" / "out")
    assert_clean_error(invoke("report", "runs.db", "-o", missing + ".html"), "cannot write")
    assert_clean_error(invoke("export", "runs.db", "-o", missing + ".csv"), "cannot write")
    assert_clean_error(invoke("export", "runs.db", "--format", "parquet"), "--output")
