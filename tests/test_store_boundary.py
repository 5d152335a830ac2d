"""Nothing outside the store package speaks SQL to a store (issue 17): a search of the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = re.compile(r"sqlite3\.connect\(|\.execute(many)?\(|\.executescript\(")
#: The benchmark harness's cache of result cells is its own SQLite file, not an llmpo store.
NOT_A_STORE = {"benchstore.py"}
#: The commit-point fault injector wraps SQLite's connection to count (and die at) the store's own
#: commits; it passes the store's statements through and issues none of its own.
FAULT_INJECTION = {"commit_point_launcher.py"}


def _offenders(paths, allowed) -> list[str]:
    found = []
    for path in paths:
        if allowed(path):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SQL.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_only_the_store_package_speaks_sql_in_the_library_and_benchmarks():
    package = ROOT / "src" / "llmpo"
    paths = [*package.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    offenders = _offenders(
        paths,
        lambda p: p.is_relative_to(package / "store")
        or p == package / "testing" / "store.py"
        or p.name in NOT_A_STORE,
    )
    assert not offenders, "SQL outside llmpo.store:\n" + "\n".join(offenders)


def test_tests_speak_sql_only_in_the_stores_own_tests_or_through_its_tamper_helper():
    tests = ROOT / "tests"
    offenders = []
    for path in tests.rglob("*.py"):
        if path.name.startswith("test_store") or path.name in NOT_A_STORE | FAULT_INJECTION:
            continue
        text = path.read_text()
        if "sqlite3.connect(" in text:
            offenders.append(f"{path.relative_to(ROOT)} opens SQLite itself")
        elif SQL.search(text) and "tamper(" not in text:
            offenders.append(f"{path.relative_to(ROOT)} runs SQL without llmpo.testing.store")
    assert not offenders, "\n".join(offenders)
