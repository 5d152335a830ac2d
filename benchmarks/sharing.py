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
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from llmpo.environments.answers import AnswerModel, RoundsRun, run_with_rounds
from llmpo.experiment import Experiment
from llmpo.stats.bernoulli import kl_bernoulli

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
    parser.add_argument(
        "--per-nat",
        action="store_true",
        help="print generations per nat of evidence of paired, shared and unpaired designs",
    )
    args = parser.parse_args()
    if args.per_nat:
        for name, means in INSTANCES.items():
            if len(set(means[1:])) == 1:  # the computation assumes equally far rivals
                figures = generations_per_nat(list(means))
                print(f"{name}: " + ", ".join(f"{d} {v:.0f}" for d, v in figures.items()))
        return
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


def generations_per_nat(means: list[float], task_scale: float = 1.0) -> dict[str, float]:
    """Generations per nat of evidence against every rival (rivals equally far from the leader,
    policy 0), for the correctness judge, three designs, computed from the answer model by
    quadrature (no simulation):

    * paired, unshared: each leader comparison pays two answers and gives its pair
      (decisive share)·kl(P(win | decisive), ½) nats, and each of the K − 1 rivals needs its own;
    * paired, shared rounds: a round of all K answers gives every rival that much for K answers;
    * unpaired: binary scores make P(i ≻ j) − P(j ≻ i) = a_i − a_j, so a test of the mean scores
      may use every leader answer against every rival, whatever its round; the best split of the
      answers (leader share w, rivals (1 − w)/(K − 1) each) gives each rival
      min_μ w·kl(a_0, μ) + (1 − w)/(K − 1)·kl(a_j, μ) nats per answer. It loses the pairing: the
      task moves the two answers of a pair together, which the paired test cancels.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    leader = norm.cdf(means[0] + task_scale * nodes)
    rival = norm.cdf(means[1] + task_scale * nodes)
    win, loss = np.sum(weights * leader * (1 - rival)), np.sum(weights * rival * (1 - leader))
    paired = (win + loss) * float(kl_bernoulli(win / (win + loss), 0.5))
    k = len(means)
    accuracy = (float(np.sum(weights * leader)), float(np.sum(weights * rival)))

    def unpaired_rate(share: float) -> float:
        rest = (1.0 - share) / (k - 1)
        return minimize_scalar(
            lambda mu: share * kl_bernoulli(accuracy[0], mu) + rest * kl_bernoulli(accuracy[1], mu),
            bounds=(accuracy[1], accuracy[0]),
            method="bounded",
        ).fun

    best = max(unpaired_rate(share) for share in np.linspace(0.05, 0.95, 181))
    return {"unshared": 2.0 * (k - 1) / paired, "shared rounds": k / paired, "unpaired": 1.0 / best}


if __name__ == "__main__":
    main()
