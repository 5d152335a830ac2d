"""The openai backend against the local server: faults are retried or reported as designed."""

import asyncio
import time

import numpy as np
import pytest

import llmpo.llm.backends
from llmpo.config import BackendConfig
from llmpo.llm.backends import (
    CLIENTS_PER_BACKEND,
    BackendError,
    GenerationRequest,
    OpenAIBackend,
    RequestRateLimiter,
    RetryPolicy,
    call_with_retries,
)
from tests.llm.conftest import SECRET

REQUEST = GenerationRequest((("user", "What is 1 + 2?"),), "m1", temperature=0.0)


def call(
    server, policy: RetryPolicy, request: GenerationRequest = REQUEST, transport: str = "auto"
):
    async def once():
        backend = OpenAIBackend(
            BackendConfig(type="openai", model="m1", base_url=server.base_url), transport
        )
        try:
            return await call_with_retries(backend, request, policy, np.random.default_rng(0))
        finally:
            await backend.aclose()

    return asyncio.run(once())


FAST = RetryPolicy(timeout_seconds=0.5, max_retries=3, backoff_seconds=0.001)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("fault", ["429", "500", "malformed", "empty", "timeout"])
def test_transient_faults_are_retried(server, fault, transport):
    server.hang_seconds = 2.0
    server.faults.append(fault)
    generation = call(server, FAST, transport=transport)
    assert generation.text == "3" or generation.text.startswith("about")
    assert server.faults_served == [fault]
    assert generation.input_tokens and generation.output_tokens == 3


def test_retry_after_is_honoured(server):
    server.retry_after = "0.4"
    server.faults.extend(["429", "429"])
    started = time.monotonic()
    call(server, FAST)
    assert time.monotonic() - started >= 0.8
    assert server.faults_served == ["429", "429"]


def test_retries_are_bounded_and_the_error_says_so(server):
    server.faults.extend(["500"] * 10)
    with pytest.raises(BackendError, match=r"HTTP 500.*gave up after 3 attempts"):
        call(server, RetryPolicy(timeout_seconds=0.5, max_retries=2, backoff_seconds=0.001))
    assert len(server.faults_served) == 3


def test_permanent_errors_are_not_retried(server):
    server.faults.extend(["401", "401"])
    with pytest.raises(BackendError, match="HTTP 401") as error:
        call(server, FAST)
    assert type(error.value) is BackendError and server.faults_served == ["401"]


def test_hard_timeout_per_call(server):
    server.hang_seconds = 1.0
    server.faults.extend(["timeout"] * 3)
    started = time.monotonic()
    with pytest.raises(BackendError, match="gave up after 2 attempts"):
        call(server, RetryPolicy(timeout_seconds=0.3, max_retries=1, backoff_seconds=0.001))
    assert time.monotonic() - started < 1.5


def test_backoff_grows_with_jitter_and_respects_the_cap():
    policy = RetryPolicy(backoff_seconds=1.0, max_backoff_seconds=5.0)
    rng = np.random.default_rng(1)
    delays = [[policy.delay(k, None, rng) for _ in range(200)] for k in (1, 2, 3, 6)]
    assert [max(d) <= cap for d, cap in zip(delays, (1, 2, 4, 5), strict=True)] == [True] * 4
    assert np.mean(delays[2]) > np.mean(delays[0])
    assert policy.delay(1, 7.5, rng) == 7.5


def test_the_key_is_scrubbed_from_error_messages(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    backend = OpenAIBackend(
        BackendConfig(type="openai", model="m1", base_url=server.base_url, api_key_env="MY_KEY")
    )
    server.responder = lambda body: "unused"
    server.faults.append("401")

    async def fail():
        try:
            await backend.complete(REQUEST, 1.0)
        finally:
            await backend.aclose()

    with pytest.raises(BackendError) as error:
        asyncio.run(fail())
    assert SECRET not in str(error.value)
    assert server.authorizations == [f"Bearer {SECRET}"]


def test_requests_per_minute_spaces_the_calls(server):
    async def calls():
        backend = OpenAIBackend(BackendConfig(type="openai", model="m1", base_url=server.base_url))
        limiter = RequestRateLimiter(per_minute=1200)  # one call every 50 ms
        rng = np.random.default_rng(0)
        try:
            started = time.monotonic()
            await asyncio.gather(
                *(call_with_retries(backend, REQUEST, FAST, rng, None, limiter) for _ in range(11))
            )
            return time.monotonic() - started
        finally:
            await backend.aclose()

    assert asyncio.run(calls()) >= 0.5 and server.served == 11


def test_auto_transport_is_aiohttp_when_installed():
    backend = OpenAIBackend(
        BackendConfig(type="openai", model="m1", base_url="http://127.0.0.1:9/v1")
    )
    assert backend.transport == "aiohttp" and len(backend.clients) == 1
    asyncio.run(backend.aclose())
    with pytest.raises(ValueError, match="transport must be"):
        OpenAIBackend(BackendConfig(type="openai", model="m1"), "curl")


def test_without_aiohttp_the_backend_falls_back_to_httpx(monkeypatch):
    monkeypatch.setattr(llmpo.llm.backends, "_aiohttp_client", lambda: None)
    config = BackendConfig(type="openai", model="m1", base_url="http://127.0.0.1:9/v1")
    backend = OpenAIBackend(config)
    assert backend.transport == "httpx" and len(backend.clients) == CLIENTS_PER_BACKEND
    asyncio.run(backend.aclose())
    with pytest.raises(BackendError, match="pip install aiohttp"):
        OpenAIBackend(config, "aiohttp")


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_the_request_body_carries_exactly_the_set_decoding_parameters(server, transport):
    request = GenerationRequest(
        (("system", "Be brief."), ("user", "What is 1 + 2?")),
        "m1",
        temperature=0.7,
        max_tokens=5,
        seed=11,
        stop=("\n",),
    )
    call(server, FAST, request, transport)
    call(server, FAST, REQUEST, transport)
    assert server.bodies == [
        {
            "model": "m1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 1 + 2?"},
            ],
            "temperature": 0.7,
            "max_tokens": 5,
            "seed": 11,
            "stop": ["\n"],
        },
        {
            "model": "m1",
            "messages": [{"role": "user", "content": "What is 1 + 2?"}],
            "temperature": 0.0,
        },
    ]


def test_one_backend_keeps_more_calls_in_flight_than_a_default_pool_allows(server):
    # aiohttp's default pool holds 100 connections; the runner, not the pool, bounds the calls.
    server.latency = 0.5

    async def calls():
        backend = OpenAIBackend(BackendConfig(type="openai", model="m1", base_url=server.base_url))
        rng = np.random.default_rng(0)
        try:
            return await asyncio.gather(
                *(call_with_retries(backend, REQUEST, FAST_ENOUGH, rng) for _ in range(150))
            )
        finally:
            await backend.aclose()

    FAST_ENOUGH = RetryPolicy(timeout_seconds=20.0, max_retries=0)
    assert len(asyncio.run(calls())) == 150
    assert server.max_in_flight > 100
