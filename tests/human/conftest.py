"""Fixtures of the human-judge tests: a live experiment judged by people, on a local
OpenAI-compatible server whose answers make one policy clearly best."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmpo.config import load_config
from llmpo.human.tokens import add_judge
from llmpo.runtime.setup import start_experiment
from llmpo.store import Store
from tests.llm.server import FakeOpenAIServer

KEY = "sk-human-test-0123456789abcdef"

CONFIG = """\
name: arithmetic by hand
space: unstructured
delta: 0.1
seed: 7
environment:
  type: llm
  tasks: tasks.jsonl
  judge: {type: human, lease_seconds: LEASE}
policies:
  - name: careful
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: HUMAN_KEY}
    system_prompt: "Answer with the number only."
  - name: hasty
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: HUMAN_KEY}
    temperature: 1.0
  - name: sloppy
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: HUMAN_KEY}
    temperature: 0.5
store: runs.db
"""


def answer(body: dict[str, Any]) -> str:
    """Right with a system prompt; otherwise off by one (temperature 1) or by two."""
    messages = body["messages"]
    left, right = str(messages[-1]["content"]).removeprefix("What is ").rstrip("?").split(" + ")
    total = int(left) + int(right)
    if messages[0]["role"] == "system":
        return str(total)
    return f"It is {total + 1}." if body.get("temperature") == 1.0 else f"About {total - 2}"


def correct_sum(prompt: str) -> int:
    """What a careful person computes for ``What is X + Y?``."""
    left, right = re.fullmatch(r"What is (\d+) \+ (\d+)\?", prompt.strip()).groups()  # type: ignore[union-attr]
    return int(left) + int(right)


def human_choice(prompt: str, answer_a: str, answer_b: str) -> str:
    """The simulated person's verdict: the answer that is exactly the right sum; else a tie."""
    right = str(correct_sum(prompt))
    good_a, good_b = answer_a.strip() == right, answer_b.strip() == right
    return "tie" if good_a == good_b else ("A" if good_a else "B")


def write_project(folder: Path, base_url: str, lease_seconds: float = 600) -> Path:
    rows = [{"id": f"t{k}", "prompt": f"What is {k} + {2 * k + 3}?"} for k in range(12)]
    (folder / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = folder / "human.yaml"
    config.write_text(CONFIG.replace("BASE_URL", base_url).replace("LEASE", str(lease_seconds)))
    return config


def parse_judging_page(text: str) -> dict[str, str]:
    """The hidden fields, the prompt and both answers of a judging page."""
    fields = dict(re.findall(r'name="(csrf|item|lease)" value="([^"]*)"', text))
    for key, pattern in {
        "prompt": r'<div class="prompt" id="prompt">(.*?)</div>',
        "a": r'id="answer-a">\s*<div class="label">Answer A</div>\s*<div class="text">(.*?)</div>',
        "b": r'id="answer-b">\s*<div class="label">Answer B</div>\s*<div class="text">(.*?)</div>',
    }.items():
        found = re.search(pattern, text, re.S)
        if found:
            fields[key] = html.unescape(found.group(1))
    return fields


@pytest.fixture
def answers_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer(answer).start()
    yield server
    server.stop()


@pytest.fixture
def human_project(tmp_path, monkeypatch, answers_server):
    """(folder, store path, tokens by judge) with one experiment started, not yet judged."""

    def make(lease_seconds: float = 600, judges: tuple[str, ...] = ("alice", "bob")):
        monkeypatch.setenv("HUMAN_KEY", KEY)
        config_path = write_project(tmp_path, answers_server.base_url, lease_seconds)
        config = load_config(config_path)
        with Store(config.store, writer=True) as store:
            start_experiment(config, store)
            tokens = {name: add_judge(store, name) for name in judges}
        return tmp_path, config.store, tokens

    return make
