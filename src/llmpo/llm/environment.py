"""Live LLM policies answering tasks, judged pairwise, with a generation cache in the store.

A comparison of policies (a, b) number n: draw the task from (seed, n), generate both answers
concurrently — each answer keyed by (policy, task, replicate index, request key) and looked up in
the store's cache first — then ask the judge. The replicate index is chosen by the runner: a
policy's r-th sample on a task has index r, so repeated comparisons on a task draw fresh answers,
and a re-run or resumed run finds the answers it already paid for.

A *round* (:meth:`LLMEnvironment.compare_round`, :mod:`llmpo.sharing`) is several comparisons on
one task decided together: each (policy, replicate) answer of the round is generated (or read from
the cache) once and serves every comparison of the round that names it. A judge that scores each
answer on its own (:attr:`~llmpo.llm.judges.Judge.scores_each_answer`) scores each answer once; a
pairwise judge judges each comparison. An answer's generation (tokens, money, one call) is charged
to the first comparison of the round that uses it, so each comparison shows its own share.

Each answer, and each reply of an LLM judge, is committed to the store the moment it arrives (one
small transaction, ~40 µs), not with the comparison that uses it: a run killed at any instant has
stored every call whose reply had reached it, and its resumption re-asks the comparisons that were
in flight with the same numbers and replicates, so it reads those replies instead of paying again.
A judge reply is stored under :data:`JUDGE_REPLIES` (a key no policy name can take), keyed by the
comparison's task and number and a hash of the request and of the two samples judged: it is reused
only by the comparison it was made for, never by another comparison.

Each call is also recorded as paid, by the experiment or evaluation given as ``payer``, with its
tokens and cost, in the transaction of its reply: what a run reports it paid is counted from
these records (:mod:`llmpo.llm.paid`), whichever session paid and however it ended. A call in
flight when its comparison is cancelled (a run that certified or stopped) is finished and
recorded rather than dropped (:meth:`LLMEnvironment.aclose`).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import jinja2
import numpy as np

from llmpo.config import (
    AnthropicBackendConfig,
    AnyBackendConfig,
    BackendConfig,
    ExperimentConfig,
    LLMEnvironmentConfig,
    PolicyConfig,
)
from llmpo.errors import ConfigError
from llmpo.llm.backends import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    RequestRateLimiter,
    RetryPolicy,
    TokenRateLimiter,
    call_with_retries,
    read_api_key,
)
from llmpo.llm.batch import BatchBackend, BatchJournal, batch_backend
from llmpo.llm.judges import Judge, Verdict, build_judge
from llmpo.llm.tasks import Task, draw_task, load_tasks
from llmpo.llm.worker import ProcessBackend
from llmpo.registry import BACKENDS
from llmpo.store import CachedGeneration, ComparisonRecord, Payment, Store
from llmpo.store.payloads import LiveRaw

_TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)

#: Template of a policy without ``prompt_template``.
DEFAULT_PROMPT_TEMPLATE = "{{ prompt }}"


#: The ``policy`` under which the generation cache keeps an LLM judge's replies: it starts with a
#: NUL, which policy names may not contain (:mod:`llmpo.limits`), so it never meets a policy's.
JUDGE_REPLIES = "\x00judge"

#: The comparison an LLM judge is called for, in the task that judges it: (task id, comparison
#: number, its two samples as ((policy, replicate), (policy, replicate)), replies asked so far with
#: each request key). Unset outside :meth:`compare_round`.
_JUDGING: contextvars.ContextVar[tuple[str, int, Any, dict[str, int]]] = contextvars.ContextVar(
    "judging"
)

#: How long from its start a call still in flight when a run stopped (its comparison cancelled) is
#: given, by :meth:`LLMEnvironment.aclose`, to arrive and be recorded: the provider bills what it
#: answered. Counted from the call's start, so a stop that already gave the calls in flight their
#: grace (as long) waits no longer.
SETTLE_SECONDS = 10.0

#: From this many comparisons in flight, ``client_processes: auto`` makes HTTP calls in a worker
#: process (on a machine with more than one CPU): below it the SDK's CPU delays nothing.
PROCESS_CONCURRENCY = 16


class LLMSetupError(ConfigError):
    """A live-LLM configuration that cannot run (tasks, templates, judge, keys)."""


def _backend_key(config: AnyBackendConfig) -> tuple[str, str | None, str | None, bool]:
    """Which endpoint a backend configuration calls, and whether in batches: (type, base_url,
    api_key_env, batch) for one that has a ``base_url`` field, else (type, model, None, False) —
    any registered backend, plug-ins included."""
    if "base_url" in type(config).model_fields:
        endpoint: str | None = getattr(config, "base_url", None)
        batch = bool(getattr(config, "batch", False))
        return (config.type, endpoint, getattr(config, "api_key_env", None), batch)
    return (config.type, config.model, None, False)


@dataclass(frozen=True)
class LivePolicy:
    """How one policy turns a task into a chat request."""

    name: str
    backend: AnyBackendConfig
    system_prompt: str | None
    #: The policy's chat messages as (role, Jinja2 template); the last is the user's prompt.
    templates: tuple[tuple[str, jinja2.Template], ...]
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    seed: int | None
    stop: tuple[str, ...] | None

    @classmethod
    def from_config(cls, config: PolicyConfig) -> LivePolicy:
        """Compile a configured policy (it must have a backend)."""
        assert config.backend is not None  # the configuration checks it
        if config.messages:
            sources = [(f"messages[{i}]", m.role, m.content) for i, m in enumerate(config.messages)]
        else:
            template = config.prompt_template or DEFAULT_PROMPT_TEMPLATE
            sources = [("prompt_template", "user", template)]
        templates = []
        for field, role, text in sources:
            try:
                templates.append((role, _TEMPLATES.from_string(text)))
            except jinja2.TemplateSyntaxError as error:
                raise LLMSetupError(
                    f"policy {config.name!r}: {field} is not valid Jinja2 ({error.message}, "
                    f"line {error.lineno}). Fix: correct the template"
                ) from None
        return cls(
            config.name,
            config.backend,
            config.system_prompt,
            tuple(templates),
            config.temperature,
            config.top_p,
            config.max_tokens,
            config.seed,
            tuple(config.stop) if config.stop else None,
        )

    def request(self, task: Task, replicate: int) -> GenerationRequest:
        """The chat request for one sample; a configured seed is offset by the replicate index.

        Raises
        ------
        LLMSetupError
            When the template uses a field the task lacks.
        """
        try:
            rendered = [(role, t.render(**task.fields)) for role, t in self.templates]
        except jinja2.UndefinedError as error:
            raise LLMSetupError(
                f"policy {self.name!r}: its prompt template needs a field task {task.id!r} lacks "
                f"({error.message}). Fix: add the field to every task, or change the template"
            ) from None
        system = (("system", self.system_prompt),) if self.system_prompt else ()
        # The task's own turns (an ``input`` message list) come right before the last message.
        return GenerationRequest(
            (*system, *rendered[:-1], *task.context, rendered[-1]),
            self.backend.model,
            self.temperature,
            self.top_p,
            self.max_tokens,
            None if self.seed is None else self.seed + replicate,
            self.stop,
        )

    def request_key(self, request: GenerationRequest) -> str:
        """Hash of everything that shapes an answer: endpoint, model, messages, decoding."""
        identity = {
            "backend": _backend_key(self.backend)[:2],
            "request": [
                request.messages,
                request.model,
                request.temperature,
                request.top_p,
                request.max_tokens,
                request.seed,
                request.stop,
            ],
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LiveComparison:
    """A finished live comparison (valid or not), with what it cost."""

    number: int
    a: int
    b: int
    task_id: str
    replicates: tuple[int, int]
    verdict: Verdict
    answers: tuple[str, str]
    cached: tuple[bool, bool]
    request_keys: tuple[str, str]
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    started_at: float
    finished_at: float
    generation_calls: int = 0
    judge_calls: int = 0
    round: int | None = None
    shared: tuple[bool, bool] = (False, False)

    def raw(self) -> dict[str, Any]:
        """What the store records as the comparison's raw verdict.

        ``cached`` tells, per side, whether this comparison did not pay for that answer: it came
        from the generation cache, or an earlier comparison of its round paid for it. ``calls``
        is the number of calls this comparison paid, generations (the sides not ``cached``) and
        judge calls together, so reports that count calls from these two fields count each
        shared answer once. ``round`` is the number of the round (its first comparison) whose
        answers it used, and ``shared`` tells, per side, whether that answer also served another
        comparison of the round: an answer is identified by (policy, task, replicate), so
        comparisons with equal round, task, policy and replicate used one answer.
        """
        return LiveRaw(
            judge=self.verdict.raw,
            number=self.number,
            replicates=self.replicates,
            cached=tuple(self.cached),
            # Where the answers are in the generation cache (reports and exports show them).
            request_keys=tuple(self.request_keys),
            calls=self.generation_calls + self.judge_calls,
            round=self.round,
            shared=tuple(self.shared),
        ).to_json()

    def to_record(self, seq: int, policy_a: int, policy_b: int) -> ComparisonRecord:
        """The stored form of this comparison (a valid one) as number ``seq`` of a run or an
        evaluation, between the stored policy indices ``policy_a`` and ``policy_b``."""
        assert self.verdict.outcome is not None  # invalid verdicts are events, not records
        return ComparisonRecord(
            seq=seq,
            policy_a=policy_a,
            policy_b=policy_b,
            outcome=self.verdict.outcome,
            task_id=self.task_id,
            order=self.verdict.order,
            raw=self.raw(),
            started_at=self.started_at,
            finished_at=self.finished_at,
            cost_usd=self.cost_usd,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )


class LLMEnvironment:
    """Live policies, their tasks and the judge of a configuration.

    Parameters
    ----------
    config : ExperimentConfig
        A resolved configuration with ``environment.type: llm``.
    cache : Store, optional
        The store whose generation cache answers are looked up in and added to.
    concurrency : int
        Comparisons the runner keeps in flight (``client_processes: auto`` moves HTTP calls to
        a worker process from :data:`PROCESS_CONCURRENCY` on).
    seed : int, optional
        Seed of the task draws and the judge's random choices (default: the configuration's;
        an evaluation gives its own stream).
    payer : (int, int or None), optional
        The experiment (and held-out evaluation) that pays the calls: each one is recorded in
        the store's payments, with its tokens and cost, as its reply arrives (None: nothing is
        recorded; runs and evaluations always give it).
    batch_journal : BatchJournal, optional
        Where a ``batch: true`` backend records its jobs, so that a resumed run collects them
        instead of paying again (docs/batch.md).

    Raises
    ------
    LLMSetupError
        For unreadable tasks, a judge that cannot use them, a bad template, or a missing key
        variable; the message names the fix and never a key.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        cache: Store | None = None,
        concurrency: int = 1,
        seed: int | None = None,
        payer: tuple[int, int | None] | None = None,
        batch_journal: BatchJournal | None = None,
    ) -> None:
        environment = config.environment
        assert isinstance(environment, LLMEnvironmentConfig)
        self.config = environment
        self.seed = config.seed if seed is None else seed
        specs = [p for p in config.policies or [] if isinstance(p, PolicyConfig)]
        self.live_policies = tuple(LivePolicy.from_config(p) for p in specs)
        self.policies = tuple(p.name for p in self.live_policies)
        try:
            self.tasks = load_tasks(environment.tasks)
            self.judge: Judge = build_judge(environment.judge, self._judge_generate)
            self.judge.check_tasks(self.tasks)
        except ValueError as error:
            raise LLMSetupError(str(error)) from None
        self.retry = RetryPolicy(
            environment.timeout_seconds,
            environment.max_retries,
            environment.backoff_seconds,
            environment.max_backoff_seconds,
        )
        self._backend_configs = {_backend_key(p.backend): p.backend for p in self.live_policies}
        self._judge_backend: AnyBackendConfig | None = getattr(environment.judge, "backend", None)
        if self._judge_backend is not None:
            self._backend_configs[_backend_key(self._judge_backend)] = self._judge_backend
        for backend in self._backend_configs.values():
            if "api_key_env" in type(backend).model_fields:
                try:
                    read_api_key(backend)
                except BackendError as error:
                    raise LLMSetupError(str(error)) from None
        self._backends: dict[tuple[str, str | None, str | None, bool], Backend] = {}
        rate = environment.requests_per_minute
        self._limiters = {
            key: RequestRateLimiter(rate) for key in self._backend_configs if rate is not None
        }
        tokens = environment.tokens_per_minute
        self._token_limiters = {
            key: TokenRateLimiter(tokens) for key in self._backend_configs if tokens is not None
        }
        self._jitter = np.random.default_rng()
        self.cache = cache
        self.payer = payer
        #: Where batch jobs are recorded for a resume (given by the runner), or None.
        self.batch_journal = batch_journal
        #: Task ids held out of the selection run (set by the runner's builder), or None.
        self.holdout_task_ids: tuple[str, ...] | None = None
        self.concurrency = concurrency
        #: Backend calls made by this process, and retries among them.
        self.calls = 0
        self.retries = 0
        #: Calls going on until they are recorded (their comparison may have been cancelled),
        #: with when each started (monotonic seconds).
        self._settling: dict[asyncio.Task[Generation], float] = {}

    # ---- calls ---------------------------------------------------------------------------------
    def _backend(self, config: AnyBackendConfig) -> Backend:
        key = _backend_key(config)
        if key not in self._backends:
            # Only the OpenAI and Anthropic configurations have a batch API (docs/batch.md).
            if isinstance(config, BackendConfig | AnthropicBackendConfig) and config.batch:
                self._backends[key] = batch_backend(
                    config, self.retry.max_retries, self.batch_journal
                )
            else:
                # Its registration builds it, importing its module now (torch only for local).
                plugin = BACKENDS.get(config.type)
                processes = self.client_processes() if plugin.worker_processes else 0
                self._backends[key] = (
                    ProcessBackend(config, processes) if processes else plugin.create(config)
                )
        return self._backends[key]

    def client_processes(self) -> int:
        """Worker processes for the HTTP calls of each endpoint (0: in this process)."""
        setting = self.config.client_processes
        if setting != "auto":
            return setting
        return int(self.concurrency >= PROCESS_CONCURRENCY and (os.cpu_count() or 1) >= 2)

    async def _count_retry(self, attempt: int, error: BackendError, delay: float) -> None:
        self.retries += 1

    async def _call(self, backend: AnyBackendConfig, request: GenerationRequest) -> Generation:
        target = self._backend(backend)
        if isinstance(target, BatchBackend):  # polls and retries on its own (llm/batch.py)
            generation = await target.complete(request, self.retry.timeout_seconds)
            self.calls += 1
            return generation
        generation = await call_with_retries(
            target,
            request,
            self.retry,
            self._jitter,
            self._count_retry,
            self._limiters.get(_backend_key(backend)),
            self._token_limiters.get(_backend_key(backend)),
        )
        self.calls += 1
        return generation

    async def _paid_call(
        self,
        kind: str,
        where: tuple[str, str, int, str] | None,
        backend: AnyBackendConfig,
        request: GenerationRequest,
    ) -> Generation:
        """:meth:`_call`, its reply kept (:meth:`_keep`) the moment it arrives.

        The call goes on when the comparison that made it is cancelled (the run certified or
        stopped with rounds in flight), until :meth:`aclose`: a provider bills a request it
        answered, so the reply is recorded as paid, and cached for a later run, not dropped.
        """

        async def call_and_keep() -> Generation:
            generation = await self._call(backend, request)
            self._keep(kind, where, request.model, generation)
            return generation

        task = asyncio.ensure_future(call_and_keep())
        self._settling[task] = time.monotonic()
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[Generation]) -> None:
        self._settling.pop(task, None)
        if not task.cancelled():
            task.exception()  # retrieved: the comparison that awaited it reports it, if any

    def _keep(
        self,
        kind: str,
        where: tuple[str, str, int, str] | None,
        model: str,
        reply: Generation,
    ) -> None:
        """Commit a paid reply now, to the generation cache at ``where`` (policy, task,
        replicate, request key; None: not cached) and to the payments of :attr:`payer` (with
        its tokens and cost), in one transaction: a kill a moment later loses neither."""
        if self.cache is None:
            return
        if where is not None:
            self.cache.cache_generation(
                *where,
                model,
                CachedGeneration(
                    reply.text, reply.input_tokens, reply.output_tokens, reply.seconds
                ),
            )
        if self.payer is not None:
            policy, task_id, replicate, key = where or (None, None, None, None)
            self.cache.record_payment(
                Payment(
                    experiment_id=self.payer[0],
                    evaluation_id=self.payer[1],
                    kind=kind,
                    policy=policy,
                    task_id=task_id,
                    replicate=replicate,
                    request_key=key,
                    model=model,
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                    cost_usd=self.cost(model, reply),
                    paid_at=time.time(),
                )
            )
        self.cache.flush()

    def _cached(self, policy: str, task_id: str, replicate: int, key: str) -> Generation | None:
        """A reply already in the generation cache, if any."""
        found = (
            None
            if self.cache is None
            else self.cache.cached_generation(policy, task_id, replicate, key)
        )
        if found is None:
            return None
        return Generation(found.text, found.input_tokens, found.output_tokens, found.seconds or 0.0)

    async def _judge_generate(self, request: GenerationRequest) -> Generation:
        """One call of the LLM judge; inside a comparison, its reply is read from the cache when
        this comparison already paid for it (in a run that was killed), and stored on arrival."""
        assert self._judge_backend is not None  # only an LLM judge generates
        judging = _JUDGING.get(None)
        key = ""
        if judging is not None:
            task_id, number, samples, asked = judging
            identity = json.dumps([_backend_key(self._judge_backend)[:2], asdict(request), samples])
            digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
            # The same request twice in one comparison (order "both" on equal answers) is two
            # replies: the occurrence tells them apart.
            asked[digest] = asked.get(digest, 0) + 1
            key = f"{digest}:{asked[digest]}"
            found = self._cached(JUDGE_REPLIES, task_id, number, key)
            if found is not None:
                return found
        where = None if judging is None else (JUDGE_REPLIES, judging[0], judging[1], key)
        return await self._paid_call("judge", where, self._judge_backend, request)

    async def _judge_pair(
        self, number: int, task: Task, samples: tuple[tuple[int, int], tuple[int, int]], texts: Any
    ) -> Verdict:
        """The judge's verdict on comparison ``number`` of the samples (policy, replicate) whose
        answers are ``texts``; its replies are cached under that number and those samples, so a
        reply serves only the comparison it was made for."""
        # Set in this task's own context (gather gives each comparison a copy).
        _JUDGING.set((task.id, number, samples, {}))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed or 0, number, 1]))
        return await self.judge.judge(task, texts[0], texts[1], rng)

    def cost(self, model: str, generation: Generation) -> float | None:
        """USD of one call by the price table, or None when the model has no price."""
        price = self.config.prices.get(model)
        if price is None:
            return None
        rates = (price.input, price.output)
        if generation.batch:  # the batch price: as configured, else half the listed one
            rates = (
                price.input / 2 if price.batch_input is None else price.batch_input,
                price.output / 2 if price.batch_output is None else price.batch_output,
            )
        return (
            (generation.input_tokens or 0) * rates[0] + (generation.output_tokens or 0) * rates[1]
        ) / 1e6

    async def answer(self, policy: int, task: Task, replicate: int) -> tuple[Generation, bool]:
        """A policy's answer for one replicate: from the cache, else generated and committed to the
        cache as it arrives.

        Returns the answer and whether it came from the cache.
        """
        live = self.live_policies[policy]
        request = live.request(task, replicate)
        key = live.request_key(request)
        cached = self._cached(live.name, task.id, replicate, key)
        if cached is not None:
            return cached, True
        where = (live.name, task.id, replicate, key)
        return await self._paid_call("generation", where, live.backend, request), False

    def task(self, number: int) -> Task:
        """The task of comparison ``number`` (a function of the seed and the number)."""
        return draw_task(self.tasks, self.seed or 0, number)

    async def compare(
        self, a: int, b: int, number: int, task: Task, replicates: tuple[int, int]
    ) -> LiveComparison:
        """Answer ``task`` with policies a and b (concurrently), then judge.

        Raises
        ------
        BackendError
            When a call fails for good.
        """
        (comparison,) = await self.compare_round(number, task, [(number, a, b, replicates)])
        return comparison

    async def compare_round(
        self,
        round_number: int,
        task: Task,
        comparisons: list[tuple[int, int, int, tuple[int, int]]],
        score_each: bool = False,
    ) -> list[LiveComparison]:
        """Run one round: every distinct (policy, replicate) answer of ``comparisons`` once
        (concurrently), then the judge on each comparison.

        Parameters
        ----------
        round_number : int
            The round's number (that of its first comparison); ``task`` is drawn from it.
        task : Task
            The task every comparison of the round is on.
        comparisons : list of (number, a, b, (replicate of a, replicate of b))
            The comparisons, in the order they are returned (and told).
        score_each : bool
            Score each answer once with the judge's :meth:`~llmpo.llm.judges.Judge.score` (a
            judge that scores answers on their own); otherwise judge each pair.

        Raises
        ------
        BackendError
            When a call fails for good.
        """
        started_at = time.time()
        keys = list(
            dict.fromkeys(
                (p, r) for _, a, b, (ra, rb) in comparisons for p, r in ((a, ra), (b, rb))
            )
        )
        answered = await asyncio.gather(*(self.answer(p, task, r) for p, r in keys))
        request_keys = {
            (p, r): self.live_policies[p].request_key(self.live_policies[p].request(task, r))
            for p, r in keys
        }
        answers = dict(zip(keys, answered, strict=True))
        uses: dict[tuple[int, int], int] = {}
        for _, a, b, (ra, rb) in comparisons:
            for key in ((a, ra), (b, rb)):
                uses[key] = uses.get(key, 0) + 1
        verdicts: list[Verdict]
        if score_each:
            scores = await self.judge.score(task, [answers[k][0].text for k in keys])
            by_key = dict(zip(keys, scores, strict=True))
            verdicts = [
                self.judge.verdict_from_scores(by_key[(a, ra)], by_key[(b, rb)])
                for _, a, b, (ra, rb) in comparisons
            ]
        else:
            verdicts = list(
                await asyncio.gather(
                    *(
                        self._judge_pair(
                            number,
                            task,
                            ((a, ra), (b, rb)),
                            (answers[(a, ra)][0].text, answers[(b, rb)][0].text),
                        )
                        for number, a, b, (ra, rb) in comparisons
                    )
                )
            )
        finished_at = time.time()
        charged: set[tuple[int, int]] = set()
        results = []
        for (number, a, b, (ra, rb)), verdict in zip(comparisons, verdicts, strict=True):
            paid = []
            not_paid_here = []  # from the cache, or paid by an earlier comparison of the round
            for key in ((a, ra), (b, rb)):
                generation, cached = answers[key]
                not_paid_here.append(cached or key in charged)
                if not not_paid_here[-1]:
                    charged.add(key)
                    paid.append((self.live_policies[key[0]].backend.model, generation))
            generations = len(paid)
            if self._judge_backend is not None:
                paid += [(self._judge_backend.model, g) for g in verdict.generations]
            tokens_in = [g.input_tokens for _, g in paid if g.input_tokens is not None]
            tokens_out = [g.output_tokens for _, g in paid if g.output_tokens is not None]
            costs = [c for c in (self.cost(model, g) for model, g in paid) if c is not None]
            results.append(
                LiveComparison(
                    number,
                    a,
                    b,
                    task.id,
                    (ra, rb),
                    verdict,
                    (answers[(a, ra)][0].text, answers[(b, rb)][0].text),
                    (not_paid_here[0], not_paid_here[1]),
                    (request_keys[(a, ra)], request_keys[(b, rb)]),
                    sum(tokens_in),
                    sum(tokens_out),
                    sum(costs) if costs else (0.0 if not paid and self.config.prices else None),
                    started_at,
                    finished_at,
                    generation_calls=generations,
                    judge_calls=len(verdict.generations),
                    round=round_number,
                    shared=(uses[(a, ra)] > 1, uses[(b, rb)] > 1),
                )
            )
        return results

    async def aclose(self) -> None:
        """Let the calls still in flight arrive and be recorded (each until
        :data:`SETTLE_SECONDS` after it started, or the call timeout when shorter), then close
        the backends' connections."""
        if self._settling:
            settling = set(self._settling)
            limit = min(SETTLE_SECONDS, self.retry.timeout_seconds)
            until = max(self._settling.values()) + limit
            await asyncio.wait(settling, timeout=max(until - time.monotonic(), 0.0))
            for task in settling:
                task.cancel()
            await asyncio.gather(*settling, return_exceptions=True)
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
