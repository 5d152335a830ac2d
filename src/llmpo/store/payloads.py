"""The JSON a store keeps, declared: a live comparison's ``raw`` record and each event's detail.

The store's tables hold a few JSON columns (a comparison's ``raw``, an event's ``detail``, an
experiment's configuration and result, an evaluation's settings and result). Their shapes are
declared here and nowhere else:

* :class:`LiveRaw` — the ``raw`` record of a comparison judged live (``llmpo run`` on LLMs,
  ``llmpo evaluate``): which answers it used, whether it paid for them, the judge's verdict. It is
  written with :meth:`LiveRaw.to_json` and read back with :meth:`LiveRaw.from_json`, which also
  reads the records of older stores (no ``calls``, ``round``, ``shared`` or ``request_keys``). A
  replayed comparison keeps its judgments file's ``judge`` text (or nothing) as ``raw``.
* One :class:`~typing.TypedDict` per event kind (:data:`EVENT_DETAILS`): the store refuses a
  detail with a field its kind does not declare (:func:`event_detail`), so a new field is
  declared here before it is written. Events of kinds not listed (a plug-in's) are stored as
  given.

Configurations are validated by :mod:`llmpo.config` and results built by
:class:`~llmpo.experiment.Result`; the store keeps those as they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from llmpo.errors import StoreError


@dataclass(frozen=True)
class LiveRaw:
    """The ``raw`` record of a comparison judged live.

    Attributes
    ----------
    judge : Any
        The judge's verdict as it recorded it (replies, order, scores; a person's name).
    number : int or None
        The comparison's number in its run (asked order; resumes never reuse one).
    replicates : tuple of int or None
        Which sample of each policy's answer to the task it compared (A's, B's).
    cached : tuple of bool
        Per side, whether this comparison did not pay for that answer (read from the cache, or
        paid by an earlier comparison of its round).
    request_keys : tuple
        Per side, where the answer is in the answer cache (None: stored before it was kept).
    calls : int or None
        Calls this comparison paid, generations and judge calls together (None: stored before
        calls were recorded).
    round : int or None
        The number of the round (its first comparison) whose answers it used.
    shared : tuple of bool
        Per side, whether that answer also served another comparison of its round.
    """

    judge: Any = None
    number: int | None = None
    replicates: tuple[int, int] | None = None
    cached: tuple[bool, ...] = (False, False)
    request_keys: tuple[str | None, ...] = (None, None)
    calls: int | None = None
    round: int | None = None
    shared: tuple[bool, ...] = (False, False)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "judge": self.judge,
            "number": self.number,
            "replicates": None if self.replicates is None else list(self.replicates),
            "cached": list(self.cached),
            "request_keys": list(self.request_keys),
            "calls": self.calls,
            "round": self.number if self.round is None else self.round,
            "shared": list(self.shared),
        }

    @classmethod
    def from_json(cls, raw: Any) -> LiveRaw | None:
        """The record of a live comparison, or None for a raw record of another kind (a
        replayed judgment's text, nothing, a record of an older store without ``cached``)."""
        if not isinstance(raw, dict) or "cached" not in raw:
            return None
        replicates = raw.get("replicates")
        number = raw.get("number")
        calls = raw.get("calls")
        return cls(
            judge=raw.get("judge"),
            number=number if isinstance(number, int) else None,
            replicates=(
                (int(replicates[0]), int(replicates[1]))
                if isinstance(replicates, list) and len(replicates) == 2
                else None
            ),
            cached=tuple(bool(x) for x in raw.get("cached") or ()),
            request_keys=tuple(raw.get("request_keys") or (None,) * len(raw["cached"] or ())),
            calls=calls if isinstance(calls, int) else None,
            round=raw.get("round"),
            shared=tuple(bool(x) for x in raw.get("shared") or ()),
        )

    @property
    def generation_calls(self) -> int:
        """Answers this comparison paid for (its sides not ``cached``)."""
        return len(self.cached) - sum(self.cached)

    @property
    def judge_calls(self) -> int:
        """Judge calls this comparison paid: the rest of ``calls``; for a store written before
        calls were recorded, one per judge reply recorded."""
        if self.calls is not None:
            return self.calls - self.generation_calls
        if not isinstance(self.judge, dict):
            return 0
        return sum(
            len(self.judge[key])
            for key in ("replies", "ab", "ba")
            if isinstance(self.judge.get(key), list)
        )


def replicates_of(raw: Any) -> tuple[int, int] | None:
    """The (A, B) replicates a stored comparison used, from any raw record that names them
    (a live record, or the ``{"replicates": […]}`` of a comparison asked but not answered)."""
    replicates = raw.get("replicates") if isinstance(raw, dict) else None
    if isinstance(replicates, list) and len(replicates) == 2:
        return int(replicates[0]), int(replicates[1])
    return None


def number_of(raw: Any) -> int | None:
    """The number of a live comparison from its raw record (None: not recorded)."""
    number = raw.get("number") if isinstance(raw, dict) else None
    return number if isinstance(number, int) else None


# ---- event details -------------------------------------------------------------------------------
class SessionCalls(TypedDict):
    """Calls counted by one session of a live run (written by sessions before the store recorded
    payments, schema v6; read for those stores' totals)."""

    generation: int
    judge: int


class Created(TypedDict, total=False):
    policies: int
    holdout_tasks: int


class Started(TypedDict, total=False):
    """``started`` and ``resumed``: how many comparisons were replayed from the store."""

    stored_comparisons: int
    concurrency: int


class SessionEnd(TypedDict, total=False):
    """``finished``, ``interrupted``, ``backend_failed``, ``failed``: what a session did."""

    comparisons: int
    seconds: float
    by: str
    forced: bool
    error: str
    calls: dict[str, Any]
    session_calls: SessionCalls
    invalid_verdicts: int
    backend_calls: int
    retries: int
    cost_usd: float | None


BudgetExtended = TypedDict(
    "BudgetExtended",
    {"from": dict[str, Any], "to": dict[str, Any], "comparisons": int, "status": str},
    total=False,
)


class EvaluationEvent(TypedDict, total=False):
    """``evaluation_created`` and ``evaluation_finished``."""

    evaluation: int
    comparisons: int


class DenseSubset(TypedDict):
    dropped: list[str]


class Asked(TypedDict):
    """Comparisons asked and not yet answered: rows (number, a, b, task, replicate A,
    replicate B, round)."""

    comparisons: list[list[Any]]


class EvaluationAsked(Asked):
    """``evaluation_asked``: comparisons an evaluation asked (rows as in :class:`Asked`)."""

    evaluation: int


class _BatchSubmitted(TypedDict):
    provider: str
    batch_id: str
    requests: list[list[str]]


class BatchSubmitted(_BatchSubmitted, total=False):
    """``batch_submitted``: a batch job recorded before it is polled (:mod:`llmpo.llm.batch`):
    its provider, id and (custom_id, fingerprint) requests; ``evaluation`` when a held-out
    evaluation submitted it."""

    evaluation: int


class _BatchCollected(TypedDict):
    batch_id: str
    custom_ids: list[str]


class BatchCollected(_BatchCollected, total=False):
    """``batch_collected``: the requests of a job whose results were handed out; ``evaluation``
    as in :class:`BatchSubmitted`."""

    evaluation: int


class InvalidVerdict(TypedDict, total=False):
    """``invalid_verdict`` and ``evaluation_invalid_verdict``: a :class:`LiveRaw` record and
    where it came from (paid for, never told)."""

    judge: Any
    number: int | None
    replicates: list[int] | None
    cached: list[bool]
    request_keys: list[str | None]
    calls: int | None
    round: int | None
    shared: list[bool]
    a: int
    b: int
    task_id: str | None
    order: str | None
    cost_usd: float | None
    evaluation: int


#: The declared detail of each event kind.
EVENT_DETAILS: dict[str, type] = {
    "created": Created,
    "started": Started,
    "resumed": Started,
    "finished": SessionEnd,
    "interrupted": SessionEnd,
    "failed": SessionEnd,
    "backend_failed": SessionEnd,
    "budget_extended": BudgetExtended,
    "evaluation_created": EvaluationEvent,
    "evaluation_finished": EvaluationEvent,
    "dense_subset": DenseSubset,
    "asked": Asked,
    "evaluation_asked": EvaluationAsked,
    "batch_submitted": BatchSubmitted,
    "batch_collected": BatchCollected,
    "invalid_verdict": InvalidVerdict,
    "evaluation_invalid_verdict": InvalidVerdict,
}


def event_detail(kind: str, detail: dict[str, Any] | None) -> dict[str, Any] | None:
    """``detail`` checked against its kind's declaration, ready to store.

    Raises
    ------
    ValueError
        For a field the kind does not declare, or a required one missing (a programming error:
        declare the field in :mod:`llmpo.store.payloads` first).
    """
    declared = EVENT_DETAILS.get(kind)
    if detail is None or declared is None:
        return detail
    fields = set(declared.__annotations__)
    unknown = sorted(set(detail) - fields)
    missing = sorted(set(declared.__required_keys__) - set(detail))  # type: ignore[attr-defined]
    if unknown or missing:
        raise StoreError(
            f"event {kind!r}: detail fields {unknown or missing} are "
            f"{'not declared' if unknown else 'missing'}; its fields are {sorted(fields)} "
            f"({declared.__name__} in llmpo.store.payloads)"
        )
    return detail
