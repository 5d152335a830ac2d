"""Structured sampling rules: forced exploration, best response, tracking."""

from __future__ import annotations

import numpy as np

from llmpo.models.structured import StructuredModel
from llmpo.stats.structured import AllocationSolver
from llmpo.stats.thresholds import UniversalInferenceThreshold
from llmpo.strategies.structured import BestResponse, Tracking, spanning_pairs


def feat10() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(10, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array([1.0, 0.5, -0.3])


def simulate(model: StructuredModel, rule, theta: np.ndarray, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(steps):
        a, b = rule.select(model, rng)
        p = 1 / (1 + np.exp(-(model.features[a] - model.features[b]) @ theta))
        model.tell(a, b, float(rng.random() < p))
        chosen.append((min(a, b), max(a, b)))
    return chosen


def test_spanning_pairs_span_the_feature_space():
    x = np.random.default_rng(1).normal(size=(40, 6))
    pairs = spanning_pairs(x)
    assert len(pairs) == 6
    differences = np.array([x[b] - x[a] for a, b in pairs])
    assert np.linalg.matrix_rank(differences) == 6


def test_exploration_pairs_come_first_and_keep_growing_like_root_t():
    x, theta = feat10()
    model = StructuredModel(x, 0.05, UniversalInferenceThreshold())
    rule = BestResponse()
    chosen = simulate(model, rule, theta, 3)
    assert set(chosen) == {(min(a, b), max(a, b)) for a, b in spanning_pairs(x)}
    simulate(model, rule, theta, 2000, seed=1)
    floor = np.sqrt(model.n_told) - 3 / 2
    assert all(model.effective_count(a, b) >= floor - 1 for a, b in spanning_pairs(x))


def test_best_response_concentrates_on_the_optimal_pairs():
    """On FEAT10, w* puts 68% of the weight on the pair (6, 8); the best response should spend
    a large share there too once θ̂ is accurate."""
    x, theta = feat10()
    model = StructuredModel(x, 0.05, UniversalInferenceThreshold())
    chosen = simulate(model, BestResponse(), theta, 3000)
    optimal = AllocationSolver(x, form="exact", tolerance=1e-4).solve(theta)
    top_pair, top_share = optimal.support()[0][:2], optimal.support()[0][2]
    share = sum(pair == top_pair for pair in chosen[1000:]) / 2000
    assert top_pair == (6, 8) and top_share > 0.6
    assert share > 0.4


def test_tracking_follows_the_plugin_allocation():
    x, theta = feat10()
    model = StructuredModel(x, 0.05, UniversalInferenceThreshold())
    chosen = simulate(model, Tracking(), theta, 2000)
    allocation = model.plugin_allocation()
    counts = {}
    for pair in chosen:
        counts[pair] = counts.get(pair, 0) + 1
    for a, b, share in allocation.support(0.05):
        assert counts.get((a, b), 0) / 2000 > 0.5 * share


def test_batches_spread_over_pairs_through_pending_counts():
    x, theta = feat10()
    model = StructuredModel(x, 0.05, UniversalInferenceThreshold())
    rule = BestResponse()
    simulate(model, rule, theta, 300)
    batch = []
    for _ in range(16):
        pair = rule.select(model, np.random.default_rng(0))
        model.mark_pending(*pair)
        batch.append(pair)
    assert len(set(batch)) > 1
