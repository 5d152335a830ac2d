"""The command line's surface (issue 13, point 9): --version, flags shown as flags in --help, one
way to name an experiment, one default per option across commands, every ± labelled."""

import csv
import io
import json
import re

import pytest
import typer.core
import typer.main

import llmpo
from llmpo.cli import app, load_commands
from llmpo.config import ExperimentConfig
from llmpo.harness.reference import reference_instance
from tests.cli.test_run import invoke

load_commands()  # the command line imports a command's module only when it runs
COMMAND = typer.main.get_command(app)


def commands() -> dict[str, typer.core.TyperCommand]:
    """Every command and sub-command, by its full name."""
    found: dict[str, typer.core.TyperCommand] = {}

    def walk(group: typer.core.TyperCommand, prefix: str) -> None:
        for name, command in getattr(group, "commands", {}).items():
            found[f"{prefix}{name}"] = command
            walk(command, f"{prefix}{name} ")

    walk(COMMAND, "")
    return found


def test_version_prints_the_package_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"llmpo {llmpo.__version__}"


@pytest.mark.parametrize("name", ["", *commands()])
def test_help_shows_flags_without_a_value_type(name):
    result = invoke(*name.split(), "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_help_still_shows_the_type_of_options_that_take_a_value():
    result = invoke("simulate", "--help")
    assert "<int>" in result.output and "<float>" in result.output


def option_default(command: str, option: str) -> object:
    params = {p.name: p for p in commands()[command].params}
    return params[option].default


def test_one_default_per_option_across_commands():
    assert {option_default(c, "workers") for c in ("simulate", "demo", "bench")} == {2}
    delta = ExperimentConfig.model_fields["delta"].default
    assert {option_default(c, "delta") for c in ("bound", "simulate", "demo")} == {delta}


def test_every_command_that_takes_an_experiment_takes_its_id_after_the_store():
    for name in ("report", "evaluate", "resume", "export", "serve"):
        params = commands()[name].params
        arguments = [p.name for p in params if p.param_type_name == "argument"]
        assert arguments[1] == "experiment_id", (name, arguments)


def test_export_takes_the_id_after_the_store_and_the_old_option_with_a_warning(project):
    assert invoke("run", "experiment.yaml").exit_code == 0
    assert invoke("run", "experiment.yaml", "--seed", "4").exit_code == 0
    rows = list(csv.DictReader(io.StringIO(invoke("export", "runs.db", "2").stdout)))
    assert rows and {row["experiment_id"] for row in rows} == {"2"}
    old = invoke("export", "runs.db", "--experiment", "2")
    assert old.exit_code == 0
    assert list(csv.DictReader(io.StringIO(old.stdout))) == rows
    assert "--experiment is deprecated; give the id after the store: llmpo export STORE 2" in (
        old.stderr
    )
    both = invoke("export", "runs.db", "1", "--experiment", "2")
    assert both.exit_code == 2 and "two experiment ids, 1 and --experiment 2" in both.output
    report = invoke("report", "runs.db", "--experiment", "1", "--format", "json")
    assert report.exit_code == 0 and json.loads(report.stdout)["experiment"]["id"] == 1


def test_every_plus_minus_the_simulation_prints_says_what_it_is(tmp_path):
    instance = tmp_path / "cyc4.json"
    instance.write_text(json.dumps(reference_instance("CYC4").to_json()))
    result = invoke("simulate", str(instance), "--reps", "3", "--delta", "0.2", "--workers", "1")
    assert result.exit_code == 0, result.output
    labelled = re.findall(r"± [\d.]+ \(([^)]*)\)", result.stdout)
    assert result.stdout.count("±") == len(labelled) >= 1
    assert labelled == ["std. error of the mean"]
