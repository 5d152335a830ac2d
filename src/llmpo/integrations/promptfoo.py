"""promptfoo configurations and results, read as llmpo experiments and replay data.

``llmpo import promptfooconfig.yaml`` turns a promptfoo configuration into an llmpo one:

* every ``prompt`` × ``provider`` becomes a policy named ``PROMPT/PROVIDER``, written as a
  product of two factors when the prompts differ only by their template and the providers only
  by their endpoint (``space: structured`` can then share what it learns across the product),
  otherwise as a list of policies carrying the same two factor levels;
* every test (after ``defaultTest`` is merged in and list-valued ``vars`` are expanded, as
  promptfoo does) becomes a task whose fields are the test's ``vars``;
* the assertions choose the judge: ``equals``, ``contains``/``icontains`` and ``similar`` carry a
  reference answer, so a test set in which every test has one of the same kind is judged by the
  ``reference`` judge; ``llm-rubric`` and the other model-graded types become a pairwise ``llm``
  judge that reads the rubric; anything else is named as unsupported (llmpo compares two answers,
  it does not check one against a rule).

promptfoo's results file (``promptfoo eval -o results.json``) replays as recorded judgments
(``environment: {type: replay, format: promptfoo, path: results.json}``): on each test, every two
policies that were both scored are one comparison, won by the higher score and tied on equal
scores.

Nothing here runs promptfoo; only its documented file formats are read.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmpo.environments.replay import Judgment, ReplayError, judgments_from_scores
from llmpo.llm.judges import ANSWERS_AND_REPLY

#: promptfoo assertion types that carry a reference answer, and the reference judge's match.
REFERENCE_ASSERTIONS = {
    "equals": "exact",
    "contains": "contains",
    "icontains": "contains",
    "similar": "embedding",
}
#: Model-graded promptfoo assertion types: their ``value`` is a rubric for an LLM judge.
RUBRIC_ASSERTIONS = frozenset(
    {"llm-rubric", "g-eval", "model-graded-closedqa", "factuality", "answer-relevance"}
)
#: Where promptfoo's providers of OpenAI-compatible APIs listen by default.
_DEFAULT_BASE_URLS = {"ollama": "http://localhost:11434/v1"}
#: promptfoo's default similarity threshold for ``similar``.
_SIMILAR_THRESHOLD = 0.75
#: Fields of a task that are not ``vars`` shown to the judge.
_TASK_META = ("id", "reference", "rubric")

#: The judge prompt of an imported configuration: the task is the test's variables, since each
#: policy renders its own prompt from them; the rubric, when the test has one, comes first.
IMPORTED_JUDGE_PROMPT = """\
Two assistants answered the same request. Decide which answer is better{% if task.rubric %}
according to this rubric: {{ task.rubric }}{% else %}: more correct first, then more helpful and
concise{% endif %}. Ignore the order in which they are shown and their length.

[Request variables]
{% for name, value in task.items() if name not in ("id", "reference", "rubric") -%}
{{ name }}: {{ value }}
{% endfor %}
""" + ANSWERS_AND_REPLY


class PromptfooError(ReplayError):
    """A promptfoo file llmpo cannot read; the message names the file, the field and the fix."""


@dataclass
class ImportedConfig:
    """An llmpo configuration made from a promptfoo one.

    Attributes
    ----------
    config : dict
        The llmpo configuration (YAML-ready); ``environment.tasks`` names the task file.
    tasks : list of dict
        One task per promptfoo test (``id`` and the test's ``vars``; ``reference`` or ``rubric``
        when the judge uses them).
    notes : list of str
        What was mapped approximately or left out, one sentence each, for the user to read.
    """

    config: dict[str, Any]
    tasks: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Prompt:
    label: str
    template: str
    system: str | None = None


@dataclass(frozen=True)
class _Provider:
    label: str
    backend: dict[str, Any]
    decoding: tuple[tuple[str, Any], ...] = ()


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise PromptfooError(f"{path}: cannot read the {what} ({error.strerror})") from None
    except UnicodeDecodeError:
        raise PromptfooError(f"{path}: the {what} is not UTF-8 text") from None


def _load_data(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        if path.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise PromptfooError(f"{path}: the {what} is not valid ({error})") from None


def _file_ref(value: Any, base: Path) -> Path | None:
    if isinstance(value, str) and value.startswith("file://"):
        return (base / value.removeprefix("file://")).resolve()
    return None


def _chat_prompt(messages: Any, label: str, where: str) -> _Prompt:
    """A chat prompt of one optional system message and one user message."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise PromptfooError(f"{where}: a chat prompt must be a list of {{role, content}} objects")
    roles = [m.get("role") for m in messages]
    if roles not in (["user"], ["system", "user"]):
        raise PromptfooError(
            f"{where}: chat prompts with roles {roles} are not supported. Fix: use one user "
            "message, optionally after one system message"
        )
    system = str(messages[0]["content"]) if roles[0] == "system" else None
    return _Prompt(label, str(messages[-1].get("content", "")), system)


def _parse_prompts(value: Any, base: Path, where: str) -> list[_Prompt]:
    entries = value if isinstance(value, list) else [value]
    prompts: list[_Prompt] = []
    for entry in entries:
        label = None
        if isinstance(entry, dict):
            label = entry.get("label")
            entry = entry.get("raw", entry.get("id"))
        if not isinstance(entry, str) or not entry.strip():
            raise PromptfooError(f"{where}: prompts: each prompt must be text, got {entry!r}")
        name = str(label) if label else f"p{len(prompts) + 1}"
        path = _file_ref(entry, base)
        if path is None and entry.lstrip().startswith("["):
            try:
                prompts.append(_chat_prompt(json.loads(entry), name, where))
                continue
            except json.JSONDecodeError:
                pass
        if path is None:
            prompts.append(_Prompt(name, entry))
        elif path.suffix.lower() == ".json":
            prompts.append(_chat_prompt(_load_data(path, "chat prompt"), name, str(path)))
        elif path.suffix.lower() in (".txt", ".md", ""):
            text = _read_text(path, "prompt")
            # promptfoo splits a prompt file on lines holding only "---".
            parts = [p.strip("\n") for p in str(text).split("\n---\n") if p.strip()]
            for number, part in enumerate(parts, start=1):
                part_label = name if len(parts) == 1 else f"{name}.{number}"
                if not label:
                    part_label = f"p{len(prompts) + 1}"
                prompts.append(_Prompt(part_label, part))
        else:
            raise PromptfooError(
                f"{where}: prompt {entry!r}: prompt functions ({path.suffix}) are not supported. "
                "Fix: write the prompt as text or as a JSON chat prompt"
            )
    if not prompts:
        raise PromptfooError(f"{where}: prompts: none given. Fix: list at least one prompt")
    return prompts


def _model_of(provider_id: str) -> str:
    """The model of a provider id: ``openai:chat:gpt-4o`` and ``openai:gpt-4o`` → ``gpt-4o``."""
    parts = provider_id.split(":")
    return ":".join(parts[2:] if len(parts) > 2 and parts[1] == "chat" else parts[1:])


def _parse_provider(entry: Any, where: str) -> _Provider | str:
    """A provider, or the reason it cannot be one (a sentence)."""
    options: dict[str, Any] = {}
    label = None
    if isinstance(entry, dict):
        if "id" not in entry and len(entry) == 1:  # {"openai:gpt-4o": {config: ...}}
            (provider_id, options), = entry.items()
            options = options if isinstance(options, dict) else {}
        else:
            provider_id, options = entry.get("id"), entry
        label = options.get("label")
    else:
        provider_id = entry
    if not isinstance(provider_id, str):
        raise PromptfooError(f"{where}: providers: each provider needs an id, got {entry!r}")
    kind = provider_id.split(":")[0]
    if kind not in ("openai", "ollama") or ":" not in provider_id:
        return (
            f"provider {provider_id!r} is not supported (llmpo speaks to OpenAI-compatible chat "
            "endpoints: openai:MODEL, openai:chat:MODEL with config.apiBaseUrl, ollama:chat:MODEL)"
        )
    if provider_id.split(":")[1] in ("completion", "embedding", "embeddings", "assistant"):
        return f"provider {provider_id!r}: only chat models are supported"
    model = _model_of(provider_id)
    config = options.get("config") or {}
    if not isinstance(config, dict):
        raise PromptfooError(f"{where}: provider {provider_id!r}: config must be a mapping")
    backend: dict[str, Any] = {"type": "openai", "model": model}
    base_url = config.get("apiBaseUrl") or _DEFAULT_BASE_URLS.get(kind)
    if not base_url and config.get("apiHost"):
        base_url = f"https://{config['apiHost']}/v1"
    if base_url:
        backend["base_url"] = str(base_url)
    # OpenAI itself needs its key; a server of one's own (apiBaseUrl) usually needs none.
    key_env = config.get("apiKeyEnvar") or (
        "OPENAI_API_KEY" if kind == "openai" and not base_url else None
    )
    if key_env:
        backend["api_key_env"] = str(key_env)
    decoding = tuple(
        (ours, config[theirs])
        for theirs, ours in (
            ("temperature", "temperature"),
            ("max_tokens", "max_tokens"),
            ("top_p", "top_p"),
            ("seed", "seed"),
            ("stop", "stop"),
        )
        if config.get(theirs) is not None
    )
    return _Provider(str(label or model), backend, decoding)


def _expand_vars(variables: dict[str, Any]) -> list[dict[str, Any]]:
    """promptfoo runs a test once per combination of its list-valued vars."""
    names = list(variables)
    choices = [v if isinstance(v, list) else [v] for v in variables.values()]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]


def _csv_assertion(text: str) -> dict[str, Any]:
    """promptfoo's ``__expected`` shorthand: ``type: value``, or a bare value for ``equals``."""
    kind, sep, value = text.partition(":")
    if sep and kind.strip() in (*REFERENCE_ASSERTIONS, *RUBRIC_ASSERTIONS, "regex", "python"):
        return {"type": kind.strip(), "value": value.strip()}
    return {"type": "equals", "value": text}


def _tests_from_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() != ".csv":
        data = _load_data(path, "tests")
        return data if isinstance(data, list) else [data]
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PromptfooError(f"{path}: cannot read the tests ({error})") from None
    tests = []
    for row in rows:
        test: dict[str, Any] = {"vars": {}, "assert": []}
        for column, value in row.items():
            if column is None or value is None:
                continue
            if column.startswith("__expected"):
                if value:
                    test["assert"].append(_csv_assertion(value))
            elif column == "__description":
                test["description"] = value
            elif not column.startswith("__"):
                test["vars"][column] = value
        tests.append(test)
    return tests


def _parse_tests(value: Any, base: Path, where: str) -> list[dict[str, Any]]:
    entries = value if isinstance(value, list) else [value]
    tests: list[dict[str, Any]] = []
    for entry in entries:
        path = _file_ref(entry, base)
        if path is not None:
            tests.extend(_tests_from_file(path))
        elif isinstance(entry, dict):
            tests.append(entry)
        else:
            raise PromptfooError(
                f"{where}: tests: each test must be a mapping with vars, or file://FILE, got "
                f"{entry!r}"
            )
    return tests


def _assertions(test: dict[str, Any], where: str) -> list[tuple[str, Any]]:
    raw = test.get("assert") or []
    if not isinstance(raw, list):
        raise PromptfooError(f"{where}: assert must be a list of {{type, value}} mappings")
    found = []
    for assertion in raw:
        if not isinstance(assertion, dict) or not isinstance(assertion.get("type"), str):
            raise PromptfooError(f"{where}: each assertion needs a type, got {assertion!r}")
        found.append((assertion["type"], assertion))
    return found


def _judge(
    cases: list[tuple[dict[str, Any], list[tuple[str, Any]]]],
    grader: _Provider | None,
    notes: list[str],
) -> dict[str, Any]:
    """Choose the run's one judge from the tests' assertions; fill each task's reference/rubric."""
    unsupported = Counter(
        kind
        for _, found in cases
        for kind, _ in found
        if kind not in REFERENCE_ASSERTIONS and kind not in RUBRIC_ASSERTIONS
    )
    if unsupported:
        listed = ", ".join(f"{kind} ({n}×)" for kind, n in sorted(unsupported.items()))
        notes.append(
            f"assertions not used, llmpo compares two answers rather than checking one: {listed}"
        )
    references = [[(k, a) for k, a in found if k in REFERENCE_ASSERTIONS] for _, found in cases]
    kinds = {REFERENCE_ASSERTIONS[k] for found in references for k, _ in found}
    if all(references) and len(kinds) == 1:
        match = kinds.pop()
        for (task, _), found in zip(cases, references, strict=True):
            task["reference"] = str(found[0][1].get("value", ""))
        judge: dict[str, Any] = {"type": "reference", "match": match}
        if match == "embedding":
            thresholds = {float(a.get("threshold", _SIMILAR_THRESHOLD)) for f in references
                          for _, a in f}
            judge["similarity"] = min(thresholds)
            notes.append("similar → the reference judge's embedding match (llmpo[embeddings])")
        if any(k == "contains" for f in references for k, _ in f):
            notes.append("contains → match: contains, which ignores case and punctuation")
        return judge
    if references and any(references):
        notes.append(
            "the reference assertions were not used: a reference judge needs one kind of "
            "equals/contains/similar on every test"
        )
    rubric_seen = False
    for task, found in cases:
        rubrics = [str(a.get("value", "")) for k, a in found if k in RUBRIC_ASSERTIONS]
        if rubrics:
            task["rubric"] = " ".join(rubrics)
            rubric_seen = True
    if grader is None:
        raise PromptfooError(
            "no provider can judge: the tests need an LLM judge and no provider is supported. "
            "Fix: add an openai:… provider or defaultTest.options.provider"
        )
    judge = {
        "type": "llm",
        "backend": grader.backend,
        "order": "both",
        "prompt": IMPORTED_JUDGE_PROMPT,
    }
    notes.append(
        f"judge: {grader.label} compares the two answers "
        + ("against each test's rubric" if rubric_seen else "(no rubric: the better answer)")
        + ", shown in both orders; a stronger model makes a better judge"
    )
    return judge


def _policies(
    prompts: list[_Prompt], providers: list[_Provider]
) -> list[dict[str, Any]] | dict[str, Any]:
    """Every prompt × provider, as a two-factor product when the factor mechanism can say it."""
    prompt_labels = [p.label for p in prompts]
    provider_labels = [p.label for p in providers]
    for labels, what in ((prompt_labels, "prompt"), (provider_labels, "provider")):
        if len(set(labels)) != len(labels):
            raise PromptfooError(
                f"two {what}s share the label {Counter(labels).most_common(1)[0][0]!r}. Fix: "
                f"give each {what} its own label"
            )
    if all(p.system is None for p in prompts) and all(not p.decoding for p in providers):
        return {
            "factors": {
                "prompt_template": {p.label: p.template for p in prompts},
                "backend": {p.label: p.backend for p in providers},
            }
        }
    policies = []
    for prompt, provider in itertools.product(prompts, providers):
        policy: dict[str, Any] = {
            "name": f"{prompt.label}/{provider.label}",
            "levels": {"prompt_template": prompt.label, "backend": provider.label},
            "backend": provider.backend,
            "prompt_template": prompt.template,
            **dict(provider.decoding),
        }
        if prompt.system is not None:
            policy["system_prompt"] = prompt.system
        policies.append(policy)
    return policies


def import_config(path: str | Path) -> ImportedConfig:
    """Read a promptfoo configuration as an llmpo configuration and task set.

    Parameters
    ----------
    path : str or Path
        A ``promptfooconfig.yaml`` (its ``file://`` references are read relative to its folder).

    Returns
    -------
    ImportedConfig
        The configuration (``environment.tasks`` is ``tasks.jsonl``, to be written beside it by
        :func:`write_import`), the tasks and the notes on what was approximated or left out.

    Raises
    ------
    PromptfooError
        For a file or field llmpo cannot use, naming it and the fix.
    """
    path = Path(path)
    where = str(path)
    data = _load_data(path, "promptfoo configuration")
    if not isinstance(data, dict):
        raise PromptfooError(f"{where}: not a promptfoo configuration (a mapping is expected)")
    for required in ("prompts", "providers"):
        if required not in data:
            raise PromptfooError(f"{where}: '{required}' is missing. Fix: add {required}:")
    base = path.resolve().parent
    notes: list[str] = []
    for ignored in ("scenarios", "nunjucksFilters", "derivedMetrics", "redteam", "extensions"):
        if data.get(ignored):
            notes.append(f"'{ignored}' is not imported")
    prompts = _parse_prompts(data["prompts"], base, where)
    raw_providers = data["providers"]
    providers: list[_Provider] = []
    for entry in raw_providers if isinstance(raw_providers, list) else [raw_providers]:
        parsed = _parse_provider(entry, where)
        if isinstance(parsed, str):
            notes.append(parsed + "; left out")
        else:
            providers.append(parsed)
    if len(prompts) * len(providers) < 2:
        raise PromptfooError(
            f"{where}: {len(prompts)} prompt(s) × {len(providers)} supported provider(s) make "
            "fewer than 2 policies to compare. Fix: add a prompt or an OpenAI-compatible provider"
        )
    default = data.get("defaultTest") or {}
    default_path = _file_ref(default, base)
    if default_path is not None:
        default = _load_data(default_path, "defaultTest")
    if not isinstance(default, dict):
        raise PromptfooError(f"{where}: defaultTest must be a mapping")
    grader = providers[0]
    grader_spec = (default.get("options") or {}).get("provider")
    if grader_spec is not None:
        parsed = _parse_provider(grader_spec, f"{where}: defaultTest.options.provider")
        if isinstance(parsed, str):
            notes.append(f"grader: {parsed}; the first provider judges instead")
        else:
            grader = parsed
    cases: list[tuple[dict[str, Any], list[tuple[str, Any]]]] = []
    tests = _parse_tests(data.get("tests") or [], base, where)
    if not tests:
        raise PromptfooError(f"{where}: tests: none given. Fix: add tests with vars")
    for number, test in enumerate(tests, start=1):
        test_where = f"{where}: tests[{number}]"
        if not isinstance(test, dict):
            raise PromptfooError(f"{test_where}: a test must be a mapping with vars")
        variables = {**(default.get("vars") or {}), **(test.get("vars") or {})}
        found = _assertions(default, f"{where}: defaultTest") + _assertions(test, test_where)
        for variant, values in enumerate(_expand_vars(variables), start=1):
            task_id = f"t{number}" if variant == 1 else f"t{number}.{variant}"
            cases.append(({"id": task_id, **values}, found))
    judge = _judge(cases, grader, notes)
    config: dict[str, Any] = {
        "name": str(data.get("description") or f"imported from {path.name}"),
        "space": "unstructured",
        "delta": 0.1,
        "environment": {"type": "llm", "tasks": "tasks.jsonl", "judge": judge},
        "policies": _policies(prompts, providers),
        "store": "llmpo.db",
    }
    return ImportedConfig(config, [task for task, _ in cases], notes)


def write_import(imported: ImportedConfig, config_path: str | Path) -> Path:
    """Write the configuration and, beside it, its task file; return the task file's path.

    The task file is named after the configuration (``NAME.tasks.jsonl``) so that several imports
    can share a folder.
    """
    config_path = Path(config_path)
    tasks_path = config_path.with_name(config_path.stem + ".tasks.jsonl")
    config = {**imported.config}
    config["environment"] = {**config["environment"], "tasks": tasks_path.name}
    header = "".join(f"# note: {note}\n" for note in imported.notes)
    with tasks_path.open("w", encoding="utf-8") as handle:
        for task in imported.tasks:
            handle.write(json.dumps(task, ensure_ascii=False) + "\n")
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
    config_path.write_text(
        "# Made by `llmpo import` from a promptfoo configuration.\n" + header + body,
        encoding="utf-8",
    )
    return tasks_path


def _result_policy(result: dict[str, Any], prompt_numbers: dict[str, int]) -> str:
    """``PROMPT/PROVIDER``, named as :func:`import_config` names the same policy."""
    prompt = result.get("prompt") or {}
    raw, label = prompt.get("raw"), prompt.get("label")
    # promptfoo labels an unlabelled prompt with its own template; import calls it pN.
    key = str(result.get("promptId") or label or raw)
    prompt_label = label if label and "{{" not in str(label) else None
    if prompt_label is None:
        prompt_label = f"p{prompt_numbers.setdefault(key, len(prompt_numbers) + 1)}"
    provider = result.get("provider") or {}
    provider_label = provider.get("label") or _model_of(str(provider.get("id") or "provider"))
    return f"{prompt_label}/{provider_label}"


def _result_rows(data: Any, where: str) -> Iterable[dict[str, Any]]:
    # promptfoo nests the rows as results.results (newer files) or results (older ones).
    results = data.get("results") if isinstance(data, dict) else None
    if isinstance(results, dict):
        results = results.get("results")
    if not isinstance(results, list):
        raise PromptfooError(
            f"{where}: not a promptfoo results file (no results list). Fix: write it with "
            "promptfoo eval -o results.json"
        )
    return results


def read_results(path: str | Path) -> list[Judgment]:
    """Read ``promptfoo eval -o results.json`` as recorded judgments.

    Each row is one policy's (prompt × provider) answer to one test, with a ``score`` in [0, 1].
    On each test every two policies with a score are one comparison: 1 when the first scored
    higher, 0.5 on equal scores, 0 otherwise. Rows with an error and no score are left out.

    Raises
    ------
    PromptfooError
        When the file is not a promptfoo results file or a row is malformed.
    """
    path = Path(path)
    where = str(path)
    data = _load_data(path, "promptfoo results")
    by_test: dict[str, dict[str, list[float]]] = {}
    rows = list(_result_rows(data, where))
    # Number the unlabelled prompts in promptfoo's own order of prompts (promptIdx).
    prompt_numbers: dict[str, int] = {}
    for row in sorted(
        (r for r in rows if isinstance(r, dict)), key=lambda r: int(r.get("promptIdx") or 0)
    ):
        _result_policy(row, prompt_numbers)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise PromptfooError(f"{where}: result #{number} is not an object")
        score = row.get("score")
        if score is None:
            continue
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise PromptfooError(f"{where}: result #{number}: score must be a number")
        test = row.get("testIdx", row.get("vars") and json.dumps(row["vars"], sort_keys=True))
        task_id = f"t{test + 1}" if isinstance(test, int) else str(test)
        by_test.setdefault(task_id, {})[_result_policy(row, prompt_numbers)] = [float(score)]
    judgments = judgments_from_scores(by_test, "promptfoo-score")
    if not judgments:
        raise PromptfooError(
            f"{where}: no test has scores for two policies. Fix: run promptfoo eval with at least "
            "two prompts or providers and assertions that score them"
        )
    return judgments
