import json

import pytest

from llmpo.harness.instances import InstanceError, load_instance, make_unstructured_instance


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"win_prob": [[0.5, 0.6, 0.7], [0.4, 0.5, 0.6]]}, "must be square"),
        ({"win_prob": [[0.5, 0.7], [0.4, 0.5]]}, r"win_prob\[0\]\[1\] \+ win_prob\[1\]\[0\] = 1.1"),
        ({"win_prob": [[0.5, 1.2], [-0.2, 0.5]]}, r"win_prob\[0\]\[1\] = 1.2 is outside \[0, 1\]"),
        ({"win_prob": [[0.5]]}, "at least 2 policies"),
        ({"policies": ["a", "a"], "win_prob": [[0.5, 0.6], [0.4, 0.5]]}, "duplicate names"),
        (
            {"policies": ["a", "b", "c"], "win_prob": [[0.5, 0.6], [0.4, 0.5]]},
            "there are 3 policies",
        ),
        (
            {"win_prob": [[0.5, 0.6, 0.3], [0.4, 0.5, 0.6], [0.7, 0.4, 0.5]]},
            "no Condorcet winner",
        ),
        ({"win_prob": [[0.6, 0.6], [0.4, 0.5]]}, "diagonal must be 0.5"),
        ({"win_prob": [[0.5, "x"], [0.4, 0.5]]}, "K×K matrix of numbers"),
        (
            {"win_prob": [[0.5, 0.9], [0.1, 0.5]], "tie_prob": [[0, 0.5], [0.5, 0]]},
            r"tie_prob\[0\]\[1\] = 0.5",
        ),
        ({"policies": ["a", "b"]}, "expected an object with 'policies' and 'win_prob'"),
    ],
)
def test_malformed_instances_are_refused_with_one_clear_message(tmp_path, data, message):
    path = tmp_path / "instance.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InstanceError, match=message) as raised:
        load_instance(path)
    assert str(path) in str(raised.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InstanceError, match="cannot read"):
        load_instance(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InstanceError, match="not valid JSON"):
        load_instance(bad)


def test_round_trip_and_tolerance(tmp_path):
    instance = make_unstructured_instance(
        [[0.5, 0.6 + 5e-10], [0.4, 0.5]], policies=["x", "y"], tie_prob=[[0, 0.3], [0.3, 0]]
    )
    path = tmp_path / "i.json"
    path.write_text(json.dumps(instance.to_json()))
    again = load_instance(path)
    assert again.policies == ("x", "y") and again.best == 0
    assert again.tie_prob[0, 1] == 0.3
