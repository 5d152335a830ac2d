"""The judging server without a browser (FastAPI's TestClient, real SQLite, real HTTP answers):
access control, leases, verdicts through the store, restarts."""

from __future__ import annotations

import re
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient

from llmpo.human.app import create_app
from llmpo.store import Store
from tests.human.conftest import human_choice, parse_judging_page


def client_for(store, token=None, **options) -> TestClient:
    client = TestClient(create_app(store, **options), follow_redirects=False)
    if token is not None:
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def stored(store) -> tuple[int, str, list]:
    with Store(store, readonly=True) as opened:
        record = opened.experiment()
        return (
            opened.comparison_count(record.id),
            record.status,
            opened.comparisons(record.id),
        )


class As:
    """One judge's requests through a shared client (one server, one event loop)."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, url: str, **options):
        return self.client.get(url, headers=self.headers, **options)

    def post(self, url: str, **options):
        return self.client.post(url, headers=self.headers, **options)


def judge_once(client) -> dict[str, str]:
    """Fetch a comparison and judge it as a careful person would; returns the page's fields."""
    page = client.get("/judge")
    assert page.status_code == 200, page.text
    fields = parse_judging_page(page.text)
    choice = human_choice(fields["prompt"], fields["a"], fields["b"])
    response = client.post(
        "/judge",
        data={
            "csrf": fields["csrf"],
            "item": fields["item"],
            "lease": fields["lease"],
            "choice": choice,
            "comment": "checked the sum",
        },
    )
    assert response.status_code == 303, response.text
    fields["choice"] = choice
    return fields


def test_two_judges_to_a_certified_winner_through_the_store(human_project):
    _, store, tokens = human_project()
    alice = client_for(store, concurrency=2)
    with alice:
        form = alice.get("/signin")
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
        signin = alice.post("/signin", data={"token": tokens["alice"], "nonce": nonce})
        assert signin.status_code == 303 and signin.headers["location"] == "/judge"
        (cookie,) = [
            c for c in signin.headers.get_list("set-cookie") if c.startswith("llmpo_judge=")
        ]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        bob = As(alice, tokens["bob"])  # alice signed in by cookie, bob sends his token
        done = {"alice": 0, "bob": 0}
        for step in range(200):
            status = alice.get("/api/status").json()
            if status["state"] != "running":
                break
            name, client = ("alice", alice) if step % 3 else ("bob", bob)
            judge_once(client)
            done[name] += 1
        status = alice.get("/api/status").json()
        finished = alice.get("/judge")
    assert status["state"] == "certified" and status["certified"]
    assert status["leader"] == "careful"
    count, record_status, comparisons = stored(store)
    assert record_status == "certified" and count == status["comparisons"] == sum(done.values())
    assert "Certified best policy" in finished.text and "careful" in finished.text
    # Each verdict carries its judge's name, the random order shown and the comment.
    names = [c.raw["judge"]["judge_name"] for c in comparisons]
    assert {n: names.count(n) for n in set(names)} == done
    assert {j["name"]: j["verdicts"] for j in status["judges"]} == done
    assert {c.order for c in comparisons} == {"ab", "ba"}
    assert all(c.raw["judge"]["comment"] == "checked the sum" for c in comparisons)
    # The outcome is the verdict on the policies, whatever the order they were shown in.
    for c in comparisons:
        careful_won = c.outcome == 1.0 if c.policy_a == 0 else c.outcome == 0.0
        assert careful_won == (0 in (c.policy_a, c.policy_b)), c


def test_two_judges_at_once_never_receive_the_same_comparison(human_project):
    _, store, tokens = human_project(judges=("alice", "bob", "carol"))
    with client_for(store, concurrency=3) as first:
        clients = {name: As(first, token) for name, token in tokens.items()}
        rounds = 0
        while clients["alice"].get("/api/status").json()["state"] == "running":
            # Everyone holds a comparison at the same time, then everyone judges.
            held = {name: parse_judging_page(c.get("/judge").text) for name, c in clients.items()}
            items = [fields.get("item") for fields in held.values() if "item" in fields]
            assert len(items) == 3 or rounds > 0, held  # three pending: one for each judge
            assert len(set(items)) == len(items), held
            # Reloading shows a judge the comparison they hold, not a new one.
            if "item" in held["bob"]:
                again = parse_judging_page(clients["bob"].get("/judge").text)
                assert again["item"] == held["bob"]["item"]
            for name, client in clients.items():
                fields = held[name]
                if "item" not in fields:
                    continue
                choice = human_choice(fields["prompt"], fields["a"], fields["b"])
                response = client.post("/judge", data={**fields, "choice": choice})
                assert response.status_code in (303, 409)  # 409 once the experiment is done
            rounds += 1
        status = clients["alice"].get("/api/status").json()
    count, _, comparisons = stored(store)
    assert status["certified"] and rounds >= 3
    assert count == status["comparisons"]
    assert {c.raw["judge"]["judge_name"] for c in comparisons} == {"alice", "bob", "carol"}


def test_an_abandoned_lease_is_reassigned(human_project):
    _, store, tokens = human_project(lease_seconds=1.0)
    with client_for(store, tokens["alice"], concurrency=1, assign_wait_seconds=0.3) as alice:
        bob = As(alice, tokens["bob"])
        abandoned = parse_judging_page(alice.get("/judge").text)
        waiting = bob.get("/judge")  # the only pending comparison is alice's
        assert "Waiting for the next comparison" in waiting.text
        time.sleep(1.2)  # alice walks away; her lease lapses
        taken = parse_judging_page(bob.get("/judge").text)
        assert taken["item"] == abandoned["item"] and taken["lease"] != abandoned["lease"]
        status = alice.get("/api/status").json()
        assert {j["name"]: j["judging_now"] for j in status["judges"]} == {"alice": 0, "bob": 1}
        late = alice.post("/judge", data={**abandoned, "choice": "A"})
        assert late.status_code == 409 and "handed to another judge" in late.text
        assert stored(store)[0] == 0
        ok = bob.post(
            "/judge",
            data={**taken, "choice": human_choice(taken["prompt"], taken["a"], taken["b"])},
        )
        assert ok.status_code == 303
    count, _, comparisons = stored(store)
    assert count == 1
    assert comparisons[0].raw["judge"]["judge_name"] == "bob"
    assert comparisons[0].raw["judge"]["leases"] == 2


def test_requests_without_a_valid_token_or_with_a_forged_form_change_nothing(human_project):
    _, store, tokens = human_project()
    with client_for(store) as anonymous:
        alice = As(anonymous, tokens["alice"])
        held = parse_judging_page(alice.get("/judge").text)
        form = {**held, "choice": "A"}
        wrong = {"Authorization": "Bearer llmpo_not-a-token"}
        before = stored(store)
        with Store(store, readonly=True) as opened:
            events_before = opened.events(opened.experiment().id)
        refused = [
            anonymous.get("/"),
            anonymous.get("/judge"),
            anonymous.get("/status"),
            anonymous.get("/status?partial=1"),
            anonymous.get("/api/status"),
            anonymous.get("/judge", headers=wrong),
            anonymous.get("/status", headers=wrong),
            anonymous.get("/judge", headers={"Cookie": "llmpo_judge=llmpo_guess"}),
            anonymous.post("/judge", data=form),
            anonymous.post("/judge", data=form, headers=wrong),
        ]
        form_page = anonymous.get("/signin")
        for guess in ("llmpo_guess", "", tokens["alice"] + "x"):
            nonce = re.search(r'name="nonce" value="([^"]+)"', form_page.text).group(1)
            form_page = anonymous.post("/signin", data={"token": guess, "nonce": nonce})
            refused.append(form_page)  # each refusal comes with a fresh form
        assert [r.status_code for r in refused] == [401] * len(refused)
        assert all("Sign in" in r.text for r in refused if not r.url.path.startswith("/api"))
        assert not any("llmpo_judge=" in r.headers.get("set-cookie", "") for r in refused)
        # A valid token with a forged form: no CSRF value, a made-up one, bob's value.
        bob_csrf = parse_judging_page(As(anonymous, tokens["bob"]).get("/judge").text)["csrf"]
        forged = [
            alice.post("/judge", data={k: v for k, v in form.items() if k != "csrf"}),
            alice.post("/judge", data={**form, "csrf": "0" * 64}),
            alice.post("/judge", data={**form, "csrf": bob_csrf}),
            alice.post("/signout", data={"csrf": bob_csrf}),
        ]
        # A sign-in form not made by the server (login forgery), even with a valid token.
        signin_forged = [
            anonymous.post("/signin", data={"token": tokens["alice"]}),
            anonymous.post("/signin", data={"token": tokens["alice"], "nonce": "x" * 22}),
        ]
        assert [r.status_code for r in signin_forged] == [403, 403]
        assert not any("llmpo_judge=" in r.headers.get("set-cookie", "") for r in signin_forged)
        assert [r.status_code for r in forged] == [403] * len(forged)
        assert all("Nothing was recorded" in r.text for r in forged)
        # Nothing changed: no comparison, no event, and alice still holds the same comparison.
        assert stored(store)[:2] == before[:2]
        with Store(store, readonly=True) as opened:
            assert opened.events(opened.experiment().id) == events_before
        assert parse_judging_page(alice.get("/judge").text)["lease"] == held["lease"]
        # The genuine form is accepted.
        assert alice.post("/judge", data=form).status_code == 303
    assert stored(store)[0] == 1


def test_pages_use_only_local_assets_under_a_strict_policy(human_project):
    _, store, tokens = human_project()
    with client_for(store, tokens["alice"]) as alice:
        pages = [alice.get("/judge"), alice.get("/status"), alice.get("/signin")]
        for response in pages:
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "style-src 'self'" in policy
            assert "http://" not in response.text and "https://" not in response.text
            assert "<script>" not in response.text and "style=" not in response.text
        assert alice.get("/static/style.css").status_code == 200
        assert "keydown" in alice.get("/static/app.js").text


def test_a_restart_loses_no_verdict_and_resumes(human_project):
    _, store, tokens = human_project()
    with client_for(store, tokens["alice"], concurrency=2) as alice:
        for _ in range(3):
            judge_once(alice)
        judged_before = alice.get("/api/status").json()
    count, status, first = stored(store)
    assert count == 3 and judged_before["comparisons"] == 3
    assert status == "interrupted"  # the server stopped; the experiment waits for the next one
    with client_for(store, tokens["bob"], concurrency=2) as bob:
        status_after = bob.get("/api/status").json()
        assert status_after["comparisons"] == 3
        assert {j["name"]: j["verdicts"] for j in status_after["judges"]}["alice"] == 3
        for _ in range(200):
            if bob.get("/api/status").json()["state"] != "running":
                break
            judge_once(bob)
        final = bob.get("/api/status").json()
    count, status, comparisons = stored(store)
    assert final["certified"] and final["leader"] == "careful" and status == "certified"
    assert comparisons[:3] == first
    assert count == final["comparisons"] > 3


def test_judges_asking_at_the_same_instant_get_distinct_comparisons(human_project):
    """Six judges hit a live uvicorn server at once while three comparisons wait."""
    import json
    import socket
    import threading
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    uvicorn = pytest.importorskip("uvicorn")
    _, store, tokens = human_project(judges=tuple(f"judge{k}" for k in range(6)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(store, concurrency=3, assign_wait_seconds=1.0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def get(path: str, token: str) -> str:
        request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if json.loads(get("/api/status", tokens["judge0"]))["waiting"] == 3:
                    break
            except OSError:  # not listening yet
                pass
            time.sleep(0.05)
        barrier = threading.Barrier(len(tokens))

        def ask(token: str) -> str:
            barrier.wait()
            return get("/judge", token)

        with ThreadPoolExecutor(len(tokens)) as pool:
            pages = list(pool.map(ask, tokens.values()))
        status = json.loads(get("/api/status", tokens["judge0"]))
    finally:
        server.should_exit = True
        thread.join(30)
    items = [parse_judging_page(page).get("item") for page in pages]
    handed = [item for item in items if item is not None]
    assert len(handed) == 3 and len(set(handed)) == 3
    assert sum("Waiting for the next comparison" in page for page in pages) == 3
    assert status["waiting"] == 0 and status["being_judged"] == 3
    assert sorted(j["judging_now"] for j in status["judges"]) == [0, 0, 0, 1, 1, 1]
    assert stored(store)[0] == 0
