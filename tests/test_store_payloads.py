"""The declared JSON of a store: live comparison records and event details."""

from __future__ import annotations

import pytest

from llmpo.errors import StoreError
from llmpo.store import Store
from llmpo.store.payloads import EVENT_DETAILS, LiveRaw, event_detail, number_of, replicates_of


def test_a_live_record_reads_back_as_written():
    live = LiveRaw({"winner": "A"}, 7, (0, 2), (True, False), ("k1", "k2"), 3, 5, (False, True))
    stored = live.to_json()
    assert stored["round"] == 5 and stored["replicates"] == [0, 2]
    assert LiveRaw.from_json(stored) == live
    assert (live.generation_calls, live.judge_calls) == (1, 2)
    assert LiveRaw(number=4).to_json()["round"] == 4  # its own round when none is given
    assert (number_of(stored), replicates_of(stored)) == (7, (0, 2))


def test_records_of_older_stores_and_other_kinds_are_read_as_they_were():
    # Before calls were recorded: one judge call per reply recorded.
    old = {"judge": {"ab": ["A"], "ba": ["B", "B"]}, "replicates": [1, 1], "cached": [0, 0]}
    live = LiveRaw.from_json(old)
    assert live is not None and (live.generation_calls, live.judge_calls) == (2, 3)
    assert live.request_keys == (None, None) and live.number is None
    for other in (None, "gpt-4-turbo", {"judge": "x"}, [1, 2]):  # replayed, synthetic, unknown
        assert LiveRaw.from_json(other) is None
    assert replicates_of({"replicates": [3, 4]}) == (3, 4)  # an asked, unanswered comparison
    assert replicates_of({"replicates": [3]}) is None and number_of("x") is None


def test_an_event_detail_with_an_undeclared_field_is_refused_and_nothing_is_written(tmp_path):
    with Store(tmp_path / "runs.db", writer=True) as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        with pytest.raises(StoreError, match=r"event 'finished': detail fields \['comparisonz'\]"):
            store.set_status(
                experiment_id, "certified", {}, event="finished", detail={"comparisonz": 3}
            )
        assert store.experiment(experiment_id).status == "running"  # rolled back with it
        with pytest.raises(StoreError, match=r"\['dropped'\] are missing"):
            store.add_event(experiment_id, "dense_subset", {})
        store.add_event(experiment_id, "budget_extended", {"from": {}, "to": {"x": 1}})
        store.add_event(experiment_id, "a_plugin_event", {"anything": 1})  # undeclared kind
        kinds = [kind for _, kind, _ in store.events(experiment_id)]
    assert kinds == ["created", "budget_extended", "a_plugin_event"]
    assert event_detail("asked", None) is None
    assert {"created", "finished", "invalid_verdict", "asked"} <= set(EVENT_DETAILS)
