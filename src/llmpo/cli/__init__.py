"""The ``llmpo`` command line; each group of commands is a module that registers on ``app``."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="llmpo",
    help="Find the best LLM policy with as few judged comparisons as statistics allows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _environment() -> None:
    # Keys may live in a .env file of the working directory (python-dotenv, when installed);
    # variables already set win. Nothing read is printed.
    try:
        from dotenv import load_dotenv
    except ImportError:
        return
    load_dotenv(Path.cwd() / ".env", override=False)


# Command modules register themselves on `app` when imported.
from llmpo.cli import bench as _bench  # noqa: E402,F401
from llmpo.cli import core as _core  # noqa: E402,F401
from llmpo.cli import experiments as _experiments  # noqa: E402,F401
from llmpo.cli import human as _human  # noqa: E402,F401
from llmpo.cli import integrations as _integrations  # noqa: E402,F401
from llmpo.cli import models as _models  # noqa: E402,F401

__all__ = ["app"]
