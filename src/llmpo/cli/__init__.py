"""The ``llmpo`` command line; each group of commands is a module that registers on ``app``.

A command's module is imported only when that command runs (or prints its own ``--help``):
``llmpo --help`` lists every command from :data:`COMMANDS` and imports none of them, so it does
not pay for scipy, cvxpy, pydantic or the statistics core (tests/cli/test_startup.py).
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
import typer.main

from llmpo.errors import LlmpoError, scrub

if TYPE_CHECKING:
    # Typer's own copy of Click (typer ≥ 0.29 ships one), the types its classes take.
    from typer._click import Command, Context

#: Every command, in the order ``llmpo --help`` lists them: name → (the module of llmpo.cli that
#: registers it, the one line ``llmpo --help`` prints). tests/cli/test_startup.py checks that
#: each module registers its commands and that each line is the command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "bound": (
        "core",
        "Optimal policy, characteristic time T*, optimal proportions and the lower bound.",
    ),
    "simulate": (
        "core",
        "Monte Carlo of a strategy on an instance: error rate, comparisons and calls used.",
    ),
    "demo": (
        "core",
        "Run LLM-PO on a built-in synthetic instance and measure its saving over uniform "
        "allocation.",
    ),
    "bench": ("bench", "Run every cell of a benchmark suite; write CSV, Markdown, JSON and plots."),
    "doctor": (
        "doctor",
        "Check a store's integrity; explain each problem and, with --repair, fix what is safe.",
    ),
    "run": (
        "experiments",
        "Run an experiment from a YAML configuration (command-line flags override the file).",
    ),
    "resume": (
        "experiments",
        "Continue an interrupted experiment, or one that reached its budget, given a larger one.",
    ),
    "experiments": (
        "experiments",
        "List the experiments of a store: id, name, status, comparisons, best policy.",
    ),
    "report": (
        "experiments",
        "Report of a stored experiment: the answer, its certificate, plots and costs.",
    ),
    "export": (
        "experiments",
        "Export stored comparisons, one row each, with policy names; times are ISO-8601 (UTC).",
    ),
    "evaluate": (
        "experiments",
        "Compare the certified policy with the baseline on held-out tasks, with a 95% interval.",
    ),
    "serve": (
        "human",
        "Serve an experiment to human judges in the browser (Ctrl-C stops; serve again to "
        "resume).",
    ),
    "import": ("integrations", "Write an llmpo configuration from a promptfoo configuration."),
    "view": (
        "view",
        "Look at experiments in the browser, live: certificate, costs, comparisons (read-only).",
    ),
    "judges": ("human", "Manage the people who judge through 'llmpo serve'."),
    "models": ("models", "Models of the local backend (weights fetched once into the user cache)."),
}


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a user error on stderr (secrets scrubbed, no traceback) and return the exit to
    raise; for the command line's own checks of its arguments."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(scrub(message))}", highlight=False
    )
    return typer.Exit(code)


class LightGroup(typer.core.TyperGroup):
    """A group whose ``--help`` flag, when not given, needs no pydantic: Typer (≥ 0.29)
    coerces a flag's missing value (None) through pydantic, so the group's own flag would import
    it before ``llmpo COMMAND --help`` prints anything; with False for a default it does not."""

    def get_help_option(self, ctx: Context) -> Any:
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


class _LazyGroup(LightGroup):
    """The top-level group: lists :data:`COMMANDS` without importing them; imports a command's
    module when the command is resolved to run."""

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in self.commands:  # already imported
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        # What --help lists: the name and its line, nothing imported.
        return typer.core.TyperCommand(cmd_name, short_help=COMMANDS[cmd_name][1])

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        # Typer suggests among the imported commands only; suggest among all of them.
        typo = args[0] if args else ""
        if typo and typo not in COMMANDS and not typo.startswith("-") and not ctx.resilient_parsing:
            close = difflib.get_close_matches(typo, COMMANDS)
            if close:
                suggestions = ", ".join(repr(match) for match in close)
                ctx.fail(f"No such command {typo!r}. Did you mean {suggestions}?")
        name, command, rest = super().resolve_command(ctx, args)
        if name is None or command is None:
            return name, command, rest
        return name, self.load(name), rest

    def invoke(self, ctx: Context) -> Any:
        """Run the command; the one place where the command line reports llmpo's own errors:
        the message on stderr (scrubbed of secrets), never a traceback, and the error's exit
        status (2 for bad input, 1 for a failed run)."""
        try:
            return super().invoke(ctx)
        except LlmpoError as error:
            raise fail(str(error), error.exit_code) from None

    def load(self, name: str) -> Command:
        """The command ``name``, its module imported (it registers on ``app`` when imported)."""
        if name not in self.commands:
            importlib.import_module(f"llmpo.cli.{COMMANDS[name][0]}")
            self.commands[name] = typer.main.get_group(app).commands[name]
        return self.commands[name]


def load_commands() -> None:
    """Import every command's module (for tools that inspect the whole command tree, e.g. tests);
    running the command line never needs this."""
    for module in dict.fromkeys(module for module, _ in COMMANDS.values()):
        importlib.import_module(f"llmpo.cli.{module}")


app = typer.Typer(
    name="llmpo",
    help="Find the best LLM policy with as few judged comparisons as statistics allows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_LazyGroup,
)


def _flag_type(option: typer.core.TyperOption, ctx: Context) -> str | None:
    """No value type beside a flag in --help: a flag takes no value (Typer's rich help shows
    ``<bool>`` beside every flag, ``--help`` included)."""
    if option.is_flag and not option.count:
        return None
    return _option_type(option, ctx)


_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign,assignment]


def _print_version(value: bool) -> None:
    if value:
        from llmpo import __version__

        print(f"llmpo {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Find the best LLM policy with as few judged comparisons as statistics allows."""
    # Before any command reads an api_key_env variable (or MLFLOW_*): ./.env, never overriding
    # a variable already set, and nothing read is printed.
    from llmpo.envfile import load_env_file

    load_env_file(Path(".env"))

__all__ = ["COMMANDS", "LightGroup", "app", "fail", "load_commands"]
