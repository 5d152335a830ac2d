"""The records a store reads and writes: experiments, comparisons, evaluations, cached answers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmpo.environments.base import Comparison

#: An experiment's status: unfinished (``running``; ``interrupted`` by the user; ``failed``: a
#: backend or judge failed for good — all three can be resumed) or why it stopped.
UNFINISHED_STATUSES = ("running", "interrupted", "failed")
FINISHED_STATUSES = ("certified", "max_comparisons", "max_cost")
STATUSES = UNFINISHED_STATUSES + FINISHED_STATUSES
#: What each status means, in words (reports and listings).
STATUS_TEXT = {
    "running": "it is still running",
    "interrupted": "it was interrupted",
    "failed": "a failure stopped it (see its events)",
    "certified": "certified",
    "max_comparisons": "the comparison budget (max_comparisons) ran out",
    "max_cost": "the cost budget (max_cost) ran out",
}
EVALUATION_STATUSES = ("running", "interrupted", "done")


@dataclass(frozen=True)
class CachedGeneration:
    """One cached LLM answer."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    seconds: float | None


@dataclass(frozen=True)
class Payment:
    """One LLM call paid: by which experiment (and held-out evaluation), what it was, what it cost.

    ``kind`` is ``"generation"`` (a policy's answer) or ``"judge"`` (a reply of an LLM judge);
    ``policy``, ``task_id``, ``replicate`` and ``request_key`` say where the reply is in the answer
    cache (None: a judge reply that is not cached). ``paid_at`` is when it arrived (Unix time).
    """

    experiment_id: int
    evaluation_id: int | None
    kind: str
    policy: str | None
    task_id: str | None
    replicate: int | None
    request_key: str | None
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    paid_at: float


@dataclass(frozen=True)
class EvaluationRecord:
    """One stored held-out evaluation of an experiment's winner against its baseline."""

    id: int
    experiment_id: int
    created_at: str
    updated_at: str
    status: str
    winner: str
    baseline: str
    settings: dict[str, Any]
    result: dict[str, Any] | None


@dataclass(frozen=True)
class ExperimentRecord:
    """One stored experiment."""

    id: int
    name: str | None
    created_at: str
    updated_at: str
    status: str
    code_version: str
    config: dict[str, Any]
    policies: list[str]
    result: dict[str, Any] | None


@dataclass(frozen=True)
class ComparisonRecord:
    """One stored comparison; ``outcome`` is for ``policy_a``: 1 win, ½ tie, 0 loss, or a
    preference probability in [0, 1] (a fractional outcome)."""

    seq: int
    policy_a: int
    policy_b: int
    outcome: float
    task_id: str | None = None
    order: str | None = None
    raw: Any = None
    started_at: float | None = None
    finished_at: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    @classmethod
    def of(
        cls,
        seq: int,
        policy_a: int,
        policy_b: int,
        comparison: Comparison,
        started_at: float,
        finished_at: float,
    ) -> ComparisonRecord:
        """The stored form of an environment's comparison of ``policy_a`` with ``policy_b``."""
        return cls(
            seq=seq,
            policy_a=policy_a,
            policy_b=policy_b,
            outcome=comparison.outcome,
            task_id=comparison.task_id,
            order=comparison.order,
            raw=comparison.raw,
            started_at=started_at,
            finished_at=finished_at,
            cost_usd=comparison.cost_usd,
            input_tokens=comparison.input_tokens,
            output_tokens=comparison.output_tokens,
        )

    def outcome_problem(self) -> str | None:
        """Why this comparison's outcome cannot be stored, or None when it can.

        An outcome is a number in [0, 1]: 1, ½ or 0 for a verdict, anything between for a
        preference probability. NaN, a value outside [0, 1], and a raw verdict flagged as a tie
        (``"tie": true``) whose outcome is not ½ are refused.
        """
        outcome = self.outcome
        if isinstance(outcome, bool) or not isinstance(outcome, numbers.Real):
            return f"outcome {outcome!r} is not a number"
        if math.isnan(float(outcome)) or not 0.0 <= outcome <= 1.0:
            return f"outcome {outcome!r} is not a number in [0, 1]"
        if isinstance(self.raw, dict) and self.raw.get("tie") is True and outcome != 0.5:
            return f"outcome {outcome:g} is flagged as a tie but is not 0.5"
        return None


def outcome_shares(outcome: float) -> tuple[float, float, float]:
    """An outcome of policy A as (win, tie, loss) shares for tallies: a verdict is one whole
    win, tie or loss; a preference probability y counts (2y − 1)⁺ as a win, (1 − 2y)⁺ as a loss
    and the rest as a tie, the rule of the statistics (docs/ties.md)."""
    win, loss = max(2.0 * outcome - 1.0, 0.0), max(1.0 - 2.0 * outcome, 0.0)
    return win, 1.0 - win - loss, loss


def tally(outcomes: Iterable[float]) -> tuple[float, float, float]:
    """Wins, ties and losses of policy A over ``outcomes`` by :func:`outcome_shares`: whole
    counts (ints) when every outcome is a verdict, else sums rounded to 1e-9."""
    totals = [0.0, 0.0, 0.0]
    whole = True
    for outcome in outcomes:
        whole = whole and outcome in (0.0, 0.5, 1.0)
        for side, share in enumerate(outcome_shares(outcome)):
            totals[side] += share
    if whole:
        return int(totals[0]), int(totals[1]), int(totals[2])
    return round(totals[0], 9), round(totals[1], 9), round(totals[2], 9)


COMPARISON_COLUMNS = (
    "seq",
    "policy_a",
    "policy_b",
    "outcome",
    "task_id",
    "presentation_order",
    "raw",
    "started_at",
    "finished_at",
    "cost_usd",
    "input_tokens",
    "output_tokens",
)
