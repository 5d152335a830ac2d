"""``llmpo --help`` imports no command module and nothing heavy (issue 17): what it lists comes
from ``llmpo.cli.COMMANDS``, checked here against the commands themselves. The time it takes is
measured by benchmarks/cli_startup.py, not asserted here (a loaded machine would fail it)."""

from __future__ import annotations

import typer.main

from llmpo.cli import COMMANDS, app, load_commands
from tests.probe import command_line, imported, top_level

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

def test_help_imports_no_command_module_and_nothing_heavy():
    output, modules = command_line("--help")
    assert "Usage:" in output and all(name in output for name in COMMANDS)
    heavy = top_level(modules) & HEAVY
    assert heavy == set(), f"llmpo --help imported {sorted(heavy)}"
    loaded_commands = {f"llmpo.cli.{module}" for module, _ in COMMANDS.values()} & modules
    assert loaded_commands == set(), f"llmpo --help imported {sorted(loaded_commands)}"
    assert not {"llmpo.experiment", "llmpo.store", "llmpo.config", "llmpo.runtime.setup"} & modules


def _every_command() -> list[list[str]]:
    """Every command and subcommand (``judges add``…) of the command line."""
    load_commands()
    commands = []
    for name, command in typer.main.get_group(app).commands.items():
        subcommands = getattr(command, "commands", {})
        commands += [[name, sub] for sub in subcommands] or [[name]]
    return commands


def test_no_commands_help_imports_the_numerical_stack_pydantic_or_a_heavy_extra():
    """``llmpo COMMAND --help`` imports the command's module only: its options are declared
    without numpy, scipy, pydantic or any extra, whatever the command runs (issue 17)."""
    commands = _every_command()
    assert ["run"] in commands and ["judges", "add"] in commands
    for command in commands:
        output, modules = command_line(*command, "--help")
        assert "Usage: llmpo " + " ".join(command) in output, output
        assert f"llmpo.cli.{COMMANDS[command[0]][0]}" in modules
        heavy = top_level(modules) & HEAVY
        assert heavy == set(), f"llmpo {' '.join(command)} --help imported {sorted(heavy)}"


def test_a_command_imports_its_own_module_only():
    _, modules = command_line("doctor", "--help")
    assert "llmpo.cli.doctor" in modules
    assert "llmpo.cli.experiments" not in modules and "llmpo.cli.core" not in modules


def test_doctor_imports_the_store_and_its_checks_only(tmp_path):
    """``llmpo doctor STORE`` checks the store: no command module but its own, nothing of the
    statistics, the runtime or the configuration (pydantic only: typer coerces the argument)."""
    from llmpo.store import Store

    with Store(tmp_path / "runs.db") as store:
        store.create_experiment({}, ["a", "b"])
    output, modules = command_line("doctor", str(tmp_path / "runs.db"))
    assert "sound (integrity check passed)" in output
    heavy = top_level(modules) & (HEAVY - {"pydantic"})
    assert heavy == set(), f"llmpo doctor imported {sorted(heavy)}"
    llmpo = {module for module in modules if module.startswith("llmpo")}
    allowed = {"llmpo", "llmpo.errors", "llmpo.envfile", "llmpo.cli", "llmpo.cli.common"}
    assert {m for m in llmpo if not m.startswith("llmpo.store")} == allowed | {"llmpo.cli.doctor"}


def test_the_help_lists_of_simulate_are_the_harness_and_registry_ones():
    """``simulate --help`` names its rules and thresholds without importing them: the lists
    must be the harness's and the registry's."""
    from llmpo.cli.core import THRESHOLD_NAMES, simulate_rules
    from llmpo.harness.simulate import STRATEGIES, STRUCTURED_STRATEGIES
    from llmpo.registry import THRESHOLDS

    assert sorted(simulate_rules(False)) == sorted(STRATEGIES)
    assert sorted(simulate_rules(True)) == sorted(STRUCTURED_STRATEGIES)
    assert list(THRESHOLD_NAMES) == THRESHOLDS.builtin_names()


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
    lazy, _ = command_line("--help")
    loaded, modules = command_line("--help", prelude=every_module)
    assert "llmpo.cli.experiments" in modules
    assert lazy == loaded


def test_a_mistyped_command_gets_a_suggestion_among_all_commands():
    output, _ = command_line("rnu")
    assert "No such command 'rnu'. Did you mean 'run'?" in output


def test_the_package_exports_its_api_lazily():
    """``import llmpo`` imports no numerical code; the public names resolve on first use."""
    code = (
        "import llmpo; heavy = {'numpy', 'scipy', 'llmpo.experiment'} & set(sys.modules); "
        "from llmpo import Experiment, Structured; import llmpo.experiment, llmpo.spaces; "
        "assert Experiment is llmpo.experiment.Experiment; "
        "assert Structured is llmpo.spaces.Structured; print(sorted(heavy))"
    )
    output, _ = imported(code)
    assert output.strip() == "[]"
