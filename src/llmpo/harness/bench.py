"""Benchmark suites: instances × strategies × δ values, replicated, into tables and plots.

A suite is a YAML file::

    name: paper
    seed: 0                 # master seed; every cell uses it (common random numbers)
    reps: 100               # replications per cell
    deltas: [0.1, 0.01]
    max_comparisons: 200000 # optional budget per replication (a capped run counts as it ended)
    strategies:             # a name, or a mapping with options
      - llmpo
      - top-two
      - {name: llmpo, assume_condorcet: true}                     # label "llmpo[assume_condorcet]"
      - {name: "duelpy:PlackettLucePACItem", options: {epsilon: 0.0}}
    instances:
      - {name: BT5, reference: BT5}                     # llmpo.harness.reference
      - {name: GAP20, bradley_terry: [0, -0.4, ...]}    # utilities of a Bradley–Terry model
      - {name: mine, file: instances/mine.json}         # an instance file, relative
        strategies: [llmpo, uniform]                    # optional, per instance

A strategy mapping takes ``name``, an optional ``label`` (the row's name in the tables; by default
the name followed by the options in brackets), the experiment options ``assume_condorcet``,
``epsilon``, ``threshold``, ``batch_size`` and ``ties`` (for llmpo's own strategies), ``tasks``
(the N of the ``grid`` baseline: every policy answers N tasks once, K·N generations, then the same
stopping rule), and ``options``: the constructor arguments of a duelpy peer by keyword
(:func:`llmpo.harness.peers.check_peer_options`).

Every cell runs :func:`llmpo.harness.simulate.run_replications` with the suite's seed, so
strategies are compared on the same outcome streams, and the numbers do not depend on the number
of workers.
Per cell the table holds the error rate with its exact (Clopper–Pearson) 95% interval, the mean
comparisons with a normal 95% interval, the mean generation calls (what users pay: 2 per
comparison without shared answers, K·N for the grid) and the share of runs certified, the median
with its distribution-free 95% interval (order statistics), the ratio to the lower bound
T*·log(1/δ), and the ratio of means to LLM-PO's in the same instance and δ, and the allocation
used (mean share of comparisons per pair) beside the optimal proportions w* of the lower bound.

Cells can run on a local process pool (default) or on Ray (:mod:`llmpo.harness.scaleout`), with
the same numbers, and can be kept in a SQLite file (:class:`llmpo.harness.benchstore.CellStore`)
so that an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binom, binomtest

from llmpo import __version__
from llmpo.errors import ConfigError
from llmpo.harness.benchstore import CellStore
from llmpo.harness.instances import (
    InstanceError,
    StructuredInstance,
    UnstructuredInstance,
    bradley_terry_matrix,
    load_instance,
    make_unstructured_instance,
)
from llmpo.harness.peers import check_peer_options, is_peer, peer_class_name, peer_fault, peer_note
from llmpo.harness.reference import reference_instance
from llmpo.harness.simulate import (
    STRATEGIES,
    STRUCTURED_STRATEGIES,
    ChunkRunner,
    SimulationSpec,
    run_replications,
    summarize,
    with_default_cap,
)
from llmpo.stats.structured import characteristic_time
from llmpo.stats.unstructured import optimal_allocation
from llmpo.yamlsafe import read_yaml

#: The strategy whose mean the column ``ratio_to_llmpo`` divides by.
REFERENCE_STRATEGY = "llmpo"
#: z for a two-sided 95% normal interval.
Z95 = 1.959963984540054
#: Options of a strategy entry that go to the experiment (``SimulationSpec`` fields).
EXPERIMENT_OPTIONS = ("assume_condorcet", "epsilon", "threshold", "batch_size", "ties", "tasks")
#: Pairs whose used share and optimal share are both below this are left out of ``allocation``.
ALLOCATION_FLOOR = 1e-3


class SuiteError(ConfigError):
    """A suite file that cannot be run; the message names the field."""


@dataclass(frozen=True)
class StrategySetting:
    """A strategy with its options, as one row label of the tables.

    Attributes
    ----------
    label : str
        The name in the tables (``strategy`` column).
    name : str
        The strategy run (``llmpo``, ``knockout``, ``duelpy:<ClassName>``, …).
    options : dict
        Experiment options (:data:`EXPERIMENT_OPTIONS`).
    peer_options : dict
        Constructor arguments of a duelpy peer.
    """

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    peer_options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The options as JSON ('' when none), for the tables."""
        if not self.options and not self.peer_options:
            return ""
        merged = {**self.options, **({"options": self.peer_options} if self.peer_options else {})}
        return json.dumps(merged, sort_keys=True)


@dataclass(frozen=True)
class SuiteInstance:
    """One instance of a suite and the strategies run on it (``strategies`` are the labels)."""

    name: str
    instance: UnstructuredInstance | StructuredInstance
    strategies: tuple[str, ...]
    settings: dict[str, StrategySetting] = field(default_factory=dict)

    def setting(self, label: str) -> StrategySetting:
        """The strategy and options behind a label."""
        return self.settings.get(label) or StrategySetting(label, label)


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
    #: For a peer: the easier problem it solves (ε > 0, a model assumed), or None.
    note: str | None = None
    #: The strategy's options as JSON ('' when none).
    settings: str = ""
    #: Per pair (a, b, mean share of comparisons used, optimal share w*), pairs where either is
    #: at least 0.1%; JSON output only.
    allocation: list[list[float]] = field(default_factory=list, compare=False)
    #: Mean answers generated per run (None for a peer's cell stored before it was counted).
    mean_generation_calls: float | None = None
    #: Share of runs that certified their answer.
    certified_rate: float | None = None


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
        try:
            peer_class_name(strategy)
        except ValueError as error:
            raise SuiteError(str(error)) from None
        if isinstance(instance, StructuredInstance):
            raise SuiteError(f"strategies: {strategy} runs on unstructured instances only")
        return
    known = STRUCTURED_STRATEGIES if isinstance(instance, StructuredInstance) else STRATEGIES
    if strategy not in known:
        raise SuiteError(f"strategies: unknown {strategy!r}; choose one of {', '.join(known)}")


def _setting_from(entry: Any) -> StrategySetting:
    """A strategy entry: a name, or a mapping with name, label, options (see the module)."""
    if isinstance(entry, str):
        return StrategySetting(entry, entry)
    if not isinstance(entry, dict) or "name" not in entry:
        raise SuiteError(
            f"strategies: each entry is a name or a mapping with a name, got {entry!r}"
        )
    name = str(entry["name"])
    unknown = set(entry) - {"name", "label", "options", *EXPERIMENT_OPTIONS}
    if unknown:
        raise SuiteError(
            f"strategies: {name}: unknown field(s) {', '.join(sorted(unknown))}; use label, "
            f"options (duelpy constructor arguments) or {', '.join(EXPERIMENT_OPTIONS)}"
        )
    options = {key: entry[key] for key in EXPERIMENT_OPTIONS if key in entry}
    peer_options = entry.get("options") or {}
    if not isinstance(peer_options, dict):
        raise SuiteError(f"strategies: {name}: options must be a mapping of argument: value")
    if is_peer(name):
        if options:
            raise SuiteError(
                f"strategies: {name}: {', '.join(options)} not supported by duelpy peers; "
                "give their own arguments under options"
            )
        try:
            check_peer_options(name, peer_options)
        except ValueError as error:
            raise SuiteError(f"strategies: {error}") from None
    elif peer_options:
        raise SuiteError(
            f"strategies: {name}: options are constructor arguments of duelpy peers; "
            f"use {', '.join(EXPERIMENT_OPTIONS)} for llmpo's strategies"
        )
    shown = {**options, **peer_options}
    default_label = name + (
        "[" + ",".join(k if v is True else f"{k}={v}" for k, v in shown.items()) + "]"
        if shown
        else ""
    )
    return StrategySetting(str(entry.get("label", default_label)), name, options, peer_options)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file.

    Raises
    ------
    SuiteError
        Naming the file and the field at fault.
    """
    path = Path(path)
    try:
        data = read_yaml(path)
    except ConfigError as error:
        raise SuiteError(str(error)) from None
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
        listed = data.get("strategies")
        strategies: list[Any] = [REFERENCE_STRATEGY] if listed is None else listed
        entries = data.get("instances") or []
        if not entries:
            raise SuiteError("instances: the suite lists none")
        instances = []
        for entry in entries:
            if not isinstance(entry, dict) or "name" not in entry:
                raise SuiteError(f"instances: each entry needs a name, got {entry!r}")
            instance = _instance_from(entry, path.parent)
            settings = [_setting_from(s) for s in entry.get("strategies", strategies)]
            labels = [setting.label for setting in settings]
            if len(set(labels)) < len(labels):
                raise SuiteError(
                    f"strategies: {entry['name']!r} lists a label twice; give each a label"
                )
            for setting in settings:
                _check_strategy(setting.name, instance)
            instances.append(
                SuiteInstance(
                    str(entry["name"]),
                    instance,
                    tuple(labels),
                    {setting.label: setting for setting in settings},
                )
            )
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


def optimal_shares(spec: SimulationSpec) -> NDArray[np.float64]:
    """w* of the cell's lower bound per pair, in the order of ``triu_indices(K, 1)``."""
    k = spec.instance.n_policies
    if isinstance(spec.instance, StructuredInstance):
        support = characteristic_time(spec.instance.features, spec.instance.theta).support()
        matrix = np.zeros((k, k))
        for a, b, share in support:
            matrix[min(a, b), max(a, b)] += share
        return matrix[np.triu_indices(k, 1)]
    allocation = optimal_allocation(
        spec.instance.win_prob,
        spec.assume_condorcet,
        spec.epsilon,
        spec.instance.tie_prob,
        spec.ties,
    )
    proportions = np.asarray(allocation.proportions, float)
    upper = np.triu(proportions) + np.tril(proportions).T
    shares = upper[np.triu_indices(k, 1)]
    return shares / shares.sum()


def _allocation(
    spec: SimulationSpec, counts: list[NDArray[np.float64] | None]
) -> list[list[float]]:
    used = [c / c.sum() for c in counts if c is not None and c.sum() > 0]
    if not used:
        return []
    mean = np.mean(used, axis=0)
    optimal = optimal_shares(spec)
    rows, cols = np.triu_indices(spec.instance.n_policies, 1)
    keep = np.flatnonzero((mean >= ALLOCATION_FLOOR) | (optimal >= ALLOCATION_FLOOR))
    return [
        [int(rows[i]), int(cols[i]), round(float(mean[i]), 6), round(float(optimal[i]), 6)]
        for i in keep
    ]


def cell_spec(entry: SuiteInstance, label: str, delta: float, suite: Suite) -> SimulationSpec:
    """The simulation of one cell: strategy, options, δ and the suite's budget."""
    setting = entry.setting(label)
    return with_default_cap(  # no budget: every replication still ends (simulate.default_cap)
        SimulationSpec(
            instance=entry.instance,
            strategy=setting.name,
            delta=delta,
            max_comparisons=suite.max_comparisons,
            peer_options=tuple(setting.peer_options.items()),
            **setting.options,
        )
    )


def cell_key(entry: SuiteInstance, label: str, delta: float, suite: Suite) -> str:
    """A fingerprint of everything that decides a cell's numbers (for the cell store)."""
    setting = entry.setting(label)
    content = {
        "instance": entry.instance.to_json(),
        "name": entry.name,
        "label": label,
        "strategy": setting.name,
        "settings": setting.describe(),
        "delta": delta,
        "reps": suite.reps,
        "seed": suite.seed,
        "max_comparisons": suite.max_comparisons,
        # A cell computed by another release (of llmpo, or of duelpy for a peer) is not reused.
        "versions": _code_versions(setting.name),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _code_versions(strategy: str) -> dict[str, str | None]:
    """The releases whose code computes a cell of ``strategy``."""
    versions: dict[str, str | None] = {"llmpo": __version__}
    if is_peer(strategy):
        try:
            versions["duelpy"] = importlib.metadata.version("duelpy")
        except importlib.metadata.PackageNotFoundError:
            versions["duelpy"] = None
    return versions


def run_cell(
    name: str,
    instance: UnstructuredInstance | StructuredInstance,
    strategy: str,
    delta: float,
    suite: Suite,
    workers: int,
    backend: ChunkRunner | None = None,
    setting: StrategySetting | None = None,
) -> Cell:
    """Run one cell of the suite (all its replications) and summarize it.

    ``strategy`` is the row's label; ``setting`` gives the strategy and options behind it
    (default: the label is the strategy's name, no options).
    """
    setting = setting or StrategySetting(strategy, strategy)
    entry = SuiteInstance(name, instance, (strategy,), {strategy: setting})
    spec = cell_spec(entry, strategy, delta, suite)
    start = time.perf_counter()
    replications = run_replications(spec, suite.reps, suite.seed, workers, backend)
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
        fault=peer_fault(setting.name) if is_peer(setting.name) else None,
        note=peer_note(setting.name, setting.peer_options) if is_peer(setting.name) else None,
        settings=setting.describe(),
        allocation=_allocation(spec, [r.pair_counts for r in replications]),
        mean_generation_calls=summary["mean_generation_calls"],
        certified_rate=summary["certified_rate"],
    )


def run_suite(
    suite: Suite,
    workers: int = 1,
    progress: Callable[[Cell, int, int, bool], None] | None = None,
    backend: ChunkRunner | None = None,
    store: CellStore | None = None,
) -> list[Cell]:
    """Run every cell of ``suite``; ``progress(cell, done, total, stored)`` follows each one.

    Replications of a cell run on a local process pool of ``workers`` processes, or on
    ``backend`` (:class:`llmpo.harness.scaleout.RayBackend`). With a ``store``, a cell already in it
    (same instance, strategy, options, δ, reps, seed and budget) is read back instead of run
    (``stored`` is then True), and each new cell is saved as soon as it is done, so an
    interrupted suite resumes where it stopped and gives the same table.
    """
    jobs = [
        (entry, strategy, delta)
        for entry in suite.instances
        for delta in suite.deltas
        for strategy in entry.strategies
    ]
    cells: list[Cell] = []
    for done, (entry, strategy, delta) in enumerate(jobs, start=1):
        key = cell_key(entry, strategy, delta, suite)
        row = store.get(key) if store is not None else None
        cell = None if row is None else cell_from_dict(row)
        stored = cell is not None
        if cell is not None and is_peer(entry.setting(strategy).name):
            # What the output states about a peer follows the current code, stored or not.
            setting = entry.setting(strategy)
            cell.fault = peer_fault(setting.name)
            cell.note = peer_note(setting.name, setting.peer_options)
        if cell is None:
            cell = run_cell(
                entry.name,
                entry.instance,
                strategy,
                delta,
                suite,
                workers,
                backend,
                entry.setting(strategy),
            )
            if store is not None:
                store.put(key, asdict(cell))
        cells.append(cell)
        if progress is not None:
            progress(cell, done, len(jobs), stored)
    reference = {
        (c.instance, c.delta): c.mean_comparisons for c in cells if c.strategy == REFERENCE_STRATEGY
    }
    for cell in cells:
        base = reference.get((cell.instance, cell.delta))
        cell.ratio_to_llmpo = None if base is None else cell.mean_comparisons / base
    return cells


def cell_from_dict(row: dict[str, Any]) -> Cell:
    """A :class:`Cell` from its :func:`dataclasses.asdict` form (JSON results, the store)."""
    return Cell(**row)


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_calls(value: float | None) -> str:
    """Mean calls rounded to a whole number, or "–" when not counted."""
    return "–" if value is None else f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def markdown_table(cells: list[Cell]) -> str:
    """The results as a Markdown table, faults listed below it."""
    header = (
        "| instance | strategy | δ | error rate [95% CI] | mean comparisons [95% CI] | "
        "median [95% CI] | mean generation calls | certified | mean / (T*·log 1/δ) | "
        "mean / LLM-PO |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for c in cells:
        flag = (" †" if c.fault else "") + (" ‡" if c.note else "")
        capped = f" ({c.uncertified} uncertified)" if c.uncertified else ""
        rows.append(
            f"| {c.instance} | {c.strategy}{flag} | {c.delta:g} | "
            f"{c.error_rate:.3f} [{c.error_low:.3f}, {c.error_high:.3f}]{capped} | "
            f"{c.mean_comparisons:.0f} [{c.mean_low:.0f}, {c.mean_high:.0f}] | "
            f"{c.median_comparisons:.0f} [{c.median_low:.0f}, {c.median_high:.0f}] | "
            f"{format_calls(c.mean_generation_calls)} | {_percent(c.certified_rate)} | "
            f"{c.ratio_to_bound:.2f} | {_format(c.ratio_to_llmpo)} |"
        )
    faults = sorted({(c.strategy, c.fault) for c in cells if c.fault})
    notes = "".join(f"\n† {strategy}: {fault}\n" for strategy, fault in faults)
    easier = sorted({(c.strategy, c.note) for c in cells if c.note})
    notes += "".join(f"\n‡ {strategy}: {note}\n" for strategy, note in easier)
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
        columns = [key for key in rows[0] if key != "allocation"]
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
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
    """Per instance: mean comparisons vs log(1/δ) with the T*·log(1/δ) line; error rate vs δ;
    allocation used vs w* at the smallest δ (one point per pair and strategy: the mean share of
    comparisons it spent on the pair against the pair's optimal proportion, with the diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    for name in dict.fromkeys(c.instance for c in cells):
        mine = [c for c in cells if c.instance == name]
        strategies = list(dict.fromkeys(c.strategy for c in mine))
        figure, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.6))
        smallest = min(c.delta for c in mine)
        top = 0.0
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
            used = [c for c in series if c.delta == smallest and c.allocation]
            if used:
                optimal = [row[3] for row in used[0].allocation]
                share = [row[2] for row in used[0].allocation]
                top = max(top, *optimal, *share)
                third.scatter(optimal, share, s=14, color=color, label=strategy, alpha=0.8)
        deltas = sorted({c.delta for c in mine}, reverse=True)
        t_star = mine[0].t_star
        logs = [math.log(1 / d) for d in deltas]
        line_x = np.linspace(0.9 * min(logs), 1.05 * max(logs), 50)
        left.plot(line_x, t_star * line_x, "k--", label="T*·log(1/δ)")
        left.set(xlabel="log(1/δ)", ylabel="mean comparisons", title=f"{name}: comparisons")
        left.set_yscale("log")
        right.plot(deltas, deltas, "k--", label="error = δ")
        right.set(xscale="log", xlabel="δ", ylabel="error rate", title=f"{name}: error rate")
        third.plot([0, top or 1.0], [0, top or 1.0], "k--", label="used = w*")
        third.set(
            xlabel="optimal share w* (pair)",
            ylabel="share of comparisons used",
            title=f"{name}: allocation at δ = {smallest:g}",
        )
        left.legend(fontsize=7)
        right.legend(fontsize=7)
        third.legend(fontsize=6)
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths[f"plot:{name}"] = path
    return paths
