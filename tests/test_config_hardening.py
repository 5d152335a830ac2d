"""Configurations written carelessly or with malice: a key in the file is never printed, YAML alias
bombs and duplicate keys are refused with a message naming the file and line."""

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import ConfigError, load_config
from tests.llm.conftest import SECRET, SMALLEST_LIVE

runner = CliRunner()


def live_config(tmp_path: Path, backend_extra: str = "", key_env: str = "MY_KEY") -> Path:
    (tmp_path / "tasks.jsonl").write_text('{"id": "t1", "prompt": "1 + 1?", "reference": "2"}\n')
    text = SMALLEST_LIVE.replace("BASE_URL", "http://127.0.0.1:9/v1")
    text = text.replace("api_key_env: MY_KEY}", f"api_key_env: {key_env}{backend_extra}}}")
    path = tmp_path / "live.yaml"
    path.write_text(text)
    return path


def assert_refused_without_the_key(path: Path, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert SECRET[3:] not in message and SECRET[10:20] not in message
    assert "looks like a key" in message and "environment variable" in message
    assert f"'{field}'" in message and str(path) in message
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert SECRET[10:20] not in result.output and "looks like a key" in result.output


def test_a_key_written_as_api_key_env_is_never_printed(tmp_path):
    assert_refused_without_the_key(
        live_config(tmp_path, key_env=SECRET), "policies.0.backend.api_key_env"
    )


def test_a_key_of_an_unknown_shape_as_api_key_env_is_never_printed(tmp_path):
    key = "a8F3kd9QzP0x7Lm2Vb6Nc1Rt5Yw4Ue8Io3Pa9Sd"
    path = live_config(tmp_path, key_env=key)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert key[5:25] not in str(error.value) and "looks like a key" in str(error.value)


def test_an_api_key_field_is_never_printed(tmp_path):
    path = live_config(tmp_path, backend_extra=f", api_key: {SECRET}")
    assert_refused_without_the_key(path, "policies.0.backend.api_key")
    # Even when its value has no key shape, a field named like a secret is not echoed.
    path = live_config(tmp_path, backend_extra=", api_key: hunter2hunter2")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "hunter2" not in str(error.value) and "looks like a key" in str(error.value)


def test_a_bad_variable_name_that_is_no_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"must name an environment variable.*'MY KEY'"):
        load_config(live_config(tmp_path, key_env="'MY KEY'"))
    assert load_config(live_config(tmp_path)).policies is not None  # a real name passes


BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
delta: *i
"""


def test_a_yaml_alias_bomb_is_refused_at_once_without_printing_it(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    started = time.monotonic()
    result = runner.invoke(app, ["run", str(path)])
    assert time.monotonic() - started < 5.0
    assert result.exit_code == 2 and "aliases" in result.output and str(path) in result.output
    assert "lol" not in result.output and len(result.output) < 1000


def test_a_few_aliases_are_fine_and_a_recursive_one_is_refused(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("seed: &s 3\nmax_comparisons: *s\n" + "x: &x [*x]\n")
    with pytest.raises(ConfigError, match="contains it"):
        load_config(path)
    from llmpo.yamlsafe import load_yaml

    assert load_yaml("a: &a [1, 2]\nb: *a\n", "t.yaml") == {"a": [1, 2], "b": [1, 2]}


def test_a_duplicate_key_names_the_key_and_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("space: unstructured\ndelta: 0.1\nseed: 1\ndelta: 0.05\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: line 4: the key 'delta' is given twice"):
        load_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("environment:\n  type: replay\n  type: synthetic\n")
    with pytest.raises(ConfigError, match=r"line 3: the key 'type'"):
        load_config(nested)


def test_deep_nesting_and_huge_files_are_refused_with_a_message(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = runner.invoke(app, ["run", str(deep)])
    assert result.exit_code == 2 and "deep" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_unprintable_characters_are_a_message_not_a_traceback(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"space: unstructured\x00\n")
    refused = runner.invoke(app, ["run", str(path)])
    assert (
        refused.exit_code == 2
        and "not valid YAML" in refused.output
        and str(path) in refused.output
    )
