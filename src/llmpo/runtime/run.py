"""Running (or resuming) one stored experiment through the driver: ``llmpo run``, ``llmpo
resume`` and, inside the web server, ``llmpo serve``.

Determinism. The experiment's sampling rule draws from one generator seeded with the configured
seed. A simulated or replayed source draws comparison number n from (seed, n), so a run killed at
any instant then resumed performs exactly the comparisons of an uninterrupted run. A live source's
round n draws its task from (seed, n); completion order depends on timing (docs/architecture.md).

Interruption. SIGINT or SIGTERM asks the run to stop: nothing is dispatched any more, the
comparisons in flight get the source's grace (a simulated one is always finished and committed,
a live one at most :data:`~llmpo.runtime.live.FAILURE_GRACE_SECONDS`), the experiment is marked
``interrupted``, and ``llmpo resume`` continues it. A second SIGINT or SIGTERM stops at once (the
comparisons in flight are then lost, never half-stored).

Failures. A live call that still fails after its retries, or a judge whose verdicts are more than
90% invalid (after 50 results), stops the run: the run records a ``backend_failed`` event, marks
the experiment ``failed`` (every finished comparison is stored) and raises
:class:`~llmpo.errors.RunFailedError`; ``llmpo run CONFIG --resume`` continues it. Any other
error marks the experiment ``failed`` (with a ``failed`` event) and is re-raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from llmpo.config import LLMEnvironmentConfig, created_before_ties, stored_config
from llmpo.errors import RunFailedError
from llmpo.remaining import RemainingTracker
from llmpo.runtime.driver import Driver, Reporter, Reread, check_concurrency, stop_on_signals
from llmpo.runtime.setup import (
    Progress,
    RunOutcome,
    build_environment,
    build_experiment,
    dropped_policies,
    judge_warning,
    remaining_needs,
)
from llmpo.runtime.sources import Finished, source_for
from llmpo.store import UNFINISHED_STATUSES, Store, StoreError


class _ExperimentSink:
    """Commits an experiment's comparisons and events."""

    def __init__(self, store: Store, experiment_id: int) -> None:
        self.store = store
        self.experiment_id = experiment_id

    def append(self, seq: int, finished: Finished) -> None:
        self.store.append_comparison(
            self.experiment_id, finished.record(seq, finished.a, finished.b)
        )

    def invalid(self, finished: Finished) -> None:
        self.store.add_event(self.experiment_id, "invalid_verdict", finished.detail)

    def asked(self, rows: list[list[Any]]) -> None:
        self.store.add_event(self.experiment_id, "asked", {"comparisons": rows})


class Runner:
    """Runs (or resumes) one stored experiment to its end, through the one :class:`Driver`.

    Parameters
    ----------
    store : Store
        The store, opened as writer; it also holds the generation cache of live runs.
    experiment_id : int
        The experiment to run.
    on_progress : callable, optional
        Called with a :class:`~llmpo.runtime.setup.Progress` at most every ``progress_interval``
        seconds and at the end.
    progress_interval : float
        Seconds between progress reports.
    concurrency : int
        Live experiments: comparisons in flight at once (a simulated or replayed one runs one
        at a time, in order).
    share_answers : bool
        Live experiments: pack each batch into rounds that share answers, where proven valid
        (False for people, who judge one comparison at a time).
    on_settled : callable, optional
        Called with each finished comparison once committed and told (the human layer).

    Raises
    ------
    StoreError
        When the stored experiment cannot be resumed (no seed, its data changed).
    ConfigError
        When its configuration's data cannot be read, or ``concurrency`` is below 1.
    """

    def __init__(
        self,
        store: Store,
        experiment_id: int,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.5,
        *,
        concurrency: int = 8,
        share_answers: bool = True,
        on_settled: Callable[[Finished], None] | None = None,
    ) -> None:
        check_concurrency(concurrency)
        self.store = store
        self.record = store.experiment(experiment_id)
        #: True when the experiment was stored before the ``ties`` option: it resumes counting
        #: ties as half a win, as it was created (the CLI says so).
        self.legacy_ties = created_before_ties(self.record.config)
        try:
            self.config = stored_config(self.record.config)
        except ValueError:
            raise StoreError(
                f"{store.path}: experiment {experiment_id} has a configuration this llmpo "
                "cannot read"
            ) from None
        if self.config.seed is None:
            raise StoreError(f"{store.path}: experiment {experiment_id} has no seed; cannot resume")
        self.seed = self.config.seed
        self.live = isinstance(self.config.environment, LLMEnvironmentConfig)
        options: dict[str, Any] = {"cache": store, "concurrency": concurrency}
        if self.live:
            from llmpo.llm.batch import BatchJournal  # HTTP clients only for live runs

            options["batch_journal"] = BatchJournal(store, experiment_id)
            options["payer"] = (experiment_id, None)
        self.environment = build_environment(self.config, **options)
        if list(self.environment.policies) != self.record.policies:
            raise StoreError(
                f"experiment {experiment_id}: its data now gives policies "
                f"{list(self.environment.policies)}, but it ran on {self.record.policies}; "
                "the data changed since it started, so it cannot be resumed"
            )
        held = getattr(self.environment, "holdout_task_ids", None)
        if (None if held is None else list(held)) != store.holdout_tasks(experiment_id):
            raise StoreError(
                f"experiment {experiment_id}: its held-out tasks, drawn again from the seed and "
                "the data, differ from those recorded when it started; the data changed, so it "
                "cannot be resumed"
            )
        self.experiment = build_experiment(self.config, self.environment.policies)
        self.source = source_for(self.config, self.environment, share_answers=share_answers)
        self.driver = Driver(
            self.experiment,
            self.source,
            _ExperimentSink(store, experiment_id),
            concurrency=concurrency,
            max_cost=self.config.max_cost,
            on_settled=on_settled,
            on_tick=self._tick,
        )
        self.concurrency = self.driver.concurrency
        self._report = Reporter(on_progress, self.progress, progress_interval)
        self._remaining = RemainingTracker()

    @property
    def dropped_policies(self) -> tuple[str, ...]:
        """Policies of the data left out by the replay's dense-subset restriction."""
        return dropped_policies(self.environment)

    def request_stop(self) -> None:
        """Stop: dispatch nothing more, let the comparisons in flight finish (Ctrl-C)."""
        self.driver.stop.set()

    # ---- entry points ---------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Resume from the store, then run until the experiment is done (signals handled).

        Raises
        ------
        RunFailedError
            When a live backend fails for good; the experiment is left ``failed``.
        StoreError
            When the stored comparisons diverge from what the experiment asks.
        """
        # asyncio's own loop: uvloop, when installed, made results arrive in larger clumps
        # (benchmarks/throughput.py at 64 in flight: 82% of the ideal in-process, against 88%).
        with stop_on_signals(self.driver.stop), self._failure_recorded():
            return asyncio.run(self.arun())

    async def serve(self) -> RunOutcome:
        """:meth:`arun` inside a running event loop (the web server's); when cancelled (the
        server stopping), mark the experiment ``interrupted`` so that the next run resumes it."""
        try:
            with self._failure_recorded():
                return await self.arun()
        except asyncio.CancelledError:
            if not self.experiment.done:
                self.store.set_status(
                    self.record.id,
                    "interrupted",
                    event="interrupted",
                    detail={"comparisons": self.driver.stored, "by": "server stopped"},
                )
            raise

    async def arun(self) -> RunOutcome:
        """The run itself: take up the store, drive, record how it ended."""
        experiment_id = self.record.id
        # Streams, read in chunks: resume keeps the ledger, not a million records.
        self.driver.resume(
            Reread(lambda: self.store.iter_comparisons(experiment_id)),
            ((kind, detail) for _, kind, detail in self.store.iter_events(experiment_id)),
        )
        if self.record.status in UNFINISHED_STATUSES:
            detail: dict[str, Any] = {"stored_comparisons": self.driver.stored}
            if not self.source.in_order:
                detail["concurrency"] = self.concurrency
            self.store.set_status(
                experiment_id,
                "running",
                event="resumed" if self.driver.stored else "started",
                detail=detail,
            )
        self._report.started = time.monotonic()
        failure = await self.driver.drive()
        if self.experiment.done and self.driver.unfinished_replay:
            raise StoreError(
                f"experiment {experiment_id}: the store holds {self.driver.stored} comparisons "
                f"but the experiment stopped after {self.experiment.n_comparisons}; the code or "
                "data changed since they were run"
            )
        return self._finish(failure)

    # ---- the end --------------------------------------------------------------------------------
    def calls(self) -> dict[str, Any] | None:
        """Live runs: what the experiment paid so far, over every session that ran it, this one
        included (see :func:`~llmpo.llm.paid.call_totals`); None otherwise."""
        if not self.live:
            return None
        from llmpo.llm.paid import paid_totals

        totals = paid_totals(self.store, self.record.id)
        # What the non-adaptive alternative pays: every policy answers every selection task once.
        totals["grid_generation_calls"] = len(self.environment.policies) * len(
            self.environment.tasks  # type: ignore[attr-defined]
        )
        return totals

    def _finish(self, failure: str | None) -> RunOutcome:
        experiment_id = self.record.id
        result = self.experiment.result
        calls = self.calls()
        detail: dict[str, Any] = {
            "comparisons": self.driver.stored,
            "seconds": time.monotonic() - self._report.started,
        }
        if self.live:
            detail.update(
                calls=calls,
                invalid_verdicts=self.driver.invalid,
                cost_usd=self.driver.ledger.cost_usd,
                **self.source.session_detail(),
            )
        if failure is not None and not self.experiment.done:  # done: the failure cost nothing
            self.store.set_status(
                experiment_id, "failed", event="backend_failed", detail={**detail, "error": failure}
            )
            # The judge's message names its own fix; a backend's error needs the endpoint fixed.
            fix = "Then" if failure == self.driver.judge_failure() else "Fix the endpoint, then"
            raise RunFailedError(
                f"{failure}\nStopped after {self.driver.stored} comparisons, all stored. {fix} "
                f"resume: llmpo run CONFIG --resume (or llmpo resume {self.store.path} "
                f"{experiment_id})"
            )
        final: dict[str, Any] | None = None
        if self.experiment.done:
            status = str(result.stop_reason)
        elif self.driver.over_cost():
            result = dataclasses.replace(result, stop_reason="max_cost")
            status = "max_cost"
        else:
            status = "interrupted"
        if status != "interrupted":
            final = result.to_dict() if calls is None else {**result.to_dict(), "calls": calls}
        if final is None:
            self.store.set_status(experiment_id, status, event="interrupted", detail=detail)
        elif self.record.status != status:  # a finished experiment stays untouched
            self.store.set_status(experiment_id, status, final, event="finished", detail=detail)
        self._report(final=True)
        return RunOutcome(
            experiment_id,
            status,
            result,
            self.driver.replayed,
            self.driver.new,
            self.dropped_policies,
            judge_warning(self.store.iter_comparisons(experiment_id)),
            calls,
        )

    # ---- progress -------------------------------------------------------------------------------
    def _tick(self) -> None:
        self.store.flush_stale()  # answers of unfinished comparisons: within ~1 s
        self._report()

    def progress(self, elapsed_seconds: float) -> Progress:
        """The current state, for a progress display."""
        certificate = self.experiment.certificate()
        margins = certificate.statistics - certificate.thresholds
        binding = int(margins.argmin())
        remaining = self._remaining.update(
            self.experiment.n_comparisons,
            remaining_needs(self.experiment),
            self.experiment.done and self.experiment.result.certified,
        )
        policies = self.environment.policies
        return Progress(
            n_comparisons=self.experiment.n_comparisons,
            max_comparisons=self.config.max_comparisons,
            leader=policies[certificate.leader],
            min_margin=float(margins[binding]),
            binding_rival=policies[int(certificate.rivals[binding])],
            estimated_remaining=None if remaining is None else remaining.estimate,
            cost_usd=self.driver.ledger.cost_usd,
            elapsed_seconds=elapsed_seconds,
            remaining_low=None if remaining is None else remaining.low,
            remaining_high=None if remaining is None else remaining.high,
        )

    @contextmanager
    def _failure_recorded(self) -> Iterator[None]:
        """Mark the experiment ``failed`` (with a ``failed`` event) when the run raises.

        Without it an unexpected error (a judge prompt that cannot be rendered, a broken user
        function) left the experiment ``running`` forever. ``RunFailedError`` has already been
        recorded; the error itself is re-raised.
        """
        try:
            yield
        except RunFailedError:
            raise
        except Exception as error:
            self.store.set_status(
                self.record.id,
                "failed",
                event="failed",
                detail={"error": f"{type(error).__name__}: {error}"},
            )
            raise
