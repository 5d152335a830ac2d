"""The ``llmpo`` command line; each group of commands is a module that registers on ``app``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core

app = typer.Typer(
    name="llmpo",
    help="Find the best LLM policy with as few judged comparisons as statistics allows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _flag_type(option: typer.core.TyperOption, ctx: typer.core.click.Context) -> str | None:
    """No value type beside a flag in --help: a flag takes no value (Typer's rich help shows
    ``<bool>`` beside every flag, ``--help`` included)."""
    if option.is_flag and not option.count:
        return None
    return _option_type(option, ctx)


_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


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

# Command modules register themselves on `app` when imported.
from llmpo.cli import bench as _bench  # noqa: E402,F401
from llmpo.cli import core as _core  # noqa: E402,F401
from llmpo.cli import doctor as _doctor  # noqa: E402,F401
from llmpo.cli import experiments as _experiments  # noqa: E402,F401
from llmpo.cli import human as _human  # noqa: E402,F401
from llmpo.cli import integrations as _integrations  # noqa: E402,F401
from llmpo.cli import models as _models  # noqa: E402,F401
from llmpo.cli import view as _view  # noqa: E402,F401

__all__ = ["app"]
