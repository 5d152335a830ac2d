"""``llmpo bench SUITE``: run a benchmark suite into tables and plots."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from llmpo.cli import app
from llmpo.cli.common import DEFAULT_WORKERS, WorkersOpt

if TYPE_CHECKING:
    from llmpo.harness.bench import Cell

console = Console(stderr=True)
BACKENDS = ("process", "ray")


@app.command()
def bench(
    suite: Annotated[Path, typer.Argument(help="Suite file (YAML: instances × strategies × δ).")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: bench-<suite name>).")
    ] = None,
    workers: WorkersOpt = DEFAULT_WORKERS,
    reps: Annotated[
        int | None, typer.Option(min=2, help="Override the suite's replications per cell.")
    ] = None,
    deltas: Annotated[
        str | None,
        typer.Option(help="Override the suite's δ values, comma-separated (e.g. 0.01,0.001)."),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="Where replications run: process (local pool) or ray (a local Ray instance "
            "gets --workers CPUs)."
        ),
    ] = "process",
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join (default: start a local one, shut down after)."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="SQLite file of finished cells (default: <out>/cells.db)."),
    ] = None,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Neither read nor keep finished cells.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON instead of Markdown.")
    ] = False,
) -> None:
    """Run every cell of a benchmark suite; write CSV, Markdown, JSON and plots.

    Cells share the suite's seed, so strategies meet the same outcome streams, and the table
    depends neither on --workers nor on --backend. Finished cells are kept in the store, so an
    interrupted suite, run again, resumes where it stopped.
    """
    if backend not in BACKENDS:
        console.print(
            f"[bold red]error:[/] --backend: unknown {backend!r}; choose process or ray",
            highlight=False,
        )
        raise typer.Exit(2)
    if address is not None and backend != "ray":
        console.print("[bold red]error:[/] --address needs --backend ray", highlight=False)
        raise typer.Exit(2)
    # The harness (numpy, scipy, yaml) only when the suite runs: --help imports none of it.
    from llmpo.harness.bench import (
        format_calls,
        load_suite,
        markdown_table,
        run_suite,
        write_results,
    )
    from llmpo.harness.benchstore import CellStore

    loaded = load_suite(suite)
    if reps is not None:
        loaded = replace(loaded, reps=reps)
    if deltas is not None:
        try:
            values = tuple(float(d) for d in deltas.split(","))
        except ValueError:
            values = ()
        if not values or not all(0 < d < 0.5 for d in values):
            console.print(
                f"[bold red]error:[/] --deltas: expected δ values in (0, 0.5) separated by "
                f"commas, got {deltas!r}",
                highlight=False,
            )
            raise typer.Exit(2)
        loaded = replace(loaded, deltas=values)
    folder = out or Path(f"bench-{loaded.name}")
    cells_store = None
    if not no_store:
        cells_store = CellStore(store or folder / "cells.db")

    def progress(cell: Cell, done: int, total: int, stored: bool) -> None:
        source = "stored" if stored else f"{cell.seconds:.1f} s"
        console.print(
            f"[{done}/{total}] {cell.instance} {cell.strategy} δ={cell.delta:g}: "
            f"{cell.mean_comparisons:.0f} comparisons, "
            f"{format_calls(cell.mean_generation_calls)} generation calls, "
            f"error {cell.error_rate:.3f} ({source})",
            highlight=False,
        )

    runner = None
    if backend == "ray":
        from llmpo.harness.scaleout import RayBackend

        runner = RayBackend(address, num_cpus=workers)
    try:
        cells = run_suite(loaded, workers, progress, runner, cells_store)
    finally:
        if runner is not None:
            runner.close()
        if cells_store is not None:
            cells_store.close()
    paths = write_results(cells, loaded, folder)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}", highlight=False)
    if as_json:
        print(paths["json"].read_text())
    else:
        print(markdown_table(cells))
