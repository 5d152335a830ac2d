"""δ-correctness of the structured space's mixture, hybrid and hybrid-lean thresholds (issue 18), by
Monte Carlo.

δ = 0.1, fixed seeds, one-sided binomial test at 1% of H0: error rate ≤ δ, on four instances:
one-hot BT5 (d = 4, a rival at p = .55), 100 factor policies (d = 11), 60 factor policies with
two close rivals (d = 9) and 30 policies with continuous features and two close rivals (d = 12).
The thresholds are conservative, so ~0 errors are expected; the tests guard against a wrong
statistic, threshold or direct test (a threshold without its regret fails the check of
tests/models/test_structured_mixture.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from llmpo.harness.instances import StructuredInstance, make_structured_instance
from llmpo.harness.simulate import simulate
from llmpo.spaces import Structured
from tests.test_structured_correctness import bt5, factors100

DELTA = 0.1


def factors60_close() -> StructuredInstance:
    """4 × 5 × 3 factor levels (d = 9); the best leads two one-level rivals by .25 and .3."""
    space = Structured.from_factors({"A": "0123", "B": "01234", "C": "012"})
    theta = np.array([0.5, 0.2, -0.3, 0.8, 0.55, 0.3, -0.2, 0.4, 0.1])
    return make_structured_instance(space.features, theta, list(space.policies))


def continuous30_close() -> StructuredInstance:
    """30 policies, x ~ N(0, I/12); the best leads the next two by .3 and .35 in utility."""
    rng = np.random.default_rng(18)
    x = rng.normal(size=(30, 12)) / np.sqrt(12)
    theta = rng.normal(size=12)
    theta *= 1.5 / np.linalg.norm(theta)
    order = np.argsort(-(x @ theta))
    unit = theta / (theta @ theta)
    for rank, lead in ((1, 0.3), (2, 0.35)):
        utilities = x @ theta
        x[order[rank]] += (utilities[order[0]] - lead - utilities[order[rank]]) * unit
    return make_structured_instance(x, theta)


INSTANCES = {
    "bt5": (bt5, 60),
    "factors100": (factors100, 60),
    "factors60-close": (factors60_close, 60),
    "continuous30-close": (continuous30_close, 60),
}


@pytest.mark.slow
@pytest.mark.parametrize("threshold", ["mixture", "hybrid"])
@pytest.mark.parametrize("name", list(INSTANCES))
def test_structured_thresholds_are_delta_correct(name, threshold):
    make, reps = INSTANCES[name]
    instance = make()
    summary = simulate(instance, "llmpo", DELTA, reps, seed=18, workers=2, threshold=threshold)
    assert summary["uncertified"] == 0
    assert binomtest(summary["errors"], reps, DELTA, alternative="greater").pvalue > 0.01, summary


@pytest.mark.slow
@pytest.mark.parametrize("name", ["factors60-close", "continuous30-close"])
def test_hybrid_lean_is_delta_correct(name):
    """The hybrid-lean threshold (universal-inference route at 0.9δ, direct route at 0.1δ)
    on the two close-rival instances, where both routes certify rivals (CI: ``-k hybrid``)."""
    make, reps = INSTANCES[name]
    summary = simulate(make(), "llmpo", DELTA, reps, seed=18, workers=2, threshold="hybrid-lean")
    assert summary["threshold"] == "hybrid-lean"
    assert summary["uncertified"] == 0
    assert binomtest(summary["errors"], reps, DELTA, alternative="greater").pvalue > 0.01, summary


def test_close_rival_instances_are_what_they_claim():
    """The two close rivals lead every other rival, so the instances test what they name."""
    for make, leads in ((factors60_close, (0.25, 0.3)), (continuous30_close, (0.3, 0.35))):
        instance = make()
        utilities = np.sort(instance.features @ instance.theta)[::-1]
        np.testing.assert_allclose(utilities[0] - utilities[1:3], leads, atol=1e-9)
        assert utilities[0] - utilities[3] > leads[1]
