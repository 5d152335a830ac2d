"""The cache of live LLM answers, in SQLite.

An answer is keyed by (policy, task, replicate index, request key — a hash of the model, endpoint,
messages and decoding parameters), so re-runs and resumed runs never pay twice for the same
sample. Cached answers are not committed on their own: they join the store's next transaction (the
comparison that used them, an event, a status), or are committed at :meth:`Answers.close`, by
:meth:`Answers.flush`, or once the oldest has waited :data:`CACHE_FLUSH_SECONDS` — so a comparison
and its answers are committed together, and a process killed outright loses at most the last
second's answers (paid again, never reused wrongly).

Every call paid is recorded too (:meth:`Answers.record_payment`, the ``payments`` table): which
experiment or evaluation paid it, with its tokens and cost, in the transaction that commits its
reply. Totals of what a run paid count these records (:mod:`llmpo.llm.paid`), so a session
killed outright loses from them nothing whose reply was stored.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import astuple
from pathlib import Path
from typing import Any

from llmpo.store.records import CachedGeneration, Payment
from llmpo.store.sqlite import Database, now

#: Cached answers wait at most this long (seconds) for the next write of the store to commit them.
CACHE_FLUSH_SECONDS = 1.0

_Key = tuple[str, str, int, str]


class Answers(Database):
    """The answer cache of a store."""

    def __init__(
        self, path: str | Path, *, readonly: bool = False, writer: bool = False, check: bool = True
    ) -> None:
        #: Answers waiting for the next transaction: key → row, and when the first one arrived.
        self._pending_generations: dict[_Key, tuple[Any, ...]] = {}
        self._pending_since = 0.0
        #: Calls paid waiting for the next transaction (with their replies).
        self._pending_payments: list[Payment] = []
        super().__init__(path, readonly=readonly, writer=writer, check=check)

    def _before_commit(self, connection: sqlite3.Connection) -> None:
        super()._before_commit(connection)
        if self._pending_generations:
            connection.executemany(
                "INSERT OR IGNORE INTO generations (policy, task_id, replicate, request_key, "
                "model, text, input_tokens, output_tokens, seconds, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._pending_generations.values(),
            )
        if self._pending_payments:
            connection.executemany(
                "INSERT INTO payments (experiment_id, evaluation_id, kind, policy, task_id, "
                "replicate, request_key, model, input_tokens, output_tokens, cost_usd, paid_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [astuple(payment) for payment in self._pending_payments],
            )

    def _after_commit(self) -> None:
        super()._after_commit()
        self._pending_generations.clear()
        self._pending_payments.clear()

    def cached_generation(
        self, policy: str, task_id: str, replicate: int, request_key: str
    ) -> CachedGeneration | None:
        """The cached answer of a policy to a task for one replicate and request, if any."""
        pending = self._pending_generations.get((policy, task_id, replicate, request_key))
        if pending is not None:
            return CachedGeneration(*pending[5:9])
        rows = self.query(
            "SELECT text, input_tokens, output_tokens, seconds FROM generations WHERE policy = ? "
            "AND task_id = ? AND replicate = ? AND request_key = ?",
            (policy, task_id, replicate, request_key),
        )
        return CachedGeneration(*rows[0]) if rows else None

    def answer_text(
        self, policy: str, task_id: str, replicate: int, request_key: str | None = None
    ) -> str | None:
        """The cached answer text of one sample, for reports and exports.

        Without ``request_key`` (comparisons stored before it was recorded) the answer is found
        only when a single request of the policy answered that task and replicate; otherwise
        None, never a guess.
        """
        if request_key is not None:
            found = self.cached_generation(policy, task_id, replicate, request_key)
            return None if found is None else found.text
        rows = self.query(
            "SELECT text FROM generations WHERE policy = ? AND task_id = ? AND replicate = ? "
            "LIMIT 2",
            (policy, task_id, replicate),
        )
        return rows[0][0] if len(rows) == 1 else None

    def answers(self) -> list[tuple[str, str, int, str]]:
        """Every committed answer as (policy, task id, replicate, text), in key order."""
        rows = self.query(
            "SELECT policy, task_id, replicate, text FROM generations "
            "ORDER BY policy, task_id, replicate, request_key"
        )
        return [(str(p), str(t), int(r), str(x)) for p, t, r, x in rows]

    def cache_generation(
        self,
        policy: str,
        task_id: str,
        replicate: int,
        request_key: str,
        model: str,
        generation: CachedGeneration,
    ) -> None:
        """Add an answer to the cache (a repeated key keeps the first answer).

        It is committed with the store's next transaction, at the latest ``CACHE_FLUSH_SECONDS``
        after the oldest pending answer arrived (checked here and by :meth:`flush_stale`), or at
        :meth:`close`.
        """
        key = (policy, task_id, replicate, request_key)
        if not self._pending_generations and not self._pending_payments:
            self._pending_since = time.monotonic()
        self._pending_generations.setdefault(
            key,
            (
                *key,
                model,
                generation.text,
                generation.input_tokens,
                generation.output_tokens,
                generation.seconds,
                now(),
            ),
        )
        self.flush_stale()

    def record_payment(self, payment: Payment) -> None:
        """Record a call paid; it is committed with the store's next transaction (as a cached
        answer is: :meth:`flush` commits it with the reply it paid for)."""
        if not self._pending_generations and not self._pending_payments:
            self._pending_since = time.monotonic()
        self._pending_payments.append(payment)

    def payments(
        self, experiment_id: int, evaluation_id: int | None = None
    ) -> list[Payment] | None:
        """The calls an experiment's run (``evaluation_id`` None) or one of its evaluations paid,
        in the order they were paid; None for a store written before payments were recorded
        (schema v5, read as it is)."""
        if not self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payments'"):
            return None
        rows = self.query(
            "SELECT experiment_id, evaluation_id, kind, policy, task_id, replicate, request_key, "
            "model, input_tokens, output_tokens, cost_usd, paid_at FROM payments "
            "WHERE experiment_id = ? AND evaluation_id IS ? ORDER BY id",
            (experiment_id, evaluation_id),
        )
        pending = [
            p
            for p in self._pending_payments
            if p.experiment_id == experiment_id and p.evaluation_id == evaluation_id
        ]
        return [Payment(*row) for row in rows] + pending

    def flush(self) -> None:
        """Commit the cached answers and payments still pending (if any)."""
        if self._pending_generations or self._pending_payments:
            with self.transaction():
                pass

    def flush_stale(self) -> None:
        """Commit the pending cached answers once the oldest has waited ``CACHE_FLUSH_SECONDS``."""
        if (
            self._pending_generations or self._pending_payments
        ) and time.monotonic() - self._pending_since >= CACHE_FLUSH_SECONDS:
            self.flush()

    def generation_count(self) -> int:
        """How many answers the cache holds (pending ones are committed first)."""
        self.flush()
        return int(self.query("SELECT count(*) FROM generations")[0][0])
