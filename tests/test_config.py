"""Experiment configuration: defaults, precedence, resolution of paths, and errors that name the
file, the field and the fix."""

from pathlib import Path

import pytest

from llmpo.config import ConfigError, ReplayEnvironmentConfig, load_config, parse_config
from tests.conftest import SMALLEST


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def test_smallest_config_gets_defaults_and_paths_relative_to_the_file(tmp_path):
    config = load_config(write(tmp_path, SMALLEST))
    assert config.delta == 0.05 and config.seed == 3 and config.space == "unstructured"
    assert config.policies is None and config.policy_names is None
    assert config.batch_size == 1 and config.max_comparisons is None and config.epsilon == 0
    assert isinstance(config.environment, ReplayEnvironmentConfig)
    assert config.environment.path == (tmp_path / "judgments.jsonl").resolve()
    assert config.store == (tmp_path / "runs.db").resolve()


def test_command_line_overrides_the_file_which_overrides_defaults(tmp_path):
    path = write(tmp_path, SMALLEST + "batch_size: 4\n")
    config = load_config(path, {"delta": 0.01, "seed": None, "environment.dense_subset": True})
    assert config.delta == 0.01  # flag beats file
    assert config.seed == 3  # no flag: file
    assert config.batch_size == 4  # file beats default
    assert config.environment.dense_subset is True  # nested flag
    assert config.epsilon == 0.0  # default


def test_resolved_config_round_trips_through_json(tmp_path):
    config = load_config(write(tmp_path, SMALLEST))
    again = parse_config(config.to_json(), "stored")
    assert again == config


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [
        (SMALLEST.replace("delta: 0.05", "delta: 0.7"), "'delta'", "smaller"),
        (SMALLEST.replace("delta: 0.05", "delta: -1"), "'delta'", "larger"),
        (SMALLEST.replace("delta: 0.05", "delat: 0.05"), "'delat'", "did you mean 'delta'"),
        (SMALLEST + "colour: blue\n", "'colour'", "known fields: name, policies"),
        (
            SMALLEST.replace("  path:", "  dense_subst: true\n  path:"),
            "'environment.dense_subst'",
            "did you mean 'dense_subset'",
        ),
        (SMALLEST.replace("seed: 3", "seed: three"), "'seed'", "whole number"),
        (
            SMALLEST.replace("type: replay", "type: live"),
            "'environment'",
            "'synthetic', 'replay', 'llm'",
        ),
        (SMALLEST.replace("  path: judgments.jsonl\n", ""), "'environment.path'", "add path"),
        (SMALLEST.replace("space: unstructured", "space: tree"), "'space'", "allowed values"),
        ("delta: 0.05\n", "'environment'", "add this field"),
        (SMALLEST + "policies: [a]\n", "'policies'", "at least 2"),
        (SMALLEST + "policies: [a, a, b]\n", "'policies'", "each policy once"),
        (SMALLEST + "batch_size: 0\n", "'batch_size'", "larger"),
        (
            SMALLEST.replace("unstructured", "structured") + "policies: [a, b]\n",
            "'policies'",
            "features",
        ),
    ],
)
def test_bad_fields_name_file_field_and_fix(tmp_path, text, field, fix):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and f"field {field}" in message and fix in message
    assert "Traceback" not in message


LLM_POLICIES = """\
environment: {type: llm, tasks: t.jsonl, judge: {type: reference}}
policies:
  - {name: a, backend: {type: openai, model: m}, temprature: 0.5}
  - {name: b, backend: {type: openai, model: m}}
"""


def test_a_misspelt_key_inside_a_policy_comes_first_and_alone(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, LLM_POLICIES))
    lines = str(error.value).splitlines()
    assert "field 'policies.0.temprature'" in lines[0]
    assert "did you mean 'temperature'" in lines[0]
    assert not any("valid string" in line for line in lines), lines


def test_a_misspelt_key_is_reported_before_the_field_it_leaves_missing(tmp_path):
    text = "environment: {type: synthetic, instanc: x.json}\n"
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    lines = str(error.value).splitlines()
    assert "'environment.instanc'" in lines[0] and "did you mean 'instance'" in lines[0]
    assert "'environment.instance'" in lines[1] and "add this field" in lines[1]


@pytest.mark.parametrize(
    ("environment", "key", "owner", "tag"),
    [
        ("{type: synthetic, path: x.json}", "path", "replay", "synthetic"),
        ("{type: synthetic, instance: x.json, format: counts}", "format", "replay", "synthetic"),
        ("{type: replay, path: x.json, tasks: t.jsonl}", "tasks", "llm", "replay"),
    ],
)
def test_a_key_of_another_type_is_never_corrected_to_itself(tmp_path, environment, key, owner, tag):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, f"environment: {environment}\n"))
    message = str(error.value)
    assert f"did you mean '{key}'" not in message
    assert f"'{key}' belongs to type {owner}, not {tag}" in message


def test_duplicate_names_of_different_policies_ask_to_rename_one(tmp_path):
    text = LLM_POLICIES.replace("temprature: 0.5", "temperature: 0.5").replace("name: b", "name: a")
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    message = str(error.value)
    assert "different policies share the names ['a']" in message and "rename one" in message
    assert "list each policy once" not in message


def test_yaml_syntax_error_gives_line(tmp_path):
    path = write(tmp_path, "delta: 0.05\nenvironment: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_structured_policies_with_feature_vectors_or_levels(tmp_path):
    structured = SMALLEST.replace("unstructured", "structured")
    config = load_config(
        write(
            tmp_path,
            structured + "policies:\n  - {name: a, features: [1, 0]}\n"
            "  - {name: b, features: [0, 1.5]}\n",
        )
    )
    assert config.policy_names == ["a", "b"] and config.policies[1].features == [0, 1.5]
    config = load_config(
        write(
            tmp_path,
            structured + "features: [t, p]\npolicies:\n"
            "  - {name: a, levels: {p: x, t: 1}}\n  - {name: b, levels: {p: y, t: 1}}\n",
        )
    )
    assert config.factors == ["t", "p"]


def test_structured_space_may_take_features_from_a_synthetic_instance(tmp_path):
    text = "space: structured\nenvironment: {type: synthetic, instance: feat.json}\n"
    assert load_config(write(tmp_path, text)).policies is None
    with pytest.raises(ConfigError, match="needs every policy as a mapping"):
        load_config(write(tmp_path, SMALLEST.replace("unstructured", "structured")))


@pytest.mark.parametrize(
    ("policies", "problem"),
    [
        ("  - {name: a, features: [1, 0]}\n  - {name: b, features: [1]}\n", "same length"),
        ("  - {name: a, features: [1]}\n  - {name: b, levels: {t: x}}\n", "one kind for all"),
        ("  - {name: a, levels: {t: x}}\n  - {name: b, levels: {u: y}}\n", "missing factors"),
    ],
)
def test_inconsistent_structured_policies(tmp_path, policies, problem):
    text = SMALLEST.replace("unstructured", "structured") + "policies:\n" + policies
    with pytest.raises(ConfigError, match=problem):
        load_config(write(tmp_path, text))


def test_error_in_an_overridden_value_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"\(overridden by --delta\): field 'delta'"):
        load_config(write(tmp_path, SMALLEST), {"delta": 0.9})
    with pytest.raises(ConfigError, match=r"\(overridden by --max-comparisons\)"):
        load_config(write(tmp_path, SMALLEST), {"max_comparisons": 0})
