"""Integrity of a store: what is checked when it is opened, and what ``llmpo doctor`` repairs.

A store is trusted by every run, resume and report, so damage — a row deleted or edited by hand, a
flipped bit — must be found before it is used, not surface as a wrong certificate or a traceback.
:func:`find_problems` checks

* the SQLite file itself (``PRAGMA quick_check``: pages, free list, indexes);
* every experiment: its configuration is a JSON object, its policies a list of ≥ 2 distinct
  names, its status known, its result JSON;
* every comparison (of runs and of held-out evaluations): sequence numbers 1, 2, …, n with no
  gap, policy indices of the experiment's policies and distinct, an outcome in [0, 1] (a verdict
  0, ½, 1 or a preference probability), raw
  details that are JSON, costs and token counts ≥ 0;
* every event's details are JSON.

:func:`repair` fixes, in a copy or after a backup, what can be fixed without guessing: a run's
comparisons are cut at the first gap or bad row (those after it would be replayed out of order;
the cut ones are counted and named, and re-run by ``llmpo resume``), and a damaged file is
rebuilt with ``VACUUM INTO`` from what SQLite can still read. Problems that need a person (a bad
configuration, a bad policy list) are explained, never "repaired".
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from llmpo.errors import StoreError
from llmpo.store.records import STATUSES

__all__ = ["Problem", "check_file", "find_problems", "repair"]

#: Rows of one kind quoted in a message (the count is always given).
_SHOWN = 5


@dataclass(frozen=True)
class Problem:
    """One integrity problem.

    Attributes
    ----------
    message : str
        What is wrong, where (experiment, sequence numbers).
    fix : str
        What ``llmpo doctor --repair`` would do, or what the user must do.
    table : str or None
        The comparison table to cut (``comparisons`` or ``evaluation_comparisons``), when
        cutting is the repair.
    owner : int or None
        The experiment or evaluation whose comparisons are cut.
    cut_from : int or None
        The first sequence number removed by the repair.
    damaged_file : bool
        Whether the SQLite file itself is damaged (rebuilt by copying).
    """

    message: str
    fix: str
    table: str | None = None
    owner: int | None = None
    cut_from: int | None = None
    damaged_file: bool = False


def _tables(connection: sqlite3.Connection) -> set[str]:
    return {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }


def _json(text: object, kind: type) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return isinstance(json.loads(text), kind)
    except (ValueError, RecursionError):
        return False


def _shown(numbers: list[int]) -> str:
    head = ", ".join(str(n) for n in numbers[:_SHOWN])
    return head + (f", … ({len(numbers)} in all)" if len(numbers) > _SHOWN else "")


def _comparison_problems(
    connection: sqlite3.Connection, table: str, key: str, owner: int, label: str, n_policies: int
) -> list[Problem]:
    """Gaps and bad rows among one owner's comparisons; the repair cuts at the first."""
    problems = []
    count, low, high = connection.execute(
        f"SELECT count(*), min(seq), max(seq) FROM {table} WHERE {key} = ?", (owner,)
    ).fetchone()
    # Sequence numbers must be exactly 1..n (the primary key makes them distinct): the first one
    # missing marks where the run is cut. Listed only when the aggregate says there is a gap.
    if count and (low != 1 or high != count):
        seqs = [
            row[0]
            for row in connection.execute(
                f"SELECT seq FROM {table} WHERE {key} = ? ORDER BY seq", (owner,)
            )
        ]
        first_gap = next(i + 1 for i, seq in enumerate(seqs) if seq != i + 1)
        missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
        problems.append(
            Problem(
                f"{label}: comparison numbers are not 1, 2, …, {len(seqs)}: "
                + (f"missing {_shown(missing)}" if missing else "numbers below 1 present"),
                "",
                table,
                owner,
                first_gap,
            )
        )
    index_bound = (
        f"OR typeof(policy_a) != 'integer' OR typeof(policy_b) != 'integer' "
        f"OR policy_a NOT BETWEEN 0 AND {n_policies - 1} "
        f"OR policy_b NOT BETWEEN 0 AND {n_policies - 1} OR policy_a = policy_b "
        if n_policies
        else ""
    )
    bad = [
        row[0]
        for row in connection.execute(
            f"SELECT seq FROM {table} WHERE {key} = ? AND (NOT outcome BETWEEN 0.0 AND 1.0 "
            "OR typeof(outcome) NOT IN ('real', 'integer') OR typeof(seq) != 'integer' "
            f"{index_bound}"
            "OR (raw IS NOT NULL AND json_valid(raw) = 0) "
            "OR cost_usd < 0 OR input_tokens < 0 OR output_tokens < 0) ORDER BY seq",
            (owner,),
        )
    ]
    if bad:
        problems.append(
            Problem(
                f"{label}: comparisons {_shown(bad)} hold values no run writes (policy index "
                f"outside 0–{n_policies - 1} or twice the same, outcome not a number in [0, 1], "
                "raw details not JSON, or a negative cost or token count)",
                "",
                table,
                owner,
                bad[0],
            )
        )
    return problems


def find_problems(connection: sqlite3.Connection) -> list[Problem]:
    """Every integrity problem of an open llmpo store (empty when it is sound).

    Parameters
    ----------
    connection : sqlite3.Connection
        The store, opened read-only or not; nothing is changed.

    Returns
    -------
    list of Problem
        In the order found; the damaged-file problem first.
    """
    # "budget": stores written before the two budgets were told apart (read back as either).
    known_statuses = (*STATUSES, "budget")
    problems: list[Problem] = []
    try:
        verdicts = [row[0] for row in connection.execute("PRAGMA quick_check(20)")]
    except sqlite3.DatabaseError as error:
        verdicts = [str(error)]
    # quick_check also reports rows that break a CHECK or NOT NULL constraint: those are rows to
    # check below (and cut), not a damaged file.
    verdicts = [
        v for v in verdicts if not v.startswith(("CHECK constraint failed", "NULL value in"))
    ]
    if verdicts and verdicts != ["ok"]:
        problems.append(
            Problem(
                "the SQLite file is damaged (quick_check: " + "; ".join(verdicts[:3]) + ")",
                "",
                damaged_file=True,
            )
        )
        return problems  # rows read from a damaged file prove nothing
    tables = _tables(connection)
    if "experiments" not in tables:
        return problems
    rows = connection.execute(
        "SELECT id, status, config, policies, result FROM experiments ORDER BY id"
    ).fetchall()
    for experiment_id, status, config, policies, result in rows:
        label = f"experiment {experiment_id}"
        names = json.loads(policies) if _json(policies, list) else None
        if not _json(config, dict):
            problems.append(
                Problem(
                    f"{label}: its stored configuration is not a JSON object",
                    "nothing safe to repair: the experiment cannot be resumed or reported; "
                    "run it again from its configuration file into a new store",
                )
            )
        if names is None or len(names) < 2 or len(set(map(str, names))) != len(names):
            problems.append(
                Problem(
                    f"{label}: its stored policies are not a list of at least 2 distinct names",
                    "nothing safe to repair: run the experiment again into a new store",
                )
            )
            names = None
        if status not in known_statuses:
            problems.append(
                Problem(
                    f"{label}: unknown status {str(status)[:40]!r}",
                    "repair marks it interrupted (llmpo resume then finishes it)",
                    "comparisons",
                    experiment_id,
                )
            )
        if result is not None and not _json(result, dict):
            problems.append(
                Problem(
                    f"{label}: its stored result is not a JSON object",
                    "repair marks it interrupted (llmpo resume recomputes the result)",
                    "comparisons",
                    experiment_id,
                )
            )
        problems += _comparison_problems(
            connection,
            "comparisons",
            "experiment_id",
            experiment_id,
            label,
            len(names) if names else 0,
        )
    if "evaluation_comparisons" in tables:
        for (evaluation_id,) in connection.execute("SELECT id FROM evaluations ORDER BY id"):
            problems += _comparison_problems(
                connection,
                "evaluation_comparisons",
                "evaluation_id",
                evaluation_id,
                f"evaluation {evaluation_id}",
                2,
            )
    bad_events = [
        row[0]
        for row in connection.execute(
            "SELECT id FROM events WHERE detail IS NOT NULL AND json_valid(detail) = 0"
        )
    ]
    if bad_events:
        problems.append(
            Problem(
                f"events {_shown(bad_events)}: details that are not JSON",
                "repair clears those details (the events' kinds and times stay)",
            )
        )
    return [_with_fix(problem) for problem in problems]


def check_file(path: Path) -> list[Problem]:
    """Every integrity problem of the store file at ``path``, read without changing it.

    Raises
    ------
    StoreError
        When the path is not a file, or not an SQLite database SQLite can read.
    """
    if not path.is_file():
        raise StoreError(f"{path}: no such store file. Fix: check the path")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise StoreError(f"{path}: cannot open ({error})") from None
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return find_problems(connection)
    except sqlite3.DatabaseError as error:
        raise StoreError(
            f"{path}: not a readable SQLite database ({error}); nothing can be repaired. "
            "Fix: restore it from a backup"
        ) from None
    finally:
        connection.close()


def _with_fix(problem: Problem) -> Problem:
    if problem.fix or problem.cut_from is None:
        return problem
    what = "experiment" if problem.table == "comparisons" else "evaluation"
    fix = (
        f"repair removes the {what}'s comparisons from number {problem.cut_from} on (they are "
        "counted in its report; llmpo resume runs them again) and marks it interrupted"
    )
    return Problem(problem.message, fix, problem.table, problem.owner, problem.cut_from)


def repair(path: Path, problems: list[Problem]) -> list[str]:
    """Repair what can be repaired safely; the lines that say what was done.

    A damaged file is copied with ``VACUUM INTO`` to ``<store>.repaired`` (the original is left
    as it is). Otherwise the store is first copied to ``<store>.bak``, then, in one
    transaction, each affected run or evaluation loses its comparisons from the first bad
    number on and is marked ``interrupted`` (result cleared), and non-JSON event details are
    cleared. Problems with no safe repair are left for the user.

    Parameters
    ----------
    path : Path
        The store file (no other process may be writing it).
    problems : list of Problem
        What :func:`find_problems` returned for it.
    """
    done: list[str] = []
    if any(problem.damaged_file for problem in problems):
        target = path.with_name(path.name + ".repaired")
        if target.exists():
            return [f"not repaired: {target} exists already. Fix: move it away, then run again"]
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            source.execute("VACUUM INTO ?", (str(target),))
        except sqlite3.DatabaseError as error:
            return [f"not repaired: SQLite cannot read enough of the file to copy it ({error})"]
        finally:
            source.close()
        return [
            f"copied everything SQLite can read into {target}; the store itself was not changed. "
            f"Check the copy (llmpo doctor {target}), then replace the store with it"
        ]
    cuts: dict[tuple[str, int], int] = {}
    for problem in problems:
        if problem.table is not None and problem.owner is not None:
            cut = (problem.table, problem.owner)
            start = problem.cut_from if problem.cut_from is not None else 10**18
            cuts[cut] = min(cuts.get(cut, start), start)
    clear_events = any(problem.message.startswith("events ") for problem in problems)
    if not cuts and not clear_events:
        return done
    backup = path.with_name(path.name + ".bak")
    number = 1
    while backup.exists():  # never overwrite the backup of an earlier repair
        number += 1
        backup = path.with_name(f"{path.name}.bak{number}")
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("VACUUM INTO ?", (str(backup),))
        done.append(f"backup of the store before the repair: {backup}")
        connection.execute("BEGIN IMMEDIATE")
        for (table, owner), start in sorted(cuts.items()):
            column, parent = (
                ("experiment_id", "experiments")
                if table == "comparisons"
                else ("evaluation_id", "evaluations")
            )
            removed = connection.execute(
                f"DELETE FROM {table} WHERE {column} = ? AND seq >= ?", (owner, start)
            ).rowcount
            connection.execute(
                f"UPDATE {parent} SET status = 'interrupted', result = NULL WHERE id = ?",
                (owner,),
            )
            what = "experiment" if parent == "experiments" else "evaluation"
            done.append(
                f"{what} {owner}: removed {removed} recorded comparisons (numbers ≥ {start}) "
                "and marked it interrupted; llmpo resume runs them again"
                if removed
                else f"{what} {owner}: marked interrupted"
            )
        if clear_events:
            cleared = connection.execute(
                "UPDATE events SET detail = NULL "
                "WHERE detail IS NOT NULL AND json_valid(detail) = 0"
            ).rowcount
            done.append(f"cleared the details of {cleared} events that were not JSON")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()
    return done
