"""Benchmark of structured LLM-PO (issue 3): comparisons, optimality slope and decision time.

Run on demand (not part of the test suite)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structured.py --reps 10

For (K, d) in {(20, 4), (100, 6), (1000, 10), (10000, 16)} it prints, as Markdown:

* T* (Fisher form, Frank–Wolfe, η = 1e-3) and the time of one full re-solve of w*(θ) from scratch
  (200 Frank–Wolfe steps on the candidate pairs of ``candidate_pairs``: the leader's K − 1 pairs,
  all pairs among the top 2d + 2 policies and the policies extreme along the principal axes);
* mean comparisons at δ = 0.05 of structured LLM-PO (best response, universal-inference
  threshold), structured tracking, uniform (all pairs round-robin, same stopping rule) and
  unstructured LLM-PO on the same outcomes (K ≤ 100; uniform and unstructured get a budget of 10×
  the structured mean and are reported as "> budget" when they do not certify within it);
* the slope of structured LLM-PO's mean comparisons against log(1/δ) between δ = 1e-2 and 1e-6,
  over T* (same seeds, hence common random numbers through per-pair streams);
* the time per decision (ask + tell, amortized over the run, including the stopping check and
  the lazily re-solved program of the tracking rule).

Instances: x_i ~ N(0, I/d), θ ~ N(0, I) scaled to ‖θ‖ = 1.5, and the best policy moved along θ
so that it leads the second by 0.3 in utility (p = 0.574); seeds fixed.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from llmpo import Experiment, Unstructured
from llmpo.environments.structured import StructuredEnvironment
from llmpo.instances import StructuredInstance, make_structured_instance
from llmpo.stats.structured import candidate_pairs, fisher_frank_wolfe

SIZES = ((20, 4), (100, 6), (1000, 10), (10000, 16))
MARGIN = 0.3


def benchmark_instance(n_policies: int, dimension: int) -> StructuredInstance:
    """The instance described in the module docstring."""
    rng = np.random.default_rng(n_policies * 100 + dimension)
    x = rng.normal(size=(n_policies, dimension)) / math.sqrt(dimension)
    theta = rng.normal(size=dimension)
    theta *= 1.5 / np.linalg.norm(theta)
    utilities = x @ theta
    first, second = np.argsort(-utilities)[:2]
    x[first] += (MARGIN - (utilities[first] - utilities[second])) * theta / (theta @ theta)
    return make_structured_instance(x, theta)


def run(
    instance: StructuredInstance, space, strategy: str, delta: float, seed: int,
    budget: int | None = None,
) -> tuple[int, bool, float]:
    """One experiment: comparisons, certified, seconds in ask + tell."""
    experiment = Experiment(space, delta, strategy, seed=seed, max_comparisons=budget)
    environment = StructuredEnvironment(instance, seed)
    elapsed = 0.0
    while not experiment.done:
        start = time.perf_counter()
        (a, b), = experiment.ask()
        elapsed += time.perf_counter() - start
        outcome = environment.outcome(a, b)
        start = time.perf_counter()
        experiment.tell(a, b, outcome)
        elapsed += time.perf_counter() - start
    certified = experiment.model.is_certified()
    if certified and experiment.model.leader != instance.best:
        print(f"  (error: seed {seed} certified policy {experiment.model.leader})")
    return experiment.n_comparisons, certified, elapsed


def mean_cell(results: list[tuple[int, bool, float]], budget: int | None) -> str:
    counts = [n for n, _, _ in results]
    if budget is not None and not all(certified for _, certified, _ in results):
        return f"> {budget:,} ({sum(c for _, c, _ in results)}/{len(results)} certified)"
    return f"{np.mean(counts):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="replications at K ≤ 100")
    parser.add_argument("--large-reps", type=int, default=2, help="replications at K ≥ 1000")
    parser.add_argument("--sizes", type=str, default=None, help="e.g. 20x4,100x6")
    args = parser.parse_args()
    sizes = SIZES if args.sizes is None else tuple(
        tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")
    )
    rows = []
    for n_policies, dimension in sizes:
        instance = benchmark_instance(n_policies, dimension)
        start = time.perf_counter()
        pairs = candidate_pairs(instance.features, instance.theta)
        allocation = fisher_frank_wolfe(
            instance.features, instance.theta, pairs, instance.best, iterations=200
        )
        resolve = time.perf_counter() - start
        t_star = allocation.t_star
        reps = args.reps if n_policies <= 100 else args.large_reps
        seeds = range(reps)
        structured = [run(instance, instance.space(), "llmpo", 0.05, s) for s in seeds]
        tracking = [run(instance, instance.space(), "llmpo-tracking", 0.05, s) for s in seeds]
        structured_mean = float(np.mean([n for n, _, _ in structured]))
        budget = int(10 * structured_mean)
        if n_policies <= 100:
            uniform = [run(instance, instance.space(), "uniform", 0.05, s, budget) for s in seeds]
            unstructured = [
                run(instance, Unstructured(instance.policies), "llmpo", 0.05, s, budget)
                for s in seeds
            ]
            uniform_cell, unstructured_cell = mean_cell(uniform, budget), mean_cell(
                unstructured, budget
            )
        else:
            uniform_cell = unstructured_cell = "not run"
        low = [run(instance, instance.space(), "llmpo", 1e-2, s)[0] for s in seeds]
        high = [run(instance, instance.space(), "llmpo", 1e-6, s)[0] for s in seeds]
        slope = (np.mean(high) - np.mean(low)) / (math.log(1e6) - math.log(1e2)) / t_star

        def per_decision(results: list[tuple[int, bool, float]]) -> float:
            return 1e3 * sum(e for _, _, e in results) / sum(n for n, _, _ in results)

        rows.append(
            f"| {n_policies} | {dimension} | {t_star:,.1f} | {resolve:.2f} | "
            f"{structured_mean:,.0f} | {mean_cell(tracking, None)} | {uniform_cell} | "
            f"{unstructured_cell} | {slope:.2f} | {per_decision(structured):.2f} | "
            f"{per_decision(tracking):.2f} | {reps} |"
        )
        print(rows[-1], flush=True)
    print()
    print(
        "| K | d | T* (Fisher) | re-solve (s) | llmpo | llmpo-tracking | uniform | "
        "unstructured llmpo | slope/T* | ms/decision llmpo | ms/decision tracking | reps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
