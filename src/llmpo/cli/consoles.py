"""The command line's consoles: results on stdout, messages on stderr (rich only, so that a
command's module can import them without the numerical stack)."""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)  # sentences stay on one line; tables fit the terminal
error_console = Console(stderr=True, soft_wrap=True)  # never break an error line

__all__ = ["console", "error_console"]
