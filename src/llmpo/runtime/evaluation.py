"""Held-out evaluation: the certified policy against the policy in use today (the baseline).

After an experiment, ``llmpo evaluate`` compares its winner with the configuration's ``baseline``
(default: the first policy) on tasks the selection run never used: the held-out split declared in
the configuration and recorded in the store when the run started, or a held-out task file given at
evaluation time (refused if any of its tasks was open to the run). Every comparison is a fresh one:

* live LLM policies answer with fresh samples (one pair is compared, so no answer serves two
  comparisons: the rounds of a run, docs/cost.md, have nothing to share here) — each policy's
  replicate index on a task is the smallest one no stored comparison of the experiment (selection
  or evaluation) has used — through the same store, generation cache, judge, retries and price
  table as the run;
* replay environments use only records of held-out task ids, each at most once (in a seeded
  order): the number of comparisons is capped at the held-out records of the pair;
* synthetic instances (which have no tasks) draw fresh outcomes from the evaluation's own seed.

Comparison number n of an evaluation takes the task at position (n − 1) mod T of a permutation of
the T held-out tasks drawn from the evaluation's seed: each task once before any repeats. With N ≤ T
comparisons the outcomes are independent draws over new questions like the held-out ones; beyond,
tasks repeat with fresh answers and the interval is for the win rate on this held-out set.

The result is the winner's win rate against the baseline with ties counted ½ (ties also shown
separately) and its 95% interval — Clopper–Pearson on wins + ties/2: exact without ties,
conservative with them (:mod:`llmpo.stats.winrate`) — plus, for a ``reference`` judge,
each policy's accuracy with its Clopper–Pearson interval. Each comparison is committed before the
next is counted, so an interrupted evaluation resumes (``--resume``) where it stopped: as a run
resumes (:meth:`llmpo.runtime.driver.Driver.resume`), the comparisons it had asked for and not
finished (``evaluation_asked`` events) are dispatched again with the same numbers, tasks and
replicates, and a ``batch: true`` backend records its jobs in the evaluation's own
:class:`~llmpo.llm.batch.BatchJournal`, so a job submitted before the stop is collected, never
submitted (and paid) again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmpo.config import ExperimentConfig, stored_config
from llmpo.environments.base import Environment
from llmpo.environments.replay import ReplayEnvironment
from llmpo.errors import RunFailedError
from llmpo.runtime.driver import Driver, FixedPair, Reporter
from llmpo.runtime.setup import build_environment
from llmpo.runtime.sources import Finished, source_for
from llmpo.stats.winrate import WIN_RATE_METHOD, clopper_pearson, win_rate_interval
from llmpo.store import (
    FINISHED_STATUSES,
    ComparisonRecord,
    EvaluationRecord,
    ExperimentRecord,
    Store,
    StoreError,
)
from llmpo.store.records import outcome_shares, tally

#: Stream of the experiment's seed that seeds evaluations (distinct from the run and the split).
EVALUATION_STREAM = 0x6576616C  # "eval"
#: Confidence level of the win-rate and accuracy intervals.
LEVEL = 0.95


class EvaluationError(StoreError):
    """An evaluation that cannot run (unfinished experiment, no held-out tasks, …), with the fix."""


def baseline_of(record: ExperimentRecord) -> str:
    """The experiment's baseline: its configured ``baseline``, else its first policy.

    Raises
    ------
    EvaluationError
        When the baseline is not among the experiment's policies (left out of the data).
    """
    baseline = record.config.get("baseline") or record.policies[0]
    if baseline not in record.policies:
        raise EvaluationError(
            f"experiment {record.id}: its baseline {baseline!r} is not among the policies it "
            f"compared ({', '.join(record.policies)}); it was left out of the data"
        )
    return baseline


def _evaluation_seed(experiment_seed: int, evaluation_id: int) -> int:
    sequence = np.random.SeedSequence([experiment_seed, EVALUATION_STREAM, evaluation_id])
    return int(sequence.generate_state(1)[0])


def _restricted_config(config: ExperimentConfig, names: list[str]) -> ExperimentConfig:
    """The configuration with only the two evaluated policies (only their pair needs data)."""
    policies = [
        p for p in config.policies or names if (p if isinstance(p, str) else p.name) in names
    ]
    environment = config.environment
    if environment.type == "replay":
        environment = environment.model_copy(update={"dense_subset": False})
    return config.model_copy(update={"policies": policies, "environment": environment})


def _task_ids(environment: Environment) -> set[str] | None:
    """Task ids the evaluation environment can use (None: it has no tasks)."""
    tasks = getattr(environment, "tasks", None)
    if tasks is not None:
        return {task.id for task in tasks}
    if isinstance(environment, ReplayEnvironment):
        return environment.task_ids()
    return None


@dataclass(frozen=True)
class EvaluationProgress:
    """What a progress display shows during an evaluation.

    Attributes
    ----------
    done : int
        Comparisons stored so far (those of an earlier, resumed session included).
    total : int
        Comparisons asked for.
    wins, ties, losses : float
        Outcomes of the winner against the baseline so far: whole numbers for verdicts; a
        preference probability y counts (2y − 1)⁺ won, (1 − 2y)⁺ lost and the rest tied
        (docs/ties.md).
    cost_usd : float or None
        Money spent so far by this session, when the environment reports it.
    elapsed_seconds : float
        Wall time of this session so far.
    """

    done: int
    total: int
    wins: float
    ties: float
    losses: float
    cost_usd: float | None
    elapsed_seconds: float


class Evaluation:
    """Runs (or resumes) one held-out evaluation of a stored experiment.

    Parameters
    ----------
    store : Store
        The store, opened as writer.
    experiment_id : int, optional
        The experiment (default: the latest).
    comparisons : int
        Comparisons of the winner against the baseline (valid verdicts).
    tasks : Path, optional
        A held-out task file (for replay: its ids), instead of the recorded split.
    concurrency : int
        Live LLM experiments: comparisons in flight.
    resume : bool
        Continue the latest unfinished evaluation of the experiment instead of starting one.
    on_progress : callable, optional
        Called with an :class:`EvaluationProgress` at most every ``progress_interval`` seconds
        and at the end.
    progress_interval : float
        Seconds between progress reports.

    Raises
    ------
    EvaluationError
        For an unfinished experiment, tasks the selection run used, or nothing to resume.
    ConfigError
        When there are no held-out tasks (no holdout declared and no ``tasks``), or a ``tasks``
        file holds tasks that were open to the selection run.
    """

    def __init__(
        self,
        store: Store,
        experiment_id: int | None = None,
        comparisons: int = 200,
        tasks: Path | None = None,
        concurrency: int = 8,
        resume: bool = False,
        on_progress: Callable[[EvaluationProgress], None] | None = None,
        progress_interval: float = 0.5,
    ) -> None:
        #: Comparisons counted, and the winner's wins, ties, losses (by outcome_shares).
        self._done = 0
        self._tally: list[float] = [0, 0, 0]
        self._cost_usd: float | None = None
        self._report = Reporter(on_progress, self._progress, progress_interval)
        if comparisons < 1:
            raise EvaluationError(f"--comparisons must be at least 1, got {comparisons}")
        self.store = store
        self.record = store.experiment(experiment_id)
        self.concurrency = concurrency
        record = self.record
        if record.status not in FINISHED_STATUSES or record.result is None:
            raise EvaluationError(
                f"experiment {record.id} is {record.status}; evaluate it once it has finished. "
                f"Fix: llmpo resume {store.path} {record.id}"
            )
        self.config = stored_config(record.config)
        self.winner = str(record.result["best"])
        self.certified = bool(record.result.get("certified"))
        self.baseline = baseline_of(record)
        self.evaluation: EvaluationRecord | None = None
        if self.winner == self.baseline:
            return  # nothing to compare: the experiment chose today's policy
        if resume:
            unfinished = [e for e in store.evaluations(record.id) if e.status != "done"]
            if not unfinished:
                raise EvaluationError(
                    f"experiment {record.id} has no unfinished evaluation to resume. Fix: run "
                    "without --resume to start one"
                )
            self.evaluation = unfinished[-1]
            settings = self.evaluation.settings
            comparisons = int(settings["comparisons"])
            tasks = Path(settings["tasks"]) if settings.get("tasks") else None
        requested = comparisons
        self.tasks = tasks
        config = _restricted_config(self.config, [self.winner, self.baseline])
        self.environment = build_environment(config, "evaluation", tasks)
        self._check_held_out()
        names = list(self.environment.policies)
        self.env_pair = (names.index(self.winner), names.index(self.baseline))
        self.stored_pair = (
            record.policies.index(self.winner),
            record.policies.index(self.baseline),
        )
        records = self._record_count()
        if records is not None and comparisons > records:
            # Replayed records are fixed: repeating one adds no information. One each at most.
            comparisons = records
        self.comparisons = comparisons
        if self.evaluation is None:
            evaluation_id = store.create_evaluation(
                record.id,
                self.winner,
                self.baseline,
                {
                    "comparisons": comparisons,
                    "requested_comparisons": requested,
                    "tasks": None if tasks is None else str(tasks),
                    "held_out_tasks": sorted(self._pool or ()),
                    "held_out_records": self._record_count(),
                },
            )
            self.evaluation = store.evaluation(evaluation_id)
        self.seed = _evaluation_seed(self.config.seed or 0, self.evaluation.id)

    def _record_count(self) -> int | None:
        """Replay: the held-out records of the evaluated pair."""
        if not isinstance(self.environment, ReplayEnvironment):
            return None
        records = self.environment.records(*self.env_pair)
        return None if records is None else len(records)

    def _check_held_out(self) -> None:
        """Refuse an evaluation whose tasks the selection run used or could have used."""
        pool = _task_ids(self.environment)
        self._pool = pool
        if pool is None:
            return  # a synthetic instance: no tasks, every draw is fresh
        recorded = self.store.holdout_tasks(self.record.id)
        if self.tasks is None and recorded is not None and not pool <= set(recorded):
            raise EvaluationError(
                f"experiment {self.record.id}: the held-out tasks drawn again from the seed "
                "differ from those recorded when it started; the data changed"
            )
        used = pool.intersection(c.task_id for c in self.store.iter_comparisons(self.record.id))
        if used:
            raise EvaluationError(
                f"tasks {sorted(used)[:5]} were used by the selection run of experiment "
                f"{self.record.id}; an evaluation must use tasks it never saw. Fix: evaluate on "
                "other tasks"
            )

    # ---- running -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the missing comparisons, mark the evaluation done and return its summary.

        Raises
        ------
        RunFailedError
            When a live backend fails for good (the evaluation is left ``interrupted``; every
            finished comparison is stored).
        """
        if self.evaluation is None:
            return same_policy_summary(self.record, self.winner, self.certified)
        evaluation_id = self.evaluation.id
        self.store.set_evaluation_status(evaluation_id, "running")
        for stored in self.store.evaluation_comparisons(evaluation_id):
            self._count(stored.outcome)
        self._report.started = time.monotonic()
        try:
            failure = asyncio.run(self._drive())
            if failure is not None:
                raise RunFailedError(
                    f"{failure}\nStopped after {self._done} evaluation "
                    "comparisons, all stored. Fix the endpoint, then continue: llmpo evaluate "
                    f"{self.store.path} {self.record.id} --resume"
                )
        except BaseException:
            self.store.set_evaluation_status(evaluation_id, "interrupted")
            raise
        self._report(final=True)
        summary = {
            **summarize_evaluation(self.store, self.store.evaluation(evaluation_id)),
            "status": "done",
        }
        if self.config.environment.type == "llm":  # what it paid, as a run reports it
            from llmpo.llm.paid import batch_totals, paid_totals

            summary["calls"] = paid_totals(self.store, self.record.id, evaluation_id)
            batched = batch_totals(self.store.iter_events(self.record.id), evaluation_id)
            if batched["batch_jobs"]:  # calls sent through a provider's batch API
                summary["calls"].update(batched)
        self.store.set_evaluation_status(evaluation_id, "done", summary)
        self.store.add_event(
            self.record.id,
            "evaluation_finished",
            {"evaluation": evaluation_id, "comparisons": summary["comparisons"]},
        )
        return summary

    def _task_order(self) -> list[Any]:
        tasks = list(getattr(self.environment, "tasks", ()))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        return [tasks[k] for k in rng.permutation(len(tasks))]

    def _settled(self, finished: Finished) -> None:
        """Count a committed comparison for the progress display."""
        if finished.stored or finished.outcome is None:
            return
        self._count(finished.outcome)
        if finished.cost_usd is not None:
            self._cost_usd = (self._cost_usd or 0.0) + finished.cost_usd
        self._report()

    def _count(self, outcome: float) -> None:
        self._done += 1
        for side, share in enumerate(outcome_shares(outcome)):
            self._tally[side] += int(share) if share.is_integer() else share

    def _progress(self, elapsed_seconds: float) -> EvaluationProgress:
        wins, ties, losses = self._tally
        return EvaluationProgress(
            self._done, self.comparisons, wins, ties, losses, self._cost_usd, elapsed_seconds
        )

    def _in_source_indices(
        self, records: Iterable[ComparisonRecord]
    ) -> Iterator[ComparisonRecord]:
        """Stored comparisons with the policy indices of the evaluation's two-policy source
        (the experiment's other policies get negative indices: their replicates do not matter),
        one at a time."""
        names = self.record.policies
        index = {name: k for k, name in enumerate(self.environment.policies)}
        for record in records:
            yield dataclasses.replace(
                record,
                policy_a=index.get(names[record.policy_a], -1 - record.policy_a),
                policy_b=index.get(names[record.policy_b], -1 - record.policy_b),
            )

    async def _drive(self) -> str | None:
        """Run the missing comparisons through the one driver; the failure that stopped it."""
        assert self.evaluation is not None
        a, b = self.env_pair
        environment: Any = self.environment
        records = None
        if self.config.environment.type == "llm":
            from llmpo.llm.batch import BatchJournal  # HTTP clients only for live evaluations

            # The judge's random choices: the evaluation's own stream. One pair is compared, so
            # no answer serves two comparisons (no rounds). Batch jobs are recorded as a run
            # records them, in the evaluation's own journal: a resume collects them.
            environment = build_environment(
                _restricted_config(self.config, [self.winner, self.baseline]),
                "evaluation",
                self.tasks,
                cache=self.store,
                concurrency=self.concurrency,
                seed=self.seed,
                payer=(self.record.id, self.evaluation.id),
                batch_journal=BatchJournal(self.store, self.record.id, self.evaluation.id),
            )
        elif isinstance(self.environment, ReplayEnvironment):
            records = self.environment.records(a, b)
            if records:  # each held-out record once (seeded order) before any repeats
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
                records = [records[k] for k in rng.permutation(len(records))]
        source = source_for(
            self.config,
            environment,
            share_answers=False,
            task_order=self._task_order(),
            records=records,
            seed=self.seed,
            paced=False,
        )
        stored = self.store.evaluation_comparisons(self.evaluation.id)
        # The experiment's comparisons, read as a stream (resume keeps their replicates only).
        others = itertools.chain(
            self.store.iter_comparisons(self.record.id),
            *(
                self.store.evaluation_comparisons(evaluation.id)
                for evaluation in self.store.evaluations(self.record.id)
                if evaluation.id != self.evaluation.id
            ),
        )
        sink = _EvaluationSink(self.store, self.record.id, self.evaluation.id, self.stored_pair)
        driver = Driver(
            FixedPair(a, b, self.comparisons),
            source,
            sink,
            concurrency=self.concurrency,
            on_settled=self._settled,
            judge_check=False,
        )
        # The run's resume rule: comparisons asked but never finished are dispatched again with
        # the same numbers, tasks and replicates, so their paid answers, judge replies and batch
        # jobs are found again.
        driver.resume(
            list(self._in_source_indices(stored)),
            sink.events(),
            also_used=self._in_source_indices(others),
        )
        return await driver.drive()


class _EvaluationSink:
    """Commits an evaluation's comparisons (with the experiment's policy indices) and events.

    Its events are the experiment's, named for the evaluation (``evaluation_invalid_verdict``,
    ``evaluation_asked``, with ``"evaluation": id``) so that neither the run nor another
    evaluation takes them for its own; :meth:`events` reads them back for the driver's resume.
    """

    def __init__(
        self, store: Store, experiment_id: int, evaluation_id: int, pair: tuple[int, int]
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.evaluation_id = evaluation_id
        self.pair = pair

    def append(self, seq: int, finished: Finished) -> None:
        record = finished.record(seq, *self.pair)
        self.store.append_evaluation_comparison(self.evaluation_id, record)

    def invalid(self, finished: Finished) -> None:
        self.store.add_event(
            self.experiment_id,
            "evaluation_invalid_verdict",
            {**finished.detail, "evaluation": self.evaluation_id},
        )

    def asked(self, rows: list[list[Any]]) -> None:
        self.store.add_event(
            self.experiment_id,
            "evaluation_asked",
            {"comparisons": rows, "evaluation": self.evaluation_id},
        )

    def events(self) -> list[tuple[str, Any]]:
        """This evaluation's events as the driver's resume reads a run's: (kind, detail)."""
        kinds = {"evaluation_invalid_verdict": "invalid_verdict", "evaluation_asked": "asked"}
        return [
            (kinds[kind], detail)
            for _, kind, detail in self.store.events(self.experiment_id)
            if kind in kinds
            and detail is not None
            and detail.get("evaluation") == self.evaluation_id
        ]


# ---- summaries -----------------------------------------------------------------------------------
def same_policy_summary(record: ExperimentRecord, winner: str, certified: bool) -> dict[str, Any]:
    """The summary when the experiment chose the baseline itself: no switch, nothing to measure."""
    return {
        "experiment_id": record.id,
        "evaluation_id": None,
        "winner": winner,
        "baseline": winner,
        "certified": certified,
        "comparisons": 0,
        "sentence": f"The experiment chose today's policy {winner}: there is nothing to switch to.",
    }


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def summarize_evaluation(store: Store, evaluation: EvaluationRecord) -> dict[str, Any]:
    """The JSON-ready result of an evaluation: win rate, interval, counts, cost, accuracies."""
    record = store.experiment(evaluation.experiment_id)
    comparisons = store.evaluation_comparisons(evaluation.id)
    # A preference probability y counts (2y − 1)⁺ won, (1 − 2y)⁺ lost, the rest tied, so that
    # wins + ties/2 is the sum of the outcomes.
    wins, ties, losses = tally(c.outcome for c in comparisons)
    costs = [c.cost_usd for c in comparisons if c.cost_usd is not None]
    summary: dict[str, Any] = {
        "experiment_id": record.id,
        "evaluation_id": evaluation.id,
        "status": evaluation.status,
        "winner": evaluation.winner,
        "baseline": evaluation.baseline,
        "certified": bool((record.result or {}).get("certified")),
        "comparisons": len(comparisons),
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "held_out_tasks": len(evaluation.settings.get("held_out_tasks") or []) or None,
        "held_out_records": evaluation.settings.get("held_out_records"),
        "tasks_used": len({c.task_id for c in comparisons if c.task_id is not None}) or None,
        "cost_usd": sum(costs) if costs else None,
        "input_tokens": sum(c.input_tokens or 0 for c in comparisons),
        "output_tokens": sum(c.output_tokens or 0 for c in comparisons),
        "seconds": sum(
            (c.finished_at or 0.0) - (c.started_at or 0.0)
            for c in comparisons
            if c.started_at is not None
        ),
        "interval_method": WIN_RATE_METHOD,
        "level": LEVEL,
        "win_rate": None,
        "interval": None,
        "accuracy": None,
        "caveat": None,
    }
    if not comparisons:
        summary["sentence"] = "No evaluation comparison yet."
        return summary
    rate = win_rate_interval(wins, ties, losses, LEVEL)
    summary["win_rate"] = rate.estimate
    summary["interval"] = [rate.lower, rate.upper]
    summary["accuracy"] = _accuracies(comparisons, evaluation.winner, evaluation.baseline)
    n = len(comparisons)
    tie_note = f"; {ties} were ties, counted as half" if ties else ""
    shown = rate.lower > 0.5 or rate.upper < 0.5
    verb = "beats" if rate.lower > 0.5 else "wins against"
    uncertified = "" if summary["certified"] else " (the best so far, not certified)"
    verdict = (
        ""
        if shown
        else "; the interval includes 50%, so it is not shown better than today's policy at "
        "this number of comparisons"
    )
    where, about = _interval_scope(summary, n)
    summary["sentence"] = (
        f"Policy {evaluation.winner}{uncertified} {verb} today's policy {evaluation.baseline} "
        f"in {_percent(rate.estimate)} of {n} comparisons {where} ({LEVEL:.0%} CI "
        f"{_percent(rate.lower)}–{_percent(rate.upper)} for {about}{tie_note}){verdict}."
    )
    distinct = summary["held_out_tasks"]
    if summary["held_out_records"] is None and distinct and n > distinct:
        summary["caveat"] = (
            f"{n} comparisons over {distinct} held-out tasks: tasks repeat (with "
            f"fresh answers), so the interval is for the win rate on these {distinct} tasks; for "
            "new questions at large, hold out more tasks"
        )
    return summary


def _interval_scope(summary: dict[str, Any], n: int) -> tuple[str, str]:
    """Where the comparisons were made, and what the win-rate interval is about: the held-out
    tasks themselves when they repeat, questions like them when each was used at most once."""
    distinct = summary["held_out_tasks"]
    if summary["held_out_records"] is not None:
        return (
            "on recorded judgments of held-out tasks",
            "its win rate on judgments like these held-out ones",
        )
    if not distinct:
        return "of fresh simulated outcomes", "its probability of winning a comparison"
    if n > distinct:
        return (
            f"on the same {distinct} held-out tasks, asked again with fresh answers",
            f"its win rate on these {distinct} tasks, not on new questions at large",
        )
    return (
        f"on {summary['tasks_used'] or n} held-out tasks, each once",
        "its win rate on new questions like these held-out ones",
    )


def _accuracies(
    comparisons: list[ComparisonRecord], winner: str, baseline: str
) -> dict[str, Any] | None:
    """Each policy's share of answers matching the reference (reference judge), with intervals."""
    matches: list[tuple[bool, bool]] = []
    for comparison in comparisons:
        raw = comparison.raw
        judge = raw.get("judge") if isinstance(raw, dict) else None
        if not isinstance(judge, dict) or not {"match_a", "match_b"} <= judge.keys():
            return None
        matches.append((bool(judge["match_a"]), bool(judge["match_b"])))
    n = len(matches)
    result = {}
    for name, column in ((winner, 0), (baseline, 1)):
        correct = sum(m[column] for m in matches)
        lower, upper = clopper_pearson(correct, n, LEVEL)
        result[name] = {
            "correct": correct,
            "n": n,
            "accuracy": correct / n,
            "interval": [lower, upper],
        }
    return result
