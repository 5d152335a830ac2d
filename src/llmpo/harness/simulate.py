"""Monte Carlo of a sampling strategy on a known instance: error rate and comparisons used.

Replication r draws all its randomness from child r of ``SeedSequence(seed)``, so the numbers are
the same whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binomtest

from llmpo.environments.structured import StructuredEnvironment
from llmpo.environments.synthetic import SyntheticEnvironment
from llmpo.errors import ConfigError
from llmpo.experiment import Experiment
from llmpo.harness import DEFAULT_GRID_TASKS
from llmpo.harness.instances import StructuredInstance, UnstructuredInstance
from llmpo.harness.peers import is_peer, peer_class_name, peer_fault, run_peer
from llmpo.orphans import exit_with_parent
from llmpo.spaces import Space, Unstructured
from llmpo.stats.bernoulli import kl_confidence
from llmpo.stats.structured import characteristic_time
from llmpo.stats.unstructured import check_ties_mode, optimal_allocation, pair_information
from llmpo.strategies.base import Oracle, Strategy
from llmpo.strategies.baselines import UNSTRUCTURED_BASELINES
from llmpo.strategies.structured_baselines import STRUCTURED_BASELINES

#: The grid baseline: every policy answers each of N tasks once, every pair of answers is judged.
GRID = "grid"
STRATEGIES = ("llmpo", "llmpo-tracking", "uniform", "oracle", *UNSTRUCTURED_BASELINES, GRID)
# On a structured instance: the structured rules, uniform and oracle with the structured stopping
# rule, and unstructured LLM-PO on the same outcomes for comparison.
STRUCTURED_STRATEGIES = (
    "llmpo",
    "llmpo-tracking",
    "uniform",
    "oracle",
    *STRUCTURED_BASELINES,
    "llmpo-unstructured",
)


@dataclass(frozen=True)
class SimulationSpec:
    """Everything one replication needs (picklable, sent to worker processes)."""

    instance: UnstructuredInstance | StructuredInstance
    strategy: str
    delta: float
    threshold: str | None = None  # None: the space's default (kt; hybrid-lean when structured)
    epsilon: float = 0.0
    assume_condorcet: bool = False
    batch_size: int = 1
    max_comparisons: int | None = None
    #: How the statistics treat ties: "decisive" (default) or "half" (docs/ties.md).
    ties: str = "decisive"
    #: Selection tasks N of the ``grid`` baseline (K·N generations).
    tasks: int = DEFAULT_GRID_TASKS
    #: Constructor arguments of a duelpy peer, by keyword, as (name, value) pairs.
    peer_options: tuple[tuple[str, Any], ...] = ()

    @property
    def structured(self) -> bool:
        """True when the structured model runs (a structured instance, not llmpo-unstructured)."""
        structured_instance = isinstance(self.instance, StructuredInstance)
        return structured_instance and self.strategy != "llmpo-unstructured"

    def make_space(self) -> Space:
        """The policy space the experiment runs in."""
        if self.structured:
            return self.instance.space()  # type: ignore[union-attr]
        return Unstructured(self.instance.policies)

    def make_strategy(self) -> str | Strategy:
        """The strategy object; ``oracle`` tracks the instance's true optimal proportions."""
        if self.strategy == "llmpo-unstructured":
            return "llmpo"
        if self.strategy != "oracle":
            return self.strategy
        if isinstance(self.instance, StructuredInstance):
            support = characteristic_time(self.instance.features, self.instance.theta).support()
            return Oracle([(a, b) for a, b, _ in support], [share for _, _, share in support])
        allocation = optimal_allocation(
            self.instance.win_prob,
            self.assume_condorcet,
            self.epsilon,
            self.instance.tie_prob,
            self.ties,
        )
        upper = np.argwhere(np.triu(allocation.proportions) > 0)
        return Oracle(
            [(int(a), int(b)) for a, b in upper],
            [float(allocation.proportions[a, b]) for a, b in upper],
        )


@dataclass(frozen=True)
class Replication:
    """Outcome of one simulated experiment."""

    best: int
    certified: bool
    n_comparisons: int
    #: Comparisons told per pair (a, b), a < b, in the order of ``numpy.triu_indices(K, 1)``.
    pair_counts: NDArray[np.float64] | None = field(default=None, compare=False, repr=False)
    #: Answers generated: 2 per comparison when no answer is shared (K·N for the grid); None
    #: when unknown (duelpy peers count comparisons only).
    generation_calls: int | None = None


def run_replication(spec: SimulationSpec, seed: np.random.SeedSequence) -> Replication:
    """Run one experiment to its end on fresh synthetic outcomes.

    Comparisons are counted when asked: with a batch size above 1, the pairs still pending when
    the experiment stops were paid for too. A duelpy peer runs its own loop (:func:`run_peer`)
    on the environment seeded the same way.
    """
    if is_peer(spec.strategy):
        if not isinstance(spec.instance, UnstructuredInstance):
            raise ConfigError(f"strategy: {spec.strategy} runs on unstructured instances only")
        peer = run_peer(
            spec.strategy,
            spec.instance,
            spec.delta,
            seed,
            spec.max_comparisons,
            dict(spec.peer_options),
        )
        return Replication(
            peer.best,
            peer.finished,
            peer.n_comparisons,
            peer.pair_counts,
            GENERATIONS_PER_COMPARISON * peer.n_comparisons,
        )
    if spec.strategy == GRID:
        return run_grid(spec, seed)
    env_seed, strategy_seed = seed.spawn(2)
    environment = (
        StructuredEnvironment(spec.instance, env_seed)
        if isinstance(spec.instance, StructuredInstance)
        else SyntheticEnvironment(spec.instance, env_seed)
    )
    experiment = Experiment(
        spec.make_space(),
        delta=spec.delta,
        strategy=spec.make_strategy(),
        threshold=spec.threshold,
        epsilon=spec.epsilon,
        assume_condorcet=spec.assume_condorcet,
        max_comparisons=spec.max_comparisons,
        ties=spec.ties,
        seed=int(strategy_seed.generate_state(1)[0]),
    )
    while not experiment.done:
        for a, b in experiment.ask(spec.batch_size):
            experiment.tell(a, b, environment.outcome(a, b))
            if experiment.done:
                break
    result = experiment.result
    comparisons = experiment.n_comparisons + experiment.n_pending
    # Above DENSE_RESULT_MAX_POLICIES a structured result carries no K×K counts (None).
    counts = result.counts
    return Replication(
        best=result.best,
        certified=result.certified,
        n_comparisons=comparisons,
        pair_counts=None if counts is None else counts[np.triu_indices(counts.shape[0], 1)],
        generation_calls=GENERATIONS_PER_COMPARISON * comparisons,
    )


#: Fresh answers per comparison when none is shared: one from each policy.
GENERATIONS_PER_COMPARISON = 2


def run_grid(spec: SimulationSpec, seed: np.random.SeedSequence) -> Replication:
    """The grid baseline: every policy answers each of ``spec.tasks`` tasks once (K·N
    generations) and every pair of the K answers of a task is judged (N·K(K−1)/2 judge calls);
    then the experiment's stopping rule (δ, threshold, ε, class, ties as in ``spec``) says
    whether it certifies. Outcomes are told task by task; once certified, the remaining
    comparisons are still paid (the grid is fixed in advance) but no longer told.
    """
    if isinstance(spec.instance, StructuredInstance):
        raise ConfigError("strategy: grid runs on unstructured instances only")
    environment = SyntheticEnvironment(spec.instance, seed.spawn(1)[0])
    experiment = Experiment(
        Unstructured(spec.instance.policies),
        delta=spec.delta,
        strategy="uniform",  # never asked: the grid decides what is compared
        threshold=spec.threshold,
        epsilon=spec.epsilon,
        assume_condorcet=spec.assume_condorcet,
        ties=spec.ties,
    )
    k = spec.instance.n_policies
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    for _ in range(spec.tasks):
        for a, b in pairs:
            if not experiment.done:
                experiment.tell(a, b, environment.outcome(a, b))
    result = experiment.result
    return Replication(
        best=result.best,
        certified=result.certified,
        n_comparisons=spec.tasks * len(pairs),
        pair_counts=np.full(len(pairs), float(spec.tasks)),
        generation_calls=k * spec.tasks,
    )


def _run_chunk(spec: SimulationSpec, seeds: list[np.random.SeedSequence]) -> list[Replication]:
    return [run_replication(spec, seed) for seed in seeds]


class ChunkRunner(Protocol):
    """Where replications run: maps :func:`run_chunk` over chunks of seeds, results in order.

    The local process pool is the default; :class:`llmpo.harness.scaleout.RayBackend` runs the
    chunks on a Ray cluster. Replication r always draws from child r of the master seed, so the
    backend cannot change the numbers.
    """

    def map_chunks(
        self, spec: SimulationSpec, chunks: list[list[np.random.SeedSequence]]
    ) -> list[list[Replication]]:
        """``[run_chunk(spec, chunk) for chunk in chunks]``, computed wherever."""
        ...


def run_chunk(spec: SimulationSpec, seeds: list[np.random.SeedSequence]) -> list[Replication]:
    """Run one replication per seed (the unit of work sent to a worker)."""
    return _run_chunk(spec, seeds)


def run_replications(
    spec: SimulationSpec,
    reps: int,
    seed: int,
    workers: int = 1,
    backend: ChunkRunner | None = None,
) -> list[Replication]:
    """Run ``reps`` replications, in ``workers`` processes; results in replication order.

    With ``backend`` (e.g. :class:`llmpo.harness.scaleout.RayBackend`) the chunks run there instead
    of on a local process pool; ``workers`` then only sets the number of chunks (4 per worker).
    """
    seeds = np.random.SeedSequence(seed).spawn(reps)
    if backend is None and (workers <= 1 or reps <= 1):
        return _run_chunk(spec, seeds)
    # A few chunks per worker balances load without paying a process round-trip per replication.
    n_chunks = min(reps, 4 * max(workers, 1))
    chunks = [seeds[i::n_chunks] for i in range(n_chunks)]
    if backend is not None:
        chunk_results = backend.map_chunks(spec, chunks)
    else:
        # Each worker ends when this process does, even when it is SIGKILLed (no orphans).
        with ProcessPoolExecutor(
            max_workers=workers, initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            chunk_results = list(pool.map(_run_chunk, [spec] * n_chunks, chunks))
    ordered: list[Replication | None] = [None] * reps
    for i, results in enumerate(chunk_results):
        for offset, replication in enumerate(results):
            ordered[i + offset * n_chunks] = replication
    return [r for r in ordered if r is not None]


#: Without a budget, a replication stops after this many times the lower bound T*·log(1/δ)
#: (and at least DEFAULT_CAP_MINIMUM comparisons): a baseline such as knockout on two nearly
#: tied policies would otherwise never end. Reported as "unfinished".
DEFAULT_CAP_FACTOR = 100.0
DEFAULT_CAP_MINIMUM = 10_000


def _t_star(spec: SimulationSpec) -> float:
    """T* of the instance (the structured T*(θ) also for llmpo-unstructured on it)."""
    if isinstance(spec.instance, StructuredInstance):
        return characteristic_time(spec.instance.features, spec.instance.theta).t_star
    return optimal_allocation(
        spec.instance.win_prob,
        spec.assume_condorcet,
        spec.epsilon,
        spec.instance.tie_prob,
        spec.ties,
    ).t_star


def default_cap(spec: SimulationSpec) -> int:
    """The comparison cap of a replication given no budget (see :data:`DEFAULT_CAP_FACTOR`)."""
    bound = _t_star(spec) * math.log(1.0 / spec.delta)
    if not math.isfinite(bound):
        return DEFAULT_CAP_MINIMUM
    return max(DEFAULT_CAP_MINIMUM, math.ceil(DEFAULT_CAP_FACTOR * bound))


def with_default_cap(spec: SimulationSpec) -> SimulationSpec:
    """``spec``, with :func:`default_cap` as its budget when it has none."""
    if spec.max_comparisons is not None:
        return spec
    return dataclasses.replace(spec, max_comparisons=default_cap(spec))


def is_correct(
    instance: UnstructuredInstance | StructuredInstance,
    answer: int,
    epsilon: float,
    ties: str = "decisive",
) -> bool:
    """True when ``answer`` beats every rival with probability > ½ − ε (structured: is i*).

    ε is on the statistic's scale: P(win | not a tie) for ``ties="decisive"``.
    """
    if isinstance(instance, StructuredInstance):
        return answer == instance.best
    if answer < 0:  # a peer that named no policy
        return False
    _, p_stat = pair_information(
        instance.win_prob[answer], instance.tie_prob[answer], 0.5 - epsilon, ties
    )
    return bool(np.all(np.delete(p_stat, answer) > 0.5 - epsilon))


def summarize(
    spec: SimulationSpec, replications: list[Replication], seed: int, elapsed: float
) -> dict[str, Any]:
    """The JSON summary (docs/cli.md) with the error rate's exact (Clopper–Pearson) 95% interval."""
    reps = len(replications)
    comparisons = np.array([r.n_comparisons for r in replications], dtype=float)
    errors = sum(
        not is_correct(spec.instance, r.best, spec.epsilon, spec.ties) for r in replications
    )
    interval = binomtest(errors, reps).proportion_ci(confidence_level=0.95, method="exact")
    t_star = _t_star(spec)
    mean = float(comparisons.mean())
    calls = [r.generation_calls for r in replications]
    generation_calls = None if None in calls else float(np.mean(np.array(calls, dtype=float)))
    return {
        "strategy": spec.strategy,
        "delta": spec.delta,
        "reps": reps,
        "seed": seed,
        "threshold": spec.threshold or spec.make_space().default_threshold,
        "epsilon": spec.epsilon,
        "assume_condorcet": spec.assume_condorcet,
        "batch_size": spec.batch_size,
        "ties": spec.ties,
        "grid_tasks": spec.tasks if spec.strategy == GRID else None,
        "error_rate": errors / reps,
        "error_rate_ci95": [float(interval.low), float(interval.high)],
        "errors": int(errors),
        "uncertified": int(sum(not r.certified for r in replications)),
        # Stopped by the comparison cap (given, or the default), not by the stopping rule.
        "unfinished": int(
            sum(
                not r.certified
                and spec.max_comparisons is not None
                and r.n_comparisons >= spec.max_comparisons
                for r in replications
            )
        ),
        "max_comparisons": spec.max_comparisons,
        "mean_comparisons": mean,
        "mean_comparisons_sem": float(comparisons.std(ddof=1) / math.sqrt(reps))
        if reps > 1
        else 0.0,
        "median_comparisons": float(np.median(comparisons)),
        # Cost in what users pay: two generations per comparison unless answers are shared.
        "mean_generation_calls": generation_calls,
        "mean_judge_calls": mean,
        "certified_rate": sum(r.certified for r in replications) / reps,
        "t_star": t_star,
        "lower_bound": t_star * kl_confidence(spec.delta),
        "ratio_to_bound": mean / (t_star * math.log(1.0 / spec.delta)),
        "seconds": elapsed,
    }


def _simulate_peer(
    instance: Any, strategy: str, delta: float, reps: int, seed: int, workers: int, **options: Any
) -> dict[str, Any]:
    """:func:`simulate` for a duelpy peer ``duelpy:<ClassName>`` (:mod:`llmpo.harness.peers`).

    The peer stops by its own rule, so ``threshold`` does not apply (reported as None); it has
    no ε, class B or batch option. The summary adds ``peer_fault``: the peer's known defect, or
    None.
    """
    peer_class_name(strategy)
    if not isinstance(instance, UnstructuredInstance):
        raise ConfigError(f"strategy: {strategy} runs on unstructured instances only")
    refused = {"epsilon": 0.0, "assume_condorcet": False, "batch_size": 1, "threshold": None}
    for option, default in refused.items():
        if options.get(option, default) != default:
            raise ConfigError(f"{option}: not supported by duelpy peers (strategy {strategy})")
    if reps < 1:
        raise ConfigError(f"reps must be a positive integer, got {reps}")
    spec = with_default_cap(
        SimulationSpec(
            instance=instance,
            strategy=strategy,
            delta=delta,
            max_comparisons=options.get("max_comparisons"),
            peer_options=tuple(dict(options.get("peer_options") or {}).items()),
        )
    )
    start = time.perf_counter()
    replications = run_replications(spec, reps, seed, workers)
    summary = summarize(spec, replications, seed, time.perf_counter() - start)
    summary["threshold"] = None
    summary["peer_fault"] = peer_fault(strategy)
    summary["peer_options"] = dict(spec.peer_options)
    return summary


def simulate(
    instance: UnstructuredInstance | StructuredInstance,
    strategy: str = "llmpo",
    delta: float = 0.05,
    reps: int = 100,
    seed: int = 0,
    workers: int = 1,
    **options: Any,
) -> dict[str, Any]:
    """Monte Carlo of ``strategy`` on ``instance``; see :func:`summarize` for the keys.

    Parameters
    ----------
    instance : UnstructuredInstance or StructuredInstance
        The true win probabilities (must have a Condorcet winner), or features and θ.
    strategy : str
        One of ``llmpo``, ``llmpo-tracking``, ``uniform``, ``oracle``, or a baseline:
        ``top-two``, ``successive-elimination``, ``knockout``, ``grid`` (every policy answers
        ``tasks`` tasks once, every pair of answers judged, then the same stopping rule:
        :func:`run_grid`). On a structured instance: one of
        ``llmpo``, ``llmpo-tracking``, ``uniform``, ``oracle``, ``xy-static``, ``lucb``
        (structured model and stopping rule) or ``llmpo-unstructured`` (unstructured LLM-PO on
        the same outcomes); ``t_star`` is then the structured T*(θ) in every case.
    delta : float
        Error probability of each experiment.
    reps : int
        Number of replications.
    seed : int
        Master seed.
    workers : int
        Worker processes; the result does not depend on it.
    **options
        Further :class:`SimulationSpec` fields: ``threshold``, ``epsilon``, ``assume_condorcet``,
        ``batch_size``, ``max_comparisons`` (default :func:`default_cap`: every replication
        ends; those stopped by the cap are counted as ``unfinished``), ``ties``, ``tasks``.

    Returns
    -------
    dict
        The summary; next to comparisons (= pairwise judge calls) it reports
        ``mean_generation_calls`` (2 per comparison, K·N for the grid) and ``certified_rate``.
    """
    if is_peer(strategy):
        return _simulate_peer(instance, strategy, delta, reps, seed, workers, **options)
    known = STRUCTURED_STRATEGIES if isinstance(instance, StructuredInstance) else STRATEGIES
    if strategy not in known:
        raise ConfigError(f"strategy: unknown {strategy!r}; choose one of {', '.join(known)}")
    if reps < 1:
        raise ConfigError(f"reps must be a positive integer, got {reps}")
    if options.get("tasks", DEFAULT_GRID_TASKS) < 1:
        raise ConfigError(f"tasks must be a positive integer, got {options['tasks']}")
    check_ties_mode(options.get("ties", "decisive"))
    spec = with_default_cap(
        SimulationSpec(instance=instance, strategy=strategy, delta=delta, **options)
    )
    start = time.perf_counter()
    replications = run_replications(spec, reps, seed, workers)
    return summarize(spec, replications, seed, time.perf_counter() - start)
