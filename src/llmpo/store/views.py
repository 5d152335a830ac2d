"""The read-only queries of ``llmpo view`` (and its live tracker) over a store's tables.

Stores are opened with SQLite's ``mode=ro`` URI (:class:`~llmpo.store.Store` with
``readonly=True``, which also sets ``PRAGMA query_only``), so the viewer can run beside
``llmpo run``: it never writes, takes no lock, and never waits for the writer (WAL readers see
the last commit).

Comparisons are paged in SQL by keyset on their sequence number (``seq > after`` or ``seq <
before``, ``LIMIT`` one more than a page), so a page costs the same on the first, middle or last
page of a store of 10⁶ comparisons; totals are tallied incrementally (only the rows appended
since the last tally are read).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpo.store import Store
from llmpo.store.records import COMPARISON_COLUMNS

#: Rows per page of comparisons.
PAGE_SIZE = 50
#: Comparisons added to a tally per request (about 0.1–0.3 s of reading).
TALLY_CHUNK = 15_000
#: Outcome filters, from the first policy's side (``a``, or policy_a without a policy filter).
OUTCOMES = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class Source:
    """A table of comparisons and the column naming its owner (an experiment or evaluation)."""

    table: str
    key: str


RUNS = Source("comparisons", "experiment_id")
EVALUATIONS = Source("evaluation_comparisons", "evaluation_id")


def open_readonly(path: str | Path) -> Store:
    """Open a store for reading only; any write through its connection fails.

    Raises
    ------
    StoreError
        For a missing, corrupt, foreign or newer store (unchanged).
    """
    return Store(path, readonly=True)


def last_seq(connection: sqlite3.Connection, source: Source, owner_id: int) -> int:
    """The number of the owner's last stored comparison (0: none)."""
    return int(
        connection.execute(
            f"SELECT coalesce(max(seq), 0) FROM {source.table} WHERE {source.key} = ?",
            (owner_id,),
        ).fetchone()[0]
    )


def outcomes_after(
    connection: sqlite3.Connection, source: Source, owner_id: int, after: int, limit: int
) -> list[tuple[int, int, int, float]]:
    """Up to ``limit`` of the owner's comparisons numbered after ``after``, in order, as
    (seq, policy_a, policy_b, outcome)."""
    return connection.execute(
        f"SELECT seq, policy_a, policy_b, outcome FROM {source.table} "
        f"WHERE {source.key} = ? AND seq > ? ORDER BY seq LIMIT ?",
        (owner_id, after, limit),
    ).fetchall()


@dataclass
class Tally:
    """Totals of one experiment's (or evaluation's) comparisons, brought up to date by
    :meth:`update` from the rows appended since the last call, at most ``chunk`` rows a call
    (a first look at a huge store fills them in over a few requests, each one quick)."""

    #: Comparisons stored (the largest sequence number: they are numbered 1, 2, … without gaps).
    total: int = 0
    #: Comparisons tallied so far (``seq`` ≤ this).
    last_seq: int = 0
    a_wins: int = 0
    ties: int = 0
    generation_calls: int = 0
    judge_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: int = 0
    first_started: float | None = None
    last_finished: float | None = None
    #: The calls the owner paid, from the store's payments (schema v6), added up from the rows
    #: after ``last_payment``: [generations, judge calls, input tokens, output tokens, dollars,
    #: priced calls]. While there are none (a store or an experiment from before payments were
    #: recorded), the figures are those charged to the comparisons above.
    paid: list[float] = field(default_factory=lambda: [0, 0, 0, 0, 0.0, 0])
    last_payment: int = 0

    def update(
        self,
        connection: sqlite3.Connection,
        source: Source,
        owner_id: int,
        chunk: int = TALLY_CHUNK,
    ) -> Tally:
        """Add the rows with ``seq`` in (:attr:`last_seq`, :attr:`last_seq` + ``chunk``]."""
        self.total = last_seq(connection, source, owner_id)
        self._update_paid(connection, source, owner_id)
        if self.last_seq >= self.total:
            return self
        # Calls paid: answers not taken from the cache, and one per recorded judge reply.
        row = connection.execute(
            "SELECT count(*), coalesce(max(seq), 0), coalesce(sum(outcome = 1.0), 0), "
            "coalesce(sum(outcome = 0.5), 0), "
            "coalesce(sum(coalesce(json_extract(raw, '$.cached[0]') = 0, 0) "
            "+ coalesce(json_extract(raw, '$.cached[1]') = 0, 0)), 0), "
            "coalesce(sum(coalesce(json_array_length(raw, '$.judge.replies'), 0) "
            "+ coalesce(json_array_length(raw, '$.judge.ab'), 0) "
            "+ coalesce(json_array_length(raw, '$.judge.ba'), 0)), 0), "
            "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cost_usd), 0.0), count(cost_usd), min(started_at), max(finished_at) "
            f"FROM {source.table} WHERE {source.key} = ? AND seq > ? AND seq <= ?",
            (owner_id, self.last_seq, self.last_seq + chunk),
        ).fetchone()
        if row[0] == 0:
            return self
        self.last_seq = row[1]
        self.a_wins += row[2]
        self.ties += row[3]
        self.generation_calls += row[4]
        self.judge_calls += row[5]
        self.input_tokens += row[6]
        self.output_tokens += row[7]
        self.cost_usd += row[8]
        self.priced += row[9]
        if row[10] is not None:
            self.first_started = (
                row[10] if self.first_started is None else min(self.first_started, row[10])
            )
        if row[11] is not None:
            self.last_finished = max(self.last_finished or row[11], row[11])
        return self

    def _update_paid(self, connection: sqlite3.Connection, source: Source, owner_id: int) -> None:
        if not connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payments'"
        ).fetchone():
            return  # a store of schema v5, read as it is
        owner = (
            "experiment_id = ? AND evaluation_id IS NULL"
            if source is RUNS
            else "evaluation_id = ?"
        )
        row = connection.execute(
            "SELECT coalesce(max(id), 0), coalesce(sum(kind = 'generation'), 0), "
            "coalesce(sum(kind = 'judge'), 0), coalesce(sum(input_tokens), 0), "
            "coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0.0), count(cost_usd) "
            f"FROM payments WHERE {owner} AND id > ?",
            (owner_id, self.last_payment),
        ).fetchone()
        if row[0]:
            self.last_payment = row[0]
            self.paid = [total + added for total, added in zip(self.paid, row[1:], strict=True)]

    @property
    def generations(self) -> int:
        """Answers paid: recorded payments, else those charged to the comparisons."""
        return int(self.paid[0]) if self.last_payment else self.generation_calls

    @property
    def judgements(self) -> int:
        """Judge calls paid: recorded payments, else those charged to the comparisons."""
        return int(self.paid[1]) if self.last_payment else self.judge_calls

    @property
    def complete(self) -> bool:
        """Whether every stored comparison is counted in the totals."""
        return self.last_seq >= self.total

    @property
    def calls(self) -> int:
        """LLM calls paid: generations plus judge calls."""
        return self.generations + self.judgements

    @property
    def tokens(self) -> int:
        if self.last_payment:
            return int(self.paid[2] + self.paid[3])
        return self.input_tokens + self.output_tokens

    @property
    def cost(self) -> float | None:
        """Dollars, or None when no call (no comparison, without payments) carries a price."""
        if self.last_payment:
            return float(self.paid[4]) if self.paid[5] else None
        return self.cost_usd if self.priced else None

    @property
    def wall_seconds(self) -> float | None:
        """From the first comparison's start to the last one's end (pauses included)."""
        if self.first_started is None or self.last_finished is None:
            return None
        return max(self.last_finished - self.first_started, 0.0)


@dataclass(frozen=True)
class Filters:
    """What the comparisons page is restricted to; every field optional.

    ``a`` and ``b`` are policy indices: with ``a`` alone, the comparisons involving ``a``; with
    both, those of the pair in either presentation. ``outcome`` (``win``/``tie``/``loss``) is
    ``a``'s result when ``a`` is set, else policy A's. ``q`` searches the answers' text
    (case-insensitive for ASCII).
    """

    a: int | None = None
    b: int | None = None
    outcome: str | None = None
    task: str | None = None
    q: str | None = None

    def where(self, names: list[str]) -> tuple[str, list[Any]]:
        """The SQL conditions (joined with AND, on alias ``c``) and their parameters."""
        clauses: list[str] = []
        parameters: list[Any] = []
        value = OUTCOMES.get(self.outcome or "")
        if self.a is not None:
            sides = []
            for mine, theirs, flip in (
                ("policy_a", "policy_b", False),
                ("policy_b", "policy_a", True),
            ):
                side = f"c.{mine} = ?"
                parameters.append(self.a)
                if self.b is not None:
                    side += f" AND c.{theirs} = ?"
                    parameters.append(self.b)
                if value is not None:
                    side += " AND c.outcome = ?"
                    parameters.append(1.0 - value if flip else value)
                sides.append(f"({side})")
            clauses.append(f"({' OR '.join(sides)})")
        elif value is not None:
            clauses.append("c.outcome = ?")
            parameters.append(value)
        if self.task:
            clauses.append("c.task_id = ?")
            parameters.append(self.task)
        if self.q:
            # An answer matches by (policy name, task, replicate); policy indices are named
            # through the experiment's policy list passed as JSON.
            pattern = self.like()
            # The set of tasks with a matching answer is computed once and rules out most rows
            # before the per-row check of the comparison's own two answers.
            clauses.append(
                "c.task_id IN (SELECT task_id FROM generations WHERE text LIKE ? ESCAPE '\\') "
                "AND EXISTS (SELECT 1 FROM generations g WHERE g.task_id = c.task_id "
                "AND g.text LIKE ? ESCAPE '\\' AND ("
                "(g.policy = json_extract(?, '$[' || c.policy_a || ']') "
                "AND g.replicate = json_extract(c.raw, '$.replicates[0]')) OR "
                "(g.policy = json_extract(?, '$[' || c.policy_b || ']') "
                "AND g.replicate = json_extract(c.raw, '$.replicates[1]'))))"
            )
            names_json = json.dumps(names)
            parameters += [pattern, pattern, names_json, names_json]
        return " AND ".join(clauses) or "1", parameters

    def like(self) -> str:
        """The LIKE pattern (escape ``\\``) of the searched words, matched anywhere."""
        text = (self.q or "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"%{text}%"

    def query(self) -> dict[str, str]:
        """The filters as URL query parameters (empty ones left out)."""
        pairs = {"a": self.a, "b": self.b, "outcome": self.outcome, "task": self.task, "q": self.q}
        return {k: str(v) for k, v in pairs.items() if v is not None and v != ""}


@dataclass(frozen=True)
class Row:
    """One comparison as the list shows it."""

    seq: int
    policy_a: int
    policy_b: int
    outcome: float
    task_id: str | None
    order: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    seconds: float | None


@dataclass
class Page:
    """One page of comparisons and the keys of its neighbours (None: no such page)."""

    rows: list[Row] = field(default_factory=list)
    previous_before: int | None = None
    next_after: int | None = None


_ROW_COLUMNS = (
    "c.seq, c.policy_a, c.policy_b, c.outcome, c.task_id, c.presentation_order, "
    "c.input_tokens, c.output_tokens, c.cost_usd, c.finished_at - c.started_at"
)


def page(
    connection: sqlite3.Connection,
    source: Source,
    owner_id: int,
    names: list[str],
    filters: Filters,
    after: int | None = None,
    before: int | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    """The comparisons after ``after`` (oldest first), or the page ending before ``before``
    (the last page when both are None), in sequence order."""
    if (
        filters.q
        and not connection.execute(
            "SELECT 1 FROM generations WHERE text LIKE ? ESCAPE '\\' LIMIT 1", (filters.like(),)
        ).fetchone()
    ):
        return Page()  # no answer has the words: no need to look at the comparisons
    where, parameters = filters.where(names)
    # The matching sequence numbers first, selecting no other column, so that a task filter
    # is answered from the task index alone; then their rows by primary key.
    matching = f"SELECT c.seq FROM {source.table} c WHERE c.{source.key} = ? AND {where}"

    def rows_of(condition: str, key: int, order: str) -> list[Row]:
        found = connection.execute(
            f"SELECT {_ROW_COLUMNS} FROM {source.table} c WHERE c.{source.key} = ? AND c.seq IN "
            f"({matching} AND c.seq {condition} ? ORDER BY c.seq {order} LIMIT ?) "
            f"ORDER BY c.seq {order}",
            (owner_id, owner_id, *parameters, key, size + 1),
        ).fetchall()
        return [Row(*r) for r in found]

    def exists(condition: str, key: int, order: str) -> bool:
        return (
            connection.execute(
                f"{matching} AND c.seq {condition} ? ORDER BY c.seq {order} LIMIT 1",
                (owner_id, *parameters, key),
            ).fetchone()
            is not None
        )

    if after is not None:
        found = rows_of(">", after, "")
        rows = found[:size]
        more_after = len(found) > size
        more_before = after > 0 and exists("<=", after, "DESC")
    else:
        found = rows_of("<", before if before is not None else 2**62, "DESC")
        rows = found[:size][::-1]
        more_before = len(found) > size
        more_after = before is not None and exists(">=", before, "")
    return Page(
        rows,
        rows[0].seq if rows and more_before else None,
        rows[-1].seq if rows and more_after else None,
    )


@dataclass(frozen=True)
class Answer:
    """A policy's answer to a comparison's task, from the store's cache of generations."""

    text: str
    model: str
    input_tokens: int | None
    output_tokens: int | None
    seconds: float | None


def comparison(
    connection: sqlite3.Connection, source: Source, owner_id: int, seq: int
) -> dict[str, Any] | None:
    """Every stored field of one comparison (``raw`` decoded), or None."""
    row = connection.execute(
        f"SELECT {', '.join(COMPARISON_COLUMNS)} "
        f"FROM {source.table} WHERE {source.key} = ? AND seq = ?",
        (owner_id, seq),
    ).fetchone()
    if row is None:
        return None
    found = dict(zip(COMPARISON_COLUMNS, row, strict=True))
    found["order"] = found.pop("presentation_order")
    found["raw"] = json.loads(found["raw"]) if found["raw"] is not None else None
    return found


def answer(
    connection: sqlite3.Connection,
    policy: str,
    task_id: str | None,
    replicate: Any,
    model: str | None,
) -> Answer | None:
    """The cached answer of ``policy`` to a task for one replicate (the policy's configured
    model first, should the cache hold answers of several configurations)."""
    if task_id is None or not isinstance(replicate, int):
        return None
    row = connection.execute(
        "SELECT text, model, input_tokens, output_tokens, seconds FROM generations "
        "WHERE policy = ? AND task_id = ? AND replicate = ? "
        "ORDER BY model = ? DESC, created_at LIMIT 1",
        (policy, task_id, replicate, model or ""),
    ).fetchone()
    return Answer(*row) if row else None
