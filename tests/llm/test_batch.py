"""Batch APIs (``backend: {batch: true}``): rounds as batch jobs over real HTTP, resume without
paying twice, partly failed jobs, the batch price, Anthropic's Message Batches."""

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.errors import RunFailedError
from llmpo.llm.batch import fingerprint
from llmpo.store import Store
from tests.llm.batch_server import FakeBatchServer
from tests.llm.conftest import SECRET, SMALLEST_LIVE, run, start_run, wait_for, write_tasks
from tests.llm.server import answers_by_system_prompt

#: The batch options of every backend here: fast polling for a local server.
BATCH = "batch: true, batch_poll_seconds: 0.02, batch_max_poll_seconds: 0.05"

#: Listed prices of m1 (USD per million tokens); the batch price is half.
PRICES = "  prices: {m1: {input: 2.0, output: 8.0}}\n"

LLM_JUDGE = (
    "  judge:\n"
    "    type: llm\n"
    '    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: MY_KEY, '
    + BATCH
    + "}\n"
)


def respond(body):
    """Arithmetic answers (right with a system prompt), and a judge that prefers the exact sum."""
    prompt = str(body["messages"][0]["content"])
    if "[Answer A]" in prompt:
        first = prompt.split("[Answer A]\n")[1].split("\n")[0]
        return "B" if first.startswith("about") else "A"
    return answers_by_system_prompt(body)


@pytest.fixture
def batches():
    server = FakeBatchServer(respond, latency=0.05).start()
    yield server
    server.stop()


def write_config(folder, server, judge: str = "", backend: str = "openai", extra: str = ""):
    text = SMALLEST_LIVE.replace(
        "model: m1, api_key_env: MY_KEY}", f"model: m1, api_key_env: MY_KEY, {BATCH}}}"
    )
    url = server.base_url
    if backend == "anthropic":
        text = text.replace("type: openai", "type: anthropic")
        url = server.root_url
    text = text.replace("  type: llm\n", "  type: llm\n" + PRICES + extra)
    # Seeded policies: every answer request differs, so a repeated body is a request paid twice.
    for temperature in ("0.2", "1.0"):
        text = text.replace(
            f"temperature: {temperature}\n", f"temperature: {temperature}\n    seed: 11\n"
        )
    if judge:
        text = text.replace("  judge: {type: reference, match: contains}\n", judge)
    (folder / "live.yaml").write_text(text.replace("BASE_URL", url))
    return folder / "live.yaml"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MY_KEY", SECRET)
    write_tasks(tmp_path)
    return tmp_path


def events(folder, kind):
    with Store(folder / "runs.db", readonly=True) as store:
        return [d for _, k, d in store.events(store.experiment().id) if k == kind]


def comparisons(folder):
    with Store(folder / "runs.db", readonly=True) as store:
        return store.comparisons(store.experiment().id)


def test_a_batched_run_with_a_batched_judge_certifies_round_by_round_at_the_batch_price(
    folder, batches
):
    config = write_config(folder, batches, LLM_JUDGE.replace("BASE_URL", batches.base_url))
    outcome = run(config, concurrency=6)
    assert outcome.status == "certified" and outcome.result.best_name == "careful"
    # Every call the run paid went into a job once; jobs alternate generations and judge calls.
    assert (
        len(batches.submitted) == outcome.calls["generation_calls"] + outcome.calls["judge_calls"]
    )
    answers = [b for b in batches.submitted_bodies() if "[Answer A]" not in b]
    assert len(set(answers)) == len(answers) == outcome.calls["generation_calls"]
    kinds = [
        {"judge" if "[Answer A]" in b["messages"][0]["content"] else "answer" for b in bodies}
        for bodies in _job_bodies(batches)
    ]
    assert all(len(k) == 1 for k in kinds), "a job mixed answers and judge calls"
    assert kinds[0] == {"answer"} and {"judge"} in kinds
    # A round's generations (2 policies x at most 6 comparisons) go as one job, not one by one.
    assert max(len(ids) for ids in batches.jobs.values()) > 2
    recorded = events(folder, "batch_submitted")
    assert sorted(d["batch_id"] for d in recorded) == sorted(batches.jobs)
    # The cost is the batch price: half the listed one, on every paid call.
    stored = comparisons(folder)
    tokens_in = sum(c.input_tokens for c in stored)
    tokens_out = sum(c.output_tokens for c in stored)
    assert tokens_in > 0
    assert sum(c.cost_usd for c in stored) == pytest.approx(
        (tokens_in * 2.0 + tokens_out * 8.0) / 2 / 1e6
    )


def _job_bodies(server):
    """The bodies of each job, in order of creation."""
    bodies, start = [], 0
    for ids in server.jobs.values():
        bodies.append(server.submitted[start : start + len(ids)])
        start += len(ids)
    return bodies


def test_configured_batch_prices_are_billed_and_the_report_shows_batch_pricing(folder, batches):
    from llmpo.report import build_report, render_markdown

    config = write_config(folder, batches)
    text = config.read_text().replace(
        "{input: 2.0, output: 8.0}",
        "{input: 2.0, output: 8.0, batch_input: 0.5, batch_output: 1.0}",
    )
    config.write_text(text)
    run(config, concurrency=4)
    stored = comparisons(folder)
    expected = sum(c.input_tokens * 0.5 + c.output_tokens * 1.0 for c in stored) / 1e6
    assert sum(c.cost_usd for c in stored) == pytest.approx(expected)
    with Store(folder / "runs.db", readonly=True) as store:
        report = build_report(store, store.experiment().id)
    jobs = len(batches.jobs)
    assert (
        f"at batch pricing ({len(batches.submitted):,} requests in {jobs:,} batch jobs)"
        in render_markdown(report)
    )
    # Key hygiene: the key is in neither the store nor a job.
    assert SECRET.encode() not in (folder / "runs.db").read_bytes()
    assert all(SECRET not in json.dumps(body) for body in batches.submitted)


def test_failed_requests_of_a_partly_failed_job_go_into_the_next_job_once(folder, batches):
    batches.fail_first = 3  # the first three requests land in the first job's error file
    outcome = run(write_config(folder, batches), concurrency=4)
    assert outcome.status == "certified"
    counts = Counter(batches.submitted_bodies())
    first_job = batches.submitted_bodies()[: len(next(iter(batches.jobs.values())))]
    assert [counts[b] for b in first_job[:3]] == [2, 2, 2]  # failed, then answered
    assert all(n == 1 for body, n in counts.items() if body not in first_job[:3])


def test_a_request_the_provider_refuses_fails_the_run_with_its_error(folder, batches):
    batches.fail_first, batches.fail_status = 1, 400
    with pytest.raises(RunFailedError, match=r"failed \(HTTP 400\).*Fix the request"):
        run(write_config(folder, batches), concurrency=4)
    with Store(folder / "runs.db", readonly=True) as store:
        assert store.experiment().status == "failed"


def test_a_job_the_provider_rejects_fails_the_run_with_its_reasons(folder, batches):
    batches.reject = "model m1 does not support batches"
    with pytest.raises(RunFailedError, match=r"batch batch_1 failed: model m1 does not support"):
        run(write_config(folder, batches), concurrency=4)


def test_a_job_past_batch_timeout_fails_the_run_and_the_resume_collects_it(folder, batches):
    config = write_config(folder, batches)
    config.write_text(config.read_text().replace(BATCH, BATCH + ", batch_timeout: 0.5"))
    batches.hold = True
    with pytest.raises(RunFailedError, match="batch_timeout"):
        run(config, concurrency=4)
    submitted = len(batches.submitted)
    batches.hold = False
    outcome = run(config, concurrency=4)
    assert outcome.status == "certified"
    first = set(batches.submitted_bodies()[:submitted])
    assert all(body not in first for body in batches.submitted_bodies()[submitted:])


def test_a_run_killed_mid_batch_resumes_without_resubmitting_anything(folder, batches):
    config = write_config(folder, batches)
    batches.hold = True  # the first job stays in progress: killed after submission
    process = start_run(folder)
    try:
        wait_for(lambda: batches.polls >= 1, seconds=60)  # polled: submitted and recorded
        process.kill()
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    killed = len(batches.submitted)
    assert killed > 0 and batches.downloads == 0
    (recorded,) = events(folder, "batch_submitted")
    assert recorded["batch_id"] == next(iter(batches.jobs))
    batches.hold = False
    outcome = run(config, concurrency=4)
    assert outcome.status == "certified"
    # The killed job was polled and collected, not submitted again; nothing was paid twice.
    counts = Counter(batches.submitted_bodies())
    assert max(counts.values()) == 1
    assert len(batches.submitted) > killed  # the run went on with new jobs
    handed = {c for d in events(folder, "batch_collected") for c in d["custom_ids"]}
    assert {c for c, _ in recorded["requests"]} <= handed


@pytest.mark.slow  # a subprocess and its grace: ~9 s
def test_sigterm_stops_a_batched_run_within_the_grace_leaving_it_interrupted(folder, batches):
    write_config(folder, batches, extra="  timeout_seconds: 1\n")
    batches.hold = True
    process = start_run(folder)
    try:
        wait_for(lambda: batches.polls >= 1, seconds=60)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        assert time.monotonic() - started < 15
    finally:
        if process.poll() is None:
            process.kill()
    with Store(folder / "runs.db", readonly=True) as store:
        assert store.experiment().status == "interrupted"
    assert [d["batch_id"] for d in events(folder, "batch_submitted")] == list(batches.jobs)


def test_anthropic_message_batches_certify_and_retry_errored_requests(folder, batches):
    pytest.importorskip("anthropic")  # the `anthropic` extra
    batches.fail_first = 2
    outcome = run(write_config(folder, batches, backend="anthropic"), concurrency=4)
    assert outcome.status == "certified"
    assert all(job.startswith("msgbatch_") for job in batches.jobs)
    # The two errored requests went into a later job once more; every other call only once.
    paid = outcome.calls["generation_calls"] + outcome.calls["judge_calls"]
    assert len(batches.submitted) == paid + 2
    later = batches.submitted_bodies()[len(next(iter(batches.jobs.values()))) :]
    assert all(body in later for body in batches.submitted_bodies()[:2])
    stored = comparisons(folder)
    assert sum(c.cost_usd for c in stored) == pytest.approx(
        sum(c.input_tokens * 2.0 + c.output_tokens * 8.0 for c in stored) / 2 / 1e6
    )


def _judged(body) -> tuple[str, str, str]:
    """(task, answer shown first, answer shown second) of a judge request."""
    prompt = str(body["messages"][0]["content"])
    first = prompt.split("[Answer A]\n")[1].split("\n")[0]
    second = prompt.split("[Answer B]\n")[1].split("\n")[0]
    return prompt.split("[Answer A]")[0], first, second


def test_both_orders_of_a_round_go_in_one_judge_job_with_the_verdicts_of_each_order(
    folder, batches
):
    judge = LLM_JUDGE.replace("    type: llm\n", "    type: llm\n    order: both\n")
    config = write_config(folder, batches, judge.replace("BASE_URL", batches.base_url))
    outcome = run(config, concurrency=6)
    assert outcome.status == "certified" and outcome.result.best_name == "careful"
    stored = comparisons(folder)
    judged = [b for b in batches.submitted if "[Answer A]" in b["messages"][0]["content"]]
    # Two judge calls a comparison (those of the round the run certified in included).
    assert len(judged) == outcome.calls["judge_calls"] >= 2 * len(stored)
    # Two jobs a round: its answers, then its judge calls in both orders (not one job per order).
    jobs = _job_bodies(batches)
    kinds = [
        {"judge" if "[Answer A]" in b["messages"][0]["content"] else "answer" for b in job}
        for job in jobs
    ]
    assert kinds == [{"answer"}, {"judge"}] * (len(jobs) // 2) and len(jobs) >= 4
    for job in jobs[1::2]:
        asked = Counter(_judged(body) for body in job)
        # Each comparison's two orders are in the same job (equal answers: one request twice).
        assert all(asked[(task, second, first)] >= 1 for task, first, second in asked)
    # The verdicts are those of each order asked on its own: the server's reply to a's answer
    # shown first, to b's shown first, combined as order "both" does (docs/judges-llm.md).
    with Store(folder / "runs.db", readonly=True) as store:
        names = store.experiment().policies
        for c in stored:
            a, b = (
                store.cached_generation(names[p], c.task_id, r, key).text
                for p, r, key in zip(
                    (c.policy_a, c.policy_b),
                    c.raw["replicates"],
                    c.raw["request_keys"],
                    strict=True,
                )
            )
            ab, ba = (
                respond({"messages": [{"content": f"[Answer A]\n{x}\n[Answer B]\n{y}\n"}]})
                for x, y in ((a, b), (b, a))
            )
            assert c.raw["judge"] == {"ab": [ab], "ba": [ba]} and c.order == "both"
            expected = {("A", "B"): 1.0, ("B", "A"): 0.0}.get((ab, ba), 0.5)
            assert c.outcome == expected
    assert {c.outcome for c in stored} == {1.0, 0.5}  # careful wins, or both are exact: a tie


def declare_holdout(config) -> None:
    """Hold out a quarter of the 20 tasks (5) for evaluations; loose is today's policy."""
    config.write_text(config.read_text() + "baseline: loose\nholdout: {fraction: 0.25}\n")


def evaluate(*options: str) -> dict:
    """``llmpo evaluate runs.db OPTIONS --json`` in this process; its summary."""
    result = CliRunner().invoke(app, ["evaluate", "runs.db", *options, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def evaluation_events(folder, kind, evaluation=None):
    """The batch events of one evaluation (any evaluation when None)."""
    return [
        d
        for d in events(folder, kind)
        if d.get("evaluation") is not None and evaluation in (None, d["evaluation"])
    ]


def test_a_batched_evaluation_records_its_jobs_in_its_own_journal(folder, batches):
    from llmpo.report import build_report

    config = write_config(folder, batches, LLM_JUDGE.replace("BASE_URL", batches.base_url))
    declare_holdout(config)
    run(config, concurrency=4)
    run_jobs = list(batches.jobs)
    summary = evaluate("--comparisons", "8", "--concurrency", "4")
    assert summary["comparisons"] == 8
    jobs = [job for job in batches.jobs if job not in run_jobs]
    assert len(jobs) >= 2  # answers, then the judge's calls
    recorded = evaluation_events(folder, "batch_submitted", summary["evaluation_id"])
    assert [d["batch_id"] for d in recorded] == jobs
    assert [[c for c, _ in d["requests"]] for d in recorded] == [batches.jobs[j] for j in jobs]
    handed = {
        (d["batch_id"], c)
        for d in evaluation_events(folder, "batch_collected", summary["evaluation_id"])
        for c in d["custom_ids"]
    }
    assert handed == {(job, c) for job in jobs for c in batches.jobs[job]}
    # What it paid: every request of its jobs is a call it counts, each sent once.
    calls = summary["calls"]
    requests = sum(len(batches.jobs[job]) for job in jobs)
    assert (calls["batch_jobs"], calls["batch_requests"]) == (len(jobs), requests)
    assert requests == calls["generation_calls"] + calls["judge_calls"]
    answers = [b for b in batches.submitted_bodies() if "[Answer A]" not in b]
    assert max(Counter(answers).values()) == 1  # (equal answers make equal judge requests)
    # The run's events and report are the run's own jobs only.
    run_recorded = [d for d in events(folder, "batch_submitted") if "evaluation" not in d]
    assert [d["batch_id"] for d in run_recorded] == run_jobs
    with Store(folder / "runs.db", readonly=True) as store:
        assert build_report(store, store.experiment().id)["costs"]["batch_jobs"] == len(run_jobs)


def _kill_an_evaluation_at_its_held_job(folder, batches, before_jobs: int):
    """Start ``llmpo evaluate runs.db --comparisons 8 --concurrency 4`` as a process of its own,
    SIGKILL it once a job the server holds is submitted and recorded; the evaluation's recorded
    jobs, and its record."""
    command = ["evaluate", "runs.db", "--comparisons", "8", "--concurrency", "4"]
    process = subprocess.Popen(
        [sys.executable, "-m", "llmpo", *command],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(batches.jobs) >= before_jobs + 2, seconds=60)  # a held job
        time.sleep(0.5)  # recorded meanwhile; nothing else is asked while it is held
        recorded = evaluation_events(folder, "batch_submitted")
        assert [d["batch_id"] for d in recorded] == list(batches.jobs)[before_jobs:]
        process.kill()
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    with Store(folder / "runs.db", readonly=True) as store:
        (evaluation,) = store.evaluations(store.experiment().id)
    return recorded, evaluation


def _handed_out(folder, jobs) -> bool:
    """Whether every request of the recorded ``jobs`` was handed out to a call."""
    handed = {
        (d["batch_id"], c)
        for d in evaluation_events(folder, "batch_collected")
        for c in d["custom_ids"]
    }
    return {(d["batch_id"], c) for d in jobs for c, _ in d["requests"]} <= handed


def test_an_evaluation_killed_mid_batch_resumes_without_resubmitting_anything(folder, batches):
    config = write_config(folder, batches)
    declare_holdout(config)
    run(config, concurrency=4)
    before_jobs, before = len(batches.jobs), len(batches.submitted)
    # The evaluation's first request fails in its first job (its comparison lags behind the
    # others, which are stored); the jobs after that one stay in progress until released.
    batches.fail_first = before + 1
    batches.hold, batches.hold_after = True, before_jobs + 1
    killed, evaluation = _kill_an_evaluation_at_its_held_job(folder, batches, before_jobs)
    with Store(folder / "runs.db", readonly=True) as store:
        stored = len(store.evaluation_comparisons(evaluation.id))
    assert 0 < stored < 8  # killed with comparisons stored and others waiting on a held job
    batches.hold = False
    summary = evaluate("--resume")
    assert (summary["evaluation_id"], summary["comparisons"]) == (evaluation.id, 8)
    # The held job was polled and collected, not submitted again: the one request that failed
    # went in twice (failed, then answered), every other evaluation request once.
    bodies = batches.submitted_bodies()[before:]
    assert Counter(bodies) == Counter(set(bodies)) + Counter([bodies[0]])
    # Every request of the killed session's jobs was handed out to the comparison it was asked
    # for (the resume asked those comparisons again): none paid for nothing.
    assert _handed_out(folder, killed)
    with Store(folder / "runs.db", readonly=True) as store:
        assert len(store.evaluation_comparisons(evaluation.id)) == 8
        assert store.evaluations(store.experiment().id)[0].status == "done"


@pytest.mark.slow  # ~5 s: CI's batch group runs it
def test_an_evaluation_killed_with_its_answers_collected_but_not_judged_pays_nothing_twice(
    folder, batches
):
    config = write_config(folder, batches, LLM_JUDGE.replace("BASE_URL", batches.base_url))
    declare_holdout(config)
    run(config, concurrency=4)
    before_jobs, before = len(batches.jobs), len(batches.submitted)
    # The evaluation's answers job ends and is collected; its judge job stays in progress.
    batches.hold, batches.hold_after = True, before_jobs + 1
    killed, evaluation = _kill_an_evaluation_at_its_held_job(folder, batches, before_jobs)
    with Store(folder / "runs.db", readonly=True) as store:
        assert store.evaluation_comparisons(evaluation.id) == []  # nothing stored yet
    # The answers job was handed out (its answers are in the cache), the judge job was not.
    assert len(killed) == 2 and _handed_out(folder, killed[:1])
    assert not _handed_out(folder, killed[1:])
    batches.hold = False
    summary = evaluate("--resume")
    assert (summary["evaluation_id"], summary["comparisons"]) == (evaluation.id, 8)
    # Each call was sent once: the answers collected before the kill came from the cache, the
    # held judge job was collected, not submitted again.
    bodies = batches.submitted_bodies()[before:]
    answers = [b for b in bodies if "[Answer A]" not in b]
    assert len(answers) == len(set(answers)) == 16  # two answers for each of 8 comparisons
    calls = summary["calls"]
    assert len(bodies) - len(answers) == calls["judge_calls"] == 8  # one a comparison
    assert calls["batch_requests"] == len(bodies)
    assert _handed_out(folder, killed)


def test_fingerprints_tell_requests_apart():
    from llmpo.llm.backends import GenerationRequest

    one = GenerationRequest((("user", "hi"),), "m1", seed=1)
    assert fingerprint("x", one) == fingerprint(
        "x", GenerationRequest((("user", "hi"),), "m1", seed=1)
    )
    assert fingerprint("x", one) != fingerprint(
        "x", GenerationRequest((("user", "hi"),), "m1", seed=2)
    )
    assert fingerprint("x", one) != fingerprint("y", one)


class MemoryProvider:
    """A batch provider in memory: a job ends once its id is in ``done``; each request is
    answered "re: " + its last message."""

    label = name = "memory"

    def __init__(self):
        self.jobs = {}
        self.done = set()

    async def submit(self, requests):
        job_id = f"job{len(self.jobs) + 1}"
        self.jobs[job_id] = list(requests)
        return job_id

    async def ended(self, job_id):
        return job_id in self.done

    async def results(self, job_id):
        from llmpo.llm.backends import Generation

        return {c: Generation(f"re: {r.messages[-1][1]}", 3, 2, 0.0) for c, r in self.jobs[job_id]}

    async def aclose(self):
        pass

    def scrub(self, text):
        return text


class MemoryStore:
    def __init__(self):
        self.rows = []

    def add_event(self, experiment_id, kind, detail):
        self.rows.append(("t", kind, json.loads(json.dumps(detail))))

    def events(self, experiment_id):
        return list(self.rows)


def _backend(provider, store, max_retries=2):
    from llmpo.llm.batch import BatchBackend, BatchJournal, BatchSettings

    settings = BatchSettings(0.01, 0.02, 5.0, max_retries)
    return BatchBackend(provider, settings, BatchJournal(store, 1))


def _request(text):
    from llmpo.llm.backends import GenerationRequest

    return GenerationRequest((("user", text),), "m1", seed=len(text))


async def _ending_jobs(provider, coroutine):
    """Await ``coroutine`` while every job of ``provider`` ends as soon as it is submitted."""
    import asyncio

    async def end_all():
        while True:
            provider.done.update(provider.jobs)
            await asyncio.sleep(0.01)

    helper = asyncio.create_task(end_all())
    try:
        return await coroutine
    finally:
        helper.cancel()


def test_calls_made_together_go_as_one_job_and_a_resume_adopts_its_requests_late():
    import asyncio

    from llmpo.llm.batch import BatchJournal

    store, provider = MemoryStore(), MemoryProvider()

    async def killed_session():
        backend = _backend(provider, store)
        calls = [asyncio.create_task(backend.complete(_request(t), 1.0)) for t in "abc"]
        await asyncio.sleep(0.5)  # submitted and polled, never ended: the session stops
        assert list(provider.jobs) == ["job1"] and len(provider.jobs["job1"]) == 3
        for call in calls:
            call.cancel()
        await backend.aclose()

    async def resumed_session():
        backend = _backend(provider, store)
        early = await backend.complete(_request("a"), 1.0)
        late = await backend.complete(_request("c"), 1.0)  # after job1 was collected
        fresh = await backend.complete(_request("d"), 1.0)  # not in job1: a new job
        await backend.aclose()
        return early, late, fresh

    asyncio.run(killed_session())
    early, late, fresh = asyncio.run(_ending_jobs(provider, resumed_session()))
    assert (early.text, late.text, fresh.text) == ("re: a", "re: c", "re: d")
    assert early.batch and late.batch and fresh.batch
    # a and c came from job1, never submitted again; only d went into a new job.
    assert [[r.messages[-1][1] for _, r in job] for job in provider.jobs.values()] == [
        ["a", "b", "c"],
        ["d"],
    ]
    handed = [d["custom_ids"] for _, kind, d in store.rows if kind == "batch_collected"]
    assert [len(h) for h in handed] == [1, 1, 1]
    (still_open,) = BatchJournal(store, 1).open_jobs("memory").values()
    assert len(still_open) == 1  # b: never asked again, left for a later resume


def test_a_request_that_keeps_failing_gives_up_after_max_retries():
    import asyncio

    from llmpo.errors import BackendError
    from llmpo.llm.batch import RequestFailure

    class AlwaysFailing(MemoryProvider):
        async def results(self, job_id):
            return {c: RequestFailure(503, "unavailable") for c, _ in self.jobs[job_id]}

    provider = AlwaysFailing()
    backend = _backend(provider, MemoryStore(), max_retries=2)

    async def session():
        try:
            with pytest.raises(BackendError, match=r"HTTP 503.*gave up after 3 batches"):
                await backend.complete(_request("x"), 1.0)
        finally:
            await backend.aclose()

    asyncio.run(_ending_jobs(provider, session()))
    assert len(provider.jobs) == 3  # the first job and two retries
