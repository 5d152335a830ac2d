"""Benchmark of rounds with shared answers (docs/cost.md): generation calls to certify, shared
against unshared, at equal δ.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/sharing.py --reps 20

On synthetic answers (:class:`llmpo.environments.answers.AnswerModel`: quality = policy mean +
task ease + noise), K = 4 and 10, with the correctness judge (every pair of a round compared) and
the pairwise judge, δ = 0.1, batches of 8, the same seeds for both arms: prints, as Markdown, the
mean generation calls, comparisons and error rate of each arm and the ratio of generation calls.
"""

from __future__ import annotations

import argparse

import numpy as np

from llmpo.environments.answers import AnswerModel, RoundsRun, run_with_rounds
from llmpo.experiment import Experiment

INSTANCES = {
    "K=4, equal rivals": [0.5, 0.0, 0.0, 0.0],
    "K=4, spread rivals": [0.5, 0.1, 0.0, -0.1],
    "K=10, equal rivals": [0.5] + [0.0] * 9,
}


def arm(model: AnswerModel, reps: int, delta: float, share: bool) -> list[RoundsRun]:
    """``reps`` runs of one arm, seeds 0..reps−1 (the other arm uses the same)."""
    return [
        run_with_rounds(
            Experiment(model.n_policies, delta=delta, seed=seed),
            model,
            np.random.default_rng(10_000 + seed),
            batch_size=8,
            share=share,
        )
        for seed in range(reps)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--delta", type=float, default=0.1)
    args = parser.parse_args()
    print(
        "| instance | judge | generation calls, unshared | shared | ratio | comparisons, "
        "unshared | shared | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, means in INSTANCES.items():
        for score_each in (True, False):
            model = AnswerModel(means, score_each=score_each)
            shared = arm(model, args.reps, args.delta, True)
            unshared = arm(model, args.reps, args.delta, False)
            calls = [np.mean([r.generation_calls for r in runs]) for runs in (unshared, shared)]
            told = [np.mean([r.comparisons for r in runs]) for runs in (unshared, shared)]
            errors = sum(r.best != 0 for r in shared + unshared)
            judge = "correctness (scores each)" if score_each else "pairwise"
            print(
                f"| {name} | {judge} | {calls[0]:.0f} | {calls[1]:.0f} | "
                f"{calls[0] / calls[1]:.2f}× | {told[0]:.0f} | {told[1]:.0f} | "
                f"{errors}/{2 * args.reps} |"
            )


if __name__ == "__main__":
    main()
