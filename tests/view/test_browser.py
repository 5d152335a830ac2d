"""End to end in a real browser: ``llmpo run`` of a live experiment (local OpenAI-compatible
server, answers carrying stored-XSS payloads) while ``llmpo view`` shows it in headless Chromium
(the system's) driven by Playwright. The page's statistics move without a reload, a comparison
shows both answers, the list filters to ties, and the page says "certified" once the run is.
Screenshots go to the test's temporary folder and to ``$LLMPO_SCREENSHOT_DIR`` when set (how
``docs/img/view-*.png`` are made)."""

from __future__ import annotations

import os
import shutil
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
from tests.human.test_browser import CHROMIUM, free_port  # noqa: E402
from tests.llm.server import FakeOpenAIServer  # noqa: E402
from tests.view.conftest import CAREFUL, KEY, answer, write_project  # noqa: E402

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED, reason="no Chromium (apt-get install chromium)"
)
ROOT = Path(__file__).resolve().parents[2]


def llmpo(arguments: list[str], folder: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VIEW_KEY": KEY}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "llmpo", *arguments], cwd=folder, env=env, stdout=out, stderr=out
        )


def wait_until(condition, seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {seconds} s" + (f":\n{log.read_text()}" if log else ""))


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow  # about a minute: the run is slowed down to be watched
def test_a_live_run_is_watched_in_the_browser_until_it_certifies(tmp_path):
    assert CHROMIUM is not None, "no Chromium: apt-get install chromium"
    shots = [tmp_path / "shots"]
    if os.environ.get("LLMPO_SCREENSHOT_DIR"):
        shots.append(Path(os.environ["LLMPO_SCREENSHOT_DIR"]))
    for folder in shots:
        folder.mkdir(parents=True, exist_ok=True)

    def shoot(page, name: str) -> None:
        for folder in shots:
            page.screenshot(path=str(folder / f"view-{name}.png"), full_page=True)

    # Slow enough to watch: tie-aware statistics and shared answers certify in ~25 comparisons.
    server = FakeOpenAIServer(answer, latency=1.5).start()
    write_project(tmp_path, server.base_url)
    store = tmp_path / "runs.db"
    Store(store).close()  # the viewer opens it before the run starts
    run_log, view_log = tmp_path / "run.log", tmp_path / "view.log"
    run = view = None
    dialogs: list[str] = []
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        view = llmpo(["view", str(store), "--port", str(port)], tmp_path, view_log)
        wait_until(lambda: serving(url + "/"), 60, "llmpo view did not start", view_log)
        with playwright_api.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(url + "/")
            assert "No experiment yet" in page.inner_text("main")
            run = llmpo(["run", "view.yaml", "--concurrency", "1"], tmp_path, run_log)
            # The listing follows too: the new experiment appears without a reload.
            page.wait_for_selector(".experiments td a", timeout=60_000)
            assert "running" in page.inner_text(".experiments")
            with page.expect_navigation():
                page.click(".experiments td a >> nth=0")
            page.wait_for_selector("#certificate tbody tr", timeout=30_000)
            loads: list[str] = []
            page.on("load", lambda: loads.append(page.url))
            first = (page.inner_text("#comparisons"), page.inner_text("#certificate tbody"))
            # The statistics move as comparisons arrive, with no reload of the page.
            wait_until(
                lambda: (
                    page.inner_text("#certificate tbody") != first[1]
                    and page.inner_text("#comparisons") != first[0]
                ),
                30,
                "the page did not follow the run",
                run_log,
            )
            assert int(page.inner_text("#comparisons")) > int(first[0])
            assert page.query_selector("#trace polyline") is not None
            shoot(page, "live")
            page.wait_for_selector("text=Certified winner", timeout=90_000)
            assert loads == []  # updated in place: never reloaded
            assert page.inner_text("#leader") == CAREFUL  # the payload, as text
            shoot(page, "certified")
            run.wait(30)
            with Store(store, readonly=True) as opened:
                record = opened.experiment()
                comparisons = opened.comparisons(record.id)
            assert record.status == "certified"
            assert int(page.inner_text("#comparisons")) == len(comparisons)
            # Browse: open a comparison that B lost and read both answers.
            with page.expect_navigation():
                page.click("text=browse the comparisons")
            lost = next(c for c in comparisons if c.outcome == 1.0)
            with page.expect_navigation():
                page.click(f'a.open[href$="/c/{lost.seq}"]')
            answer_a = page.inner_text("#answer-a .text")
            answer_b = page.inner_text("#answer-b .text")
            assert answer_a.strip().isdigit()  # the careful policy's sum
            assert answer_b.startswith("<script>document.title='pwned'</script>")
            shoot(page, "comparison")
            # Filter to ties.
            page.go_back()
            page.select_option("#filter-outcome", "tie")
            with page.expect_navigation():
                page.click("#apply")
            verdicts = page.locator("td.verdict").all_inner_texts()
            ties = [c for c in comparisons if c.outcome == 0.5]
            assert verdicts == ["tie"] * min(len(ties), 50) and verdicts
            shoot(page, "ties")
            page.goto(url + "/")
            assert "✓ certified" in page.inner_text(".experiments")
            shoot(page, "list")
            assert page.title() != "pwned" and dialogs == []  # no payload ran
            browser.close()
    finally:
        for process in (view, run):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
        server.stop()
    for name in ("live", "certified", "comparison", "ties", "list"):
        assert (tmp_path / "shots" / f"view-{name}.png").stat().st_size > 10_000
    shutil.rmtree(tmp_path / "shots")
