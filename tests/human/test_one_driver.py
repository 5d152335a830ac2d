"""The four ways llmpo runs comparisons — ``run``, ``resume``, ``evaluate`` and ``serve`` — all go
through the one driver (llmpo.runtime.driver.Driver.drive): a test that fails if one of them
grows a loop of its own. (Here because ``serve`` needs the human-judge fixtures.)"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.harness.instances import bradley_terry_matrix
from llmpo.runtime.driver import Driver

runner = CliRunner()


@pytest.fixture
def driven(monkeypatch):
    """The targets the driver was started on, in order (the real drive still runs)."""
    calls: list[str] = []
    drive = Driver.drive

    async def recorded(self: Driver) -> str | None:
        calls.append(type(self.target).__name__)
        return await drive(self)

    monkeypatch.setattr(Driver, "drive", recorded)
    return calls


def synthetic_project(folder) -> None:
    # The baseline (the first policy) is the worst, so the evaluation has a pair to compare.
    win_prob = bradley_terry_matrix([0.0, 0.5, 1.0]).tolist()
    (folder / "bt.json").write_text(json.dumps({"policies": ["c", "b", "a"], "win_prob": win_prob}))
    (folder / "run.yaml").write_text(
        "seed: 3\ndelta: 0.1\nmax_comparisons: 30\n"
        "environment: {type: synthetic, instance: bt.json}\nstore: runs.db\n"
    )


def test_run_resume_and_evaluate_go_through_the_driver(tmp_path, monkeypatch, driven):
    monkeypatch.chdir(tmp_path)
    synthetic_project(tmp_path)
    assert runner.invoke(app, ["run", "run.yaml", "--json"]).exit_code in (0, 3)
    assert driven == ["Experiment"]
    resumed = runner.invoke(app, ["resume", "runs.db", "--max-comparisons", "60", "--json"])
    assert resumed.exit_code in (0, 3), resumed.output
    assert driven == ["Experiment", "Experiment"]
    evaluated = runner.invoke(app, ["evaluate", "runs.db", "--comparisons", "5", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["comparisons"] == 5
    assert driven == ["Experiment", "Experiment", "FixedPair"]


def test_serve_goes_through_the_driver(human_project, driven):
    pytest.importorskip("fastapi")  # the serve app (extra `human`); run/resume/evaluate need none
    from fastapi.testclient import TestClient

    from llmpo.human.app import create_app

    _, store, _ = human_project()
    with TestClient(create_app(store, concurrency=1), follow_redirects=False):
        deadline = time.monotonic() + 10
        while not driven and time.monotonic() < deadline:
            time.sleep(0.05)
    assert driven == ["Experiment"]
