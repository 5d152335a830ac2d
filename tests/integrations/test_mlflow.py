"""`llmpo export --mlflow`: the run read back from a local MLflow file store holds the settings,
the certificate, the costs, the report and the same comparisons CSV as `llmpo export`."""

import csv
import io
import json
import os
import sys

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.integrations.mlflow import safe_uri
from tests.llm.conftest import SMALLEST_LIVE, write_tasks
from tests.llm.server import FakeOpenAIServer, answers_by_system_prompt

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def mlflow(monkeypatch):
    module = pytest.importorskip("mlflow")
    # MLflow 3 refuses its file store unless asked; the tests want no server and no database.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "")  # recorded, so restored afterwards
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    return module


def only_run(mlflow, uri: str, experiment: str):
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def artifact_text(client, run_id: str, name: str, folder) -> str:
    return (folder / client.download_artifacts(run_id, name, str(folder))).read_text()


def test_a_certified_run_is_logged_with_params_metrics_tags_and_artifacts(project, mlflow):
    assert invoke("run", "experiment.yaml").exit_code == 0
    report = json.loads(invoke("report", "runs.db", "--format", "json").stdout)
    uri = f"file://{project}/mlruns"
    result = invoke(
        "export", "runs.db", "--mlflow", "--mlflow-uri", uri, "--mlflow-experiment", "prompts"
    )
    assert result.exit_code == 0, result.output
    client, run = only_run(mlflow, uri, "prompts")
    assert run.info.run_id in result.stderr and run.info.status == "FINISHED"

    params = run.data.params
    assert params["delta"] == "0.05" and params["epsilon"] == "0.0" and params["seed"] == "3"
    assert params["strategy"] == "llmpo" and params["space"] == "unstructured"
    assert params["threshold"] == report["experiment"]["threshold"]
    assert params["policies"] == "3" and params["environment"] == "replay"

    metrics = run.data.metrics
    answer = report["answer"]
    assert metrics["comparisons"] == answer["n_comparisons"] > 0
    assert metrics["certified"] == 1.0
    margins = [r["statistic"] - r["threshold"] for r in answer["rivals"]]
    assert metrics["min_margin"] == pytest.approx(min(margins)) and min(margins) > 0
    history = client.get_metric_history(run.info.run_id, "binding_statistic")
    assert sorted((m.step, m.value) for m in history) == sorted(
        (p["comparisons"], pytest.approx(p["statistic"])) for p in report["trace"]
    )
    assert metrics["wall_seconds"] == pytest.approx(report["costs"]["wall_seconds"])

    tags = run.data.tags
    assert tags["llmpo.winner"] == tags["llmpo.best"] == "alpha"
    assert tags["llmpo.stop_reason"] == "certified" and tags["llmpo.experiment_id"] == "1"
    assert tags["llmpo.version"] and tags["mlflow.note.content"] == report["summary"]["sentence"]

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {
        "report.html",
        "report.json",
        "comparisons.csv",
        "certificate.csv",
        "config.yaml",
    }
    downloads = project / "downloads"
    downloads.mkdir()
    # The comparisons are exactly what `llmpo export` writes.
    exported = invoke("export", "runs.db", "--experiment", "1").stdout
    assert artifact_text(client, run.info.run_id, "comparisons.csv", downloads) == exported
    certificate = list(
        csv.DictReader(
            io.StringIO(artifact_text(client, run.info.run_id, "certificate.csv", downloads))
        )
    )
    assert [(row["rival"], int(row["comparisons"])) for row in certificate] == [
        (r["policy"], r["comparisons"]) for r in answer["rivals"]
    ]
    html = artifact_text(client, run.info.run_id, "report.html", downloads)
    assert html.startswith("<!DOCTYPE html>") and "alpha" in html and "data:image/png" in html


def test_an_uncertified_run_has_no_winner_and_says_why_it_stopped(project, mlflow):
    invoke("run", "experiment.yaml", "--max-comparisons", "5")
    uri = f"file://{project}/mlruns"
    assert invoke("export", "runs.db", "--mlflow", "--mlflow-uri", uri).exit_code == 0
    _, run = only_run(mlflow, uri, "llmpo")
    assert run.data.metrics["certified"] == 0.0 and run.data.metrics["comparisons"] == 5
    assert "llmpo.winner" not in run.data.tags
    assert run.data.tags["llmpo.stop_reason"] == "max_comparisons"
    assert run.data.params["max_comparisons"] == "5"


def test_the_latest_experiment_by_default_and_the_tracking_uri_from_the_environment(
    project, mlflow, monkeypatch
):
    invoke("run", "experiment.yaml", "--max-comparisons", "5")
    invoke("run", "experiment.yaml", "--seed", "4")
    uri = f"file://{project}/elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    assert invoke("export", "runs.db", "--mlflow").exit_code == 0
    _, run = only_run(mlflow, uri, "from-env")
    assert run.data.tags["llmpo.experiment_id"] == "2" and run.data.params["seed"] == "4"
    chosen = invoke(
        "export", "runs.db", "--experiment", "1", "--mlflow", "--mlflow-experiment", "one"
    )
    assert chosen.exit_code == 0, chosen.output
    _, first = only_run(mlflow, uri, "one")
    assert first.data.tags["llmpo.experiment_id"] == "1" and first.data.metrics["comparisons"] == 5
    # MLflow's usage telemetry is switched off unless the user chose otherwise.
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    assert invoke("export", "runs.db", "--mlflow").exit_code == 0
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


def test_live_costs_are_logged_as_the_report_counts_them(tmp_path, monkeypatch, mlflow):
    server = FakeOpenAIServer(answers_by_system_prompt).start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MY_KEY", "sk-test-mlflow-0000")
        write_tasks(tmp_path)
        (tmp_path / "live.yaml").write_text(SMALLEST_LIVE.replace("BASE_URL", server.base_url))
        assert invoke("run", "live.yaml", "--concurrency", "4").exit_code == 0
    finally:
        server.stop()
    costs = json.loads(invoke("report", "runs.db", "--format", "json").stdout)["costs"]
    uri = f"file://{tmp_path}/mlruns"
    assert invoke("export", "runs.db", "--mlflow", "--mlflow-uri", uri).exit_code == 0
    _, run = only_run(mlflow, uri, "llmpo")
    for key in ("generation_calls", "judge_calls", "input_tokens", "output_tokens"):
        assert costs[key] is not None, key
        assert run.data.metrics[key] == costs[key], key
    assert run.data.metrics["generation_calls"] > 0
    assert run.data.params["judge"] == "reference" and run.data.params["environment"] == "llm"


def test_credentials_in_the_tracking_uri_are_never_printed(project, mlflow):
    invoke("run", "experiment.yaml")
    result = invoke(
        "export", "runs.db", "--mlflow", "--mlflow-uri", "nosuchscheme://ann:s3cr3t@host:5000/x"
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: MLflow at nosuchscheme://host:5000/x" in result.stderr
    assert "s3cr3t" not in result.output
    assert safe_uri("https://ann:tok@example.org:8443/mlflow?token=abc") == (
        "https://example.org:8443/mlflow"
    )


def test_without_mlflow_the_error_names_the_extra(project, monkeypatch):
    invoke("run", "experiment.yaml")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    result = invoke("export", "runs.db", "--mlflow")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "pip install 'llmpo[mlflow]'" in result.stderr


def test_bad_input_is_a_clear_error(project):
    invoke("run", "experiment.yaml")
    wrong = invoke("export", "runs.db", "--mlflow", "-o", "x.csv")
    assert wrong.exit_code == 2 and "drop --output" in wrong.stderr
    no_store = invoke("export", "nowhere.db", "--mlflow")
    assert no_store.exit_code == 2 and "nowhere.db" in no_store.stderr
    assert "Traceback" not in no_store.output and not (project / "nowhere.db").exists()
    missing = invoke("export", "runs.db", "--mlflow", "--experiment", "7")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert "7" in missing.stderr
