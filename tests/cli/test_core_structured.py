"""`llmpo bound` and `llmpo simulate` on structured instances (features and θ)."""

import json

import numpy as np
import pytest

from tests.cli.test_core import llmpo


@pytest.fixture
def feat10_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path / "feat10.json"
    path.write_text(json.dumps({"features": x.tolist(), "theta": [1.0, 0.5, -0.3]}))
    return path


def test_bound_of_a_structured_instance_gives_the_golden_values(feat10_file):
    done = llmpo("bound", str(feat10_file), "--delta", "0.01", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["best"] == "p2" and summary["class"] == "structured"
    assert round(summary["t_star"], 1) == 127.4 and summary["form"] == "exact"
    assert summary["lower_bound"] == pytest.approx(summary["t_star"] * summary["kl_delta"])
    assert sum(row["share"] for row in summary["proportions"]) == pytest.approx(1.0, abs=1e-4)


def test_bound_refuses_a_tie_for_the_best_utility(tmp_path):
    path = tmp_path / "tie.json"
    path.write_text(json.dumps({"features": [[1, 0], [0, 1], [0, 0]], "theta": [1, 1]}))
    done = llmpo("bound", str(path))
    assert done.returncode == 1 and "share the best utility" in done.stderr.replace("\n", " ")


@pytest.mark.parametrize("strategy", ["llmpo", "uniform", "oracle", "llmpo-unstructured"])
def test_simulate_accepts_structured_instances(feat10_file, strategy):
    done = llmpo(
        "simulate", str(feat10_file), "--strategy", strategy, "--reps", "1", "--delta", "0.1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["errors"] == 0 and summary["t_star"] == pytest.approx(127.4, rel=1e-3)
    expected = "kt" if strategy == "llmpo-unstructured" else "hybrid-lean"
    assert summary["threshold"] == expected
    assert summary["ratio_to_bound"] > 1


def test_simulate_refuses_unstructured_baselines_on_structured_instances(feat10_file):
    done = llmpo("simulate", str(feat10_file), "--strategy", "knockout", "--reps", "1")
    assert done.returncode == 2 and "llmpo-unstructured" in done.stderr.replace("\n", " ")


def test_simulate_runs_a_structured_instance_above_the_dense_result_limit(tmp_path):
    # K = 200 > DENSE_RESULT_MAX_POLICIES: the result carries no K×K counts; simulate used to
    # crash on them after running every replication.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)) / np.sqrt(3)
    path = tmp_path / "feat200.json"
    path.write_text(json.dumps({"features": x.tolist(), "theta": [2.0, -1.0, 0.5]}))
    done = llmpo("simulate", str(path), "--reps", "1", "--delta", "0.1", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["reps"] == 1 and summary["errors"] == 0 and summary["mean_comparisons"] > 0
