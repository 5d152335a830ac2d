"""Monte Carlo checks of structured LLM-PO: δ-correctness and the saving over unstructured."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from llmpo import Experiment, Structured, Unstructured
from llmpo.environments.structured import StructuredEnvironment
from llmpo.harness.instances import StructuredInstance, make_structured_instance


def bt5() -> StructuredInstance:
    utilities = np.array([1.0, 0.8, 0.6, 0.4, 0.2])
    return make_structured_instance(np.eye(5)[:, :4], utilities[:4] - utilities[4])


def feat10() -> StructuredInstance:
    x = np.random.default_rng(0).normal(size=(10, 3))
    return make_structured_instance(
        x / np.linalg.norm(x, axis=1, keepdims=True), [1.0, 0.5, -0.3]
    )


def factors100() -> StructuredInstance:
    """K = 100 policies = 4 models × 5 prompts × 5 temperatures, one-hot (d = 11); T* ≈ 96."""
    space = Structured.from_factors(
        {"model": list("ABCD"), "prompt": list("abcde"), "temperature": list("01234")}
    )
    theta = np.array([0.3, 0.8, 0.4, 0.2, -0.1, 0.7, 0.1, 0.6, -0.2, 0.0, 0.15])
    return make_structured_instance(space.features, theta, list(space.policies))


def random100() -> StructuredInstance:
    """K = 100 policies with d = 6 continuous features; best-vs-second gap 0.29 (p = .57)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)) / np.sqrt(6)
    theta = rng.normal(size=6)
    return make_structured_instance(x, theta * 1.5 / np.linalg.norm(theta))


def run(
    instance: StructuredInstance,
    space,
    delta: float,
    seed: int,
    max_comparisons=None,
    epsilon: float = 0.0,
) -> tuple[int, int, bool]:
    """One experiment: (answer, comparisons, certified)."""
    experiment = Experiment(
        space, delta, seed=seed, max_comparisons=max_comparisons, epsilon=epsilon
    )
    environment = StructuredEnvironment(instance, seed)
    while not experiment.done:
        for a, b in experiment.ask():
            experiment.tell(a, b, environment.outcome(a, b))
    result = experiment.result
    return result.best, result.n_comparisons, result.certified


@pytest.mark.slow
@pytest.mark.parametrize("make_instance", [bt5, feat10, factors100], ids=lambda f: f.__name__)
def test_structured_llmpo_is_delta_correct(make_instance):
    """δ = 0.1, 100 replications each: one-sided binomial test at 1% of error rate ≤ δ (it would
    fail from 18 errors on). The default threshold (``hybrid-lean``: universal inference at 0.9δ
    or a direct test per rival at 0.1δ) is conservative, so ~0 errors are expected; the test
    guards against a wrong statistic, threshold or δ split."""
    instance = make_instance()
    errors = 0
    for seed in range(100):
        answer, _, certified = run(instance, instance.space(), 0.1, seed)
        assert certified
        errors += answer != instance.best
    assert binomtest(errors, 100, 0.1, alternative="greater").pvalue > 0.01


@pytest.mark.slow
def test_epsilon_optimal_identification_is_delta_correct():
    """ε = 0.05 (utility margin γ = logit .55 = 0.2), δ = 0.1, 100 replications, one-hot BT with
    utilities 1, .95, .9, .78, .6, .4, .2, 0: policies 0–2 are ε-optimal, policy 3 just is not
    (0.22 behind). An error is certifying a policy outside 0–2; one-sided binomial test at 1%."""
    utilities = np.array([1.0, 0.95, 0.9, 0.78, 0.6, 0.4, 0.2, 0.0])
    instance = make_structured_instance(np.eye(8)[:, :7], utilities[:7])
    errors = 0
    for seed in range(100):
        answer, _, certified = run(instance, instance.space(), 0.1, seed, epsilon=0.05)
        assert certified
        errors += answer not in (0, 1, 2)
    assert binomtest(errors, 100, 0.1, alternative="greater").pvalue > 0.01


@pytest.mark.slow
def test_structure_needs_at_most_a_third_of_the_unstructured_comparisons():
    """K = 100, d = 6, δ = 0.05, 5 seeds. Unstructured LLM-PO gets a budget of 3× the structured
    mean; a run that has not certified by then needs more than the budget, so it counts as
    budget + 1 in a lower bound of the unstructured mean."""
    instance = random100()
    structured = [run(instance, instance.space(), 0.05, seed) for seed in range(5)]
    assert all(best == instance.best and certified for best, _, certified in structured)
    structured_mean = np.mean([n for _, n, _ in structured])
    budget = math.ceil(3 * structured_mean)
    unstructured = [
        run(instance, Unstructured(instance.policies), 0.05, seed, max_comparisons=budget)
        for seed in range(5)
    ]
    lower = [n if certified else budget + 1 for _, n, certified in unstructured]
    unstructured_lower = np.mean(lower)
    assert structured_mean <= unstructured_lower / 3
