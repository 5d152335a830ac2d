"""``llmpo import``: another evaluation tool's configuration as an llmpo experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llmpo.cli import app
from llmpo.cli.common import console
from llmpo.cli.experiments import _fail


@app.command("import")
def import_command(
    source: Annotated[
        Path, typer.Argument(help="A promptfoo configuration (promptfooconfig.yaml).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The llmpo configuration to write.")
    ] = Path("llmpo.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Write an llmpo configuration from a promptfoo configuration.

    Prompts × providers become policies, tests become tasks, and the assertions choose the judge;
    what cannot be used is listed.
    """
    from llmpo.integrations.promptfoo import import_config, write_import

    if output.exists() and not force:
        raise _fail(f"{output} exists. Fix: choose another --output, or add --force")
    imported = import_config(source)
    tasks_path = write_import(imported, output)
    policies = imported.config["policies"]
    count = (
        len(policies)
        if isinstance(policies, list)
        else len(policies["factors"]["prompt_template"]) * len(policies["factors"]["backend"])
    )
    console.print(
        f"Wrote {escape(str(output))} ({count} policies, judge: "
        f"{imported.config['environment']['judge']['type']}) and {escape(str(tasks_path))} "
        f"({len(imported.tasks)} tasks)."
    )
    for note in imported.notes:
        console.print(f"  note: {escape(note)}")
    console.print(f"Run it: llmpo run {escape(str(output))}")
