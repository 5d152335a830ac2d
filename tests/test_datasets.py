"""Importers of the Chatbot Arena counts and the PandaLM test set."""

import json
from pathlib import Path

import pytest

from llmpo.datasets import DatasetError, load_arena_counts, load_pandalm, pandalm_majority
from llmpo.environments.replay import PairCount, ReplayEnvironment, detect_format

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PANDALM = SHARED_DATA / "pandalm_testset-v1.json"


def needs(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path.name} not found in {SHARED_DATA.resolve()} (shared test data absent)")


def test_pandalm_majority_label():
    assert pandalm_majority([1, 1, 2]) == 1.0
    assert pandalm_majority([2, 0, 2]) == 0.0
    assert pandalm_majority([0, 0, 1]) == 0.5
    assert pandalm_majority([0, 1, 2]) == 0.5  # no majority: tie


def test_pandalm_import_llama_beats_the_others():
    needs(PANDALM)
    assert detect_format(PANDALM) == "pandalm"
    judgments = load_pandalm(PANDALM)
    assert len(judgments) == 999
    environment = ReplayEnvironment.from_judgments(judgments)
    assert len(environment.policies) == 5
    llama = environment.policies.index("llama-7b")
    for other in range(5):
        if other != llama:
            assert environment.record_count(llama, other) > 0


def test_pandalm_malformed_item(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"cmp_key": "a_b", "annotator1": 1, "annotator2": 1}]))
    with pytest.raises(DatasetError, match="item 0"):
        load_pandalm(path)


def test_arena_without_leaderbot_or_path_explains_the_extra(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(DatasetError, match=r"llmpo\[arena\]"):
        load_arena_counts()


def test_arena_file_of_wrong_shape(tmp_path):
    path = tmp_path / "arena.json"
    path.write_text(json.dumps({"models": ["a"], "X": [[0, 1]]}))
    with pytest.raises(DatasetError, match="'models', 'X' and 'Y'"):
        load_arena_counts(path)


def test_arena_counts_are_read_from_the_installed_leaderbot_package(tmp_path, monkeypatch):
    package = tmp_path / "leaderbot"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    arena = {"models": ["m0", "m1", "m2"], "X": [[0, 1], [1, 2]], "Y": [[5, 3, 1, 1], [2, 2, 0, 0]]}
    (package / "data" / "chatbotarena_20240814.json").write_text(json.dumps(arena))
    monkeypatch.syspath_prepend(str(tmp_path))
    counts = load_arena_counts()
    assert counts == [PairCount("m0", "m1", 5, 3, 2), PairCount("m1", "m2", 2, 2, 0)]
