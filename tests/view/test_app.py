"""``llmpo view`` through FastAPI's TestClient, on the store of a real live run whose policy
names, tasks and answers carry stored-XSS payloads; every figure is checked against the store."""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from llmpo.cli import app as cli
from llmpo.human.app import SECURITY_HEADERS
from llmpo.human.tokens import add_judge
from llmpo.store import Store, StoreError
from llmpo.store import views as queries
from llmpo.store.views import OUTCOMES, RUNS, Filters
from llmpo.view.app import create_app
from tests.view.conftest import CAREFUL, XSS


@pytest.fixture(scope="module")
def stored(run_store):
    with Store(run_store, readonly=True) as store:
        record = store.experiment()
        comparisons = store.comparisons(record.id)
        answers = {(p, t, r): text for p, t, r, text in store.answers()}
    return record, comparisons, answers


@pytest.fixture(scope="module")
def client(run_store):
    return TestClient(create_app([run_store]))


def all_urls(client, record, comparisons) -> list[str]:
    e = record.id
    return [
        "/",
        "/?partial=1",
        f"/s/0/e/{e}",
        f"/s/0/e/{e}/live",
        f"/s/0/e/{e}/comparisons",
        f"/s/0/e/{e}/comparisons?after=0",
        f"/s/0/e/{e}/comparisons?outcome=tie&a=1",
        f"/s/0/e/{e}/comparisons?q=pwned",
        *[f"/s/0/e/{e}/c/{c.seq}" for c in comparisons[:5]],
    ]


def test_listing_shows_status_winner_calls_tokens_and_time(client, stored, run_store):
    record, comparisons, _ = stored
    with Store(run_store, readonly=True) as store:
        paid = store.payments(record.id) or []
    page = client.get("/").text
    row = re.search(rf'<tr id="experiment-0-{record.id}">(.*?)</tr>', page, re.S).group(1)
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in row.split("</td>")]
    assert cells[2] == "certified" and record.status == "certified"
    assert cells[3] == f"{CAREFUL} ✓ certified"
    assert int(cells[4].replace(",", "")) == len(comparisons)
    # Every answer paid (rounds in flight when it certified too); the reference judge calls no
    # LLM. At least what the comparisons were charged.
    generations = sum(2 - sum(c.raw["cached"]) for c in comparisons)
    assert int(cells[5].replace(",", "")) == len(paid) >= generations
    assert {p.kind for p in paid} == {"generation"}
    tokens = sum(p.input_tokens + p.output_tokens for p in paid)
    assert int(cells[6].replace(",", "")) == tokens >= sum(
        c.input_tokens + c.output_tokens for c in comparisons
    )
    wall = max(c.finished_at for c in comparisons) - min(c.started_at for c in comparisons)
    assert cells[8] == f"{wall:.1f} s"


def test_every_page_sends_the_strict_security_headers(client, stored):
    record, comparisons, _ = stored
    for url in [*all_urls(client, record, comparisons), "/static/app.js", "/s/0/e/99"]:
        response = client.get(url)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (url, name)
    assert "script-src 'self'" in SECURITY_HEADERS["Content-Security-Policy"]


def test_stored_xss_in_names_tasks_and_answers_is_shown_as_text(client, stored):
    record, comparisons, _ = stored
    for url in all_urls(client, record, comparisons):
        text = client.get(url).text
        for live in ("<script>document", "<script>alert", "<img src=x", 'href="javascript:'):
            assert live not in text, (url, live)
    loser = next(c for c in comparisons if c.outcome == 1.0)  # B's answer carries the payload
    detail = client.get(f"/s/0/e/{record.id}/c/{loser.seq}").text
    shown = re.search(r'id="answer-b">.*?<div class="text">(.*?)</div>', detail, re.S)[1]
    assert html.unescape(shown).startswith(XSS)  # all of it shown, as text
    assert "sums &lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/").text


def test_a_comparison_shows_task_both_answers_verdict_order_and_raw_output(client, stored):
    record, comparisons, answers = stored
    for c in comparisons[:6]:
        page = client.get(f"/s/0/e/{record.id}/c/{c.seq}").text
        shown = {
            side: html.unescape(
                re.search(rf'id="answer-{side}">.*?<div class="text">(.*?)</div>', page, re.S)[1]
            )
            for side in "ab"
        }
        names = record.policies
        assert shown["a"] == answers[(names[c.policy_a], c.task_id, c.raw["replicates"][0])]
        assert shown["b"] == answers[(names[c.policy_b], c.task_id, c.raw["replicates"][1])]
        task = html.unescape(re.search(r'<div class="prompt" id="task">(.*?)</div>', page, re.S)[1])
        assert task.startswith(f"What is {c.task_id[1:]} + ")
        verdict = html.unescape(re.search(r'<span id="verdict">(.*?)</span>', page)[1])
        expected = {1.0: f"{names[c.policy_a]} won", 0.5: "tie", 0.0: f"{names[c.policy_b]} won"}
        assert verdict == expected[c.outcome]
        order = re.search(r'<dd id="order">(.*?)</dd>', page)[1]
        assert order == (c.order or "—")
        raw = html.unescape(re.search(r'<pre id="raw">(.*?)</pre>', page, re.S)[1])
        assert '"match_a"' in raw and '"match_b"' in raw
    assert client.get(f"/s/0/e/{record.id}/c/100000").status_code == 404


def seqs(page: str) -> list[int]:
    return [int(s) for s in re.findall(r'class="open" href="/s/0/e/\d+/c/(\d+)"', page)]


def test_pages_walk_every_comparison_once_forward_and_backward(run_store, stored):
    record, comparisons, _ = stored
    names = list(record.policies)
    with queries.open_readonly(run_store) as store:
        forward: list[int] = []
        after: int | None = 0
        while after is not None:
            found = queries.page(
                store.connection, RUNS, record.id, names, Filters(), after=after, size=7
            )
            forward += [r.seq for r in found.rows]
            after = found.next_after
        backward: list[int] = []
        found = queries.page(store.connection, RUNS, record.id, names, Filters(), size=7)
        while True:
            backward = [r.seq for r in found.rows] + backward
            if found.previous_before is None:
                break
            found = queries.page(
                store.connection,
                RUNS,
                record.id,
                names,
                Filters(),
                before=found.previous_before,
                size=7,
            )
    assert forward == backward == [c.seq for c in comparisons]


def test_the_pages_links_lead_to_the_next_and_last_rows(run_store, stored):
    record, comparisons, _ = stored
    client = TestClient(create_app([run_store], page_size=7))
    first = client.get(f"/s/0/e/{record.id}/comparisons?after=0").text
    assert seqs(first) == [c.seq for c in comparisons[:7]]
    assert 'id="page-previous"' not in first
    following = html.unescape(re.search(r'href="([^"]+)" id="page-next"', first)[1])
    second = client.get(following).text
    assert seqs(second) == [c.seq for c in comparisons[7:14]]
    back = html.unescape(re.search(r'href="([^"]+)" id="page-previous"', second)[1])
    assert seqs(client.get(back).text) == seqs(first)
    last = client.get(f"/s/0/e/{record.id}/comparisons").text
    assert seqs(last) == [c.seq for c in comparisons[-7:]] and 'id="page-next"' not in last


def matches(c, names, answers, filters: Filters) -> bool:
    """The filters' meaning, in Python."""
    a, b = c.policy_a, c.policy_b
    outcome = c.outcome
    if filters.a is not None:
        if filters.a not in (a, b) or (filters.b is not None and {a, b} != {filters.a, filters.b}):
            return False
        if b == filters.a:
            outcome = 1.0 - outcome
    if filters.outcome is not None and outcome != OUTCOMES[filters.outcome]:
        return False
    if filters.task is not None and c.task_id != filters.task:
        return False
    if filters.q is not None:
        texts = [
            answers.get((names[p], c.task_id, c.raw["replicates"][side]), "")
            for side, p in enumerate((a, b))
        ]
        return any(filters.q.lower() in t.lower() for t in texts)
    return True


def test_filters_by_pair_outcome_task_and_text_select_what_they_say(run_store, stored):
    record, comparisons, answers = stored
    names = list(record.policies)
    cases = [Filters()]
    cases += [Filters(a=a, outcome=o) for a in range(3) for o in (None, *OUTCOMES)]
    cases += [
        Filters(a=a, b=b, outcome=o) for a in range(3) for b in range(3) if a != b for o in OUTCOMES
    ]
    cases += [Filters(outcome=o) for o in OUTCOMES]
    cases += [Filters(task="t3"), Filters(task="t3", outcome="win"), Filters(task="nope")]
    cases += [Filters(q=q) for q in ("PWNED", "it is 4", "%", "_", "43")]
    cases += [Filters(q="pwned", a=1, b=2, outcome="tie")]
    with queries.open_readonly(run_store) as store:
        for filters in cases:
            found = queries.page(
                store.connection, RUNS, record.id, names, filters, after=0, size=10**6
            )
            expected = [c.seq for c in comparisons if matches(c, names, answers, filters)]
            assert [r.seq for r in found.rows] == expected, filters
    ties = [c for c in comparisons if c.outcome == 0.5]
    assert ties and len(ties) < len(comparisons)  # the filter to ties is not vacuous


def test_the_viewer_never_writes_and_its_connection_cannot(run_store, client, stored):
    record, comparisons, _ = stored
    before = (hashlib.sha256(run_store.read_bytes()).hexdigest(), run_store.stat().st_mtime_ns)
    for url in all_urls(client, record, comparisons):
        assert client.get(url).status_code == 200
    after = (hashlib.sha256(run_store.read_bytes()).hexdigest(), run_store.stat().st_mtime_ns)
    assert after == before


def test_a_running_experiment_is_followed_as_comparisons_arrive(run_store, stored, tmp_path):
    """Comparisons appended by a writer show up at the next request, and the replayed
    certificate ends exactly where the live run's own result did."""
    record, comparisons, _ = stored
    live = tmp_path / "live.db"
    Store(live).close()  # a new, empty store: listed, with no experiment
    client = TestClient(create_app([live]))
    assert "No experiment yet" in client.get("/").text
    with Store(live, writer=True) as writer:
        experiment = writer.create_experiment(record.config, record.policies, name="copy")
        seen = []
        n = len(comparisons)
        steps = (0, n // 3, 2 * n // 3, n)
        for step in steps:
            while writer.comparison_count(experiment) < step:
                writer.append_comparison(
                    experiment, comparisons[writer.comparison_count(experiment)]
                )
            for _ in range(50):  # the replay is bounded per request; it catches up within a few
                state = client.get(f"/api/s/0/e/{experiment}").json()
                if state["live"]["replayed"] == step:
                    break
            seen.append(state)
    assert [s["summary"]["comparisons"] for s in seen] == list(steps)
    assert [s["live"]["certified"] for s in seen] == [False, False, False, True]
    statistics = [[r["statistic"] for r in s["live"]["rivals"]] for s in seen[1:]]
    assert statistics[0] != statistics[1] != statistics[2]
    for state in seen[1:3]:  # running: the rough estimate, priced at the average so far
        live, summary = state["live"], state["summary"]
        assert live["remaining"] is None or live["remaining"] > 0
        if live["remaining"] is not None:
            per = summary["calls"] / summary["comparisons"]
            assert live["remaining_calls"] == math.ceil(live["remaining"] * per)
            # With its uncertainty: an 80% range around the estimate, in comparisons and calls.
            high = live["remaining_high"]
            assert live["remaining_low"] <= live["remaining"]
            assert high is None or live["remaining"] <= high
            assert live["remaining_calls_low"] == math.ceil(live["remaining_low"] * per)
    assert seen[2]["live"]["remaining"] > 0  # two thirds of the run: every rival has evidence
    assert seen[-1]["live"]["remaining"] is None  # certified: nothing remains
    final = seen[-1]["live"]
    assert final["leader"] == record.result["best"] == CAREFUL
    assert [r["statistic"] for r in final["rivals"]] == pytest.approx(
        [r["statistic"] for r in record.result["rivals"]]
    )
    page = client.get(f"/s/0/e/{experiment}/live").text
    assert "Certified winner" in page and '<svg class="plot" id="trace"' in page
    assert page.count("<polyline") == 2 * (len(record.policies) - 1)


def test_beyond_the_loopback_every_page_needs_a_judge_token(run_store, tmp_path):
    copy = tmp_path / "copy.db"
    shutil.copy(run_store, copy)
    with pytest.raises(StoreError, match="llmpo judges add"):
        create_app([copy], require_token=True)
    with Store(copy) as store:
        token = add_judge(store, "ann")
    client = TestClient(create_app([copy], require_token=True), follow_redirects=False)
    for url in ("/", "/s/0/e/1", "/s/0/e/1/comparisons", "/s/0/e/1/c/1"):
        response = client.get(url)
        assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert client.get("/api/s/0/e/1").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer llmpo_wrong"}).status_code == 303
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    form = client.get("/signin").text
    nonce = re.search(r'name="nonce" value="([^"]+)"', form)[1]
    assert client.post("/signin", data={"token": "nope", "nonce": nonce}).status_code == 401
    signed = client.post("/signin", data={"token": token, "nonce": nonce})
    assert signed.status_code == 303
    assert "httponly" in signed.headers["set-cookie"].lower()
    assert client.get("/").status_code == 200  # the cookie now signs every request
    assert token not in client.get("/").text


def test_cli_refuses_to_listen_beyond_the_loopback_without_judges(run_store, tmp_path):
    runner = CliRunner()
    exposed = runner.invoke(cli, ["view", str(run_store), "--host", "0.0.0.0"])
    assert exposed.exit_code == 2
    assert "llmpo judges add" in exposed.output and "Traceback" not in exposed.output
    missing = runner.invoke(cli, ["view", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "no such store" in missing.output


def test_totals_tallied_in_small_steps_equal_those_tallied_at_once(run_store, stored):
    record, comparisons, _ = stored
    with queries.open_readonly(run_store) as store:
        at_once = queries.Tally().update(store.connection, RUNS, record.id, chunk=10**9)
        steps, tally = 0, queries.Tally()
        while True:
            tally.update(store.connection, RUNS, record.id, chunk=5)
            steps += 1
            if tally.complete:
                break
    assert steps == -(-len(comparisons) // 5)
    assert tally == at_once and at_once.total == len(comparisons)
    assert at_once.ties == sum(c.outcome == 0.5 for c in comparisons)


def test_the_report_is_served_under_a_policy_that_runs_no_script(client, stored):
    record, _, _ = stored
    assert f'href="/s/0/e/{record.id}/report"' in client.get(f"/s/0/e/{record.id}").text
    response = client.get(f"/s/0/e/{record.id}/report")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src" not in policy and "default-src 'none'" in policy
    assert html.escape(CAREFUL) in response.text and CAREFUL not in response.text


def test_a_structured_run_shows_utilities_with_their_intervals(tmp_path, monkeypatch):
    """The utilities of the live page are those of the run's own result."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    shutil.copy(examples / "feat10.json", tmp_path)
    config = (examples / "structured.yaml").read_text().replace("runs.db", "s.db")
    (tmp_path / "s.yaml").write_text(config + "max_comparisons: 150\n")
    monkeypatch.chdir(tmp_path)
    # 3: the run ended at its budget without a certificate; the page shows it all the same.
    assert CliRunner().invoke(cli, ["run", "s.yaml"]).exit_code in (0, 3)
    client = TestClient(create_app([tmp_path / "s.db"]))
    for _ in range(100):  # the replay is bounded per request
        state = client.get("/api/s/0/e/1").json()["live"]
        if state["replayed"] == state["total"] == 150:
            break
    with Store(tmp_path / "s.db", readonly=True) as store:
        result = store.experiment().result
    assert state["leader"] == result["best"]
    shown = {u["policy"]: u for u in state["utilities"]}
    assert len(shown) == 10 and shown[result["best"]]["utility"] == 0.0
    for row in result["utilities"]:
        assert shown[row["policy"]]["utility"] == pytest.approx(row["utility_vs_best"])
    assert all(u["low"] <= u["utility"] <= u["high"] for u in shown.values())
    page = client.get("/s/0/e/1/live").text
    assert '<table id="utilities">' in page and '<table id="effects">' in page
    # The factor effects are θ̂: each utility gap is (x_i − x_best)·θ̂, with intervals around it.
    effects = np.array([f["effect"] for f in state["effects"]])
    assert all(f["low"] < f["effect"] < f["high"] for f in state["effects"])
    instance = json.loads((tmp_path / "feat10.json").read_text())
    features = {name: np.array(x) for name, x in zip(
        instance["policies"], instance["features"], strict=True
    )}
    for name, row in shown.items():
        gap = (features[name] - features[result["best"]]) @ effects
        assert row["utility"] == pytest.approx(gap, abs=1e-9)


def test_held_out_evaluations_are_listed_and_browsed_like_runs(run_store, stored, tmp_path):
    record, comparisons, answers = stored
    copy = tmp_path / "eval.db"
    shutil.copy(run_store, copy)
    winner, baseline = record.policies[0], record.policies[1]
    pair = [c for c in comparisons if {c.policy_a, c.policy_b} == {0, 1}]
    with Store(copy, writer=True) as store:
        evaluation = store.create_evaluation(record.id, winner, baseline, {"comparisons": 9})
        for seq, c in enumerate(pair, start=1):  # indices 0, 1 = winner, baseline
            store.append_evaluation_comparison(evaluation, replace(c, seq=seq))
    client = TestClient(create_app([copy]))
    row = re.search(rf'<tr id="evaluation-0-{evaluation}">(.*?)</tr>', client.get("/").text, re.S)
    assert row and f">{len(pair)}<" in row[1]
    listed = client.get(f"/s/0/v/{evaluation}/comparisons?after=0").text
    assert seqs(listed.replace(f"/s/0/v/{evaluation}/", "/s/0/e/1/")) == list(
        range(1, len(pair) + 1)
    )
    page = client.get(f"/s/0/v/{evaluation}/c/1").text
    first = pair[0]
    shown = html.unescape(
        re.search(r'id="answer-a">.*?<div class="text">(.*?)</div>', page, re.S)[1]
    )
    names = [winner, baseline]
    assert shown == answers[(names[first.policy_a], first.task_id, first.raw["replicates"][0])]
    assert client.get(f"/s/0/v/{evaluation + 1}/comparisons").status_code == 404


def test_the_comparisons_download_is_llmpo_export(run_store, stored):
    """The experiment page links a CSV of its comparisons: byte for byte what ``llmpo export``
    writes, formula cells made inert, streamed."""
    record = stored[0]
    client = TestClient(create_app([run_store]))
    page = client.get(f"/s/0/e/{record.id}").text
    assert f'href="/s/0/e/{record.id}/comparisons.csv"' in page
    download = client.get(f"/s/0/e/{record.id}/comparisons.csv")
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    exported = CliRunner().invoke(cli, ["export", str(run_store), str(record.id)])
    assert exported.exit_code == 0, exported.output
    assert download.text.replace("\r\n", "\n") == exported.stdout.replace("\r\n", "\n")
    assert client.get("/s/0/e/999/comparisons.csv").status_code == 404


def test_a_run_of_preference_probabilities_is_shown_with_its_fractional_outcomes(
    tmp_path, monkeypatch
):
    from tests.conftest import SMALLEST
    from tests.test_store_fractional import _write_probabilities

    monkeypatch.chdir(tmp_path)
    _write_probabilities(tmp_path)
    (tmp_path / "experiment.yaml").write_text(SMALLEST)
    assert CliRunner().invoke(cli, ["run", "experiment.yaml"]).exit_code == 0
    with Store(tmp_path / "runs.db", readonly=True) as store:
        record = store.experiment()
        comparisons = store.comparisons(record.id)
    fractional = next(c for c in comparisons if c.outcome not in (0.0, 0.5, 1.0))
    client = TestClient(create_app([tmp_path / "runs.db"]))
    for url in all_urls(client, record, comparisons):
        assert client.get(url).status_code == 200, url
    assert f"A: {fractional.outcome:.2f}" in client.get(f"/s/0/e/{record.id}/comparisons").text
    page = client.get(f"/s/0/e/{record.id}/c/{fractional.seq}").text
    assert f"preferred with probability {fractional.outcome:g}" in page
    state = client.get(f"/api/s/0/e/{record.id}").json()["live"]
    # Wins, ties and losses of the leader by the rule of docs/ties.md, from the stored outcomes.
    best = record.policies.index(state["leader"])
    for rival in state["rivals"]:
        other = record.policies.index(rival["policy"])
        scores = [
            c.outcome if c.policy_a == best else 1 - c.outcome
            for c in comparisons
            if {c.policy_a, c.policy_b} == {best, other}
        ]
        wins = sum(max(2 * y - 1, 0) for y in scores)
        losses = sum(max(1 - 2 * y, 0) for y in scores)
        assert rival["wins"] == pytest.approx(wins, abs=0.01)
        assert rival["losses"] == pytest.approx(losses, abs=0.01)
        assert rival["ties"] == pytest.approx(len(scores) - wins - losses, abs=0.01)


def test_a_comparisons_detail_has_every_stored_field_with_its_presentation_order(tmp_path):
    from llmpo.store import ComparisonRecord, Store
    from llmpo.store.views import RUNS, comparison

    with Store(tmp_path / "runs.db", writer=True) as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        store.append_comparison(
            experiment_id, ComparisonRecord(1, 0, 1, 1.0, "t1", "ba", {"judge": "x"}, 1.0, 2.5)
        )
    with Store(tmp_path / "runs.db", readonly=True) as store:
        found = comparison(store.connection, RUNS, experiment_id, 1)
        assert comparison(store.connection, RUNS, experiment_id, 2) is None
    assert found is not None
    assert (found["order"], found["task_id"], found["raw"]) == ("ba", "t1", {"judge": "x"})
    assert (found["started_at"], found["finished_at"]) == (1.0, 2.5)
    assert "presentation_order" not in found
