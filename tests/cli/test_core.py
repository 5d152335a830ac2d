"""The installed `llmpo` command: bound, simulate and demo, run as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

from llmpo.harness.instances import bradley_terry_matrix, tied_instance
from llmpo.harness.reference import reference_instance


def llmpo(*args: str) -> subprocess.CompletedProcess:
    # A narrow terminal: error lines must still come out whole (long tmp paths included).
    environment = {**os.environ, "COLUMNS": "60"}
    return subprocess.run(
        [sys.executable, "-m", "llmpo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )


@pytest.fixture
def cyc4_file(tmp_path):
    path = tmp_path / "cyc4.json"
    path.write_text(json.dumps(reference_instance("CYC4").to_json()))
    return path


def test_bound_json_gives_the_golden_values(cyc4_file):
    done = llmpo("bound", str(cyc4_file), "--delta", "0.01", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["best"] == "p0" and round(summary["t_star"], 1) == 149.0
    assert summary["lower_bound"] == pytest.approx(summary["t_star"] * summary["kl_delta"])
    assert sum(row["share"] for row in summary["proportions"]) == pytest.approx(1.0)
    class_b = json.loads(llmpo("bound", str(cyc4_file), "--assume-condorcet", "--json").stdout)
    assert round(class_b["t_star"], 1) == 15.6 and class_b["class"] == "B"
    table = llmpo("bound", str(cyc4_file))
    assert "T* = 149" in table.stdout


def test_bound_refuses_bad_instances(tmp_path):
    cycle = tmp_path / "cycle.json"
    cycle.write_text(json.dumps({"win_prob": [[0.5, 0.6, 0.3], [0.4, 0.5, 0.6], [0.7, 0.4, 0.5]]}))
    done = llmpo("bound", str(cycle))
    assert done.returncode != 0 and "no Condorcet winner" in done.stderr
    assert "Traceback" not in done.stderr
    skewed = tmp_path / "skewed.json"
    skewed.write_text(json.dumps({"win_prob": [[0.5, 0.7], [0.4, 0.5]]}))
    done = llmpo("bound", str(skewed))
    assert done.returncode == 2 and "must equal 1" in done.stderr


def test_simulate_json_keys(cyc4_file):
    done = llmpo(
        "simulate",
        str(cyc4_file),
        "--strategy",
        "oracle",
        "--delta",
        "0.1",
        "--reps",
        "6",
        "--seed",
        "4",
        "--workers",
        "2",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    for key in (
        "strategy",
        "delta",
        "reps",
        "error_rate",
        "error_rate_ci95",
        "mean_comparisons",
        "median_comparisons",
        "t_star",
        "lower_bound",
        "ratio_to_bound",
    ):
        assert key in summary
    assert summary["strategy"] == "oracle" and summary["reps"] == 6
    low, high = summary["error_rate_ci95"]
    assert 0.0 <= low <= summary["error_rate"] <= high <= 1.0
    done = llmpo("simulate", str(cyc4_file), "--strategy", "nope", "--reps", "1")
    assert done.returncode == 2 and "strategy: unknown 'nope'" in done.stderr


@pytest.fixture
def tied_file(tmp_path):
    """K = 4, decisive win probability 0.6 against the closest rival, 60% ties on every pair."""
    path = tmp_path / "tied.json"
    utilities = [0.0, -0.405, -0.505, -0.605]
    path.write_text(json.dumps(tied_instance(bradley_terry_matrix(utilities), 0.6).to_json()))
    return path


def test_bound_with_tie_probabilities_gives_both_characteristic_times(tied_file):
    summary = json.loads(llmpo("bound", str(tied_file), "--json").stdout)
    assert summary["ties"] == "decisive"
    assert summary["t_star"] == pytest.approx(262.524, abs=1e-3)
    assert summary["t_star_half"] == pytest.approx(661.653, abs=1e-3)
    assert all(row["tie_prob"] == pytest.approx(0.6) for row in summary["proportions"])
    half = json.loads(llmpo("bound", str(tied_file), "--ties", "half", "--json").stdout)
    assert half["t_star"] == pytest.approx(summary["t_star_half"])
    table = llmpo("bound", str(tied_file)).stdout
    assert "P(tie)" in table and "2.52×" in table and "generation calls" in table
    done = llmpo("bound", str(tied_file), "--ties", "quarter")
    assert done.returncode == 2 and "--ties must be decisive or half" in done.stderr


def test_simulate_reports_calls_and_the_grid_baseline(tied_file):
    common = ("--delta", "0.1", "--reps", "4", "--seed", "2", "--json")
    adaptive = json.loads(llmpo("simulate", str(tied_file), *common).stdout)
    assert adaptive["ties"] == "decisive"
    assert adaptive["mean_generation_calls"] == 2 * adaptive["mean_comparisons"]
    assert adaptive["certified_rate"] == 1.0
    grid = json.loads(
        llmpo("simulate", str(tied_file), "--strategy", "grid", "--tasks", "30", *common).stdout
    )
    # Every policy answers 30 tasks (120 generations); all 6 pairs judged on each (180).
    assert grid["mean_generation_calls"] == 120 and grid["mean_comparisons"] == 180
    assert grid["grid_tasks"] == 30 and grid["certified_rate"] == 0.0  # far too few tasks
    table = llmpo("simulate", str(tied_file), "--strategy", "grid", "--tasks", "30", "--reps", "2")
    # The narrow terminal of llmpo() wraps the cells; their starts stay whole.
    assert "120.0" in table.stdout and "(grid: 4" in table.stdout
    assert "certified" in table.stdout and "0.0% of" in table.stdout


def test_demo_certifies_the_winner_and_reports_the_saving():
    done = llmpo("demo", "--reps", "6")
    assert done.returncode == 0, done.stderr
    assert "winner: cot-t0.2" in done.stdout and "correct against the hidden truth" in done.stdout
    assert "saving" in done.stdout and "fewer" in done.stdout
