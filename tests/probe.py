"""The one subprocess probe of what llmpo imports: run Python code (or the command line) in a fresh
interpreter with this tree's ``src`` first on the path, and read back what it printed and the
modules it imported (tests/cli/test_startup.py, tests/test_registry.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Printed after the code runs, followed by the imported modules as JSON.
MARKER = "MODULES="

# Runs the command line in the probe (its exit is caught: the modules are printed after it).
CLI = """
from llmpo.cli import app
try:
    app(sys.argv[1:], prog_name="llmpo")
except SystemExit:
    pass
"""


def imported(code: str, *args: str) -> tuple[str, set[str]]:
    """What ``code`` prints (stdout, then stderr) and every module imported when it is done,
    in a fresh interpreter (``sys.argv[1:]`` is ``args``) with a fixed terminal width.

    Raises
    ------
    subprocess.CalledProcessError
        When the interpreter fails (the code raised).
    """
    environment = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "160", "TERM": "dumb"}
    program = f"import json, sys\n{code}\nprint({MARKER!r} + json.dumps(sorted(sys.modules)))\n"
    completed = subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=True,
    )
    output, _, modules = completed.stdout.rpartition(MARKER)
    return output + completed.stderr, set(json.loads(modules))


def command_line(*args: str, prelude: str = "") -> tuple[str, set[str]]:
    """What ``llmpo ARGS`` prints and the modules it imported (``prelude`` runs first)."""
    return imported(f"{prelude}\n{CLI}", *args)


def top_level(modules: set[str]) -> set[str]:
    """The top-level packages of ``modules`` (``numpy`` for ``numpy.linalg``)."""
    return {module.split(".")[0] for module in modules}
