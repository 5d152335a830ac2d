"""HTTP calls in worker processes, so the ``openai`` SDK's CPU runs beside the runner's.

A chat completion through the SDK costs ~0.6–0.8 ms of CPU (request building, its HTTP layers,
parsing). Against a fast endpoint at high concurrency that CPU, on the runner's one event loop,
delays every result behind it: results arrive in clumps that the loop works through one by one
(``benchmarks/throughput.py``). :class:`ProcessBackend` runs :class:`OpenAIBackend` in child
processes (``python -m llmpo.llm.worker``) and forwards each *attempt* over a pipe; the runner
keeps everything else (retries and their backoff, rate limits, the per-call timeout, the cache,
the judge, the store), so a worker holds no state worth losing.

Protocol: length-prefixed pickled frames. The parent first sends the backend configuration (the
worker builds it by its registration, :data:`llmpo.registry.BACKENDS`), then
``("call", id, request, timeout)`` and ``("cancel", id)``; the worker answers ``(id, "ok",
generation)``, ``(id, "transient", message, retry_after)`` or ``(id, "error", message)``. A worker
reads the API key from the environment variable the configuration names (it inherits the
parent's environment): the key never crosses the pipe, and error messages are scrubbed of it in
the worker as in-process. A worker ignores SIGINT and SIGTERM (the parent decides when a run
stops) and exits when its input closes, or within :data:`llmpo.orphans.WATCH_SECONDS` of its
parent's death (a SIGKILLed runner), so it never outlives its parent.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import signal
import struct
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmpo.config import AnyBackendConfig
from llmpo.errors import ConfigError, scrub
from llmpo.llm.backends import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    TransientBackendError,
    read_api_key,
)
from llmpo.orphans import exit_with_parent
from llmpo.registry import BACKENDS

_LENGTH = struct.Struct("!I")

#: The environment variable that tells a worker its parent's pid.
PARENT_VARIABLE = "LLMPO_WORKER_PARENT"

#: A worker's first message, once it can make calls.
READY = "ready"


def _frame(message: object) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at the end of the stream."""
    try:
        header = await reader.readexactly(_LENGTH.size)
        return pickle.loads(await reader.readexactly(_LENGTH.unpack(header)[0]))
    except asyncio.IncompleteReadError:
        return None


class _Worker:
    """One child process and the calls it has not answered yet."""

    def __init__(
        self, process: asyncio.subprocess.Process, on_ready: Callable[[_Worker], None]
    ) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.pending: dict[int, asyncio.Future[Generation]] = {}
        #: True once the worker can make calls; False if it ended before.
        self.started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read(process.stdout, on_ready))

    def send(self, message: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(_frame(message))

    async def _read(
        self, stdout: asyncio.StreamReader, on_ready: Callable[[_Worker], None]
    ) -> None:
        problem = "exited"
        try:
            await self._serve_replies(stdout, on_ready)
        except Exception as error:  # an unreadable frame: nothing after it can be trusted
            problem = f"sent an unreadable reply ({type(error).__name__})"
            self.process.kill()
        if not self.started.done():
            self.started.set_result(False)
        code = await self.process.wait()
        failure = BackendError(
            f"the worker process making HTTP calls {problem} (code {code}; its error output, if "
            "any, is above). Fix the cause, then resume the run"
        )
        for future in self.pending.values():
            if not future.done():
                future.set_exception(failure)
        self.pending.clear()

    async def _serve_replies(
        self, stdout: asyncio.StreamReader, on_ready: Callable[[_Worker], None]
    ) -> None:
        ready = await _read_frame(stdout) == READY
        self.started.set_result(ready)
        if not ready:
            warnings.warn(
                "the worker process for HTTP calls did not start (its error output, if any, is "
                "above); the calls are made in this process",
                RuntimeWarning,
                stacklevel=1,
            )
            return
        on_ready(self)
        while (message := await _read_frame(stdout)) is not None:
            future = self.pending.pop(message[0], None)
            if future is None or future.done():
                continue  # cancelled meanwhile
            kind = message[1]
            if kind == "ok":
                future.set_result(message[2])
            elif kind == "transient":
                future.set_exception(TransientBackendError(message[2], message[3]))
            else:
                future.set_exception(BackendError(message[2]))


class ProcessBackend(Backend):
    """An OpenAI-compatible endpoint called from ``processes`` worker processes.

    The workers start with the first call (inside the running event loop); until they are ready
    (~0.5 s: a Python start and the SDK's import) calls are made in this process, so the start
    delays nothing. Calls are spread over the workers in turn. :meth:`aclose` stops them.

    Parameters
    ----------
    config : AnyBackendConfig
        The endpoint, of a backend registered with ``worker_processes=True``
        (:class:`~llmpo.registry.BackendPlugin`; the built-in: ``openai``).
    processes : int
        Worker processes (at least 1).

    Raises
    ------
    BackendError
        When the named key variable is not set (checked here, before any process starts).
    """

    def __init__(self, config: AnyBackendConfig, processes: int) -> None:
        if processes < 1:
            raise ConfigError(f"processes must be at least 1, got {processes}")
        read_api_key(config)  # fail here, before any process starts
        default = "OpenAI" if config.type == "openai" else f"{config.type} {config.model}"
        self.label = getattr(config, "base_url", None) or default
        self.config = config
        self.processes = processes
        self._in_process: Backend | None = None
        self._workers: list[_Worker] = []
        self._ready: list[_Worker] = []
        self._starting: asyncio.Task[None] | None = None
        self._turn = itertools.count()
        self._ids = itertools.count()
        #: Calls sent to the workers (the others were made in this process, before they were up).
        self.worker_calls = 0

    async def start(self) -> None:
        """Start the workers (if not yet started) and wait until each is ready.

        Raises
        ------
        BackendError
            When a worker ended before it was ready.
        """
        if self._starting is None:
            self._starting = asyncio.create_task(self._spawn())
        await self._starting
        if not all(await asyncio.gather(*(w.started for w in self._workers))):
            raise BackendError(
                "a worker process for HTTP calls did not start (its error output, if any, is "
                "above)"
            )

    async def _spawn(self) -> None:
        # The child imports the same llmpo as this process, installed or not.
        source = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        environment = {
            **os.environ,
            "PYTHONPATH": f"{source}{os.pathsep}{path}" if path else source,
            PARENT_VARIABLE: str(os.getpid()),  # so a worker started after our death ends too
        }
        for _ in range(self.processes):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "llmpo.llm.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=environment,
            )
            worker = _Worker(process, self._ready.append)
            worker.send(self.config)
            self._workers.append(worker)

    async def complete(self, request: GenerationRequest, timeout: float) -> Generation:
        if not self._ready:
            if self._starting is None:
                self._starting = asyncio.create_task(self._spawn())
            if self._in_process is None:
                self._in_process = BACKENDS.get(self.config.type).create(self.config)
            return await self._in_process.complete(request, timeout)
        worker = self._ready[next(self._turn) % len(self._ready)]
        if worker.reader.done():
            raise BackendError(
                f"the worker process making HTTP calls exited (code "
                f"{worker.process.returncode}). Fix the cause, then resume the run"
            )
        call_id = next(self._ids)
        self.worker_calls += 1
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        worker.pending[call_id] = future
        worker.send(("call", call_id, request, timeout))
        try:
            return await future
        except asyncio.CancelledError:
            if worker.pending.pop(call_id, None) is not None and not worker.reader.done():
                worker.send(("cancel", call_id))
            raise

    async def aclose(self) -> None:
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        workers, self._workers, self._ready = self._workers, [], []
        for worker in workers:
            assert worker.process.stdin is not None
            worker.process.stdin.close()  # the worker's signal to finish
        for worker in workers:
            try:
                await asyncio.wait_for(worker.process.wait(), 10.0)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
            await asyncio.gather(worker.reader, return_exceptions=True)
        if self._in_process is not None:
            await self._in_process.aclose()
            self._in_process = None


# ---- the worker process ------------------------------------------------------------------------
async def _serve() -> None:
    loop = asyncio.get_running_loop()
    # Frames go to a private copy of stdout; anything else written to stdout goes to stderr.
    frames_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, frames_out)
    config = await _read_frame(reader)
    kind = getattr(config, "type", None)
    if not isinstance(config, BaseModel) or not isinstance(kind, str):
        return
    # The backend's own registration builds it, here as in the parent (docs/plugins.md).
    backend = BACKENDS.get(kind).create(config)
    transport.write(_frame(READY))
    calls: dict[int, asyncio.Task[None]] = {}

    async def call(call_id: int, request: GenerationRequest, timeout: float) -> None:
        try:
            reply: tuple[Any, ...] = (call_id, "ok", await backend.complete(request, timeout))
        except TransientBackendError as error:
            reply = (call_id, "transient", str(error), error.retry_after)
        except BackendError as error:
            reply = (call_id, "error", str(error))
        except Exception as error:  # a bug: reported to the parent, not lost
            reply = (call_id, "error", scrub(f"{backend.label}: {error!r}"))
        finally:
            calls.pop(call_id, None)
        transport.write(_frame(reply))

    try:
        while (message := await _read_frame(reader)) is not None:
            if message[0] == "call":
                calls[message[1]] = asyncio.create_task(call(*message[1:]))
            elif (task := calls.pop(message[1], None)) is not None:
                task.cancel()
    finally:
        for task in list(calls.values()):
            task.cancel()
        await asyncio.gather(*calls.values(), return_exceptions=True)
        await backend.aclose()
        transport.close()


def main() -> None:
    """Entry point of a worker process (``python -m llmpo.llm.worker``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A SIGKILLed runner: end at once, not after closing connections.
    parent = os.environ.get(PARENT_VARIABLE, "")
    exit_with_parent(int(parent) if parent.isdigit() else None)
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
