"""What users read they paid equals what the server served, even across a SIGKILL.

A live ``llmpo run`` (and ``llmpo evaluate``) runs in a process of its own against the local
server, which serves a set number of requests and holds the rest (its ``gate``). Once every reply
served has been committed to the store, the process is killed with SIGKILL — no clean-up, no
session counts written — while its held requests are in flight; the gate opens (the held requests
are refused, never served) and the run is resumed to the end in this process. The calls and
tokens in ``--json`` and in the report must then equal the requests and tokens the server served:
before payments were recorded, the answers the killed session paid and the resumed one read back
from the cache were reported as reused, not paid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import llmpo
from llmpo.cli import app
from llmpo.llm.paid import call_totals, paid_totals
from llmpo.report import build_report
from llmpo.store import Store
from llmpo.store.views import RUNS, Tally
from llmpo.testing.store import count_rows, tamper
from tests.llm.conftest import SECRET, wait_for
from tests.llm.server import FakeOpenAIServer
from tests.llm.test_commit_points import LLM_JUDGE, ROOT, judge_replies, make_project

runner = CliRunner()


def spawn(folder: Path, *args: str) -> subprocess.Popen[str]:
    """``llmpo ARGS…`` in ``folder``, a process of its own (this tree's llmpo)."""
    source = str(Path(llmpo.__file__).resolve().parents[1])
    environment = {
        **os.environ,
        "MY_KEY": SECRET,
        "PYTHONPATH": os.pathsep.join([source, str(ROOT)]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "llmpo", *args],
        cwd=folder,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at_gate(server: FakeOpenAIServer, process: subprocess.Popen[str], store: Path) -> None:
    """SIGKILL ``process`` once the server has served up to its gate, every reply served is
    committed to ``store`` (one payment each, this store's earlier runs included) and a request
    is held (in flight); then open the gate."""
    served = server.gate
    assert served is not None
    try:
        wait_for(
            lambda: (
                server.served == served
                and server.held >= 1
                and count_rows(store, "payments") == served
            ),
            seconds=60,
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    server.open_gate()


def served_since(server: FakeOpenAIServer, first: int) -> dict[str, int]:
    """Requests the server served from request number ``first`` on, by who asked."""
    bodies = server.bodies[first:]
    judge = sum(body["model"] == "jm" for body in bodies)
    return {"generation_calls": len(bodies) - judge, "judge_calls": judge}


def test_a_run_killed_and_resumed_reports_every_call_the_server_served(tmp_path, monkeypatch):
    server = FakeOpenAIServer(judge_replies).start()
    server.gate = 10
    try:
        config = make_project(tmp_path / "p", server, LLM_JUDGE)
        store = config.parent / "runs.db"
        kill_at_gate(server, spawn(config.parent, "run", "live.yaml", "--concurrency", "4"), store)
        monkeypatch.chdir(config.parent)
        monkeypatch.setenv("MY_KEY", SECRET)
        resume = ["run", "live.yaml", "--resume", "--json", "--concurrency", "4"]
        result = runner.invoke(app, resume)
        assert result.exit_code == 0, result.output
        calls = json.loads(result.stdout)["calls"]
        served = served_since(server, 0)
        assert served["judge_calls"] > 0 and server.served > 10  # resumed, with a judge
        assert {key: calls[key] for key in served} == served
        assert (calls["input_tokens"], calls["output_tokens"]) == tuple(server.tokens_served)
        with Store(store, readonly=True) as reader:
            costs = build_report(reader)["costs"]
            tally = Tally().update(reader.connection, RUNS, 1)  # what llmpo view shows
            comparisons = reader.comparisons(1)
            invalid = [d for _, kind, d in reader.events(1) if kind == "invalid_verdict"]
        assert {key: costs[key] for key in served} == served
        assert (costs["input_tokens"], costs["output_tokens"]) == tuple(server.tokens_served)
        assert (tally.generations, tally.judgements) == tuple(served.values())
        assert tally.tokens == sum(server.tokens_served)
        # Nothing the run read from the cache was paid by another experiment.
        assert calls["reused_answers"] == 0
        # What the comparisons alone show (the totals before payments were recorded): the
        # answers the killed session paid and the resumed one read back are missing.
        charged = call_totals(comparisons, invalid)
        assert charged["generation_calls"] < served["generation_calls"]
    finally:
        server.stop()


def test_an_evaluation_killed_and_resumed_reports_every_call_the_server_served(
    tmp_path, monkeypatch
):
    server = FakeOpenAIServer(judge_replies).start()
    try:
        config = make_project(tmp_path / "p", server, LLM_JUDGE)
        config.write_text(config.read_text() + "baseline: loose\nholdout: {fraction: 0.25}\n")
        monkeypatch.chdir(config.parent)
        monkeypatch.setenv("MY_KEY", SECRET)
        result = runner.invoke(app, ["run", "live.yaml", "--json", "--concurrency", "4"])
        assert result.exit_code == 0, result.output
        first, tokens_before = server.served, list(server.tokens_served)
        server.gate = first + 7
        evaluate = ["evaluate", "runs.db", "--comparisons", "12", "--concurrency", "4"]
        kill_at_gate(server, spawn(config.parent, *evaluate), config.parent / "runs.db")
        result = runner.invoke(app, [*evaluate, "--resume", "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["comparisons"] == 12
        calls = summary["calls"]
        served = served_since(server, first)
        assert served["judge_calls"] > 0 and server.served > first + 7
        assert {key: calls[key] for key in served} == served
        tokens = [
            now - before for now, before in zip(server.tokens_served, tokens_before, strict=True)
        ]
        assert [calls["input_tokens"], calls["output_tokens"]] == tokens
        with Store(config.parent / "runs.db", readonly=True) as reader:
            evaluated = reader.evaluation_comparisons(summary["evaluation_id"])
        assert call_totals(evaluated)["generation_calls"] < served["generation_calls"]
    finally:
        server.stop()


def test_a_store_of_the_previous_schema_reports_its_totals_as_before(project, server):
    """A store as llmpo left it at schema v5 (no payments; each session wrote its counts when it
    ended) is read as it is and migrated, and its totals are still those of its comparisons and
    session counts."""
    result = runner.invoke(app, ["run", "live.yaml", "--json", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    path = project / "runs.db"
    with Store(path, readonly=True) as store:
        comparisons = store.comparisons(1)
    charged = sum(2 - sum(c.raw["cached"]) for c in comparisons)
    with tamper(path) as connection:
        connection.execute("DROP TABLE payments")
        connection.execute("PRAGMA user_version = 5")
        # The session's own count, as sessions wrote it then: 3 answers of rounds cancelled
        # when it certified, which no comparison shows.
        connection.execute(
            "UPDATE events SET detail = json_set(detail, '$.session_calls', json(?)) "
            "WHERE kind = 'finished'",
            (json.dumps({"generation": charged + 3, "judge": 0}),),
        )
    expected = {
        "generation_calls": charged + 3,
        "unused_generation_calls": 3,
        "judge_calls": 0,
        "reused_answers": sum(sum(c.raw["cached"]) for c in comparisons),
        "input_tokens": sum(c.input_tokens for c in comparisons),
    }
    with Store(path, readonly=True) as store:  # read as it is: v6 only adds a table
        totals = paid_totals(store, 1)
        costs = build_report(store)["costs"]
    assert {key: totals[key] for key in expected} == expected
    assert (costs["generation_calls"], costs["input_tokens"]) == (
        charged + 3,
        expected["input_tokens"],
    )
    with Store(path, writer=True) as store:  # migrated: the old experiment has no payments
        assert "from schema v5 to v6" in (store.migration_note() or "")
        assert store.payments(1) == []
        assert {key: paid_totals(store, 1)[key] for key in expected} == expected
