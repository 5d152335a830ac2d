"""What several commands share: the consoles (results on stdout, messages on stderr) and
options. Rich and typer only, so that a command's module imports them without the numerical
stack (its --help stays light: tests/cli/test_startup.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

console = Console(soft_wrap=True)  # sentences stay on one line; tables fit the terminal
error_console = Console(stderr=True, soft_wrap=True)  # never break an error line

#: One default for every command that runs replications in parallel (the numbers do not depend
#: on it: each replication has its own seed).
WorkersOpt = Annotated[
    int, typer.Option(min=1, help="Worker processes (the same seed gives the same numbers).")
]
DEFAULT_WORKERS = 2

__all__ = ["DEFAULT_WORKERS", "WorkersOpt", "console", "error_console"]
