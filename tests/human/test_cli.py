"""`llmpo judges add|list` and `llmpo serve` / `llmpo run` refusals, without a web server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.cli.human import _experiment_for
from llmpo.config import ConfigError, parse_config
from llmpo.human.tokens import judge_for_token
from llmpo.store import Store

runner = CliRunner()


def test_judges_add_prints_a_token_once_and_stores_only_its_hash(tmp_path):
    store = tmp_path / "runs.db"
    result = runner.invoke(app, ["judges", "add", "alice", "--store", str(store)])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("llmpo_") and len(token) > 30
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("runs.db"))
    assert token.encode() not in raw and b"alice" in raw
    with Store(store) as opened:
        assert judge_for_token(opened, token) == "alice"
        assert judge_for_token(opened, token[:-1]) is None
    again = runner.invoke(app, ["judges", "add", "alice", "--store", str(store)])
    assert again.exit_code == 2 and "already exists" in again.output and "--replace" in again.output
    renewed = runner.invoke(app, ["judges", "add", "alice", "--store", str(store), "--replace"])
    new_token = renewed.stdout.strip().splitlines()[-1]
    with Store(store) as opened:
        assert judge_for_token(opened, new_token) == "alice"
        assert judge_for_token(opened, token) is None  # the old token stops working
    bad = runner.invoke(app, ["judges", "add", "../x", "--store", str(store)])
    assert bad.exit_code == 2 and "judge name" in bad.output
    listed = runner.invoke(app, ["judges", "list", "--store", str(store)])
    assert listed.stdout.split() == ["alice"]


def test_run_and_resume_refuse_an_experiment_judged_by_people(human_project):
    folder, store, _ = human_project()
    for command in (["run", str(folder / "human.yaml")], ["resume", str(store)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "people judge" in result.output or "judged by people" in result.output
        assert "llmpo serve" in result.output
    with Store(store, readonly=True) as opened:
        assert len(opened.experiments()) == 1  # run started nothing
        assert opened.comparison_count(opened.experiment().id) == 0


def test_serve_finds_or_starts_the_experiment_of_a_configuration(human_project):
    folder, store, _ = human_project()
    with Store(store, readonly=True) as opened:
        started = opened.experiment().id
    assert _experiment_for(folder / "human.yaml", None) == (store, started)
    assert _experiment_for(store, None) == (store, started)


def test_serve_refuses_an_experiment_with_a_machine_judge(tmp_path):
    pytest.importorskip("fastapi", reason="llmpo serve needs the extra llmpo[human]")
    pytest.importorskip("uvicorn", reason="llmpo serve needs the extra llmpo[human]")
    (tmp_path / "judgments.jsonl").write_text(
        json.dumps({"policy_a": "x", "policy_b": "y", "outcome": 1}) + "\n"
    )
    config = tmp_path / "replay.yaml"
    config.write_text(
        "seed: 1\nenvironment: {type: replay, path: judgments.jsonl}\nstore: runs.db\n"
    )
    result = runner.invoke(app, ["serve", str(config)])
    assert result.exit_code == 2 and "judge: {type: human}" in result.output
    assert runner.invoke(app, ["run", str(config)]).exit_code == 0
    result = runner.invoke(app, ["serve", str(tmp_path / "runs.db")])
    assert result.exit_code == 2 and "not judged by people" in result.output
    missing = runner.invoke(app, ["serve", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "no such store" in missing.output


def test_serve_without_the_human_extra_names_it(tmp_path, monkeypatch):
    # None in sys.modules makes the import fail as it does where the extra is not installed.
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = runner.invoke(app, ["serve", str(tmp_path / "runs.db")])
    assert result.exit_code == 2
    assert "pip install 'llmpo[human]'" in result.output


def test_the_human_judge_config_is_checked():
    base = {
        "policies": [
            {"name": "a", "backend": {"type": "openai", "model": "m"}},
            {"name": "b", "backend": {"type": "openai", "model": "m"}},
        ],
        "environment": {"type": "llm", "tasks": "t.jsonl", "judge": {"type": "human"}},
    }
    config = parse_config(base)
    assert config.environment.judge.lease_seconds == 600.0
    base["environment"]["judge"] = {"type": "human", "lease_seconds": 0}
    try:
        parse_config(base)
    except ConfigError as error:
        assert "environment.judge.lease_seconds" in str(error)
    else:
        raise AssertionError("lease_seconds 0 accepted")


def test_the_core_does_not_import_the_web_stack():
    code = (
        "import sys, llmpo, llmpo.cli, llmpo.llm.judges, llmpo.human.queue; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_the_example_is_a_valid_human_configuration():
    from pathlib import Path

    from llmpo.config import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "human.yaml"
    config = load_config(example)
    assert config.environment.judge.type == "human" and len(config.policy_names) == 3
