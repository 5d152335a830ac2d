"""Task rows in Inspect's and OpenAI evals' conventions map to prompt, reference and id; a
policy may give its prompt as a chat message list with Jinja2 fields."""

import asyncio
import json

import numpy as np
import pytest

from llmpo.config import BackendConfig, ConfigError, PolicyConfig, parse_config
from llmpo.llm.environment import LivePolicy, LLMEnvironment
from llmpo.llm.judges import ReferenceJudge
from llmpo.llm.tasks import TaskError, load_tasks

OPENAI_EVALS_ROW = {
    "input": [
        {"role": "system", "content": "Answer with a city."},
        {"role": "user", "content": "Capital of Spain?"},
        {"role": "assistant", "content": "Madrid"},
        {"role": "user", "content": "Capital of France?"},
    ],
    "ideal": ["Paris", "Lutetia"],
}


def write(tmp_path, rows):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_inspect_rows_map_input_target_and_are_numbered_without_id(tmp_path):
    tasks = load_tasks(
        write(
            tmp_path,
            [
                {"input": "What is 2 + 2?", "target": "4"},
                {"id": "named", "input": "What is 3 + 3?", "target": ["6", "six"]},
            ],
        )
    )
    assert [t.id for t in tasks] == ["1", "named"]
    assert [t.fields["prompt"] for t in tasks] == ["What is 2 + 2?", "What is 3 + 3?"]
    assert [t.references for t in tasks] == [("4",), ("6", "six")]
    assert tasks[1].reference == "6" and tasks[0].context == ()


def test_openai_evals_messages_become_the_prompt_and_the_turns_before_it(tmp_path):
    (task,) = load_tasks(write(tmp_path, [OPENAI_EVALS_ROW]))
    assert task.id == "1" and task.fields["prompt"] == "Capital of France?"
    assert task.references == ("Paris", "Lutetia")
    policy = PolicyConfig(
        name="p",
        backend=BackendConfig(type="openai", model="m"),
        system_prompt="Be brief.",
    )
    request = LivePolicy.from_config(policy).request(task, 0)
    assert request.messages == (
        ("system", "Be brief."),
        ("system", "Answer with a city."),
        ("user", "Capital of Spain?"),
        ("assistant", "Madrid"),
        ("user", "Capital of France?"),
    )


def test_fields_a_row_has_are_never_replaced(tmp_path):
    (task,) = load_tasks(
        write(tmp_path, [{"id": "a", "prompt": "P", "input": "I", "reference": "R", "target": "T"}])
    )
    assert task.fields["prompt"] == "P" and task.references == ("R",)


def test_the_reference_judge_accepts_any_listed_reference(tmp_path):
    (task,) = load_tasks(write(tmp_path, [OPENAI_EVALS_ROW]))
    judge = ReferenceJudge("contains")
    rng = np.random.default_rng(0)
    assert asyncio.run(judge.judge(task, "It was Lutetia.", "Rome", rng)).outcome == 1.0
    assert asyncio.run(judge.judge(task, "Paris", "Lutetia", rng)).outcome == 0.5
    assert asyncio.run(judge.judge(task, "Rome", "Paris", rng)).outcome == 0.0


@pytest.mark.parametrize(
    "given",
    [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "robot", "content": "Hi"}],
        ["Hi"],
        [],
    ],
)
def test_a_malformed_message_list_names_the_file_and_row(tmp_path, given):
    path = write(tmp_path, [{"input": "fine"}, {"input": given}])
    with pytest.raises(TaskError, match=r"tasks\.jsonl: task #2: 'input' must be a string or"):
        load_tasks(path)


BACKEND = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m1"}
FEW_SHOT = [
    {"role": "system", "content": "You name capitals."},
    {"role": "user", "content": "Capital of Italy?"},
    {"role": "assistant", "content": "Rome"},
    {"role": "user", "content": "{{ prompt }}"},
]


def live_config(tmp_path, policies):
    data = {
        "seed": 1,
        "environment": {"type": "llm", "tasks": "tasks.jsonl", "judge": {"type": "reference"}},
        "policies": policies,
    }
    return parse_config(data, "live.yaml", tmp_path)


def test_a_policy_gives_its_prompt_as_chat_messages_with_jinja_fields(tmp_path):
    write(tmp_path, [OPENAI_EVALS_ROW, {"id": "q", "prompt": "Capital of Peru?", "target": "Lima"}])
    policies = {
        "base": {"backend": BACKEND},
        "factors": {
            "messages": {"few-shot": FEW_SHOT, "zero-shot": [FEW_SHOT[-1]]},
            "temperature": [0.0, 0.7],
        },
    }
    live = LLMEnvironment(live_config(tmp_path, policies))
    by_name = {p.name: p for p in live.live_policies}
    assert set(by_name) == {"few-shot/0.0", "few-shot/0.7", "zero-shot/0.0", "zero-shot/0.7"}
    plain, chat = live.tasks[1], live.tasks[0]
    assert by_name["few-shot/0.0"].request(plain, 0).messages == (
        ("system", "You name capitals."),
        ("user", "Capital of Italy?"),
        ("assistant", "Rome"),
        ("user", "Capital of Peru?"),
    )
    # A task's own turns come right before the policy's last message.
    assert by_name["zero-shot/0.7"].request(chat, 0).messages == (
        *((m["role"], m["content"]) for m in OPENAI_EVALS_ROW["input"][:-1]),
        ("user", "Capital of France?"),
    )


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ({"prompt_template": "{{ prompt }}", "messages": FEW_SHOT}, "with prompt_template"),
        ({"messages": FEW_SHOT[:3]}, "must end with a user message"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
    ],
)
def test_a_policy_with_malformed_messages_is_refused_with_the_fix(tmp_path, policy, problem):
    policies = [{"name": "a", "backend": BACKEND, **policy}, {"name": "b", "backend": BACKEND}]
    with pytest.raises(ConfigError, match=problem):
        live_config(tmp_path, policies)
