"""Kill a real `llmpo run` with SIGKILL at random points, resume, and get exactly the uninterrupted
run; Ctrl-C (SIGINT) stops cleanly after committing.

The config sets ``environment.latency_seconds`` (simulated time per comparison, documented in
llmpo.config) so that a run lasts long enough to be interrupted mid-way.
"""

import json
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from llmpo.config import load_config
from llmpo.harness.instances import bradley_terry_matrix
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import start_experiment
from llmpo.store import Store
from llmpo.testing.store import count_rows

KILLS_AT_A_COMPARISON = 11  # per chain, at a random stored count plus a random delay
KILLS_AT_A_RANDOM_TIME = 1  # per chain, possibly during start-up
CHAINS = 2
LATENCY_SECONDS = 0.002
CLI = [sys.executable, "-c", "from llmpo.cli import app; app()"]


def write_config(folder: Path, store: str) -> Path:
    instance = folder / "bt4.json"
    instance.write_text(
        json.dumps(
            {
                "policies": ["w", "x", "y", "z"],
                "win_prob": bradley_terry_matrix([1.0, 0.5, 0.2, 0.0]).tolist(),
            }
        )
    )
    path = folder / f"{store}.yaml"
    config = {
        "delta": 0.05,
        "seed": 0,
        "environment": {
            "type": "synthetic",
            "instance": "bt4.json",
            "latency_seconds": LATENCY_SECONDS,
        },
        "store": f"{store}.db",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def reference_run(config_path: Path):
    config = load_config(config_path, {"store": str(config_path.with_suffix(".reference.db"))})
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        outcome = Runner(store, experiment_id).run()
        return outcome.result.to_dict(), comparisons(store, experiment_id)


def comparisons(store: Store, experiment_id: int) -> list[tuple]:
    return [(c.seq, c.policy_a, c.policy_b, c.outcome) for c in store.comparisons(experiment_id)]


def stored_count(store_path: Path) -> int:
    return count_rows(store_path, "comparisons")


def has_experiment(store_path: Path) -> bool:
    return count_rows(store_path, "experiments") > 0


def start(config_path: Path, life: int) -> subprocess.Popen:
    store_path = config_path.with_suffix(".db")
    if not has_experiment(store_path):
        arguments = ["run", str(config_path), "--json"]
    elif life % 2:
        arguments = ["run", str(config_path), "--resume", "--json"]
    else:
        arguments = ["resume", str(store_path), "--json"]
    return subprocess.Popen(
        [*CLI, *arguments],
        cwd=config_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_chain(config_path: Path, total: int, seed: int) -> tuple[list[dict], dict]:
    """Run the experiment to its end through SIGKILLs; return the kill points and the result."""
    rng = random.Random(seed)
    store_path = config_path.with_suffix(".db")
    targets = sorted(rng.sample(range(1, total - 1), KILLS_AT_A_COMPARISON))
    plan = [("time", rng.uniform(0.0, 0.6)) for _ in range(KILLS_AT_A_RANDOM_TIME)]
    plan += [("count", target) for target in targets]
    kills = []
    for life, (kind, value) in enumerate(plan):
        process = start(config_path, life)
        if kind == "time":
            time.sleep(value)
        else:
            while process.poll() is None and stored_count(store_path) < value:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.01))
        alive = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.communicate()
        kills.append({"kind": kind, "alive": alive, "stored": stored_count(store_path)})
    final = start(config_path, len(plan))
    stdout, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    return kills, json.loads(stdout)


@pytest.mark.slow  # ~15 s: CI's kill group runs it
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tmp_path):
    configs = [write_config(tmp_path, f"chain{k}") for k in range(CHAINS)]
    reference_result, reference_comparisons = reference_run(configs[0])
    total = reference_result["n_comparisons"]
    assert total > 3 * KILLS_AT_A_COMPARISON
    with ThreadPoolExecutor(CHAINS) as pool:
        chains = list(pool.map(kill_chain, configs, [total] * CHAINS, range(CHAINS)))
    kill_points = [kill for kills, _ in chains for kill in kills if kill["alive"]]
    assert len(kill_points) >= 20
    assert sum(0 < kill["stored"] < total for kill in kill_points) >= 20  # killed mid-run
    for config_path, (kills, final) in zip(configs, chains, strict=True):
        assert final["status"] == "certified"
        assert final["n_comparisons"] == total
        assert final["best"] == reference_result["best"]
        assert final["rivals"] == reference_result["rivals"]
        with Store(config_path.with_suffix(".db"), readonly=True) as store:
            assert len(store.experiments()) == 1
            experiment = store.experiment()
            assert experiment.result == reference_result
            assert comparisons(store, experiment.id) == reference_comparisons  # seq 1..N, no gap
            kinds = [kind for _, kind, _ in store.events(experiment.id)]
            stored = [0] + [kill["stored"] for kill in kills]
            lives_with_progress = sum(after > before for before, after in pairwise(stored))
            assert kinds.count("started") + kinds.count("resumed") >= lives_with_progress


def test_ctrl_c_stops_after_committing_and_resume_finishes(tmp_path):
    config_path = write_config(tmp_path, "interrupted")
    reference_result, reference_comparisons = reference_run(config_path)
    store_path = config_path.with_suffix(".db")
    process = start(config_path, 0)
    while process.poll() is None and stored_count(store_path) < 40:
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    interrupted = json.loads(stdout)
    assert interrupted["status"] == "interrupted"
    with Store(store_path, readonly=True) as store:
        experiment = store.experiment()
        assert experiment.status == "interrupted"
        assert store.comparison_count(experiment.id) == interrupted["n_comparisons"] >= 40
    finished = subprocess.run(
        [*CLI, "resume", str(store_path), "--json"], capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)
    assert result["replayed_comparisons"] == interrupted["n_comparisons"]
    assert result["rivals"] == reference_result["rivals"]
    with Store(store_path, readonly=True) as store:
        assert comparisons(store, store.experiment().id) == reference_comparisons
