"""Hostile or broken inputs end in a message naming the file (exit 2), never a traceback."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import ConfigError, load_config
from llmpo.limits import MAX_NAME_LENGTH
from llmpo.llm.tasks import TaskError, load_tasks
from llmpo.store import Store, StoreError

runner = CliRunner()

GOOD = {"policies": ["a", "b"], "win_prob": [[0.5, 0.7], [0.3, 0.5]]}


def refused(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"policies": ["a", "b"], "win_prob": ' + "[" * 100_000 + "]" * 100_000 + "}", "deeply"),
        ('{"policies": ["a", "b"], "win_prob": [[0.5, ' + "1" * 5000 + "], [0, 0.5]]}", "digits"),
        ('{"policies": ["a", "b"], "win_prob": [[0.5, NaN], [0.5, 0.5]]}', "NaN"),
    ],
    ids=["deep", "5000-digits", "nan"],
)
def test_hostile_instance_files_get_a_message(tmp_path, text, needle):
    path = tmp_path / "instance.json"
    path.write_text(text)
    refused(["bound", str(path)], str(path), needle)


def test_non_utf8_instance_names_the_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(GOOD).replace('"a"', '"\u00e9"').encode("latin-1"))
    refused(["bound", str(path)], str(path), "UTF-8")


def test_a_device_as_instance_or_task_file_is_read_with_a_bound():
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    refused(["bound", "/dev/zero"], "/dev/zero", "too large")
    with pytest.raises(TaskError, match="/dev/zero, line 1: longer than"):
        load_tasks("/dev/zero")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_non_utf8_task_files_name_the_file(tmp_path, suffix):
    path = tmp_path / f"tasks{suffix}"
    jsonl, csv = '{"id": "t1", "prompt": "caf\u00e9"}\n', "id,prompt\nt1,caf\u00e9\n"
    content = jsonl if suffix == ".jsonl" else csv
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(TaskError, match=f"{path}.*not UTF-8"):
        load_tasks(path)


def test_a_nan_reference_is_refused(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "t1", "prompt": "1 + 1?", "reference": NaN}\n')
    with pytest.raises(TaskError, match=r"tasks.jsonl, line 1: NaN is not a number"):
        load_tasks(path)


def test_a_5000_digit_seed_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"space: unstructured\nseed: {'9' * 5000}\n")
    refused(["run", str(path)], str(path), "digits")


def synthetic(tmp_path: Path, store: str = "runs.db", policies: list[str] | None = None) -> Path:
    instance = dict(GOOD, policies=policies or ["a", "b"])
    (tmp_path / "i.json").write_text(json.dumps(instance))
    path = tmp_path / "c.yaml"
    path.write_text(
        "space: unstructured\ndelta: 0.1\nseed: 1\n"
        f"environment: {{type: synthetic, instance: i.json}}\nstore: {store}\n"
    )
    return path


def test_a_device_as_store_is_refused(tmp_path):
    refused(["run", str(synthetic(tmp_path, "/dev/null"))], "/dev/null", "not a store file")
    with pytest.raises(StoreError, match="device"):
        Store("/dev/null", readonly=True)


@pytest.mark.parametrize(
    "name",
    ["nul\x00name", "two\nlines", "right\u202eto-left", "x" * (MAX_NAME_LENGTH + 1), "   "],
    ids=["NUL", "newline", "bidi", "long", "blank"],
)
def test_dangerous_policy_names_are_refused(tmp_path, name):
    refused(["run", str(synthetic(tmp_path, policies=[name, "b"]))], "rename the policy")
    config = tmp_path / "named.yaml"
    config.write_text(synthetic(tmp_path).read_text() + f"policies: [{json.dumps(name)}, b]\n")
    with pytest.raises(ConfigError, match="rename the policy"):
        load_config(config)
    assert load_config(synthetic(tmp_path, policies=["é ok-name (v2)", "b"])) is not None
