"""Shared fixtures: a project folder with recorded judgments and the smallest configuration that
runs on them (the command-line, store and integration tests; the live-LLM tests have their own
``project`` in tests/llm/conftest.py)."""

import json
from pathlib import Path

import pytest

SMALLEST = """\
space: unstructured
delta: 0.05
seed: 3
environment:
  type: replay
  path: judgments.jsonl
store: runs.db
"""


def write_judgments(folder: Path, rounds: int = 25) -> Path:
    lines = []
    for k in range(rounds):
        for a, b, outcome in (("alpha", "beta", 1), ("gamma", "alpha", 0), ("beta", "gamma", 1)):
            lines.append({"policy_a": a, "policy_b": b, "task_id": f"q{k}", "outcome": outcome})
        lines.append({"policy_a": "alpha", "policy_b": "beta", "task_id": f"q{k}", "outcome": 0.5})
    path = folder / "judgments.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder, made the working directory, with ``judgments.jsonl`` and ``experiment.yaml``."""
    monkeypatch.chdir(tmp_path)
    write_judgments(tmp_path)
    (tmp_path / "experiment.yaml").write_text(SMALLEST)
    return tmp_path
