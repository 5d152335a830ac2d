"""Replay of recorded judgments: answer a comparison by drawing a recorded one, with replacement.

Judgments file (JSONL, one JSON object per line; blank lines are allowed)::

    {"policy_a": "gpt-4o", "policy_b": "llama-3-70b", "task_id": "q17", "outcome": 1}
    {"policy_a": "llama-3-70b", "policy_b": "gpt-4o", "task_id": "q18", "outcome": 0.5,
     "judge": "gpt-4-turbo", "order": "ba"}

``outcome`` is 1 when ``policy_a`` won, 0.5 for a tie, 0 when ``policy_b`` won, or a preference
probability in [0, 1] that ``policy_a`` is better (a judge's weighted or token-probability
verdict; docs/ties.md); ``judge`` and ``order`` (``"ab"``: policy_a was shown first, ``"ba"``:
second) are optional. ``"tie": true`` marks a tie: ``outcome`` may then be omitted, and must be 0.5
if given.

Pair-counts file (JSONL, aggregated judgments)::

    {"policy_a": "gpt-4o", "policy_b": "llama-3-70b", "wins": 120, "losses": 80, "ties": 15}

``wins`` and ``losses`` are those of ``policy_a``; ``ties`` is optional (default 0).

A malformed line is an error naming the file and the line; nothing is skipped silently. A
comparison of (a, b) draws one record of the pair uniformly (a pair count of n draws a win, a loss
or a tie with probabilities proportional to the counts), so the replay's win probabilities are the
data's empirical ones. Every pair of the chosen policies must have records: the environment refuses
otherwise, or, with ``dense_subset=True``, keeps a subset of policies in which every pair has at
least ``min_pair_records`` records and reports the policies it dropped.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from llmpo.environments.base import Comparison, Environment
from llmpo.errors import DataError
from llmpo.jsonl import read_objects

ORDERS = ("ab", "ba")


#: One replayable record: policy A, policy B, outcome, weight, and (task id, judge, order) when
#: the record is one judgment (None for aggregated counts).
_Record = tuple[str, str, float, float, tuple[str | None, str | None, str | None] | None]


class ReplayError(DataError):
    """Replay data that cannot be used, with the file, line or pair and the fix."""


@dataclass(frozen=True)
class Judgment:
    """One recorded judgment of ``policy_a`` against ``policy_b`` (outcome for policy_a)."""

    policy_a: str
    policy_b: str
    outcome: float
    task_id: str | None = None
    judge: str | None = None
    order: str | None = None


@dataclass(frozen=True)
class PairCount:
    """Aggregated judgments of one pair: wins, losses and ties of ``policy_a``."""

    policy_a: str
    policy_b: str
    wins: int
    losses: int
    ties: int = 0


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        yield from read_objects(path, ReplayError)
    except OSError as error:
        raise ReplayError(f"{path}: cannot read ({error.strerror})") from None


def _policy(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise ReplayError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _optional_text(record: dict[str, Any], key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ReplayError(f"{where}: '{key}' must be a string, got {value!r}")
    return str(value)


def _policy_pair(record: dict[str, Any], where: str) -> tuple[str, str]:
    """The record's two distinct policy names."""
    policy_a, policy_b = _policy(record, "policy_a", where), _policy(record, "policy_b", where)
    if policy_a == policy_b:
        raise ReplayError(f"{where}: policy_a and policy_b are both {policy_a!r}")
    return policy_a, policy_b


def _judgment_outcome(record: dict[str, Any], where: str) -> float:
    """The outcome of one judgments record: a number in [0, 1], or ½ for ``"tie": true``."""
    tie = record.get("tie", False)
    if not isinstance(tie, bool):
        raise ReplayError(f"{where}: 'tie' must be true or false, got {tie!r}")
    outcome = record.get("outcome", 0.5 if tie else None)
    if (
        isinstance(outcome, bool)
        or not isinstance(outcome, int | float)
        or not 0.0 <= outcome <= 1.0  # False for NaN too
    ):
        raise ReplayError(
            f"{where}: 'outcome' must be a number in [0, 1]: 1 (policy_a won), 0.5 (tie), 0 "
            f"(policy_b won) or the probability that policy_a is better; got {outcome!r}"
        )
    if tie and outcome != 0.5:
        raise ReplayError(
            f"{where}: 'tie' is true but 'outcome' is {outcome!r}, not a tie. Fix: drop 'tie' "
            "for a win, loss or preference probability, or set 'outcome' to 0.5"
        )
    return float(outcome)


def judgments_from_scores(
    scores: Mapping[str, Mapping[str, Sequence[float]]], judge: str
) -> list[Judgment]:
    """Judgments from per-answer scores: on each task, every two policies' answers (the k-th
    score of one against the k-th of the other, e.g. per epoch) make one comparison, won by the
    higher score and tied on equal scores.

    Parameters
    ----------
    scores : mapping of task id → (policy → scores)
        What an evaluation tool recorded for each answer.
    judge : str
        The judge recorded with each judgment (e.g. ``"promptfoo-score"``).
    """
    judgments = []
    for task_id, by_policy in scores.items():
        for first, second in itertools.combinations(sorted(by_policy), 2):
            for a, b in zip(by_policy[first], by_policy[second], strict=False):
                outcome = 1.0 if a > b else 0.0 if a < b else 0.5
                judgments.append(Judgment(first, second, outcome, task_id, judge))
    return judgments


def read_judgments(path: str | Path) -> list[Judgment]:
    """Read a JSONL judgments file (format in the module docstring).

    Raises
    ------
    ReplayError
        At the first malformed line, naming the file and the line number.
    """
    path = Path(path)
    judgments = []
    for line_number, record in _read_jsonl(path):
        where = f"{path}, line {line_number}"
        policy_a, policy_b = _policy_pair(record, where)
        outcome = _judgment_outcome(record, where)
        order = _optional_text(record, "order", where)
        if order is not None and order not in ORDERS:
            raise ReplayError(f"{where}: 'order' must be 'ab' or 'ba', got {order!r}")
        judgments.append(
            Judgment(
                policy_a,
                policy_b,
                float(outcome),
                _optional_text(record, "task_id", where),
                _optional_text(record, "judge", where),
                order,
            )
        )
    if not judgments:
        raise ReplayError(f"{path}: contains no judgments")
    return judgments


def read_pair_counts(path: str | Path) -> list[PairCount]:
    """Read a JSONL pair-counts file (format in the module docstring).

    Raises
    ------
    ReplayError
        At the first malformed line, naming the file and the line number.
    """
    path = Path(path)
    counts = []
    for line_number, record in _read_jsonl(path):
        where = f"{path}, line {line_number}"
        policy_a, policy_b = _policy_pair(record, where)
        values = []
        for key in ("wins", "losses", "ties"):
            value = record.get(key, 0 if key == "ties" else None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReplayError(f"{where}: '{key}' must be a count (integer ≥ 0), got {value!r}")
            values.append(value)
        counts.append(PairCount(policy_a, policy_b, *values))
    if not counts:
        raise ReplayError(f"{path}: contains no pair counts")
    return counts


def detect_format(path: str | Path) -> str:
    """Tell the format of a replay file.

    ``"judgments"`` or ``"counts"`` when the first line is a JSON object with ``outcome`` or
    ``wins``/``losses``; ``"arena"`` for a JSON object with ``models``, ``X`` and ``Y``;
    ``"pandalm"`` for a JSON list of items with ``cmp_key``; ``"inspect"`` for an Inspect
    ``.eval`` log or a directory (of Inspect logs).

    Raises
    ------
    ReplayError
        When the format cannot be told; the message says how to name it.
    """
    path = Path(path)
    if path.is_dir() or path.suffix == ".eval":
        return "inspect"
    hint = "set environment.format to judgments, counts, arena, pandalm, promptfoo or inspect"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ReplayError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: not a text file") from None
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    try:
        record = json.loads(first_line)
    except json.JSONDecodeError:
        record = None
    if isinstance(record, dict) and "outcome" in record:
        return "judgments"
    if isinstance(record, dict) and ("wins" in record or "losses" in record):
        return "counts"
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict) and {"models", "X", "Y"} <= document.keys():
        return "arena"
    first = document[0] if isinstance(document, list) and document else None
    if isinstance(first, dict) and "cmp_key" in first:
        return "pandalm"
    raise ReplayError(f"{path}: cannot tell the replay format from its content; {hint}")


class ReplayEnvironment(Environment):
    """Answers comparisons by drawing recorded judgments of the pair with replacement.

    Build it with :meth:`from_judgments` or :meth:`from_counts`.

    Parameters
    ----------
    policies : sequence of str
        The policies compared, indexed as in the experiment.
    outcomes, weights : dict
        Per unordered pair (lo, hi) of indices: the recorded outcomes for ``lo`` and their weights
        (1 per judgment, or the count of each outcome).
    metadata : dict
        Per pair, per record: (task id, judge, order as seen from ``lo``), or None for counts.
    dropped : tuple of str
        Policies of the data left out by the dense-subset restriction.
    seed : int or numpy Generator, optional
        Source of randomness.
    """

    def __init__(
        self,
        policies: Sequence[str],
        outcomes: dict[tuple[int, int], NDArray[np.float64]],
        weights: dict[tuple[int, int], NDArray[np.float64]],
        metadata: dict[tuple[int, int], list[tuple[str | None, str | None, str | None]] | None],
        dropped: tuple[str, ...] = (),
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.policies = tuple(policies)
        self.dropped = dropped
        self.rng = np.random.default_rng(seed)
        self._outcomes = outcomes
        self._cumulative = {pair: np.cumsum(w) for pair, w in weights.items()}
        self._metadata = metadata

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_judgments(
        cls,
        judgments: Sequence[Judgment],
        policies: Sequence[str] | None = None,
        *,
        dense_subset: bool = False,
        min_pair_records: int = 1,
        seed: int | np.random.Generator | None = None,
    ) -> ReplayEnvironment:
        """Replay individual judgments.

        Parameters
        ----------
        judgments : sequence of Judgment
            The records.
        policies : sequence of str, optional
            Policies to compare (default: every policy in the records, in order of appearance).
        dense_subset : bool
            Drop policies until every pair has ``min_pair_records`` records, instead of refusing.
        min_pair_records : int
            Records a pair needs.
        seed : int or numpy Generator, optional
            Source of randomness.

        Raises
        ------
        ReplayError
            For unknown policy names, or a pair without enough records (unless ``dense_subset``).
        """
        present = list(dict.fromkeys(n for j in judgments for n in (j.policy_a, j.policy_b)))
        records: list[_Record] = [
            (j.policy_a, j.policy_b, j.outcome, 1.0, (j.task_id, j.judge, j.order))
            for j in judgments
        ]
        return cls._build(present, records, policies, dense_subset, min_pair_records, seed, True)

    @classmethod
    def from_counts(
        cls,
        counts: Sequence[PairCount],
        policies: Sequence[str] | None = None,
        *,
        dense_subset: bool = False,
        min_pair_records: int = 1,
        seed: int | np.random.Generator | None = None,
    ) -> ReplayEnvironment:
        """Replay aggregated pair counts (parameters as :meth:`from_judgments`)."""
        present = list(dict.fromkeys(n for c in counts for n in (c.policy_a, c.policy_b)))
        records: list[_Record] = [
            (c.policy_a, c.policy_b, outcome, float(weight), None)
            for c in counts
            for outcome, weight in ((1.0, c.wins), (0.0, c.losses), (0.5, c.ties))
            if weight > 0
        ]
        return cls._build(present, records, policies, dense_subset, min_pair_records, seed, False)

    @classmethod
    def _build(
        cls,
        present: list[str],
        records: list[_Record],
        policies: Sequence[str] | None,
        dense_subset: bool,
        min_pair_records: int,
        seed: int | np.random.Generator | None,
        keep_metadata: bool,
    ) -> ReplayEnvironment:
        chosen = list(present) if policies is None else list(policies)
        unknown = [name for name in chosen if name not in present]
        if unknown:
            raise ReplayError(
                f"unknown policies {unknown}: the replay data has no record of them; "
                f"known policies: {', '.join(sorted(present))}"
            )
        index = {name: k for k, name in enumerate(chosen)}
        record_counts = np.zeros((len(chosen), len(chosen)))
        for policy_a, policy_b, _, weight, _ in records:
            if policy_a in index and policy_b in index:
                record_counts[index[policy_a], index[policy_b]] += weight
                record_counts[index[policy_b], index[policy_a]] += weight
        dropped: tuple[str, ...] = ()
        if dense_subset:
            kept = dense_policy_subset(record_counts, min_pair_records)
            dropped = tuple(chosen[k] for k in range(len(chosen)) if k not in set(kept))
            chosen = [chosen[k] for k in kept]
            index = {name: k for k, name in enumerate(chosen)}
            if len(chosen) < 2:
                raise ReplayError(
                    f"no two policies have {min_pair_records} records of their pair; "
                    "lower min_pair_records"
                )
        else:
            _require_every_pair(chosen, record_counts, min_pair_records)
        pooled: dict[tuple[int, int], list[tuple[float, float, Any]]] = {}
        for policy_a, policy_b, outcome, weight, meta in records:
            if policy_a not in index or policy_b not in index:
                continue
            a, b = index[policy_a], index[policy_b]
            if a < b:
                pooled.setdefault((a, b), []).append((outcome, weight, meta))
            else:
                order = None if meta is None else meta[2]
                flipped = None if meta is None else (meta[0], meta[1], _flip(order))
                pooled.setdefault((b, a), []).append((1.0 - outcome, weight, flipped))
        outcomes = {pair: np.array([r[0] for r in rows]) for pair, rows in pooled.items()}
        weights = {pair: np.array([r[1] for r in rows]) for pair, rows in pooled.items()}
        metadata = {
            pair: ([r[2] for r in rows] if keep_metadata else None) for pair, rows in pooled.items()
        }
        return cls(chosen, outcomes, weights, metadata, dropped, seed)

    # ---- comparisons ---------------------------------------------------------------------------
    def reseed(self, seed: Sequence[int]) -> None:
        """Draw the next comparisons from a generator seeded with ``seed`` alone."""
        self.rng = np.random.default_rng(list(seed))

    def task_ids(self) -> set[str] | None:
        """The task ids of the records (None for pair counts, which have none)."""
        if any(rows is None for rows in self._metadata.values()):
            return None
        return {meta[0] for rows in self._metadata.values() for meta in rows or () if meta[0]}

    def records(self, a: int, b: int) -> list[Comparison] | None:
        """Every recorded judgment of the pair, as comparisons of ``a`` against ``b`` (None for
        pair counts, whose records are not individual)."""
        pair = (min(a, b), max(a, b))
        metadata = self._metadata.get(pair)
        if metadata is None:
            return None
        comparisons = []
        for outcome, (task_id, judge, order) in zip(self._outcomes[pair], metadata, strict=True):
            if a != pair[0]:
                outcome, order = 1.0 - outcome, _flip(order)
            comparisons.append(Comparison(float(outcome), task_id, order, judge))
        return comparisons

    def record_count(self, a: int, b: int) -> float:
        """Number of records of the pair (a, b)."""
        pair = (min(a, b), max(a, b))
        return float(self._cumulative[pair][-1]) if pair in self._cumulative else 0.0

    def compare(self, a: int, b: int) -> Comparison:
        if a == b or not (0 <= a < len(self.policies) and 0 <= b < len(self.policies)):
            raise ReplayError(f"no such pair ({a}, {b}) among {len(self.policies)} policies")
        pair = (min(a, b), max(a, b))
        if pair not in self._cumulative:
            raise ReplayError(
                f"no records of the pair ({self.policies[a]!r}, {self.policies[b]!r}); "
                "choose policies whose pairs all have records, or use the dense subset"
            )
        cumulative = self._cumulative[pair]
        record = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        outcome = float(self._outcomes[pair][record])
        metadata = self._metadata[pair]
        task_id = judge = order = None
        if metadata is not None:
            task_id, judge, order = metadata[record]
        if a != pair[0]:
            outcome, order = 1.0 - outcome, _flip(order)
        return Comparison(outcome=outcome, task_id=task_id, order=order, raw=judge)


def _flip(order: str | None) -> str | None:
    return None if order is None else ("ba" if order == "ab" else "ab")


def _require_every_pair(names: list[str], record_counts: NDArray[np.float64], needed: int) -> None:
    missing = [
        (names[a], names[b])
        for a in range(len(names))
        for b in range(a + 1, len(names))
        if record_counts[a, b] < needed
    ]
    if missing:
        shown = ", ".join(f"({a}, {b})" for a, b in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ReplayError(
            f"{len(missing)} pairs have fewer than {needed} records, so replay cannot compare "
            f"them: {shown}{more}. Fix: list policies whose pairs all have records, or set "
            "environment.dense_subset: true (--dense-subset) to drop policies until they do"
        )


def dense_policy_subset(record_counts: NDArray[np.float64], min_pair_records: int = 1) -> list[int]:
    """A large subset of policies in which every pair has at least ``min_pair_records`` records.

    Greedy: repeatedly drop the policy with the most deficient pairs (ties: the one with fewer
    records in total, then the later one). Deterministic.

    Parameters
    ----------
    record_counts : ndarray
        Symmetric K×K matrix of records per pair.
    min_pair_records : int
        Records each kept pair needs.

    Returns
    -------
    list of int
        Indices of the kept policies, in increasing order.
    """
    kept = list(range(record_counts.shape[0]))
    while len(kept) > 1:
        sub = record_counts[np.ix_(kept, kept)]
        deficient = (sub < min_pair_records).sum(axis=1) - (np.diag(sub) < min_pair_records)
        if deficient.max() == 0:
            break
        worst = max(range(len(kept)), key=lambda k: (deficient[k], -sub[k].sum(), k))
        kept.pop(worst)
    return kept
