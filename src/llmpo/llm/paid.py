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

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmpo.store.payloads import LiveRaw
from llmpo.store.records import ComparisonRecord, Payment

if TYPE_CHECKING:
    from llmpo.store import Store


#: Events that end a session: before payments were recorded, they carried its ``session_calls``.
SESSION_ENDS = ("finished", "interrupted", "backend_failed")


def plus_reported(total: Any, value: Any) -> Any:
    """``total + value``, where None is no value (a total stays None until one is reported)."""
    if value is None:
        return total
    return value if total is None else total + value


@dataclass
class _Charged:
    """What comparisons were charged, the way stores before ``payments`` counted it."""

    generation: int = 0
    judge: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None

    def add(self, live: LiveRaw | None, input_tokens: Any, output_tokens: Any, cost: Any) -> None:
        if live is not None:
            self.generation += live.generation_calls
            self.judge += live.judge_calls
        self.input_tokens = plus_reported(self.input_tokens, input_tokens)
        self.output_tokens = plus_reported(self.output_tokens, output_tokens)
        self.cost_usd = plus_reported(self.cost_usd, cost)


def _sides(live: LiveRaw, task_id: str | None) -> list[tuple[bool, tuple[Any, ...]]]:
    """Per side of a live comparison: whether it was ``cached``, and where its answer is in the
    cache as (task, replicate, request key)."""
    replicates = live.replicates or (None, None)
    return [
        (cached, (task_id, replicate, key))
        for cached, replicate, key in zip(live.cached, replicates, live.request_keys, strict=False)
    ]


def _where(payment: Payment) -> tuple[Any, ...]:
    """Where a paid answer is in the cache, as :func:`_sides` names it."""
    return (payment.task_id, payment.replicate, payment.request_key)


def call_totals(
    comparisons: Iterable[ComparisonRecord],
    invalid: list[dict[str, Any]] | None = None,
    sessions: list[dict[str, Any]] | None = None,
    payments: list[Payment] | None = None,
) -> dict[str, Any]:
    """What a live run paid, in calls, next to the comparisons it got.

    Parameters
    ----------
    comparisons : iterable of ComparisonRecord
        The stored comparisons of a run (or an evaluation), read once (a stream will do: only
        where each side's answer sits in the cache is kept, not the records).
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
    # Comparisons finished before the first recorded payment were paid by sessions that did not
    # record payments (a store upgraded during the experiment): counted the old way. With no
    # payment at all, every comparison and invalid verdict is.
    first = min((p.paid_at for p in payments), default=None)
    answers = [p for p in payments if p.kind == "generation"]
    replies = [p for p in payments if p.kind == "judge"]
    paid = {_where(p) for p in answers}
    charged = _Charged()  # what the comparisons counted the old way were charged
    used: set[tuple[Any, ...]] = set()
    judged: set[tuple[Any, ...]] = set()  # a judge reply is cached under (task, number)
    count = reused = shared = 0
    first_start = last_end = None

    def tell(live: LiveRaw | None, task_id: str | None) -> None:
        nonlocal reused, shared
        if live is None:
            return
        for cached, where in _sides(live, task_id):
            used.add(where)
            reused += cached and where not in paid
        judged.add((task_id, live.number))
        shared += any(live.shared)

    for c in comparisons:
        count += 1
        live = LiveRaw.from_json(c.raw)
        tell(live, c.task_id)
        if first is None or (c.finished_at is not None and c.finished_at < first):
            charged.add(live, c.input_tokens, c.output_tokens, c.cost_usd)
        if c.started_at is not None:
            first_start = c.started_at if first_start is None else min(first_start, c.started_at)
        if c.finished_at is not None:
            last_end = c.finished_at if last_end is None else max(last_end, c.finished_at)
    for detail in invalid:
        live = LiveRaw.from_json(detail)
        tell(live, detail.get("task_id"))
        if first is None:
            charged.add(live, None, None, detail.get("cost_usd"))
    # Sessions' own counts, when larger, include rounds cancelled when a session stopped (a
    # session killed at once wrote none: the comparisons are then a lower bound).
    ended = list(sessions or [])
    old_generation = max(charged.generation, sum(int(x.get("generation", 0)) for x in ended))
    old_judge = max(charged.judge, sum(int(x.get("judge", 0)) for x in ended))
    return {
        "comparisons": count,
        "generation_calls": old_generation + len(answers),
        "unused_generation_calls": old_generation
        - charged.generation
        + sum(_where(p) not in used for p in answers),
        "reused_answers": reused,
        "judge_calls": old_judge + len(replies),
        "unused_judge_calls": old_judge
        - charged.judge
        + sum(r.task_id is not None and (r.task_id, r.replicate) not in judged for r in replies),
        "shared_comparisons": shared,
        "invalid_verdicts": len(invalid),
        "input_tokens": _sum([charged.input_tokens] + [p.input_tokens for p in payments]),
        "output_tokens": _sum([charged.output_tokens] + [p.output_tokens for p in payments]),
        "cost_usd": _sum([charged.cost_usd] + [p.cost_usd for p in payments]),
        "wall_seconds": (
            last_end - first_start if first_start is not None and last_end is not None else None
        ),
    }


def _sum(values: list[Any]) -> Any:
    """The sum of the figures reported (None when none was)."""
    return functools.reduce(plus_reported, values, None)


def batch_totals(
    events: Iterable[tuple[Any, str, dict[str, Any] | None]], evaluation_id: int | None = None
) -> dict[str, int]:
    """Jobs and requests sent through a provider's batch API (docs/batch.md) by the run
    (``evaluation_id`` None) or by one held-out evaluation, from the store's ``batch_submitted``
    events (an evaluation's name it; the run's do not)."""
    jobs = [
        detail
        for _, kind, detail in events
        if kind == "batch_submitted"
        and detail is not None
        and detail.get("evaluation") == evaluation_id
    ]
    return {
        "batch_jobs": len(jobs),
        "batch_requests": sum(len(detail.get("requests", ())) for detail in jobs),
    }


def paid_totals(
    store: Store, experiment_id: int, evaluation_id: int | None = None
) -> dict[str, Any]:
    """:func:`call_totals` of an experiment's run (``evaluation_id`` None) or of one of its
    held-out evaluations, from what the store holds (its comparisons and events read as
    streams)."""
    invalid: list[dict[str, Any]] = []
    sessions: list[dict[str, Any]] = []
    for _, kind, detail in store.iter_events(experiment_id):
        if detail is None:
            continue
        if evaluation_id is None:
            if kind == "invalid_verdict":
                invalid.append(detail)
            elif "session_calls" in detail and kind in SESSION_ENDS:
                sessions.append(detail["session_calls"])  # a session before payments, at its end
        elif kind == "evaluation_invalid_verdict" and detail.get("evaluation") == evaluation_id:
            invalid.append(detail)
    comparisons = (
        store.iter_comparisons(experiment_id)
        if evaluation_id is None
        else store.evaluation_comparisons(evaluation_id)
    )
    return call_totals(comparisons, invalid, sessions, store.payments(experiment_id, evaluation_id))
