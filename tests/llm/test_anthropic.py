"""The anthropic backend against the local server speaking the Messages API: the same faults,
retries, timeouts and key hygiene as the openai backend, and a live run that certifies."""

import asyncio
import email.utils
import json
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import AnthropicBackendConfig
from llmpo.llm.backends import (
    AnthropicBackend,
    BackendError,
    GenerationRequest,
    RetryPolicy,
    call_with_retries,
)
from llmpo.store import Store
from tests.llm.conftest import SECRET, SMALLEST_LIVE, write_tasks

pytest.importorskip("anthropic")

REQUEST = GenerationRequest(
    (("system", "Answer with the number only."), ("user", "What is 1 + 2?")),
    "claude-test",
    temperature=0.0,
    stop=("\n\n",),
)
FAST = RetryPolicy(timeout_seconds=0.5, max_retries=3, backoff_seconds=0.001)


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)


def call(server, policy=FAST, request=REQUEST):
    async def once():
        backend = AnthropicBackend(
            AnthropicBackendConfig(type="anthropic", model="claude-test", base_url=server.root_url)
        )
        try:
            return await call_with_retries(backend, request, policy, np.random.default_rng(0))
        finally:
            await backend.aclose()

    return asyncio.run(once())


def test_the_request_maps_to_the_messages_api_and_carries_the_key(server):
    generation = call(server)
    assert generation.text == "3" and generation.output_tokens == 3 and generation.input_tokens
    (body,) = server.bodies
    assert body == {
        "model": "claude-test",
        "max_tokens": 1024,  # the API needs one: the backend's default_max_tokens
        "system": "Answer with the number only.",
        "messages": [{"role": "user", "content": "What is 1 + 2?"}],
        "temperature": 0.0,
        "stop_sequences": ["\n\n"],
    }
    assert server.authorizations in ([SECRET], [f"Bearer {SECRET}"])


@pytest.mark.parametrize("fault", ["429", "500", "529", "malformed", "empty", "timeout"])
def test_transient_faults_are_retried(server, fault):
    server.hang_seconds = 2.0
    server.faults.append(fault)
    assert call(server).text == "3"
    assert server.faults_served == [fault]


def test_permanent_errors_are_not_retried_and_the_key_is_scrubbed(server):
    server.faults.extend(["401", "401"])
    with pytest.raises(BackendError, match="HTTP 401") as error:
        call(server)
    assert type(error.value) is BackendError and server.faults_served == ["401"]
    assert SECRET not in str(error.value)


def test_retries_are_bounded_and_a_hung_call_times_out(server):
    server.hang_seconds = 1.0
    server.faults.extend(["timeout"] * 3)
    started = time.monotonic()
    with pytest.raises(BackendError, match="gave up after 2 attempts"):
        call(server, RetryPolicy(timeout_seconds=0.3, max_retries=1, backoff_seconds=0.001))
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after-ms": "400"},
        {"Retry-After": "0.4"},
        {"Retry-After": "HTTP_DATE"},  # two seconds ahead, as an HTTP date
    ],
)
def test_retry_after_is_honoured_in_milliseconds_seconds_and_as_a_date(server, headers):
    wait = 0.4
    if headers.get("Retry-After") == "HTTP_DATE":
        # An HTTP date has whole seconds: ask for the second after next.
        target = int(time.time()) + 2
        headers = {"Retry-After": email.utils.formatdate(target, usegmt=True)}
        wait = target - time.time() - 0.05
    server.retry_headers = headers
    server.faults.append("429")
    started = time.monotonic()
    call(server)
    assert time.monotonic() - started >= wait


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(BackendError, match=r"ANTHROPIC_API_KEY .* is not set"):
        AnthropicBackend(AnthropicBackendConfig(type="anthropic", model="m"))


def test_a_live_run_on_the_anthropic_backend_certifies_and_keeps_the_key_off_disk(
    tmp_path, monkeypatch, server
):
    monkeypatch.chdir(tmp_path)
    # The key comes from .env (python-dotenv); monkeypatch removes it from the environment after.
    monkeypatch.setenv("MY_KEY", "placeholder")
    monkeypatch.delenv("MY_KEY")
    (tmp_path / ".env").write_text(f"MY_KEY={SECRET}\n")
    write_tasks(tmp_path)
    config = SMALLEST_LIVE.replace(
        'type: openai, base_url: "BASE_URL"', f'type: anthropic, base_url: "{server.root_url}"'
    )
    (tmp_path / "live.yaml").write_text(config)
    result = CliRunner().invoke(app, ["run", "live.yaml", "--json", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["winner"] == "careful" and data["certified"] is True
    with Store(tmp_path / "runs.db", readonly=True) as store:
        assert all(c.input_tokens for c in store.comparisons(data["experiment_id"]))
    assert all(auth in (SECRET, f"Bearer {SECRET}") for auth in server.authorizations)
    for path in tmp_path.iterdir():
        if path.is_file() and path.name != ".env":
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.output


def test_without_the_sdk_both_anthropic_clients_name_the_extra(monkeypatch):
    from llmpo.llm.batch import AnthropicBatches

    monkeypatch.setitem(sys.modules, "anthropic", None)  # import raises ImportError
    config = AnthropicBackendConfig(type="anthropic", model="claude-test", batch=True)
    for client in (AnthropicBackend, AnthropicBatches):
        with pytest.raises(BackendError, match=r"pip install 'llmpo\[anthropic\]'"):
            client(config)
