"""``llmpo bench``: suite files, tables, intervals and plots (issue 6)."""

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.harness.bench import SuiteError, load_suite, median_interval, run_suite, write_results
from llmpo.harness.benchstore import CellStore

SMALL_SUITE = """
name: small
seed: 3
reps: 6
deltas: [0.1, 0.05]
strategies: [llmpo, knockout]
instances:
  - {name: BT4, reference: BT4}
  - name: GAP3
    bradley_terry: [0.0, -0.8, -1.2]
    strategies: [llmpo, top-two]
"""


@pytest.fixture
def small_suite(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SUITE)
    return path


@pytest.mark.slow  # ~10 s: CI's simulation group runs it
def test_suite_runs_into_tables_and_plots(small_suite, tmp_path):
    suite = load_suite(small_suite)
    cells = run_suite(suite, workers=1)
    assert len(cells) == 2 * 2 + 2 * 2
    for cell in cells:
        assert cell.error_low <= cell.error_rate <= cell.error_high
        assert cell.mean_low <= cell.mean_comparisons <= cell.mean_high
        assert cell.median_low <= cell.median_comparisons <= cell.median_high
        assert cell.ratio_to_llmpo is not None
        if cell.strategy == "llmpo":
            assert cell.ratio_to_llmpo == 1.0
    paths = write_results(cells, suite, tmp_path / "out")
    rows = json.loads(paths["json"].read_text())["cells"]
    assert len(rows) == len(cells)
    assert paths["csv"].read_text().count("\n") == len(cells) + 1
    assert "| BT4 | knockout | 0.1 |" in paths["markdown"].read_text()
    assert paths["plot:BT4"].stat().st_size > 10_000


@pytest.mark.slow  # ~15 s: CI's simulation group runs it
def test_process_pool_gives_the_same_table(small_suite):
    suite = load_suite(small_suite)
    serial = run_suite(suite, workers=1)
    pooled = run_suite(suite, workers=2)
    assert [c.mean_comparisons for c in serial] == [c.mean_comparisons for c in pooled]
    assert [c.errors for c in serial] == [c.errors for c in pooled]


def test_median_interval_brackets_the_median():
    values = np.arange(1.0, 101.0)
    low, high = median_interval(values)
    assert low < 50.5 < high
    assert low >= 39 and high <= 62


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("instances: []\n", "lists none"),
        ("deltas: [0.7]\ninstances: [{name: a, reference: BT5}]\n", "deltas"),
        ("strategies: [nope]\ninstances: [{name: a, reference: BT5}]\n", "unknown 'nope'"),
        ("instances: [{name: a}]\n", "exactly one of"),
        ("instances: [{name: a, reference: XX}]\n", "unknown reference"),
    ],
)
def test_bad_suites_name_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_bench_command_writes_results(small_suite, tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app, ["bench", str(small_suite), "--out", str(out), "--reps", "2", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "results.csv").exists() and (out / "GAP3.png").exists()
    assert "| GAP3 | top-two |" in result.output


TINY_SUITE = """
name: tiny
seed: 4
reps: 4
deltas: [0.1, 0.05]
strategies: [llmpo, top-two, knockout, uniform]
instances:
  - name: GAP3
    bradley_terry: [0.0, -1.5, -2.0]
"""


@pytest.fixture
def tiny_suite(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SUITE)
    return path


OPTIONS_SUITE = """
name: options
seed: 5
reps: 4
deltas: [0.1]
instances:
  - name: CYC4
    reference: CYC4
    strategies:
      - llmpo
      - {name: llmpo, assume_condorcet: true}
      - {name: top-two, label: tt-B, assume_condorcet: true}
"""


def test_strategy_entries_carry_experiment_options(tmp_path):
    path = tmp_path / "options.yaml"
    path.write_text(OPTIONS_SUITE)
    suite = load_suite(path)
    entry = suite.instances[0]
    assert entry.strategies == ("llmpo", "llmpo[assume_condorcet]", "tt-B")
    assert entry.setting("tt-B").name == "top-two"
    cells = {c.strategy: c for c in run_suite(suite)}
    plain, class_b = cells["llmpo"], cells["llmpo[assume_condorcet]"]
    assert class_b.settings == '{"assume_condorcet": true}' and plain.settings == ""
    # Class B has its own, smaller characteristic time on CYC4 (rivals beaten by cycle members).
    assert class_b.t_star < plain.t_star
    assert class_b.mean_comparisons < plain.mean_comparisons
    assert cells["tt-B"].t_star == class_b.t_star


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: knockout, options: {epsilon: 0.1}}", "constructor arguments of duelpy"),
        ("{name: llmpo, colour: red}", "unknown field"),
        ("{name: 'duelpy:OptMax', assume_condorcet: true}", "not supported by duelpy"),
        ("{name: 'duelpy:OptMax', options: {failure_probability: 0.2}}", "set by llmpo"),
        ("{label: x}", "mapping with a name"),
    ],
)
def test_bad_strategy_entries_name_the_field(tmp_path, entry, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"instances: [{{name: a, reference: BT5, strategies: [{entry}]}}]\n")
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_peer_options_are_checked_against_the_duelpy_class(tmp_path):
    pytest.importorskip("duelpy")
    path = tmp_path / "bad.yaml"
    path.write_text(
        "instances: [{name: a, reference: BT5, strategies: "
        "[{name: 'duelpy:PlackettLucePACItem', options: {epsilom: 0}}]}]\n"
    )
    with pytest.raises(SuiteError, match="no argument 'epsilom'; it takes epsilon"):
        load_suite(path)


def test_peer_options_reach_the_algorithm():
    pytest.importorskip("duelpy")
    from llmpo.harness.reference import reference_instance
    from llmpo.harness.simulate import simulate

    instance = reference_instance("BT4")
    loose = simulate(instance, "duelpy:PlackettLucePACItem", 0.1, reps=4, seed=1)
    exact = simulate(
        instance,
        "duelpy:PlackettLucePACItem",
        0.1,
        reps=4,
        seed=1,
        peer_options={"epsilon": 0.0},
    )
    assert exact["peer_options"] == {"epsilon": 0.0}
    assert exact["mean_comparisons"] > loose["mean_comparisons"]


def without_timing(cells):
    return [
        {k: v for k, v in asdict(c).items() if k != "seconds"} for c in cells
    ]


def test_allocation_used_is_reported_beside_w_star(tiny_suite):
    cells = run_suite(load_suite(tiny_suite))

    def distance_to_w_star(strategy):
        cell = next(c for c in cells if c.strategy == strategy and c.delta == 0.05)
        used = np.array([row[2] for row in cell.allocation])
        optimal = np.array([row[3] for row in cell.allocation])
        assert used.sum() == pytest.approx(1.0, abs=0.01)
        assert optimal.sum() == pytest.approx(1.0, abs=0.01)
        return np.abs(used - optimal).sum()

    # w* of GAP3 puts nothing on the pair (1, 2), which round-robin samples a third of the time.
    assert distance_to_w_star("llmpo") < distance_to_w_star("uniform") - 0.2


def test_interrupted_suite_resumes_from_the_store_to_the_same_table(
    tiny_suite, tmp_path, monkeypatch
):
    suite = load_suite(tiny_suite)
    reference = run_suite(suite)
    store = CellStore(tmp_path / "cells.db")
    ran: list[str] = []

    def interrupt_after_three(cell, done, total, stored):
        ran.append(cell.strategy)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, progress=interrupt_after_three, store=store)
    assert len(store) == 3
    reports = []
    resumed = run_suite(suite, store=store, progress=lambda *args: reports.append(args))
    assert [stored for *_, stored in reports] == [True] * 3 + [False] * (len(reference) - 3)
    assert [done for _, done, _, _ in reports] == list(range(1, len(reference) + 1))
    assert without_timing(resumed) == without_timing(reference)
    assert len(store) == len(reference)
    # A changed suite (more replications) misses the stored cells and runs them again.
    reports.clear()
    more = replace(suite, reps=suite.reps + 1)
    run_suite(more, store=store, progress=lambda *args: reports.append(args))
    assert not any(stored for *_, stored in reports)
    # So does another release of llmpo: its cells are computed anew.
    reports.clear()
    monkeypatch.setattr("llmpo.harness.bench.__version__", "99.0")
    run_suite(suite, store=store, progress=lambda *args: reports.append(args))
    assert reports and not any(stored for *_, stored in reports)


def test_bench_command_resumes_and_reports_stored_cells(tiny_suite, tmp_path):
    out = tmp_path / "results"
    arguments = ["bench", str(tiny_suite), "--out", str(out), "--reps", "2", "--workers", "1"]
    first = CliRunner().invoke(app, arguments)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, arguments)
    assert second.exit_code == 0
    assert second.output.count("(stored)") == 8
    assert (out / "cells.db").exists()


def test_ray_and_process_backends_give_the_same_table(tiny_suite):
    pytest.importorskip("ray")
    from llmpo.harness.scaleout import RayBackend

    suite = load_suite(tiny_suite)
    pooled = run_suite(suite, workers=2)
    with RayBackend(num_cpus=1) as backend:
        on_ray = run_suite(suite, workers=2, backend=backend)
    assert without_timing(on_ray) == without_timing(pooled)


def test_unknown_backend_and_address_without_ray_are_refused(small_suite):
    result = CliRunner().invoke(app, ["bench", str(small_suite), "--backend", "spark"])
    assert result.exit_code == 2 and "choose process or ray" in result.output
    result = CliRunner().invoke(app, ["bench", str(small_suite), "--address", "auto"])
    assert result.exit_code == 2 and "--address needs --backend ray" in result.output


def test_bench_command_overrides_deltas(tiny_suite, tmp_path):
    out = tmp_path / "results"
    arguments = ["bench", str(tiny_suite), "--out", str(out), "--reps", "2", "--deltas", "0.2"]
    result = CliRunner().invoke(app, [*arguments, "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    assert {cell["delta"] for cell in cells} == {0.2} and len(cells) == 4
    bad = CliRunner().invoke(app, ["bench", str(tiny_suite), "--deltas", "0.7"])
    assert bad.exit_code == 2 and "--deltas" in bad.output
