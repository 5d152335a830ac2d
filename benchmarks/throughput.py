"""Benchmark of the concurrent live runner (issue 5): comparisons per second against a local
OpenAI-compatible server, as a fraction of the ideal.

Run on demand (not part of the test suite; needs the ``dev`` extra for the server)::

    .venv/bin/python benchmarks/throughput.py            # --latency 0.2 --seconds 15

The server (``tests/llm/server.py``, aiohttp on 127.0.0.1, in its own process; driven through
the real ``openai`` client) answers every chat completion after ``--latency`` seconds. Two
policies answer the same task concurrently and the ``reference`` judge needs no call, so one
comparison chains one round of calls: the ideal rate is concurrency ÷ latency. Every answer is a
tie, so each run goes to its comparison budget (``--seconds`` of ideal work). Target: ≥ 90% of
the ideal at concurrency 64.

Each concurrency is run twice, with the HTTP calls in the runner's process
(``client_processes: 0``, the baseline) and with the default (``auto``: a worker process from 16
comparisons in flight, :mod:`llmpo.llm.worker`); each row gives the whole-run rate, the steady
rate (:func:`steady_rate`), the ratio to the baseline's whole-run rate in the same run, the
client's CPU per comparison (this process and its ended children: the workers) and the server's.

Measured on 2 idle CPU cores (load average ≤ 0.8), ``--latency 0.2``, whole-run fraction of the
ideal (steady state in brackets); the ``--seconds 15`` columns are three runs of the benchmark at
concurrency 8 and 64, two at 1, one at 16 and 32:

=========== ============================ ============================ ===========================
concurrency ``--seconds 15``: in-process  ``--seconds 15``: auto        ``--seconds 4``
=========== ============================ ============================ ===========================
1           97.0–97.1% (97.3–97.4%)      96.7–97.2% (96.8–97.4%)      –
8           92.9–93.8% (92.9–94.3%)      92.5–93.8% (93.0–94.3%)      –
16          89.7% (90.3%)                94.9% (96.6%)                –
32          88.7% (89.4%)                93.2% (96.7%)                –
64          84.7–88.0% (86.7–89.6%)      **91.9–92.7% (95.7–96.6%)**  80.4% (84.9%), auto 82.3%
                                                                      (92.8%)
=========== ============================ ============================ ===========================

At 64 the default's rate is 1.04–1.09 × the in-process rate measured in the same run; the client
then spends 0.7 ms of CPU per comparison in the runner and 1.5–1.6 ms in the worker (its start
included), against 1.75–1.8 ms all in the runner.

Why a worker process. In-process, ~1.5 ms of the client's CPU per comparison goes to the
``openai`` SDK's two requests (request building in its ``httpx2`` models, its ``aiohttp``
transport, parsing). Results that arrive together are worked through one by one in the one event
loop, and a batch of results sends the next batch of requests only once it is all done, so the
clumps persist from one round to the next: at 64 a comparison takes ~225 ms instead of 200. With
the SDK in a worker the runner's loop spends ~0.7 ms per comparison (pickled frames over a pipe,
the store, ask/tell) and the worker's ~1.5 ms runs on the other core, so neither clumps much:
~208 ms a comparison in steady state. Two workers (``--client-processes 2``) reached 95–97% steady
but no better whole-run rate. ``uvloop``, when installed, made the clumps worse (in-process at 64:
81.9–82.7% of the ideal against 84.7–88.0%; with the worker no change), so the runner uses
asyncio's own loop.

The start costs ~0.5 s once per run: the worker is a fresh Python that imports the SDK (~0.5 s;
the calls are made in-process meanwhile), then opens its own connections. That is 10% of a 4 s
run (1,280 comparisons at 64) and 3% of a 15 s one, hence the default length; the steady rate
leaves it out. At concurrency ≤ 8 the loop is not busy enough for the clumps to matter, so
``auto`` keeps the calls in-process there. On a machine shared with other work the fraction drops
with the load (earlier in-process measurements: 67–69% at load 3–4, 50–65% at load 8, at 64).
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
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import start_experiment
from llmpo.store import Store


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of its children that have ended (the HTTP workers,
    which a run waits for; the server runs on, so it is not counted)."""
    times = os.times()
    return times.user + times.system, times.children_user + times.children_system


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
) -> tuple[float, float, float, float]:
    """Comparisons per second of one run to a budget of ``comparisons`` (whole run, and steady
    state: :func:`steady_rate`), and client CPU seconds per comparison (all, in workers)."""
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
            started, (runner_cpu, worker_cpu) = time.monotonic(), client_cpu_seconds()
            outcome = Runner(store, experiment_id, concurrency=concurrency).run()
            seconds = time.monotonic() - started
            runner_cpu, worker_cpu = (
                end - start
                for end, start in zip(client_cpu_seconds(), (runner_cpu, worker_cpu), strict=True)
            )
            finished = [c.finished_at for c in store.comparisons(experiment_id) if c.finished_at]
    assert outcome.new_comparisons == comparisons
    return (
        comparisons / seconds,
        steady_rate(finished),
        (runner_cpu + worker_cpu) / comparisons,
        worker_cpu / comparisons,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--seconds", type=float, default=15.0, help="ideal seconds per run")
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
            "| client CPU ms/comparison | of which in workers | server CPU ms/comparison "
            "| load average |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for concurrency in arguments.concurrency:
            ideal = concurrency / arguments.latency
            comparisons = max(concurrency, round(ideal * arguments.seconds))
            baseline = None
            for processes in arguments.client_processes:
                load = load_average()
                server_cpu = process_cpu_seconds(server.pid)
                rate, steady, client_cpu, in_workers = measure(
                    base_url, concurrency, comparisons, processes
                )
                server_cpu = (process_cpu_seconds(server.pid) - server_cpu) / comparisons
                if processes == "0":
                    baseline = rate
                ratio = f"{rate / baseline:.2f}" if baseline else "–"
                print(
                    f"| {concurrency} | {processes} | {comparisons} | {rate:.1f} | {ideal:.1f} | "
                    f"{rate / ideal:.1%} | {steady / ideal:.1%} | {ratio} | "
                    f"{client_cpu * 1e3:.2f} | {in_workers * 1e3:.2f} | "
                    f"{server_cpu * 1e3:.2f} | {load} |",
                    flush=True,
                )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)


if __name__ == "__main__":
    main()
