"""The Structured space: validation, factor encoding, instances and the ask/tell loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmpo import Experiment, Structured
from llmpo.environments.structured import StructuredEnvironment
from llmpo.harness.instances import (
    InstanceError,
    StructuredInstance,
    load_instance,
    make_structured_instance,
)


def feat10() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(10, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array([1.0, 0.5, -0.3])


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([[1.0, 0.0], [0.0, np.nan], [1.0, 1.0]], r"features\[1\]\[1\] .* finite"),
        ([[1.0, 2.0, 3.0]], "at least 2 policies"),
        ([1.0, 2.0, 3.0], "2-D array"),
        ([["a", "b"], ["c", "d"]], "array of numbers"),
        ([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], "'p0' and 'p2' have identical features"),
        # An intercept column: constant, so it cancels in every difference.
        ([[1.0, 0.2], [1.0, 0.5], [1.0, 0.9]], r"rank 1 < d = 2.*\+1·x0"),
        # Two proportional columns: only their combination is identified.
        ([[1.0, 2.0], [0.0, 0.0], [2.0, 4.0]], r"rank 1 < d = 2.*x0.*x1"),
    ],
)
def test_bad_feature_matrices_are_refused_with_a_clear_message(features, message):
    with pytest.raises(ValueError, match=message):
        Structured(features)


def test_one_hot_with_every_level_names_the_unidentifiable_direction():
    features = np.eye(3)  # every level of one factor: the columns sum to 1
    with pytest.raises(ValueError, match=r"\+1·x0 \+1·x1 \+1·x2.*one level of each one-hot"):
        Structured(features)


def test_names_must_match_the_rows():
    with pytest.raises(ValueError, match="policies: 2 names for 3 feature rows"):
        Structured([[0.0], [1.0], [2.0]], ["a", "b"])


def test_from_factors_encodes_each_factor_against_its_first_level():
    space = Structured.from_factors({"model": ["m1", "m2"], "prompt": ["a", "b", "c"]})
    assert space.n_policies == 6 and space.dimension == 3
    assert space.feature_names == ("model=m2", "prompt=b", "prompt=c")
    assert space.policies[0] == "m1|a"
    np.testing.assert_array_equal(space.features[space.policies.index("m2|c")], [1, 0, 1])
    listed = Structured.from_factors([{"model": "m1", "t": "0"}, {"model": "m2", "t": "1"},
                                      {"model": "m2", "t": "0"}])
    assert listed.dimension == 2
    with pytest.raises(ValueError, match=r"factors\[1\]"):
        Structured.from_factors([{"model": "m1", "t": "0"}, {"model": "m2"}])


def test_from_factors_refuses_confounded_factors():
    # model and prompt always change together: their effects cannot be separated.
    with pytest.raises(ValueError, match=r"model=m2.*prompt=b"):
        Structured.from_factors([{"model": "m1", "prompt": "a"}, {"model": "m2", "prompt": "b"}])


# ---- instances -----------------------------------------------------------------------------------
def test_structured_instance_files(tmp_path):
    x, theta = feat10()
    path = tmp_path / "feat10.json"
    path.write_text(json.dumps({"features": x.tolist(), "theta": theta.tolist()}))
    instance = load_instance(path)
    assert isinstance(instance, StructuredInstance)
    assert instance.best == 2 and instance.n_policies == 10
    assert json.loads(json.dumps(instance.to_json()))["theta"] == theta.tolist()
    path.write_text(json.dumps({"features": x.tolist(), "theta": [1.0, 2.0]}))
    with pytest.raises(InstanceError, match=r"feat10.json: theta: has shape \(2,\)"):
        load_instance(path)
    path.write_text(json.dumps({"features": x.tolist()}))
    with pytest.raises(InstanceError, match="needs 'theta'"):
        load_instance(path)
    with pytest.raises(InstanceError, match="optimum is not unique"):
        make_structured_instance([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [1.0, 1.0])


# ---- the ask/tell loop ---------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["llmpo", "llmpo-tracking", "uniform"])
def test_experiment_certifies_the_best_policy(strategy):
    x, theta = feat10()
    instance = make_structured_instance(x, theta)
    experiment = Experiment(Structured(x), delta=0.05, strategy=strategy, seed=0)
    environment = StructuredEnvironment(instance, seed=0)
    while not experiment.done:
        for a, b in experiment.ask(n=4):
            if not experiment.done:  # the batch may outlive the certificate
                experiment.tell(a, b, environment.outcome(a, b))
    result = experiment.result
    assert result.certified and result.best == 2
    assert result.threshold == "hybrid-lean" and not result.threshold_heuristic
    assert min(result.statistics) > result.thresholds[0]
    assert result.win_prob_hat.shape == (10, 10) and result.counts.sum() == 2 * result.n_comparisons


def _run_to_the_end(experiment: Experiment, instance: StructuredInstance, seed: int):
    environment = StructuredEnvironment(instance, seed)
    while not experiment.done:
        for a, b in experiment.ask():
            experiment.tell(a, b, environment.outcome(a, b))
    return experiment.result


def test_epsilon_certifies_a_near_tie_sooner():
    # Policies 0 and 1 are 0.02 apart in utility; ε = 0.05 (γ = logit .55 = 0.2) accepts either,
    # while ε = 0 must separate them and is still uncertified after 3× as many comparisons.
    x = np.eye(4)[:, :3]
    instance = make_structured_instance(x, [1.0, 0.98, 0.3])
    near = _run_to_the_end(Experiment(Structured(x), 0.05, epsilon=0.05, seed=1), instance, 1)
    assert near.certified and near.best in (0, 1) and near.epsilon == 0.05
    exact = Experiment(Structured(x), 0.05, seed=1, max_comparisons=3 * near.n_comparisons)
    assert not _run_to_the_end(exact, instance, 1).certified


def test_universal_threshold_is_refused_by_the_unstructured_space():
    with pytest.raises(ValueError, match="structured space"):
        Experiment(3, delta=0.05, threshold="universal").tell(0, 1, 1.0)


def test_large_structured_results_have_no_dense_matrices_but_utilities_and_pairs():
    # K = 150 > DENSE_RESULT_MAX_POLICIES: no K×K matrices; per-rival figures, compared pairs and
    # utilities with intervals instead, all JSON-ready.
    from llmpo.experiment import DENSE_RESULT_MAX_POLICIES

    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 4))
    instance = make_structured_instance(x, [1.0, -0.5, 0.3, 0.8])
    assert instance.n_policies > DENSE_RESULT_MAX_POLICIES
    experiment = Experiment(instance.space(), 0.05, seed=0, max_comparisons=300)
    result = _run_to_the_end(experiment, instance, 0)
    assert result.win_prob_hat is None and result.counts is None
    assert sum(n for _, _, n, _ in result.compared_pairs) == result.n_comparisons
    compared = {(a, b): n for a, b, n, _ in result.compared_pairs}
    for rival, n in zip(result.rivals, result.rival_comparisons, strict=True):
        assert n == compared.get((min(result.best, rival), max(result.best, rival)), 0)
    assert result.utilities is not None and result.utility_intervals is not None
    assert result.utilities[result.best] == 0.0 and np.all(result.utilities <= 0.0)
    assert np.all(result.utility_intervals[:, 0] <= result.utilities)
    assert np.all(result.utilities <= result.utility_intervals[:, 1])
    # P̂(best ≻ rival) is σ of the utility gap.
    gaps = -result.utilities[result.rivals]
    np.testing.assert_allclose(result.rival_win_prob, 1 / (1 + np.exp(-gaps)))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["win_prob_hat"] is None and data["counts"] is None
    assert len(data["utilities"]) == 150 and len(data["rivals"]) == 149
    assert data["utilities"][result.best]["utility_vs_best"] == 0.0


def test_small_structured_results_keep_the_matrices_and_agree_with_them():
    x, theta = feat10()
    instance = make_structured_instance(x, theta)
    result = _run_to_the_end(Experiment(instance.space(), 0.05, seed=3), instance, 3)
    assert result.counts is not None and result.win_prob_hat is not None
    for rival, n, p in zip(
        result.rivals, result.rival_comparisons, result.rival_win_prob, strict=True
    ):
        assert n == result.counts[result.best, rival]
        assert p == pytest.approx(result.win_prob_hat[result.best, rival])
    assert len(result.to_dict()["utilities"]) == 10
