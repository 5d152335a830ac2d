"""What a live run paid, in calls, from its stored comparisons: rounds, cached answers, judge
calls, cancelled rounds, and comparisons stored before calls were recorded."""

from llmpo.llm.paid import call_totals
from llmpo.store import ComparisonRecord, Payment


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


def paid(kind, task, replicate, key, tokens=10, cost=0.25, at=100.0):
    policy = "p" if kind == "generation" else "\x00judge"
    return Payment(1, None, kind, policy, task, replicate, key, "m", tokens, 1, cost, at)


def live(seq, task, number, replicates, keys, cached, calls, finished=200.0):
    raw = {
        "number": number,
        "replicates": list(replicates),
        "request_keys": list(keys),
        "cached": list(cached),
        "calls": calls,
    }
    return ComparisonRecord(seq, 0, 1, 1.0, task, None, raw, finished - 1, finished, 9.0, 99, 99)


def test_recorded_payments_are_what_was_paid_whichever_session_paid_them():
    # Comparison 1 paid both answers and a judge call. Comparison 2 was in flight when its
    # session was killed: its answer k3 and its judge reply had been paid and stored, and the
    # resumed session read them back (cached), paying only k4. k5 was paid for a round that was
    # never told; k9 was read from the cache, paid by another experiment.
    comparisons = [
        live(1, "t", 1, (0, 0), ("k1", "k2"), (False, False), 3),
        live(2, "u", 2, (0, 0), ("k3", "k4"), (True, False), 2),
        live(3, "u", 3, (1, 0), ("k9", "k4"), (True, True), 0),
    ]
    payments = [
        paid("generation", "t", 0, "k1"),
        paid("generation", "t", 0, "k2"),
        paid("judge", "t", 1, "r1"),
        paid("generation", "u", 0, "k3"),
        paid("judge", "u", 2, "r2"),
        paid("generation", "u", 0, "k4", cost=None),
        paid("generation", "v", 0, "k5"),
        paid("judge", "w", 7, "r7"),
    ]
    totals = call_totals(comparisons, [], [], payments)
    assert totals["generation_calls"] == 5 and totals["judge_calls"] == 3
    assert totals["unused_generation_calls"] == 1 and totals["unused_judge_calls"] == 1
    # k3 was paid by this experiment (its killed session), k4 by comparison 2: only k9 is reused.
    assert totals["reused_answers"] == 1
    assert totals["input_tokens"] == 80 and totals["output_tokens"] == 8
    assert totals["cost_usd"] == 7 * 0.25  # the calls paid, not the comparisons' 27.0
    # Without the records (a store before v6), the answer k3 the killed session paid is counted
    # as reused and k5 is missed (comparison 2 was charged its judge reply read back: 2 calls).
    old = call_totals(comparisons)
    assert (old["generation_calls"], old["judge_calls"], old["reused_answers"]) == (3, 2, 3)


def test_an_experiment_begun_before_payments_were_recorded_counts_both_parts():
    # Comparison 1 was finished (at 50) by a session before the upgrade, which counted 4
    # generations when it ended (2 of a round never told); comparison 2 after (first payment 100).
    comparisons = [
        live(1, "t", 1, (0, 0), ("k1", "k2"), (False, False), 2, finished=50.0),
        live(2, "u", 2, (0, 0), ("k3", "k4"), (False, False), 2),
    ]
    payments = [paid("generation", "u", 0, "k3"), paid("generation", "u", 0, "k4")]
    totals = call_totals(comparisons, [], [{"generation": 4, "judge": 0}], payments)
    assert totals["generation_calls"] == 6 and totals["unused_generation_calls"] == 2
    assert totals["input_tokens"] == 99 + 20 and totals["cost_usd"] == 9.0 + 0.5
    assert totals["reused_answers"] == 0
