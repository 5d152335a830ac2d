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

Measured on 2 CPU cores shared with other jobs (``--latency 0.2 --seconds 4``): at load average
~7, 89% at concurrency 1, 82% at 8, 43% at 64; earlier at load 3.5–4.5, 94%, 85%, 51% (with the
clients not yet taken in turn, which alone gained 6–7 points at 64 in alternated runs). At 64
the client is CPU-starved: 128 calls in flight need 640 requests a second, the client spends
~1.35 ms of CPU on each (measured at load ~7: 3.4 s of CPU for 2,560 requests in 9.4 s of wall
time, i.e. the other jobs left it about a third of a core; the server process used 0.6 s). The
runner itself (asking, telling, SQLite) is under 5% of that CPU; the rest is the ``openai``
SDK's request path and its HTTP stack. Done: the SDK's generic ``client.post`` instead of
``chat.completions.create`` (which transforms typed parameters and replies, ~2 ms a call), calls
spread in turn over up to 8 clients made on demand (one per 16 calls in flight, so no connection
pool grows large), uvloop when installed. Not reached: the 90% target at 64 on this shared
machine.
"""

from __future__ import annotations

import argparse
import json
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


def measure(base_url: str, concurrency: int, comparisons: int) -> float:
    """Comparisons per second of one run to a budget of ``comparisons``."""
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
                "environment": {"type": "llm", "tasks": str(tasks), "judge": {"type": "reference"}},
                "policies": [
                    {"name": "a", "backend": backend, "temperature": 0.0},
                    {"name": "b", "backend": backend, "temperature": 1.0},
                ],
                "store": str(Path(folder) / "runs.db"),
            }
        )
        with Store(config.store, writer=True) as store:
            experiment_id = start_experiment(config, store)
            started = time.monotonic()
            outcome = AsyncRunner(store, experiment_id, concurrency).run()
            seconds = time.monotonic() - started
    assert outcome.new_comparisons == comparisons
    return comparisons / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--seconds", type=float, default=4.0, help="ideal seconds per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
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
        print("| concurrency | comparisons | comparisons/s | ideal/s | fraction of ideal |")
        print("|---:|---:|---:|---:|---:|")
        for concurrency in arguments.concurrency:
            ideal = concurrency / arguments.latency
            comparisons = max(concurrency, round(ideal * arguments.seconds))
            rate = measure(base_url, concurrency, comparisons)
            print(
                f"| {concurrency} | {comparisons} | {rate:.1f} | {ideal:.1f} | "
                f"{rate / ideal:.1%} |",
                flush=True,
            )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)


if __name__ == "__main__":
    main()
