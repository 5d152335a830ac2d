"""``llmpo bench SUITE``: run a benchmark suite into tables and plots."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from llmpo.bench import Cell, SuiteError, load_suite, markdown_table, run_suite, write_results
from llmpo.cli import app

console = Console(stderr=True)


@app.command()
def bench(
    suite: Annotated[Path, typer.Argument(help="Suite file (YAML: instances × strategies × δ).")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: bench-<suite name>).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes per cell.")] = 2,
    reps: Annotated[
        int | None, typer.Option(min=2, help="Override the suite's replications per cell.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON instead of Markdown.")
    ] = False,
) -> None:
    """Run every cell of a benchmark suite; write CSV, Markdown, JSON and plots.

    Cells share the suite's seed, so strategies meet the same outcome streams, and the table
    does not depend on --workers.
    """
    try:
        loaded = load_suite(suite)
    except SuiteError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    if reps is not None:
        loaded = replace(loaded, reps=reps)

    def progress(cell: Cell, done: int, total: int) -> None:
        console.print(
            f"[{done}/{total}] {cell.instance} {cell.strategy} δ={cell.delta:g}: "
            f"{cell.mean_comparisons:.0f} comparisons, error {cell.error_rate:.3f} "
            f"({cell.seconds:.1f} s)",
            highlight=False,
        )

    cells = run_suite(loaded, workers, progress)
    paths = write_results(cells, loaded, out or Path(f"bench-{loaded.name}"))
    for kind, path in paths.items():
        console.print(f"{kind}: {path}", highlight=False)
    if as_json:
        print(paths["json"].read_text())
    else:
        print(markdown_table(cells))
