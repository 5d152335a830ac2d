"""HTTP calls in worker processes: the same results, faults and secrecy as in-process calls."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from llmpo.config import BackendConfig
from llmpo.llm.backends import (
    BackendError,
    GenerationRequest,
    OpenAIBackend,
    RetryPolicy,
    TransientBackendError,
    call_with_retries,
)
from llmpo.llm.worker import ProcessBackend
from llmpo.runtime.setup import start_experiment
from llmpo.store import Store
from tests.llm.conftest import SECRET

REQUEST = GenerationRequest((("user", "What is 1 + 2?"),), "m1", temperature=0.0, seed=3)
#: The test server's replies to REQUEST (it answers "about 4" to some requests without a system
#: prompt; which ones is a function of the request).
ANSWERS = ("3", "about 4")
FAST = RetryPolicy(timeout_seconds=0.5, max_retries=3, backoff_seconds=0.001)


def with_workers(server, work, processes=1, api_key_env=None):
    """Run ``work(backend)`` on a started ProcessBackend (every call made in a worker)."""

    async def run():
        config = BackendConfig(
            type="openai", model="m1", base_url=server.base_url, api_key_env=api_key_env
        )
        backend = ProcessBackend(config, processes)
        try:
            await backend.start()
            return await work(backend)
        finally:
            await backend.aclose()

    return asyncio.run(run())


def test_a_worker_answers_exactly_as_an_in_process_call(server):
    async def both(backend):
        in_process = OpenAIBackend(backend.config)
        try:
            return await backend.complete(REQUEST, 5.0), await in_process.complete(REQUEST, 5.0)
        finally:
            await in_process.aclose()

    from_worker, from_here = with_workers(server, both)
    assert (from_worker.text, from_worker.input_tokens, from_worker.output_tokens) == (
        from_here.text,
        from_here.input_tokens,
        from_here.output_tokens,
    )
    assert server.bodies[0] == server.bodies[1]  # the same request on the wire


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "empty", "timeout"])
def test_transient_faults_cross_the_process_boundary_and_are_retried(server, fault):
    server.hang_seconds = 2.0
    server.faults.append(fault)

    async def work(backend):
        return await call_with_retries(backend, REQUEST, FAST, np.random.default_rng(0))

    generation = with_workers(server, work)
    assert generation.text in ANSWERS
    assert server.faults_served == [fault]
    assert generation.input_tokens and generation.output_tokens == 3


def test_retry_after_crosses_the_process_boundary(server):
    server.retry_after = "0.7"
    server.faults.append("429")

    async def work(backend):
        with pytest.raises(TransientBackendError) as error:
            await backend.complete(REQUEST, 5.0)
        started = time.monotonic()
        await call_with_retries(backend, REQUEST, FAST, np.random.default_rng(0))
        return error.value.retry_after, time.monotonic() - started

    server.faults.append("429")
    retry_after, seconds = with_workers(server, work)
    assert retry_after == 0.7
    assert seconds >= 0.7  # the retry waited what the server asked


def test_permanent_errors_come_back_as_such_without_the_key(server, monkeypatch, capfd):
    monkeypatch.setenv("MY_KEY", SECRET)
    server.faults.extend(["401", "401"])

    async def work(backend):
        with pytest.raises(BackendError) as error:
            await call_with_retries(backend, REQUEST, FAST, np.random.default_rng(0))
        return error.value

    error = with_workers(server, work, api_key_env="MY_KEY")
    assert type(error) is BackendError and "HTTP 401" in str(error)
    assert SECRET not in str(error)
    assert server.faults_served == ["401"]  # not retried
    assert server.authorizations == [f"Bearer {SECRET}"]  # the worker read the key itself
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err


def test_a_timed_out_call_is_cancelled_in_the_worker_and_the_next_calls_go_on(server):
    server.hang_seconds = 1.0
    server.faults.extend(["timeout"] * 2)
    policy = RetryPolicy(timeout_seconds=0.3, max_retries=1, backoff_seconds=0.001)

    async def work(backend):
        started = time.monotonic()
        with pytest.raises(BackendError, match="gave up after 2 attempts"):
            await call_with_retries(backend, REQUEST, policy, np.random.default_rng(0))
        seconds = time.monotonic() - started
        pending = [len(w.pending) for w in backend._workers]
        generation = await call_with_retries(backend, REQUEST, FAST, np.random.default_rng(0))
        return seconds, pending, generation

    seconds, pending, generation = with_workers(server, work)
    assert seconds < 1.0 and pending == [0]
    assert generation.text in ANSWERS


def test_calls_are_spread_over_the_workers(server):
    server.latency = 0.3

    async def work(backend):
        await asyncio.gather(*(backend.complete(REQUEST, 5.0) for _ in range(40)))
        return backend.worker_calls, len(backend._ready)

    calls, ready = with_workers(server, work, processes=2)
    assert (calls, ready) == (40, 2)
    assert server.max_in_flight >= 30  # 40 calls in flight through two pipes


def test_a_worker_that_dies_fails_its_calls_with_a_clear_error(server):
    server.latency = 2.0

    async def work(backend):
        call = asyncio.create_task(backend.complete(REQUEST, 5.0))
        await asyncio.sleep(0.3)
        backend._workers[0].process.kill()
        with pytest.raises(BackendError, match="worker process making HTTP calls exited"):
            await call
        with pytest.raises(BackendError, match="exited"):
            await backend.complete(REQUEST, 5.0)

    with_workers(server, work)


def test_an_unreadable_reply_fails_the_calls_and_stops_the_worker(server):
    server.latency = 2.0

    async def work(backend):
        call = asyncio.create_task(backend.complete(REQUEST, 5.0))
        await asyncio.sleep(0.3)
        worker = backend._workers[0]
        worker.process.stdout.feed_data(b"\x00\x00\x00\x03xyz")  # as if it wrote garbage
        with pytest.raises(BackendError, match="sent an unreadable reply"):
            await call
        return await worker.process.wait()

    assert with_workers(server, work) == -signal.SIGKILL


def test_a_worker_ignores_ctrl_c_and_the_run_decides(server):
    async def work(backend):
        os.kill(backend._workers[0].process.pid, signal.SIGINT)  # as a terminal's Ctrl-C
        await asyncio.sleep(0.3)
        return await backend.complete(REQUEST, 5.0)

    assert with_workers(server, work).text in ANSWERS


def test_a_worker_ends_when_its_parent_dies(server, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os
            from llmpo.config import BackendConfig
            from llmpo.llm.worker import ProcessBackend

            async def main():
                backend = ProcessBackend(
                    BackendConfig(type="openai", model="m1", base_url={server.base_url!r}), 1
                )
                await backend.start()
                print(backend._workers[0].process.pid, flush=True)
                os._exit(0)  # no clean-up: killed, in effect

            asyncio.run(main())
            """
        )
    )
    parent = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    worker_pid = int(parent.stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{worker_pid}"):
        with open(f"/proc/{worker_pid}/stat") as stat:
            state = stat.read().split(")")[1].split()[0]
        if state == "Z":
            break  # ended, waiting for a parent to reap it
        time.sleep(0.1)
    else:
        assert not os.path.exists(f"/proc/{worker_pid}"), "the worker outlived its parent"


def test_calls_before_the_workers_are_ready_are_made_in_process(server):
    async def work():
        backend = ProcessBackend(
            BackendConfig(type="openai", model="m1", base_url=server.base_url), 1
        )
        try:
            first = await backend.complete(REQUEST, 5.0)  # the worker is still importing
            await backend.start()
            second = await backend.complete(REQUEST, 5.0)
            return first, second, backend.worker_calls
        finally:
            await backend.aclose()

    first, second, worker_calls = asyncio.run(work())
    assert first.text == second.text and first.text in ANSWERS and worker_calls == 1


def test_a_live_run_at_high_concurrency_uses_a_worker_and_loses_nothing(project, server, capfd):
    from llmpo.config import load_config
    from llmpo.runtime.run import Runner

    server.latency = 0.2
    server.responder = lambda body: "0"  # every comparison a tie: the budget ends the run
    made_in_workers = []
    close = ProcessBackend.aclose

    async def counting_close(backend):
        made_in_workers.append(backend.worker_calls)
        await close(backend)

    # 480 comparisons, 32 in flight, 0.2 s each: 3 s of work; the worker is up after ~0.5 s.
    config = load_config(project / "live.yaml", {"max_comparisons": 480})
    assert config.environment.client_processes == "auto"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ProcessBackend, "aclose", counting_close)
        with Store(config.store, writer=True) as store:
            experiment_id = start_experiment(config, store)
            outcome = Runner(store, experiment_id, concurrency=32).run()
            stored = store.comparisons(experiment_id)
            generations = store.generation_count()
    assert outcome.status == "max_comparisons" and len(stored) == outcome.new_comparisons == 480
    assert made_in_workers and made_in_workers[0] > 0
    assert generations >= 2 * 480 and server.served >= 2 * 480
    for path in project.iterdir():
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_ctrl_c_in_a_terminal_stops_the_run_cleanly_and_its_worker_with_it(project, server):
    # Ctrl-C sends SIGINT to the whole foreground process group: the run and its worker.
    server.latency = 0.2
    server.responder = lambda body: "0"  # ties: the run would go on to its budget
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmpo",
            "run",
            "live.yaml",
            "--concurrency",
            "32",
            "--max-comparisons",
            "100000",
        ],
        cwd=project,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while time.monotonic() < deadline and not (workers and server.served > 400):
        time.sleep(0.2)
        workers = [pid for pid in _children(run.pid) if pid != run.pid]
    assert workers, "no worker process started"
    os.killpg(run.pid, signal.SIGINT)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "Interrupted after" in stdout and "Resume with: llmpo resume" in stdout
    assert all(_gone(pid) for pid in workers)
    with Store(project / "runs.db", readonly=True) as store:
        record = store.experiment()
        stored = store.comparison_count(record.id)
    assert record.status == "interrupted" and stored > 100
    assert SECRET not in stdout + stderr
