"""Run ``llmpo ARGS…`` and kill the process at one commit point of its store (fault injection).

Usage: ``python -m tests.llm.commit_point_launcher K before|after|comparison|count ARGS…``

Every SQLite connection the process opens counts the ``COMMIT`` statements it executes (an
``sqlite3`` trace callback, so a commit is counted whatever API issues it). With ``before`` the
process ends with ``os._exit(137)`` — no clean-up, no ``finally``, like a SIGKILL — as the K-th
commit starts, so that transaction is lost; with ``after`` it ends right after the K-th commit
returned, so it is durable and nothing after it ran; with ``comparison`` it ends as the commit of
the K-th stored comparison starts (every call of that comparison has been answered by then).
``count`` kills nothing and prints ``commits N`` at exit. A process that finished before the K-th
commit exits with its own code.

With ``LLMPO_ARRIVED`` set to a file name, the process writes there, as it dies, the answers whose
reply had reached it (the live environment's call had returned): one ``[model, seed, last
message]`` per line. What a resumed run pays again can then be compared with what had arrived,
whatever the code under test does with an answer once it arrives.
"""

from __future__ import annotations

import atexit
import json
import os
import sqlite3
import sys
from typing import Any

#: The exit code of a process killed by SIGKILL, as a shell reports it.
KILLED = 137

_commits = 0
_comparisons = 0
_arrived: list[list[Any]] = []


def _die() -> None:
    """End the process at once, as SIGKILL would, after noting what had arrived."""
    path = os.environ.get("LLMPO_ARRIVED")
    if path:
        with open(path, "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in _arrived)
    os._exit(KILLED)


def _record_arrivals() -> None:
    from llmpo.llm.environment import LLMEnvironment

    call = LLMEnvironment._call

    async def recorded(self: Any, backend: Any, request: Any) -> Any:
        generation = await call(self, backend, request)
        _arrived.append([request.model, request.seed, request.messages[-1][1]])
        return generation

    LLMEnvironment._call = recorded  # type: ignore[method-assign]


def main() -> None:
    k, mode, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    assert mode in ("before", "after", "comparison", "count"), mode
    connect = sqlite3.connect

    def trace(statement: str) -> None:
        global _commits, _comparisons
        if statement.lstrip().startswith("INSERT INTO comparisons "):
            _comparisons += 1
        if statement.strip().upper() not in ("COMMIT", "END", "COMMIT TRANSACTION"):
            return
        _commits += 1
        if (mode == "before" and _commits == k) or (mode == "comparison" and _comparisons == k):
            _die()

    class Killing(sqlite3.Connection):
        def execute(self, sql: str, *rest: Any) -> sqlite3.Cursor:  # type: ignore[override]
            cursor = super().execute(sql, *rest)
            if mode == "after" and _commits == k:
                _die()  # the K-th commit has returned: it is on disk
            return cursor

    def traced(*positional: Any, **named: Any) -> sqlite3.Connection:
        named.setdefault("factory", Killing)
        connection = connect(*positional, **named)
        connection.set_trace_callback(trace)
        return connection

    sqlite3.connect = traced  # type: ignore[assignment]
    if mode == "count":
        atexit.register(lambda: print(f"commits {_commits}", file=sys.stderr, flush=True))

    _record_arrivals()
    from llmpo.cli import app

    app(args)


if __name__ == "__main__":
    main()
