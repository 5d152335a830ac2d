"""What llmpo writes is inert: CSV cells cannot start a formula, Markdown carries no raw HTML,
and a huge answer is stored cut at a documented cap, with a marker."""

import csv
import io
import json

from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.store import ComparisonRecord, Store

runner = CliRunner()

HOSTILE = ["=HYPERLINK(\"http://evil\",\"x\")", "<script>alert(1)</script>", "+1", "@SUM(A1)"]


def run_hostile(tmp_path) -> None:
    (tmp_path / "i.json").write_text(
        json.dumps(
            {
                "policies": HOSTILE,
                "win_prob": [
                    [0.5, 0.9, 0.9, 0.9],
                    [0.1, 0.5, 0.6, 0.6],
                    [0.1, 0.4, 0.5, 0.6],
                    [0.1, 0.4, 0.4, 0.5],
                ],
            }
        )
    )
    (tmp_path / "c.yaml").write_text(
        "space: unstructured\ndelta: 0.1\nseed: 1\n"
        "environment: {type: synthetic, instance: i.json}\nstore: runs.db\n"
    )
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output


def test_exported_cells_cannot_start_a_formula(tmp_path):
    run_hostile(tmp_path)
    with Store(tmp_path / "runs.db", writer=True) as store:  # a task id that is a formula too
        n = store.comparison_count(1)
        store.append_comparison(1, ComparisonRecord(n + 1, 0, 1, 1.0, task_id="-2+3"))
    exported = runner.invoke(app, ["export", str(tmp_path / "runs.db")])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    cells = [value for row in rows for value in row.values() if value]
    assert cells and not [c for c in cells if c[0] in "=+-@\t\r"]
    assert {r["name_a"] for r in rows} >= {"'=HYPERLINK(\"http://evil\",\"x\")", "'+1"}
    assert rows[-1]["task_id"] == "'-2+3"


def test_the_markdown_report_carries_no_raw_html(tmp_path):
    run_hostile(tmp_path)
    report = runner.invoke(app, ["report", str(tmp_path / "runs.db"), "--format", "md"])
    assert report.exit_code == 0, report.output
    assert "<script" not in report.stdout and "&lt;script>alert(1)&lt;/script>" in report.stdout
