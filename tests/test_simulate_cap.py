"""Every simulated replication ends: without a budget, a default cap stops the ones that would
run forever (knockout between nearly tied policies), and they are reported as unfinished."""

import json
import subprocess
import sys

from llmpo.harness.instances import make_unstructured_instance
from llmpo.harness.simulate import DEFAULT_CAP_FACTOR, SimulationSpec, default_cap, simulate

#: Six policies whose two weakest are nearly tied (P = 0.50008): a knockout match between them
#: has no practical end.
NEAR_TIE = [
    [0.5, 0.7, 0.7, 0.7, 0.7, 0.7],
    [0.3, 0.5, 0.6, 0.6, 0.6, 0.6],
    [0.3, 0.4, 0.5, 0.6, 0.6, 0.6],
    [0.3, 0.4, 0.4, 0.5, 0.6, 0.6],
    [0.3, 0.4, 0.4, 0.4, 0.5, 0.50008],
    [0.3, 0.4, 0.4, 0.4, 0.49992, 0.5],
]


def test_knockout_on_a_near_tie_ends_and_reports_the_unfinished(tmp_path):
    path = tmp_path / "near-tie.json"
    path.write_text(json.dumps({"policies": list("abcdef"), "win_prob": NEAR_TIE}))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmpo",
            "simulate",
            str(path),
            "--strategy",
            "knockout",
            "--reps",
            "6",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,  # without the cap some seeds run for hours
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    instance = make_unstructured_instance(NEAR_TIE, list("abcdef"))
    cap = default_cap(SimulationSpec(instance, "knockout", 0.05))
    assert summary["max_comparisons"] == cap and summary["unfinished"] >= 1
    assert summary["unfinished"] <= summary["uncertified"]


def test_the_default_cap_is_generous_and_a_budget_wins():
    instance = make_unstructured_instance(NEAR_TIE, list("abcdef"))
    summary = simulate(instance, "llmpo", delta=0.05, reps=4, seed=1)
    assert summary["unfinished"] == 0 and summary["uncertified"] == 0
    assert summary["max_comparisons"] >= DEFAULT_CAP_FACTOR * summary["mean_comparisons"] / 10
    capped = simulate(instance, "uniform", delta=0.05, reps=4, seed=1, max_comparisons=50)
    assert capped["max_comparisons"] == 50 and capped["unfinished"] == 4
