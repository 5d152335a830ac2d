"""Reports and exports of a live run against the local server: example answers side by side,
accuracy per policy for a reference judge, LLM calls and tokens, ISO times and answer texts."""

import csv
import io
import json
import re
from datetime import datetime

from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.report import build_report, render_html, render_markdown
from llmpo.stats.winrate import clopper_pearson
from llmpo.store import Store

runner = CliRunner()


def live_run(project, *flags: str) -> dict:
    result = runner.invoke(app, ["run", "live.yaml", "--json", "--concurrency", "2", *flags])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_report_shows_examples_accuracy_and_calls(project, server):
    live_run(project)
    with Store(project / "runs.db", readonly=True) as store:
        data = build_report(store)
        comparisons = store.comparisons(1)
    lines = (project / "tasks.jsonl").read_text().splitlines()
    tasks = {row["id"]: row for row in map(json.loads, lines)}
    best = data["answer"]["best"]
    examples = data["examples"]
    assert 1 <= len(examples) <= 3
    for example in examples:
        task = tasks[example["task_id"]]
        assert example["task"] == task["prompt"] and example["reference"] == task["reference"]
        assert example["best"] == best and example["rival"] != best
        # The server's answers: the sum, or "about" the sum plus one.
        total = str(int(task["reference"]))
        for answer in (example["best_answer"], example["rival_answer"]):
            assert answer in (total, f"about {int(total) + 1}")
        assert example["verdict"] in (best, example["rival"], "tie")
    # Accuracy per policy: each answer a fresh sample scored against the reference.
    accuracy = {row["policy"]: row for row in data["accuracy"]}
    assert set(accuracy) == {"careful", "loose"}
    for name, row in accuracy.items():
        index = data["experiment"]["policies"].index(name)
        matches = [
            c.raw["judge"]["match_a" if c.policy_a == index else "match_b"]
            for c in comparisons
            if index in (c.policy_a, c.policy_b)
        ]
        assert row["answers"] == len(matches) and row["correct"] == sum(matches)
        assert row["interval"] == list(clopper_pearson(sum(matches), len(matches)))
    assert accuracy["careful"]["accuracy"] == 1.0  # the server always answers it right
    # What it cost: every request the server answered (rounds still in flight when the run
    # certified included), no judge calls for a reference judge, the tokens the server counted.
    costs = data["costs"]
    assert costs["judge_calls"] == 0 and costs["generation_calls"] == server.served
    assert (costs["input_tokens"], costs["output_tokens"]) == tuple(server.tokens_served)
    assert costs["input_tokens"] >= sum(c.input_tokens for c in comparisons)
    sentence = data["summary"]["sentence"]
    assert f"{costs['generation_calls']:,} LLM calls" in sentence
    markdown = render_markdown(data)
    assert re.search(r"\d\.\d+e[+-]\d", markdown) is None  # no scientific notation
    assert "## Example answers: " in markdown and "## Accuracy per policy" in markdown
    html = render_html(data)
    assert html.count("<table class=\"examples\">") == len(examples)


def test_export_has_iso_times_and_with_answers_the_texts(project, server):
    live_run(project)
    plain = list(csv.DictReader(io.StringIO(runner.invoke(app, ["export", "runs.db"]).stdout)))
    assert plain and "answer_a" not in plain[0]
    for row in plain:
        started = datetime.fromisoformat(row["started_at"])
        finished = datetime.fromisoformat(row["finished_at"])
        assert started.utcoffset().total_seconds() == 0 and started <= finished
        assert abs((finished - started).total_seconds() - float(row["seconds"])) < 1e-3
    result = runner.invoke(app, ["export", "runs.db", "--answers"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(plain)
    for row in rows:
        total = int(row["task_id"][1:]) * 3 + 1  # the tasks ask k + (2k + 1)
        assert {row["answer_a"], row["answer_b"]} <= {str(total), f"about {total + 1}"}
