"""Live runs under faults: nothing recorded is lost, resumes pay nothing twice, replicates are
fresh samples."""

import json
from collections import Counter

import pytest

from llmpo.config import load_config
from llmpo.errors import RunFailedError
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import start_experiment
from llmpo.store import Store
from tests.llm.conftest import run
from tests.llm.server import answers_by_system_prompt


def used_samples(store: Store, experiment_id: int) -> list[tuple[int, str, int]]:
    samples = []
    for c in store.comparisons(experiment_id):
        ra, rb = c.raw["replicates"]
        samples += [(c.policy_a, c.task_id, ra), (c.policy_b, c.task_id, rb)]
    return samples


def test_a_run_with_injected_faults_completes_and_loses_nothing(fast, server):
    server.hang_seconds = 1.0
    server.responder = lambda body: "0"  # ties: the budget ends the run, nothing is cancelled
    server.faults.extend(["429", "500", "malformed", "empty", "timeout"] * 3)
    outcome = run(fast, concurrency=8, max_comparisons=60, delta=0.001)
    assert len(server.faults_served) == 15
    with Store(fast.parent / "runs.db", readonly=True) as store:
        stored = store.comparisons(outcome.experiment_id)
        events = store.events(outcome.experiment_id)
    assert outcome.result.n_comparisons == len(stored) == outcome.new_comparisons == 60
    finished = next(detail for _, kind, detail in events if kind == "finished")
    assert finished["retries"] >= 15


def test_a_failing_backend_stops_cleanly_and_the_run_resumes(fast, server):
    def fail_after_10(body):
        if server.served == 10:
            server.faults.extend(["500"] * 1000)
        return answers_by_system_prompt(body)

    server.responder = fail_after_10
    with pytest.raises(RunFailedError, match=r"(?s)HTTP 500.*gave up.*all stored.*--resume"):
        run(fast, max_comparisons=40, delta=0.001)
    with Store(fast.parent / "runs.db", readonly=True) as store:
        record = store.experiment()
        stored = store.comparison_count(record.id)
        kinds = [kind for _, kind, _ in store.events(record.id)]
    assert record.status == "failed" and "backend_failed" in kinds
    assert 0 < stored <= 20  # a few before the failure, plus the few in flight
    server.faults.clear()
    server.responder = answers_by_system_prompt
    outcome = run(fast, max_comparisons=40, delta=0.001)
    assert outcome.status in ("certified", "max_comparisons") and outcome.replayed == stored
    told = outcome.result.n_comparisons
    assert told == stored + outcome.new_comparisons
    with Store(fast.parent / "runs.db", readonly=True) as store:
        # The resume re-used every answer that reached the client. A run that stops cancels its
        # calls in flight, and the server may have answered one just before: at most the two calls
        # of each of the 4 comparisons in flight, for each of the two runs, are paid and lost.
        assert 0 <= server.served - store.generation_count() <= 2 * 2 * 4
        samples = used_samples(store, outcome.experiment_id)
    assert len(samples) == len(set(samples)) == 2 * told  # fresh samples in every comparison


def test_after_a_failure_the_comparisons_in_flight_finish_and_are_stored(fast, server):
    server.latency = 0.3
    server.responder = lambda body: "0"  # ties: only the failure or the budget ends the run
    served_before_fault = 4  # the fifth call fails for good; 7 others are in flight with it

    def fail_fifth(body):
        if server.served == served_before_fault and not server.faults_served:
            server.faults.append("401")
        return "0"

    server.responder = fail_fifth
    with pytest.raises(RunFailedError, match="HTTP 401"):
        run(fast, concurrency=4, max_comparisons=100, delta=0.001)
    with Store(fast.parent / "runs.db", readonly=True) as store:
        stored = store.comparison_count(1)
        cached = store.generation_count()
    assert server.faults_served == ["401"]
    # Every answer the server gave reached the cache, and the comparisons in flight with the
    # failed one were stored: the 2 finished before it, and the 3 others (one round later).
    assert cached == server.served
    assert stored >= 4 and 2 * stored >= cached - 1


def test_a_resumed_or_repeated_run_makes_no_new_generation_call(fast, server):
    first = run(fast, concurrency=1)
    served = server.served
    again = run(fast, concurrency=1)  # the same configuration: resume of a finished run
    assert again.new_comparisons == 0 and server.served == served
    config = load_config(fast)
    with Store(config.store, writer=True) as store:  # a repeated run: a new experiment
        repeated = Runner(store, start_experiment(config, store), concurrency=1).run()
        assert store.generation_count() == served
    assert server.served == served
    assert repeated.result.n_comparisons == first.result.n_comparisons
    assert repeated.result.best == first.result.best


def test_replicates_draw_fresh_samples_with_distinct_seeds(project, server):
    path = project / "live.yaml"
    text = path.read_text().replace("    temperature: 1.0\n", "    temperature: 1.0\n    seed: 7\n")
    path.write_text(text)
    (project / "tasks.jsonl").write_text(
        json.dumps({"id": "only", "prompt": "What is 1 + 2?", "reference": "3"}) + "\n"
    )
    outcome = run(path, max_comparisons=12, delta=0.001)
    seeds = [b["seed"] for b in server.bodies if "seed" in b]
    assert sorted(seeds) == list(range(7, 7 + len(seeds)))  # seed + replicate index
    with Store(project / "runs.db", readonly=True) as store:
        samples = used_samples(store, outcome.experiment_id)
    counts = Counter((policy, task) for policy, task, _ in samples)
    assert counts[(1, "only")] == 12 and len(set(samples)) == len(samples)


def numbers(store: Store, experiment_id: int) -> tuple[list[int], set[int]]:
    """Numbers of the stored comparisons, and of every comparison ever asked."""
    stored = [c.raw["number"] for c in store.comparisons(experiment_id)]
    asked = {
        row[0]
        for _, kind, detail in store.events(experiment_id)
        if kind == "asked"
        for row in detail["comparisons"]
    }
    return stored, asked


def test_a_resume_finishes_the_comparisons_left_in_flight(fast, server):
    def fail_after_30(body):  # ties, so the budget ends the run and nothing is cancelled then
        if server.served == 30:
            server.faults.extend(["500"] * 1000)
        return "0"

    server.responder = fail_after_30
    with pytest.raises(RunFailedError):
        run(fast, concurrency=6, max_comparisons=60, delta=0.001)
    with Store(fast.parent / "runs.db", readonly=True) as store:
        experiment_id = store.experiment().id
        stored, asked = numbers(store, experiment_id)
        answered_before = store.generation_count()
    unfinished = asked - set(stored)
    assert stored and unfinished  # at least the comparison whose call failed
    server.faults.clear()
    server.responder = lambda body: "0"
    served = server.served
    outcome = run(fast, concurrency=6, max_comparisons=60, delta=0.001)
    with Store(fast.parent / "runs.db", readonly=True) as store:
        stored_after, asked_after = numbers(store, experiment_id)
        generations = store.generation_count()
    assert outcome.status == "max_comparisons" and outcome.result.n_comparisons == 60
    assert len(stored_after) == len(set(stored_after)) == 60  # each number told once
    assert unfinished <= set(stored_after)  # the ones in flight were finished, not lost
    assert asked_after == set(stored_after)  # nothing asked is left behind at the budget
    # The answers generated before the failure were found in the cache, not paid again.
    assert server.served - served == generations - answered_before
