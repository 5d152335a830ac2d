"""Live configuration: policies, factors, tasks (JSONL and CSV, template fields), clear errors."""

import json

import pytest
import yaml

from llmpo.config import ConfigError, parse_config
from llmpo.llm.environment import LLMEnvironment, LLMSetupError
from llmpo.llm.tasks import TaskError, draw_task, load_tasks
from llmpo.runtime.setup import build_space

BACKEND = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m1"}


def live_config(tmp_path, **fields):
    data = {
        "seed": 1,
        "environment": {"type": "llm", "tasks": "tasks.jsonl", "judge": {"type": "reference"}},
        "policies": [{"name": "a", "backend": BACKEND}, {"name": "b", "backend": BACKEND}],
        **fields,
    }
    return parse_config(data, "live.yaml", tmp_path)


def test_factors_expand_into_policies_with_levels_and_structured_features(tmp_path):
    policies = {
        "base": {"backend": BACKEND, "max_tokens": 16},
        "factors": {
            "system_prompt": {"terse": "Number only.", "plain": None},
            "temperature": [0.2, 1.0],
        },
    }
    config = live_config(tmp_path, policies=policies, space="structured")
    assert config.policy_names == ["terse/0.2", "terse/1.0", "plain/0.2", "plain/1.0"]
    first = config.policies[0]
    assert first.system_prompt == "Number only." and first.temperature == 0.2
    assert first.max_tokens == 16 and first.levels == {
        "system_prompt": "terse",
        "temperature": "0.2",
    }
    space = build_space(config, tuple(config.policy_names))
    assert space.features.shape == (4, 2)


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ({"factors": {"colour": [1, 2]}}, "'colour' is not a policy field"),
        ({"factors": {"temperature": [0.2, 0.2]}}, "needs distinct levels"),
        ({"base": {}, "levels": {}}, "needs exactly 'factors'"),
    ],
)
def test_bad_factors_are_named_with_a_fix(tmp_path, policies, message):
    with pytest.raises(ConfigError, match=message):
        live_config(tmp_path, policies=policies)


def test_live_policies_need_a_backend(tmp_path):
    with pytest.raises(ConfigError, match=r"policy 'b' has no backend.*Fix: give it backend"):
        live_config(tmp_path, policies=[{"name": "a", "backend": BACKEND}, "b"])
    with pytest.raises(ConfigError, match=r"judge.match.*Fix: use one of the allowed values"):
        live_config(
            tmp_path,
            environment={
                "type": "llm",
                "tasks": "t.jsonl",
                "judge": {"type": "reference", "match": "fuzzy"},
            },
        )


@pytest.mark.parametrize("value", [-1, 65, "many", True, 1.5])
def test_a_bad_client_processes_is_named_with_a_fix(tmp_path, value):
    environment = {"type": "llm", "tasks": "t.jsonl", "judge": {"type": "reference"}}
    with pytest.raises(
        ConfigError,
        match=r"field 'environment.client_processes': must be auto or a whole number from 0 to "
        r"64.*Fix: write client_processes: auto",
    ):
        live_config(tmp_path, environment={**environment, "client_processes": value})


@pytest.mark.parametrize(
    ("setting", "concurrency", "processes"),
    [
        ("auto", 1, 0),
        ("auto", 15, 0),
        ("auto", 16, 1),
        ("auto", 64, 1),
        (0, 64, 0),
        ("0", 64, 0),
        (3, 1, 3),
    ],
)
def test_client_processes_auto_uses_a_worker_from_16_comparisons_in_flight(
    tmp_path, monkeypatch, setting, concurrency, processes
):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    (tmp_path / "t.jsonl").write_text(json.dumps({"id": "1", "prompt": "?", "reference": "1"}))
    environment = {"type": "llm", "tasks": "t.jsonl", "judge": {"type": "reference"}}
    config = live_config(tmp_path, environment={**environment, "client_processes": setting})
    live = LLMEnvironment(config, concurrency=concurrency)
    assert live.client_processes() == processes


def test_tasks_from_csv_with_template_fields(tmp_path):
    (tmp_path / "tasks.csv").write_text("id,city,reference\nq1,Paris,France\nq2,Rome,Italy\n")
    tasks = load_tasks(tmp_path / "tasks.csv")
    assert [t.id for t in tasks] == ["q1", "q2"] and tasks[1].reference == "Italy"
    policies = [
        {"name": "a", "backend": BACKEND, "prompt_template": "Which country is {{ city }} in?"},
        {
            "name": "b",
            "backend": BACKEND,
            "system_prompt": "Be brief.",
            "prompt_template": "{{ city }}?",
        },
    ]
    environment = {"type": "llm", "tasks": "tasks.csv", "judge": {"type": "reference"}}
    config = live_config(tmp_path, policies=policies, environment=environment)
    live = LLMEnvironment(config)
    request = live.live_policies[0].request(tasks[0], replicate=0)
    assert request.messages == (("user", "Which country is Paris in?"),)
    assert live.live_policies[1].request(tasks[1], 0).messages[0] == ("system", "Be brief.")


def test_a_template_field_missing_from_a_task_is_reported(tmp_path):
    (tmp_path / "tasks.jsonl").write_text(json.dumps({"id": "x", "prompt": "?", "reference": "1"}))
    policies = [
        {"name": "a", "backend": BACKEND, "prompt_template": "{{ city }}"},
        {"name": "b", "backend": BACKEND},
    ]
    live = LLMEnvironment(live_config(tmp_path, policies=policies))
    with pytest.raises(LLMSetupError, match=r"task 'x' lacks.*city"):
        live.live_policies[0].request(live.tasks[0], 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no task"),
        ('{"prompt": "?"}\n', "has no 'id'"),
        ('{"id": 1}\n{"id": 1}\n', "repeats"),
        ("not json\n", "line 1: not valid JSON"),
    ],
)
def test_bad_task_files(tmp_path, content, message):
    (tmp_path / "tasks.jsonl").write_text(content)
    with pytest.raises(TaskError, match=message):
        load_tasks(tmp_path / "tasks.jsonl")


def test_tasks_are_drawn_uniformly_from_seed_and_number(tmp_path):
    (tmp_path / "tasks.jsonl").write_text(
        "".join(json.dumps({"id": f"t{k}"}) + "\n" for k in range(4))
    )
    tasks = load_tasks(tmp_path / "tasks.jsonl")
    draws = [draw_task(tasks, 5, n).id for n in range(4000)]
    assert draws[:50] == [draw_task(tasks, 5, n).id for n in range(50)]
    assert all(900 < draws.count(f"t{k}") < 1100 for k in range(4))


@pytest.mark.parametrize("name", ["openai.yaml", "local.yaml"])
def test_live_examples_are_valid_configurations(name):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / name
    data = yaml.safe_load(example.read_text())
    config = parse_config(data, str(example), example.parent)
    assert config.environment.type == "llm" and len(config.policy_names) >= 4
    assert load_tasks(config.environment.tasks)
