"""Inspect logs replay through ``llmpo run``; llmpo's selection runs as an Inspect task.

The logs are written here by the real inspect-ai package with its offline ``mockllm/model``,
whose answers a function of the prompt gives (with token usage set, so that mockllm does not
count tokens with tiktoken, which would download an encoding).
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.integrations.inspect import (
    Candidate,
    InspectError,
    InspectSelection,
    policy_names,
    read_logs,
    select_policy,
)

inspect_ai = pytest.importorskip("inspect_ai")

from inspect_ai import Task, eval  # noqa: E402
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.log import read_eval_log, write_eval_log  # noqa: E402
from inspect_ai.model import ModelOutput, ModelUsage, get_model  # noqa: E402
from inspect_ai.scorer import Score, includes  # noqa: E402
from inspect_ai.solver import generate, system_message  # noqa: E402

CAREFUL, QUICK = "Be careful.", "Be quick."
SAMPLES = 24


def answer(messages, tools, tool_choice, config):
    """Doubles the number of the prompt: always under CAREFUL, else only for multiples of 3."""
    system = messages[0].text if messages[0].role == "system" else ""
    number = int(messages[-1].text.split()[-1])
    right = CAREFUL in system or number % 3 == 0
    output = ModelOutput.from_content("mockllm/model", str(2 * number) if right else "no idea")
    output.usage = ModelUsage(input_tokens=12, output_tokens=3, total_tokens=15)
    return output


def mock_model():
    return get_model("mockllm/model", custom_outputs=answer)


def dataset():
    return [Sample(input=f"Double {n}", target=str(2 * n), id=f"s{n}") for n in range(SAMPLES)]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """Two system prompts of one model on the same samples, two epochs each: two logs."""
    directory = tmp_path_factory.mktemp("logs")
    tasks = [
        Task(
            name="double",
            dataset=dataset(),
            solver=[system_message(s), generate()],
            scorer=includes(),
        )
        for s in (CAREFUL, QUICK)
    ]
    logs = eval(tasks, model=mock_model(), display="none", log_dir=str(directory), epochs=2)
    assert [log.status for log in logs] == ["success", "success"]
    return directory


def test_scores_of_two_prompts_become_pairwise_outcomes(log_dir):
    judgments = read_logs(log_dir)
    careful, quick = f"mockllm/model [system={CAREFUL}]", f"mockllm/model [system={QUICK}]"
    assert {(j.policy_a, j.policy_b) for j in judgments} == {(careful, quick)}
    # One comparison per sample and epoch: CAREFUL wins where QUICK is wrong, else a tie.
    assert len(judgments) == 2 * SAMPLES
    outcomes: dict[str, list[float]] = {}
    for j in judgments:
        outcomes.setdefault(str(j.task_id), []).append(j.outcome)
    assert outcomes == {f"s{n}": [0.5, 0.5] if n % 3 == 0 else [1.0, 1.0] for n in range(SAMPLES)}


def test_a_log_directory_replays_through_llmpo_run_and_certifies_the_higher_scores(
    log_dir, tmp_path
):
    for data_format in ("inspect", "auto"):
        config = tmp_path / f"{data_format}.yaml"
        config.write_text(
            "space: unstructured\ndelta: 0.05\nseed: 1\nenvironment:\n  type: replay\n"
            f"  format: {data_format}\n  path: {log_dir}\nstore: {tmp_path / data_format}.db\n"
        )
        result = CliRunner().invoke(app, ["run", str(config), "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["certified"] and data["winner"] == f"mockllm/model [system={CAREFUL}]"


def test_one_policy_alone_and_files_that_are_not_logs_are_named(log_dir, tmp_path):
    one_log = sorted(log_dir.glob("*.eval"))[0]
    with pytest.raises(InspectError, match="no sample was scored in logs of two policies"):
        read_logs(one_log)
    (tmp_path / "broken.eval").write_text("not a zip")
    with pytest.raises(InspectError, match=r"broken\.eval: not a readable Inspect log"):
        read_logs(tmp_path / "broken.eval")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InspectError, match="holds no Inspect log"):
        read_logs(tmp_path / "empty")


def test_logs_of_different_scorers_are_refused(log_dir, tmp_path):
    first, second = sorted(log_dir.glob("*.eval"))
    log = read_eval_log(str(second))
    for sample in log.samples:
        sample.scores = {"other": sample.scores["includes"]}
    shutil.copy(first, tmp_path / first.name)
    write_eval_log(log, str(tmp_path / second.name))
    with pytest.raises(InspectError, match=r"different scorers \(includes .*, other .*\)"):
        read_logs(tmp_path)


def test_letter_grades_map_as_inspects_value_to_float():
    from llmpo.integrations.inspect import _score_value

    grades = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0, "yes": 1.0, 0.25: 0.25, True: 1.0}
    assert {g: _score_value(Score(value=g), "x") for g in grades} == grades
    with pytest.raises(InspectError, match="x: the score is a dict"):
        _score_value(Score(value={"a": 1}), "x")


def test_policy_names_show_what_differs_between_runs_of_one_model():
    descriptors = [
        ("openai/gpt-4o", {"task": "qa", "system": "A", "temperature": "0.0"}),
        ("openai/gpt-4o", {"task": "qa", "system": "B", "temperature": "0.0"}),
        ("openai/gpt-4o", {"task": "qa", "system": "B", "temperature": "0.7"}),
        ("anthropic/claude", {"task": "qa", "system": "A"}),
        ("openai/gpt-4o", {"task": "qa", "system": "A", "temperature": "0.0"}),
    ]
    assert policy_names(descriptors) == [
        "openai/gpt-4o [system=A, temperature=0.0]",
        "openai/gpt-4o [system=B, temperature=0.0]",
        "openai/gpt-4o [system=B, temperature=0.7]",
        "anthropic/claude",
        "openai/gpt-4o [system=A, temperature=0.0]",  # the same policy run again
    ]


def test_without_inspect_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "inspect_ai.log", None)
    with pytest.raises(InspectError, match=r"pip install 'llmpo\[inspect\]'"):
        read_logs(tmp_path)


def select_careful_or_quick(log_dir: Path) -> InspectSelection:
    """The Inspect task choosing between the two mock-model policies, logged to ``log_dir``."""
    return select_policy(
        dataset(),
        {"careful": Candidate(system_message=CAREFUL), "quick": Candidate(QUICK)},
        includes(),
        model=mock_model(),
        delta=0.05,
        max_comparisons=400,
        log_dir=str(log_dir),
        display="none",
    )


def test_an_inspect_task_certifies_the_better_of_two_mock_model_policies(tmp_path):
    selection = select_careful_or_quick(tmp_path)
    assert selection.result.certified and selection.result.best_name == "careful"
    told = selection.result.n_comparisons
    assert told < 400  # stopped by the certificate, not by the budget
    # The written log reads back (what inspect view opens) and carries llmpo's verdict.
    (path,) = tmp_path.glob("*.eval")
    log = read_eval_log(str(path))
    assert log.status == "success"
    verdict = log.results.early_stopping.metadata
    assert verdict["winner"] == "careful" and verdict["certified"]
    assert verdict["comparisons"] == told
    # Samples scheduled after the certificate were skipped by the early-stopping hook.
    assert log.results.early_stopping.early_stops
    duels = [s.metadata["llmpo"] for s in log.samples if "llmpo" in s.metadata]
    assert sum(d["told"] for d in duels) == told
    assert verdict["generation_calls"] == 2 * len(duels)
    assert verdict["tokens"] == 15 * verdict["generation_calls"]
    for d in duels:  # each duel: both answers scored, the higher score won
        expected = (
            1.0
            if d["scores"][0] > d["scores"][1]
            else 0.0
            if d["scores"][0] < d["scores"][1]
            else 0.5
        )
        assert sorted(d["pair"]) == ["careful", "quick"] and d["outcome"] == expected
