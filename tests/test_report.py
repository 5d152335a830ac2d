"""Reports of a synthetic and a replay run: the HTML parses, names the winner, embeds the plots."""

import base64
import itertools
import json
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from llmpo.config import parse_config
from llmpo.experiment import DENSE_RESULT_MAX_POLICIES
from llmpo.harness.instances import bradley_terry_matrix
from llmpo.models.structured import StructuredModel
from llmpo.report import (
    LARGE_TABLE_ROWS,
    LARGE_TRACE_POINTS,
    _count,
    _duration,
    _number,
    _usd,
    build_report,
    render_html,
    render_markdown,
)
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import start_experiment
from llmpo.store import Store

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects the images, the answer paragraph and the text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, bytes] = {}
        self.text: list[str] = []
        self.open_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            source = attributes["src"]
            assert source.startswith("data:image/png;base64,")  # self-contained
            self.images[attributes["id"]] = base64.b64decode(source.split(",", 1)[1])
        elif tag not in ("meta", "br"):
            self.open_tags.append(tag)

    def handle_endtag(self, tag):
        assert self.open_tags.pop() == tag

    def handle_data(self, data):
        self.text.append(data)


def synthetic_config(tmp_path: Path, **fields):
    instance = tmp_path / "bt.json"
    names = ["best", "second", "third"]
    win_prob = bradley_terry_matrix([1.0, 0.4, 0.0]).tolist()
    instance.write_text(json.dumps({"policies": names, "win_prob": win_prob}))
    data = {"seed": 1, "environment": {"type": "synthetic", "instance": str(instance)}, **fields}
    return parse_config({"store": str(tmp_path / "runs.db"), **data}, "test")


def replay_config(tmp_path: Path):
    lines = []
    for k in range(40):
        lines += [
            {
                "policy_a": "judge-favourite",
                "policy_b": "runner-up",
                "task_id": str(k),
                "outcome": 1,
            },
            {
                "policy_a": "runner-up",
                "policy_b": "judge-favourite",
                "task_id": str(k),
                "outcome": k % 3 == 0,
            },
            {"policy_a": "runner-up", "policy_b": "<script>", "task_id": str(k), "outcome": 1},
            {
                "policy_a": "judge-favourite",
                "policy_b": "<script>",
                "task_id": str(k),
                "outcome": 0.5 * (k % 2) + 0.5,
            },
        ]
    path = tmp_path / "judgments.jsonl"
    path.write_text(
        "".join(json.dumps({**line, "outcome": float(line["outcome"])}) + "\n" for line in lines)
    )
    data = {"seed": 4, "environment": {"type": "replay", "path": str(path)}}
    return parse_config({"store": str(tmp_path / "replay.db"), **data}, "test")


def run(config):
    with Store(config.store, writer=True) as store:
        return Runner(store, start_experiment(config, store)).run()


def report_of(config):
    with Store(config.store, readonly=True) as store:
        return build_report(store)


@pytest.mark.parametrize("make_config", [synthetic_config, replay_config])
def test_html_report_parses_names_the_winner_and_embeds_the_plots(tmp_path, make_config):
    config = make_config(tmp_path)
    outcome = run(config)
    assert outcome.result.certified
    data = report_of(config)
    page = Page()
    page.feed(render_html(data))
    page.close()
    assert page.open_tags == []
    text = " ".join(page.text)
    assert f"Best policy: {outcome.result.best_name} — certified" in text
    assert set(page.images) == {"plot-win_prob", "plot-allocation", "plot-trace"}
    assert all(image.startswith(PNG_SIGNATURE) for image in page.images.values())
    for section in ("Certificate", "Allocation used vs optimal", "Time and cost per policy"):
        assert section in text
    assert "fewer." in text and "T̂" not in text and "T*" not in text
    summary = data["summary"]
    assert text.index(summary["sentence"]) < text.index("Certificate")  # the summary comes first
    assert summary["sentence"].startswith(
        f"{outcome.result.best_name} is the best of {len(data['experiment']['policies'])} "
        "policies, with 95% confidence, after"
    )
    assert summary["winner"] == outcome.result.best_name and summary["next_step"] is None
    assert "Estimated utilities" not in text  # no empty section for an unstructured run
    assert "white-space: pre-wrap" in render_html(data)  # the configuration wraps


def test_report_contents(tmp_path):
    config = synthetic_config(tmp_path)
    outcome = run(config)
    data = report_of(config)
    assert data["answer"] == outcome.result.to_dict()
    assert data["trace"][-1]["comparisons"] == outcome.result.n_comparisons
    assert data["trace"][-1]["statistic"] > data["trace"][-1]["threshold"]
    section = data["win_prob"]
    lower, estimate, upper = (section[key][0][1] for key in ("lower", "estimate", "upper"))
    assert lower < estimate < upper
    costs = data["costs"]
    assert (
        sum(row["comparisons"] for row in costs["per_policy"]) == 2 * outcome.result.n_comparisons
    )
    assert costs["cost_usd"] is None and costs["wall_seconds"] >= 0
    savings = data["savings"]
    assert savings["uniform_estimate"] > savings["adaptive_estimate"] > 0
    assert json.loads(json.dumps(data)) == data  # JSON-ready
    markdown = render_markdown(data)
    assert "| rival | GLR statistic | threshold | comparisons | ruled out |" in markdown


def test_report_of_an_unfinished_run_says_not_certified(tmp_path):
    config = synthetic_config(tmp_path, max_comparisons=6)
    run(config)
    data = report_of(config)
    markdown = render_markdown(data)
    assert "not certified: the comparison budget (max_comparisons) ran out" in markdown
    assert data["answer"]["stop_reason"] == "max_comparisons"
    summary = data["summary"]
    assert summary["winner"] is None and not summary["certified"]
    assert summary["sentence"].startswith("No policy is certified yet")
    assert "leads so far" in summary["sentence"]
    assert summary["next_step"] == (
        "To continue with a larger budget: llmpo run CONFIG --resume --max-comparisons 12"
    )
    # No saving is claimed for an uncertified run.
    assert data["savings"] is None and "fewer" not in markdown
    assert "Saving: none is claimed, since the run is not certified." in markdown
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config.model_copy(update={"seed": 2}), store)
        store.set_status(experiment_id, "interrupted")
        data = build_report(store, experiment_id)
    assert data["answer"]["n_comparisons"] == 0
    assert "not certified: it was interrupted" in render_markdown(data)
    assert data["summary"]["next_step"] == f"To continue: llmpo resume {config.store} 2"
    page = Page()
    page.feed(render_html(data))


def test_structured_report_shows_utilities_with_intervals(tmp_path):
    features = np.random.default_rng(0).normal(size=(6, 2))
    instance = tmp_path / "feat.json"
    instance.write_text(json.dumps({"features": features.tolist(), "theta": [1.0, -0.5]}))
    config = parse_config(
        {
            "space": "structured",
            "seed": 3,
            "environment": {"type": "synthetic", "instance": str(instance)},
            "store": str(tmp_path / "s.db"),
        },
        "test",
    )
    outcome = run(config)
    data = report_of(config)
    utilities = {u["policy"]: u for u in data["utilities"]}
    best = utilities[outcome.result.best_name]
    assert best["utility_vs_best"] == 0 and best["lower"] <= 0 <= best["upper"]
    assert all(u["lower"] <= u["utility_vs_best"] <= u["upper"] for u in utilities.values())
    assert data["savings"] is None
    page = Page()
    page.feed(render_html(data))
    assert "plot-utilities" in page.images
    assert "Estimated utilities relative to the best" in " ".join(page.text)
    assert "Only for structured experiments" not in " ".join(page.text)


def factor_design_config(tmp_path: Path, levels=(5, 6, 5), **fields):
    """A structured synthetic run over a full factor design (dummy-coded levels)."""
    rows = [
        [
            float(chosen == level)
            for chosen, n in zip(combo, levels, strict=True)
            for level in range(1, n)
        ]
        for combo in itertools.product(*(range(n) for n in levels))
    ]
    theta = np.concatenate([np.linspace(0.3, 1.2, n - 1) for n in levels])
    instance = tmp_path / "design.json"
    instance.write_text(json.dumps({"features": rows, "theta": theta.tolist()}))
    data = {
        "space": "structured",
        "seed": 5,
        "environment": {"type": "synthetic", "instance": str(instance)},
        "store": str(tmp_path / "design.db"),
        **fields,
    }
    return parse_config(data, "test")


def spy_on_dense_matrices(monkeypatch) -> list[str]:
    """Records every call of the structured model's K×K ``counts()`` / ``win_prob_hat()``."""
    calls: list[str] = []
    for name in ("counts", "win_prob_hat"):
        original = getattr(StructuredModel, name)

        def spy(self, _original=original, _name=name):
            calls.append(_name)
            return _original(self)

        monkeypatch.setattr(StructuredModel, name, spy)
    return calls


def lists_of_lists(value, found=None) -> list[int]:
    """Lengths of every JSON list whose items include a list (a matrix-like array)."""
    found = [] if found is None else found
    if isinstance(value, dict):
        for item in value.values():
            lists_of_lists(item, found)
    elif isinstance(value, list):
        if any(isinstance(item, list) for item in value):
            found.append(len(value))
        for item in value:
            lists_of_lists(item, found)
    return found


def markdown_section(markdown: str, title_start: str) -> list[str]:
    """The body rows of the Markdown table whose title starts with ``title_start``."""
    lines = markdown.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(f"## {title_start}"))
    rows = []
    for line in lines[start + 4 :]:  # title, blank, header, rule
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize("stored_result", [True, False])
def test_large_structured_report_has_no_square_arrays(tmp_path, monkeypatch, stored_result):
    config = factor_design_config(tmp_path, max_comparisons=400)
    outcome = run(config)
    n_policies = 5 * 6 * 5
    assert n_policies > DENSE_RESULT_MAX_POLICIES
    if not stored_result:  # as while a run is going: the report recomputes the certificate
        original = Store.experiment
        monkeypatch.setattr(
            Store,
            "experiment",
            lambda self, experiment_id=None: replace(original(self, experiment_id), result=None),
        )
    calls = spy_on_dense_matrices(monkeypatch)
    data = report_of(config)
    assert calls == []
    data = json.loads(json.dumps(data))  # JSON-ready
    assert all(length < n_policies for length in lists_of_lists(data))
    assert data["win_prob"] is None and data["savings"] is None
    assert len(data["trace"]) <= LARGE_TRACE_POINTS + 1  # each point refits every rival
    assert data["trace"][-1]["comparisons"] == outcome.result.n_comparisons
    best = outcome.result.best_name
    assert data["answer"]["best"] == best

    # Certificate: every rival in the JSON, the 20 closest to the threshold in Markdown/HTML.
    rivals = data["answer"]["rivals"]
    assert len(rivals) == n_policies - 1 and best not in {r["policy"] for r in rivals}
    closest = sorted(rivals, key=lambda r: r["statistic"] - r["threshold"])[:LARGE_TABLE_ROWS]
    markdown = render_markdown(data)
    assert f"Best policy so far: {best} — not certified" in markdown
    table = markdown_section(markdown, "Certificate")
    assert [row.split(" | ")[0].strip("| ") for row in table] == [r["policy"] for r in closest]
    assert f"{n_policies - 1 - LARGE_TABLE_ROWS} more rivals in the JSON report" in markdown
    compared = {frozenset(r["pair"]): r["comparisons"] for r in data["allocation"]}
    for rival in rivals:
        assert rival["comparisons"] == compared.get(frozenset((best, rival["policy"])), 0)
        assert 0 < rival["win_prob_hat"] < 1

    # Utilities: all in the JSON, the top 20 in Markdown.
    utilities = data["utilities"]
    assert len(utilities) == n_policies
    assert all(u["lower"] <= u["utility_vs_best"] <= u["upper"] for u in utilities)
    by_name = {u["policy"]: u["utility_vs_best"] for u in utilities}
    assert by_name[best] == 0
    shown = [row.split(" | ")[0].strip("| ") for row in markdown_section(markdown, "Estimated")]
    assert len(shown) == LARGE_TABLE_ROWS and shown[0] == best
    assert min(by_name[name] for name in shown) >= max(
        value for name, value in by_name.items() if name not in shown
    )

    # Allocation: the compared pairs only, most compared first, adding up to the run.
    counts = [r["comparisons"] for r in data["allocation"]]
    assert all(n > 0 for n in counts) and counts == sorted(counts, reverse=True)
    assert sum(counts) == outcome.result.n_comparisons
    assert len(markdown_section(markdown, "Allocation")) == min(LARGE_TABLE_ROWS, len(counts))

    page = Page()
    page.feed(render_html(data))
    page.close()
    assert page.open_tags == []
    text = " ".join(page.text)
    assert f"Best policy so far: {best}" in text and "rivals ruled out" in text
    assert set(page.images) == {"plot-allocation", "plot-utilities", "plot-trace"}
    assert all(image.startswith(PNG_SIGNATURE) for image in page.images.values())
    assert calls == []


def test_small_structured_report_still_uses_the_matrices(tmp_path, monkeypatch):
    # The spy of the large test sees the K×K calls at or below DENSE_RESULT_MAX_POLICIES.
    config = factor_design_config(tmp_path, levels=(2, 3), max_comparisons=100)
    run(config)
    calls = spy_on_dense_matrices(monkeypatch)
    data = report_of(config)
    assert set(calls) == {"counts", "win_prob_hat"}
    assert len(data["win_prob"]["estimate"]) == 6


def test_a_max_cost_stop_is_reported_as_such(tmp_path):
    config = synthetic_config(tmp_path, max_comparisons=6)
    run(config)
    with Store(config.store, writer=True) as store:
        record = store.experiment()
        store.set_status(record.id, "max_cost", {**record.result, "stop_reason": "max_cost"})
        data = build_report(store)
    markdown = render_markdown(data)
    assert "not certified: the cost budget (max_cost) ran out after 6 comparisons" in markdown
    assert "the experiment is" not in markdown and "fewer" not in markdown


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3380.0, "3,380"),
        (18036.0, "18,036"),
        (0.000123, "0.000123"),
        (7.1234, "7.12"),
        (None, "—"),
        (12, "12"),
    ],
)
def test_statistics_are_never_in_scientific_notation(value, text):
    assert _number(value) == text


def test_durations_and_money_read_plainly():
    assert [_duration(s) for s in (4.04, 807.0, 7260.0)] == ["4.0 s", "13 min 27 s", "2 h 01 min"]
    assert [_usd(v) for v in (None, 0.01234, 12.5)] == ["—", "$0.0123", "$12.50"]
    assert [_count(v) for v in (None, 3380.0, 18036)] == ["—", "3,380", "18,036"]
