"""A small OpenAI-compatible chat-completions server for the tests (aiohttp, in a thread).

It answers ``POST /v1/chat/completions`` with ``responder(request body) -> str``, after
``latency`` seconds, and measures what the tests check: requests served, the largest number in
flight at once, the bodies and authorization headers received. ``faults`` is a queue of failures
served to the next requests, one each: ``"429"`` (with ``Retry-After``), ``"500"``, ``"timeout"``
(no answer for ``hang_seconds``), ``"malformed"`` (a 200 whose body is not JSON), ``"empty"`` (a
200 with an empty choice list), ``"401"``, ``"echo-key"`` (a 401 whose message is
``echo_padding`` dots then the ``Authorization`` header received, as careless servers do),
``"529"`` (Anthropic's overloaded).

It also speaks Anthropic's Messages API on ``POST /v1/messages`` (same faults, counters and
responder, which sees the body with the system prompt put back as a first message), for the
``anthropic`` SDK at ``root_url``. ``retry_headers`` replace the 429's ``Retry-After``.
``tokens_served`` counts the tokens of the (OpenAI) replies served; ``gate`` serves that many
requests and holds the rest until :meth:`FakeOpenAIServer.open_gate` (a process can then be
killed with requests in flight that were never served).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
import zlib
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web


class ThreadedServer:
    """An aiohttp application served on a free port of 127.0.0.1 from a background thread.

    Subclasses add their routes in :meth:`routes`. Start with :meth:`start`, stop with
    :meth:`stop`; ``base_url`` (ends in ``/v1``) is for the ``openai`` client, ``root_url`` for the
    ``anthropic`` client (it adds ``/v1/...`` itself).
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        """Add the server's handlers to ``app`` (run in the server's event loop)."""
        raise NotImplementedError

    async def _start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> Self:
        """Serve from the background thread; returns the server."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop serving and end the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def echo_last_message(body: dict[str, Any]) -> str:
    """Default responder: the last message's content."""
    return str(body["messages"][-1]["content"])


class FakeOpenAIServer(ThreadedServer):
    """Start with :meth:`start`, stop with :meth:`stop`; ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str] = echo_last_message,
        latency: float = 0.0,
        retry_after: str = "0.05",
        hang_seconds: float = 5.0,
    ) -> None:
        super().__init__()
        self.responder = responder
        self.latency = latency
        self.retry_after = retry_after
        self.retry_headers: dict[str, str] | None = None
        self.hang_seconds = hang_seconds
        self.echo_padding = 0
        self.faults: collections.deque[str] = collections.deque()
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str] = []
        self.served = 0
        #: Tokens of the replies served, as their ``usage`` reports them: [prompt, completion].
        self.tokens_served = [0, 0]
        #: Serve at most this many requests; later ones are held until :meth:`open_gate`, then
        #: refused with a 503 (never counted as served: a provider bills no failed request).
        self.gate: int | None = None
        self.held = 0
        self.faults_served: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fault = self.faults.popleft() if self.faults else None
            if fault:
                self.faults_served.append(fault)
        try:
            body = await request.json()
            anthropic = request.path.endswith("/messages")
            # The anthropic SDK sends its key as x-api-key or (newer releases) a bearer token.
            key = request.headers.get("x-api-key") if anthropic else None
            self.authorizations.append(key or request.headers.get("Authorization", ""))
            if self.latency:
                await asyncio.sleep(self.latency)
            if fault == "429":
                return web.json_response(
                    {"error": {"message": "rate limited"}},
                    status=429,
                    headers=self.retry_headers or {"Retry-After": self.retry_after},
                )
            if fault in ("500", "529"):
                return web.json_response({"error": {"message": "boom"}}, status=int(fault))
            if fault == "401":
                return web.json_response({"error": {"message": "bad key"}}, status=401)
            if fault == "echo-key":
                message = "." * self.echo_padding + request.headers.get("Authorization", "")
                return web.json_response({"error": {"message": message}}, status=401)
            if fault == "timeout":
                # Released early by stop(), so that a long hang does not hold the tests.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), self.hang_seconds)
            if fault == "malformed":
                return web.Response(
                    text='{"id": "x", "choices": [', content_type="application/json"
                )
            if self.gate is not None and self.served >= self.gate:
                self.held += 1
                await self._opened.wait()
                return web.json_response({"error": {"message": "gate closed"}}, status=503)
            with self._lock:
                self.bodies.append(body)
                self.served += 1
            if anthropic:
                return self._messages_reply(body, fault)
            choices = (
                []
                if fault == "empty"
                else [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.responder(body)},
                        "finish_reason": "stop",
                    }
                ]
            )
            prompt_tokens = sum(len(str(m["content"]).split()) for m in body["messages"])
            with self._lock:
                self.tokens_served[0] += prompt_tokens
                self.tokens_served[1] += 3
            return web.json_response(
                {
                    "id": f"chatcmpl-{self.served}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": 3,
                        "total_tokens": prompt_tokens + 3,
                    },
                }
            )
        finally:
            with self._lock:
                self.in_flight -= 1

    def _messages_reply(self, body: dict[str, Any], fault: str | None) -> web.Response:
        """A Messages API reply; the responder sees the system prompt as a first message."""
        system = [{"role": "system", "content": body["system"]}] if "system" in body else []
        seen = {**body, "messages": system + body["messages"]}
        content = [] if fault == "empty" else [{"type": "text", "text": self.responder(seen)}]
        input_tokens = sum(len(str(m["content"]).split()) for m in seen["messages"])
        return web.json_response(
            {
                "id": f"msg_{self.served}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": "end_turn",
                "usage": {"input_tokens": input_tokens, "output_tokens": 3},
            }
        )

    def routes(self, app: web.Application) -> None:
        self._released = asyncio.Event()
        self._opened = asyncio.Event()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/messages", self._handle)

    def open_gate(self) -> None:
        """Serve every request from now on; the held ones are refused (see :attr:`gate`)."""
        self.gate = None
        self._loop.call_soon_threadsafe(self._opened.set)

    def stop(self) -> None:
        if self._runner is not None:  # a hung "timeout" fault, a held request end now
            self._loop.call_soon_threadsafe(self._released.set)
            self._loop.call_soon_threadsafe(self._opened.set)
        super().stop()


def answers_by_system_prompt(body: dict[str, Any]) -> str:
    """Responder for arithmetic tasks: right with a system prompt, often wrong without.

    The user prompt is ``What is X + Y?``; with a system message the answer is the sum, without
    one it is the sum only when the request's seed (or temperature draw) says so.
    """
    messages = body["messages"]
    question = str(messages[-1]["content"])
    left, right = question.removeprefix("What is ").rstrip("?").split(" + ")
    total = int(left) + int(right)
    if messages[0]["role"] == "system":
        return str(total)
    return (
        f"about {total + 1}"
        if zlib.crc32(json.dumps(body, sort_keys=True).encode()) % 3
        else str(total)
    )


def main() -> None:
    """Serve in the foreground (for benchmarks): print the port, answer ``--reply`` to all."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Local OpenAI-compatible test server.")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--reply", default="0")
    arguments = parser.parse_args()
    server = FakeOpenAIServer(lambda body: arguments.reply, latency=arguments.latency).start()
    print(server.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
