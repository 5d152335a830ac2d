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
