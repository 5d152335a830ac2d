"""Benchmark for batch APIs (docs/batch.md): rounds to certify against the batch size n.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/batch_rounds.py --reps 40

On a reference instance (default BT5, the benchmarks' main one), LLM-PO asks n pairs at a time
(``experiment.ask(n)``, as the live runner does with ``--concurrency n``), tells them all, and
asks again until it stops. Each ask is one round: with ``batch: true`` a generations job, then a
judge job. Prints, as Markdown, per n: the mean rounds and comparisons to stop (± one standard
error), what they cost in calls (answers generated, without shared answers, two a comparison; an
LLM judge's calls, one a comparison) and batch jobs (two a round), the share certified, and the
error rate, over ``--reps`` seeds (the same seeds for
every n).
"""

from __future__ import annotations

import argparse

import numpy as np

from llmpo.environments.synthetic import SyntheticEnvironment
from llmpo.experiment import Experiment
from llmpo.harness.reference import reference_instance
from llmpo.harness.simulate import GENERATIONS_PER_COMPARISON


def rounds_to_stop(name: str, n: int, delta: float, seed: int) -> tuple[int, int, bool, int]:
    """One run: (rounds, comparisons paid, certified, best) with ``n`` pairs per round."""
    instance = reference_instance(name)
    environment = SyntheticEnvironment(instance, np.random.SeedSequence([seed, 1]))
    experiment = Experiment(instance.policies, delta=delta, seed=seed)
    rounds = paid = 0
    while not experiment.done:
        pairs = experiment.ask(n)
        rounds += 1
        paid += len(pairs)  # a round's calls are all paid, even those after the stop
        for a, b in pairs:
            if not experiment.done:
                experiment.tell(a, b, environment.outcome(a, b))
    result = experiment.result
    return rounds, paid, result.certified, result.best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instance", default="BT5")
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--sizes", default="1,8,32,128,512")
    arguments = parser.parse_args()
    print(f"{arguments.instance}, δ = {arguments.delta}, {arguments.reps} runs per batch size\n")
    print(
        "| n (pairs per round) | rounds | batch jobs | comparisons | generation calls "
        "| judge calls | certified | wrong winner |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in (int(x) for x in arguments.sizes.split(",")):
        runs = np.array(
            [
                rounds_to_stop(arguments.instance, n, arguments.delta, seed)
                for seed in range(arguments.reps)
            ]
        )
        rounds, paid = runs[:, 0], runs[:, 1]
        error = np.sqrt(arguments.reps)
        generations = GENERATIONS_PER_COMPARISON * paid
        print(
            f"| {n} | {rounds.mean():,.1f} ± {rounds.std(ddof=1) / error:,.1f} "
            f"| {2 * rounds.mean():,.1f} "
            f"| {paid.mean():,.0f} ± {paid.std(ddof=1) / error:,.0f} "
            f"| {generations.mean():,.0f} ± {generations.std(ddof=1) / error:,.0f} "
            f"| {paid.mean():,.0f} "
            f"| {runs[:, 2].mean():.0%} | {(runs[:, 3] != 0).mean():.0%} |"
        )


if __name__ == "__main__":
    main()
