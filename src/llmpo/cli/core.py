"""Commands of the statistics core: ``bound``, ``simulate`` and ``demo``."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from llmpo.cli import app, fail
from llmpo.cli.common import DEFAULT_WORKERS, WorkersOpt, console, error_console
from llmpo.errors import ConfigError
from llmpo.harness import DEFAULT_GRID_TASKS
from llmpo.registry import STRATEGIES as RULES

# Options are declared without numpy, scipy or the harness: a command's --help imports none of
# them (tests/cli/test_startup.py); each command imports what it computes with.
if TYPE_CHECKING:
    from llmpo.harness.instances import StructuredInstance, UnstructuredInstance


#: The built-in stopping thresholds, named here for --help without importing them (numpy);
#: tests/cli/test_startup.py checks them against the registry's.
THRESHOLD_NAMES = ("kt", "gk16-heuristic", "universal", "mixture", "hybrid", "hybrid-lean")


def simulate_rules(structured: bool) -> list[str]:
    """The sampling rules ``simulate`` runs on an unstructured (or a structured) instance: the
    registered built-in rules of that space, the oracle, and the grid (or unstructured LLM-PO on
    the same outcomes); tests/cli/test_startup.py checks them against the harness's."""
    kind = "structured" if structured else "unstructured"
    names = [n for n in RULES.builtin_names() if getattr(RULES.get(n), kind) is not None]
    return [*names, "oracle", "llmpo-unstructured" if structured else "grid"]


InstanceArg = Annotated[Path, typer.Argument(help="Instance file (JSON, see docs/cli.md).")]
DeltaOpt = Annotated[
    float, typer.Option(help="Error probability δ (the default 0.05 is a configuration's too).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
CondorcetOpt = Annotated[
    bool,
    typer.Option(
        "--assume-condorcet",
        help="Class B: assume a Condorcet winner exists (cheaper, only correct if it does).",
    ),
]
TiesOpt = Annotated[
    str,
    typer.Option(
        help="decisive: statistics on the decisive outcomes (ties carry no information); "
        "half: a tie counts as half a win (docs/ties.md).",
    ),
]


def _load(path: Path) -> UnstructuredInstance | StructuredInstance:
    from llmpo.harness.instances import StructuredInstance, load_instance

    instance = load_instance(path, require_winner=False)
    if instance.best is None:
        reason = (
            "several policies share the best utility θᵀx"
            if isinstance(instance, StructuredInstance)
            else "no Condorcet winner (no policy beats every other with p > 1/2)"
        )
        raise fail(f"{path}: {reason}, so there is no optimal policy to identify", code=1)
    return instance


def _summary(
    policies: tuple[str, ...],
    best: int,
    t_star: float,
    delta: float,
    pairs: list[tuple[int, int, float, float]],
    **space: Any,
) -> dict[str, Any]:
    """The bound's JSON: i*, T*, the lower bound at δ and (pair, share, win_prob) per pair."""
    from llmpo.stats.bernoulli import kl_confidence

    return {
        "best": policies[best],
        "best_index": best,
        **space,
        "t_star": t_star,
        "delta": delta,
        "kl_delta": kl_confidence(delta),
        "lower_bound": t_star * kl_confidence(delta),
        "proportions": [
            {"pair": [policies[a], policies[b]], "share": share, "win_prob": win_prob}
            for a, b, share, win_prob in pairs
        ],
    }


def structured_bound_summary(instance: StructuredInstance, delta: float) -> dict[str, Any]:
    """i*, T*(θ), optimal proportions and the lower bound of a structured instance
    (docs/structured.md)."""
    import numpy as np

    from llmpo.stats.structured import characteristic_time

    allocation = characteristic_time(instance.features, instance.theta)
    utilities = instance.utilities
    pairs = [
        (a, b, share, float(1.0 / (1.0 + np.exp(utilities[b] - utilities[a]))))
        for a, b, share in allocation.support()
    ]
    return _summary(
        instance.policies,
        allocation.best,
        allocation.t_star,
        delta,
        pairs,
        **{"class": "structured", "form": allocation.form},
    )


def bound_summary(
    instance: UnstructuredInstance, delta: float, assume_condorcet: bool, ties: str = "decisive"
) -> dict[str, Any]:
    """i*, T*, optimal proportions and the lower bound T*·kl(δ, 1−δ) of the ``ties`` statistic.

    With tie probabilities, ``t_star_decisive`` and ``t_star_half`` give both statistics' T* and
    each pair its tie probability (shares are of all comparisons, ties included).
    """
    import numpy as np

    from llmpo.stats.unstructured import TIES_MODES, optimal_allocation

    allocation, t_stars = None, {}
    for mode in TIES_MODES:
        current = optimal_allocation(
            instance.win_prob, assume_condorcet, tie_prob=instance.tie_prob, ties=mode
        )
        t_stars[f"t_star_{mode}"] = current.t_star
        if mode == ties:
            allocation = current
    if allocation is None:
        raise ConfigError(f"ties: unknown {ties!r}; choose 'decisive' (default) or 'half'")
    pairs = [
        (int(a), int(b), float(allocation.proportions[a, b]), float(instance.win_prob[a, b]))
        for a, b in np.argwhere(np.triu(allocation.proportions) > 0)
    ]
    summary = _summary(
        instance.policies,
        allocation.best,
        allocation.t_star,
        delta,
        pairs,
        **{"class": "B" if assume_condorcet else "A", "ties": ties, **t_stars},
    )
    for row, (a, b, _, _) in zip(summary["proportions"], pairs, strict=True):
        row["tie_prob"] = float(instance.tie_prob[a, b])
    return summary


@app.command()
def bound(
    instance: InstanceArg,
    delta: DeltaOpt = 0.05,
    assume_condorcet: CondorcetOpt = False,
    ties: TiesOpt = "decisive",
    as_json: JsonOpt = False,
) -> None:
    """Optimal policy, characteristic time T*, optimal proportions and the lower bound."""
    from llmpo.harness.instances import StructuredInstance
    from llmpo.stats.unstructured import TIES_MODES

    if not 0 < delta < 0.5:
        raise fail(f"--delta must lie in (0, 0.5), got {delta}")
    if ties not in TIES_MODES:
        raise fail(f"--ties must be decisive or half, got {ties!r}")
    loaded = _load(instance)
    if isinstance(loaded, StructuredInstance):
        summary = structured_bound_summary(loaded, delta)
    else:
        summary = bound_summary(loaded, delta, assume_condorcet, ties)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"optimal policy [bold]{summary['best']}[/]   T* = {summary['t_star']:.4g} (class "
        f"{summary['class']})   lower bound at δ = {delta:g}: "
        f"{summary['lower_bound']:.1f} comparisons "
        f"(= {2 * summary['lower_bound']:.0f} generation calls, 2 per comparison)"
    )
    tied = "tie_prob" in summary["proportions"][0] and any(
        row["tie_prob"] for row in summary["proportions"]
    )
    if tied:
        console.print(
            f"with ties: T* = {summary['t_star_decisive']:.4g} on the decisive outcomes, "
            f"{summary['t_star_half']:.4g} counting a tie as half a win "
            f"({summary['t_star_half'] / summary['t_star_decisive']:.2f}×)"
        )
    table = Table("pair", "P(first ≻ second)", *(["P(tie)"] if tied else []), "optimal share")
    for row in summary["proportions"]:
        table.add_row(
            " vs ".join(row["pair"]),
            f"{row['win_prob']:.3f}",
            *([f"{row['tie_prob']:.3f}"] if tied else []),
            f"{row['share']:.4f}",
        )
    console.print(table)


@app.command(name="simulate")
def simulate_command(
    instance: InstanceArg,
    strategy: Annotated[
        str,
        typer.Option(
            help=f"Sampling rule: {', '.join(simulate_rules(False))}, or a duelpy peer "
            "duelpy:<ClassName> (extra llmpo[peers]); on a structured instance "
            f"{', '.join(simulate_rules(True))}.",
        ),
    ] = "llmpo",
    delta: DeltaOpt = 0.05,
    reps: Annotated[int, typer.Option(min=1, help="Monte Carlo replications.")] = 100,
    seed: Annotated[int, typer.Option(help="Master seed (same seed, same numbers).")] = 0,
    workers: WorkersOpt = DEFAULT_WORKERS,
    threshold: Annotated[
        str | None,
        typer.Option(
            help=f"Stopping threshold: {', '.join(THRESHOLD_NAMES)}, or an installed "
            "plug-in's (docs/plugins.md). Default: kt, or hybrid-lean on a structured instance."
        ),
    ] = None,
    epsilon: Annotated[float, typer.Option(help="Indifference margin ε.")] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs asked at once.")] = 1,
    max_comparisons: Annotated[
        int | None, typer.Option(min=1, help="Comparison budget per replication.")
    ] = None,
    assume_condorcet: CondorcetOpt = False,
    ties: TiesOpt = "decisive",
    tasks: Annotated[
        int,
        typer.Option(
            min=1,
            help="Selection tasks N of --strategy grid (every policy answers each once: K·N "
            "generations, every pair of answers judged).",
        ),
    ] = DEFAULT_GRID_TASKS,
    as_json: JsonOpt = False,
) -> None:
    """Monte Carlo of a strategy on an instance: error rate, comparisons and calls used."""
    from llmpo.harness.peers import is_peer
    from llmpo.harness.simulate import simulate

    loaded = _load(instance)
    summary = simulate(
        loaded,
        strategy,
        delta,
        reps,
        seed,
        workers,
        threshold=threshold,
        epsilon=epsilon,
        assume_condorcet=assume_condorcet,
        batch_size=batch_size,
        max_comparisons=max_comparisons,
        **({} if is_peer(strategy) else {"ties": ties, "tasks": tasks}),
    )
    summary["instance"] = str(instance)
    if summary.get("peer_fault"):
        error_console.print(f"[bold yellow]warning:[/] {strategy}: {summary['peer_fault']}")
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table("quantity", "value", title=f"{strategy} on {instance} (δ = {delta:g})")
    low, high = summary["error_rate_ci95"]
    table.add_row("error rate", f"{summary['error_rate']:.4f}  (95% CI {low:.4f}–{high:.4f})")
    table.add_row(
        "mean comparisons",
        f"{summary['mean_comparisons']:.1f} ± {summary['mean_comparisons_sem']:.1f} "
        "(std. error of the mean)",
    )
    table.add_row("median comparisons", f"{summary['median_comparisons']:.0f}")
    if summary.get("mean_generation_calls") is not None:
        table.add_row(
            "mean generation calls",
            f"{summary['mean_generation_calls']:.1f}"
            + (
                f"  (grid: {loaded.n_policies} policies × {summary['grid_tasks']} tasks)"
                if summary.get("grid_tasks")
                else "  (2 per comparison)"
            ),
        )
    table.add_row("certified", f"{100 * summary['certified_rate']:.1f}% of runs")
    table.add_row("T*", f"{summary['t_star']:.4g}")
    table.add_row("lower bound T*·kl(δ,1−δ)", f"{summary['lower_bound']:.1f}")
    table.add_row("mean / (T*·log 1/δ)", f"{summary['ratio_to_bound']:.3f}")
    table.add_row(
        "unfinished (stopped by the cap)",
        f"{summary['unfinished']} of {summary['reps']} (cap {summary['max_comparisons']:,})",
    )
    console.print(table)


def demo_instance() -> UnstructuredInstance:
    """The built-in synthetic instance: six prompt × temperature policies, a cycle, 10% ties."""
    from llmpo.harness.instances import UnstructuredInstance, load_instance

    source = resources.files("llmpo") / "data" / "demo.json"
    with resources.as_file(source) as path:
        instance = load_instance(path)
    assert isinstance(instance, UnstructuredInstance)  # the file shipped in the package
    return instance


@app.command()
def demo(
    delta: DeltaOpt = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
    reps: Annotated[int, typer.Option(min=2, help="Replications for the saving figure.")] = 40,
    workers: WorkersOpt = DEFAULT_WORKERS,
) -> None:
    """Run LLM-PO on a built-in synthetic instance and measure its saving over uniform allocation.

    No API key, no network: outcomes are drawn from a known preference matrix of six
    prompt/temperature policies (the truth is used only to score the answer).
    """
    from llmpo.environments.synthetic import SyntheticEnvironment
    from llmpo.experiment import Experiment
    from llmpo.harness.simulate import simulate

    instance = demo_instance()
    environment = SyntheticEnvironment(instance, seed)
    experiment = Experiment(instance.policies, delta=delta, seed=seed)
    console.print(
        f"[bold]llmpo demo[/]: {instance.n_policies} policies, δ = {delta:g}, "
        "outcomes simulated from a known preference matrix"
    )
    while not experiment.done:
        for a, b in experiment.ask(8):
            experiment.tell(a, b, environment.outcome(a, b))
            if experiment.done:
                break
    result = experiment.result
    correct = "correct" if result.best == instance.best else "WRONG"
    console.print(
        f"winner: [bold green]{result.best_name}[/] (certified at 1 − δ = {1 - delta:g}; "
        f"{correct} against the hidden truth) after {result.n_comparisons} comparisons "
        f"({2 * result.n_comparisons} generation calls)"
    )
    table = Table(
        "rival",
        "comparisons",
        "wins / ties / losses",
        "P̂(winner wins | decided)",
        "GLR statistic",
        "threshold",
    )
    for index, rival in enumerate(result.rivals):
        record = result.rival_record(index)
        table.add_row(
            result.policies[rival],
            f"{result.rival_comparisons[index]}",
            f"{record['wins']:.0f} / {record['ties']:.0f} / {record['losses']:.0f}",
            f"{result.rival_win_prob[index]:.3f}",
            f"{result.statistics[index]:.2f}",
            f"{result.thresholds[index]:.2f}",
        )
    console.print(table)
    console.print(f"measuring the saving over uniform allocation ({reps} runs each) …")
    summaries = {
        name: simulate(instance, name, delta, reps, seed, workers) for name in ("llmpo", "uniform")
    }
    adaptive, uniform = summaries["llmpo"], summaries["uniform"]
    saving = 1.0 - adaptive["mean_comparisons"] / uniform["mean_comparisons"]
    console.print(
        f"LLM-PO: {adaptive['mean_comparisons']:.0f} comparisons on average "
        f"({adaptive['errors']} wrong of {reps}); uniform: {uniform['mean_comparisons']:.0f} "
        f"({uniform['errors']} wrong); saving [bold]{100 * saving:.0f}%[/] "
        f"({uniform['mean_comparisons'] / adaptive['mean_comparisons']:.2f}× fewer). "
        f"Lower bound T*·kl(δ,1−δ) = {adaptive['lower_bound']:.0f}."
    )
    if not math.isfinite(saving):
        raise typer.Exit(1)
