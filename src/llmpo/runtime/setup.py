"""From a configuration to the pieces a run needs, and the stored experiments around it.

Builds the environment (:func:`build_environment`), the policy space and the experiment
(:func:`build_experiment`, also from stored comparisons) of a configuration; starts, finds and
continues stored experiments; defines what a run reports (:class:`Progress`, :class:`RunOutcome`,
:class:`Usage`). The run loop itself is :mod:`llmpo.runtime.driver`, and the runner of stored
experiments :class:`llmpo.runtime.run.Runner`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from llmpo.config import (
    ConfigError,
    ExperimentConfig,
    PolicyConfig,
    ReplayEnvironmentConfig,
    SyntheticEnvironmentConfig,
    stored_config,
)
from llmpo.datasets import load_arena_counts
from llmpo.environments.base import Comparison, Environment
from llmpo.environments.replay import (
    Judgment,
    ReplayEnvironment,
    detect_format,
    read_pair_counts,
)
from llmpo.environments.structured import StructuredEnvironment
from llmpo.environments.synthetic import SyntheticEnvironment
from llmpo.experiment import Experiment, Result
from llmpo.harness.instances import (
    StructuredInstance,
    UnstructuredInstance,
    load_instance,
    make_structured_instance,
    make_unstructured_instance,
)
from llmpo.holdout import split_holdout
from llmpo.registry import REPLAY_FORMATS, SOURCES
from llmpo.remaining import combine, rival_needs
from llmpo.spaces import Space, Structured, Unstructured
from llmpo.store import (
    ComparisonRecord,
    ExperimentRecord,
    Store,
    StoreError,
)


@dataclass(frozen=True)
class Progress:
    """What a progress display shows after a comparison.

    Attributes
    ----------
    n_comparisons : int
        Comparisons told so far (replayed ones included).
    max_comparisons : int or None
        The budget.
    leader : str
        The current best policy.
    min_margin : float
        Smallest GLR statistic − threshold over the leader's rivals (> 0 everywhere: certified).
    binding_rival : str
        The rival with that smallest margin.
    estimated_remaining : int or None
        Comparisons still needed (smoothed estimate, :mod:`llmpo.remaining`); None before every
        rival has evidence.
    remaining_low, remaining_high : int or None
        Its 80% range; ``remaining_high`` is None while some rival is not yet separated from a
        coin flip (no upper bound yet).
    cost_usd : float or None
        Money spent so far, when the environment reports it.
    elapsed_seconds : float
        Wall time of this process so far.
    """

    n_comparisons: int
    max_comparisons: int | None
    leader: str
    min_margin: float
    binding_rival: str
    estimated_remaining: int | None
    cost_usd: float | None
    elapsed_seconds: float
    remaining_low: int | None = None
    remaining_high: int | None = None


#: Decisive verdicts that must all favour one shown position before a run says its judge looked
#: at the position only: a judge blind to the position does so by chance with probability
#: 2 · 2⁻¹⁰ ≈ 0.2% (random order: each verdict's position is a fair coin).
MIN_POSITION_VERDICTS = 10


def judge_warning(comparisons: Iterable[ComparisonRecord]) -> str | None:
    """A warning when the judge never told the two answers apart, else None.

    Two cases: every verdict was a tie (with ``order: both``, also a judge that always picks
    the same position), or — answers shown in a random order — every decisive verdict went to
    the answer shown in the same position (first, or second), with at least
    :data:`MIN_POSITION_VERDICTS` of them. Either way the comparisons hold no evidence about
    the policies, so no winner may be named, certified or not. The comparisons are read once,
    in one pass (a stream from the store will do).
    """
    count = decisive = 0
    positions = set()
    for c in comparisons:
        count += 1
        if c.outcome == 0.5:
            continue
        if c.order not in ("ab", "ba"):
            return None
        decisive += 1
        # The shown-first answer won when a won shown first, or b won shown first.
        positions.add((c.outcome == 1.0) == (c.order == "ab"))
    if count and not decisive:
        return (
            f"the judge never told the answers apart: all {count:,} verdicts were "
            "ties, so no policy can be named the winner. Check the judge's raw replies "
            "(llmpo export) and its prompt"
        )
    if decisive >= MIN_POSITION_VERDICTS and len(positions) == 1:
        where = "first" if positions.pop() else "second"
        return (
            f"the judge never told the answers apart: all {decisive:,} decisive verdicts went "
            f"to the answer shown {where}, whichever policy gave it, so no policy can be named "
            "the winner. Fix the judge (its prompt, model or judge.order: both) and run again"
        )
    return None


@dataclass(frozen=True)
class RunOutcome:
    """How a run (or a resumed run) ended.

    ``judge_warning`` (see :func:`judge_warning`) is set when the judge never told the answers
    apart; then the JSON form names no winner.
    """

    experiment_id: int
    status: str
    result: Result
    replayed: int
    new_comparisons: int
    dropped_policies: tuple[str, ...] = ()
    judge_warning: str | None = None
    #: Live runs: what the run paid (generation and judge calls, tokens, money) next to its
    #: comparisons, from :func:`llmpo.llm.environment.call_totals`; None for simulations.
    calls: dict[str, Any] | None = None

    def to_dict(self, store: str) -> dict[str, Any]:
        """The JSON form printed by ``llmpo run --json``."""
        return {
            "experiment_id": self.experiment_id,
            "store": store,
            "status": self.status,
            "winner": None if self.judge_warning else self.result.best_name,
            "warning": self.judge_warning,
            **self.result.to_dict(),
            "replayed_comparisons": self.replayed,
            "new_comparisons": self.new_comparisons,
            "dropped_policies": list(self.dropped_policies),
            "calls": self.calls,
        }


# ---- building the pieces -------------------------------------------------------------------------
class _ReseededSynthetic(Environment):
    """A synthetic environment whose every comparison is drawn from its own seed.

    :meth:`reseed` starts a fresh synthetic environment (a preference matrix, or Bradley–Terry
    with features) seeded with (experiment seed, sequence number), so an outcome never depends on
    the comparisons drawn before it.
    """

    def __init__(
        self, instance: UnstructuredInstance | StructuredInstance, seed: int | None
    ) -> None:
        self.instance = instance
        self.policies = instance.policies
        self._current = self._environment(np.random.SeedSequence(seed))

    def _environment(self, seed: np.random.SeedSequence) -> Environment:
        if isinstance(self.instance, StructuredInstance):
            return StructuredEnvironment(self.instance, seed)
        return SyntheticEnvironment(self.instance, seed)

    def reseed(self, seed: Sequence[int]) -> None:
        self._current = self._environment(np.random.SeedSequence(list(seed)))

    def compare(self, a: int, b: int) -> Comparison:
        return self._current.compare(a, b)


@overload
def _restricted(
    instance: StructuredInstance, wanted: list[str], source: Path
) -> StructuredInstance: ...
@overload
def _restricted(
    instance: UnstructuredInstance, wanted: list[str], source: Path
) -> UnstructuredInstance: ...
def _restricted(
    instance: UnstructuredInstance | StructuredInstance, wanted: list[str], source: Path
) -> UnstructuredInstance | StructuredInstance:
    """The instance over the ``wanted`` policies, of the same kind (structured or not)."""
    unknown = [name for name in wanted if name not in instance.policies]
    if unknown:
        raise ConfigError(
            f"policies: unknown {unknown}; {source} has {', '.join(instance.policies)}"
        )
    keep = [instance.policies.index(name) for name in wanted]
    if isinstance(instance, StructuredInstance):
        return make_structured_instance(
            instance.features[keep], instance.theta, wanted, require_winner=False
        )
    return make_unstructured_instance(
        instance.win_prob[keep][:, keep],
        wanted,
        instance.tie_prob[keep][:, keep],
        require_winner=False,
    )


def build_environment(
    config: ExperimentConfig,
    part: str = "selection",
    evaluation_tasks: Path | None = None,
    **live_options: Any,
) -> Environment:
    """The environment a configuration describes, restricted to its policies and to one part of
    its tasks.

    Parameters
    ----------
    config : ExperimentConfig
        A resolved configuration.
    part : {"selection", "evaluation"}
        ``selection``: every task but the held-out ones (the run); ``evaluation``: only the
        held-out tasks (``llmpo evaluate``). The held-out task ids are set as the environment's
        ``holdout_task_ids`` (None without a holdout).
    evaluation_tasks : Path, optional
        A held-out task file given at evaluation time (``llmpo evaluate --tasks``), used instead
        of the configuration's holdout for the ``evaluation`` part.
    **live_options
        Live LLM environments: keyword arguments of
        :class:`~llmpo.llm.environment.LLMEnvironment` (``cache``, ``concurrency``, ``seed``,
        ``payer``); ignored by the others.

    Raises
    ------
    ConfigError
        When the environment's data cannot be read or used; the message names the file.
    """
    if part not in ("selection", "evaluation"):
        raise ValueError(f"part must be 'selection' or 'evaluation', got {part!r}")
    # The environment type's registration builds it (llmpo.registry.SOURCES, plug-ins included).
    source = SOURCES.get(config.environment.type, "environment.type")
    try:
        return source.create(config, part, evaluation_tasks, **live_options)
    except ValueError as error:  # InstanceError, ReplayError, DatasetError, a plug-in's
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"environment: {error}") from None


def synthetic_source(
    config: ExperimentConfig, part: str = "selection", evaluation_tasks: Path | None = None
) -> Environment:
    """The synthetic environment (``type: synthetic``): an instance file, its outcomes drawn."""
    environment = config.environment
    assert isinstance(environment, SyntheticEnvironmentConfig)
    instance = load_instance(environment.instance, require_winner=False)
    if config.policy_names is not None:
        instance = _restricted(instance, config.policy_names, environment.instance)
    return _ReseededSynthetic(instance, config.seed)


def _read_task_ids(path: Path) -> list[str]:
    from llmpo.llm.tasks import load_tasks

    return [task.id for task in load_tasks(path)]


def llm_source(
    config: ExperimentConfig,
    part: str = "selection",
    evaluation_tasks: Path | None = None,
    **options: Any,
) -> Any:
    """The live LLM environment (``type: llm``; imported here: simulations need no HTTP
    client)."""
    from llmpo.llm.environment import LLMEnvironment, LLMSetupError
    from llmpo.llm.tasks import load_tasks

    try:
        live = LLMEnvironment(config, **options)
        every = live.tasks
        held_tasks: tuple[Any, ...] | None = None
        if config.holdout is not None and config.holdout.tasks is not None:
            held_tasks = load_tasks(config.holdout.tasks)
        elif config.holdout is not None and config.holdout.fraction is not None:
            held = set(
                split_holdout((t.id for t in every), config.holdout.fraction, config.seed or 0)
            )
            held_tasks = tuple(t for t in every if t.id in held)
        held_ids = None if held_tasks is None else {t.id for t in held_tasks}
        live.holdout_task_ids = None if held_ids is None else tuple(sorted(held_ids))
        selection = tuple(t for t in every if held_ids is None or t.id not in held_ids)
        if not selection:
            raise LLMSetupError(
                f"every task of {live.config.tasks} is held out; the selection run "
                "would have none. Fix: lower holdout.fraction, or hold out other tasks"
            )
        if part == "selection":
            live.tasks = selection
            return live
        if evaluation_tasks is not None:
            held_tasks = load_tasks(evaluation_tasks)
            opened = sorted({t.id for t in held_tasks} & {t.id for t in selection})
            if opened:
                raise LLMSetupError(
                    f"{evaluation_tasks}: tasks {opened[:5]} were open to the selection run "
                    f"({len(opened)} in all). Fix: evaluate on tasks the run never saw"
                )
        if not held_tasks:
            raise LLMSetupError(
                "no held-out tasks to evaluate on. Fix: declare holdout: {fraction: 0.2} in the "
                "configuration before the run, or pass --tasks FILE (tasks the run never saw)"
            )
        live.judge.check_tasks(held_tasks)
        live.tasks = held_tasks
        return live
    except (LLMSetupError, ValueError) as error:
        raise ConfigError(f"environment: {error}") from None


def replay_source(
    config: ExperimentConfig, part: str = "selection", evaluation_tasks: Path | None = None
) -> ReplayEnvironment:
    """The replay environment (``type: replay``): recorded judgments or counts, resampled."""
    environment = config.environment
    assert isinstance(environment, ReplayEnvironmentConfig)
    wanted = config.policy_names
    seed = config.seed
    path = environment.path  # None only with format: arena (the configuration checks it)
    data_format = environment.format
    if data_format == "auto" and path is not None:
        data_format = detect_format(path)
    options: dict[str, Any] = {
        "dense_subset": environment.dense_subset,
        "min_pair_records": environment.min_pair_records,
        "seed": seed,
    }
    splits = config.holdout is not None or part == "evaluation"
    if data_format in ("arena", "counts") and splits:
        raise ConfigError(
            "holdout: aggregated pair counts have no task ids to hold out. Fix: remove holdout, "
            "or replay individual judgments (with task_id)"
        )
    if data_format == "arena":
        return ReplayEnvironment.from_counts(load_arena_counts(path), wanted, **options)
    source = Path(str(path))
    if data_format == "counts":
        return ReplayEnvironment.from_counts(read_pair_counts(source), wanted, **options)
    judgments = REPLAY_FORMATS.get(data_format)(source)
    held_ids: set[str] | None = None
    if config.holdout is not None:
        if any(j.task_id is None for j in judgments):
            raise ConfigError(
                f"holdout: {source} has judgments without task_id, so no split over tasks is "
                "possible. Fix: give every judgment a task_id, or remove holdout"
            )
        ids = {str(j.task_id) for j in judgments}
        if config.holdout.tasks is not None:
            held_ids = set(_read_task_ids(config.holdout.tasks)) & ids
        else:
            held_ids = set(split_holdout(ids, config.holdout.fraction or 0.0, seed or 0))
    selection = [j for j in judgments if held_ids is None or j.task_id not in held_ids]
    chosen: list[Judgment] = selection
    if part == "evaluation":
        held = set(_read_task_ids(evaluation_tasks)) if evaluation_tasks else held_ids
        opened = sorted((held or set()) & {str(j.task_id) for j in selection})
        if opened:
            raise ConfigError(
                f"{evaluation_tasks}: tasks {opened[:5]} were open to the selection run "
                f"({len(opened)} in all). Fix: evaluate on tasks the run never saw"
            )
        chosen = [j for j in judgments if held is not None and j.task_id in held]
        if not chosen:
            raise ConfigError(
                "no held-out records to evaluate on. Fix: declare holdout: {fraction: 0.2} in "
                "the configuration before the run, or pass --tasks FILE of held-out task ids"
            )
    replay = ReplayEnvironment.from_judgments(chosen, wanted, **options)
    replay.holdout_task_ids = None if held_ids is None else tuple(sorted(held_ids))
    return replay


def build_space(config: ExperimentConfig, policies: tuple[str, ...]) -> Space:
    """The policy space of a configuration over the environment's policies.

    A structured space takes the policies' feature vectors, or their factor levels one-hot
    encoded (the first level of each factor is the reference), or, when the configuration lists
    no policies, the features of its structured synthetic instance.

    Raises
    ------
    ConfigError
        When a structured space has no features, or features it cannot use.
    """
    if config.space == "unstructured":
        return Unstructured(policies)
    specs = {p.name: p for p in config.policies or [] if isinstance(p, PolicyConfig)}
    try:
        if specs:
            ordered = [specs[name] for name in policies]
            # Every policy gives features, or none does (ExperimentConfig checks it).
            features = [p.features for p in ordered if p.features is not None]
            if features:
                return Structured(features, policies)
            # Encode in the configuration's order (it fixes the reference levels), then follow
            # the environment's order of the policies.
            levels = [{f: str((p.levels or {})[f]) for f in config.factors} for p in specs.values()]
            encoded = Structured.from_factors(levels, list(specs))
            rows = [list(specs).index(name) for name in policies]
            return Structured(encoded.features[rows], policies, encoded.feature_names)
        environment = config.environment
        if isinstance(environment, SyntheticEnvironmentConfig):
            instance = load_instance(environment.instance, require_winner=False)
            if isinstance(instance, StructuredInstance):
                return Structured(
                    _restricted(instance, list(policies), environment.instance).features, policies
                )
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{error}. Fix: change the policies' features or levels") from None
    raise ConfigError(
        "space: structured needs features: give each policy features or levels, or use a "
        "structured instance (with 'features' and 'theta'). Fix: add them, or use "
        "space: unstructured"
    )


def build_experiment(
    config: ExperimentConfig,
    policies: tuple[str, ...],
    comparisons: Iterable[tuple[int, int, float]] | None = None,
    on_told: Callable[[int, Experiment], None] | None = None,
) -> Experiment:
    """The ask/tell experiment of a resolved configuration.

    With ``comparisons`` (stored ones, in their order) it is rebuilt from them by
    :meth:`Experiment.from_comparisons <llmpo.experiment.Experiment.from_comparisons>`, which
    calls ``on_told`` after each.

    Raises
    ------
    ConfigError
        For an unknown strategy or threshold, or an invalid combination of options.
    """
    options: dict[str, Any] = {
        "threshold": config.threshold,
        "epsilon": config.epsilon,
        "assume_condorcet": config.assume_condorcet,
        "max_comparisons": config.max_comparisons,
        "ties": config.ties_mode,
        "seed": config.seed,
    }
    try:
        space = build_space(config, policies)
        if comparisons is None:
            return Experiment(space, config.delta, config.strategy, **options)
        return Experiment.from_comparisons(
            space, comparisons, config.delta, config.strategy, on_told=on_told, **options
        )
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{error}. Fix: change it in the configuration") from None


def check_config(config: ExperimentConfig) -> Environment:
    """Build the environment and the experiment of a configuration, to refuse it before storing.

    Raises
    ------
    ConfigError
        For unreadable data, unknown policies, pairs without records, bad options.
    """
    environment = build_environment(config)
    build_experiment(config, environment.policies)
    if config.baseline is not None and config.baseline not in environment.policies:
        raise ConfigError(
            f"baseline: {config.baseline!r} is not one of the policies "
            f"{list(environment.policies)}. Fix: set it to the policy in use today, or omit it "
            "(default: the first policy)"
        )
    return environment


def start_experiment(
    config: ExperimentConfig, store: Store, environment: Environment | None = None
) -> int:
    """Validate a configuration against its data, record a new experiment and return its id.

    The saved configuration is the resolved one, with the seed drawn now when none was given.
    ``environment`` is the one :func:`check_config` returned for this configuration, if at hand.
    """
    resolved = (
        config
        if config.seed is not None
        else config.model_copy(update={"seed": secrets.randbits(32)})
    )
    # Record the statistic and the threshold, so that a later default cannot change how this
    # experiment resumes.
    resolved = resolved.model_copy(
        update={"ties": resolved.ties_mode, "threshold": resolved.threshold_name}
    )
    if environment is None or (config.seed is None and config.holdout is not None):
        environment = check_config(resolved)  # the held-out split depends on the seed drawn
    held = getattr(environment, "holdout_task_ids", None)
    experiment_id = store.create_experiment(
        resolved.to_json(),
        list(environment.policies),
        resolved.name,
        holdout_tasks=None if held is None else list(held),
    )
    dropped = dropped_policies(environment)
    if dropped:
        store.add_event(experiment_id, "dense_subset", {"dropped": list(dropped)})
    return experiment_id


def dropped_policies(environment: Environment) -> tuple[str, ...]:
    """Policies of the data an environment left out (replay with a dense subset), else ()."""
    return tuple(getattr(environment, "dropped", ()))


#: Settings a stopped experiment may change when it is continued: its budgets.
BUDGET_FIELDS = ("max_comparisons", "max_cost")


def _comparable(config: dict[str, Any], ignore: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in ignore}


def _stored_config(record: ExperimentRecord, config: ExperimentConfig) -> dict[str, Any] | None:
    """A stored experiment's configuration, comparable with ``config``'s: the defaults of fields
    added since it was stored filled in, and the seed, ties and threshold left out where ``config``
    leaves them unset (then any seed matches, and a resume keeps the statistic and threshold it
    was stored with)."""
    try:
        stored = stored_config(record.config).to_json()
    except ValueError:
        return None
    if config.seed is None:
        stored["seed"] = None
    if config.ties is None:
        stored["ties"] = None
    if config.threshold is None:
        stored["threshold"] = None
    return stored


def find_experiment(
    config: ExperimentConfig, store: Store, ignore: tuple[str, ...] = ()
) -> ExperimentRecord | None:
    """The latest stored experiment started from this configuration (any seed if it has none),
    not counting the top-level settings named in ``ignore`` (e.g. :data:`BUDGET_FIELDS`)."""
    wanted = _comparable(config.to_json(), ignore)
    for record in reversed(store.experiments()):
        stored = _stored_config(record, config)
        if stored is not None and _comparable(stored, ignore) == wanted:
            return record
    return None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def closest_experiment(
    config: ExperimentConfig, store: Store
) -> tuple[ExperimentRecord, list[tuple[str, Any, Any]]] | None:
    """The stored experiment whose settings differ from ``config``'s in the fewest fields (the
    latest among equals), with those differences as (field, stored value, new value)."""
    wanted = _flatten(config.to_json())
    best: tuple[ExperimentRecord, list[tuple[str, Any, Any]]] | None = None
    for record in reversed(store.experiments()):
        stored = _stored_config(record, config)
        if stored is None:
            continue
        flat = _flatten(stored)
        differences = [
            (key, flat.get(key), wanted.get(key))
            for key in sorted(flat.keys() | wanted.keys())
            if flat.get(key) != wanted.get(key)
        ]
        if best is None or len(differences) < len(best[1]):
            best = (record, differences)
    return best


def continue_with_budget(
    store: Store,
    record: ExperimentRecord,
    max_comparisons: int | None,
    max_cost: float | None,
) -> bool:
    """Give a stored experiment new budgets (None: no limit) so that running it continues it.

    A finished experiment that is not certified (it stopped at a budget) is reopened; an
    interrupted one just takes the new budgets. Returns False, changing nothing, when the
    budgets are the stored ones or the experiment is certified (nothing to continue).

    Raises
    ------
    StoreError
        When a new budget is not above what the experiment has already used.
    """
    stored = dict(record.config)
    new = {"max_comparisons": max_comparisons, "max_cost": max_cost}
    old = {key: stored.get(key) for key in BUDGET_FIELDS}
    if new == old or record.status == "certified":  # certified: nothing to continue
        return False
    comparisons = store.comparison_count(record.id)
    if max_comparisons is not None and max_comparisons <= comparisons:
        raise StoreError(
            f"experiment {record.id} already has {comparisons:,} comparisons, so "
            f"max_comparisons {max_comparisons:,} leaves nothing to run. Fix: give a budget "
            f"above {comparisons:,}"
        )
    costs = [c.cost_usd for c in store.iter_comparisons(record.id) if c.cost_usd is not None]
    if max_cost is not None and costs and max_cost <= sum(costs):
        raise StoreError(
            f"experiment {record.id} has already cost ${sum(costs):.4f}, so max_cost "
            f"{max_cost:g} leaves nothing to spend. Fix: give a limit above {sum(costs):.4f}"
        )
    store.reopen(
        record.id,
        {**stored, **new},
        {"from": old, "to": new, "comparisons": comparisons, "status": record.status},
    )
    return True


@dataclass(frozen=True)
class Usage:
    """What an experiment has cost so far, over all its sessions (runs and resumes).

    Attributes
    ----------
    llm_calls : int or None
        Calls made to language models (generations and judge calls; answers found in the
        store's cache are not counted: they were not paid again). None without live models.
    input_tokens, output_tokens : int or None
        Tokens of the stored comparisons, when the environment reports them.
    cost_usd : float or None
        Dollars, when the environment reports prices; 0 when every model runs on this machine
        (the local backend).
    wall_seconds : float
        Wall time of the sessions that ran comparisons.
    """

    llm_calls: int | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``tokens`` the sum of input and output tokens."""
        tokens = (
            None
            if self.input_tokens is None and self.output_tokens is None
            else (self.input_tokens or 0) + (self.output_tokens or 0)
        )
        return {
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens": tokens,
            "cost_usd": self.cost_usd,
            "wall_seconds": self.wall_seconds,
        }


def usage_of(store: Store, record: ExperimentRecord) -> Usage:
    """The :class:`Usage` of a stored experiment: its comparisons' tokens and costs, and the
    calls and seconds its sessions recorded when they stopped."""
    inputs, outputs, costs = [], [], []
    for comparison in store.iter_comparisons(record.id):
        if comparison.input_tokens is not None:
            inputs.append(comparison.input_tokens)
        if comparison.output_tokens is not None:
            outputs.append(comparison.output_tokens)
        if comparison.cost_usd is not None:
            costs.append(comparison.cost_usd)
    details = [detail or {} for _, kind, detail in store.events(record.id)]
    environment = record.config.get("environment", {})
    live = environment.get("type") == "llm"
    # Models run on this machine by the local backend cost nothing to call.
    backends = [p.get("backend") or {} for p in record.config.get("policies") or []]
    backends.append((environment.get("judge") or {}).get("backend") or {"type": "local"})
    free = live and all(backend.get("type") == "local" for backend in backends)
    return Usage(
        llm_calls=sum(d.get("backend_calls", 0) for d in details) if live else None,
        input_tokens=sum(inputs) if inputs else None,
        output_tokens=sum(outputs) if outputs else None,
        cost_usd=sum(costs) if costs else 0.0 if free else None,
        wall_seconds=float(sum(d.get("seconds", 0.0) for d in details)),
    )



def remaining_needs(experiment: Experiment) -> tuple[float, ...] | None:
    """(estimate, low, high) comparisons the experiment still needs, from each rival's evidence
    so far (:func:`llmpo.remaining.rival_needs`); None while some rival has no evidence yet."""
    certificate = experiment.certificate()
    structured = experiment.structured
    if structured:  # every comparison informs every rival's statistic
        evidence_counts = np.full(len(certificate.rivals), experiment.n_comparisons)
    else:
        counts = experiment.pair_counts()
        if experiment.assume_condorcet:  # class B: a rival's evidence is over all its pairs
            evidence_counts = counts[certificate.rivals].sum(axis=1)
        else:
            evidence_counts = counts[certificate.leader, certificate.rivals]
    needs = rival_needs(certificate.statistics, certificate.thresholds, evidence_counts)
    return None if needs is None else combine(needs, parallel=structured)


def remaining_range(experiment: Experiment) -> tuple[int, int, int | None] | None:
    """:func:`remaining_needs` in whole comparisons, (estimate, low, high), for ``llmpo view``;
    high is None when unbounded, and the whole None when unknown or the estimate unbounded."""
    totals = remaining_needs(experiment)
    if totals is None or math.isinf(totals[0]):
        return None
    estimate, low, high = totals
    return (
        math.ceil(estimate),
        math.ceil(min(low, estimate)),
        None if math.isinf(high) else math.ceil(max(high, estimate)),
    )
