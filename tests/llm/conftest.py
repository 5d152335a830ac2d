"""Fixtures of the live-LLM tests: a local OpenAI-compatible server and a project folder."""

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmpo.config import load_config
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import RunOutcome, find_experiment, start_experiment
from llmpo.store import Store
from tests.llm.server import FakeOpenAIServer, answers_by_system_prompt

#: The API key the tests put in the environment; it must never reach the disk.
SECRET = "sk-test-6f1d2c9a7b3e4d5f8a0b1c2d3e4f5a6b"

#: The smallest live configuration of issue 5, as written (only the port differs).
SMALLEST_LIVE = """\
space: unstructured
delta: 0.1
seed: 1
environment:
  type: llm
  tasks: tasks.jsonl          # one {"id", "prompt", "reference"} per line
  judge: {type: reference, match: contains}
policies:
  - name: careful
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: MY_KEY}
    system_prompt: "Answer with the number only."
    temperature: 0.2
  - name: loose
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: MY_KEY}
    temperature: 1.0
store: runs.db
"""


def write_tasks(folder: Path, count: int = 20) -> Path:
    path = folder / "tasks.jsonl"
    rows = [
        {"id": f"t{k}", "prompt": f"What is {k} + {2 * k + 1}?", "reference": str(3 * k + 1)}
        for k in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def server():
    started = FakeOpenAIServer(answers_by_system_prompt).start()
    yield started
    started.stop()


@pytest.fixture
def project(tmp_path, monkeypatch, server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MY_KEY", SECRET)
    write_tasks(tmp_path)
    (tmp_path / "live.yaml").write_text(SMALLEST_LIVE.replace("BASE_URL", server.base_url))
    return tmp_path


#: Retries that give up fast, for the failure tests.
FAST_RETRIES = "  type: llm\n  timeout_seconds: 0.5\n  max_retries: 3\n  backoff_seconds: 0.001\n"


@pytest.fixture
def fast(project):
    """The project's configuration with fast-failing retries."""
    path = project / "live.yaml"
    path.write_text(path.read_text().replace("  type: llm\n", FAST_RETRIES))
    return path


def run(config_path: Path, concurrency: int = 4, **overrides) -> RunOutcome:
    """Run (or resume) the configuration's experiment in this process, as llmpo run does."""
    config = load_config(config_path, overrides)
    with Store(config.store, writer=True) as store:
        record = find_experiment(config, store)
        experiment_id = record.id if record else start_experiment(config, store)
        return Runner(store, experiment_id, concurrency=concurrency).run()


def start_run(folder: Path) -> subprocess.Popen:
    """``llmpo run live.yaml`` in ``folder`` as a process of its own (to signal or kill)."""
    return subprocess.Popen(
        [sys.executable, "-m", "llmpo", "run", "live.yaml"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll ``condition`` every 50 ms; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
