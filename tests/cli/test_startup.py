"""``llmpo --help`` imports no command module and nothing heavy (issue 17): what it lists comes
from ``llmpo.cli.COMMANDS``, checked here against the commands themselves. The time it takes is
measured by benchmarks/cli_startup.py, not asserted here (a loaded machine would fail it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer.main

import llmpo.cli
from llmpo.cli import COMMANDS, app, load_commands

SRC = str(Path(llmpo.cli.__file__).resolve().parents[2])

#: Top-level packages ``llmpo --help`` must not import: the numerical stack, the statistics core's
#: solvers and every optional extra's heavy dependency.
HEAVY = {
    "numpy",
    "scipy",
    "cvxpy",
    "pydantic",
    "matplotlib",
    "jinja2",
    "yaml",
    "openai",
    "aiohttp",
    "torch",
    "transformers",
    "fastapi",
    "uvicorn",
    "pyarrow",
    "duelpy",
    "ray",
    "mlflow",
}

# Runs the command line in a fresh interpreter, then prints the modules it imported.
PROBE = """
import json, sys
{prelude}
from llmpo.cli import app
try:
    app(sys.argv[1:], prog_name="llmpo")
except SystemExit:
    pass
print("MODULES=" + json.dumps(sorted(sys.modules)))
"""


def _run(*args: str, prelude: str = "") -> tuple[str, set[str]]:
    """What ``llmpo ARGS`` prints (stdout + stderr, the module list cut off) and the modules it
    imported, in a fresh interpreter with a fixed terminal width."""
    environment = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "160", "TERM": "dumb"}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(prelude=prelude), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=True,
    )
    output, _, modules = completed.stdout.rpartition("MODULES=")
    return output + completed.stderr, set(json.loads(modules))


def test_help_imports_no_command_module_and_nothing_heavy():
    output, modules = _run("--help")
    assert "Usage:" in output and all(name in output for name in COMMANDS)
    imported = {module.split(".")[0] for module in modules}
    assert imported & HEAVY == set(), f"llmpo --help imported {sorted(imported & HEAVY)}"
    loaded_commands = {f"llmpo.cli.{module}" for module, _ in COMMANDS.values()} & modules
    assert loaded_commands == set(), f"llmpo --help imported {sorted(loaded_commands)}"
    assert not {"llmpo.experiment", "llmpo.store", "llmpo.config", "llmpo.runtime.setup"} & modules


def test_a_command_imports_its_own_module_only():
    _, modules = _run("doctor", "--help")
    assert "llmpo.cli.doctor" in modules
    assert "llmpo.cli.experiments" not in modules and "llmpo.cli.bench" not in modules


def test_the_command_table_is_the_commands_own():
    """Each listed module registers exactly its listed commands, and each listed line is what
    the command's own help says first."""
    load_commands()
    registered: dict[str, str] = {}
    for info in app.registered_commands:
        assert info.callback is not None
        registered[info.name or typer.main.get_command_name(info.callback.__name__)] = (
            info.callback.__module__
        )
    for group in app.registered_groups:
        assert group.typer_instance is not None and group.name is not None
        callback = group.typer_instance.registered_commands[0].callback
        assert callback is not None
        registered[group.name] = callback.__module__
    assert registered == {name: f"llmpo.cli.{module}" for name, (module, _) in COMMANDS.items()}

    commands = typer.main.get_group(app).commands
    for name, (_, line) in COMMANDS.items():
        own = commands[name].short_help or commands[name].help or ""
        assert " ".join(own.split("\n\n")[0].split()) == line, name


def test_help_lists_what_the_loaded_commands_would():
    """The lazy listing prints exactly what the listing of the imported commands prints."""
    every_module = "; ".join(
        f"import llmpo.cli.{module}" for module in {module for module, _ in COMMANDS.values()}
    )
    lazy, _ = _run("--help")
    loaded, modules = _run("--help", prelude=every_module)
    assert "llmpo.cli.experiments" in modules
    assert lazy == loaded


def test_a_mistyped_command_gets_a_suggestion_among_all_commands():
    output, _ = _run("rnu")
    assert "No such command 'rnu'. Did you mean 'run'?" in output


def test_the_package_exports_its_api_lazily():
    """``import llmpo`` imports no numerical code; the public names resolve on first use."""
    probe = (
        "import sys, llmpo; heavy = {'numpy', 'scipy', 'llmpo.experiment'} & set(sys.modules); "
        "from llmpo import Experiment, Structured; import llmpo.experiment, llmpo.spaces; "
        "assert Experiment is llmpo.experiment.Experiment; "
        "assert Structured is llmpo.spaces.Structured; print(sorted(heavy))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
        check=True,
    )
    assert completed.stdout.strip() == "[]"
