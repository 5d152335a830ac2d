"""Benchmark of the command line's start-up (issue 17): CPU time of ``llmpo --help``, of a
command's ``--help`` and of ``llmpo doctor`` on a small store.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/cli_startup.py --runs 10

Runs, in turn, ``python -c pass`` (the interpreter alone) and each measured command line in a
fresh interpreter, ``--runs`` times after one warm-up, and prints per command the median CPU
time (user + sys of the child, from the operating system's accounting), the median wall time and
the ratio of CPU medians to the interpreter's, measured in the same run so that a loaded machine
moves both. The target is ``llmpo --help`` under 0.5 s of CPU. Heavy imports ``llmpo --help``
and each command's ``--help`` must not make are checked by tests/cli/test_startup.py. The llmpo
measured is the one on ``PYTHONPATH`` (another tree's ``src`` measures that tree).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmpo.store import Store

#: What is measured: a label and the arguments after the interpreter.
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "llmpo --help": ["-m", "llmpo", "--help"],
    "llmpo --version": ["-m", "llmpo", "--version"],
    "llmpo run --help": ["-m", "llmpo", "run", "--help"],
    "llmpo simulate --help": ["-m", "llmpo", "simulate", "--help"],
    "llmpo doctor --help": ["-m", "llmpo", "doctor", "--help"],
    "llmpo doctor STORE": ["-m", "llmpo", "doctor", "{store}"],
}


def measure(arguments: list[str]) -> tuple[float, float]:
    """CPU seconds (user + sys) and wall seconds of one run of ``python ARGUMENTS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="counted runs of each command")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in COMMANDS}
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "runs.db"
        with Store(store) as opened:  # a sound store of one experiment, for doctor
            opened.create_experiment({}, ["a", "b"])
        commands = {
            label: [part.format(store=store) for part in arguments]
            for label, arguments in COMMANDS.items()
        }
        for arguments in commands.values():  # warm-up: the file system cache, bytecode
            measure(arguments)
        for _ in range(args.runs):  # interleaved, so that a change in load hits every command
            for label, arguments in commands.items():
                samples[label].append(measure(arguments))

    baseline = statistics.median(cpu for cpu, _ in samples["python -c pass"])
    rows = {
        label: {
            "cpu_s": statistics.median(cpu for cpu, _ in runs),
            "wall_s": statistics.median(wall for _, wall in runs),
            "cpu_ratio": statistics.median(cpu for cpu, _ in runs) / baseline,
        }
        for label, runs in samples.items()
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "commands": rows}, indent=2))
        return
    print(f"medians of {args.runs} runs ({sys.executable})")
    print(f"{'command':<22} {'CPU s':>8} {'wall s':>8} {'CPU / python -c pass':>22}")
    for label, row in rows.items():
        print(
            f"{label:<22} {row['cpu_s']:>8.3f} {row['wall_s']:>8.3f} {row['cpu_ratio']:>22.1f}"
        )


if __name__ == "__main__":
    main()
