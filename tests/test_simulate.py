"""Monte Carlo claims of issue 2: δ-correctness, efficiency against uniform and oracle, batches.

Every test uses fixed seeds. δ-correctness is a one-sided binomial test at level 1% of
H0: error rate ≤ δ; efficiency compares means over the same seeds (common random numbers).
The runs of hundreds of replications take minutes: they are marked ``slow`` (run by CI,
``.ci/run``; locally ``pytest -m slow tests/test_simulate.py``).
"""

import numpy as np
import pytest
from scipy.stats import binomtest

from llmpo.harness.instances import make_unstructured_instance
from llmpo.harness.reference import reference_instance
from llmpo.harness.simulate import SimulationSpec, is_correct, run_replications, simulate

DELTA = 0.1


def ties_instance():
    """BT5 with ties: 20% on every pair, 40% between the two best."""
    instance = reference_instance("BT5")
    ties = np.full((5, 5), 0.2)
    ties[0, 1] = ties[1, 0] = 0.4
    return make_unstructured_instance(instance.win_prob, tie_prob=ties)


INSTANCES = {
    "BT5 (rival at p = 0.55)": lambda: reference_instance("BT5"),
    "BT10 (K = 10)": lambda: reference_instance("BT10"),
    "BT5 with ties": ties_instance,
    "CYC4 (intransitive non-winners)": lambda: reference_instance("CYC4"),
}


@pytest.fixture(scope="module")
def llmpo_runs():
    return {
        name: simulate(make(), "llmpo", DELTA, reps=200, seed=1, workers=2)
        for name, make in INSTANCES.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", INSTANCES)
def test_llmpo_is_delta_correct(llmpo_runs, name):
    summary = llmpo_runs[name]
    test = binomtest(summary["errors"], summary["reps"], DELTA, alternative="greater")
    assert test.pvalue > 0.01, summary
    assert summary["error_rate_ci95"][0] <= summary["error_rate"] <= summary["error_rate_ci95"][1]


@pytest.mark.slow
@pytest.mark.parametrize("name", INSTANCES)
def test_llmpo_beats_uniform_and_is_within_1_3_of_oracle(llmpo_runs, name):
    instance = INSTANCES[name]()
    adaptive = llmpo_runs[name]
    oracle = simulate(instance, "oracle", DELTA, reps=100, seed=1, workers=2)
    # Uniform needs 5–25× more comparisons here. Capping its runs at 3× LLM-PO's mean keeps the
    # test fast and loses nothing: a capped mean above LLM-PO's implies the true mean is too.
    cap = int(3 * adaptive["mean_comparisons"])
    uniform = simulate(instance, "uniform", DELTA, reps=8, seed=1, workers=2, max_comparisons=cap)
    assert adaptive["mean_comparisons"] < uniform["mean_comparisons"]
    assert adaptive["mean_comparisons"] <= 1.3 * oracle["mean_comparisons"], (adaptive, oracle)
    assert adaptive["t_star"] == oracle["t_star"]


@pytest.mark.slow
def test_batches_of_16_stay_correct_and_cost_at_most_10_percent_more():
    """Paired by replication seed (common random numbers per pair): mean extra cost ≤ 10%."""
    instance = reference_instance("CYC4")
    reps = 600
    single = run_replications(SimulationSpec(instance, "llmpo", DELTA), reps, seed=2, workers=2)
    batched = run_replications(
        SimulationSpec(instance, "llmpo", DELTA, batch_size=16), reps, seed=2, workers=2
    )
    errors = sum(r.best != 0 for r in batched)
    assert binomtest(errors, reps, DELTA, alternative="greater").pvalue > 0.01
    extra = np.array(
        [b.n_comparisons - s.n_comparisons for b, s in zip(batched, single, strict=True)]
    )
    mean_single = np.mean([s.n_comparisons for s in single])
    upper = extra.mean() + 2.58 * extra.std(ddof=1) / np.sqrt(reps)  # one-sided 99.5% bound
    assert upper <= 0.10 * mean_single, (extra.mean(), upper, mean_single)


def test_same_numbers_whatever_the_worker_count():
    instance = reference_instance("BT4")
    one = simulate(instance, "llmpo", 0.2, reps=12, seed=5, workers=1)
    two = simulate(instance, "llmpo", 0.2, reps=12, seed=5, workers=2)
    for key in ("mean_comparisons", "median_comparisons", "error_rate", "error_rate_ci95"):
        assert one[key] == two[key]
    assert one["ratio_to_bound"] == pytest.approx(
        one["mean_comparisons"] / (one["t_star"] * np.log(5))
    )


@pytest.mark.slow
def test_class_b_is_far_cheaper_on_the_cycle_and_correct():
    instance = reference_instance("CYC4")
    class_a = simulate(instance, "llmpo", DELTA, reps=100, seed=3, workers=2)
    class_b = simulate(instance, "llmpo", DELTA, reps=100, seed=3, workers=2, assume_condorcet=True)
    assert class_b["t_star"] == pytest.approx(15.56, abs=0.01)
    assert binomtest(class_b["errors"], 100, DELTA, alternative="greater").pvalue > 0.01
    assert class_b["mean_comparisons"] < 0.5 * class_a["mean_comparisons"]


def test_simulate_refuses_unknown_strategy():
    with pytest.raises(ValueError, match="strategy: unknown 'best'"):
        simulate(reference_instance("BT4"), "best", 0.1, reps=1)


@pytest.mark.slow
def test_epsilon_optimal_stopping_is_delta_correct():
    """ε = 0.05: policy 1 (p_10 = 0.43) is not ε-good, policy 0 is; 300 runs, binomial test."""
    instance = make_unstructured_instance(
        [[0.5, 0.57, 0.8, 0.75], [0.43, 0.5, 0.8, 0.7], [0.2, 0.2, 0.5, 0.6], [0.25, 0.3, 0.4, 0.5]]
    )
    summary = simulate(instance, "llmpo", DELTA, reps=300, seed=6, workers=2, epsilon=0.05)
    assert binomtest(summary["errors"], 300, DELTA, alternative="greater").pvalue > 0.01
    exact = simulate(instance, "llmpo", DELTA, reps=100, seed=6, workers=2)
    assert summary["mean_comparisons"] < exact["mean_comparisons"]


def test_epsilon_is_judged_on_the_decisive_scale():
    """P(1 ≻ 0) = 0.48 with 60% ties is P(1 wins | not a tie) = 0.45: ε-good at ε = 0.05 when ties
    count ½, not on the decisive scale (which needs > ½ − ε = 0.45)."""
    instance = make_unstructured_instance(
        [[0.5, 0.52, 0.8], [0.48, 0.5, 0.8], [0.2, 0.2, 0.5]],
        tie_prob=[[0, 0.6, 0], [0.6, 0, 0], [0, 0, 0]],
    )
    assert is_correct(instance, 1, 0.05, ties="half")
    assert not is_correct(instance, 1, 0.05, ties="decisive")
    assert is_correct(instance, 0, 0.05) and not is_correct(instance, 1, 0.0, ties="half")


def test_grid_baseline_pays_k_times_n_generations_and_certifies_with_enough_tasks():
    instance = make_unstructured_instance([[0.5, 0.8, 0.8], [0.2, 0.5, 0.5], [0.2, 0.5, 0.5]])
    few = simulate(instance, "grid", DELTA, reps=5, seed=1, tasks=4)
    assert few["mean_generation_calls"] == 3 * 4 and few["mean_judge_calls"] == 3 * 4
    assert few["certified_rate"] == 0.0 and few["grid_tasks"] == 4
    many = simulate(instance, "grid", DELTA, reps=5, seed=1, tasks=300)
    assert many["certified_rate"] == 1.0 and many["errors"] == 0
    with pytest.raises(ValueError, match="tasks must be a positive integer"):
        simulate(instance, "grid", DELTA, reps=1, tasks=0)
    with pytest.raises(ValueError, match="ties: unknown"):
        simulate(instance, "llmpo", DELTA, reps=1, ties="some")
