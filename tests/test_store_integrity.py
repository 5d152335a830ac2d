"""The store cannot be fooled: one writer whatever path leads to it; damage is found on open and
explained (and, where safe, repaired) by ``llmpo doctor``."""

import os

import pytest

from llmpo.store import Store, StoreError


def test_a_symlink_or_another_spelling_cannot_get_a_second_writer(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "runs.db"
    link = tmp_path / "sub" / "link.db"
    with Store(path, writer=True) as store:
        store.create_experiment({}, ["a", "b"])
        link.symlink_to(path)
        monkeypatch.chdir(tmp_path / "sub")
        for other in (link, "link.db", "../runs.db", tmp_path / "sub" / ".." / "runs.db"):
            with pytest.raises(StoreError, match="in use by another llmpo process"):
                Store(other, writer=True)
    with Store(link, writer=True) as store:  # released on close, and the link works
        assert store.experiment(1).policies == ["a", "b"]
    assert not os.path.exists(str(link) + ".lock")


import sqlite3  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from llmpo.cli import app  # noqa: E402
from llmpo.store import ComparisonRecord  # noqa: E402

runner = CliRunner()


def make_store(path, comparisons: int = 10) -> None:
    with Store(path, writer=True) as store:
        experiment_id = store.create_experiment({"seed": 1}, ["a", "b", "c"])
        for seq in range(1, comparisons + 1):
            store.append_comparison(
                experiment_id,
                ComparisonRecord(seq, seq % 3, (seq + 1) % 3, 1.0, raw={"n": seq}),
            )
        store.set_status(experiment_id, "certified", {"winner": "a"})


def edit(path, *statements: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA ignore_check_constraints=ON")  # as a hand edit may
    for statement in statements:
        connection.execute(statement)
    connection.close()


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("DELETE FROM comparisons WHERE seq = 5", "missing 5"),
        ("UPDATE comparisons SET policy_a = 7 WHERE seq = 5", "comparisons 5 hold values"),
        ("UPDATE comparisons SET policy_b = policy_a WHERE seq = 5", "comparisons 5 hold values"),
        ("UPDATE comparisons SET outcome = 2.0 WHERE seq = 5", "comparisons 5 hold values"),
        ("UPDATE comparisons SET raw = '{oops' WHERE seq = 5", "comparisons 5 hold values"),
        ("UPDATE comparisons SET cost_usd = -1 WHERE seq = 5", "comparisons 5 hold values"),
    ],
)
def test_a_damaged_run_is_refused_explained_and_repaired(tmp_path, statement, problem):
    path = tmp_path / "runs.db"
    make_store(path)
    edit(path, statement)
    for readonly in (True, False):
        with pytest.raises(StoreError, match=f"integrity check(.|\n)*{problem}(.|\n)*doctor"):
            Store(path, readonly=readonly)
    result = runner.invoke(app, ["resume", str(path)])
    assert result.exit_code == 2 and problem in result.output and "doctor" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = runner.invoke(app, ["doctor", str(path)])
    assert result.exit_code == 1 and problem in result.output and "--repair" in result.output
    before = path.read_bytes()
    result = runner.invoke(app, ["doctor", str(path), "--repair"])
    assert result.exit_code == 0, result.output
    kept = 4
    removed = 10 - kept - (1 if "DELETE" in statement else 0)
    assert f"removed {removed} recorded comparisons" in result.output
    assert "sound after the repair" in result.output
    backup = tmp_path / "runs.db.bak"
    assert backup.is_file() and f"backup of the store before the repair: {backup}" in result.output
    with Store(path, readonly=True) as store:
        assert store.comparison_count(1) == kept
        assert store.experiment(1).status == "interrupted" and store.experiment(1).result is None
    assert before != path.read_bytes()


def test_a_bad_configuration_or_policy_list_is_explained_not_repaired(tmp_path):
    path = tmp_path / "runs.db"
    make_store(path)
    edit(path, "UPDATE experiments SET config = 'not json', policies = '[\"a\"]'")
    with pytest.raises(StoreError, match="configuration is not a JSON object"):
        Store(path, readonly=True)
    result = runner.invoke(app, ["report", str(path), "--format", "json"])
    assert result.exit_code == 2 and "configuration is not a JSON object" in result.output
    result = runner.invoke(app, ["doctor", str(path), "--repair"])
    assert result.exit_code == 1 and "nothing safe to repair" in result.output
    assert "have no safe repair and remain" in result.output


def test_a_damaged_file_is_found_and_copied_out(tmp_path):
    path = tmp_path / "runs.db"
    make_store(path, comparisons=2000)
    edit(path, "DELETE FROM comparisons WHERE seq > 1500", "DELETE FROM events")
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    trunk = int.from_bytes(data[32:36], "big")  # the first free-list page
    assert trunk > 0, "the deletions must leave free pages"
    offset = (trunk - 1) * page_size
    data[offset + 4 : offset + 8] = (10**6).to_bytes(4, "big")  # its leaf count, flipped
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        Store(path, readonly=True)
    result = runner.invoke(app, ["doctor", str(path), "--repair"])
    assert "quick_check" in result.output and result.exit_code == 0, result.output
    copy = tmp_path / "runs.db.repaired"
    assert copy.is_file()
    with Store(copy, readonly=True) as store:  # the copy is sound and holds the comparisons
        assert store.comparison_count(1) == 1500


def test_a_sound_store_passes(tmp_path):
    path = tmp_path / "runs.db"
    make_store(path)
    result = runner.invoke(app, ["doctor", str(path)])
    assert result.exit_code == 0 and "sound" in result.output
