"""Benchmark: 50 concurrent judges on ``llmpo serve``, each posting verdicts as fast as the app
answers (issue 19, scale).

Run on demand (not part of the test suite; needs the ``human`` and ``dev`` extras)::

    .venv/bin/python benchmarks/serve_load.py                  # --judges 50 --seconds 30

The script writes a human-judged experiment in a temporary folder (3 policies answering arithmetic
through the local OpenAI-compatible test server, ``tests/llm/server.py``, in its own process),
registers the judges (``add_judge``: a token each, only its hash stored), and starts
``llmpo serve CONFIG --concurrency C`` in a subprocess. Each judge is an ``httpx`` async client
that signs every request with its token (``Authorization: Bearer``), as scripts may: it GETs
``/judge`` (a pair is leased to it), reads the form's ``item``, ``lease`` and anti-forgery
``csrf`` fields, and POSTs a random verdict (A, B or tie: no policy is better, so the run never
certifies), over and over. The app answers a verdict once it is committed to the store and told.

Two phases on the same server and experiment: the **baseline**, one judge for ``--seconds``; then
``--judges`` judges at once for ``--seconds``. The server is then stopped with SIGINT (as Ctrl-C)
and measured with ``wait4`` (peak RSS, CPU). Every verdict the app accepted (HTTP 303) is then
looked for in the store: lost = accepted − stored, per judge, and stored verdicts no judge saw
accepted are counted too. Figures: verdicts per second in each phase and their ratio, latency of
a verdict (GET + POST) as median and 95th percentile, refused verdicts by HTTP status, the
server's peak RSS and CPU per verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from llmpo.store import Store

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
name: serve load
space: unstructured
delta: 0.01
seed: 5
environment:
  type: llm
  tasks: tasks.jsonl
  judge: {type: human}
policies:
  - name: first
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: LOAD_KEY}
    system_prompt: "Answer with the number only."
  - name: second
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: LOAD_KEY}
    temperature: 1.0
  - name: third
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: LOAD_KEY}
    temperature: 0.5
store: runs.db
"""

FIELDS = re.compile(r'name="(csrf|item|lease)" value="([^"]*)"')


class Judge:
    """One person's client: counts what the app accepted and refused, and how long each took."""

    def __init__(self, name: str, token: str, seed: int) -> None:
        self.name = name
        self.token = token
        self.rng = random.Random(seed)
        self.accepted = 0
        self.refused: collections.Counter[int] = collections.Counter()
        self.waited = 0
        self.latencies: list[float] = []

    async def work(self, base_url: str, until: float) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
            while time.monotonic() < until:
                started = time.monotonic()
                page = await client.get("/judge")
                fields = dict(FIELDS.findall(page.text))
                if "item" not in fields:
                    self.waited += 1  # nothing to judge yet (the "waiting" page)
                    continue
                choice = self.rng.choice(("A", "B", "tie"))
                answer = await client.post("/judge", data={**fields, "choice": choice})
                if answer.status_code == 303:
                    self.accepted += 1
                    self.latencies.append(time.monotonic() - started)
                else:
                    self.refused[answer.status_code] += 1


async def phase(base_url: str, judges: list[Judge], seconds: float) -> float:
    """Every judge works for ``seconds``; the wall time until the last one stopped."""
    started = time.monotonic()
    await asyncio.gather(*(j.work(base_url, started + seconds) for j in judges))
    return time.monotonic() - started


def wait_until_serving(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"llmpo serve exited {process.returncode}")
        try:
            if httpx.get(f"{base_url}/signin", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("llmpo serve did not answer within 60 s")


def stored_verdicts(path: Path) -> collections.Counter[str]:
    """Stored comparisons by judge name."""
    with Store(path, readonly=True) as store:
        return collections.Counter(
            c.raw["judge"]["judge_name"] for c in store.iter_comparisons(store.experiment().id)
        )


def summary(name: str, judges: list[Judge], wall: float) -> dict[str, Any]:
    latencies = sorted(x for j in judges for x in j.latencies)
    accepted = sum(j.accepted for j in judges)
    return {
        "phase": name,
        "judges": len(judges),
        "accepted": accepted,
        "verdicts_per_second": accepted / wall,
        "median_ms": 1e3 * statistics.median(latencies) if latencies else None,
        "p95_ms": 1e3 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "refused": dict(sum((j.refused for j in judges), collections.Counter())),
        "waiting_pages": sum(j.waited for j in judges),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judges", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=64, help="pairs waiting for judges")
    parser.add_argument("--port", type=int, default=8799)
    arguments = parser.parse_args()

    from llmpo.config import load_config
    from llmpo.human.tokens import add_judge
    from llmpo.runtime.setup import start_experiment
    from llmpo.store import Store

    environment = {**os.environ, "LOAD_KEY": "sk-load-test", "PYTHONPATH": str(ROOT / "src")}
    os.environ["LOAD_KEY"] = environment["LOAD_KEY"]
    answers = subprocess.Popen(
        [sys.executable, "-m", "tests.llm.server", "--reply", "42"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert answers.stdout is not None
        answers_url = f"http://127.0.0.1:{int(answers.stdout.readline())}/v1"
        with tempfile.TemporaryDirectory() as directory:
            folder = Path(directory)
            rows = [{"id": f"t{k}", "prompt": f"What is {k} + {k + 1}?"} for k in range(200)]
            (folder / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            config_path = folder / "load.yaml"
            config_path.write_text(CONFIG.replace("BASE_URL", answers_url))
            config = load_config(config_path)
            with Store(config.store, writer=True) as store:
                start_experiment(config, store)
                judges = [
                    Judge(f"judge-{i:02d}", add_judge(store, f"judge-{i:02d}"), seed=i)
                    for i in range(arguments.judges)
                ]
            base_url = f"http://127.0.0.1:{arguments.port}"
            command = ["serve", config_path.name, "--port", str(arguments.port)]
            command += ["--concurrency", str(arguments.concurrency)]
            server = subprocess.Popen(
                [sys.executable, "-m", "llmpo", *command],
                cwd=folder,
                env=environment,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until_serving(base_url, server)
                baseline_wall = asyncio.run(phase(base_url, judges[:1], arguments.seconds))
                baseline = summary("baseline", judges[:1], baseline_wall)
                accepted_before = {j.name: j.accepted for j in judges}
                for j in judges:
                    j.latencies.clear()
                    j.refused.clear()
                    j.waited = 0
                loaded_wall = asyncio.run(phase(base_url, judges, arguments.seconds))
                loaded = summary("loaded", judges, loaded_wall)
                loaded["accepted"] -= sum(accepted_before.values())
                loaded["verdicts_per_second"] = loaded["accepted"] / loaded_wall
            finally:
                server.send_signal(signal.SIGINT)
                _, status, usage = os.wait4(server.pid, 0)
                server.returncode = os.waitstatus_to_exitcode(status)
            stored = stored_verdicts(folder / "runs.db")
    finally:
        answers.terminate()
        answers.wait()
    accepted = {j.name: j.accepted for j in judges}
    lost = sum(max(0, accepted[n] - stored.get(n, 0)) for n in accepted)
    unseen = sum(max(0, stored[n] - accepted.get(n, 0)) for n in stored)
    total = sum(accepted.values())
    print(json.dumps([baseline, loaded], indent=1))
    print(
        f"{arguments.judges} judges: {loaded['verdicts_per_second']:.1f} verdicts/s "
        f"({loaded['verdicts_per_second'] / baseline['verdicts_per_second']:.2f}× one judge's "
        f"{baseline['verdicts_per_second']:.1f}/s); verdict latency median "
        f"{loaded['median_ms']:.0f} ms, p95 {loaded['p95_ms']:.0f} ms (one judge: "
        f"{baseline['median_ms']:.0f} / {baseline['p95_ms']:.0f} ms)"
    )
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"server: peak RSS {usage.ru_maxrss / 1024:.0f} MB, CPU {cpu:.1f} s, start-up included "
        f"({1e3 * cpu / total:.1f} ms per verdict), exit code {server.returncode} after SIGINT; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"verdicts accepted {total}, stored {sum(stored.values())}: lost {lost}, stored but not "
        f"seen accepted {unseen}"
    )


if __name__ == "__main__":
    main()
