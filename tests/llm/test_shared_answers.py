"""Live rounds with shared answers: one generation per (policy, task, replicate) of a round, every
pair of a round's answers compared by a scoring judge, only the round's pairs by a pairwise one,
recorded in the store, and resumed without paying twice."""

import json
from collections import defaultdict

import pytest

from llmpo.errors import RunFailedError
from llmpo.store import Store
from llmpo.testing.store import tamper
from tests.llm.conftest import FAST_RETRIES, run

MORE_POLICIES = """\
  - name: loose2
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: MY_KEY}
    temperature: 0.7
  - name: loose3
    backend: {type: openai, base_url: "BASE_URL", model: m1, api_key_env: MY_KEY}
    temperature: 0.5
"""

PAIRWISE_JUDGE = """\
def judge(task, answer_a, answer_b):
    right_a, right_b = answer_a.strip() == task["reference"], answer_b.strip() == task["reference"]
    return 0.5 if right_a == right_b else float(right_a)
"""


@pytest.fixture
def four(project, server):
    path = project / "live.yaml"
    text = path.read_text().replace("  type: llm\n", FAST_RETRIES)
    text = text.replace("store: runs.db\n", MORE_POLICIES.replace("BASE_URL", server.base_url))
    path.write_text(text + "store: runs.db\n")
    return path


def rounds_of(store: Store, experiment_id: int) -> dict[int, list]:
    rounds = defaultdict(list)
    for comparison in store.comparisons(experiment_id):
        rounds[comparison.raw["round"]].append(comparison)
    return rounds


def answers_of(comparisons) -> set[tuple[int, str, int]]:
    used = set()
    for c in comparisons:
        ra, rb = c.raw["replicates"]
        used |= {(c.policy_a, c.task_id, ra), (c.policy_b, c.task_id, rb)}
    return used


def check_rounds(rounds: dict[int, list]) -> None:
    """Each round: one task, one answer per policy, each pair once; no answer in two rounds."""
    seen: dict[tuple[int, str, int], int] = {}
    for number, comparisons in rounds.items():
        assert len({c.task_id for c in comparisons}) == 1
        pairs = [frozenset((c.policy_a, c.policy_b)) for c in comparisons]
        assert len(pairs) == len(set(pairs))
        answers = answers_of(comparisons)
        assert len(answers) == len({policy for policy, _, _ in answers})
        for answer in answers:
            assert seen.setdefault(answer, number) == number  # never shared across rounds


def test_a_scoring_judge_compares_every_pair_of_a_round_for_its_answers_only(four, server):
    outcome = run(four, concurrency=4)
    assert outcome.status == "certified" and outcome.result.best_name == "careful"
    with Store(four.parent / "runs.db", readonly=True) as store:
        rounds = rounds_of(store, outcome.experiment_id)
        stored = store.comparisons(outcome.experiment_id)
        generations = store.generation_count()
    check_rounds(rounds)
    calls = outcome.calls
    assert calls is not None
    # Each answer was generated once and charged once; answers of rounds cancelled at the end
    # were paid too, and are counted as unused. (The server also counts requests cancelled
    # before their answer arrived, which the client cannot count.)
    assert calls["generation_calls"] == generations <= server.served
    charged = sum(not cached for c in stored for cached in c.raw["cached"])
    assert charged == generations - calls["unused_generation_calls"]
    assert calls["judge_calls"] == 0 and calls["comparisons"] == len(stored)
    # A full round: 4 answers, 6 comparisons; overall more comparisons than generations. (The
    # round in which the run certified may end part-way: nothing is told after certification.)
    last = max(rounds, key=lambda number: max(c.seq for c in rounds[number]))
    full = [r for n, r in rounds.items() if len(answers_of(r)) == 4 and n != last]
    assert full and all(len(r) == 6 for r in full)
    assert all(c.raw["shared"] == [True, True] for r in full for c in r)
    assert calls["comparisons"] > calls["generation_calls"]
    # The JSON of llmpo run --json and the stored result carry the same figures.
    assert outcome.to_dict("runs.db")["calls"] == calls
    with Store(four.parent / "runs.db", readonly=True) as store:
        assert store.experiment(outcome.experiment_id).result["calls"] == calls


def test_a_pairwise_judge_judges_only_the_pairs_of_a_round(four, server):
    (four.parent / "pairwise.py").write_text(PAIRWISE_JUDGE)
    text = four.read_text().replace(
        "judge: {type: reference, match: contains}",
        'judge: {type: python, function: "pairwise:judge"}',
    )
    four.write_text(text)
    outcome = run(four, concurrency=4)
    assert outcome.status == "certified" and outcome.result.best_name == "careful"
    with Store(four.parent / "runs.db", readonly=True) as store:
        rounds = rounds_of(store, outcome.experiment_id)
    check_rounds(rounds)
    # Rounds share the leader's answer, but rivals are not compared with each other for free.
    assert any(len(answers_of(r)) > 2 for r in rounds.values())
    assert all(
        len(r) < len(answers_of(r)) * (len(answers_of(r)) - 1) / 2
        for r in rounds.values()
        if len(answers_of(r)) > 2
    )
    assert outcome.calls["generation_calls"] <= server.served
    assert outcome.calls["generation_calls"] < 2 * outcome.calls["comparisons"]


def test_a_killed_shared_run_resumes_without_paying_for_an_answer_twice(four, server):
    def fail_after_40(body):
        if server.served == 40:
            server.faults.extend(["500"] * 1000)
        return "0"  # every answer wrong: ties, so the budget ends the run

    server.responder = fail_after_40
    with pytest.raises(RunFailedError):
        run(four, concurrency=4, max_comparisons=80, delta=0.001)
    with Store(four.parent / "runs.db", readonly=True) as store:
        experiment_id = store.experiment().id
        before = len(store.comparisons(experiment_id))
        answered_before = store.generation_count()
    assert 0 < before < 80
    server.faults.clear()
    server.responder = lambda body: "0"
    served = server.served
    outcome = run(four, concurrency=4, max_comparisons=80, delta=0.001)
    with Store(four.parent / "runs.db", readonly=True) as store:
        rounds = rounds_of(store, experiment_id)
        stored = store.comparisons(experiment_id)
        generations = store.generation_count()
    assert outcome.status == "max_comparisons" and outcome.result.n_comparisons == len(stored) == 80
    numbers = [c.raw["number"] for c in stored]
    assert len(numbers) == len(set(numbers))
    check_rounds(rounds)
    # Answers generated before the failure came from the cache: nothing paid twice.
    assert server.served - served == generations - answered_before
    assert outcome.calls["generation_calls"] + outcome.calls["reused_answers"] >= len(
        answers_of(stored)
    )


def test_a_store_written_before_rounds_resumes_its_unfinished_comparisons(fast, server):
    """Older stores recorded asked comparisons without a round and comparisons without calls:
    each is then its own round, and the run resumes as before."""

    def fail_after_30(body):
        if server.served == 30:
            server.faults.extend(["500"] * 1000)
        return "0"

    server.responder = fail_after_30
    with pytest.raises(RunFailedError):
        run(fast, concurrency=6, max_comparisons=60, delta=0.001)
    database = fast.parent / "runs.db"
    with tamper(database) as connection:  # rewrite it as an older llmpo stored it
        for row_id, detail in connection.execute(
            "SELECT id, detail FROM events WHERE kind = 'asked'"
        ).fetchall():
            rows = [row[:6] for row in json.loads(detail)["comparisons"]]
            connection.execute(
                "UPDATE events SET detail = ? WHERE id = ?",
                (json.dumps({"comparisons": rows}), row_id),
            )
        for seq, raw in connection.execute("SELECT seq, raw FROM comparisons").fetchall():
            old = {
                k: v for k, v in json.loads(raw).items() if k not in ("calls", "round", "shared")
            }
            connection.execute(
                "UPDATE comparisons SET raw = ? WHERE seq = ?", (json.dumps(old), seq)
            )
    with Store(database, readonly=True) as store:
        experiment_id = store.experiment().id
        before = {c.raw["number"] for c in store.comparisons(experiment_id)}
        answered_before = store.generation_count()
    server.faults.clear()
    server.responder = lambda body: "0"
    served = server.served
    outcome = run(fast, concurrency=6, max_comparisons=60, delta=0.001)
    with Store(database, readonly=True) as store:
        stored = store.comparisons(experiment_id)
        generations = store.generation_count()
    numbers = [c.raw["number"] for c in stored]
    assert outcome.result.n_comparisons == len(stored) == 60
    assert len(numbers) == len(set(numbers)) and before <= set(numbers)
    assert server.served - served == generations - answered_before
    # Old comparisons count one generation per side not read from the cache.
    assert outcome.calls["generation_calls"] >= 2 * len(before) - outcome.calls["reused_answers"]


def test_a_certified_run_names_what_the_grid_would_have_paid(four, server):
    from typer.testing import CliRunner

    from llmpo.cli import app

    result = CliRunner().invoke(app, ["run", str(four), "--json"])
    data = json.loads(result.stdout)
    assert data["certified"], result.output
    # Four policies, every one of the project's 20 tasks answered once: 80 generation calls.
    assert data["calls"]["grid_generation_calls"] == 4 * 20
    assert "every policy answering every task once would take 80 generation calls" in (
        data["summary"]
    )
