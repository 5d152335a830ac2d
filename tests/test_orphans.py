"""No process outlives a SIGKILLed parent: simulation pool workers, live-run HTTP workers."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def kill_and_check(parent: subprocess.Popen, orphans: list[int]) -> None:
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_until(lambda: not any(alive(pid) for pid in orphans), 3.0), (
            f"still running 3 s after the parent was killed: {orphans}"
        )
    finally:
        for pid in orphans:  # never leave them behind, even when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_simulation_workers_end_with_a_killed_parent(tmp_path):
    instance = tmp_path / "near-tie.json"
    win_prob = [[0.5, 0.6, 0.6], [0.4, 0.5, 0.5001], [0.4, 0.4999, 0.5]]
    instance.write_text(json.dumps({"policies": ["a", "b", "c"], "win_prob": win_prob}))
    parent = subprocess.Popen(
        [
            *(sys.executable, "-m", "llmpo", "simulate", str(instance)),
            *("--strategy", "uniform", "--reps", "400", "--delta", "0.001", "--workers", "2"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: len(children(parent.pid)) >= 2, 30.0), "no pool workers started"
    kill_and_check(parent, children(parent.pid))


def test_an_http_worker_ends_with_a_killed_parent(tmp_path):
    script = textwrap.dedent(
        """
        import asyncio, os, sys, time
        from llmpo.config import BackendConfig
        from llmpo.llm.backends import GenerationRequest
        from llmpo.llm.worker import ProcessBackend

        async def hang(reader, writer):
            await asyncio.sleep(600)

        async def main():
            listener = await asyncio.start_server(hang, "127.0.0.1", 0)
            port = listener.sockets[0].getsockname()[1]
            config = BackendConfig(type="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1")
            backend = ProcessBackend(config, 1)
            await backend.start()
            request = GenerationRequest((("user", "hello"),), "m")
            calls = [asyncio.create_task(backend.complete(request, 600.0)) for _ in range(8)]
            await asyncio.sleep(1.0)  # the calls are in flight in the worker
            # A process that inherited the worker's pipe keeps it open after we die (as pool
            # workers or a shell would): the worker sees no end of input.
            holder = os.fork()
            if holder == 0:
                time.sleep(60)
                os._exit(0)
            print(holder, flush=True)
            await asyncio.gather(*calls)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = parent.stdout.readline()  # the worker is up, with calls in flight
    assert line.strip().isdigit(), parent.stderr.read()
    holder = int(line)
    workers = [pid for pid in children(parent.pid) if pid != holder]
    try:
        assert workers
        kill_and_check(parent, workers)
    finally:
        os.kill(holder, signal.SIGKILL)
