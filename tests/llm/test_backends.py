"""The openai backend against the local server: faults are retried or reported as designed."""

import asyncio
import socket
import ssl
import time

import numpy as np
import pytest

import llmpo.llm.backends
from llmpo.config import BackendConfig
from llmpo.llm.backends import (
    CLIENTS_PER_BACKEND,
    CONNECT_RETRIES,
    BackendError,
    GenerationRequest,
    OpenAIBackend,
    RequestRateLimiter,
    RetryPolicy,
    TokenRateLimiter,
    call_with_retries,
    connection_failure,
    estimate_tokens,
)
from tests.llm.conftest import SECRET
from tests.llm.server import FakeOpenAIServer

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


def closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call_url(base_url: str, transport: str, policy: RetryPolicy = FAST):
    class Endpoint:
        pass

    endpoint = Endpoint()
    endpoint.base_url = base_url
    return call(endpoint, policy, transport=transport)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_refused_connection_is_named_and_fails_fast(transport):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    patient = RetryPolicy(timeout_seconds=20.0, max_retries=6, backoff_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(BackendError) as error:
        call_url(url, transport, patient)
    message = str(error.value)
    assert f"connection refused at {url} — is the server running?" in message
    assert f"gave up after {CONNECT_RETRIES + 1} attempts" in message
    assert "Timeout" not in message and "timed out" not in message
    # Two retries with backoff ≤ 0.2 s and 0.4 s, not seven attempts or a 20 s timeout.
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_dns_failure_is_named(transport):
    # .invalid never resolves (RFC 6761), with or without a network.
    with pytest.raises(BackendError) as error:
        call_url("http://no-such-host.invalid/v1", transport)
    message = str(error.value)
    assert "DNS lookup failed for 'no-such-host.invalid'" in message
    assert "correct the host name in base_url" in message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_https_to_a_plain_http_server_is_a_tls_error_not_retried(server, transport):
    url = server.base_url.replace("http://", "https://")
    with pytest.raises(BackendError) as error:
        call_url(url, transport)
    message = str(error.value)
    assert f"TLS error at {url}" in message and "use http:// in base_url" in message
    assert type(error.value) is BackendError and "gave up" not in message


def test_an_untrusted_certificate_is_named_under_the_sdk_error():
    certificate = ssl.SSLCertVerificationError(1, "certificate verify failed")
    certificate.verify_message = "self-signed certificate"
    try:
        try:
            raise certificate
        except ssl.SSLError as cause:
            raise OSError("Cannot connect to host") from cause
    except OSError as wrapped:
        failure = connection_failure(wrapped, "https://llm.example/v1")
    assert type(failure) is BackendError
    assert "certificate is not trusted (self-signed certificate)" in str(failure)
    assert connection_failure(ValueError("other"), "https://llm.example/v1") is None


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


def test_tokens_per_minute_keeps_the_tokens_within_the_limit():
    """The server reports (words of the prompt) + 3 tokens a call: 100 here. At 12,000 tokens a
    minute (200 a second, a bucket of 12,000) 124 calls use 12,400, so the last one cannot start
    before the bucket has refilled (123 × 100 + its reservation − 12,000) / 200 ≈ 2.1 s."""
    request = GenerationRequest((("user", " ".join(["word"] * 97)),), "m1", max_tokens=3)
    reservation = estimate_tokens(request)
    assert reservation == -(-(4 + len(request.messages[0][1])) // 4) + 3

    server = FakeOpenAIServer().start()  # echoes the prompt
    patient = RetryPolicy(timeout_seconds=30.0, max_retries=0)  # a retry would reserve again

    async def calls(limiter: TokenRateLimiter | None):
        backend = OpenAIBackend(BackendConfig(type="openai", model="m1", base_url=server.base_url))
        rng = np.random.default_rng(0)
        try:
            started = time.monotonic()
            generations = await asyncio.gather(
                *(
                    call_with_retries(backend, request, patient, rng, None, None, limiter)
                    for _ in range(124)
                )
            )
            return time.monotonic() - started, generations, limiter
        finally:
            await backend.aclose()

    limiter = TokenRateLimiter(per_minute=12_000)
    try:
        unlimited, _, _ = asyncio.run(calls(None))
        seconds, generations, limiter = asyncio.run(calls(limiter))
    finally:
        server.stop()
    assert {g.input_tokens + g.output_tokens for g in generations} == {100}
    earliest = (123 * 100 + reservation - 12_000) / 200
    assert earliest <= seconds < earliest + 5.0
    assert seconds > unlimited + 1.0  # the limiter, not the machine, made it wait
    assert limiter.level <= limiter.capacity  # every call charged what it reported


def test_token_limiter_lets_a_call_larger_than_the_bucket_start_when_it_is_full():
    async def reserve():
        limiter = TokenRateLimiter(per_minute=600)
        started = time.monotonic()
        await limiter.reserve(5_000)  # more than a minute's worth: waits for a full bucket only
        return time.monotonic() - started, limiter.level

    seconds, level = asyncio.run(reserve())
    assert seconds < 0.5 and level == pytest.approx(600 - 5_000, abs=1)
