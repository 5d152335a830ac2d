"""``llmpo bench``: suite files, tables, intervals and plots (issue 6)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from llmpo.bench import SuiteError, load_suite, median_interval, run_suite, write_results
from llmpo.cli import app

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
