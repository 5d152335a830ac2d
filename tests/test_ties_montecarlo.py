"""Monte Carlo of tie-aware statistics (docs/ties.md): on tie-heavy instances and on the bundled
replay, the decisive statistic certifies with fewer comparisons, by at least 0.8× the ratio of the
two characteristic times T*_half / T*_decisive, and its error rate stays ≤ δ.

The tie-heavy and replay checks are slow (minutes: the ``half`` runs at 85% ties need tens of
thousands of comparisons each); the no-tie check is fast.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from llmpo.environments.replay import read_judgments
from llmpo.harness.instances import (
    UnstructuredInstance,
    bradley_terry_matrix,
    make_unstructured_instance,
    tied_instance,
)
from llmpo.harness.reference import reference_instance
from llmpo.harness.simulate import simulate
from llmpo.stats.unstructured import optimal_allocation

DELTA = 0.1
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def tie_heavy(n_policies: int, tie_prob: float) -> UnstructuredInstance:
    """The Bradley–Terry instance of benchmarks/unstructured.py on the decisive outcomes (closest
    rival P(win | decisive) = 0.6), with ``tie_prob`` ties on every pair."""
    utilities = [0.0] + [-(0.405 + 0.1 * (k - 1)) for k in range(1, n_policies)]
    return tied_instance(bradley_terry_matrix(utilities), tie_prob)


def replay_instance(path: Path) -> UnstructuredInstance:
    """The law a replay draws from: each pair's empirical win, tie and loss frequencies."""
    judgments = read_judgments(path)
    names = list(dict.fromkeys(n for j in judgments for n in (j.policy_a, j.policy_b)))
    k = len(names)
    tallies: dict[tuple[int, int], Counter] = {}
    for j in judgments:
        a, b, outcome = names.index(j.policy_a), names.index(j.policy_b), j.outcome
        if a > b:
            a, b, outcome = b, a, 1.0 - outcome
        tallies.setdefault((a, b), Counter())[outcome] += 1
    win_prob, tie_prob = np.full((k, k), 0.5), np.zeros((k, k))
    for (a, b), tally in tallies.items():
        total = sum(tally.values())
        win_prob[a, b] = sum(outcome * count for outcome, count in tally.items()) / total
        win_prob[b, a] = 1.0 - win_prob[a, b]
        tie_prob[a, b] = tie_prob[b, a] = tally[0.5] / total
    return make_unstructured_instance(win_prob, names, tie_prob)


def check_ties_pay_off(instance: UnstructuredInstance, reps: int, half_reps: int) -> dict:
    ratio_t = (
        optimal_allocation(instance.win_prob, tie_prob=instance.tie_prob, ties="half").t_star
        / optimal_allocation(instance.win_prob, tie_prob=instance.tie_prob).t_star
    )
    decisive = simulate(instance, "llmpo", DELTA, reps, seed=14, workers=2)
    half = simulate(instance, "llmpo", DELTA, half_reps, seed=14, workers=2, ties="half")
    ratio = half["mean_comparisons"] / decisive["mean_comparisons"]
    assert ratio >= 0.8 * ratio_t, (ratio, ratio_t)
    # Error rate ≤ δ: one-sided binomial test at 1% (errors are far rarer in practice).
    for summary in (decisive, half):
        assert binomtest(summary["errors"], summary["reps"], DELTA, "greater").pvalue > 0.01
    assert decisive["mean_generation_calls"] == 2 * decisive["mean_comparisons"]
    figures = {
        "comparisons_decisive": decisive["mean_comparisons"],
        "comparisons_half": half["mean_comparisons"],
        "ratio": ratio,
        "ratio_t_star": ratio_t,
        "errors_decisive": f"{decisive['errors']}/{decisive['reps']}",
        "errors_half": f"{half['errors']}/{half['reps']}",
    }
    print(figures)  # the measured figures, shown with pytest -s
    return figures


@pytest.mark.slow
@pytest.mark.parametrize(("n_policies", "tie_prob"), [(4, 0.6), (4, 0.85), (10, 0.6), (10, 0.85)])
def test_decisive_statistic_saves_comparisons_on_tie_heavy_instances(n_policies, tie_prob):
    check_ties_pay_off(tie_heavy(n_policies, tie_prob), reps=100, half_reps=20)


@pytest.mark.slow
def test_decisive_statistic_saves_comparisons_on_the_bundled_replay():
    instance = replay_instance(EXAMPLES / "judgments.jsonl")
    assert np.max(instance.tie_prob) > 0  # the replay has ties (≈ 10%)
    check_ties_pay_off(instance, reps=200, half_reps=200)


@pytest.mark.parametrize("name", ["BT5", "AB4"])
def test_no_ties_no_change(name):
    """Without ties the two statistics are the same function of the outcomes: the same runs,
    comparison for comparison (so no benchmark without ties can change)."""
    instance = reference_instance(name)
    assert not np.any(instance.tie_prob)
    decisive = simulate(instance, "llmpo", DELTA, 4, seed=3)
    half = simulate(instance, "llmpo", DELTA, 4, seed=3, ties="half")
    assert decisive["mean_comparisons"] == pytest.approx(half["mean_comparisons"], rel=1e-9)
    assert decisive["errors"] == half["errors"]
