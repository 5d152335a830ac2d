"""Benchmark of ``llmpo view`` on a large store (issue 16): listing and paging times.

Run on demand (not part of the test suite)::

    nice -n 10 .venv/bin/python benchmarks/view.py --comparisons 1000000

It builds, in a temporary folder, a store with one experiment of ``--comparisons`` comparisons
(5 policies, 1,000 tasks, 2 replicates per answer, outcomes drawn with a fixed seed, 10,000
cached answers of which 1 in 50 contains the word "zebra") with the store's bulk append (one
transaction per 100,000), then times each page served by the viewer's app (FastAPI TestClient,
so routing, queries and the rendering of the HTML are included): the listing (its first, cold
request tallies every comparison once; later ones read only the rows appended since), the first,
middle and last page of comparisons, pages of the ties, of one pair, of one task, a search over
the answers, one comparison, and the experiment's live page.
Each figure is the median of ``--repeat`` requests (the cold listing: one request). The target is
under 0.5 s per page.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llmpo.store import CachedGeneration, ComparisonRecord, Store
from llmpo.store.payloads import LiveRaw

POLICIES = ["alpha", "beta", "gamma", "delta", "epsilon"]
TASKS = 1000
REPLICATES = 2
CONFIG = {
    "space": "unstructured",
    "delta": 0.05,
    "environment": {"type": "synthetic", "instance": "unused.json"},
}


def build(path: Path, n: int, seed: int = 0) -> None:
    """A store of one experiment with ``n`` comparisons and their cached answers."""
    rng = np.random.default_rng(seed)
    with Store(path, writer=True) as store:
        experiment = store.create_experiment(CONFIG, POLICIES, name="large")
        for policy in POLICIES:
            for task in range(TASKS):
                for replicate in range(REPLICATES):
                    text = f"Answer of {policy} to task {task} #{replicate}" + (
                        " with a zebra" if (task * 7 + replicate) % 50 == 0 else ""
                    )
                    answer = CachedGeneration(text, 20, 40, 0.5)
                    store.cache_generation(policy, f"t{task}", replicate, "k", "m", answer)
        chunk = 100_000
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            a = rng.integers(0, 5, size)
            b = (a + rng.integers(1, 5, size)) % 5
            outcome = rng.choice([0.0, 0.5, 1.0], size, p=[0.35, 0.2, 0.45])
            tasks = rng.integers(0, TASKS, size)
            replicates = rng.integers(0, REPLICATES, (size, 2))
            cached = rng.random((size, 2)) < 0.3
            store.append_comparisons(
                experiment,
                (
                    ComparisonRecord(
                        seq=start + k + 1,
                        policy_a=int(a[k]),
                        policy_b=int(b[k]),
                        outcome=float(outcome[k]),
                        task_id=f"t{tasks[k]}",
                        order="ab" if k % 2 else "ba",
                        raw=LiveRaw(
                            judge={"replies": ["A" if outcome[k] else "B"]},
                            number=start + k,
                            replicates=(int(replicates[k][0]), int(replicates[k][1])),
                            cached=(bool(cached[k][0]), bool(cached[k][1])),
                        ).to_json(),
                        started_at=1.7e9 + start + k,
                        finished_at=1.7e9 + start + k + 0.8,
                        cost_usd=0.0004,
                        input_tokens=300,
                        output_tokens=60,
                    )
                    for k in range(size)
                ),
            )
        store.set_status(experiment, "max_comparisons")


def timed(client, url: str, repeat: int) -> tuple[float, int]:
    times = []
    rows = 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code, response.text[:500])
        rows = response.text.count('class="open"')
    return statistics.median(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--keep", type=Path, help="Build the store here (reused when it exists) instead of a temp."
    )
    arguments = parser.parse_args()
    from fastapi.testclient import TestClient

    from llmpo.view.app import create_app

    with tempfile.TemporaryDirectory() as folder:
        path = arguments.keep or Path(folder) / "large.db"
        if not path.exists():
            started = time.perf_counter()
            build(path, arguments.comparisons)
            print(
                f"Built {arguments.comparisons:,} comparisons in "
                f"{time.perf_counter() - started:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)",
                file=sys.stderr,
            )
        client = TestClient(create_app([path]))
        # The listing's totals are tallied a bounded number of rows per request: count the
        # requests until they are complete, and the slowest of them.
        cold = []
        while True:
            started = time.perf_counter()
            text = client.get("/?partial=1").text
            cold.append(time.perf_counter() - started)
            if "tallying" not in text:
                break
        print(
            f"Listing while the totals are tallied: {len(cold)} requests (the page polls once a "
            f"second); the first (cold start) {cold[0]:.3f} s, then slowest {max(cold[1:]):.3f} s, "
            f"median {statistics.median(cold[1:]):.3f} s",
            flush=True,
        )
        middle = arguments.comparisons // 2
        cases = [
            ("listing, totals complete", "/", arguments.repeat),
            ("comparisons: first page", "/s/0/e/1/comparisons?after=0", arguments.repeat),
            ("comparisons: middle page", f"/s/0/e/1/comparisons?after={middle}", arguments.repeat),
            ("comparisons: last page", "/s/0/e/1/comparisons", arguments.repeat),
            ("ties: first page", "/s/0/e/1/comparisons?outcome=tie&after=0", arguments.repeat),
            ("ties: last page", "/s/0/e/1/comparisons?outcome=tie", arguments.repeat),
            (
                "pair alpha–beta, alpha's wins: middle page",
                f"/s/0/e/1/comparisons?a=0&b=1&outcome=win&after={middle}",
                arguments.repeat,
            ),
            ("task t123: last page", "/s/0/e/1/comparisons?task=t123", arguments.repeat),
            ("task t123: first page", "/s/0/e/1/comparisons?task=t123&after=0", arguments.repeat),
            (
                "task matching none",
                "/s/0/e/1/comparisons?task=nope",
                arguments.repeat,
            ),
            ("search 'zebra': last page", "/s/0/e/1/comparisons?q=zebra", arguments.repeat),
            ("search 'okapi' (in no answer)", "/s/0/e/1/comparisons?q=okapi", arguments.repeat),
            (
                "search 'zebra', pair alpha–beta: last page",
                "/s/0/e/1/comparisons?q=zebra&a=0&b=1",
                arguments.repeat,
            ),
            ("one comparison", f"/s/0/e/1/c/{middle}", arguments.repeat),
            ("experiment page (replay bounded per request)", "/s/0/e/1", arguments.repeat),
        ]
        print(f"| page ({arguments.comparisons:,} comparisons) | seconds | rows shown |")
        print("|---|---:|---:|")
        for label, url, repeat in cases:
            seconds, rows = timed(client, url, repeat)
            print(f"| {label} | {seconds:.3f} | {rows} |", flush=True)


if __name__ == "__main__":
    main()
