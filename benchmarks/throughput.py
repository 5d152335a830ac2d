"""Benchmark of the concurrent live runner (issue 5): comparisons per second against a local
OpenAI-compatible server, as a fraction of the ideal.

Run on demand (not part of the test suite; needs the ``dev`` extra for the server)::

    .venv/bin/python benchmarks/throughput.py --latency 0.2 --seconds 4

The server (``tests/llm/server.py``, aiohttp on 127.0.0.1, in its own process; driven through
the real ``openai`` client) answers every chat completion after ``--latency`` seconds. Two
policies answer the same task concurrently and the ``reference`` judge needs no call, so one
comparison chains one round of calls: the ideal rate is concurrency ÷ latency. Every answer is a
tie, so each run goes to its comparison budget (≈ ``--seconds`` of ideal work). Target: ≥ 90% of
the ideal at concurrency 64.

Measured on 2 idle CPU cores (load average 0.3), ``--latency 0.2 --seconds 4``, twice: 96%
of the ideal at concurrency 1, 92–93% at 8, 79–80% at 64 (steady state 84–85%; ``--seconds 10``
at 64: 79%, steady 81%); client CPU 6.6, 1.7 and 1.65 ms per comparison. The earlier figures
below were taken on the same cores shared with other work.

Besides the wall rate, each row reports the client's CPU time per comparison (``process_time``
of this process), the CPU the client would need to run at the ideal rate, the server's CPU per
comparison (``/proc``) and the load average: on a shared machine the wall rate measures the
contention as much as the code, the CPU figures do not.

Measured on 2 CPU cores shared with other work, ``--latency 0.2 --seconds 4``, before (commit
703997b) and after this change, run back to back twice each at a load average of 7.8–8.2:

=========== ======================================== ========================================
concurrency before: fraction of ideal, client CPU      after: fraction of ideal, client CPU
=========== ======================================== ========================================
1           81–83%, 17.5–17.7 ms per comparison      91–92%, 6.5–6.6 ms per comparison
8           74–76%, 4.6–5.1 ms                       83–87%, 1.9–2.0 ms
64          33–34%, 3.7–3.9 ms                       50–65%, 1.7–1.9 ms
=========== ======================================== ========================================

(At concurrency 1 the CPU per comparison includes the start of the run, amortised over 20
comparisons.) The same pairs of runs at a load average of 2.6–4.4: before 88%, 82–84%, 47–49%;
after 91–94%, 87–88%, 67–69% (1.7–1.8 ms of client CPU per comparison at 64). At 13–17, with the
backend change alone: 21–26% → 40–46% at 64. The wall fraction follows the machine's load; the CPU
per comparison does not.

The target (≥ 90% at 64) is **not** met. The server is not the bottleneck (0.3 ms of CPU per
comparison for its two requests; 0.5 before), nor the network (a bare ``aiohttp`` round trip takes
202–207 ms). The client is: at the ideal 320 comparisons/s it needs ~0.55–0.6 of a core (1.2
before), and with 64 comparisons in flight and a fixed latency the results arrive in bursts that
one event loop works through serially (64 × 1.75 ms ≈ 110 ms of work per 200 ms cycle), so a
comparison takes ~250 ms on average at 64 against ~212 ms at 1. Spreading the first 64 dispatches
over one latency (tried, not kept) gained only 3–8 points: the bursts re-form. By that account,
90% needs ≲ 0.7 ms of client CPU per comparison, while the SDK alone takes ~1.5 ms (two requests).

Where the client's CPU goes at 64 (``py-spy``, share of the busy event loop): the ``openai`` SDK
with its ``httpx2`` and ``aiohttp`` layers 75% (~0.75 ms per request), the runner, environment and
retry loop 10%, the store 6% (one SQLite commit per comparison, WAL with ``synchronous=NORMAL``, no
fsync; the cache look-ups), prompt rendering and cache keys 3%, the experiment's ask/tell and
stopping check 2%, the judge < 1%. ``uvloop`` made no measurable difference (the cost is in the
SDK's Python code, not in the event loop), so it is not used.

What changed: the backend used eight SDK clients per endpoint on the default ``httpx`` transport,
whose connection pool scans all its connections (a ``getpeername`` each) for every request, and the
typed ``chat.completions.create``, whose parameter transform and response models cost ~0.5 ms per
call. It now uses one client per endpoint on the SDK's own ``aiohttp`` transport (when ``aiohttp``
is installed) with no pool cap of its own — the runner bounds the calls in flight — and posts the
plain JSON body through the same client (auth, headers, status errors and timeouts unchanged):
~0.75 ms of CPU per request instead of ~1.9 ms, and half the server's CPU (httpx sent each request
in two writes, headers then body). The store commits a comparison's cached answers in the
comparison's own transaction instead of one commit each (three commits per comparison became one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from llmpo.config import parse_config
from llmpo.llm.runner import AsyncRunner
from llmpo.runner import start_experiment
from llmpo.store import Store


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the HTTP workers, which
    a run waits for; the server runs on, so it is not counted)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def load_average() -> str:
    """The 1-minute load average and the number of CPUs (the machine may be shared)."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def steady_rate(finished_at: list[float]) -> float:
    """Comparisons per second between the 10th and the 90th percentile of the finishing times.

    The whole-run rate also counts the start (connections opened, the first round of calls in
    flight before any result) and the drain (the last round finishing with fewer calls in
    flight): a fixed cost of about one latency per run, which the steady rate leaves out.
    """
    times = sorted(finished_at)
    first, last = len(times) // 10, len(times) * 9 // 10
    return (last - first) / (times[last] - times[first])


def measure(
    base_url: str, concurrency: int, comparisons: int, client_processes: str
) -> tuple[float, float, float]:
    """Comparisons per second of one run to a budget of ``comparisons`` (whole run, and steady
    state: :func:`steady_rate`), and client CPU seconds per comparison."""
    with tempfile.TemporaryDirectory() as folder:
        tasks = Path(folder) / "tasks.jsonl"
        tasks.write_text(
            "".join(
                json.dumps({"id": f"t{k}", "prompt": "?", "reference": "1"}) + "\n"
                for k in range(50)
            )
        )
        backend = {"type": "openai", "base_url": base_url, "model": "m"}
        config = parse_config(
            {
                "seed": 1,
                "max_comparisons": comparisons,
                "environment": {
                    "type": "llm",
                    "tasks": str(tasks),
                    "judge": {"type": "reference"},
                    "client_processes": client_processes,
                },
                "policies": [
                    {"name": "a", "backend": backend, "temperature": 0.0},
                    {"name": "b", "backend": backend, "temperature": 1.0},
                ],
                "store": str(Path(folder) / "runs.db"),
            }
        )
        with Store(config.store, writer=True) as store:
            experiment_id = start_experiment(config, store)
            started, cpu = time.monotonic(), client_cpu_seconds()
            outcome = AsyncRunner(store, experiment_id, concurrency).run()
            seconds, cpu = time.monotonic() - started, client_cpu_seconds() - cpu
            finished = [c.finished_at for c in store.comparisons(experiment_id) if c.finished_at]
    assert outcome.new_comparisons == comparisons
    return comparisons / seconds, steady_rate(finished), cpu / comparisons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--seconds", type=float, default=4.0, help="ideal seconds per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--client-processes", nargs="+", default=["0", "auto"])
    arguments = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.llm.server", "--latency", str(arguments.latency)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
        print(
            "| concurrency | client processes | comparisons | comparisons/s | ideal/s "
            "| fraction of ideal | steady fraction of ideal | rate ÷ in-process rate "
            "| client CPU ms/comparison | server CPU ms/comparison | load average |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for concurrency in arguments.concurrency:
            ideal = concurrency / arguments.latency
            comparisons = max(concurrency, round(ideal * arguments.seconds))
            baseline = None
            for processes in arguments.client_processes:
                load = load_average()
                server_cpu = process_cpu_seconds(server.pid)
                rate, steady, client_cpu = measure(base_url, concurrency, comparisons, processes)
                server_cpu = (process_cpu_seconds(server.pid) - server_cpu) / comparisons
                if processes == "0":
                    baseline = rate
                ratio = f"{rate / baseline:.2f}" if baseline else "–"
                print(
                    f"| {concurrency} | {processes} | {comparisons} | {rate:.1f} | {ideal:.1f} | "
                    f"{rate / ideal:.1%} | {steady / ideal:.1%} | {ratio} | "
                    f"{client_cpu * 1e3:.2f} | {server_cpu * 1e3:.2f} | {load} |",
                    flush=True,
                )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)


if __name__ == "__main__":
    main()
