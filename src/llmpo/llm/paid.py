"""What a live run (or a held-out evaluation) paid, in calls, tokens and dollars.

The one place that turns what a store recorded into the figures users read next to comparisons
(``"calls"`` in ``llmpo run --json`` and the stored result, the report, ``llmpo evaluate``).

Every call paid — a policy's answer, an LLM judge's reply — is recorded in the store's
``payments`` with the experiment (and evaluation) that paid it, its tokens and its cost, in the
transaction that commits its reply (:meth:`llmpo.store.answers.Answers.record_payment`). The
totals count those records, so a session killed outright (SIGKILL, power loss) loses from them
nothing whose reply was stored, and a resumed session that reads those replies back from the
cache does not count them twice or as reused.

Stores written before payments were recorded (schema v5) have no records: their totals are
computed as they always were, from the calls each stored comparison was charged and the counts
each session wrote when it ended (``session_calls`` of its last event). An experiment begun
before its store was upgraded and continued after counts both: the old way for the comparisons
finished before its first recorded payment, the records for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmpo.store.payloads import LiveRaw
from llmpo.store.records import ComparisonRecord, Payment

if TYPE_CHECKING:
    from llmpo.store import Store


def _total(values: list[Any]) -> Any:
    """The sum of the figures reported (None when none was)."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None


@dataclass(frozen=True)
class _Charged:
    """What comparisons were charged, the way stores before ``payments`` counted it."""

    generation: int
    judge: int
    told_generation: int
    told_judge: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None


def _charged(
    comparisons: list[ComparisonRecord],
    invalid: list[dict[str, Any]],
    sessions: list[dict[str, Any]],
) -> _Charged:
    """The calls charged to stored comparisons and invalid verdicts; the sessions' own counts
    when larger (they include rounds cancelled when a session stopped; a session killed at once
    wrote none, so the comparisons are then a lower bound)."""
    generation = judge = 0
    for raw in [c.raw for c in comparisons] + invalid:
        live = LiveRaw.from_json(raw)
        if live is not None:
            generation += live.generation_calls
            judge += live.judge_calls
    return _Charged(
        max(generation, sum(int(s.get("generation", 0)) for s in sessions)),
        max(judge, sum(int(s.get("judge", 0)) for s in sessions)),
        generation,
        judge,
        _total([c.input_tokens for c in comparisons]),
        _total([c.output_tokens for c in comparisons]),
        _total([c.cost_usd for c in comparisons] + [r.get("cost_usd") for r in invalid]),
    )


@dataclass(frozen=True)
class _Told:
    """A live comparison or invalid verdict: its record and its task."""

    live: LiveRaw
    task_id: str | None

    def sides(self) -> list[tuple[bool, tuple[Any, ...]]]:
        """Per side: whether it was ``cached``, and where its answer is in the cache as (task,
        replicate, request key)."""
        replicates = self.live.replicates or (None, None)
        return [
            (cached, (self.task_id, replicate, key))
            for cached, replicate, key in zip(
                self.live.cached, replicates, self.live.request_keys, strict=False
            )
        ]


def _live(comparisons: list[ComparisonRecord], invalid: list[dict[str, Any]]) -> list[_Told]:
    """The live records of the comparisons and invalid verdicts, with their tasks."""
    found = [(LiveRaw.from_json(c.raw), c.task_id) for c in comparisons]
    found += [(LiveRaw.from_json(detail), detail.get("task_id")) for detail in invalid]
    return [_Told(live, task) for live, task in found if live is not None]


def _where(payment: Payment) -> tuple[Any, ...]:
    """Where a paid answer is in the cache, as :meth:`_Told.sides` names it."""
    return (payment.task_id, payment.replicate, payment.request_key)


def call_totals(
    comparisons: list[ComparisonRecord],
    invalid: list[dict[str, Any]] | None = None,
    sessions: list[dict[str, Any]] | None = None,
    payments: list[Payment] | None = None,
) -> dict[str, Any]:
    """What a live run paid, in calls, next to the comparisons it got.

    Parameters
    ----------
    comparisons : list of ComparisonRecord
        The stored comparisons of a run (or an evaluation).
    invalid : list of dict, optional
        The details of its ``invalid_verdict`` events: paid for, never told.
    sessions : list of dict, optional
        Calls counted by sessions that ended before payments were recorded, as
        ``{"generation": g, "judge": j}`` (the ``session_calls`` of their last event).
    payments : list of Payment, optional
        The calls it paid, as the store recorded them (None or empty: a store, or a part of an
        experiment, from before payments were recorded).

    Returns
    -------
    dict
        ``comparisons``; ``generation_calls`` (answers generated and paid, each once however many
        comparisons it served, whichever session paid it and however that session ended);
        ``unused_generation_calls`` (of those, answers no stored comparison or invalid verdict
        used: rounds in flight when the run stopped); ``reused_answers`` (answer uses read from
        the cache that this run did not pay for: paid by another experiment sharing the cache, or
        by an earlier run); ``judge_calls`` and ``unused_judge_calls`` likewise;
        ``shared_comparisons`` (comparisons with an answer shared with another of their round);
        ``invalid_verdicts``; ``input_tokens``, ``output_tokens``, ``cost_usd`` of every call paid
        (None when never reported); ``wall_seconds`` from the first comparison's start to the last
        one's end.
    """
    invalid = list(invalid or [])
    payments = list(payments or [])
    told = _live(comparisons, invalid)
    if payments:
        # Comparisons finished before the first recorded payment were paid by sessions that did
        # not record payments (a store upgraded during the experiment): counted the old way.
        first = min(p.paid_at for p in payments)
        before = [c for c in comparisons if c.finished_at is not None and c.finished_at < first]
        old = _charged(before, [], list(sessions or []))
    else:
        old = _charged(comparisons, invalid, list(sessions or []))
    answers = [p for p in payments if p.kind == "generation"]
    replies = [p for p in payments if p.kind == "judge"]
    sides = [side for t in told for side in t.sides()]
    paid = {_where(p) for p in answers}
    used = {where for _, where in sides}
    # A judge reply is cached under its comparison's task and number (its "replicate").
    judged = {(t.task_id, t.live.number) for t in told}
    started = [c.started_at for c in comparisons if c.started_at is not None]
    finished = [c.finished_at for c in comparisons if c.finished_at is not None]
    return {
        "comparisons": len(comparisons),
        "generation_calls": old.generation + len(answers),
        "unused_generation_calls": old.generation
        - old.told_generation
        + sum(_where(p) not in used for p in answers),
        "reused_answers": sum(cached and where not in paid for cached, where in sides),
        "judge_calls": old.judge + len(replies),
        "unused_judge_calls": old.judge
        - old.told_judge
        + sum(r.task_id is not None and (r.task_id, r.replicate) not in judged for r in replies),
        "shared_comparisons": sum(any(t.live.shared) for t in told),
        "invalid_verdicts": len(invalid),
        "input_tokens": _total([old.input_tokens] + [p.input_tokens for p in payments]),
        "output_tokens": _total([old.output_tokens] + [p.output_tokens for p in payments]),
        "cost_usd": _total([old.cost_usd] + [p.cost_usd for p in payments]),
        "wall_seconds": max(finished) - min(started) if started and finished else None,
    }


def paid_totals(
    store: Store, experiment_id: int, evaluation_id: int | None = None
) -> dict[str, Any]:
    """:func:`call_totals` of an experiment's run (``evaluation_id`` None) or of one of its
    held-out evaluations, from what the store holds."""
    events = store.events(experiment_id)
    if evaluation_id is None:
        comparisons = store.comparisons(experiment_id)
        invalid = [d for _, kind, d in events if kind == "invalid_verdict" and d is not None]
    else:
        comparisons = store.evaluation_comparisons(evaluation_id)
        invalid = [
            d
            for _, kind, d in events
            if kind == "evaluation_invalid_verdict"
            and d is not None
            and d.get("evaluation") == evaluation_id
        ]
    # Sessions of runs before payments were recorded wrote their counts when they ended.
    sessions = [
        d["session_calls"]
        for _, kind, d in events
        if evaluation_id is None
        and kind in ("finished", "interrupted", "backend_failed")
        and d is not None
        and "session_calls" in d
    ]
    return call_totals(comparisons, invalid, sessions, store.payments(experiment_id, evaluation_id))
