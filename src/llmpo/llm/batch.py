"""Calls through a provider's batch API, at the batch price (``backend: {batch: true}``).

:class:`BatchBackend` gathers the calls that arrive together (within
:data:`COLLECT_SECONDS` of the first) into one batch job: the live runner dispatches the rounds
an ``ask(n)`` returned at once, so their generations go as one job and, once it is collected,
their judge calls as the next (both orders of an ``order: both`` judge in that one job). Each
job is polled (every ``batch_poll_seconds``, doubling up to ``batch_max_poll_seconds``) until it
ends or ``batch_timeout`` passes; its answers are handed to the waiting calls as soon as it is
collected, and the runner tells the outcomes of the rounds they complete.

Providers (:class:`BatchProvider`): OpenAI's Batch API (:class:`OpenAIBatches`: a JSONL file of
``{"custom_id", "method", "url", "body"}`` lines uploaded through ``files`` with purpose
``batch``, a batch on ``/v1/chat/completions``, ``GET /v1/batches/{id}``, then its
``output_file_id`` and ``error_file_id``) and Anthropic's Message Batches
(:class:`AnthropicBatches`: ``POST /v1/messages/batches`` with ``{"custom_id", "params"}``
requests, polled until ``processing_status`` is ``ended``, then its results), through the
official SDK clients.

Paying once. Every submitted job is recorded in the store before it is polled, as a
``batch_submitted`` event (provider, endpoint and key variable, job id, and per request its
``custom_id`` and the fingerprint of its body); the requests whose results were handed out are
recorded as a ``batch_collected`` event (:class:`BatchJournal`). A resumed run loads the jobs with
requests not yet handed out: a call whose body has the fingerprint of such a request waits for that
job (polled and collected, never submitted again) instead of going into a new one. A held-out
evaluation keeps a journal of its own, resumed the same way. Finished requests
are never submitted again: their answers are in the generation cache (the runner caches each answer
as it arrives), or their comparisons are stored. A request that failed in a job (in the error file,
or errored) is retried in the next job, up to ``environment.max_retries`` times when the failure is
transient (HTTP 429, 5xx, expired, cancelled, or missing); a 4xx reply fails the run at once, naming
the request's error.

Stopping. Nothing waits on a job but the calls of the rounds in flight: on SIGINT or SIGTERM the
runner cancels them after its grace period and the run is left ``interrupted``, with the job's
id recorded for the resume.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

import openai

from llmpo.config import AnthropicBackendConfig, BackendConfig
from llmpo.errors import BackendError, clip, scrub
from llmpo.limits import truncate_answer
from llmpo.llm.backends import (
    ERROR_TEXT_LIMIT,
    Backend,
    Generation,
    GenerationRequest,
    TransientBackendError,
    anthropic_body,
    anthropic_generation,
    openai_body,
    openai_generation,
    read_api_key,
    require_anthropic,
)

#: Calls arriving within this long of the first one of a job go into that job.
COLLECT_SECONDS = 0.2

#: Requests in one job at most (OpenAI takes 50,000 a batch; Anthropic 100,000).
MAX_JOB_REQUESTS = 50_000

#: Retries of a job's management calls (upload, create, poll, download) by the SDK itself.
SDK_RETRIES = 3


@dataclass(frozen=True)
class RequestFailure:
    """A request of a job that got no answer: its HTTP status (None when unknown) and message."""

    status: int | None
    message: str

    @property
    def transient(self) -> bool:
        """Whether another job may answer it (429, 5xx, expired, cancelled, no result)."""
        return self.status is None or self.status == 429 or self.status >= 500


def fingerprint(endpoint: str, request: GenerationRequest) -> str:
    """Hash of the endpoint and everything in a request, to find it in a recorded job."""
    identity: list[Any] = [endpoint, request.messages, request.model, request.temperature]
    identity += [request.top_p]
    identity += [request.max_tokens, request.seed, request.stop]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


class BatchProvider(ABC):
    """One provider's batch API: submit a job, poll it, fetch its results."""

    #: Names the endpoint in messages (never a secret).
    label: str
    #: Names the endpoint and the key's variable in the store: a job is collected with the key
    #: that submitted it.
    name: str

    @abstractmethod
    async def submit(self, requests: list[tuple[str, GenerationRequest]]) -> str:
        """Create a job of (custom_id, request) and return its id."""

    @abstractmethod
    async def ended(self, job_id: str) -> bool:
        """Whether the job has ended (its results can be fetched).

        Raises
        ------
        BackendError
            When the job failed as a whole (e.g. its input was rejected).
        """

    @abstractmethod
    async def results(self, job_id: str) -> dict[str, Generation | RequestFailure]:
        """The result of each request of an ended job, by custom_id (missing ones left out)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""

    @abstractmethod
    def scrub(self, text: str) -> str:
        """``text`` without the API key."""


def _failure(status: object, error: object) -> RequestFailure:
    """A request's failure from a status code and an error object or message."""
    if isinstance(error, dict):
        inner = error.get("error")
        error = inner if isinstance(inner, dict) else error
        error = error.get("message") or error.get("type") or error.get("code") or error
    code = status if isinstance(status, int) and not isinstance(status, bool) else None
    return RequestFailure(code, str(error))


class OpenAIBatches(BatchProvider):
    """OpenAI's Batch API (or a server speaking it) on ``/v1/chat/completions``."""

    def __init__(self, config: BackendConfig) -> None:
        self.label = config.base_url or "OpenAI"
        self.name = f"openai {self.label} {config.api_key_env}"
        self._secret = read_api_key(config)
        self.client = openai.AsyncOpenAI(
            api_key=self._secret, base_url=config.base_url, max_retries=SDK_RETRIES
        )

    def scrub(self, text: str) -> str:
        return scrub(text, self._secret)

    async def submit(self, requests: list[tuple[str, GenerationRequest]]) -> str:
        lines = [
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": openai_body(request),
            }
            for custom_id, request in requests
        ]
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        upload = await self.client.files.create(
            file=("llmpo-batch.jsonl", io.BytesIO(data)), purpose="batch"
        )
        job = await self.client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        return job.id

    async def ended(self, job_id: str) -> bool:
        job = await self.client.batches.retrieve(job_id)
        if job.status == "failed":
            data = (job.errors.data if job.errors else None) or []
            errors = [e.message or e.code or "" for e in data]
            raise BackendError(
                self.scrub(
                    f"{self.label}: batch {job_id} failed: {'; '.join(errors) or 'no reason given'}"
                )
            )
        return job.status in ("completed", "expired", "cancelled")

    async def results(self, job_id: str) -> dict[str, Generation | RequestFailure]:
        job = await self.client.batches.retrieve(job_id)
        found: dict[str, Generation | RequestFailure] = {}
        for file_id in (job.output_file_id, job.error_file_id):
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    custom_id, result = self._result(json.loads(line))
                    found[custom_id] = result
        return found

    def _result(self, line: dict[str, Any]) -> tuple[str, Generation | RequestFailure]:
        response = line.get("response") or {}
        status = response.get("status_code")
        if line.get("error") or status != 200:
            return line["custom_id"], _failure(status, line.get("error") or response.get("body"))
        try:
            return line["custom_id"], openai_generation(response.get("body"), self.label, 0.0)
        except TransientBackendError as error:
            return line["custom_id"], RequestFailure(None, str(error))

    async def aclose(self) -> None:
        await self.client.close()


class AnthropicBatches(BatchProvider):
    """Anthropic's Message Batches API (or a server speaking it)."""

    def __init__(self, config: AnthropicBackendConfig) -> None:
        require_anthropic()
        import anthropic

        self.label = config.base_url or "Anthropic"
        self.name = f"anthropic {self.label} {config.api_key_env}"
        self._secret = read_api_key(config)
        self._default_max_tokens = config.default_max_tokens
        self.client = anthropic.AsyncAnthropic(
            api_key=self._secret, base_url=config.base_url, max_retries=SDK_RETRIES
        )

    def scrub(self, text: str) -> str:
        return scrub(text, self._secret)

    async def submit(self, requests: list[tuple[str, GenerationRequest]]) -> str:
        job = await self.client.messages.batches.create(
            requests=[
                {
                    "custom_id": custom_id,
                    "params": anthropic_body(request, self._default_max_tokens),  # type: ignore[typeddict-item]
                }
                for custom_id, request in requests
            ]
        )
        return job.id

    async def ended(self, job_id: str) -> bool:
        job = await self.client.messages.batches.retrieve(job_id)
        return job.processing_status == "ended"

    async def results(self, job_id: str) -> dict[str, Generation | RequestFailure]:
        found: dict[str, Generation | RequestFailure] = {}
        async for entry in await self.client.messages.batches.results(job_id):
            line = entry.model_dump()
            result = line.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                try:
                    found[line["custom_id"]] = anthropic_generation(
                        result.get("message"), self.label, 0.0
                    )
                except TransientBackendError as error:
                    found[line["custom_id"]] = RequestFailure(None, str(error))
            elif kind == "errored":
                failure = (result.get("error") or {}).get("error") or {}
                # Only these error types are worth another job (the others are the request's).
                retry = failure.get("type") in ("api_error", "overloaded_error", "rate_limit_error")
                found[line["custom_id"]] = RequestFailure(
                    None if retry else 400,
                    f"{failure.get('type', 'error')}: {failure.get('message', '')}",
                )
            else:  # canceled, expired: never processed
                found[line["custom_id"]] = RequestFailure(None, f"request {kind}")
        return found

    async def aclose(self) -> None:
        await self.client.close()


class BatchJournal:
    """Where the submitted jobs are recorded: events of one experiment in the store.

    ``batch_submitted``: ``{"provider", "batch_id", "requests": [[custom_id, fingerprint], …]}``
    (committed before the job is polled); ``batch_collected``: ``{"batch_id", "custom_ids"}``,
    the requests whose results were handed out (answers, or failures sent to a new job).

    A run and each held-out evaluation of its experiment keep a journal of their own: the
    events of an evaluation's journal carry ``"evaluation": id``, and a journal sees only its
    own events (a run's report counts only the run's jobs; an evaluation's resume adopts only
    its own).

    Parameters
    ----------
    store : Store
        The store (``add_event`` and ``events``).
    experiment_id : int
        The experiment the events belong to.
    evaluation : int, optional
        The held-out evaluation that submits the jobs (None: the run itself).
    """

    def __init__(self, store: Any, experiment_id: int, evaluation: int | None = None) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.evaluation = evaluation

    def _add(self, kind: str, detail: dict[str, Any]) -> None:
        if self.evaluation is not None:
            detail["evaluation"] = self.evaluation
        self.store.add_event(self.experiment_id, kind, detail)

    def submitted(self, provider: str, job_id: str, requests: list[tuple[str, str]]) -> None:
        """Record a new job and its (custom_id, fingerprint) requests."""
        self._add(
            "batch_submitted", {"provider": provider, "batch_id": job_id, "requests": requests}
        )

    def collected(self, job_id: str, custom_ids: list[str]) -> None:
        """Record the requests of a job whose results were handed out."""
        self._add("batch_collected", {"batch_id": job_id, "custom_ids": custom_ids})

    def _events(self) -> list[tuple[str, dict[str, Any]]]:
        """This journal's batch events: (kind, detail)."""
        return [
            (kind, detail)
            for _, kind, detail in self.store.events(self.experiment_id)
            if kind in ("batch_submitted", "batch_collected")
            and detail is not None
            and detail.get("evaluation") == self.evaluation
        ]

    def open_jobs(self, provider: str) -> dict[str, list[tuple[str, str]]]:
        """The recorded jobs of ``provider`` with requests not handed out: job id → requests."""
        jobs: dict[str, list[tuple[str, str]]] = {}
        handed: dict[str, set[str]] = {}
        for kind, detail in self._events():
            if kind == "batch_submitted" and detail.get("provider") == provider:
                jobs[detail["batch_id"]] = [(c, f) for c, f in detail["requests"]]
            elif kind == "batch_collected":
                handed.setdefault(detail["batch_id"], set()).update(detail["custom_ids"])
        left = {
            job: [(c, f) for c, f in requests if c not in handed.get(job, set())]
            for job, requests in jobs.items()
        }
        return {job: requests for job, requests in left.items() if requests}


@dataclass
class _Call:
    """A call waiting for a job: its request, fingerprint, future, and failed attempts."""

    request: GenerationRequest
    fingerprint: str
    future: asyncio.Future[Generation]
    failures: int = 0


@dataclass(frozen=True)
class BatchSettings:
    """Polling and retries of a :class:`BatchBackend` (see :class:`~llmpo.config.BackendConfig`)."""

    poll_seconds: float = 5.0
    max_poll_seconds: float = 120.0
    timeout_seconds: float = 86400.0
    max_retries: int = 6

    @classmethod
    def of(cls, config: BackendConfig | AnthropicBackendConfig, max_retries: int) -> BatchSettings:
        """The settings of a configured backend, with the environment's ``max_retries``."""
        return cls(
            config.batch_poll_seconds,
            max(config.batch_poll_seconds, config.batch_max_poll_seconds),
            config.batch_timeout,
            max_retries,
        )


class BatchBackend(Backend):
    """A :class:`~llmpo.llm.backends.Backend` whose calls go into batch jobs (module docstring).

    Parameters
    ----------
    provider : BatchProvider
        The provider's batch API.
    settings : BatchSettings
        Polling interval, timeout and retries of failed requests.
    journal : BatchJournal, optional
        Where jobs are recorded (and found again on resume); None records nothing.
    """

    def __init__(
        self,
        provider: BatchProvider,
        settings: BatchSettings,
        journal: BatchJournal | None = None,
    ) -> None:
        self.provider = provider
        self.label = provider.label
        self.settings = settings
        self.journal = journal
        self._queue: list[_Call] = []
        self._flush: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        # Requests of recorded jobs not handed out yet, by fingerprint: (job id, custom_id).
        self._recorded: dict[str, list[tuple[str, str]]] | None = None
        # Calls waiting on a recorded job, by job id and custom_id; results of the recorded
        # jobs already collected, for calls that come later.
        self._adopted: dict[str, dict[str, _Call]] = {}
        self._collected: dict[str, dict[str, Generation | RequestFailure]] = {}
        self._count = 0

    async def complete(self, request: GenerationRequest, timeout: float) -> Generation:
        """Wait for the request's answer from a batch job (``timeout`` is not used: jobs have
        ``batch_timeout``).

        Raises
        ------
        BackendError
            When the request failed for good, its job failed, or the job timed out.
        """
        call = _Call(
            request,
            fingerprint(self.provider.name, request),
            asyncio.get_running_loop().create_future(),
        )
        if not self._adopt(call):
            self._enqueue(call)
        generation = await call.future
        return replace(generation, text=truncate_answer(generation.text), batch=True)

    # ---- recorded jobs (resume) ------------------------------------------------------------------
    def _adopt(self, call: _Call) -> bool:
        """Attach ``call`` to a request of a recorded, unfinished job with its fingerprint."""
        if self._recorded is None:
            self._recorded = {}
            for job_id, requests in (
                self.journal.open_jobs(self.provider.name) if self.journal is not None else {}
            ).items():
                for custom_id, print_ in requests:
                    self._recorded.setdefault(print_, []).append((job_id, custom_id))
        matches = self._recorded.get(call.fingerprint)
        if not matches:
            return False
        job_id, custom_id = matches.pop(0)
        if job_id in self._collected:  # already collected for an earlier call: hand it out
            self._hand_out(job_id, {custom_id: call}, self._collected[job_id], time.monotonic())
            return True
        waiting = self._adopted.setdefault(job_id, {})
        waiting[custom_id] = call
        if len(waiting) == 1:  # the first call on this job: collect it
            self._start(self._collect(job_id, waiting, keep=True))
        return True

    # ---- new jobs --------------------------------------------------------------------------------
    def _enqueue(self, call: _Call) -> None:
        self._queue.append(call)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._submit_soon())

    def _start(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _submit_soon(self) -> None:
        await asyncio.sleep(COLLECT_SECONDS)
        while self._queue:
            calls = [c for c in self._queue[:MAX_JOB_REQUESTS] if not c.future.done()]
            del self._queue[:MAX_JOB_REQUESTS]
            if calls:
                await self._submit(calls)

    async def _submit(self, calls: list[_Call]) -> None:
        waiting: dict[str, _Call] = {}
        for call in calls:
            self._count += 1
            waiting[f"r{self._count}-{call.fingerprint[:24]}"] = call
        try:
            job_id = await self.provider.submit([(c, call.request) for c, call in waiting.items()])
        except Exception as error:  # every waiting call gets the failure
            self._fail(waiting.values(), self._error("submitting a batch", error))
            return
        if self.journal is not None:  # recorded before it is polled: a resume finds it
            self.journal.submitted(
                self.provider.name, job_id, [(c, call.fingerprint) for c, call in waiting.items()]
            )
        self._start(self._collect(job_id, waiting))

    # ---- polling and collecting ------------------------------------------------------------------
    async def _collect(self, job_id: str, waiting: dict[str, _Call], keep: bool = False) -> None:
        """Poll a job until it ends, then hand out its results to the calls ``waiting`` (which
        may grow meanwhile); ``keep`` them for calls that come later (a recorded job)."""
        started = time.monotonic()
        delay = self.settings.poll_seconds
        deadline = time.monotonic() + self.settings.timeout_seconds
        try:
            while not await self.provider.ended(job_id):
                if time.monotonic() >= deadline:
                    raise BackendError(
                        f"{self.label}: batch {job_id} did not finish within batch_timeout "
                        f"({self.settings.timeout_seconds:g} s). Fix: raise batch_timeout, or "
                        "resume later (llmpo run CONFIG --resume, or llmpo evaluate STORE ID "
                        "--resume, polls the same batch again)"
                    )
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(2 * delay, self.settings.max_poll_seconds)
            results = await self.provider.results(job_id)
        except Exception as error:  # every waiting call gets the failure
            self._fail(waiting.values(), self._error(f"polling batch {job_id}", error))
            if keep:  # a later call on this recorded job starts collecting it again
                self._adopted.pop(job_id, None)
            return
        if keep:
            self._collected[job_id] = results
        self._hand_out(job_id, waiting, results, started)

    def _hand_out(
        self,
        job_id: str,
        waiting: dict[str, _Call],
        results: dict[str, Generation | RequestFailure],
        started: float,
    ) -> None:
        """Give each waiting call its result (recorded first); a failed request goes into the
        next job, or fails its call once it cannot succeed."""
        if self.journal is not None:
            self.journal.collected(job_id, list(waiting))
        seconds = time.monotonic() - started  # a call's time: the job's, as the user waits it
        for custom_id, call in waiting.items():
            if call.future.done():  # its round was cancelled
                continue
            result = results.get(custom_id, RequestFailure(None, "no result in the batch"))
            if isinstance(result, Generation):
                call.future.set_result(replace(result, seconds=seconds))
                continue
            call.failures += 1
            message = self.provider.scrub(
                clip(
                    f"{self.label}: request {custom_id} of batch {job_id} failed "
                    f"(HTTP {result.status or '—'}): {result.message}",
                    ERROR_TEXT_LIMIT,
                )
            )
            if not result.transient:
                call.future.set_exception(BackendError(f"{message}. Fix the request or model"))
            elif call.failures > self.settings.max_retries:
                call.future.set_exception(
                    BackendError(
                        f"{message} (gave up after {call.failures} batches; raise "
                        "environment.max_retries or fix the endpoint)"
                    )
                )
            else:
                self._enqueue(call)  # retried in the next job

    def _error(self, doing: str, error: Exception) -> BackendError:
        """A failure of a job's management call as a :class:`BackendError` without the key."""
        if isinstance(error, BackendError):
            return error
        status = getattr(error, "status_code", None)
        text = f"{self.label}: {doing} failed" + (f" (HTTP {status})" if status else "")
        return BackendError(
            self.provider.scrub(clip(f"{text}: {type(error).__name__}: {error}", ERROR_TEXT_LIMIT))
        )

    @staticmethod
    def _fail(calls: Any, error: BackendError) -> None:
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error)

    async def aclose(self) -> None:
        """Stop polling (the jobs stay recorded for a resume) and close the client."""
        pending = [t for t in (self._flush, *self._jobs) if t is not None and not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.provider.aclose()


def batch_backend(
    config: BackendConfig | AnthropicBackendConfig,
    max_retries: int,
    journal: BatchJournal | None = None,
) -> BatchBackend:
    """The :class:`BatchBackend` of a configured backend with ``batch: true``."""
    provider: BatchProvider = (
        OpenAIBatches(config) if isinstance(config, BackendConfig) else AnthropicBatches(config)
    )
    return BatchBackend(provider, BatchSettings.of(config, max_retries), journal)
