"""The sync runner: every comparison stored before it is told, and resume by replaying the store
gives exactly the uninterrupted run."""

import json
import weakref
from pathlib import Path

import numpy as np
import pytest

from llmpo.config import ConfigError, parse_config
from llmpo.harness.instances import bradley_terry_matrix
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import build_space, check_config, find_experiment, start_experiment
from llmpo.store import Store, StoreError
from llmpo.testing.store import tamper


def bt_instance(tmp_path: Path, utilities=(1.0, 0.6, 0.3, 0.0)) -> Path:
    path = tmp_path / "bt.json"
    names = [f"m{k}" for k in range(len(utilities))]
    path.write_text(
        json.dumps({"policies": names, "win_prob": bradley_terry_matrix(utilities).tolist()})
    )
    return path


def synthetic_config(tmp_path: Path, **fields):
    data = {
        "delta": 0.05,
        "seed": 11,
        "environment": {"type": "synthetic", "instance": str(bt_instance(tmp_path))},
        "store": str(tmp_path / "runs.db"),
        **fields,
    }
    return parse_config(data, "test")


def counts_config(tmp_path: Path, **fields):
    counts = tmp_path / "counts.jsonl"
    records = [
        {"policy_a": "a", "policy_b": "b", "wins": 60, "losses": 35, "ties": 5},
        {"policy_a": "a", "policy_b": "c", "wins": 70, "losses": 30},
        {"policy_a": "c", "policy_b": "b", "wins": 40, "losses": 50, "ties": 10},
    ]
    counts.write_text("".join(json.dumps(record) + "\n" for record in records))
    data = {
        "seed": 5,
        "environment": {"type": "replay", "path": str(counts)},
        "store": str(tmp_path / "runs.db"),
        **fields,
    }
    return parse_config(data, "test")


def run_stopping_at(store: Store, experiment_id: int, stop_after: int):
    runner = Runner(store, experiment_id)
    compare = runner.source.compare

    def compare_then_maybe_stop(sequence, a, b):
        outcome = compare(sequence, a, b)
        if sequence == stop_after:
            runner.request_stop()
        return outcome

    runner.source.compare = compare_then_maybe_stop
    return runner.run()


def stored(store: Store, experiment_id: int):
    return [(c.seq, c.policy_a, c.policy_b, c.outcome) for c in store.comparisons(experiment_id)]


@pytest.mark.parametrize(
    ("make_config", "batch_size"),
    [(synthetic_config, 1), (synthetic_config, 5), (counts_config, 1), (counts_config, 3)],
)
def test_interrupted_and_resumed_runs_equal_the_uninterrupted_run(
    tmp_path, make_config, batch_size
):
    config = make_config(tmp_path, batch_size=batch_size)
    with Store(config.store, writer=True) as store:
        reference_id = start_experiment(config, store)
        reference = Runner(store, reference_id).run()
        assert reference.status == "certified" and reference.new_comparisons > 100
        total = reference.result.n_comparisons

        experiment_id = start_experiment(config, store)
        for stop_after in (1, 2, 37, total // 3, total // 3 + 1, total - 1):
            outcome = run_stopping_at(store, experiment_id, stop_after)
            assert outcome.status == "interrupted"
            assert store.comparison_count(experiment_id) == stop_after
            assert store.experiment(experiment_id).status == "interrupted"
        resumed = Runner(store, experiment_id).run()
        assert resumed.replayed == total - 1 and resumed.new_comparisons == 1
        assert stored(store, experiment_id) == stored(store, reference_id)
        assert resumed.result.to_dict() == reference.result.to_dict()
        assert store.experiment(experiment_id).result == reference.result.to_dict()
        kinds = [kind for _, kind, _ in store.events(experiment_id)]
        assert kinds[:2] == ["created", "started"] and kinds[-1] == "finished"
        assert kinds.count("interrupted") == 6 and kinds.count("resumed") == 6

        again = Runner(store, experiment_id).run()  # a finished experiment stays as it is
        assert again.new_comparisons == 0 and again.result.to_dict() == reference.result.to_dict()


def test_budget_stops_with_best_so_far(tmp_path):
    config = synthetic_config(tmp_path, max_comparisons=40)
    with Store(config.store, writer=True) as store:
        outcome = Runner(store, start_experiment(config, store)).run()
    assert outcome.status == "max_comparisons" and not outcome.result.certified
    assert outcome.result.n_comparisons == 40
    with Store(config.store, readonly=True) as store:
        record = store.experiment()
    assert record.status == record.result["stop_reason"] == "max_comparisons"


def test_a_run_that_raises_is_marked_failed_not_left_running(tmp_path, monkeypatch):
    config = synthetic_config(tmp_path, max_comparisons=40)
    with Store(config.store, writer=True) as store:
        runner = Runner(store, start_experiment(config, store))

        def broken(sequence, a, b):
            raise RuntimeError("the judge broke")

        monkeypatch.setattr(runner.source, "compare", broken)
        with pytest.raises(RuntimeError, match="the judge broke"):
            runner.run()
        record = store.experiment()
        events = store.events(record.id)
    assert record.status == "failed"
    assert ("failed", {"error": "RuntimeError: the judge broke"}) in [(k, d) for _, k, d in events]


def test_seed_is_drawn_and_saved_when_absent(tmp_path):
    config = synthetic_config(tmp_path, seed=None, max_comparisons=10)
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        saved = store.experiment(experiment_id).config["seed"]
        assert isinstance(saved, int)
        assert find_experiment(config, store).id == experiment_id
        assert find_experiment(config.model_copy(update={"delta": 0.1}), store) is None


def test_resume_refuses_a_store_that_diverges_from_the_experiment(tmp_path):
    config = synthetic_config(tmp_path)
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        run_stopping_at(store, experiment_id, 30)
    with tamper(config.store) as connection:
        connection.execute("UPDATE comparisons SET policy_a = 3, policy_b = 2 WHERE seq = 10")
    with (
        Store(config.store, writer=True) as store,
        pytest.raises(StoreError, match="comparison #10 is of"),
    ):
        Runner(store, experiment_id).run()


def test_resume_refuses_when_the_data_changed(tmp_path):
    config = synthetic_config(tmp_path)
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
    bt_path = Path(config.environment.instance)
    data = json.loads(bt_path.read_text())
    data["policies"][0] = "renamed"
    bt_path.write_text(json.dumps(data))
    with Store(config.store, writer=True) as store, pytest.raises(StoreError, match="data changed"):
        Runner(store, experiment_id)


def test_replay_run_stores_tasks_and_orders(tmp_path):
    judgments = tmp_path / "judgments.jsonl"
    lines = []
    for k in range(30):
        for a, b, outcome in (("x", "y", 1), ("x", "z", 1), ("y", "z", 1), ("y", "x", k % 3 == 0)):
            lines.append(
                {
                    "policy_a": a,
                    "policy_b": b,
                    "task_id": f"q{k}",
                    "outcome": int(outcome),
                    "order": "ab",
                }
            )
    judgments.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = parse_config(
        {
            "seed": 2,
            "environment": {"type": "replay", "path": str(judgments)},
            "store": str(tmp_path / "r.db"),
        },
        "test",
    )
    with Store(config.store, writer=True) as store:
        outcome = Runner(store, start_experiment(config, store)).run()
        comparisons = store.comparisons(outcome.experiment_id)
    assert outcome.result.best_name == "x" and outcome.result.certified
    assert all(c.task_id.startswith("q") and c.order in ("ab", "ba") for c in comparisons)


def test_unknown_policies_and_structured_space_are_config_errors(tmp_path):
    with Store(tmp_path / "runs.db", writer=True) as store:
        with pytest.raises(ConfigError, match=r"policies: unknown \['nope'\]"):
            start_experiment(synthetic_config(tmp_path, policies=["m0", "nope"]), store)
        with pytest.raises(ConfigError, match="strategy: unknown"):
            start_experiment(synthetic_config(tmp_path, strategy="magic"), store)
        assert store.experiments() == []


def test_progress_reports_leader_margin_and_remaining(tmp_path):
    config = synthetic_config(tmp_path)
    seen = []
    with Store(config.store, writer=True) as store:
        runner = Runner(store, start_experiment(config, store), seen.append, progress_interval=0)
        outcome = runner.run()
    assert len(seen) == outcome.result.n_comparisons + 1  # after each comparison, and at the end
    assert seen[0].estimated_remaining is None  # no evidence against some rival yet
    last = seen[-1]
    assert last.leader == outcome.result.best_name and last.min_margin > 0
    assert last.estimated_remaining == 0 and last.cost_usd is None
    assert any(p.estimated_remaining for p in seen[len(seen) // 2 :])


def feat10_config(tmp_path: Path, **fields):
    features = np.random.default_rng(0).normal(size=(10, 3))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    instance = tmp_path / "feat10.json"
    names = [f"q{k}" for k in range(10)]
    instance.write_text(
        json.dumps({"policies": names, "features": features.tolist(), "theta": [1, 0.5, -0.3]})
    )
    data = {
        "space": "structured",
        "seed": 2,
        "environment": {"type": "synthetic", "instance": str(instance)},
        "store": str(tmp_path / "runs.db"),
        **fields,
    }
    return parse_config(data, "test")


def test_structured_run_on_a_feature_instance_resumes_exactly(tmp_path):
    config = feat10_config(tmp_path)
    seen = []
    with Store(config.store, writer=True) as store:
        reference = Runner(store, start_experiment(config, store)).run()
        assert reference.result.certified and reference.result.best_name == "q2"  # FEAT10
        assert reference.result.threshold == "hybrid-lean"  # the structured space's default
        experiment_id = start_experiment(config, store)
        run_stopping_at(store, experiment_id, reference.result.n_comparisons // 2)
        resumed = Runner(store, experiment_id, seen.append, progress_interval=0.05).run()
        assert stored(store, experiment_id) == stored(store, reference.experiment_id)
    assert resumed.result.to_dict() == reference.result.to_dict()
    assert any(p.estimated_remaining for p in seen[:-1]) and seen[-1].estimated_remaining == 0


def test_a_structured_store_from_before_thresholds_were_recorded_resumes_with_universal(
    tmp_path,
):
    config = feat10_config(tmp_path, max_comparisons=30)
    legacy = config.to_json()
    assert legacy["threshold"] is None  # stores made before the threshold was recorded
    with Store(config.store, writer=True) as store:
        old_id = store.create_experiment(legacy, [f"q{k}" for k in range(10)])
        new_id = start_experiment(config, store)
        assert store.experiment(new_id).config["threshold"] == "hybrid-lean"  # recorded
        assert Runner(store, old_id).run().result.threshold == "universal"
        assert Runner(store, new_id).run().result.threshold == "hybrid-lean"
        # Unset in the configuration: either resumes (the latest experiment); named: its own.
        assert find_experiment(config, store).id == new_id
        universal = config.model_copy(update={"threshold": "universal"})
        assert find_experiment(universal, store).id == old_id  # the legacy one is universal
        lean = config.model_copy(update={"threshold": "hybrid-lean"})
        assert find_experiment(lean, store).id == new_id
        mixture = config.model_copy(update={"threshold": "mixture"})
        assert find_experiment(mixture, store) is None  # named: only an experiment with it


def test_structured_space_from_factor_levels(tmp_path):
    policies = [
        {"name": "a", "levels": {"prompt": "plain", "temperature": 0.2}},
        {"name": "b", "levels": {"prompt": "cot", "temperature": 0.2}},
        {"name": "c", "levels": {"prompt": "cot", "temperature": 0.8}},
        {"name": "d", "levels": {"prompt": "few-shot", "temperature": 0.8}},
    ]
    config = counts_config(tmp_path).model_copy()
    config = parse_config(
        {**config.to_json(), "space": "structured", "policies": policies, "seed": 1}, "test"
    )
    space = build_space(config, ("a", "b", "c", "d"))
    assert space.feature_names == ("prompt=cot", "prompt=few-shot", "temperature=0.8")
    assert space.features.tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 1, 1]]
    reordered = build_space(config, ("d", "c", "b", "a"))  # rows follow the environment's order
    assert reordered.features.tolist() == space.features[::-1].tolist()


def test_structured_space_without_features_is_a_config_error(tmp_path):
    config = synthetic_config(tmp_path, space="structured")  # an unstructured instance
    with pytest.raises(ConfigError, match="structured needs features"):
        build_space(config, ("m0", "m1", "m2", "m3"))
    collinear = parse_config(
        {
            **counts_config(tmp_path).to_json(),
            "space": "structured",
            "policies": [
                {"name": "a", "features": [1, 2]},
                {"name": "b", "features": [2, 4]},
                {"name": "c", "features": [3, 6]},
            ],
        },
        "test",
    )
    with pytest.raises(ConfigError, match="not identifiable"):
        build_space(collinear, ("a", "b", "c"))


def test_stop_during_the_replay_of_a_resume_keeps_the_store(tmp_path):
    config = synthetic_config(tmp_path)
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        run_stopping_at(store, experiment_id, 200)
        runner = Runner(store, experiment_id, lambda progress: runner.request_stop(), 0)
        outcome = runner.run()  # asked to stop while replaying the stored comparisons
        assert outcome.status == "interrupted" and outcome.new_comparisons == 0
        assert store.comparison_count(experiment_id) == 200
        assert Runner(store, experiment_id).run().status == "certified"


def test_a_store_from_before_tie_aware_statistics_resumes_counting_ties_half(tmp_path):
    config = synthetic_config(tmp_path, max_comparisons=30)
    legacy = config.to_json()
    del legacy["ties"]  # what configurations stored before the option look like
    with Store(config.store, writer=True) as store:
        old_id = store.create_experiment(legacy, ["m0", "m1", "m2", "m3"])
        new_id = start_experiment(config, store)
        assert store.experiment(new_id).config["ties"] == "decisive"  # recorded explicitly
        old, new = Runner(store, old_id), Runner(store, new_id)
        assert old.legacy_ties and old.experiment.ties == "half"
        assert not new.legacy_ties and new.experiment.ties == "decisive"
        assert old.run().result.ties == "half"
        # Unset in the configuration: either statistic resumes (the latest experiment).
        assert find_experiment(config, store).id == new_id
        assert find_experiment(config.model_copy(update={"ties": "half"}), store).id == old_id


def test_a_replay_of_preference_probabilities_is_accepted_and_a_bad_outcome_refused(tmp_path):
    # Schema v5 stores outcomes in [0, 1]: preference probabilities run (tests/
    # test_store_fractional.py runs one end to end); outcomes outside [0, 1] are still refused
    # before the store is touched, naming the line.
    path = tmp_path / "j.jsonl"
    records = [
        {"policy_a": "a", "policy_b": "b", "outcome": 1},
        {"policy_a": "b", "policy_b": "c", "outcome": 0.73},
        {"policy_a": "a", "policy_b": "c", "outcome": 0.5},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = parse_config(
        {"environment": {"type": "replay", "path": str(path)}, "store": str(tmp_path / "r.db")},
        "test",
    )
    assert check_config(config).policies == ("a", "b", "c")
    records[1]["outcome"] = 1.5
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ConfigError, match=r"line 2.*'outcome' must be a number in \[0, 1\]"):
        check_config(config)
    assert not (tmp_path / "r.db").exists()


def test_resume_reads_the_store_as_a_stream_and_holds_no_list_of_it(tmp_path, monkeypatch):
    """The runner's resume (and its end: the judge's warning) reads stored comparisons and
    events in chunks, never as lists, and never holds more than a couple of records at once."""
    from llmpo.store import experiments

    config = counts_config(tmp_path)
    with Store(config.store, writer=True) as store:
        reference = Runner(store, start_experiment(config, store)).run()
        experiment_id = start_experiment(config, store)
        run_stopping_at(store, experiment_id, 150)

        monkeypatch.setattr(experiments, "READ_CHUNK", 16)
        alive = {"now": 0, "most": 0}

        def freed() -> None:
            alive["now"] -= 1

        read = Store.iter_comparisons

        def tracked(self, owner_id):
            for record in read(self, owner_id):
                alive["now"] += 1
                alive["most"] = max(alive["most"], alive["now"])
                weakref.finalize(record, freed)
                yield record

        def as_list(self, owner_id):
            raise AssertionError("read as a list")

        monkeypatch.setattr(Store, "iter_comparisons", tracked)
        monkeypatch.setattr(Store, "comparisons", as_list)
        monkeypatch.setattr(Store, "events", as_list)
        resumed = Runner(store, experiment_id).run()
    assert resumed.replayed == 150 and resumed.result.to_dict() == reference.result.to_dict()
    assert alive["most"] <= 2, f"{alive['most']} stored comparisons alive at once"
