"""promptfoo configurations import as llmpo experiments that run; promptfoo results replay.

The three configurations follow examples of promptfoo's documentation (getting started, CSV test
files with ``__expected`` columns, model-graded rubrics with a chat prompt file), written here.
"""

import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import load_config
from llmpo.integrations.promptfoo import PromptfooError, import_config, read_results
from tests.llm.server import FakeOpenAIServer

TRANSLATION = """\
description: Translation
prompts:
  - 'Convert this English to {{language}}: {{input}}'
  - 'Translate to {{language}}: {{input}}'
providers:
  - id: openai:chat:good
    config: {apiBaseUrl: BASE_URL}
  - id: openai:chat:poor
    label: poor-model
    config: {apiBaseUrl: BASE_URL}
  - anthropic:messages:claude-sonnet-4-5
tests:
  - vars: {language: French, input: Hello world}
    assert:
      - type: icontains
        value: bonjour
  - vars:
      language: [French, German]
      input: Good morning
    assert:
      - type: contains
        value: bonjour
      - type: javascript
        value: output.length < 100
"""

CSV_TESTS = """\
prompts:
  - file://prompts.txt
providers:
  - id: openai:chat:good
    label: cool
    config: {apiBaseUrl: BASE_URL, temperature: 0.2}
  - id: openai:chat:good
    label: warm
    config: {apiBaseUrl: BASE_URL, temperature: 0.9, max_tokens: 64}
tests: file://tests.csv
"""

RUBRIC = """\
description: Support answers
prompts:
  - id: file://chat.json
    label: polite
  - label: terse
    raw: 'Answer briefly: {{question}}'
providers:
  - id: openai:chat:good
    config: {apiBaseUrl: BASE_URL}
  - id: openai:chat:poor
    config: {apiBaseUrl: BASE_URL}
defaultTest:
  options:
    provider:
      id: openai:chat:judge
      config: {apiBaseUrl: BASE_URL}
  assert:
    - type: llm-rubric
      value: The answer is correct and names the capital city
tests:
  - vars: {question: 'What is the capital of France?'}
  - vars: {question: 'Where does the French government sit?'}
  - vars: {question: 'Which city is the capital of France?'}
"""


def respond(body: dict) -> str:
    """The ``good`` model answers well and ``poor`` badly; ``judge`` prefers the good answer."""
    content = str(body["messages"][-1]["content"])
    if body["model"] == "judge":
        first = content.split("[Answer A]")[1].split("[Answer B]")[0]
        second = content.split("[Answer B]")[1]
        if ("Paris" in first) == ("Paris" in second):
            return "TIE"
        return "A" if "Paris" in first else "B"
    if body["model"] == "poor":
        return "Sorry, I do not know."
    if "capital" in content or "government" in content:
        # The terse prompt often leaves the city out.
        if content.startswith("Answer briefly") and zlib.crc32(json.dumps(body).encode()) % 3:
            return "A big city."
        return "Paris."
    if "4" in content:
        return "4"
    # Occasionally wrong, so that the two prompts are not all ties.
    return "Bonjour!" if zlib.crc32(content.encode()) % 5 else "Hallo."


@pytest.fixture
def server():
    started = FakeOpenAIServer(respond).start()
    yield started
    started.stop()


def write(folder: Path, text: str, server: FakeOpenAIServer) -> Path:
    path = folder / "promptfooconfig.yaml"
    path.write_text(text.replace("BASE_URL", server.base_url))
    return path


def import_and_run(folder: Path, source: Path) -> dict:
    runner = CliRunner()
    imported = runner.invoke(app, ["import", str(source), "-o", str(folder / "llmpo.yaml")])
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(
        app, ["run", str(folder / "llmpo.yaml"), "--json", "--max-comparisons", "200"]
    )
    # 3: the run ended at its budget without a certificate (its JSON says so).
    assert result.exit_code in (0, 3), result.output
    data = json.loads(result.stdout)
    assert (result.exit_code == 0) == data["certified"]
    return data


def test_translation_example_runs_with_a_reference_judge(tmp_path, server):
    source = write(tmp_path, TRANSLATION, server)
    imported = import_config(source)
    # Two prompts × two supported providers, as a product of factors; anthropic is named.
    factors = imported.config["policies"]["factors"]
    assert list(factors["prompt_template"]) == ["p1", "p2"]
    assert list(factors["backend"]) == ["good", "poor-model"]
    assert any("anthropic:messages:claude-sonnet-4-5" in note for note in imported.notes)
    assert any("javascript (2×)" in note for note in imported.notes)
    # The list-valued var expands into one task per value, as promptfoo runs it.
    assert [t["id"] for t in imported.tasks] == ["t1", "t2", "t2.2"]
    assert imported.config["environment"]["judge"] == {"type": "reference", "match": "contains"}
    data = import_and_run(tmp_path, source)
    assert data["winner"].endswith("/good")
    config = load_config(tmp_path / "llmpo.yaml")
    assert len(config.policy_names or []) == 4


def test_csv_tests_and_a_prompt_file_run(tmp_path, server):
    (tmp_path / "prompts.txt").write_text("What is {{a}} + {{b}}?\n---\nCompute {{a}} + {{b}}.\n")
    (tmp_path / "tests.csv").write_text(
        "a,b,__expected,__description\n2,2,equals: 4,sum\n1,3,4,plain value means equals\n"
    )
    source = write(tmp_path, CSV_TESTS, server)
    imported = import_config(source)
    policies = imported.config["policies"]
    # The providers differ in decoding parameters, so the policies are listed with their levels.
    assert [p["name"] for p in policies] == ["p1/cool", "p1/warm", "p2/cool", "p2/warm"]
    assert policies[1]["temperature"] == 0.9 and policies[1]["max_tokens"] == 64
    assert policies[0]["levels"] == {"prompt_template": "p1", "backend": "cool"}
    assert imported.config["environment"]["judge"] == {"type": "reference", "match": "exact"}
    assert [t["reference"] for t in imported.tasks] == ["4", "4"]
    data = import_and_run(tmp_path, source)
    # Every policy answers "4": all ties, nothing to certify; the run ends at its budget and,
    # its judge never having told two answers apart, names no winner.
    assert data["n_comparisons"] == 200 and not data["certified"]
    assert data["winner"] is None and "never told the answers apart" in data["warning"]


def test_rubric_example_runs_with_an_llm_judge(tmp_path, server):
    (tmp_path / "chat.json").write_text(
        json.dumps(
            [
                {"role": "system", "content": "You are a polite assistant."},
                {"role": "user", "content": "{{question}}"},
            ]
        )
    )
    source = write(tmp_path, RUBRIC, server)
    imported = import_config(source)
    judge = imported.config["environment"]["judge"]
    assert judge["type"] == "llm" and judge["backend"]["model"] == "judge"
    assert judge["order"] == "both"
    assert all(t["rubric"].startswith("The answer is correct") for t in imported.tasks)
    polite = next(p for p in imported.config["policies"] if p["name"] == "polite/good")
    assert polite["system_prompt"] == "You are a polite assistant."
    data = import_and_run(tmp_path, source)
    assert data["winner"] == "polite/good" and data["certified"]
    judged = [b for b in server.bodies if b["model"] == "judge"]
    assert judged and "names the capital city" in judged[0]["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("providers: [openai:gpt-4o]\ntests: []\n", "'prompts' is missing"),
        ("prompts: ['{{q}}']\nproviders: [openai:gpt-4o]\ntests: [{vars: {q: x}}]\n",
         "fewer than 2 policies"),
        ("prompts: ['a', 'b']\nproviders: [bedrock:titan]\ntests: [{vars: {}}]\n",
         "fewer than 2 policies"),
        ("prompts: ['a', 'b']\nproviders: [openai:gpt-4o]\ntests: []\n", "tests: none given"),
        ("prompts: [file://make.py]\nproviders: [openai:gpt-4o]\n", "prompt functions"),
    ],
)
def test_unusable_configurations_are_named(tmp_path, text, message):
    path = tmp_path / "promptfooconfig.yaml"
    path.write_text(text)
    with pytest.raises(PromptfooError, match=message):
        import_config(path)
    result = CliRunner().invoke(app, ["import", str(path), "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_import_does_not_overwrite_without_force(tmp_path, server):
    source = write(tmp_path, TRANSLATION, server)
    (tmp_path / "llmpo.yaml").write_text("mine")
    result = CliRunner().invoke(app, ["import", str(source), "-o", str(tmp_path / "llmpo.yaml")])
    assert result.exit_code == 2 and (tmp_path / "llmpo.yaml").read_text() == "mine"


def results_file(path: Path, scores: dict[tuple[int, str], float]) -> Path:
    """A results file in the layout ``promptfoo eval -o results.json`` writes."""
    rows = [
        {
            "testIdx": test,
            "promptIdx": 0,
            # promptfoo labels an unlabelled prompt with its template, and leaves label empty.
            "prompt": {"raw": "Q: {{q}}", "label": "Q: {{q}}"},
            "promptId": "5e1f",
            "provider": {"id": f"openai:chat:{model}", "label": ""},
            "vars": {"q": f"question {test}"},
            "response": {"output": "..."},
            "score": score,
            "success": score > 0.5,
        }
        for (test, model), score in scores.items()
    ]
    path.write_text(json.dumps({"evalId": "x", "results": {"version": 3, "results": rows}}))
    return path


def test_results_replay_as_judgments(tmp_path):
    path = results_file(
        tmp_path / "results.json",
        {(0, "a"): 1.0, (0, "b"): 0.0, (0, "c"): 1.0, (1, "a"): 0.5, (1, "b"): 0.5},
    )
    judgments = {(j.policy_a, j.policy_b, j.task_id): j.outcome for j in read_results(path)}
    assert judgments == {
        ("p1/a", "p1/b", "t1"): 1.0,
        ("p1/a", "p1/c", "t1"): 0.5,
        ("p1/b", "p1/c", "t1"): 0.0,
        ("p1/a", "p1/b", "t2"): 0.5,
    }
    path.write_text(json.dumps({"results": {"stats": {}}}))
    with pytest.raises(PromptfooError, match="not a promptfoo results file"):
        read_results(path)


def test_results_replay_certifies_the_higher_scoring_policy(tmp_path):
    scores = {}
    for test in range(40):
        scores[(test, "strong")] = 1.0 if test % 10 else 0.0
        scores[(test, "weak")] = 1.0 if test % 3 == 0 else 0.0
    results_file(tmp_path / "results.json", scores)
    (tmp_path / "replay.yaml").write_text(
        "space: unstructured\ndelta: 0.05\nseed: 1\nenvironment:\n  type: replay\n"
        "  format: promptfoo\n  path: results.json\nstore: runs.db\n"
    )
    result = CliRunner().invoke(app, ["run", str(tmp_path / "replay.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["winner"] == "p1/strong" and data["certified"]



#: The promptfoo command line (npm package ``promptfoo``): on PATH, or named by LLMPO_PROMPTFOO.
PROMPTFOO = os.environ.get("LLMPO_PROMPTFOO") or shutil.which("promptfoo")


@pytest.mark.skipif(PROMPTFOO is None, reason="no promptfoo command (npm install promptfoo)")
def test_results_of_the_real_promptfoo_replay_with_the_imported_names(tmp_path, server):
    # Without the Anthropic provider, which promptfoo would call with a key we do not have.
    text = TRANSLATION.replace("  - anthropic:messages:claude-sonnet-4-5\n", "")
    source = write(tmp_path, text, server)
    # promptfoo needs a key for OpenAI providers even when they point at a server of one's own.
    environment = {
        **os.environ,
        "OPENAI_API_KEY": "none",
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_CONFIG_DIR": str(tmp_path / ".promptfoo"),
    }
    finished = subprocess.run(
        [str(PROMPTFOO), "eval", "-c", str(source), "-o", str(tmp_path / "results.json"),
         "--no-cache", "--no-progress-bar"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240,
    )
    # promptfoo exits 100 when some assertions fail, as the poor model's do here.
    assert finished.returncode in (0, 100), finished.stdout[-2000:] + finished.stderr[-2000:]
    judgments = read_results(tmp_path / "results.json")
    imported = import_config(source)
    factors = imported.config["policies"]["factors"]
    names = {f"{p}/{b}" for p in factors["prompt_template"] for b in factors["backend"]}
    assert {j.policy_a for j in judgments} | {j.policy_b for j in judgments} == names
    # On every test the good model beats the poor one under the same prompt or ties.
    for judgment in judgments:
        if judgment.policy_a.endswith("/good") and judgment.policy_b.endswith("/poor-model"):
            assert judgment.outcome in (0.5, 1.0)
