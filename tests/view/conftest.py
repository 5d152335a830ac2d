"""Fixtures of the viewer's tests: a store filled by a real live run (local OpenAI-compatible
server, reference judge) whose policy names, tasks and answers carry stored-XSS payloads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmpo.cli import app
from tests.llm.server import FakeOpenAIServer

KEY = "sk-view-test-0123456789abcdef"
#: Markup that must be shown as text, never run: a script, an image's error handler, a link.
XSS = (
    "<script>document.title='pwned'</script>"
    "<img src=x onerror=\"document.title='pwned'\">"
    "<a href=\"javascript:document.title='pwned'\">click me</a>"
)
CAREFUL = "careful <img src=x onerror=alert(1)>"

CONFIG = """\
name: sums <script>alert(1)</script>
space: unstructured
delta: 0.1
seed: 3
max_comparisons: MAX
environment:
  type: llm
  tasks: tasks.jsonl
  judge: {type: reference, match: contains}
policies:
  - name: "CAREFUL"
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: VIEW_KEY}
    system_prompt: "Answer with the number only."
  - name: loose
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: VIEW_KEY}
    temperature: 1.0
  - name: sloppy
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: VIEW_KEY}
    temperature: 0.5
store: runs.db
"""


def answer(body: dict[str, Any]) -> str:
    """Right with a system prompt; otherwise the XSS payload and a sum that is off, except on
    every third task (so that the weaker policies tie with each other now and then)."""
    messages = body["messages"]
    left, right = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", messages[-1]["content"])[0])
    total = left + right
    if messages[0]["role"] == "system":
        return str(total)
    if left % 3 == 0:
        return f"{XSS} It is {total}."
    return f"{XSS} It is {total + (1 if body.get('temperature') == 1.0 else 2)}."


def write_project(folder: Path, base_url: str, max_comparisons: int = 400) -> Path:
    rows = [
        {"id": f"t{k}", "prompt": f"What is {k} + {2 * k + 1}? {XSS}", "reference": str(3 * k + 1)}
        for k in range(15)
    ]
    (folder / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = folder / "view.yaml"
    text = CONFIG.replace("BASE_URL", base_url).replace("CAREFUL", CAREFUL)
    config.write_text(text.replace("MAX", str(max_comparisons)))
    return config


@pytest.fixture(scope="module")
def answers_server():
    server = FakeOpenAIServer(answer).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def run_store(tmp_path_factory, answers_server) -> Path:
    """The store of a finished (certified) live run, shared by a module's tests (read-only)."""
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("view")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("VIEW_KEY", KEY)
        write_project(folder, answers_server.base_url)
        result = CliRunner().invoke(app, ["run", "view.yaml", "--json"])
    assert result.exit_code == 0, result.output
    return folder / "runs.db"
