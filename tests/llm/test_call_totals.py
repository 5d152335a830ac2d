"""What a live run paid, in calls, from its stored comparisons: rounds, cached answers, judge
calls, cancelled rounds, and comparisons stored before calls were recorded."""

from llmpo.llm.paid import call_totals
from llmpo.store import ComparisonRecord


def record(seq, raw, cost=None, tokens=None, started=0.0, finished=1.0):
    return ComparisonRecord(seq, 0, 1, 1.0, "t", None, raw, started, finished, cost, tokens, tokens)


def test_a_round_of_shared_answers_counts_each_generation_once():
    # A round of three answers: (0, 1) paid both, (0, 2) paid one, (1, 2) none.
    rows = [
        {"calls": 2, "cached": [False, False], "shared": [True, True]},
        {"calls": 1, "cached": [True, False], "shared": [True, True]},
        {"calls": 0, "cached": [True, True], "shared": [True, True]},
    ]
    totals = call_totals([record(k + 1, raw, tokens=5) for k, raw in enumerate(rows)])
    assert totals["comparisons"] == 3 and totals["generation_calls"] == 3
    assert totals["shared_comparisons"] == 3 and totals["judge_calls"] == 0
    assert totals["input_tokens"] == 15 and totals["cost_usd"] is None
    assert totals["unused_generation_calls"] == 0 and totals["reused_answers"] == 3


def test_comparisons_stored_before_calls_were_recorded_count_their_uncached_sides():
    rows = [
        {"judge": {"replies": ["A"]}, "cached": [False, False]},  # LLM judge, order random
        {"judge": {"ab": ["A"], "ba": ["B", "A"]}, "cached": [True, False]},  # order both
        {"judge": {"match_a": True, "match_b": False}, "cached": [True, True]},
    ]
    totals = call_totals([record(k + 1, raw, cost=0.01) for k, raw in enumerate(rows)])
    assert totals["generation_calls"] == 3 and totals["reused_answers"] == 3
    assert totals["judge_calls"] == 4 and totals["shared_comparisons"] == 0
    assert abs(totals["cost_usd"] - 0.03) < 1e-12


def test_invalid_verdicts_and_cancelled_rounds_are_paid_too():
    told = [record(1, {"calls": 3, "cached": [False, False]})]  # 2 answers and 1 judge call
    invalid = [{"calls": 4, "cached": [False, False], "cost_usd": 0.5}]  # the judge asked twice
    # Two sessions counted 9 generations and 3 judge calls: 4 answers of cancelled rounds.
    sessions = [{"generation": 5, "judge": 2}, {"generation": 4, "judge": 1}]
    totals = call_totals(told, invalid, sessions)
    assert totals["generation_calls"] == 9 and totals["unused_generation_calls"] == 5
    assert totals["judge_calls"] == 3 and totals["invalid_verdicts"] == 1
    assert totals["cost_usd"] == 0.5
    # A session killed at once recorded nothing: the stored comparisons are a lower bound.
    assert call_totals(told, invalid, [{"generation": 1, "judge": 0}])["generation_calls"] == 4
