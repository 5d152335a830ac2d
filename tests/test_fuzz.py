"""Property-based fuzzing of every file a user hands llmpo: instances, configurations, judgments,
task files. Whatever the content, loading ends in a value or in the loader's own error (which the
CLI prints with exit 2, naming the file) — never another exception, a hang or unbounded memory.

Bounded examples by default; ``-m slow`` runs many more (the ``_slow`` twins).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import ConfigError, load_config
from llmpo.environments.replay import ReplayEnvironment, ReplayError, read_judgments
from llmpo.harness.instances import InstanceError, load_instance
from llmpo.llm.tasks import TaskError, load_tasks

runner = CliRunner()

FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
SLOW = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values JSON and YAML can hold, with the awkward ones over-represented: huge and non-finite
# numbers, control and bidi characters, deep nesting.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 0.0, 1.0, -1.0, 0.7, 1e308, 5e-324]),
    st.text(max_size=20),
    st.sampled_from(["a", "b", "\x00", "\u202e", "x" * 300, "sk-" + "a" * 40, "=1+1", "<b>"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def matrix(size: int) -> st.SearchStrategy[Any]:
    return st.lists(
        st.lists(st.one_of(st.floats(0, 1), scalars), min_size=size, max_size=size),
        min_size=size,
        max_size=size,
    )


instances = st.one_of(
    values,
    st.fixed_dictionaries(
        {"policies": st.lists(scalars, max_size=4), "win_prob": matrix(3)},
        optional={"tie_prob": matrix(3)},
    ),
    st.fixed_dictionaries(
        {
            "policies": st.lists(scalars, max_size=4),
            "features": st.lists(st.lists(scalars, max_size=3), max_size=4),
            "theta": st.lists(scalars, max_size=3),
        }
    ),
)

config_keys = st.sampled_from(
    [
        "space",
        "delta",
        "seed",
        "environment",
        "policies",
        "store",
        "strategy",
        "threshold",
        "epsilon",
        "batch_size",
        "max_comparisons",
        "type",
        "instance",
        "path",
        "tasks",
        "judge",
        "backend",
        "api_key",
        "api_key_env",
        "name",
        "holdout",
        "baseline",
        "timeout_seconds",
    ]
)
configs = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(config_keys, inner, max_size=6)
    ),
    max_leaves=25,
)

raw_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda text: text.encode("utf-8")),
    st.sampled_from(
        [
            b"[" * 50_000,
            b"{" * 50_000,
            b'{"a": ' + b"9" * 6000 + b"}",
            b"a: &a [1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n",
            b"\xff\xfe\x00",
            b"NaN",
        ]
    ),
)


def _file(content: bytes, suffix: str) -> Path:
    with tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False) as handle:
        handle.write(content)
    return Path(handle.name)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8")


def _yaml_bytes(value: Any) -> bytes:
    try:
        return yaml.safe_dump(value, allow_unicode=True).encode("utf-8")
    except yaml.YAMLError:
        return b"{"


def check_instance(content: bytes) -> None:
    path = _file(content, ".json")
    try:
        load_instance(path, require_winner=False)
    except InstanceError as error:
        assert str(path) in str(error)
    finally:
        path.unlink()


def check_config(content: bytes) -> None:
    path = _file(content, ".yaml")
    try:
        load_config(path)
    except ConfigError as error:
        assert str(path) in str(error) or "field" in str(error)
    finally:
        path.unlink()


def check_judgments(content: bytes) -> None:
    path = _file(content, ".jsonl")
    try:
        ReplayEnvironment.from_judgments(read_judgments(path), seed=0)
    except (ReplayError, ValueError) as error:
        assert type(error) is not ValueError or str(error).startswith("policies:"), error
    finally:
        path.unlink()


def check_tasks(content: bytes, suffix: str) -> None:
    path = _file(content, suffix)
    try:
        load_tasks(path)
    except TaskError as error:
        assert str(path) in str(error)
    finally:
        path.unlink()


def judgment_lines(records: list[Any]) -> bytes:
    return b"".join(_json_bytes(record) + b"\n" for record in records)


judgments = st.lists(
    st.one_of(
        values,
        st.fixed_dictionaries(
            {"model_a": scalars, "model_b": scalars, "winner": scalars},
            optional={"task_id": scalars, "judge": scalars, "order": scalars},
        ),
    ),
    max_size=6,
)


@FAST
@given(st.one_of(instances.map(_json_bytes), raw_bytes))
def test_instance_files(content):
    check_instance(content)


@FAST
@given(st.one_of(configs.map(_yaml_bytes), raw_bytes))
def test_config_files(content):
    check_config(content)


@FAST
@given(st.one_of(judgments.map(judgment_lines), raw_bytes))
def test_judgment_files(content):
    check_judgments(content)


@FAST
@given(st.one_of(judgments.map(judgment_lines), raw_bytes), st.sampled_from([".jsonl", ".csv"]))
def test_task_files(content, suffix):
    check_tasks(content, suffix)


@FAST
@given(st.one_of(instances.map(_json_bytes), raw_bytes))
def test_the_cli_exits_2_with_a_message_never_a_traceback(content):
    path = _file(content, ".json")
    try:
        result = runner.invoke(app, ["bound", str(path), "--json"])
    finally:
        path.unlink()
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 2:
        assert str(path) in result.output


@pytest.mark.slow
@SLOW
@given(
    st.one_of(instances.map(_json_bytes), raw_bytes),
    st.one_of(configs.map(_yaml_bytes), raw_bytes),
    st.one_of(judgments.map(judgment_lines), raw_bytes),
)
def test_every_loader_slow(instance, config, judgment):
    check_instance(instance)
    check_config(config)
    check_judgments(judgment)
    check_tasks(judgment, ".jsonl")
