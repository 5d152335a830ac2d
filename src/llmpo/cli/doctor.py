"""``llmpo doctor STORE``: check a store's integrity, explain each problem, repair what is safe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llmpo.cli import app
from llmpo.cli.common import console
from llmpo.store import Store
from llmpo.store.integrity import check_file, repair


@app.command()
def doctor(
    store: Annotated[Path, typer.Argument(help="The store file to check.")],
    fix: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Repair what is safe (after a backup, or into a copy); says what it removed.",
        ),
    ] = False,
) -> None:
    """Check a store's integrity; explain each problem and, with --repair, fix what is safe.

    Exits 0 when the store is sound (or was repaired), 1 when problems remain.
    """
    problems = check_file(store)  # a StoreError is reported by the CLI
    if not problems:
        console.print(f"{escape(str(store))}: sound (integrity check passed).", highlight=False)
        return
    console.print(f"{escape(str(store))}: {len(problems)} problem(s):", highlight=False)
    for problem in problems:
        console.print(f"  - {escape(problem.message)}", highlight=False)
        console.print(f"    {escape(problem.fix)}", highlight=False)
    if not fix:
        console.print(f"Run llmpo doctor {escape(str(store))} --repair to apply the repairs.")
        raise typer.Exit(1)
    if any(problem.damaged_file for problem in problems):
        lines = repair(store, problems)  # into a copy: the store is not written
    else:
        with Store(store, writer=True, check=False):  # no other process may be writing
            lines = repair(store, problems)
    for line in lines:
        console.print(escape(line), highlight=False)
    if any(problem.damaged_file for problem in problems):
        raise typer.Exit(0 if not lines[0].startswith("not repaired") else 1)
    left = check_file(store)
    if left:
        console.print(
            f"{len(left)} problem(s) have no safe repair and remain (see above).", highlight=False
        )
        raise typer.Exit(1)
    console.print(f"{escape(str(store))}: sound after the repair.", highlight=False)
