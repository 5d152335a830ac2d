"""Backends that generate answers, behind one async interface, and the retry policy around them.

A backend makes *one attempt* at a chat completion (:meth:`Backend.complete`);
:func:`call_with_retries` adds the hard per-call timeout and retries transient failures (HTTP 429
and 5xx, timeouts, lost connections, malformed or empty responses) with exponential backoff and full
jitter, waiting at least what a ``Retry-After`` header asks. Permanent failures (a bad request, a
wrong key, an unknown model, a TLS error) are raised at once. A refused connection and a failed
DNS lookup are named as such (the SDK reports them as a timeout or a "connection error": the cause
is found under its exception) and retried only briefly, since they rarely fix themselves.

API keys are read from the environment variable a configuration names, at run time, and are scrubbed
from every error message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import errno
import importlib
import json
import math
import os
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import openai

from llmpo.config import AnthropicBackendConfig, BackendConfig
from llmpo.errors import BackendError, ConfigError, clip, register_secret, scrub
from llmpo.limits import truncate_answer

#: Sent when a configuration names no key variable (local servers accept anything).
PLACEHOLDER_KEY = "not-needed"

#: Retries of a refused connection or a failed DNS lookup (a server that is restarting may refuse
#: for a moment; one that is not running, or a misspelt host, never recovers).
CONNECT_RETRIES = 2

#: HTTP clients (connection pools) per backend, used in turn, when ``aiohttp`` is missing and the
#: SDK's default ``httpx`` transport is used (its pool scans every connection for each request).
CLIENTS_PER_BACKEND = 8

#: The longest a ``Retry-After`` (or ``retry-after-ms``) reply makes a call wait: a server asking
#: for more (hours, a date next week) is retried after this long, and the retries stay bounded.
MAX_RETRY_AFTER_SECONDS = 60.0

#: Characters of a server's error text kept in a message (after the key is scrubbed from it).
ERROR_TEXT_LIMIT = 400


def _aiohttp_client() -> object | None:
    """The SDK's aiohttp-based HTTP client with no connection cap, or None when unavailable.

    ``max_connections=0`` is aiohttp's "no limit" (its default caps a pool at 100); the runner
    bounds the calls in flight. Needs ``aiohttp`` and an ``openai`` release with
    ``DefaultAioHttpClient``.
    """
    try:
        import aiohttp  # noqa: F401

        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
            max_connections=0, max_keepalive_connections=None
        )
        return openai.DefaultAioHttpClient(limits=limits)
    except (ImportError, AttributeError, RuntimeError):
        return None


class TransientBackendError(BackendError):
    """A failure worth retrying; ``retry_after`` is the server's requested wait in seconds.

    ``max_retries`` caps the retries of this kind of failure below the policy's (None: the
    policy's); its message then carries its own fix.
    """

    def __init__(
        self, message: str, retry_after: float | None = None, max_retries: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.max_retries = max_retries


def connection_failure(error: BaseException, url: str) -> BackendError | None:
    """A refused connection, a DNS failure or a TLS error under an SDK error, named with its fix.

    The SDK wraps them (its aiohttp transport even reports a refused connection as
    ``APITimeoutError``); the socket-level cause is found along ``__cause__``/``__context__``.

    Parameters
    ----------
    error : BaseException
        The exception the SDK raised.
    url : str
        The endpoint, for the message.

    Returns
    -------
    BackendError or None
        A :class:`TransientBackendError` with at most :data:`CONNECT_RETRIES` retries for a
        refused connection or a failed DNS lookup, a permanent :class:`BackendError` for a TLS
        error; None when the chain holds none of them.
    """
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return TransientBackendError(
                f"connection refused at {url} — is the server running? Fix: start it, or "
                "correct base_url (host and port)",
                max_retries=CONNECT_RETRIES,
            )
        if isinstance(cause, socket.gaierror):
            host = urlsplit(url).hostname or url
            return TransientBackendError(
                f"DNS lookup failed for {host!r} ({url}): {cause.strerror or cause}. Fix: "
                "correct the host name in base_url, or check the network connection",
                max_retries=CONNECT_RETRIES,
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            return BackendError(
                f"TLS error at {url}: the server's certificate is not trusted "
                f"({getattr(cause, 'verify_message', None) or cause}). Fix: give the server a "
                "certificate from a trusted authority or add its authority to the system's "
                "trust store; for a local server without TLS, use http:// in base_url"
            )
        # aiohttp's wrapper is an SSLError without a reason; the one under it has it.
        reason = getattr(cause, "reason", None) if isinstance(cause, ssl.SSLError) else None
        if reason is not None:
            fix = (
                "the server does not speak TLS: use http:// in base_url"
                if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE")
                else "check that base_url is the server's https:// address and port"
            )
            return BackendError(f"TLS error at {url}: {reason}. Fix: {fix}")
        cause = cause.__cause__ or cause.__context__
    return None


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion to make: messages and decoding parameters (None: server default)."""

    messages: tuple[tuple[str, str], ...]
    model: str
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Generation:
    """A generated answer with its token counts and the wall time of the successful attempt."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    seconds: float
    #: Made through a provider's batch API (billed at the batch price).
    batch: bool = False


class Backend(ABC):
    """Something that answers chat completions."""

    #: Label used in messages (endpoint and model family), never a secret.
    label: str

    @abstractmethod
    async def complete(self, request: GenerationRequest, timeout: float) -> Generation:
        """Make one attempt.

        Raises
        ------
        TransientBackendError
            For a failure that a retry may fix.
        BackendError
            For a permanent failure.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""


def _retry_after(headers: object) -> float | None:
    """The wait a reply asks for, in seconds, capped at :data:`MAX_RETRY_AFTER_SECONDS`.

    Reads ``retry-after-ms`` (milliseconds, OpenAI and Azure), then ``Retry-After`` as seconds or
    as an HTTP date; None when absent or unreadable.
    """
    get = getattr(headers, "get", lambda _key: None)
    seconds: float | None = None
    milliseconds = get("retry-after-ms")
    if milliseconds is not None:
        try:
            seconds = float(milliseconds) / 1000.0
        except ValueError:
            seconds = None
    value = get("retry-after")
    if seconds is None and value is not None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:  # HTTP dates are GMT
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _count(value: object) -> int | None:
    """A token count from a reply, or None when absent or not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def openai_body(request: GenerationRequest) -> dict[str, object]:
    """The JSON body of a chat-completions call (decoding parameters left out when None)."""
    body: dict[str, object] = {
        "model": request.model,
        "messages": [{"role": role, "content": content} for role, content in request.messages],
    }
    for name, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("max_tokens", request.max_tokens),
        ("seed", request.seed),
        ("stop", list(request.stop) if request.stop else None),
    ):
        if value is not None:
            body[name] = value
    return body


def openai_generation(payload: object, label: str, seconds: float) -> Generation:
    """The answer in a chat-completions reply.

    Raises
    ------
    TransientBackendError
        When the reply has no choice or no message content.
    """
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or not isinstance(choices, list) or not choices:
        raise TransientBackendError(f"{label}: response with no choices")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise TransientBackendError(f"{label}: response without message content")
    usage = payload.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return Generation(
        content, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), seconds
    )


def anthropic_body(request: GenerationRequest, default_max_tokens: int) -> dict[str, object]:
    """The JSON body of a Messages API call: system messages as ``system``, ``stop`` as
    ``stop_sequences``, ``default_max_tokens`` when the request has no cap; no ``seed``."""
    system = "\n\n".join(c for role, c in request.messages if role == "system")
    body: dict[str, object] = {
        "model": request.model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": [
            {"role": role, "content": content}
            for role, content in request.messages
            if role != "system"
        ],
    }
    for name, value in (
        ("system", system or None),
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("stop_sequences", list(request.stop) if request.stop else None),
    ):
        if value is not None:
            body[name] = value
    return body


def anthropic_generation(payload: object, label: str, seconds: float) -> Generation:
    """The answer in a Messages API reply (its text blocks joined).

    Raises
    ------
    TransientBackendError
        When the reply has no text block.
    """
    blocks = payload.get("content") if isinstance(payload, dict) else None
    texts = [
        b["text"]
        for b in blocks or []
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    ]
    if not isinstance(payload, dict) or not texts:
        raise TransientBackendError(f"{label}: response without text content")
    usage = payload.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return Generation(
        "".join(texts),
        _count(usage.get("input_tokens")),
        _count(usage.get("output_tokens")),
        seconds,
    )


def require_anthropic() -> None:
    """Check that the ``anthropic`` SDK (an optional extra) can be imported.

    Raises
    ------
    BackendError
        When it is not installed, naming the extra that installs it.
    """
    try:
        importlib.import_module("anthropic")
    except ImportError:
        raise BackendError(
            "backend type anthropic needs the anthropic package. Fix: pip install "
            "'llmpo[anthropic]'"
        ) from None


def read_api_key(config: BackendConfig | AnthropicBackendConfig | Any) -> str:
    """The key in the environment variable ``config.api_key_env`` names (a placeholder if none).

    Any backend configuration with an ``api_key_env`` field (a plug-in's too) is read this way.

    Raises
    ------
    BackendError
        When the variable is named but not set (the message names it, never a key).
    """
    variable = getattr(config, "api_key_env", None)
    if variable is None:
        return PLACEHOLDER_KEY
    value = os.environ.get(variable)
    if not value:
        where = getattr(config, "base_url", None) or config.type.capitalize()
        raise BackendError(
            f"the environment variable {variable} (api_key_env of {where}) is not set. Fix: "
            f"export {variable}=<your key>"
        )
    register_secret(value)
    return value


class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

    Parameters
    ----------
    config : BackendConfig
        Endpoint (``base_url``), and the name of the environment variable with the key.
    transport : {"auto", "aiohttp", "httpx"}
        The SDK's HTTP transport: ``aiohttp`` when it is installed (``auto``), else ``httpx``.

    Raises
    ------
    BackendError
        When the named environment variable is not set.
    """

    def __init__(self, config: BackendConfig, transport: str = "auto") -> None:
        self.label = f"{config.base_url or 'OpenAI'}"
        key = read_api_key(config)
        self._secret = key
        # Retries and timeouts are ours (they honour Retry-After and count every attempt), so the
        # SDK makes one attempt. One client per endpoint: with ``aiohttp`` installed it uses the
        # SDK's aiohttp transport, whose pool has no connection cap of its own (the runner bounds
        # the calls in flight) and costs far less CPU per request than the default httpx one;
        # without it, requests are spread over several httpx clients.
        if transport not in ("auto", "aiohttp", "httpx"):
            raise ConfigError(f"transport must be 'auto', 'aiohttp' or 'httpx', got {transport!r}")
        http_client = _aiohttp_client() if transport != "httpx" else None
        if http_client is None and transport == "aiohttp":
            raise BackendError(
                "the aiohttp transport needs the aiohttp package and an openai release with "
                "DefaultAioHttpClient. Fix: pip install aiohttp, or upgrade openai"
            )
        if http_client is not None:
            transport = "aiohttp"
            self.clients = [
                openai.AsyncOpenAI(
                    api_key=key,
                    base_url=config.base_url,
                    max_retries=0,
                    http_client=http_client,  # type: ignore[arg-type]
                )
            ]
        else:
            transport = "httpx"
            self.clients = [
                openai.AsyncOpenAI(api_key=key, base_url=config.base_url, max_retries=0)
                for _ in range(CLIENTS_PER_BACKEND)
            ]
        self.transport = transport
        self._next_client = 0

    def scrub(self, text: str) -> str:
        """``text`` with the API key (and anything key-shaped) replaced by ``***``."""
        return scrub(text, self._secret)

    async def complete(self, request: GenerationRequest, timeout: float) -> Generation:
        body = openai_body(request)
        client = self.clients[self._next_client]
        self._next_client = (self._next_client + 1) % len(self.clients)
        started = time.monotonic()
        try:
            # The SDK's client (auth, headers, status errors) posts the plain JSON body and hands
            # back the bytes: its typed-parameter transform and response models would add ~0.5 ms
            # of CPU to the ~0.75 ms a call costs (benchmarks/throughput.py).
            payload = json.loads(
                await client.post(
                    "/chat/completions", body=body, cast_to=bytes, options={"timeout": timeout}
                )
            )
        except openai.APIStatusError as error:
            message = clip(
                f"{self.label}: HTTP {error.status_code} for model {request.model}: "
                f"{error.message}",
                ERROR_TEXT_LIMIT,
                self._secret,
            )
            if error.status_code == 429 or error.status_code >= 500:
                raise TransientBackendError(message, _retry_after(error.response.headers)) from None
            raise BackendError(message) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as error:
            failure = connection_failure(error, self.scrub(str(client.base_url).rstrip("/")))
            if failure is not None:
                raise failure from None
            raise TransientBackendError(
                self.scrub(f"{self.label}: {type(error).__name__}: {error}")
            ) from None
        except ValueError as error:  # a body that is not JSON
            raise TransientBackendError(
                clip(f"{self.label}: malformed response ({error})", ERROR_TEXT_LIMIT, self._secret)
            ) from None
        return openai_generation(payload, self.label, time.monotonic() - started)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


class RequestRateLimiter:
    """Spaces the start of calls to at most ``per_minute`` a minute (evenly, 60/per_minute s apart).

    Shared by every call to one endpoint, retries included; single event loop.
    """

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute
        self._next_start = -float("inf")

    async def wait(self) -> None:
        """Return when the next call may start."""
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


def estimate_tokens(request: GenerationRequest) -> int:
    """Tokens a call may use before its answer tells: the prompt at ~4 characters a token, plus
    ``max_tokens`` (providers count it against token limits too)."""
    characters = sum(len(role) + len(content) for role, content in request.messages)
    return math.ceil(characters / 4) + (request.max_tokens or 0)


class TokenRateLimiter:
    """Keeps the tokens used on one endpoint within ``per_minute`` (a token bucket).

    The bucket holds a minute's worth and refills continuously. A call reserves its
    :func:`estimate_tokens` before it starts (waiting until the bucket holds that much, or is
    full) and is charged its reported input + output tokens when it ends, so the bucket can go
    into debt that later calls wait out. Failed attempts keep their reservation. Shared by every
    call to one endpoint; single event loop.
    """

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    async def reserve(self, tokens: int) -> None:
        """Wait until ``tokens`` (at most a full bucket) are available, then take them."""
        needed = min(float(tokens), self.capacity)
        while True:
            self._refill()
            if self.level >= needed:
                self.level -= tokens
                return
            await asyncio.sleep((needed - self.level) / self.rate)

    def settle(self, reserved: int, used: int) -> None:
        """Charge the difference between what a finished call used and what it reserved."""
        self._refill()
        self.level -= used - reserved


class AnthropicBackend(Backend):
    """Anthropic's Messages API (or a server speaking it), through the ``anthropic`` SDK.

    System messages are sent as the request's ``system``; ``stop`` as ``stop_sequences``; a
    request without ``max_tokens`` gets the configuration's ``default_max_tokens`` (the API
    needs one); ``seed`` has no equivalent and is not sent. Retries, timeouts and limits are
    :func:`call_with_retries`'s, as for every backend; HTTP 429, 5xx and 529 (overloaded) are
    transient.

    Raises
    ------
    BackendError
        When the ``anthropic`` package is missing or the key variable is not set.
    """

    def __init__(self, config: AnthropicBackendConfig) -> None:
        require_anthropic()
        import anthropic

        self._sdk = anthropic
        self.label = config.base_url or "Anthropic"
        self._secret = read_api_key(config)
        self._default_max_tokens = config.default_max_tokens
        # The SDK makes one attempt: retries and timeouts are call_with_retries'.
        self.client = anthropic.AsyncAnthropic(
            api_key=self._secret, base_url=config.base_url, max_retries=0
        )

    def scrub(self, text: str) -> str:
        """``text`` with the API key replaced by ``***``."""
        return text.replace(self._secret, "***")

    async def complete(self, request: GenerationRequest, timeout: float) -> Generation:
        body = anthropic_body(request, self._default_max_tokens)
        sdk = self._sdk
        started = time.monotonic()
        try:
            payload = json.loads(
                await self.client.post(
                    "/v1/messages", body=body, cast_to=bytes, options={"timeout": timeout}
                )
            )
        except sdk.APIStatusError as error:
            message = self.scrub(
                f"{self.label}: HTTP {error.status_code} for model {request.model}: "
                f"{str(error.message)[:300]}"
            )
            if error.status_code == 429 or error.status_code >= 500:
                raise TransientBackendError(message, _retry_after(error.response.headers)) from None
            raise BackendError(message) from None
        except (sdk.APITimeoutError, sdk.APIConnectionError) as error:
            raise TransientBackendError(
                self.scrub(f"{self.label}: {type(error).__name__}: {error}")
            ) from None
        except ValueError as error:  # a body that is not JSON
            raise TransientBackendError(
                self.scrub(f"{self.label}: malformed response ({str(error)[:200]})")
            ) from None
        return anthropic_generation(payload, self.label, time.monotonic() - started)

    async def aclose(self) -> None:
        await self.client.close()


@dataclass(frozen=True)
class RetryPolicy:
    """Hard per-call timeout and retries of transient failures.

    Attempt k (k = 1, 2, …) that fails transiently waits a uniform draw in
    [0, min(max_backoff, backoff · 2^(k−1))] ("full jitter"), and never less than the server's
    ``Retry-After`` (itself capped at :data:`MAX_RETRY_AFTER_SECONDS`), before attempt k + 1; at
    most ``max_retries`` retries. So no wait is longer than
    max(``max_backoff_seconds``, :data:`MAX_RETRY_AFTER_SECONDS`).
    """

    timeout_seconds: float = 60.0
    max_retries: int = 6
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: np.random.Generator) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))
        jittered = float(rng.uniform(0.0, cap)) if cap > 0 else 0.0
        return max(jittered, min(retry_after or 0.0, MAX_RETRY_AFTER_SECONDS))


async def call_with_retries(
    backend: Backend,
    request: GenerationRequest,
    policy: RetryPolicy,
    rng: np.random.Generator,
    on_retry: Callable[[int, TransientBackendError, float], Awaitable[None] | None] | None = None,
    limiter: RequestRateLimiter | None = None,
    token_limiter: TokenRateLimiter | None = None,
) -> Generation:
    """Complete ``request``, retrying transient failures per ``policy``.

    Parameters
    ----------
    backend : Backend
        Where to send it.
    request : GenerationRequest
        What to ask.
    policy : RetryPolicy
        Timeout and retries.
    rng : numpy.random.Generator
        Source of the jitter.
    on_retry : callable, optional
        Called with (attempt, error, delay) before each wait (for logs and counters).
    limiter : RequestRateLimiter, optional
        Waited on before every attempt.
    token_limiter : TokenRateLimiter, optional
        Reserves the request's estimated tokens before every attempt; a success is charged
        its reported tokens.

    Raises
    ------
    BackendError
        A permanent failure, or the last transient one once the retries are spent.
    """
    attempt = 0
    while True:
        attempt += 1
        if limiter is not None:
            await limiter.wait()
        reserved = 0
        if token_limiter is not None:
            reserved = estimate_tokens(request)
            await token_limiter.reserve(reserved)
        try:
            async with asyncio.timeout(policy.timeout_seconds):  # no extra task per call
                generation = await backend.complete(request, policy.timeout_seconds)
            if token_limiter is not None and generation.input_tokens is not None:
                used = generation.input_tokens + (generation.output_tokens or 0)
                token_limiter.settle(reserved, used)
            # Capped here, where every answer arrives, so the judge, the store and a resumed
            # run all see the same text.
            return dataclasses.replace(generation, text=truncate_answer(generation.text))
        except TimeoutError:
            error = TransientBackendError(
                f"{backend.label}: no answer within {policy.timeout_seconds:g} s"
            )
        except TransientBackendError as transient:
            error = transient
        if error.max_retries is not None and attempt > min(error.max_retries, policy.max_retries):
            raise BackendError(f"{error} (gave up after {attempt} attempts)")
        if attempt > policy.max_retries:
            raise BackendError(
                f"{error} (gave up after {attempt} attempts; raise environment.max_retries or "
                "fix the endpoint)"
            )
        delay = policy.delay(attempt, error.retry_after, rng)
        if on_retry is not None:
            outcome = on_retry(attempt, error, delay)
            if outcome is not None:
                await outcome
        await asyncio.sleep(delay)
