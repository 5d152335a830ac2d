"""The example configurations run as shipped."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import load_config
from llmpo.runtime.setup import build_environment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def run_json(*arguments: str) -> dict:
    result = CliRunner().invoke(app, ["run", *arguments, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("config", "files", "winner"),
    [
        ("smallest.yaml", ["judgments.jsonl"], "few-shot"),
        ("synthetic.yaml", ["bt5.json"], "p0"),
        ("structured.yaml", ["feat10.json"], "q2"),
    ],
)
def test_example_runs_exactly_as_written(tmp_path, monkeypatch, config, files, winner):
    for name in [config, *files]:
        shutil.copy(EXAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    data = run_json(config)
    assert data["winner"] == winner and data["certified"]
    assert (tmp_path / "runs.db").is_file()


def test_pandalm_example_names_llama(tmp_path):
    if not (SHARED_DATA / "pandalm_testset-v1.json").is_file():
        pytest.skip(f"pandalm_testset-v1.json not in {SHARED_DATA.resolve()} (shared data absent)")
    shutil.copy(EXAMPLES / "pandalm.yaml", tmp_path / "pandalm.yaml")
    (tmp_path / "testset-v1.json").symlink_to((SHARED_DATA / "pandalm_testset-v1.json").resolve())
    data = run_json(str(tmp_path / "pandalm.yaml"), "--store", str(tmp_path / "p.db"))
    assert data["winner"] == "llama-7b" and data["certified"]


def test_arena_example_keeps_the_dense_subset():
    arena = SHARED_DATA / "chatbotarena_20240814.json"
    if not arena.is_file():
        pytest.skip(
            f"chatbotarena_20240814.json not in {SHARED_DATA.resolve()} (shared data absent)"
        )
    config = load_config(EXAMPLES / "arena.yaml", {"environment.path": str(arena)})
    environment = build_environment(config)
    assert len(environment.policies) == 35 and "gpt-4o-2024-05-13" in environment.policies
    assert len(environment.dropped) == 129 - 35
