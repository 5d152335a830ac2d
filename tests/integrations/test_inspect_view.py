"""``inspect view`` opens the log that llmpo's Inspect task wrote (issue 15, must show).

The log is written as in tests/integrations/test_inspect.py (the real inspect-ai with its
offline mock model); ``inspect view`` is started on its directory, and its page and its
log-listing API are fetched over HTTP from 127.0.0.1.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("inspect_ai")


from tests.integrations.test_inspect import select_careful_or_quick


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch(url: str, deadline: float) -> bytes:
    """GET ``url``, retrying while the server starts (until ``deadline``, monotonic)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow  # ~18 s: the Inspect task, then the viewer's start-up
def test_inspect_view_opens_the_log_of_the_llmpo_task(tmp_path):
    selection = select_careful_or_quick(tmp_path)
    assert selection.result.certified
    (log,) = tmp_path.glob("*.eval")
    port = free_port()
    command = [sys.executable, "-m", "inspect_ai", "view", "--log-dir", str(tmp_path)]
    errors = (tmp_path / "viewer.err").open("w")  # read if the viewer never answers
    viewer = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    try:
        deadline = time.monotonic() + 60
        base = f"http://127.0.0.1:{port}"
        page = fetch(f"{base}/", deadline).decode()
        assert "<html" in page.lower() and "<script" in page.lower()
        listing = json.loads(fetch(f"{base}/api/log-files", deadline))
        names = [entry["name"] for entry in listing["files"]]
        assert any(name.endswith(log.name) for name in names), names
        # The log itself, as the viewer reads it: llmpo's certificate is in it.
        (name,) = [n for n in names if n.endswith(log.name)]
        opened = json.loads(fetch(f"{base}/api/logs/{urllib.parse.quote(name, safe='')}", deadline))
        assert opened["status"] == "success"
        assert opened["results"]["early_stopping"]["metadata"]["winner"] == "careful"
    finally:
        viewer.terminate()
        try:
            viewer.wait(10)
        except subprocess.TimeoutExpired:
            viewer.kill()
            viewer.wait()
        errors.close()
