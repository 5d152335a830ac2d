"""End to end in a real browser: headless Chromium (the system's) driven by Playwright against a
live ``llmpo serve`` process. Two judges sign in and judge by click and by keyboard, the status
page updates itself, the server is restarted midway, and the experiment ends with a certified
winner. Screenshots go to the test's temporary folder (and to ``$LLMPO_SCREENSHOT_DIR`` when set,
which is how ``docs/img/judging.png`` is made)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

#: CI sets LLMPO_REQUIRE_BROWSER=1 so that a missing browser fails the run instead of skipping.
REQUIRED = os.environ.get("LLMPO_REQUIRE_BROWSER") == "1"
if REQUIRED:
    import playwright.sync_api as playwright_api
else:
    pytest.importorskip("fastapi")
    playwright_api = pytest.importorskip("playwright.sync_api")

from llmpo.store import Store  # noqa: E402
from tests.human.conftest import KEY, human_choice  # noqa: E402

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED, reason="no Chromium (apt-get install chromium)"
)
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """``llmpo serve STORE`` in a child process (the real command line)."""

    def __init__(self, store: Path, port: int, log: Path) -> None:
        self.store, self.port, self.log = store, port, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Serve:
        env = {**os.environ, "HUMAN_KEY": KEY}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]
        )
        command = [sys.executable, "-m", "llmpo", "serve", str(self.store)]
        command += ["--port", str(self.port), "--concurrency", "2"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/signin", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"llmpo serve did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # what a service manager does
            self.process.wait(30)
        self.process = None


def judge_in_page(page, keyboard: bool) -> bool:
    """Judge the comparison shown as a careful person would; False once the experiment is over."""
    page.wait_for_selector("#verdict, #finished", timeout=20_000)
    if page.query_selector("#finished"):
        return False
    choice = human_choice(
        page.inner_text("#prompt"),
        page.inner_text("#answer-a .text"),
        page.inner_text("#answer-b .text"),
    )
    item = page.get_attribute("input[name=item]", "value")
    with page.expect_navigation():
        if keyboard:
            page.keyboard.press({"A": "1", "B": "2", "tie": "3"}[choice])
        else:
            page.click({"A": "#choose-a", "B": "#choose-b", "tie": "#choose-tie"}[choice])
    page.wait_for_selector("#verdict, #finished, #waiting", timeout=20_000)
    assert page.query_selector(f'input[name=item][value="{item}"]') is None  # a new one
    return True


def sign_in(page, url: str, token: str) -> None:
    page.goto(f"{url}/judge")
    assert page.inner_text("h1") == "Sign in to judge"  # refused without a token
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("button[type=submit]")


def comparisons_shown(page) -> int:
    return int(page.inner_text("#comparisons").split("/")[0].strip())


def test_judges_in_a_browser_finish_an_experiment_to_a_certified_winner(human_project, tmp_path):
    assert CHROMIUM is not None, "no Chromium: apt-get install chromium"
    _, store, tokens = human_project()
    shots = [tmp_path]
    if os.environ.get("LLMPO_SCREENSHOT_DIR"):
        shots.append(Path(os.environ["LLMPO_SCREENSHOT_DIR"]))
    server = Serve(store, free_port(), tmp_path / "serve.log").start()
    started = time.monotonic()
    try:
        with playwright_api.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            viewport = {"width": 1200, "height": 760}
            alice = browser.new_context(viewport=viewport).new_page()
            bob = browser.new_context(viewport=viewport).new_page()
            sign_in(alice, server.url, tokens["alice"])
            sign_in(bob, server.url, tokens["bob"])
            alice.wait_for_selector("#verdict")
            assert "alice" in alice.inner_text(".who")
            alice.fill("#comment", "Both are short; A gives the exact sum.")
            for folder in shots:
                folder.mkdir(parents=True, exist_ok=True)
                clip = {"x": 0, "y": 0, "width": 1200, "height": 580}  # the page, not the void
                alice.screenshot(path=str(folder / "judging.png"), clip=clip)
            alice.fill("#comment", "")
            status = alice.context.new_page()
            status.goto(f"{server.url}/status")
            assert comparisons_shown(status) == 0
            # By click, then by keyboard; bob judges too, at the same time.
            for step in range(3):
                assert judge_in_page(alice, keyboard=False)
                assert judge_in_page(bob, keyboard=step % 2 == 0)
            for _ in range(2):
                assert judge_in_page(alice, keyboard=True)
            # The status page follows without a reload.
            deadline = time.monotonic() + 10  # (the page's policy forbids evaluated scripts)
            while comparisons_shown(status) < 8 and time.monotonic() < deadline:
                status.wait_for_timeout(100)
            assert comparisons_shown(status) == 8
            assert status.inner_text("#leader") == "careful"
            # Restart the server: nothing is lost, and judging resumes.
            server.stop()
            with Store(store, readonly=True) as opened:
                assert opened.comparison_count(opened.experiment().id) == 8
            server.start()
            alice.goto(f"{server.url}/judge")
            bob.goto(f"{server.url}/judge")
            keyboard = True
            while judge_in_page(alice, keyboard) and judge_in_page(bob, not keyboard):
                keyboard = not keyboard
            for page in (alice, bob):
                page.goto(f"{server.url}/judge")
                assert page.inner_text("#winner") == "careful"
            status.wait_for_selector("text=Certified winner", timeout=10_000)
            assert status.inner_text("#leader") == "careful"
            for folder in shots:
                status.screenshot(path=str(folder / "status.png"), full_page=True)
            shown = comparisons_shown(status)
            browser.close()
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    with Store(store, readonly=True) as opened:
        record = opened.experiment()
        comparisons = opened.comparisons(record.id)
    assert record.status == "certified" and record.result["best"] == "careful"
    assert len(comparisons) == shown > 8
    names = {c.raw["judge"]["judge_name"] for c in comparisons}
    assert names == {"alice", "bob"}
    assert (tmp_path / "judging.png").stat().st_size > 10_000
    assert (tmp_path / "status.png").stat().st_size > 10_000
    assert elapsed < 60, elapsed
