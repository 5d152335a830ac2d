"""A signal always ends a live run within a bounded time, leaving it ``interrupted``; waits that a
server asks for are capped."""

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from llmpo.llm.backends import MAX_RETRY_AFTER_SECONDS, RetryPolicy, _retry_after
from llmpo.store import Store
from tests.llm.conftest import start_run, wait_for

#: What a stop may take here: the runner's grace for calls in flight (10 s) plus start-up slack.
BOUND_SECONDS = 25.0


def test_retry_after_is_read_in_every_form_and_capped():
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    later = format_datetime(datetime.now(UTC) + timedelta(days=3), usegmt=True)
    assert _retry_after({"retry-after": "2.5"}) == 2.5
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 25 <= _retry_after({"retry-after": soon}) <= 30
    assert _retry_after({"retry-after": later}) == MAX_RETRY_AFTER_SECONDS
    assert _retry_after({"retry-after": "100000"}) == MAX_RETRY_AFTER_SECONDS
    assert _retry_after({"retry-after": "inf"}) == MAX_RETRY_AFTER_SECONDS
    assert _retry_after({"retry-after": "nan"}) is None
    assert _retry_after({"retry-after": "-5"}) == 0.0
    assert _retry_after({"retry-after": "soon, please"}) is None
    assert _retry_after({}) is None


def test_a_wait_is_never_longer_than_the_caps():
    import numpy as np

    policy = RetryPolicy(backoff_seconds=10.0, max_backoff_seconds=30.0)
    rng = np.random.default_rng(0)
    waits = [policy.delay(k, 1e9, rng) for k in range(1, 30)]
    assert max(waits) == MAX_RETRY_AFTER_SECONDS
    assert max(policy.delay(k, None, rng) for k in range(1, 30)) <= 30.0


def start_run_with(project, extra: str = "") -> subprocess.Popen:
    """:func:`start_run` with ``extra`` lines added to the environment section."""
    text = (project / "live.yaml").read_text()
    (project / "live.yaml").write_text(text.replace("  type: llm\n", f"  type: llm\n{extra}"))
    return start_run(project)


def stop(process: subprocess.Popen, signals: list[int]) -> float:
    """Send ``signals`` (0.3 s apart) and return the seconds until the process ended."""
    started = time.monotonic()
    for number in signals:
        process.send_signal(number)
        time.sleep(0.3)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("the run did not stop within 60 s")
    return time.monotonic() - started


def status(project) -> str:
    with Store(project / "runs.db", readonly=True) as store:
        return store.experiment(1).status


@pytest.mark.parametrize(
    "signals",
    [
        pytest.param([signal.SIGINT], marks=pytest.mark.slow, id="SIGINT"),
        pytest.param([signal.SIGTERM], marks=pytest.mark.slow, id="SIGTERM"),  # ~12 s
        pytest.param([signal.SIGTERM, signal.SIGTERM], marks=pytest.mark.slow, id="SIGTERM-twice"),
    ],
)
def test_a_server_asking_to_retry_much_later_cannot_hold_a_run(project, server, signals):
    server.retry_after = "100000"
    server.faults.extend(["429"] * 10_000)
    process = start_run(project)
    wait_for(lambda: len(server.faults_served) >= 4)
    seconds = stop(process, signals)
    assert seconds < BOUND_SECONDS, seconds
    assert process.returncode != 0
    assert status(project) == "interrupted"
    assert "Traceback" not in process.stderr.read()


@pytest.mark.slow
def test_a_hanging_server_cannot_hold_a_run(project, server):
    server.hang_seconds = 600.0
    server.faults.extend(["timeout"] * 10_000)
    process = start_run_with(project, "  timeout_seconds: 60\n")
    wait_for(lambda: len(server.faults_served) >= 4)
    seconds = stop(process, [signal.SIGTERM])
    assert seconds < BOUND_SECONDS, seconds
    assert status(project) == "interrupted"
    assert "Traceback" not in process.stderr.read()
