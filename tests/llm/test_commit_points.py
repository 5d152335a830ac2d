"""Kill a live run at every commit point of its store, resume it, and check the store and the money.

A run of ``llmpo run`` in a subprocess (:mod:`tests.llm.commit_point_launcher`) is ended with
``os._exit(137)`` — as a SIGKILL does: no clean-up — right before, or right after, its K-th SQLite
commit, against the local OpenAI-compatible server that counts every paid request. The run is then
resumed to certification and checked: 0 comparisons lost or duplicated (the stored comparisons
before the kill are kept unchanged, sequence numbers contiguous, comparison numbers unique, the
store passes its integrity check), 0 answers paid twice whose reply had been stored before the kill,
and the winner certified. Each policy has a seed, offset by the replicate index, so every paid
request names its (policy, task, replicate).

The default suite tries one commit point and the kill of issue 19's point 5; ``-m slow`` tries
every one (and prints the figures: points tried, comparisons lost, answers re-paid).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import llmpo
from llmpo.config import load_config
from llmpo.llm.environment import LLMEnvironment
from llmpo.store import Store
from llmpo.store.payloads import number_of
from llmpo.testing.store import count_rows
from tests.llm.commit_point_launcher import KILLED
from tests.llm.conftest import SECRET, run, write_tasks
from tests.llm.server import FakeOpenAIServer, answers_by_system_prompt

ROOT = Path(__file__).resolve().parents[2]

#: The policies' seeds: a request's seed tells its policy and replicate (seed − base).
SEEDS = {"careful": 1_000, "loose": 1_000_000}

CONFIG = """\
space: unstructured
delta: 0.1
seed: 1
environment:
  type: llm
  tasks: tasks.jsonl
  timeout_seconds: 30  # a loaded machine must not make a retry look like a double payment
  max_retries: 2
  backoff_seconds: 0.001
  judge: JUDGE
policies:
  - name: careful
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: MY_KEY}
    system_prompt: "Answer with the number only."
    temperature: 0.2
    seed: 1000
  - name: loose
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: MY_KEY}
    temperature: 1.0
    seed: 1000000
store: runs.db
"""

REFERENCE_JUDGE = "{type: reference, match: contains}"
LLM_JUDGE = (
    '{type: llm, backend: {type: openai, base_url: "BASE_URL", model: jm, api_key_env: MY_KEY}}'
)

CONCURRENCY = 4


def sample_of(seed: int | None, question: str) -> tuple[str, str, int] | None:
    """The (policy, task id, replicate) of a policy's request; None for a judge's request."""
    if seed is None:
        return None
    policy = "careful" if seed < SEEDS["loose"] else "loose"
    task = int(question.removeprefix("What is ").split(" + ")[0])
    return policy, f"t{task}", seed - SEEDS[policy]


def sample(body: dict[str, Any]) -> tuple[str, str, int] | None:
    """The (policy, task id, replicate) a paid request asked for; None for a judge's request."""
    return sample_of(body.get("seed"), str(body["messages"][-1]["content"]))


def judge_replies(body: dict[str, Any]) -> str:
    """The policies answer arithmetic; the judge (model ``jm``) prefers the answer that is the
    reference."""
    if body["model"] != "jm":
        return answers_by_system_prompt(body)
    prompt = str(body["messages"][-1]["content"])
    reference = prompt.split("[Reference answer]\n", 1)[1].split("\n", 1)[0].strip()
    first = prompt.split("[Answer A]\n", 1)[1].split("\n\n[Answer B]", 1)[0].strip()
    second = prompt.split("[Answer B]\n", 1)[1].split("\n\nReply", 1)[0].strip()
    right = (first == reference, second == reference)
    return "TIE" if right[0] == right[1] else "A" if right[0] else "B"


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


@pytest.fixture(scope="module")
def counting_server():
    started = FakeOpenAIServer(judge_replies).start()
    yield started
    started.stop()


def make_project(folder: Path, server: FakeOpenAIServer, judge: str = REFERENCE_JUDGE) -> Path:
    folder.mkdir()
    write_tasks(folder)
    path = folder / "live.yaml"
    path.write_text(CONFIG.replace("JUDGE", judge).replace("BASE_URL", server.base_url))
    return path


def launch(
    config: Path, k: int, mode: str, concurrency: int = CONCURRENCY
) -> subprocess.CompletedProcess[str]:
    """``llmpo run CONFIG`` in a subprocess, killed at commit point ``k`` (see the launcher)."""
    source = str(Path(llmpo.__file__).resolve().parents[1])
    environment = {
        **os.environ,
        "MY_KEY": SECRET,
        "PYTHONPATH": os.pathsep.join([str(ROOT), source]),
        "LLMPO_ARRIVED": str(config.parent / "arrived.jsonl"),
    }
    command = ["run", config.name, "--concurrency", str(concurrency)]
    return subprocess.run(
        [sys.executable, "-m", "tests.llm.commit_point_launcher", str(k), mode, *command],
        cwd=config.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshot(path: Path) -> tuple[list[Any], set[tuple[str, str, int]]]:
    """The stored comparisons (every field) and the stored answers' (policy, task, replicate),
    read as a resumed run will find them (the store's integrity check runs on opening)."""
    if count_rows(path, "experiments") == 0:
        return [], set()  # killed before its schema or its experiment was committed
    with Store(path, readonly=True) as store:  # refused if the kill left what a run never writes
        comparisons = store.comparisons(store.experiment().id)
        answers = {(str(p), str(t), int(r)) for p, t, r, _ in store.answers()}
    return comparisons, answers


def trial(
    folder: Path,
    server: FakeOpenAIServer,
    k: int,
    mode: str,
    judge: str = REFERENCE_JUDGE,
    concurrency: int = CONCURRENCY,
) -> dict[str, Any]:
    """Kill a run at commit point ``k``, resume it to the end, and measure what was lost or paid
    twice."""
    config = make_project(folder, server, judge)
    first = len(server.bodies)
    killed = launch(config, k, mode, concurrency)
    assert killed.returncode in (KILLED, 0), killed.stderr[-2000:]
    assert SECRET not in killed.stdout + killed.stderr
    before_kill = server.bodies[first:]
    kept, stored_answers = snapshot(config.parent / "runs.db") if killed.returncode else ([], set())
    resumed_from = len(server.bodies)
    cwd = Path.cwd()
    os.environ["MY_KEY"] = SECRET
    try:
        os.chdir(config.parent)
        outcome = run(config, concurrency=concurrency)
    finally:
        os.chdir(cwd)
    after_kill = server.bodies[resumed_from:]
    arrived_file = config.parent / "arrived.jsonl"
    lines = arrived_file.read_text().splitlines() if arrived_file.exists() else []
    arrived = [json.loads(line) for line in lines]
    arrived_answers = {sample_of(seed, question) for model, seed, question in arrived} - {None}
    arrived_judge = {question for model, seed, question in arrived if seed is None}
    final, _ = snapshot(config.parent / "runs.db")
    numbers = [number_of(record.raw) for record in final]
    paid_before = Counter(filter(None, map(sample, before_kill)))
    paid_after = Counter(filter(None, map(sample, after_kill)))
    judged_before = {canonical(b) for b in before_kill if sample(b) is None}
    return {
        "mode": mode,
        "killed": killed.returncode == KILLED,
        "status": outcome.status,
        "winner": outcome.result.best_name,
        "seqs": [record.seq for record in final],
        "numbers": numbers,
        # A comparison stored before the kill and missing or changed afterwards.
        "lost": sum(row not in final for row in kept),
        "kept": len(kept),
        # Answers whose reply had been stored before the kill, paid for again.
        "repaid_stored": sum(n for s, n in paid_after.items() if s in stored_answers),
        # Answers whose reply had reached the killed process (stored or not), paid again.
        "repaid_arrived": sum(n for s, n in paid_after.items() if s in arrived_answers),
        "judge_repaid_arrived": sum(
            str(b["messages"][-1]["content"]) in arrived_judge
            for b in after_kill
            if sample(b) is None
        ),
        # Answers requested before the kill and not stored (in flight, or their own commit was
        # the one cut short), paid again.
        "repaid_in_flight": sum(
            n for s, n in paid_after.items() if s in paid_before and s not in stored_answers
        ),
        # Each answer paid at most once in one session: fresh replicates.
        "paid_twice_in_a_session": sum(n - 1 for n in paid_before.values() if n > 1)
        + sum(n - 1 for n in paid_after.values() if n > 1),
        # Judge requests made before the kill and again after it (in flight or stored).
        "judge_repaid": sum(canonical(b) in judged_before for b in after_kill if sample(b) is None),
    }


def check(figures: dict[str, Any]) -> None:
    assert figures["status"] == "certified" and figures["winner"] == "careful"
    assert figures["seqs"] == list(range(1, len(figures["seqs"]) + 1))
    assert len(set(figures["numbers"])) == len(figures["numbers"])
    assert figures["lost"] == 0
    assert figures["repaid_stored"] == 0
    # Killed as an answer's own commit starts, that one answer had arrived and is lost; at any
    # other point every answer that had arrived was stored.
    assert figures["repaid_arrived"] <= (1 if figures["mode"] == "before" else 0)
    assert figures["paid_twice_in_a_session"] == 0


def commit_count(folder: Path, server: FakeOpenAIServer) -> int:
    """The commits of an uninterrupted run of the configuration."""
    finished = launch(make_project(folder, server), 0, "count")
    assert finished.returncode == 0, finished.stderr[-2000:]
    return int(finished.stderr.rsplit("commits ", 1)[1].split()[0])


def committed_rows(path: Path) -> int:
    """Answers and judge replies another connection (a resumed run) would find."""
    return count_rows(path, "generations")


def test_answers_and_judge_replies_are_committed_as_they_arrive(tmp_path, monkeypatch):
    """In process: after one comparison its two answers and its judge's reply are on disk, before
    the comparison itself is stored; a new session re-asking that comparison pays nothing, and
    another comparison on the same answers gets its own judge reply."""
    server = FakeOpenAIServer(judge_replies).start()
    try:
        monkeypatch.setenv("MY_KEY", SECRET)
        monkeypatch.chdir(tmp_path)
        config = load_config(make_project(tmp_path / "p", server, LLM_JUDGE))
        database = tmp_path / "p" / "runs.db"

        async def compare(store: Store, number: int) -> Any:
            live = LLMEnvironment(config, cache=store, payer=(payer, None))
            task = live.task(1)
            try:
                (done,) = await live.compare_round(1, task, [(number, 0, 1, (0, 0))])
            finally:
                await live.aclose()
            return done

        def paid(store: Store) -> tuple[int, int]:
            kinds = [p.kind for p in store.payments(payer) or []]
            return kinds.count("generation"), kinds.count("judge")

        with Store(database, writer=True) as store:
            payer = store.create_experiment({"seed": 1}, ["careful", "loose"])
            first = asyncio.run(compare(store, 1))
            assert paid(store) == (2, 1) and server.served == 3
            assert committed_rows(database) == 3  # nothing else was written to the store
            assert count_rows(database, "payments") == 3  # each with its reply
            again = asyncio.run(compare(store, 1))  # the same comparison, resumed
            assert paid(store) == (2, 1) and server.served == 3
            assert again.verdict == first.verdict and again.cached == (True, True)
            asyncio.run(compare(store, 2))  # another comparison, same answers
            assert paid(store) == (2, 2) and server.served == 4
    finally:
        server.stop()


def test_answers_that_arrived_before_a_kill_are_not_paid_again(tmp_path, counting_server):
    """Killed as the first comparison is being committed (one comparison in flight): its two
    answers and its judge's reply had arrived; the resumed run reads all three from the store
    instead of paying again (before answers were committed on arrival it paid all three again)."""
    figures = trial(tmp_path / "p", counting_server, 1, "comparison", LLM_JUDGE, concurrency=1)
    assert figures["killed"] and figures["kept"] == 0
    assert figures["repaid_stored"] == figures["repaid_arrived"] == 0
    assert figures["repaid_in_flight"] == figures["judge_repaid"] == 0
    assert figures["judge_repaid_arrived"] == 0
    assert figures["numbers"][0] == 1 and figures["lost"] == 0


def test_a_kill_at_a_sample_of_commit_points_loses_nothing_and_pays_nothing_twice(
    tmp_path, counting_server
):
    """One commit point of the 40–50 a run makes, right after the 12th (the test above kills one
    right before a commit); every one is tried, before and after, under ``slow``."""
    for k, mode in [(12, "after")]:
        figures = trial(tmp_path / f"{mode}{k}", counting_server, k, mode)
        assert figures["killed"], (k, mode)
        check(figures)


@pytest.mark.slow
def test_a_kill_at_every_commit_point_loses_nothing_and_pays_nothing_twice(
    tmp_path, counting_server
):
    total = commit_count(tmp_path / "count", counting_server)
    tried = lost = repaid = in_flight = arrived = 0
    for mode in ("before", "after"):
        for k in range(1, total + 1):
            figures = trial(tmp_path / f"{mode}{k}", counting_server, k, mode)
            if not figures["killed"]:
                continue  # this run finished in fewer commits
            check(figures)
            tried += 1
            lost += figures["lost"]
            repaid += figures["repaid_stored"]
            in_flight += figures["repaid_in_flight"]
            arrived += figures["repaid_arrived"]
    print(
        f"\ncommit points: {total} per run, {tried} kills (before and after each); comparisons "
        f"lost {lost}; stored answers re-paid {repaid}; answers not stored re-paid {in_flight}, "
        f"of which had arrived {arrived}"
    )
    assert tried >= total
