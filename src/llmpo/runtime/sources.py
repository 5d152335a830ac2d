"""Sources of outcomes: what the driver hands its work to, through one async protocol.

A source turns a :class:`Job` (a round of comparisons, docs/architecture.md) into
:class:`Finished` comparisons. Four kinds exist: simulated outcomes (a synthetic instance), replayed
judgments, live LLM policies with their judge (:mod:`llmpo.runtime.live`), and live policies judged
by people (the same source, whose judge is the human queue). The driver does not know which one it
drives; it reads only the protocol below.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from llmpo.environments.base import Comparison, Environment
from llmpo.sharing import Round, unshared_rounds
from llmpo.store import ComparisonRecord

if TYPE_CHECKING:
    from llmpo.config import ExperimentConfig
    from llmpo.runtime.driver import Target

#: A planned comparison: (number, a, b, (replicate of a, replicate of b) or None without tasks).
Planned = tuple[int, int, int, tuple[int, int] | None]


@dataclass(frozen=True)
class Job:
    """One unit of work handed to a source: the comparisons of one round, on one task.

    Attributes
    ----------
    round_number : int
        The number of the round (that of its first comparison).
    task : object or None
        The task every comparison of the round is on (None for sources without tasks).
    comparisons : tuple of Planned
        (number, a, b, replicates) per comparison, in the order they are told.
    score_each : bool
        The judge scores each answer once and compares every pair from the scores.
    """

    round_number: int
    task: Any
    comparisons: tuple[Planned, ...]
    score_each: bool = False


@dataclass(frozen=True)
class Finished:
    """A finished comparison, valid or not, as the driver stores and tells it.

    Attributes
    ----------
    a, b : int
        The two policies (indices into the source's policies).
    outcome : float or None
        1 if a won, 0.5 a tie, 0 if b won; None for an invalid verdict (recorded as an event,
        never told).
    cost_usd : float or None
        What the comparison paid, when the source reports it.
    record : callable
        ``record(seq, a, b)``: the stored form as comparison number ``seq`` between the stored
        policy indices a and b.
    detail : dict
        What an invalid verdict's event records (its raw verdict, task and cost).
    origin : object
        The source's own object (a live comparison: the human layer reads its verdict).
    stored : bool
        True for a comparison re-told from the store on resume (not stored again).
    """

    a: int
    b: int
    outcome: float | None
    cost_usd: float | None
    record: Callable[[int, int, int], ComparisonRecord] = field(repr=False)
    detail: dict[str, Any] = field(default_factory=dict, repr=False)
    origin: Any = field(default=None, repr=False)
    stored: bool = False


class Source(Protocol):
    """The protocol every source of outcomes follows.

    Attributes
    ----------
    policies : tuple of str
        The policies, indexed as in the experiment.
    in_order : bool
        True when each outcome is a function of (seed, comparison number, pair) alone: the
        source is driven one comparison at a time in the order asked, and a resumed run re-asks
        the experiment and re-tells each stored comparison against the pair asked again (so the
        resumed run is exactly the uninterrupted one). False for live sources, whose completion
        order depends on timing: their stored comparisons are re-told in stored order, and
        comparisons asked but never finished are dispatched again (``llmpo.runtime.driver``).
    grace_seconds : float
        After a stop or a failure, how long the comparisons in flight may still finish.
    stop_errors : tuple of exception types
        Errors of a job that stop the run as a failure (a backend that failed for good) instead
        of propagating.
    """

    policies: tuple[str, ...]
    in_order: bool
    grace_seconds: float
    stop_errors: tuple[type[BaseException], ...]

    def plan(self, target: Target, n: int) -> list[Round]:
        """Ask the target for up to ``n`` comparisons, packed into rounds."""
        ...

    def task(self, round_number: int) -> Any:
        """The task of round ``round_number`` (None without tasks)."""
        ...

    def score_each(self, target: Target) -> bool:
        """Whether the judge compares every pair of a round from one score per answer."""
        ...

    async def run(self, job: Job) -> list[Finished]:
        """Run one job; raises one of ``stop_errors`` when it cannot."""
        ...

    def session_detail(self) -> dict[str, Any]:
        """What this session paid, for the events the driver records (may be empty)."""
        ...

    async def aclose(self) -> None:
        """Release connections and processes."""
        ...


class OrderedSource:
    """Simulated or replayed outcomes, each drawn from (seed, comparison number).

    Parameters
    ----------
    environment : Environment
        A synthetic or replay environment; :meth:`reseed` is called before each comparison.
    seed : int
        The seed of the outcomes.
    batch_size : int
        Pairs asked from the experiment at once (each told before the next is compared).
    latency_seconds : float
        A simulated delay after each comparison.
    records : sequence of Comparison, optional
        Fixed outcomes used in turn instead of the environment (held-out replayed records).
    """

    in_order = True
    grace_seconds = math.inf  # the comparison in flight is always finished and stored
    stop_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        environment: Environment,
        seed: int,
        batch_size: int = 1,
        latency_seconds: float = 0.0,
        records: Sequence[Comparison] | None = None,
    ) -> None:
        self.environment = environment
        self.policies = tuple(environment.policies)
        self.seed = seed
        self.batch_size = batch_size
        self.latency_seconds = latency_seconds
        self.records = records
        self._asked: deque[tuple[int, int]] = deque()

    def plan(self, target: Target, n: int) -> list[Round]:
        # A batch is asked at once, then its pairs are compared and told one by one.
        if not self._asked:
            self._asked.extend(target.ask(self.batch_size))
        return unshared_rounds([self._asked.popleft()]) if self._asked else []

    def task(self, round_number: int) -> None:
        return None

    def score_each(self, target: Target) -> bool:
        return False

    def compare(self, number: int, a: int, b: int) -> Comparison:
        """The outcome of comparison ``number`` of (a, b)."""
        if self.records:
            return self.records[(number - 1) % len(self.records)]
        self.environment.reseed((self.seed, number))
        return self.environment.compare(a, b)

    async def run(self, job: Job) -> list[Finished]:
        ((number, a, b, _),) = job.comparisons
        started = time.time()
        comparison = self.compare(number, a, b)
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        finished = time.time()

        def record(seq: int, policy_a: int, policy_b: int) -> ComparisonRecord:
            return ComparisonRecord.of(seq, policy_a, policy_b, comparison, started, finished)

        return [Finished(a, b, comparison.outcome, comparison.cost_usd, record)]

    def session_detail(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        return None


def source_for(
    config: ExperimentConfig,
    environment: Any,
    *,
    share_answers: bool = True,
    task_order: Sequence[Any] | None = None,
    records: Sequence[Comparison] | None = None,
    seed: int | None = None,
    paced: bool = True,
) -> Source:
    """The source of outcomes of an environment built from ``config`` (the one place that
    decides which adapter fits which environment).

    Parameters
    ----------
    config : ExperimentConfig
        The resolved configuration the environment was built from.
    environment : Environment or LLMEnvironment
        What :func:`llmpo.runtime.setup.build_environment` returned for it.
    share_answers, task_order
        Live sources: see :class:`~llmpo.runtime.live.LiveSource`.
    records, seed
        Ordered sources: fixed outcomes used in turn, and the seed of the outcomes (default:
        the configuration's).
    paced : bool
        Ordered sources: ask ``batch_size`` pairs at once and wait the configured
        ``latency_seconds`` after each comparison, as a run does (an evaluation does not).
    """
    from llmpo.config import LLMEnvironmentConfig

    settings = config.environment
    if isinstance(settings, LLMEnvironmentConfig):
        from llmpo.runtime.live import LiveSource

        return LiveSource(environment, share_answers, task_order)
    return OrderedSource(
        environment,
        config.seed or 0 if seed is None else seed,
        config.batch_size if paced else 1,
        settings.latency_seconds if paced else 0.0,
        records,
    )


def stored_finished(record: ComparisonRecord) -> Finished:
    """A stored comparison as the driver re-tells it on resume."""
    return Finished(
        record.policy_a,
        record.policy_b,
        record.outcome,
        record.cost_usd,
        lambda seq, a, b: record,
        origin=record,
        stored=True,
    )
