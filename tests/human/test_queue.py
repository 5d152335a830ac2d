"""The human judge's queue and leases, on a fake clock (no web server)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from llmpo.human.queue import HumanJudge, LeaseError
from llmpo.llm.tasks import Task


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_with_pending(count: int, body, lease_seconds: float = 10.0, seed: int = 0):
    """Start ``count`` comparisons waiting for people, run ``body(judge, clock)``, and return
    the verdicts of the comparisons it settled, in order of creation."""
    clock = Clock()
    judge = HumanJudge(lease_seconds, clock=clock)

    async def main():
        tasks = [
            asyncio.create_task(
                judge.judge(
                    Task(f"t{k}", {"prompt": f"task {k}"}),
                    f"answer a{k}",
                    f"answer b{k}",
                    np.random.default_rng([seed, k]),
                )
            )
            for k in range(count)
        ]
        await asyncio.sleep(0)
        await body(judge, clock)
        await asyncio.sleep(0)
        verdicts = [t.result() if t.done() else None for t in tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert judge.pending == {}  # cancelled comparisons leave the queue
        return verdicts

    return asyncio.run(main())


def test_each_pending_comparison_goes_to_one_judge_at_a_time():
    seen = {}

    async def body(judge, clock):
        for name in ("ann", "ben", "cid", "dan", "eve"):
            item = judge.assign(name)
            seen[name] = item.id if item else None
        assert judge.assign("ann").id == seen["ann"]  # a judge keeps their comparison
        assert judge.counts() == (0, {"ann": 1, "ben": 1, "cid": 1, "dan": 1})

    run_with_pending(4, body)
    held = [v for v in seen.values() if v is not None]
    assert len(held) == 4 and len(set(held)) == 4 and seen["eve"] is None


def test_a_lapsed_lease_goes_to_the_next_judge_and_the_late_verdict_is_refused():
    async def body(judge, clock):
        first = judge.assign("ann")
        assert judge.assign("ben") is None
        clock.now = 9.9
        assert judge.assign("ben") is None  # not yet lapsed
        clock.now = 10.0
        second = judge.assign("ben")
        assert second is first and second.holder == "ben"
        with pytest.raises(LeaseError, match="handed to another judge"):
            judge.submit("ann", first.id, "stale-lease", "A")
        judge.submit("ben", second.id, second.lease_id, "tie", "  close call  ")
        with pytest.raises(LeaseError, match="no longer waiting"):
            judge.submit("ben", second.id, second.lease_id, "A")

    (verdict,) = run_with_pending(1, body)
    assert verdict.outcome == 0.5
    assert verdict.raw["judge_name"] == "ben" and verdict.raw["comment"] == "close call"
    assert verdict.raw["leases"] == 2


def test_a_lapsed_lease_nobody_took_still_counts():
    async def body(judge, clock):
        item = judge.assign("ann")
        clock.now = 60.0
        judge.submit("ann", item.id, item.lease_id, "A")

    (verdict,) = run_with_pending(1, body)
    assert verdict is not None and verdict.raw["seconds"] == 60.0


@pytest.mark.parametrize("seed", range(6))
def test_choices_map_to_the_policies_whatever_order_was_shown(seed):
    chosen = {}

    async def body(judge, clock):
        for k, choice in enumerate(("A", "B", "tie")):
            item = judge.assign(f"j{k}")
            chosen[k] = (item.order, item.shown, choice)
            judge.submit(f"j{k}", item.id, item.lease_id, choice)

    verdicts = run_with_pending(3, body, seed=seed)
    for k, verdict in enumerate(verdicts):
        order, shown, choice = chosen[k]
        assert shown == (
            (f"answer a{k}", f"answer b{k}") if order == "ab" else (f"answer b{k}", f"answer a{k}")
        )
        picked_a = (choice == "A") == (order == "ab")
        expected = 0.5 if choice == "tie" else (1.0 if picked_a else 0.0)
        assert verdict.outcome == expected and verdict.order == order


def test_both_orders_are_shown():
    orders = set()

    async def body(judge, clock):
        for k in range(12):
            orders.add(judge.assign(f"j{k}").order)

    run_with_pending(12, body)
    assert orders == {"ab", "ba"}


def test_a_bad_choice_changes_nothing():
    async def body(judge, clock):
        item = judge.assign("ann")
        with pytest.raises(ValueError, match="choice must be one of A, B, tie"):
            judge.submit("ann", item.id, item.lease_id, "C")
        assert judge.assign("ann") is item and not item.future.done()

    assert run_with_pending(1, body) == [None]
