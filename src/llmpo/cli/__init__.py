"""The ``llmpo`` command line; each group of commands is a module that registers on ``app``."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="llmpo",
    help="Find the best LLM policy with as few judged comparisons as statistics allows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    # Before any command reads an api_key_env variable (or MLFLOW_*): ./.env, never overriding.
    from pathlib import Path

    from llmpo.envfile import load_env_file

    load_env_file(Path(".env"))


# Command modules register themselves on `app` when imported.
from llmpo.cli import bench as _bench  # noqa: E402,F401
from llmpo.cli import core as _core  # noqa: E402,F401
from llmpo.cli import experiments as _experiments  # noqa: E402,F401
from llmpo.cli import human as _human  # noqa: E402,F401
from llmpo.cli import integrations as _integrations  # noqa: E402,F401
from llmpo.cli import models as _models  # noqa: E402,F401
from llmpo.cli import view as _view  # noqa: E402,F401

__all__ = ["app"]
