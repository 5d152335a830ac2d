"""Benchmark of structured LLM-PO (issue 3): comparisons, optimality slope and decision time.

Run on demand (not part of the test suite)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structured.py --reps 10

For (K, d) in {(20, 4), (100, 6), (1000, 10), (10000, 16)} it prints, as Markdown:

* T* (Fisher form, Frank–Wolfe, η = 1e-3) and the time of one full re-solve of w*(θ) from scratch
  (200 Frank–Wolfe steps on the candidate pairs of ``candidate_pairs``: the leader's K − 1 pairs,
  all pairs among the top 2d + 2 policies and the policies extreme along the principal axes);
* mean comparisons at δ = 0.05 of structured LLM-PO (best response, universal-inference
  threshold), structured tracking, uniform (all pairs round-robin, same stopping rule) and
  unstructured LLM-PO on the same outcomes. Uniform and unstructured run with a budget (10× the
  structured mean at K ≤ 100 with the same replications; 5× and one replication at K = 1000) and
  are reported as "> budget" when they do not certify within it. At K = 10,000 they are not run
  (unstructured statistics are K×K; uniform's run would take hours): uniform is *estimated* by
  :func:`uniform_estimate` (also printed where uniform runs, as a check), and every procedure
  that ignores the features is bounded below by :func:`unstructured_lower_bound` (all K);
* the slope of structured LLM-PO's mean comparisons against log(1/δ) between δ = 1e-2 and 1e-6,
  over T* (same seeds, hence common random numbers through per-pair streams);
* the time per decision (ask + tell, amortized over the run, including the stopping check, the
  final result and the lazily re-solved program of the tracking rule).

Times are CPU (process) time with OMP_NUM_THREADS=1, so they do not depend on how many other jobs
share the machine; the wall time of the re-solve is printed too.

Instances: x_i ~ N(0, I/d), θ ~ N(0, I) scaled to ‖θ‖ = 1.5, and the best policy moved along θ
so that it leads the second by 0.3 in utility (p = 0.574); seeds fixed.

With ``--thresholds universal,mixture,hybrid`` it prints instead, per instance and stopping
threshold, the mean comparisons of structured LLM-PO at δ = 0.05 with their ratio to the bound
T*·log(1/δ) (T* as ``llmpo bound`` computes it), and with ``--slope`` the slope in log(1/δ)
between δ = 1e-2 and 1e-6 over T*. ``--sizes 60x9`` is :func:`factor_instance`: K = 60 policies
from 3 factors of 4, 5 and 3 levels (one-hot, d = 9) with two close rivals.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from llmpo import Experiment, Unstructured
from llmpo.environments.structured import StructuredEnvironment
from llmpo.harness.instances import StructuredInstance, make_structured_instance
from llmpo.harness.simulate import simulate
from llmpo.models.structured import jaakkola_jordan_curvature
from llmpo.spaces import Structured
from llmpo.stats.bernoulli import kl_bernoulli, kl_confidence
from llmpo.stats.structured import candidate_pairs, characteristic_time, fisher_frank_wolfe

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


def factor_instance() -> StructuredInstance:
    """K = 60 = 4 × 5 × 3 factor levels, one-hot (d = 9), T* ≈ 1,287 (Fisher form).

    Level effects A: 0, .5, .2, −.3; B: 0, .8, .72, .3, −.2; C: 0, .4, .3. The best policy
    (A=1, B=1, C=1) leads its two closest rivals, which change one level (B=2, C=2), by 0.08 and
    0.1 in utility (p = .520 and .525); every other rival is at least 0.18 behind.
    """
    space = Structured.from_factors({"A": "0123", "B": "01234", "C": "012"})
    theta = np.array([0.5, 0.2, -0.3, 0.8, 0.72, 0.3, -0.2, 0.4, 0.3])
    return make_structured_instance(space.features, theta, list(space.policies))


def instance_of(n_policies: int, dimension: int) -> StructuredInstance:
    """The factor instance for 60x9, else :func:`benchmark_instance`."""
    if (n_policies, dimension) == (60, 9):
        return factor_instance()
    return benchmark_instance(n_policies, dimension)


def ideal_stop(instance: StructuredInstance, delta: float, precision: float = 1.0) -> float:
    """The t at which an oracle that samples exactly w*(θ) would stop under the mixture rule.

    With the allocation w* (``characteristic_time``), the GLR statistic of the binding rival is
    ≈ t/T* and the mixture threshold ≈ log(1/δ) + (ρ/2)‖θ‖² + ½ log det(I + t·A(w*)/ρ), A(w*) the
    Jaakkola–Jordan information per comparison; the root of the difference in t is a floor
    for any sampling rule that tracks w* (no noise, no exploration), showing how much of the
    gap to T*·log(1/δ) the threshold alone explains.
    """
    allocation = characteristic_time(instance.features, instance.theta)
    used = allocation.shares > 0
    z = instance.features[allocation.rows[used]] - instance.features[allocation.cols[used]]
    curvature = allocation.shares[used] * jaakkola_jordan_curvature(z @ instance.theta)
    information = (z.T * curvature) @ z
    theta = instance.theta
    identity = np.eye(theta.size)

    def excess(t: float) -> float:
        regret = 0.5 * precision * theta @ theta + 0.5 * np.linalg.slogdet(
            identity + t * information / precision
        )[1]
        return t / allocation.t_star - math.log(1.0 / delta) - regret

    return float(brentq(excess, 1.0, 1e12))


def threshold_table(
    sizes: tuple[tuple[int, int], ...], thresholds: list[str], reps: int, large_reps: int,
    slope: bool, workers: int,
) -> None:
    """Mean comparisons at δ = 0.05 and the ratio to T*·log(1/δ), per stopping threshold."""
    print("| K | d | threshold | T* | comparisons (δ = 0.05) | ratio to T*·log(1/δ) | "
          "slope/T* | errors | reps | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n_policies, dimension in sizes:
        instance = instance_of(n_policies, dimension)
        count = reps if n_policies <= 100 else large_reps
        for threshold in thresholds:
            start = time.perf_counter()
            summary = simulate(
                instance, "llmpo", 0.05, count, seed=0, workers=workers, threshold=threshold
            )
            slope_cell = "—"
            if slope:
                means = [
                    simulate(instance, "llmpo", delta, count, seed=0, workers=workers,
                             threshold=threshold)["mean_comparisons"]
                    for delta in (1e-2, 1e-6)
                ]
                slope_cell = f"{(means[1] - means[0]) / math.log(1e4) / summary['t_star']:.2f}"
            print(
                f"| {n_policies:,} | {dimension} | {threshold} | {summary['t_star']:,.1f} | "
                f"{summary['mean_comparisons']:,.0f} ± {summary['mean_comparisons_sem']:,.0f} | "
                f"{summary['ratio_to_bound']:.2f} | {slope_cell} | {summary['errors']} | {count} | "
                f"{time.perf_counter() - start:,.0f} |", flush=True,
            )
        ideal = ideal_stop(instance, 0.05)
        print(
            f"| {n_policies:,} | {dimension} | mixture, ideal sampling of w* | "
            f"{summary['t_star']:,.1f} | {ideal:,.0f} | "
            f"{ideal / (summary['t_star'] * math.log(20.0)):.2f} | — | — | — | — |", flush=True,
        )


def run(
    instance: StructuredInstance, space, strategy: str, delta: float, seed: int,
    budget: int | None = None,
) -> tuple[int, bool, float]:
    """One experiment: comparisons, certified, CPU seconds in ask + tell (process time, so that
    other jobs on a shared machine do not inflate it)."""
    experiment = Experiment(space, delta, strategy, seed=seed, max_comparisons=budget)
    environment = StructuredEnvironment(instance, seed)
    elapsed = 0.0
    while not experiment.done:
        start = time.process_time()
        (a, b), = experiment.ask()
        elapsed += time.process_time() - start
        outcome = environment.outcome(a, b)
        start = time.process_time()
        experiment.tell(a, b, outcome)
        elapsed += time.process_time() - start
    certified = experiment.model.is_certified()
    if certified and experiment.model.leader != instance.best:
        print(f"  (error: seed {seed} certified policy {experiment.model.leader})")
    return experiment.n_comparisons, certified, elapsed


def mean_cell(results: list[tuple[int, bool, float]], budget: int | None) -> str:
    counts = [n for n, _, _ in results]
    if budget is not None and not all(certified for _, certified, _ in results):
        return f"> {budget:,} ({sum(c for _, c, _ in results)}/{len(results)} certified)"
    return f"{np.mean(counts):,.0f}"


def unstructured_lower_bound(instance: StructuredInstance, delta: float) -> float:
    """A lower bound on E[τ] of every δ-correct procedure that ignores the features.

    Without structure any win-probability matrix is possible, so for each rival j the instance
    where j ties every policy it loses to (q_jk = ½) is an alternative with another winner. The
    change-of-measure inequality (Garivier & Kaufmann 2016, Lemma 1) gives
    Σ_k E[N_jk]·kl(p_jk, ½) ≥ kl(δ, 1 − δ), and kl(p_jk, ½) ≤ kl(σ(u_j − u_best), ½), so
    E[N_j] ≥ kl(δ, 1 − δ)/kl(σ(u_j − u_best), ½); each comparison involves two policies, so
    E[τ] ≥ ½ Σ_j kl(δ, 1 − δ)/kl(σ(u_j − u_best), ½). O(K), so it covers K = 10,000.
    """
    utilities = instance.features @ instance.theta
    best = int(np.argmax(utilities))
    others = np.delete(utilities, best)
    divergence = np.asarray(kl_bernoulli(expit(others - utilities[best]), 0.5))
    return 0.5 * float(np.sum(kl_confidence(delta) / divergence))


def uniform_estimate(instance: StructuredInstance, t_star: float, structured_mean: float) -> float:
    """Uniform's comparisons estimated as structured mean × T_uniform / T* (Fisher form).

    T_uniform = max_j 2 y_jᵀH⁻¹y_j / Δ_j² with H the Fisher information of the uniform
    allocation over all pairs, estimated from 200,000 random pairs: the characteristic time of
    uniform sampling under the same stopping rule, scaled by the overhead that structured LLM-PO
    shows over its own T*. Reported next to the measured value wherever uniform is run, as a check
    of the method.
    """
    rng = np.random.default_rng(0)
    k = instance.n_policies
    a = rng.integers(0, k, size=200_000)
    b = rng.integers(0, k, size=200_000)
    keep = a != b
    z = instance.features[a[keep]] - instance.features[b[keep]]
    p = expit(z @ instance.theta)
    information = (z.T * (p * (1.0 - p))) @ z / z.shape[0]
    gaps = instance.features[instance.best] - np.delete(instance.features, instance.best, axis=0)
    solved = gaps @ np.linalg.inv(information)
    quadratic = np.einsum("jd,jd->j", solved, gaps)
    t_uniform = float(np.max(2.0 * quadratic / (gaps @ instance.theta) ** 2))
    return structured_mean * t_uniform / t_star


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="replications at K ≤ 100")
    parser.add_argument("--large-reps", type=int, default=2, help="replications at K ≥ 1000")
    parser.add_argument("--sizes", type=str, default=None, help="e.g. 20x4,100x6")
    parser.add_argument(
        "--tracking-max", type=int, default=None, help="run llmpo-tracking only up to this K"
    )
    parser.add_argument(
        "--thresholds", type=str, default=None,
        help="e.g. universal,mixture,hybrid: the per-threshold table instead of the default one",
    )
    parser.add_argument("--slope", action="store_true", help="with --thresholds: the slope too")
    parser.add_argument("--workers", type=int, default=1, help="with --thresholds")
    args = parser.parse_args()
    sizes = SIZES if args.sizes is None else tuple(
        tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")
    )
    if args.thresholds is not None:
        threshold_table(
            sizes, args.thresholds.split(","), args.reps, args.large_reps, args.slope, args.workers
        )
        return
    rows = []
    for n_policies, dimension in sizes:
        instance = benchmark_instance(n_policies, dimension)
        start, wall = time.process_time(), time.perf_counter()
        pairs = candidate_pairs(instance.features, instance.theta)
        allocation = fisher_frank_wolfe(
            instance.features, instance.theta, pairs, instance.best, iterations=200
        )
        resolve = time.process_time() - start
        print(
            f"K = {n_policies}: {pairs[0].size:,} candidate pairs, re-solve {resolve:.2f} s CPU "
            f"({time.perf_counter() - wall:.2f} s wall)", flush=True,
        )
        t_star = allocation.t_star
        reps = args.reps if n_policies <= 100 else args.large_reps
        seeds = range(reps)
        structured = [run(instance, instance.space(), "llmpo", 0.05, s) for s in seeds]
        tracking = (
            [run(instance, instance.space(), "llmpo-tracking", 0.05, s) for s in seeds]
            if args.tracking_max is None or n_policies <= args.tracking_max
            else []
        )
        structured_mean = float(np.mean([n for n, _, _ in structured]))
        estimate = uniform_estimate(instance, t_star, structured_mean)
        bound = unstructured_lower_bound(instance, 0.05)
        if n_policies <= 1000:
            # K = 1000: one replication with a budget of 5× (each baseline run is long).
            factor, base_seeds = (10, seeds) if n_policies <= 100 else (5, range(1))
            budget = int(factor * structured_mean)
            uniform = [
                run(instance, instance.space(), "uniform", 0.05, s, budget) for s in base_seeds
            ]
            unstructured = [
                run(instance, Unstructured(instance.policies), "llmpo", 0.05, s, budget)
                for s in base_seeds
            ]
            uniform_cell = f"{mean_cell(uniform, budget)} (est. {estimate:,.0f})"
            unstructured_cell = mean_cell(unstructured, budget)
        else:
            uniform_cell = f"est. {estimate:,.0f}"
            unstructured_cell = "not run (K×K statistics)"
        low = [run(instance, instance.space(), "llmpo", 1e-2, s)[0] for s in seeds]
        high = [run(instance, instance.space(), "llmpo", 1e-6, s)[0] for s in seeds]
        slope = (np.mean(high) - np.mean(low)) / (math.log(1e6) - math.log(1e2)) / t_star

        def per_decision(results: list[tuple[int, bool, float]]) -> float:
            return 1e3 * sum(e for _, _, e in results) / sum(n for n, _, _ in results)

        rows.append(
            f"| {n_policies} | {dimension} | {t_star:,.1f} | {resolve:.2f} | "
            f"{structured_mean:,.0f} | {mean_cell(tracking, None) if tracking else 'not run'} | "
            f"{uniform_cell} | {unstructured_cell} | ≥ {bound:,.0f} | {slope:.2f} | "
            f"{per_decision(structured):.2f} | "
            f"{f'{per_decision(tracking):.2f}' if tracking else '—'} | {reps} |"
        )
        print(rows[-1], flush=True)
    print()
    print(
        "| K | d | T* (Fisher) | re-solve (s) | llmpo | llmpo-tracking | uniform | "
        "unstructured llmpo | any unstructured (bound) | slope/T* | ms/decision llmpo | "
        "ms/decision tracking | reps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
