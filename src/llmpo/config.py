"""Experiment configuration files (YAML), validated with pydantic.

The smallest useful file::

    space: unstructured
    delta: 0.05
    seed: 3
    environment:
      type: replay
      path: judgments.jsonl
    store: runs.db

Every field has a default except ``environment``. Values come, by precedence, from command-line
flags, then the file, then the defaults. Relative paths in a file are relative to the file's folder.
The *resolved* configuration (absolute paths, the seed actually used) is saved with each run, so a
run resumes from the store alone.

Fields
------
name : str, optional
    A label for the experiment in the store and reports.
policies : list or mapping, optional
    Which policies to compare: names, or ``{name, features}`` / ``{name, levels}`` mappings for a
    structured space; live LLM policies add ``backend``, ``system_prompt``, ``prompt_template``,
    ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``. A mapping
    ``{base: {...}, factors: {field: levels}}`` expands a product of levels into policies
    (:func:`expand_policy_factors`). Default: every policy present in the environment's data.
space : ``unstructured`` | ``structured``
    The statistical model (docs/statistics.md). ``structured`` needs each policy's features or
    factor levels, or a structured synthetic instance (``features`` and ``theta``) that has them.
features : list of str, optional
    Structured space with factor levels: the factors, in the order they become one-hot features
    (the first level of each factor is the reference).
delta, epsilon : float
    Error probability δ ∈ (0, ½) and indifference margin ε ∈ [0, ½).
strategy : str
    Sampling rule: ``llmpo`` (the space's default rule), another rule of the space, ``uniform``,
    or an installed plug-in's (:data:`llmpo.registry.STRATEGIES`).
threshold : str, optional
    Stopping threshold; default the space's (``kt`` unstructured, ``hybrid-lean`` structured); the
    names are those of :data:`llmpo.registry.THRESHOLDS`.
assume_condorcet : bool
    Class B statistics; δ-correct only when a Condorcet winner exists.
ties : {"decisive", "half"}, optional
    How the statistics treat ties (docs/ties.md): on the decisive outcomes (the default of a new
    experiment) or counted as half a win. A stored experiment keeps the statistic it was created
    with; one stored before this option existed used ``half``.
max_comparisons : int, optional
    Comparison budget; the run then reports the best policy so far, not certified.
batch_size : int
    Pairs proposed at once.
seed : int, optional
    Seed of every random choice; drawn and saved when omitted.
max_cost : float, optional
    Money budget in USD (live LLMs with a price table): the run stops, uncertified, once spent.
environment : mapping
    ``{type: llm, tasks: FILE, judge: {...}}`` (live LLM policies, see
    :class:`LLMEnvironmentConfig`), ``{type: synthetic, instance: FILE}`` or
    ``{type: replay, path: FILE, format: auto|judgments|counts|arena|pandalm|promptfoo|inspect,
    dense_subset: bool,
    min_pair_records: int}``; both accept ``latency_seconds`` (simulated time per comparison,
    for demos and for the interruption tests). The ``type`` of an environment, a judge or a
    backend may also be one an installed plug-in registers (docs/plugins.md): the tagged unions
    are built from :mod:`llmpo.registry` when this module is imported.
store : path
    The SQLite store (created when missing).
baseline : str, optional
    The policy in use today, against which ``llmpo evaluate`` measures the certified policy's
    gain; default the first policy.
holdout : mapping, optional
    Tasks kept out of the selection run for ``llmpo evaluate``: ``{fraction: 0.2}`` (a split of
    the task ids fixed by the seed) or ``{tasks: FILE}`` (a task file; for replay only its ids
    are used). Live LLM and replay environments only; recorded in the store when the run starts.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llmpo.errors import ConfigError, looks_like_key
from llmpo.limits import name_problem
from llmpo.registry import (
    BACKENDS,
    JUDGES,
    REPLAY_FORMATS,
    SOURCES,
    config_models,
    judged_by_people,
)
from llmpo.yamlsafe import read_yaml

#: Said, instead of the value, when a configuration holds what looks like an API key.
KEY_IN_CONFIG = "this looks like a key (not printed); keys do not belong in a configuration file"
KEY_FIX = (
    "put it in an environment variable and name the variable (export MY_KEY=...; "
    "api_key_env: MY_KEY), and revoke the key if this file was shared"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _BatchOptions(_Strict):
    """Sending calls through the provider's batch API (docs/batch.md).

    With ``batch: true`` the calls made together (a round of generations, then its judge calls)
    go as one batch job, billed at the batch price; its status is polled every
    ``batch_poll_seconds``, doubling up to ``batch_max_poll_seconds``, and a job not finished
    within ``batch_timeout`` seconds fails the run (a resumed run polls it again).
    """

    batch: bool = False
    batch_poll_seconds: float = Field(default=5.0, gt=0.0, le=3600.0)
    batch_max_poll_seconds: float = Field(default=120.0, gt=0.0, le=3600.0)
    batch_timeout: float = Field(default=86400.0, gt=0.0, le=7 * 86400.0)


class BackendConfig(_BatchOptions):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp, …).

    ``api_key_env`` names the environment variable that holds the key; the key itself is read at
    run time and never stored. Without it a placeholder key is sent (local servers ignore it).
    ``batch: true`` sends calls through the Batch API (files and batches endpoints).
    """

    type: Literal["openai"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, min_length=1)

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _variable_name(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if looks_like_key(value):  # never echoed: the message goes to terminals and logs
            raise ConfigError(field="api_key_env", problem=KEY_IN_CONFIG, fix=KEY_FIX)
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is None:
            raise ConfigError(
                field="api_key_env",
                problem=f"must name an environment variable (letters, digits, _), got {value!r}",
                fix="write the variable's name, e.g. api_key_env: OPENAI_API_KEY",
            )
        return value


class AnthropicBackendConfig(_BatchOptions):
    """Anthropic's Messages API through the ``anthropic`` SDK (extra ``llmpo[anthropic]``).

    ``api_key_env`` (default ``ANTHROPIC_API_KEY``) names the environment variable with the key;
    ``base_url`` points at another server that speaks the Messages API. The API needs a length
    cap: a policy without ``max_tokens`` is sent ``default_max_tokens``. ``batch: true`` sends
    calls through the Message Batches API.
    """

    type: Literal["anthropic"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str = Field(default="ANTHROPIC_API_KEY", min_length=1)
    default_max_tokens: int = Field(default=1024, ge=1)


class LocalBackendConfig(_Strict):
    """A small model on the CPU, offline (extra ``llmpo[local]``): ``model: smollm2``.

    Requests arriving within ``batch_wait_seconds`` of each other are answered together, at
    most ``max_batch`` at a time, on ``threads`` CPU threads (default: the cores left idle by
    the machine's load when the model loads, at least one).
    """

    type: Literal["local"]
    model: Literal["smollm2"] = "smollm2"
    batch_wait_seconds: float = Field(default=0.05, ge=0.0, le=10.0)
    max_batch: int = Field(default=16, ge=1, le=256)
    threads: int | None = Field(default=None, ge=1, le=256)


def _tagged_union(members: dict[str, type[BaseModel]]) -> Any:
    """The tagged union (on ``type``) of the configuration models ``members``.

    Built when this module is imported, from a registry's built-ins and installed plug-ins
    (docs/plugins.md), so that a plug-in's section validates with its own fields and errors.
    """
    # Union[...] over a tuple built at run time: the X | Y syntax needs the members written out.
    return Annotated[Union[tuple(members.values())], Field(discriminator="type")]  # noqa: UP007


_BACKEND_MODELS = config_models(BACKENDS)
if TYPE_CHECKING:  # what a type checker sees: the built-ins (plug-ins are known at run time)
    AnyBackendConfig = BackendConfig | AnthropicBackendConfig | LocalBackendConfig
else:
    AnyBackendConfig = _tagged_union(_BACKEND_MODELS)


class ChatMessageConfig(_Strict):
    """One chat message of a policy's ``messages``: a role and Jinja2 content."""

    role: Literal["system", "user", "assistant"]
    content: str


class PolicyConfig(_Strict):
    """One policy: a name, with features or factor levels (structured space), and for live LLMs
    its backend, prompts and decoding parameters (``prompt_template`` is Jinja2 over the task's
    fields; default ``{{ prompt }}``). Instead of ``prompt_template``, ``messages`` may give the
    whole chat (each message's content Jinja2 over the task's fields; the last one the user's)."""

    name: str = Field(min_length=1)
    features: list[float] | None = None
    levels: dict[str, str | int | float | bool] | None = None
    backend: AnyBackendConfig | None = None
    system_prompt: str | None = None
    prompt_template: str | None = None
    messages: list[ChatMessageConfig] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: list[str] | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> PolicyConfig:
        if self.messages is not None and self.prompt_template is not None:
            raise ConfigError(
                field="messages",
                problem="is given together with prompt_template",
                fix="keep one: messages holds the whole chat, its last message the user's prompt",
            )
        if self.messages is not None and (not self.messages or self.messages[-1].role != "user"):
            raise ConfigError(
                field="messages",
                problem="must end with a user message",
                fix="put the prompt (role: user) last",
            )
        return self


class SyntheticEnvironmentConfig(_Strict):
    """Outcomes drawn from a known preference matrix (an instance file, docs/cli.md)."""

    type: Literal["synthetic"]
    instance: Path
    latency_seconds: float = Field(default=0.0, ge=0.0, le=60.0)


class ReplayEnvironmentConfig(_Strict):
    """Recorded judgments or pair counts, sampled with replacement.

    ``path`` may be omitted only for ``format: arena`` with the ``llmpo[arena]`` extra installed.
    """

    type: Literal["replay"]
    path: Path | None = None
    format: str = "auto"
    dense_subset: bool = False
    min_pair_records: int = Field(default=1, ge=1)
    latency_seconds: float = Field(default=0.0, ge=0.0, le=60.0)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        # Formats that hold judgments are registered (plug-ins too); counts are built in.
        if value in ("auto", "counts", "arena") or value in REPLAY_FORMATS:
            return value
        known = ", ".join(["auto", "counts", "arena", *REPLAY_FORMATS.names()])
        raise ConfigError(
            field="format",
            problem=f"unknown replay format {value!r}; known: {known}",
            fix="use one of these, or install the package that provides it "
            f"(entry-point group {REPLAY_FORMATS.group})",
        )

    @model_validator(mode="after")
    def _path_needed(self) -> ReplayEnvironmentConfig:
        if self.path is None and self.format != "arena":
            raise ConfigError(
                field="path",
                problem="is required for this format",
                fix=(
                    "add path: FILE (JSONL judgments or counts); only format: arena can read its "
                    "data from the installed leaderbot package"
                ),
            )
        return self


class ReferenceJudgeConfig(_Strict):
    """Compare each answer with the task's ``reference``: ``exact``, ``normalized`` (case,
    punctuation, articles and spacing ignored, number words as digits), ``contains`` (normalized
    reference among the normalized answer's words), ``numeric`` (last number of the answer
    within ``tolerance``) or ``embedding`` (cosine similarity of the answer's and the reference's
    all-MiniLM-L6-v2 embeddings at least ``similarity``; extra ``llmpo[embeddings]``)."""

    type: Literal["reference"]
    match: Literal["exact", "normalized", "contains", "numeric", "embedding"] = "normalized"
    tolerance: float = Field(default=1e-6, ge=0.0)
    similarity: float = Field(default=0.7, ge=-1.0, le=1.0)


class LLMJudgeConfig(_Strict):
    """Pairwise LLM-as-judge; ``prompt`` is a Jinja2 template (default
    :data:`llmpo.llm.judges.DEFAULT_JUDGE_PROMPT`) that must make the judge answer A, B or TIE."""

    type: Literal["llm"]
    backend: AnyBackendConfig
    order: Literal["random", "both"] = "random"
    prompt: str | None = None
    system_prompt: str | None = None
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=8, ge=1)


class PythonJudgeConfig(_Strict):
    """A user function ``module:function(task, answer_a, answer_b) -> 0 | 0.5 | 1`` (``path``:
    a folder searched first for the module; default the configuration's folder)."""

    type: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    path: Path | None = None


class HumanJudgeConfig(_Strict):
    """People judge in the browser (``llmpo serve``; extra ``llmpo[human]``). Each pending
    comparison is leased to one judge for ``lease_seconds``, then handed to another if abandoned;
    ``show_reference`` shows the task's reference answer beside the two answers."""

    type: Literal["human"]
    lease_seconds: float = Field(default=600.0, gt=0.0, le=86_400.0)
    show_reference: bool = True


_JUDGE_MODELS = config_models(JUDGES)
if TYPE_CHECKING:
    JudgeConfig = ReferenceJudgeConfig | LLMJudgeConfig | PythonJudgeConfig | HumanJudgeConfig
else:
    JudgeConfig = _tagged_union(_JUDGE_MODELS)


class PriceConfig(_Strict):
    """Price of a model in USD per million tokens.

    ``batch_input`` and ``batch_output`` are the prices of calls sent through a batch API
    (``batch: true``); by default half the listed ones, as OpenAI and Anthropic charge.
    """

    input: float = Field(ge=0.0)
    output: float = Field(ge=0.0)
    batch_input: float | None = Field(default=None, ge=0.0)
    batch_output: float | None = Field(default=None, ge=0.0)


class LLMEnvironmentConfig(_Strict):
    """Live LLM policies answering tasks, judged by ``judge``.

    ``tasks`` is a JSONL or CSV file (``id``, ``prompt`` or template fields, optional
    ``reference``); each comparison draws one task uniformly. Every call has a hard timeout of
    ``timeout_seconds`` and is retried up to ``max_retries`` times (exponential backoff from
    ``backoff_seconds``, with jitter, at most ``max_backoff_seconds`` ≤ 300 s, honouring
    ``Retry-After`` up to 60 s); ``requests_per_minute`` caps the
    calls started per minute on each endpoint and ``tokens_per_minute`` the tokens (prompt and
    answer; a call reserves its prompt and ``max_tokens`` before it starts). ``prices`` maps
    model names to USD per million input and output tokens. ``client_processes`` is the number
    of worker processes that make an endpoint's HTTP calls (0: in the runner's process); ``auto``
    uses one from 16 comparisons in flight on a machine with more than one CPU, where the
    ``openai`` SDK's CPU per call would otherwise slow the runner (``benchmarks/throughput.py``).
    """

    type: Literal["llm"]
    tasks: Path
    judge: JudgeConfig
    timeout_seconds: float = Field(default=60.0, gt=0.0, le=3600.0)
    max_retries: int = Field(default=6, ge=0, le=100)
    backoff_seconds: float = Field(default=1.0, ge=0.0, le=600.0)
    max_backoff_seconds: float = Field(default=60.0, ge=0.0, le=300.0)
    requests_per_minute: float | None = Field(default=None, gt=0.0)
    tokens_per_minute: float | None = Field(default=None, gt=0.0)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    client_processes: int | Literal["auto"] = "auto"

    @field_validator("client_processes", mode="before")
    @classmethod
    def _processes(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 64
        ):
            return value
        raise ConfigError(
            field="client_processes",
            problem=f"must be auto or a whole number from 0 to 64, got {value!r}",
            fix=(
                "write client_processes: auto (a worker process from 16 comparisons in flight), 0 "
                "(HTTP calls in the runner's process) or the number of worker processes"
            ),
        )


class HoldoutConfig(_Strict):
    """Held-out tasks: a ``fraction`` of the task ids drawn from the seed, or a ``tasks`` file.

    The selection run never sees a held-out task; ``llmpo evaluate`` uses only them.
    """

    fraction: float | None = Field(default=None, gt=0.0, lt=1.0)
    tasks: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> HoldoutConfig:
        if (self.fraction is None) == (self.tasks is None):
            raise ConfigError(
                field="holdout",
                problem="needs exactly one of fraction and tasks",
                fix="write holdout: {fraction: 0.2} or holdout: {tasks: heldout.jsonl}",
            )
        return self


_SOURCE_MODELS = config_models(SOURCES)
if TYPE_CHECKING:
    EnvironmentConfig = (
        SyntheticEnvironmentConfig | ReplayEnvironmentConfig | LLMEnvironmentConfig
    )
else:
    EnvironmentConfig = _tagged_union(_SOURCE_MODELS)


#: Policy fields a factor may vary.
FACTOR_FIELDS = (
    "backend",
    "system_prompt",
    "prompt_template",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "stop",
)


def expand_policy_factors(spec: Any) -> list[dict[str, Any]]:
    """Expand ``{base: {...}, factors: {field: levels}}`` into one policy per combination.

    A factor is a policy field (:data:`FACTOR_FIELDS`) with its levels: a list of values (each
    level named by its value) or a mapping of level names to values. Each policy is ``base`` with
    one level of every factor, named by its level names joined with ``/`` and carrying them as
    ``levels`` (so ``space: structured`` one-hot encodes them, the first level of each factor being
    the reference).

    Raises
    ------
    ConfigError
        With the ``field``, ``problem`` and ``fix`` of the configuration's own checks.
    """
    if not isinstance(spec, dict) or set(spec) - {"base", "factors"} or "factors" not in spec:
        raise ConfigError(
            field="policies",
            problem="a mapping of policies needs exactly 'factors' (and optionally 'base')",
            fix=(
                "write policies: {base: {backend: ...}, factors: {temperature: [0.2, 1.0]}}, or "
                "a list"
            ),
        )
    base, factors = spec.get("base") or {}, spec["factors"]
    if not isinstance(base, dict) or not isinstance(factors, dict) or not factors:
        raise ConfigError(
            field="policies.factors",
            problem="must be a non-empty mapping of fields to levels (and base a mapping)",
            fix="write factors: {temperature: [0.2, 1.0], system_prompt: {terse: ...}}",
        )
    named_levels: dict[str, list[tuple[str, Any]]] = {}
    for factor, levels in factors.items():
        if factor not in FACTOR_FIELDS:
            raise ConfigError(
                field="policies.factors",
                problem=f"{factor!r} is not a policy field a factor can vary",
                fix=f"use {', '.join(FACTOR_FIELDS)}",
            )
        if isinstance(levels, dict):
            pairs = [(str(name), value) for name, value in levels.items()]
        elif isinstance(levels, list):
            pairs = [(str(value), value) for value in levels]
        else:
            pairs = []
        names = [name for name, _ in pairs]
        if len(pairs) < 1 or len(set(names)) != len(names):
            raise ConfigError(
                field=f"policies.factors.{factor}",
                problem="needs distinct levels",
                fix="give a list of values or a mapping {level name: value}",
            )
        named_levels[factor] = pairs
    policies = []
    for combination in itertools.product(*named_levels.values()):
        chosen = list(zip(named_levels, combination, strict=True))
        policy = {**base, **{factor: value for factor, (_, value) in chosen}}
        policy["name"] = "/".join(name for name, _ in combination)
        policy["levels"] = {factor: name for factor, (name, _) in chosen}
        policies.append(policy)
    return policies


class ExperimentConfig(_Strict):
    """A validated experiment configuration; see the module docstring for the fields."""

    name: str | None = None
    policies: list[str | PolicyConfig] | None = None
    space: Literal["unstructured", "structured"] = "unstructured"
    features: list[str] | None = None
    delta: float = Field(default=0.05, gt=0.0, lt=0.5)
    epsilon: float = Field(default=0.0, ge=0.0, lt=0.5)
    strategy: str = "llmpo"
    threshold: str | None = None
    assume_condorcet: bool = False
    #: None: "decisive" for a new experiment; the stored statistic when resuming one.
    ties: Literal["decisive", "half"] | None = None
    max_comparisons: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0.0)
    batch_size: int = Field(default=1, ge=1, le=10_000)
    seed: int | None = Field(default=None, ge=0)
    environment: EnvironmentConfig
    store: Path = Path("llmpo.db")
    baseline: str | None = Field(default=None, min_length=1)
    holdout: HoldoutConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_factors(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("policies"), dict):
            return {**data, "policies": expand_policy_factors(data["policies"])}
        return data

    @model_validator(mode="after")
    def _policies_consistent(self) -> ExperimentConfig:
        names = self.policy_names
        if names is not None:
            if len(names) < 2:
                raise ConfigError(
                    field="policies",
                    problem="lists fewer than 2 policies",
                    fix="list at least 2, or omit it",
                )
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                self._refuse_duplicates(names, duplicates)
            for name in names:
                if (problem := name_problem(name)) is not None:
                    raise ConfigError(
                        field="policies",
                        problem=f"the name {name[:40]!r} {problem}",
                        fix="rename the policy",
                    )
            if self.baseline is not None and self.baseline not in names:
                raise ConfigError(
                    field="baseline",
                    problem=f"{self.baseline!r} is not one of the policies {names}",
                    fix="set it to the policy in use today, or omit it (default: the first policy)",
                )
        if self.holdout is not None and self.environment.type == "synthetic":
            raise ConfigError(
                field="holdout",
                problem="a synthetic environment has no tasks to hold out",
                fix=(
                    "remove holdout (every evaluation comparison of a synthetic instance is a "
                    "fresh draw)"
                ),
            )
        if self.space == "structured" and (
            self.policies is not None or self.environment.type != "synthetic"
        ):
            specs = [p for p in self.policies or [] if isinstance(p, PolicyConfig)]
            if not specs or len(specs) != len(self.policies or []):
                raise ConfigError(
                    field="policies",
                    problem="space: structured needs every policy as a mapping",
                    fix=(
                        "write each as {name: ..., features: [...]} or {name: ..., levels: "
                        "{factor: level}}"
                    ),
                )
            if any(p.features is None and p.levels is None for p in specs):
                raise ConfigError(
                    field="policies",
                    problem="a policy of a structured space has neither features nor levels",
                    fix="give each policy features: [...] or levels: {factor: level}",
                )
            self._check_features(specs)
        if self.environment.type == "llm":
            if self.policies is None:
                raise ConfigError(
                    field="policies",
                    problem="environment type llm needs its policies",
                    fix="list each policy as {name: ..., backend: {type: openai, model: ...}}",
                )
            for policy in self.policies:
                if isinstance(policy, str) or policy.backend is None:
                    name = policy if isinstance(policy, str) else policy.name
                    raise ConfigError(
                        field="policies",
                        problem=f"policy {name!r} has no backend",
                        fix=(
                            "give it backend: {type: openai, base_url: ..., model: ..., "
                            "api_key_env: ...}"
                        ),
                    )
        return self

    def _refuse_duplicates(self, names: list[str], duplicates: list[str]) -> None:
        """Refuse policies sharing a name: a policy listed twice, or different ones to rename."""
        entries = list(self.policies or [])
        differing = [
            name
            for name in duplicates
            if len({repr(e) for e, n in zip(entries, names, strict=True) if n == name}) > 1
        ]
        if differing:
            raise ConfigError(
                field="policies",
                problem=f"different policies share the names {differing}",
                fix=(
                    "rename one of each pair (the name identifies a policy in the store, the "
                    "report and ask/tell)"
                ),
            )
        raise ConfigError(
            field="policies",
            problem=f"policies listed twice: {duplicates}",
            fix="list each policy once",
        )

    def _check_features(self, specs: list[PolicyConfig]) -> None:
        if all(p.features is not None for p in specs):
            lengths = {len(p.features or []) for p in specs}
            if len(lengths) > 1 or 0 in lengths:
                raise ConfigError(
                    field="policies",
                    problem=f"feature vectors of lengths {sorted(lengths)}",
                    fix="give every policy a non-empty feature vector of the same length",
                )
            return
        if any(p.levels is None for p in specs):
            raise ConfigError(
                field="policies",
                problem="some policies give features and others levels",
                fix="use one kind for all",
            )
        factors = self.factors
        for policy in specs:
            missing = [f for f in factors if f not in (policy.levels or {})]
            extra = [f for f in policy.levels or {} if f not in factors]
            if missing or extra:
                problem = f"missing factors {missing}" if missing else f"unknown factors {extra}"
                raise ConfigError(
                    field="policies",
                    problem=f"policy {policy.name!r} has {problem}",
                    fix=f"give every policy one level of each factor in {factors}",
                )

    @property
    def factors(self) -> list[str]:
        """Factors of a structured space given by levels: ``features``, or in order of use."""
        if self.features is not None:
            return list(self.features)
        specs = [p for p in self.policies or [] if isinstance(p, PolicyConfig)]
        return list(dict.fromkeys(f for p in specs for f in p.levels or {}))

    @property
    def policy_names(self) -> list[str] | None:
        """The names of the configured policies, or None for every policy in the data."""
        if self.policies is None:
            return None
        return [p if isinstance(p, str) else p.name for p in self.policies]

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form saved with a run (paths as strings)."""
        return json.loads(self.model_dump_json())

    @property
    def judged_by_people(self) -> bool:
        """Whether people give the verdicts (the judge type's registration says so): such an
        experiment is served (``llmpo serve``), not run."""
        return judged_by_people(getattr(self.environment, "judge", None))

    @property
    def threshold_name(self) -> str:
        """The stopping threshold: ``threshold``, or the space's default when unset."""
        from llmpo.spaces import Structured, Unstructured  # numpy only when asked

        space = Structured if self.space == "structured" else Unstructured
        return self.threshold or space.default_threshold

    @property
    def ties_mode(self) -> str:
        """The statistic's treatment of ties: ``ties``, or ``"decisive"`` when unset."""
        return self.ties or "decisive"


#: Statistic of experiments stored before the ``ties`` option existed (ties counted ½).
LEGACY_TIES = "half"
#: Stopping threshold of structured experiments stored without one (before thresholds were
#: recorded): the structured space's default then and now (docs/structured-stopping.md).
LEGACY_STRUCTURED_THRESHOLD = "universal"


def stored_config(data: dict[str, Any]) -> ExperimentConfig:
    """The configuration of a stored experiment, with the statistic it was created with.

    A configuration stored before the ``ties`` option existed has no ``ties`` key: its
    experiment counted ties as half a win, so it resumes with ``ties="half"``
    (:func:`created_before_ties`). New experiments record their stopping threshold; a
    structured one stored without it was created with the default of the time, ``universal``,
    and resumes with it. Raises pydantic's ValueError when unreadable.
    """
    config = ExperimentConfig.model_validate(data)
    if created_before_ties(data):
        config = config.model_copy(update={"ties": LEGACY_TIES})
    if config.space == "structured" and config.threshold is None:
        config = config.model_copy(update={"threshold": LEGACY_STRUCTURED_THRESHOLD})
    return config


def created_before_ties(data: dict[str, Any]) -> bool:
    """True for a stored configuration written before the ``ties`` option (no ``ties`` key)."""
    return "ties" not in data


#: The tagged unions of the configuration: the key that holds one, and its members by tag
#: (generated from the registries, plug-ins included).
_UNIONS: dict[str, dict[str, type[BaseModel]]] = {
    "environment": _SOURCE_MODELS,
    "judge": _JUDGE_MODELS,
    "backend": _BACKEND_MODELS,
}

#: Union member names that pydantic inserts in error locations.
_UNION_TAGS = tuple(sorted({tag for members in _UNIONS.values() for tag in members}))


def _one_of(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


#: Fix suggested for each kind of pydantic error.
_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove it, or fix its spelling",
    "literal_error": "use one of the allowed values",
    "union_tag_invalid": "use one of the expected types",
    "union_tag_not_found": "add a type field ("
    + "; ".join(f"{key}: {_one_of(list(members))}" for key, members in _UNIONS.items())
    + ")",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "less_than_equal": "use a smaller value",
    "int_parsing": "write a whole number",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
}


def _unknown_key_fix(raw: list[str]) -> str:
    """The fix for an unknown key at ``raw`` (pydantic's location, union tags included).

    Suggests a known field of the mapping's own model (its union member, when the mapping is
    one: ``path`` under ``type: synthetic`` is not "corrected" to the replay field ``path``),
    and says so when the key belongs to another type of the same union.
    """
    *parent, key = raw
    members: dict[str, type[BaseModel]] = {}
    model: type[BaseModel] | None = None
    if not parent:
        model = ExperimentConfig
    elif len(parent) >= 2 and parent[-2] in _UNIONS and parent[-1] in _UNIONS[parent[-2]]:
        members = _UNIONS[parent[-2]]
        model = members[parent[-1]]
    elif parent[-1] == "holdout":
        model = HoldoutConfig
    elif len(parent) >= 2 and parent[-2] == "prices":
        model = PriceConfig
    elif parent[-1] == "PolicyConfig" or parent[0] == "policies":
        model = PolicyConfig
    if model is None:
        return "remove it"
    known = [name for name in model.model_fields if name != key]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    if close:
        return f"did you mean '{close[0]}'"
    owners = [tag for tag, member in members.items() if key in member.model_fields]
    if owners:
        tag = parent[-1]
        return (
            f"remove it: '{key}' belongs to type {' or '.join(owners)}, not {tag}; "
            f"type {tag} knows " + ", ".join(known)
        )
    return "remove it; known fields: " + ", ".join(known)


def _origin(error: dict[str, Any], source: str, overridden: set[str]) -> str:
    """Where a bad value came from: the file, or the command-line flag that overrode it."""
    location = [str(part) for part in error["loc"] if str(part) not in _UNION_TAGS]
    for key in overridden:
        if location[: len(key.split("."))] == key.split("."):
            return f"{source} (overridden by --{key.split('.')[-1].replace('_', '-')})"
    return source


def _holds_a_key(location: list[str], value: object) -> bool:
    """Whether a rejected field is a secret by its name (``api_key``, ``token``, …) or its value."""
    name = location[-1].lower() if location else ""
    secret_name = bool({"key", "apikey", "token", "secret", "password"} & set(name.split("_")))
    return (secret_name and name != "api_key_env" and value is not None) or (
        isinstance(value, str) and looks_like_key(value)
    )


def _describe(error: dict[str, Any], source: str) -> str:
    location = [
        str(part) for part in error["loc"] if not str(part).startswith(("function-", "tagged-"))
    ]
    # Drop union member names that pydantic inserts (e.g. "replay" under environment).
    location = [part for part in location if part not in (*_UNION_TAGS, "str", "PolicyConfig")]
    field = ".".join(location) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    fix = _FIXES.get(error["type"], "correct the value")
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError) and cause.problem is not None:
        # Our own validators raise ConfigError(field=, problem=, fix=).
        sub_field = cause.field or ""
        field = ".".join(location if location[-1:] == [sub_field] else [*location, sub_field])
        return f"{source}: field '{field}': {cause.problem}. Fix: {cause.fix}."
    if _holds_a_key(location, error.get("input")):
        return f"{source}: field '{field}': {KEY_IN_CONFIG}. Fix: {KEY_FIX}."
    if error["type"] == "extra_forbidden":
        fix = _unknown_key_fix([str(part) for part in error["loc"]])
    if error["type"] == "union_tag_invalid":
        fix = (
            f"set {field}.type to one of {error.get('ctx', {}).get('expected_tags', '')}, or "
            "install the package that provides this type (docs/plugins.md)"
        )
    got = "" if error["type"] == "missing" else f" (got {error.get('input')!r})"
    if isinstance(error.get("input"), dict):
        got = ""
    return f"{source}: field '{field}': {message}{got}. Fix: {fix}."


def _merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(data)
    for dotted, value in overrides.items():
        if value is None:
            continue
        target = merged
        *parents, leaf = dotted.split(".")
        for parent in parents:
            child = target.get(parent)
            target[parent] = dict(child) if isinstance(child, dict) else {}
            target = target[parent]
        target[leaf] = value
    return merged


def _absolute(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _with_absolute_paths(section: BaseModel, base: Path) -> BaseModel:
    """``section`` with every path in it (its nested sections' too) made absolute from ``base``.

    Generic over the fields, so that a plug-in's paths resolve like the built-ins'. A Python
    judge without ``path`` looks in the configuration's folder.
    """
    if isinstance(section, PythonJudgeConfig) and section.path is None:
        section = section.model_copy(update={"path": Path(".")})
    update: dict[str, Any] = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, Path):
            update[name] = _absolute(value, base)
        elif isinstance(value, BaseModel):
            update[name] = _with_absolute_paths(value, base)
    return section.model_copy(update=update)


def parse_config(
    data: Any,
    source: str = "<config>",
    base_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Validate a configuration mapping, apply overrides and make its paths absolute.

    Parameters
    ----------
    data : Any
        The parsed YAML document.
    source : str
        Where it came from, used in error messages.
    base_dir : Path, optional
        Folder relative paths refer to (the config file's folder); default the working directory.
    overrides : dict, optional
        Dotted field names (``"environment.dense_subset"``) to values; None values are ignored.
        They take precedence over ``data``.

    Raises
    ------
    ConfigError
        Naming the source, the field and the fix, one line per problem.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of fields (space, delta, environment, …), "
            f"got {type(data).__name__}. Fix: see examples/ for a complete file."
        )
    try:
        config = ExperimentConfig.model_validate(_merge(data, overrides or {}))
    except ValidationError as error:
        given = {key for key, value in (overrides or {}).items() if value is not None}
        errors: list[dict[str, Any]] = [dict(e) for e in error.errors()]
        # A policy written as a mapping also fails the union's string branch; that error would
        # only hide the mapping's own (a misspelt key, say).
        errors = [
            e
            for e in errors
            if not (
                e["type"] == "string_type"
                and e["loc"][-1:] == ("str",)
                and isinstance(e.get("input"), dict)
            )
        ] or errors
        # A misspelt key first: the "field required" that it usually causes comes after.
        errors.sort(key=lambda e: e["type"] != "extra_forbidden")
        lines = [_describe(e, _origin(e, source, given)) for e in errors]
        raise ConfigError("\n".join(lines)) from None
    base = (base_dir or Path.cwd()).resolve()
    environment = _with_absolute_paths(config.environment, base)
    holdout = config.holdout
    if holdout is not None and holdout.tasks is not None:
        holdout = holdout.model_copy(update={"tasks": _absolute(holdout.tasks, base)})
    return config.model_copy(
        update={
            "environment": environment,
            "store": _absolute(config.store, base),
            "holdout": holdout,
        }
    )


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read, validate and resolve a YAML configuration file.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    overrides : dict, optional
        Command-line values by dotted field name; they win over the file.

    Raises
    ------
    ConfigError
        When the file cannot be read, is not valid YAML, or holds an invalid field.
    """
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        data = {}
    return parse_config(data, str(path), path.parent, overrides)
