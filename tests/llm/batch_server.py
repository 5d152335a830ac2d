"""A local server of the batch APIs for the tests (aiohttp, in a thread).

OpenAI's shape: ``POST /v1/files`` (multipart, purpose ``batch``), ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content`` (the output and error files, JSONL).
Anthropic's: ``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
``GET /v1/messages/batches/{id}/results``. Each request is answered by ``responder(body)``
(chat-completions shape; for Anthropic the system prompt is put back as a first message).

A job ends ``latency`` seconds after it is created, unless ``hold`` is set (then it stays in
progress until ``hold`` is cleared; with ``hold_after`` = k, the first k jobs ever created are
not held); with ``reject`` set, every OpenAI job fails validation with
that message. The first ``fail_first`` requests ever submitted fail (HTTP
``fail_status``: in the error file for OpenAI, ``errored`` for Anthropic). Counters the tests
check: ``jobs`` (id → custom_ids), ``submitted`` (every request body received, in order),
``polls`` and ``downloads``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.llm.server import ThreadedServer


class FakeBatchServer(ThreadedServer):
    """Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self, responder: Callable[[dict[str, Any]], str], latency: float = 0.3) -> None:
        super().__init__()
        self.responder = responder
        self.latency = latency
        self.hold = False
        self.hold_after = 0
        self.fail_first = 0
        self.fail_status = 500
        self.reject = ""  # a message: every OpenAI job fails validation with it
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, list[str]] = {}
        self.submitted: list[dict[str, Any]] = []
        self.polls = 0
        self.downloads = 0
        self._created: dict[str, float] = {}
        self._requests: dict[str, list[dict[str, Any]]] = {}
        self._failing: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def submitted_bodies(self) -> list[str]:
        """Every submitted request body as canonical JSON (a duplicate: a request paid twice)."""
        return [json.dumps(body, sort_keys=True) for body in self.submitted]

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _new_job(self, prefix: str, requests: list[dict[str, Any]]) -> str:
        with self._lock:
            job_id = f"{prefix}_{len(self.jobs) + 1}"
            self.jobs[job_id] = [r["custom_id"] for r in requests]
            self._requests[job_id] = requests
            self._created[job_id] = time.monotonic()
            for request in requests:
                self.submitted.append(request["body"])
                if len(self.submitted) <= self.fail_first:
                    self._failing.add((job_id, request["custom_id"]))
        return job_id

    def _ended(self, job_id: str) -> bool:
        held = self.hold and list(self.jobs).index(job_id) >= self.hold_after
        return not held and time.monotonic() - self._created[job_id] >= self.latency

    def _answer(self, body: dict[str, Any]) -> tuple[str, int, int]:
        text = self.responder(body)
        return text, sum(len(str(m["content"]).split()) for m in body["messages"]), 3

    # ---- OpenAI --------------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert form["purpose"] == "batch" and not isinstance(upload, str)
        data = upload.file.read()
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = data
        return web.json_response(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": 0,
                "filename": upload.filename,
                "purpose": "batch",
                "status": "processed",
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines()]
        assert all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines)
        job_id = self._new_job("batch", lines)
        return web.json_response(self._openai_job(job_id, body["input_file_id"]))

    def _openai_job(self, job_id: str, input_file_id: str = "") -> dict[str, Any]:
        ended = self._ended(job_id)
        job: dict[str, Any] = {
            "id": job_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "failed" if self.reject else "completed" if ended else "in_progress",
            "created_at": 0,
            "request_counts": {"total": len(self.jobs[job_id]), "completed": 0, "failed": 0},
        }
        if self.reject:
            job["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": self.reject, "line": 1}],
            }
            return job
        if ended:
            output, errors = [], []
            for line in self._requests[job_id]:
                if (job_id, line["custom_id"]) in self._failing:
                    errors.append(
                        {
                            "id": f"req_{line['custom_id']}",
                            "custom_id": line["custom_id"],
                            "response": {
                                "status_code": self.fail_status,
                                "request_id": "r",
                                "body": {"error": {"message": "server error", "type": "server"}},
                            },
                            "error": None,
                        }
                    )
                    continue
                text, prompt_tokens, completion_tokens = self._answer(line["body"])
                output.append(
                    {
                        "id": f"req_{line['custom_id']}",
                        "custom_id": line["custom_id"],
                        "response": {
                            "status_code": 200,
                            "request_id": "r",
                            "body": {
                                "id": "chatcmpl-1",
                                "object": "chat.completion",
                                "created": 0,
                                "model": line["body"]["model"],
                                "choices": [
                                    {
                                        "index": 0,
                                        "message": {"role": "assistant", "content": text},
                                        "finish_reason": "stop",
                                    }
                                ],
                                "usage": {
                                    "prompt_tokens": prompt_tokens,
                                    "completion_tokens": completion_tokens,
                                    "total_tokens": prompt_tokens + completion_tokens,
                                },
                            },
                        },
                        "error": None,
                    }
                )
            with self._lock:
                for kind, lines in (("output", output), ("error", errors)):
                    if lines:
                        file_id = f"file-{job_id}-{kind}"
                        self.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                        job[f"{kind}_file_id"] = file_id
        return job

    async def _retrieve(self, request: web.Request) -> web.Response:
        self.polls += 1
        return web.json_response(self._openai_job(request.match_info["job"]))

    async def _content(self, request: web.Request) -> web.Response:
        self.downloads += 1
        return web.Response(body=self.files[request.match_info["file"]])

    # ---- Anthropic -----------------------------------------------------------------------------
    async def _anthropic_create(self, request: web.Request) -> web.Response:
        body = await request.json()
        lines = []
        for entry in body["requests"]:
            params = entry["params"]
            system = [{"role": "system", "content": params["system"]}] if "system" in params else []
            lines.append(
                {
                    "custom_id": entry["custom_id"],
                    "body": {**params, "messages": system + params["messages"]},
                }
            )
        job_id = self._new_job("msgbatch", lines)
        return web.json_response(self._anthropic_job(job_id))

    def _anthropic_job(self, job_id: str) -> dict[str, Any]:
        ended = self._ended(job_id)
        count = len(self.jobs[job_id])
        return {
            "id": job_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else count,
                "succeeded": count if ended else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T00:01:00Z" if ended else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": f"{self.root_url}/v1/messages/batches/{job_id}/results"
            if ended
            else None,
        }

    async def _anthropic_retrieve(self, request: web.Request) -> web.Response:
        self.polls += 1
        return web.json_response(self._anthropic_job(request.match_info["job"]))

    async def _anthropic_results(self, request: web.Request) -> web.Response:
        self.downloads += 1
        job_id = request.match_info["job"]
        lines = []
        for line in self._requests[job_id]:
            if (job_id, line["custom_id"]) in self._failing:
                result: dict[str, Any] = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "api_error", "message": "boom"}},
                }
            else:
                text, input_tokens, output_tokens = self._answer(line["body"])
                result = {
                    "type": "succeeded",
                    "message": {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "model": line["body"]["model"],
                        "content": [{"type": "text", "text": text}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                    },
                }
            lines.append({"custom_id": line["custom_id"], "result": result})
        return web.Response(body="".join(json.dumps(x) + "\n" for x in lines).encode())

    # ---- serving -------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._upload)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches/{job}", self._retrieve)
        app.router.add_get("/v1/files/{file}/content", self._content)
        app.router.add_post("/v1/messages/batches", self._anthropic_create)
        app.router.add_get("/v1/messages/batches/{job}", self._anthropic_retrieve)
        app.router.add_get("/v1/messages/batches/{job}/results", self._anthropic_results)
