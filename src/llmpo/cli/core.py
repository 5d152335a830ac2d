"""Commands of the statistics core: ``bound``, ``simulate``, ``demo``."""

from __future__ import annotations

from llmpo.cli import app


@app.command()
def demo() -> None:
    """Run a complete adaptive experiment on a built-in synthetic instance."""
    raise NotImplementedError
