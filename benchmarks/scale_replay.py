"""Benchmark: a replay run to 10⁶ comparisons and its resume (issue 19, scale).

Run on demand (not part of the test suite; minutes at 10⁶)::

    nice -n 10 .venv/bin/python benchmarks/scale_replay.py                 # --comparisons 1000000
    .venv/bin/python benchmarks/scale_replay.py --comparisons 20000       # a quick look

The script writes its own replay data in a temporary folder: pair counts of ``--policies``
policies, every pair exactly even (wins = losses, some ties), so no policy is better and the run
never certifies (at δ = 0.01 the stopping rule errs with probability ≤ δ); it goes to its
comparison budget. It then runs, each as ``llmpo run`` in a subprocess measured with ``wait4``
(wall time, CPU time, peak RSS):

1. the **baseline**: a run to ``--baseline`` comparisons (1% of the large run) in its own store;
2. the **large run**: a run to ``--comparisons`` comparisons, every one committed to the store
   before it is told;
3. its **resume**: ``llmpo run --resume --max-comparisons N+M`` on that store, which replays the N
   stored comparisons (the experiment's state is rebuilt from them) and then runs M new ones.

It prints wall and CPU time, peak RSS and store size of each; the time per new comparison (the
large run minus the baseline, so the start-up cancels), per replayed comparison on resume, and
the peak RSS as ratios to the baseline; and checks that the store holds exactly N + M comparisons
numbered 1…N+M.

**Memory of resume against the stored count** (``--resume-memory``)::

    nice -n 10 .venv/bin/python benchmarks/scale_replay.py --resume-memory 100000 400000 \
        --before a0ffcfa

runs to each stored count in its own store, then resumes a copy of each store (``--extra`` new
comparisons) with this tree's llmpo and, with ``--before REF``, with the llmpo of git commit REF
(its ``src/`` exported by ``git archive``), each in its own process, in the same run. It prints
each resume's peak RSS, how much it grows from the smaller count to the larger, per 100,000
stored comparisons, and that growth's ratio between the two versions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

from llmpo.store import Store

CONFIG = """\
space: unstructured
delta: 0.01
seed: 7
environment:
  type: replay
  path: counts.jsonl
store: {store}
"""


def write_project(folder: Path, policies: int, store: str) -> Path:
    """Evenly matched pair counts and a configuration that uses them."""
    names = [f"policy-{i}" for i in range(policies)]
    rows = [
        {"policy_a": a, "policy_b": b, "wins": 400, "losses": 400, "ties": 200}
        for a, b in combinations(names, 2)
    ]
    (folder / "counts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = folder / f"{store}.yaml"
    config.write_text(CONFIG.format(store=store))
    return config


def measured(command: list[str], cwd: Path, source: Path | None = None) -> dict[str, Any]:
    """Run ``python -m llmpo COMMAND…`` (the llmpo of the folder ``source`` when given); its wall
    and CPU seconds, peak RSS and JSON output."""
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "llmpo", *command],
            cwd=cwd,
            stdout=out,
            stderr=err,
            env=environment,
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    if process.returncode not in (0, 3):  # 3: stopped by its budget, as intended
        raise SystemExit(f"llmpo {' '.join(command)} exited {process.returncode}:\n{errors}")
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "result": json.loads(output),
    }


def store_figures(path: Path) -> dict[str, Any]:
    """Size on disk (with the WAL) and the comparisons' count and numbering."""
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    with Store(path, readonly=True) as store:
        seqs = [c.seq for c in store.iter_comparisons(store.experiment().id)]
    count, low, high = len(seqs), min(seqs, default=None), max(seqs, default=None)
    return {"store_mb": size / 2**20, "stored": count, "contiguous": (low, high) == (1, count)}


def one_run(folder: Path, name: str, policies: int, comparisons: int) -> dict[str, Any]:
    config = write_project(folder, policies, f"{name}.db")
    figures = measured(
        ["run", config.name, "--max-comparisons", str(comparisons), "--json"], folder
    )
    return {**figures, **store_figures(folder / f"{name}.db")}


def report(name: str, figures: dict[str, Any], comparisons: int) -> str:
    return (
        f"{name:<9} {comparisons:>10,} comparisons  {figures['wall_seconds']:8.1f} s wall "
        f"({figures['cpu_seconds']:7.1f} s CPU)  peak RSS {figures['peak_rss_mb']:6.0f} MB  "
        f"store {figures['store_mb']:7.1f} MB"
    )


def marginal(seconds: float, base_seconds: float, count: int) -> str:
    return f"{(seconds - base_seconds) / count * 1e6:.0f} µs"


def exported_source(reference: str, folder: Path) -> Path:
    """The ``src/`` of git commit ``reference`` of this repository, exported into ``folder``."""
    repository = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(repository), "archive", reference, "src"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def resume_memory(sizes: list[int], before: str | None, policies: int, extra: int) -> None:
    """Peak RSS of resuming stores of each size, with this llmpo and the one of ``before``."""
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        versions: dict[str, Path | None] = {"this tree": None}
        if before is not None:
            versions = {f"before ({before})": exported_source(before, folder), **versions}
        peaks: dict[str, dict[int, float]] = {label: {} for label in versions}
        for size in sizes:
            name = f"stored{size}"
            one_run(folder, name, policies, size)
            store = folder / f"{name}.db"
            pristine = folder / f"{name}.pristine"
            shutil.copy(store, pristine)  # closed: the WAL is checkpointed into the file
            for label, source in versions.items():
                # The store's path is part of the experiment's identity: resume it in place,
                # from the same pristine copy each time.
                for suffix in ("", "-wal", "-shm"):
                    (folder / f"{name}.db{suffix}").unlink(missing_ok=True)
                shutil.copy(pristine, store)
                figures = measured(
                    ["run", f"{name}.db.yaml", "--resume", "--max-comparisons", str(size + extra),
                     "--json"],
                    folder,
                    source,
                )
                assert figures["result"]["new_comparisons"] == extra, figures["result"]
                peaks[label][size] = figures["peak_rss_mb"]
                print(
                    f"{label:<22} resume of {size:>9,} stored (+{extra:,} new): peak RSS "
                    f"{figures['peak_rss_mb']:6.0f} MB, {figures['cpu_seconds']:6.1f} s CPU",
                    flush=True,
                )
    low, high = min(sizes), max(sizes)
    growth = {
        label: (peak[high] - peak[low]) / (high - low) * 100_000 for label, peak in peaks.items()
    }
    for label, peak in peaks.items():
        print(
            f"{label:<22} peak RSS {peak[high] / peak[low]:.2f}× for {high / low:.0f}× the "
            f"stored comparisons; +{growth[label]:.1f} MB per 100,000 stored"
        )
    if before is not None:
        old, new = growth[f"before ({before})"], growth["this tree"]
        print(f"growth per stored comparison: this tree {new / old:.3f}× the one before")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=None, help="default: 1%% of the run")
    parser.add_argument("--extra", type=int, default=1_000, help="new comparisons on resume")
    parser.add_argument("--policies", type=int, default=5)
    parser.add_argument(
        "--resume-memory",
        type=int,
        nargs="+",
        metavar="N",
        help="only measure resume's peak RSS with N stored comparisons (two sizes or more)",
    )
    parser.add_argument(
        "--before", help="with --resume-memory: also resume with the llmpo of this git commit"
    )
    arguments = parser.parse_args()
    if arguments.resume_memory:
        resume_memory(
            sorted(arguments.resume_memory), arguments.before, arguments.policies, arguments.extra
        )
        return
    n, m = arguments.comparisons, arguments.extra
    baseline_n = arguments.baseline or max(1_000, n // 100)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        base = one_run(folder, "baseline", arguments.policies, baseline_n)
        base["comparisons"] = baseline_n
        large = one_run(folder, "large", arguments.policies, n)
        resumed = measured(
            ["run", "large.db.yaml", "--resume", "--max-comparisons", str(n + m), "--json"],
            folder,
        )
        resumed.update(store_figures(folder / "large.db"))
    assert base["stored"] == baseline_n and large["stored"] == n, (base, large)
    assert resumed["stored"] == n + m and resumed["contiguous"] and large["contiguous"]
    assert resumed["result"]["new_comparisons"] == m, resumed["result"]
    print(f"llmpo replay, {arguments.policies} evenly matched policies, δ = 0.01 (never certifies)")
    print(report("baseline", base, baseline_n))
    print(report("run", large, n))
    print(report("resume", resumed, n + m) + f" (replays {n:,} stored, runs {m:,} new)")
    # Start-up (imports, opening the store) is in every figure; the differences leave it out.
    for kind in ("wall_seconds", "cpu_seconds"):
        per_new = (large[kind] - base[kind]) / (n - baseline_n)
        startup = base[kind] - baseline_n * per_new
        per_replayed = (resumed[kind] - startup - m * per_new) / n
        print(
            f"{kind.split('_')[0]:>4}: {per_new * 1e6:6.0f} µs per new comparison "
            "(run − baseline), "
            f"{per_replayed * 1e6:6.0f} µs per replayed one on resume "
            f"({per_replayed / per_new:.3f}× a new one); start-up {startup:.1f} s; "
            f"run ÷ baseline {large[kind] / base[kind]:.1f}× for {n / baseline_n:.0f}× the "
            "comparisons"
        )
    print(
        f"peak RSS: run {large['peak_rss_mb'] / base['peak_rss_mb']:.2f}×, resume "
        f"{resumed['peak_rss_mb'] / base['peak_rss_mb']:.2f}× the baseline's; store "
        f"{large['store_mb'] * 2**20 / n:.0f} bytes per comparison"
    )


if __name__ == "__main__":
    main()
