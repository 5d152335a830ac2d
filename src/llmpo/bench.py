"""Benchmark suites: instances × strategies × δ values, replicated, into tables and plots.

A suite is a YAML file::

    name: paper
    seed: 0                 # master seed; every cell uses it (common random numbers)
    reps: 100               # replications per cell
    deltas: [0.1, 0.01]
    max_comparisons: 200000 # optional budget per replication (a capped run counts as it ended)
    strategies: [llmpo, top-two, uniform, "duelpy:SequentialElimination"]
    instances:
      - {name: BT5, reference: BT5}                     # llmpo.reference
      - {name: GAP20, bradley_terry: [0, -0.4, ...]}    # utilities of a Bradley–Terry model
      - {name: mine, file: instances/mine.json}         # DESIGN §6 file, relative to the suite
        strategies: [llmpo, uniform]                    # optional, per instance

Every cell runs :func:`llmpo.simulate.run_replications` with the suite's seed, so strategies are
compared on the same outcome streams, and the numbers do not depend on the number of workers.
Per cell the table holds the error rate with its exact (Clopper–Pearson) 95% interval, the mean
comparisons with a normal 95% interval, the median with its distribution-free 95% interval (order
statistics), the ratio to the lower bound T*·log(1/δ), and the ratio of means to LLM-PO's in the
same instance and δ.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import binom, binomtest

from llmpo.instances import (
    InstanceError,
    StructuredInstance,
    UnstructuredInstance,
    bradley_terry_matrix,
    load_instance,
    make_unstructured_instance,
)
from llmpo.peers import is_peer, peer_class_name, peer_fault
from llmpo.reference import reference_instance
from llmpo.simulate import (
    STRATEGIES,
    STRUCTURED_STRATEGIES,
    SimulationSpec,
    run_replications,
    summarize,
)

#: The strategy whose mean the column ``ratio_to_llmpo`` divides by.
REFERENCE_STRATEGY = "llmpo"
#: z for a two-sided 95% normal interval.
Z95 = 1.959963984540054


class SuiteError(ValueError):
    """A suite file that cannot be run; the message names the field."""


@dataclass(frozen=True)
class SuiteInstance:
    """One instance of a suite and the strategies run on it."""

    name: str
    instance: UnstructuredInstance | StructuredInstance
    strategies: tuple[str, ...]


@dataclass(frozen=True)
class Suite:
    """A parsed suite file (see the module docstring)."""

    name: str
    seed: int
    reps: int
    deltas: tuple[float, ...]
    instances: tuple[SuiteInstance, ...]
    max_comparisons: int | None = None


@dataclass
class Cell:
    """One row of the results table: a strategy on an instance at one δ."""

    instance: str
    strategy: str
    delta: float
    reps: int
    errors: int
    error_rate: float
    error_low: float
    error_high: float
    uncertified: int
    mean_comparisons: float
    mean_low: float
    mean_high: float
    median_comparisons: float
    median_low: float
    median_high: float
    t_star: float
    lower_bound: float
    ratio_to_bound: float
    ratio_to_llmpo: float | None = None
    seconds: float = 0.0
    fault: str | None = field(default=None)


def _instance_from(entry: dict[str, Any], base: Path) -> UnstructuredInstance | StructuredInstance:
    sources = [key for key in ("reference", "bradley_terry", "file") if key in entry]
    if len(sources) != 1:
        raise SuiteError(
            f"instances: {entry.get('name', entry)!r} needs exactly one of reference, "
            "bradley_terry, file"
        )
    try:
        if "reference" in entry:
            return reference_instance(str(entry["reference"]))
        if "bradley_terry" in entry:
            return make_unstructured_instance(bradley_terry_matrix(entry["bradley_terry"]))
        return load_instance(base / str(entry["file"]))
    except (InstanceError, ValueError) as error:
        raise SuiteError(f"instances: {entry.get('name')!r}: {error}") from None


def _check_strategy(strategy: str, instance: UnstructuredInstance | StructuredInstance) -> None:
    if is_peer(strategy):
        peer_class_name(strategy)
        if isinstance(instance, StructuredInstance):
            raise SuiteError(f"strategies: {strategy} runs on unstructured instances only")
        return
    known = STRUCTURED_STRATEGIES if isinstance(instance, StructuredInstance) else STRATEGIES
    if strategy not in known:
        raise SuiteError(f"strategies: unknown {strategy!r}; choose one of {', '.join(known)}")


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file.

    Raises
    ------
    SuiteError
        Naming the file and the field at fault.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SuiteError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise SuiteError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected a mapping with instances, strategies and deltas")
    try:
        deltas = tuple(float(d) for d in data.get("deltas", [0.05]))
        if not deltas or not all(0 < d < 0.5 for d in deltas):
            raise SuiteError("deltas: each δ must lie in (0, 0.5)")
        reps = int(data.get("reps", 100))
        if reps < 2:
            raise SuiteError("reps: need at least 2 replications per cell")
        budget = data.get("max_comparisons")
        strategies = [str(s) for s in data.get("strategies", [REFERENCE_STRATEGY])]
        entries = data.get("instances") or []
        if not entries:
            raise SuiteError("instances: the suite lists none")
        instances = []
        for entry in entries:
            if not isinstance(entry, dict) or "name" not in entry:
                raise SuiteError(f"instances: each entry needs a name, got {entry!r}")
            instance = _instance_from(entry, path.parent)
            chosen = tuple(str(s) for s in entry.get("strategies", strategies))
            for strategy in chosen:
                _check_strategy(strategy, instance)
            instances.append(SuiteInstance(str(entry["name"]), instance, chosen))
        return Suite(
            name=str(data.get("name", path.stem)),
            seed=int(data.get("seed", 0)),
            reps=reps,
            deltas=deltas,
            instances=tuple(instances),
            max_comparisons=None if budget is None else int(budget),
        )
    except SuiteError as error:
        raise SuiteError(f"{path}: {error}") from None


def median_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median from order statistics (binomial(n, ½) ranks)."""
    ordered = np.sort(values)
    n = ordered.size
    low_rank = int(binom.ppf((1 - confidence) / 2, n, 0.5))
    high_rank = int(binom.isf((1 - confidence) / 2, n, 0.5))
    return float(ordered[max(low_rank - 1, 0)]), float(ordered[min(high_rank, n - 1)])


def run_cell(
    name: str,
    instance: UnstructuredInstance | StructuredInstance,
    strategy: str,
    delta: float,
    suite: Suite,
    workers: int,
) -> Cell:
    """Run one cell of the suite (all its replications) and summarize it."""
    spec = SimulationSpec(
        instance=instance,
        strategy=strategy,
        delta=delta,
        max_comparisons=suite.max_comparisons,
    )
    start = time.perf_counter()
    replications = run_replications(spec, suite.reps, suite.seed, workers)
    summary = summarize(spec, replications, suite.seed, time.perf_counter() - start)
    comparisons = np.array([r.n_comparisons for r in replications], dtype=float)
    half_width = Z95 * summary["mean_comparisons_sem"]
    error_interval = binomtest(summary["errors"], suite.reps).proportion_ci(0.95, "exact")
    median_low, median_high = median_interval(comparisons)
    return Cell(
        instance=name,
        strategy=strategy,
        delta=delta,
        reps=suite.reps,
        errors=summary["errors"],
        error_rate=summary["error_rate"],
        error_low=float(error_interval.low),
        error_high=float(error_interval.high),
        uncertified=summary["uncertified"],
        mean_comparisons=summary["mean_comparisons"],
        mean_low=summary["mean_comparisons"] - half_width,
        mean_high=summary["mean_comparisons"] + half_width,
        median_comparisons=summary["median_comparisons"],
        median_low=median_low,
        median_high=median_high,
        t_star=summary["t_star"],
        lower_bound=summary["lower_bound"],
        ratio_to_bound=summary["ratio_to_bound"],
        seconds=summary["seconds"],
        fault=peer_fault(strategy) if is_peer(strategy) else None,
    )


def run_suite(
    suite: Suite, workers: int = 1, progress: Callable[[Cell, int, int], None] | None = None
) -> list[Cell]:
    """Run every cell of ``suite``; ``progress(cell, done, total)`` is called after each one.

    Replications of a cell run on a local process pool of ``workers`` processes.
    """
    jobs = [
        (entry, strategy, delta)
        for entry in suite.instances
        for delta in suite.deltas
        for strategy in entry.strategies
    ]
    cells: list[Cell] = []
    for done, (entry, strategy, delta) in enumerate(jobs, start=1):
        cell = run_cell(entry.name, entry.instance, strategy, delta, suite, workers)
        cells.append(cell)
        if progress is not None:
            progress(cell, done, len(jobs))
    reference = {
        (c.instance, c.delta): c.mean_comparisons for c in cells if c.strategy == REFERENCE_STRATEGY
    }
    for cell in cells:
        base = reference.get((cell.instance, cell.delta))
        cell.ratio_to_llmpo = None if base is None else cell.mean_comparisons / base
    return cells


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(cells: list[Cell]) -> str:
    """The results as a Markdown table, faults listed below it."""
    header = (
        "| instance | strategy | δ | error rate [95% CI] | mean comparisons [95% CI] | "
        "median [95% CI] | mean / (T*·log 1/δ) | mean / LLM-PO |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for c in cells:
        flag = " †" if c.fault else ""
        capped = f" ({c.uncertified} uncertified)" if c.uncertified else ""
        rows.append(
            f"| {c.instance} | {c.strategy}{flag} | {c.delta:g} | "
            f"{c.error_rate:.3f} [{c.error_low:.3f}, {c.error_high:.3f}]{capped} | "
            f"{c.mean_comparisons:.0f} [{c.mean_low:.0f}, {c.mean_high:.0f}] | "
            f"{c.median_comparisons:.0f} [{c.median_low:.0f}, {c.median_high:.0f}] | "
            f"{c.ratio_to_bound:.2f} | {_format(c.ratio_to_llmpo)} |"
        )
    faults = sorted({(c.strategy, c.fault) for c in cells if c.fault})
    notes = "".join(f"\n† {strategy}: {fault}\n" for strategy, fault in faults)
    return header + "\n".join(rows) + "\n" + notes


def write_results(cells: list[Cell], suite: Suite, out: Path) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md``, ``results.json`` and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "results.csv",
        "markdown": out / "results.md",
        "json": out / "results.json",
    }
    rows = [asdict(c) for c in cells]
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["markdown"].write_text(
        f"# Benchmark suite {suite.name} (seed {suite.seed}, {suite.reps} replications per cell)"
        f"\n\n{markdown_table(cells)}"
    )
    paths["json"].write_text(
        json.dumps(
            {"suite": suite.name, "seed": suite.seed, "reps": suite.reps, "cells": rows}, indent=2
        )
    )
    paths.update(plot_results(cells, out))
    return paths


def plot_results(cells: list[Cell], out: Path) -> dict[str, Path]:
    """Per instance: mean comparisons vs log(1/δ) with the T*·log(1/δ) line; error rate vs δ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    for name in dict.fromkeys(c.instance for c in cells):
        mine = [c for c in cells if c.instance == name]
        strategies = list(dict.fromkeys(c.strategy for c in mine))
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        # tab20 keeps up to 20 strategies apart (the default cycle repeats after 10).
        colors = plt.get_cmap("tab20")(np.linspace(0.0, 1.0, max(len(strategies), 2)))
        for strategy, color in zip(strategies, colors, strict=False):
            series = sorted((c for c in mine if c.strategy == strategy), key=lambda c: -c.delta)
            x = [math.log(1 / c.delta) for c in series]
            left.errorbar(
                x,
                [c.mean_comparisons for c in series],
                yerr=[
                    [c.mean_comparisons - c.mean_low for c in series],
                    [c.mean_high - c.mean_comparisons for c in series],
                ],
                marker="o",
                capsize=3,
                color=color,
                label=strategy,
            )
            right.plot(
                [c.delta for c in series],
                [c.error_rate for c in series],
                "o-",
                color=color,
                label=strategy,
            )
        deltas = sorted({c.delta for c in mine}, reverse=True)
        t_star = mine[0].t_star
        logs = [math.log(1 / d) for d in deltas]
        line_x = np.linspace(0.9 * min(logs), 1.05 * max(logs), 50)
        left.plot(line_x, t_star * line_x, "k--", label="T*·log(1/δ)")
        left.set(xlabel="log(1/δ)", ylabel="mean comparisons", title=f"{name}: comparisons")
        left.set_yscale("log")
        right.plot(deltas, deltas, "k--", label="error = δ")
        right.set(xscale="log", xlabel="δ", ylabel="error rate", title=f"{name}: error rate")
        left.legend(fontsize=7)
        right.legend(fontsize=7)
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths[f"plot:{name}"] = path
    return paths
