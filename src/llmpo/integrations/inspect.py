"""Inspect (inspect-ai) evaluation logs as replay data, and llmpo's selection inside Inspect.

**Replay.** ``environment: {type: replay, format: inspect, path: logs/}`` reads Inspect ``.eval``
(or ``.json``) logs — one file or a directory of them — with ``inspect_ai.log.read_eval_log``.
Every log is one policy's run over a dataset; logs of several models or prompts over the same
samples become pairwise outcomes:

* a sample is the same sample in two logs when it has the same id in a dataset of the same name;
* each sample's score is the log's first scorer's value, made a number as Inspect's own
  ``value_to_float`` does (``C``/``I``/``P``/``N`` → 1/0/0.5/0, ``yes``/``true`` → 1, numbers
  as they are);
* on each sample, every two policies that were both scored are one comparison per epoch (the
  i-th epoch of one against the i-th of the other): won by the higher score, tied on equal ones.

**Policy names.** A policy is a log's model plus whatever tells apart the logs of that model:
its task's name, its task arguments, the parameters of its solver steps (a ``system_message``
step's template shows as ``system``) and the generation settings it set (``temperature`` …).
A model run under one setting only is named by the model alone (``openai/gpt-4o``); otherwise
the settings that differ follow in brackets, each value cut to 40 characters
(``openai/gpt-4o [system=Be careful.]``). Logs whose model and settings are all equal are one
policy run twice: their records add up.

**Selection inside Inspect.** :func:`select_policy_task` builds an Inspect ``Task`` in which
llmpo's :class:`~llmpo.experiment.Experiment` chooses which two candidate policies answer each
sample, Inspect's models generate the answers (so its providers, retries, caching and limits
apply), an Inspect scorer scores both (higher score wins) and Inspect's early-stopping hook
skips the remaining samples once llmpo certifies; :func:`select_policy` runs it.

inspect-ai is the optional extra ``llmpo[inspect]``, imported only when used.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpo.environments.replay import Judgment, ReplayError, judgments_from_scores
from llmpo.errors import ConfigError, DataError
from llmpo.experiment import Experiment, Result

#: The longest setting value shown in a policy name.
_VALUE_CHARS = 40


class InspectError(ReplayError):
    """Inspect logs llmpo cannot use; the message names the file, the field and the fix."""


def _inspect_log_module() -> Any:
    try:
        import inspect_ai.log as log
    except ImportError:
        raise InspectError(
            "format: inspect needs the inspect-ai package. Fix: pip install 'llmpo[inspect]'"
        ) from None
    return log


def _log_files(path: Path, log: Any) -> list[Any]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InspectError(f"{path}: no such file or directory. Fix: point path at Inspect logs")
    files = log.list_eval_logs(str(path), recursive=True, descending=False)
    if not files:
        raise InspectError(
            f"{path}: holds no Inspect log (.eval or .json). Fix: point path at the log "
            "directory of inspect eval (--log-dir)"
        )
    return list(files)


def _short(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _settings(eval_spec: Any, plan: Any) -> dict[str, str]:
    """What a log's run set, beyond its model: task, task arguments, solver steps, generation."""
    settings = {"task": str(eval_spec.task)}
    for name, value in sorted((eval_spec.task_args or {}).items()):
        settings[name] = _short(value)
    for step in getattr(plan, "steps", None) or []:
        for name, value in sorted((step.params or {}).items()):
            key = (
                "system"
                if (step.solver, name) == ("system_message", "template")
                else (f"{step.solver}.{name}")
            )
            settings[key] = _short(value)
    config = getattr(plan, "config", None)
    for name, value in sorted((config.model_dump(exclude_none=True) if config else {}).items()):
        settings[name] = _short(value)
    return settings


def policy_names(descriptors: list[tuple[str, dict[str, str]]]) -> list[str]:
    """Readable policy names of (model, settings) pairs, one per pair (module docstring).

    The settings that differ between the pairs of the same model follow it in brackets; a model
    with one distinct setting is named alone. Equal pairs get equal names.
    """
    by_model: dict[str, list[dict[str, str]]] = {}
    for model, settings in descriptors:
        by_model.setdefault(model, []).append(settings)
    differing: dict[str, list[str]] = {}
    for model, variants in by_model.items():
        keys = sorted({k for v in variants for k in v}, key=_key_order)
        differing[model] = [k for k in keys if len({v.get(k) for v in variants}) > 1]
    names = []
    for model, settings in descriptors:
        keys = differing[model]
        label = ", ".join(f"{k}={settings.get(k, '-')}" for k in keys)
        names.append(f"{model} [{label}]" if label else model)
    return names


def _key_order(key: str) -> tuple[int, str]:
    # The settings people vary most come first in a name.
    first = {"system": 0, "task": 1}
    return (first.get(key, 2), key)


def _score_value(score: Any, where: str) -> float:
    from inspect_ai.scorer import value_to_float

    value = score.value
    if isinstance(value, list | dict):
        raise InspectError(
            f"{where}: the score is a {type(value).__name__}, not one value. Fix: score each "
            "sample with one value (a number or C/I/P/N), or reduce it in the scorer"
        )
    return float(value_to_float()(value))


def _records(log_file: Any, log: Any) -> Iterator[tuple[str, str, dict[str, str], float, str]]:
    """(sample key, model, settings, score, scorer) of every scored sample of one log, in epoch
    order."""
    where = str(getattr(log_file, "name", log_file))
    try:
        eval_log = log.read_eval_log(log_file)
    except Exception as error:  # inspect raises many kinds on a file that is not a log
        raise InspectError(
            f"{where}: not a readable Inspect log ({type(error).__name__}: {error}). Fix: "
            "point path at the .eval/.json files inspect eval wrote"
        ) from None
    spec = eval_log.eval
    settings = _settings(spec, eval_log.plan)
    dataset = (spec.dataset.name or "") if spec.dataset else ""
    samples = sorted(eval_log.samples or [], key=lambda s: (int(s.epoch), str(s.id)))
    for sample in samples:
        if sample.error is not None or not sample.scores:
            continue
        scorer, score = next(iter(sample.scores.items()))
        value = _score_value(score, f"{where}: sample {sample.id}, scorer {scorer}")
        key = f"{dataset}/{sample.id}" if dataset else str(sample.id)
        yield key, str(spec.model), settings, value, f"{scorer} ({where})"


def read_logs(path: str | Path) -> list[Judgment]:
    """Read Inspect logs (a file or a directory) as recorded judgments (module docstring).

    Raises
    ------
    InspectError
        When inspect-ai is missing, a file is not a log, a score is not one value, or no sample
        was scored by two policies.
    """
    log = _inspect_log_module()
    path = Path(path)
    runs = [list(_records(file, log)) for file in _log_files(path, log)]
    scorers = {record[4].split(" (")[0]: record[4] for run in runs for record in run}
    if len(scorers) > 1:
        raise InspectError(
            f"{path}: the logs are scored by different scorers ({', '.join(scorers.values())}), "
            "so their scores do not compare. Fix: replay logs of one scorer only"
        )
    descriptors = [(r[0][1], r[0][2]) for r in runs if r]
    names = iter(policy_names(descriptors))
    scores: dict[str, dict[str, list[float]]] = {}  # sample → policy → scores, epoch order
    for run in (r for r in runs if r):
        name = next(names)
        for key, _, _, value, _ in run:
            scores.setdefault(key, {}).setdefault(name, []).append(value)
    judgments = judgments_from_scores(scores, "inspect-score")
    if not judgments:
        raise InspectError(
            f"{path}: no sample was scored in logs of two policies. Fix: run inspect eval with "
            "at least two models or prompts on the same samples, with a scorer"
        )
    return judgments


# ---- llmpo's selection as an Inspect task ---------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One candidate policy of :func:`select_policy_task`.

    Attributes
    ----------
    system_message : str, optional
        A system message (an Inspect ``system_message`` template: ``{field}`` takes the sample's
        metadata) put before the sample's input.
    model : str or inspect_ai.model.Model, optional
        The model that answers (``"openai/gpt-4o"``); None: the task's model (``--model``).
    """

    system_message: str | None = None
    model: Any = None


@dataclass(frozen=True)
class InspectSelection:
    """What :func:`select_policy` concluded: llmpo's result and the Inspect log of the run."""

    result: Result
    log: Any


def select_policy_task(
    dataset: Any,
    candidates: Mapping[str, Candidate],
    scorer: Any,
    *,
    delta: float = 0.05,
    max_comparisons: int = 1000,
    seed: int | None = 0,
    name: str = "llmpo_select",
) -> Any:
    """An Inspect task in which llmpo certifies the best of ``candidates`` at confidence 1 − δ.

    Each sample run is one comparison: llmpo's :class:`~llmpo.experiment.Experiment` names the
    two candidates to compare next, both answer the sample through Inspect's models, the
    ``scorer`` scores both answers and the higher score wins (equal scores tie). Inspect's
    early-stopping hook skips every sample scheduled after llmpo certifies (or spends
    ``max_comparisons``); the dataset is cycled over as many epochs as the budget needs.
    Comparisons that were running when llmpo stopped finish (and are paid for) but are not told.

    The log holds, per sample, the pair, both answers and scores (score ``llmpo_outcome``:
    1 when the first of the pair won, 0.5 for a tie, 0 otherwise), and in
    ``results.early_stopping.metadata`` llmpo's verdict: ``winner``, ``certified``,
    ``stop_reason``, ``comparisons``, ``generation_calls``, ``tokens`` and ``delta``.
    The task keeps its own experiment: build a new task for each run.

    Parameters
    ----------
    dataset : inspect_ai.dataset.Dataset or list of Sample
        The samples the candidates answer.
    candidates : mapping of str to Candidate
        At least two named candidate policies.
    scorer : inspect_ai.scorer.Scorer
        Scores one answer; its value is made a number as Inspect's ``value_to_float`` does.
    delta, max_comparisons, seed
        As for :class:`~llmpo.experiment.Experiment`.
    name : str
        The task's name in the log.

    Raises
    ------
    ValueError
        With fewer than two candidates, an empty dataset, or a parameter out of range.
    """
    experiment = Experiment(
        list(candidates), delta=delta, max_comparisons=max_comparisons, seed=seed
    )
    return _selection_task(experiment, dataset, dict(candidates), scorer, name)


def select_policy(
    dataset: Any,
    candidates: Mapping[str, Candidate],
    scorer: Any,
    *,
    model: Any = None,
    delta: float = 0.05,
    max_comparisons: int = 1000,
    seed: int | None = 0,
    **eval_args: Any,
) -> InspectSelection:
    """Run :func:`select_policy_task` with ``inspect_ai.eval`` and return llmpo's result.

    ``model`` is the task's model (for candidates without one); ``eval_args`` go to
    ``inspect_ai.eval`` (``log_dir``, ``display``, ``max_samples``, cost and token limits …).
    """
    from inspect_ai import eval as inspect_eval

    experiment = Experiment(
        list(candidates), delta=delta, max_comparisons=max_comparisons, seed=seed
    )
    task = _selection_task(experiment, dataset, dict(candidates), scorer, "llmpo_select")
    (log,) = inspect_eval(task, model=model, **eval_args)
    return InspectSelection(experiment.result, log)


def _selection_task(
    experiment: Experiment,
    dataset: Any,
    candidates: dict[str, Candidate],
    judge: Any,
    name: str,
) -> Any:
    from inspect_ai import Task
    from inspect_ai.model import get_model
    from inspect_ai.scorer import Score, scorer, value_to_float
    from inspect_ai.solver import solver, system_message
    from inspect_ai.util import EarlyStop

    names = list(candidates)
    samples = list(dataset)
    if len(names) < 2:
        raise ConfigError(f"candidates: need at least two, got {len(names)}")
    if not samples:
        raise DataError("dataset: holds no sample")
    to_float = value_to_float()
    spent = {"generation_calls": 0, "tokens": 0}

    async def answer(state: Any, candidate: Candidate, generate: Any) -> Any:
        branch = copy.deepcopy(state)
        if candidate.system_message is not None:
            branch = await system_message(candidate.system_message)(branch, generate)
        if candidate.model is None:
            branch = await generate(branch)
        else:
            branch.output = await get_model(candidate.model).generate(branch.messages)
            branch.messages.append(branch.output.message)
        spent["generation_calls"] += 1
        usage = branch.output.usage
        spent["tokens"] += usage.total_tokens if usage is not None else 0
        return branch

    @solver(name="llmpo_duel")
    def duel() -> Any:
        async def solve(state: Any, generate: Any) -> Any:
            pairs = experiment.ask()
            if not pairs:  # llmpo stopped while this sample waited to start
                state.completed = True
                return state
            a, b = pairs[0]
            answers = [await answer(state, candidates[names[i]], generate) for i in (a, b)]
            scores = [await judge(s, state.target) for s in answers]
            if any(s is None for s in scores):
                raise DataError(
                    f"scorer: gave no score to an answer of sample {state.sample_id}. Fix: use "
                    "a scorer that scores every answer"
                )
            values = [to_float(s.value) for s in scores]
            outcome = 1.0 if values[0] > values[1] else 0.0 if values[0] < values[1] else 0.5
            told = not experiment.done
            if told:
                experiment.tell(a, b, outcome)
            state.output = answers[0 if outcome >= 0.5 else 1].output
            state.metadata["llmpo"] = {
                "pair": [names[a], names[b]],
                "answers": [s.output.completion for s in answers],
                "scores": values,
                "outcome": outcome,
                "told": told,
            }
            return state

        return solve

    @scorer(name="llmpo_outcome", metrics=[])
    def outcome_scorer() -> Any:
        async def score(state: Any, target: Any) -> Any:
            duel = state.metadata.get("llmpo")
            if duel is None:
                return None
            first, second = duel["pair"]
            return Score(
                value=duel["outcome"],
                answer=first if duel["outcome"] >= 0.5 else second,
                explanation=f"{first} scored {duel['scores'][0]}, {second} {duel['scores'][1]}"
                + ("" if duel["told"] else " (after llmpo stopped: not told)"),
            )

        return score

    class StopWhenDone:
        """Inspect's early-stopping hook: skip every sample once llmpo has stopped."""

        async def start_task(self, task: Any, samples: Any, epochs: int) -> str:
            return "llmpo"

        async def schedule_sample(self, id: str | int, epoch: int) -> Any:
            if not experiment.done:
                return None
            result = experiment.result
            return EarlyStop(
                id=id, epoch=epoch, reason=f"llmpo {result.stop_reason}: {result.best_name}"
            )

        async def complete_sample(self, id: str | int, epoch: int, scores: Any) -> None:
            return None

        async def complete_task(self) -> dict[str, Any]:
            result = experiment.result
            return {
                "winner": result.best_name,
                "certified": result.certified,
                "stop_reason": result.stop_reason,
                "comparisons": result.n_comparisons,
                "delta": experiment.delta,
                **spent,
            }

    budget = experiment.max_comparisons or len(samples)
    return Task(
        name=name,
        dataset=samples,
        solver=duel(),
        scorer=outcome_scorer(),
        epochs=math.ceil(budget / len(samples)),
        early_stopping=StopWhenDone(),
    )
