"""Benchmark of unstructured LLM-PO (issue 2): comparisons, optimality slope and decision time.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/unstructured.py --reps 100 --workers 2

For K in {5, 10, 20, 50} it prints, as Markdown:

* mean comparisons of llmpo, uniform and oracle at δ = 0.01, and their ratios;
* llmpo's ``ratio_to_bound`` = mean / (T*·log(1/δ)) at δ ∈ {0.1, 0.01, 0.001, 1e-6};
* the slope of llmpo's mean comparisons against log(1/δ) between δ = 1e-2 and 1e-6, over T*
  (asymptotic optimality: it tends to 1; target ≤ 1.3). Runs at different δ share their seeds
  and, through per-pair random streams, their outcomes, so the difference is measured with
  common random numbers;
* the time per ask+tell decision of llmpo, and as a ratio to uniform's (the baseline measured
  in the same run: same experiment loop, trivial sampling rule);
* cost in calls at δ = 0.01: llmpo's mean generation calls (2 per comparison), and the ``grid``
  baseline given the same number of generations (every policy answers N = ⌈calls / K⌉ tasks,
  every pair of answers judged, same stopping rule; ``--grid-tasks`` fixes N instead): its judge
  calls and how often it certifies.

``--tie-prob t`` puts ties with probability t on every pair, keeping the decisive win
probabilities of the instance (:func:`llmpo.harness.instances.tied_instance`); ``--ties half``
runs the statistic that counts a tie as half a win.

Instances: Bradley–Terry with θ_0 = 0 and θ_k = −(0.405 + 0.1·(k−1)) for k ≥ 1, so the winner's
closest rival has p = 0.6 and the others are spread out; seeds fixed.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from llmpo.environments.synthetic import SyntheticEnvironment
from llmpo.experiment import Experiment
from llmpo.harness.instances import UnstructuredInstance, bradley_terry_matrix, tied_instance
from llmpo.harness.simulate import simulate

DELTAS = (0.1, 0.01, 0.001, 1e-6)


def benchmark_instance(n_policies: int, tie_prob: float = 0.0) -> UnstructuredInstance:
    """The BT instance described in the module docstring (decisive outcomes), with ties."""
    utilities = [0.0] + [-(0.405 + 0.1 * (k - 1)) for k in range(1, n_policies)]
    return tied_instance(bradley_terry_matrix(utilities), tie_prob)


def decision_time(instance: UnstructuredInstance, strategy: str, decisions: int) -> float:
    """Mean seconds per ask(1) + tell, excluding the environment's draw."""
    elapsed = 0.0
    done = 0
    seed = 0
    while done < decisions:
        environment = SyntheticEnvironment(instance, seed)
        experiment = Experiment(instance.policies, delta=1e-6, strategy=strategy)
        while not experiment.done and done < decisions:
            start = time.perf_counter()
            ((a, b),) = experiment.ask(1)
            elapsed += time.perf_counter() - start
            outcome = environment.outcome(a, b)
            start = time.perf_counter()
            experiment.tell(a, b, outcome)
            elapsed += time.perf_counter() - start
            done += 1
        seed += 1
    return elapsed / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=100, help="replications per llmpo cell")
    parser.add_argument("--baseline-reps", type=int, default=10, help="replications of uniform")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tie-prob", type=float, default=0.0, help="ties on every pair")
    parser.add_argument("--ties", choices=("decisive", "half"), default="decisive")
    parser.add_argument(
        "--grid-tasks", type=int, default=None, help="N of the grid (default: llmpo's spend)"
    )
    args = parser.parse_args()

    header = (
        "| K | T* | llmpo @0.01 | oracle @0.01 | uniform @0.01 | uniform/llmpo | llmpo/oracle "
        "| ratio_to_bound δ=0.1 / 0.01 / 0.001 / 1e-6 | slope/T* | µs per decision "
        "(llmpo, × uniform) | llmpo generation calls @0.01 | grid: tasks, generation calls, "
        "judge calls, certified |"
    )
    print(header)
    print("|---" * 12 + "|")
    for n_policies in args.sizes:
        instance = benchmark_instance(n_policies, args.tie_prob)
        options = {"ties": args.ties}
        runs = {
            delta: simulate(instance, "llmpo", delta, args.reps, args.seed, args.workers, **options)
            for delta in DELTAS
        }
        t_star = runs[0.01]["t_star"]
        oracle = simulate(instance, "oracle", 0.01, args.reps, args.seed, args.workers, **options)
        uniform = simulate(
            instance, "uniform", 0.01, args.baseline_reps, args.seed, args.workers, **options
        )
        calls = runs[0.01]["mean_generation_calls"]
        tasks = args.grid_tasks or math.ceil(calls / n_policies)
        grid = simulate(
            instance,
            "grid",
            0.01,
            args.baseline_reps,
            args.seed,
            args.workers,
            tasks=tasks,
            **options,
        )
        slope = (runs[1e-6]["mean_comparisons"] - runs[0.01]["mean_comparisons"]) / (
            math.log(1e6) - math.log(1e2)
        )
        adaptive_time = decision_time(instance, "llmpo", 20_000)
        uniform_time = decision_time(instance, "uniform", 20_000)
        ratios = " / ".join(f"{runs[d]['ratio_to_bound']:.2f}" for d in DELTAS)
        mean = runs[0.01]["mean_comparisons"]
        print(
            f"| {n_policies} | {t_star:.1f} | {mean:.0f} | {oracle['mean_comparisons']:.0f} "
            f"| {uniform['mean_comparisons']:.0f} | {uniform['mean_comparisons'] / mean:.2f} "
            f"| {mean / oracle['mean_comparisons']:.2f} | {ratios} | {slope / t_star:.2f} "
            f"| {adaptive_time * 1e6:.1f} ({adaptive_time / uniform_time:.2f}×) "
            f"| {calls:.0f} | {tasks}, {grid['mean_generation_calls']:.0f}, "
            f"{grid['mean_judge_calls']:.0f}, {100 * grid['certified_rate']:.0f}% |",
            flush=True,
        )
        errors = {d: runs[d]["errors"] for d in DELTAS}
        if any(errors.values()):
            print(f"  (K = {n_policies}: errors per δ {errors})")
    print(
        f"\nreps = {args.reps} (uniform and grid: {args.baseline_reps}), seed = {args.seed}, "
        f"ties on every pair: {args.tie_prob:g}, statistic: {args.ties}, numpy {np.__version__}"
    )


if __name__ == "__main__":
    main()
