"""One error base (issue 17, point 4): every error class llmpo defines derives from LlmpoError,
bad input raises its subclasses rather than a bare ValueError, configuration checks carry their
field, problem and fix as fields, and the command line reports llmpo's errors in one place."""

from __future__ import annotations

import ast
import builtins
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import llmpo
from llmpo.cli import app
from llmpo.config import ExperimentConfig, parse_config
from llmpo.errors import ConfigError, DataError, RunFailedError, StoreError

SRC = Path(llmpo.__file__).resolve().parent

#: Exception classes that never leave their module: control flow caught where it is raised.
PRIVATE_CONTROL_FLOW = {"_BudgetSpentError", "_ConstantError", "_NotFoundError"}

#: ``raise ValueError(...)`` that stay, by a fragment of their message: preconditions of pure
#: functions and of internal calls, whose arguments come from code that has checked user input
#: already (a user who meets one has met a bug, not bad input).
ALLOWED_VALUE_ERRORS = {
    "level must be non-negative": "stats.bernoulli: precondition of a pure function",
    "delta must lie in (0, 0.5)": "stats.bernoulli.kl_confidence: the experiment checks δ first",
    "need 0 <= successes <= n": "stats.winrate: precondition of a pure function",
    "level must be in (0, 1)": "stats.winrate: precondition of a pure function",
    "counts must be non-negative": "stats.winrate: precondition of a pure function",
    "no comparison: a win rate needs": "stats.winrate: callers skip an empty pair first",
    "status must be one of": "the store's status argument: statuses come from llmpo's code",
    "part must be 'selection' or 'evaluation'": "runner: an internal argument",
    "an LLM judge needs a generate function": "judges: an internal argument",
    "a structured space keeps no K×K counts": "Experiment.pair_counts: callers check "
    "experiment.structured first",
    "must be a whole number of comparisons": "stats.winrate: precondition of a pure function "
    "(a comparison's shares sum to 1)",
}

BUILTIN_ERRORS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(SRC.rglob("*.py"))]


def _base_names(node: ast.ClassDef) -> list[str]:
    return [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]


def _error_classes() -> dict[str, set[str]]:
    """Every exception class defined in llmpo, by name, with the names of its ancestors; read
    from the source, so that modules of extras that are not installed count as well."""
    bases: dict[str, list[str]] = {}
    for _, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases.setdefault(node.name, []).extend(_base_names(node))

    def ancestors(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = {name}
        for base in bases.get(name, []):
            if base not in seen:
                found |= ancestors(base, seen | {name})
        return found

    return {name: ancestors(name) for name in bases if ancestors(name) & BUILTIN_ERRORS}


def test_every_error_class_derives_from_llmpo_error():
    errors = _error_classes()
    assert {"ConfigError", "ReplayError", "InstanceError", "RunFailedError"} <= set(errors)
    outside = {name for name, ancestors in errors.items() if "LlmpoError" not in ancestors}
    assert outside - {"LlmpoError"} == PRIVATE_CONTROL_FLOW


def test_no_bare_value_error_for_bad_input():
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Call)
                and isinstance(node.exc.func, ast.Name)
                and node.exc.func.id in {"ValueError", "RuntimeError", "TypeError", "Exception"}
            ):
                message = ast.unparse(node.exc.args[0]) if node.exc.args else ""
                if not any(fragment in message for fragment in ALLOWED_VALUE_ERRORS):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: {message[:60]}")
    assert found == [], "raise an llmpo.errors class instead:\n" + "\n".join(found)


def test_the_error_classes_keep_value_error_and_runtime_error_where_users_catch_them():
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(StoreError, RuntimeError) and issubclass(RunFailedError, RuntimeError)
    assert RunFailedError.exit_code == 1 and ConfigError.exit_code == 2


def test_an_error_carries_field_problem_and_fix_and_survives_pickling():
    error = ConfigError(field="policies", problem="lists one policy", fix="list at least 2")
    assert str(error) == "field 'policies': lists one policy. Fix: list at least 2."
    assert (error.field, error.problem) == ("policies", "lists one policy")
    copy = pickle.loads(pickle.dumps(error))  # errors cross process pools
    assert str(copy) == str(error) and copy.fix == "list at least 2"
    assert str(StoreError("x.db: no such store")) == "x.db: no such store"


def test_a_configuration_check_reports_its_fields_not_a_string_to_split():
    data = {
        "space": "unstructured",
        "environment": {"type": "synthetic", "instance": "i.json"},
        "policies": ["only"],
    }
    with pytest.raises(ValidationError) as caught:
        ExperimentConfig.model_validate(data)
    cause = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, ConfigError)
    assert (cause.field, cause.problem) == ("policies", "lists fewer than 2 policies")
    with pytest.raises(ConfigError) as parsed:
        parse_config(data, "exp.yaml")
    assert str(parsed.value) == (
        "exp.yaml: field 'policies': lists fewer than 2 policies. Fix: list at least 2, or omit it."
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [(StoreError("runs.db: locked. Fix: wait"), 2), (RunFailedError("backend down"), 1)],
)
def test_the_command_line_reports_any_llmpo_error_once_with_its_exit_code(
    monkeypatch, tmp_path, error, code
):
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    import llmpo.cli.experiments

    monkeypatch.setattr(llmpo.cli.experiments, "Store", fail)  # opening the store fails
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs.db"), "1"])
    assert result.exit_code == code
    assert result.stderr.strip() == f"error: {error}"
    assert "Traceback" not in result.output


def test_the_command_line_catches_llmpo_errors_in_one_place():
    """Only llmpo.cli's group catches LlmpoError; run's handler re-raises a ConfigError with
    the file's name in front."""
    names = {name for name, ancestors in _error_classes().items() if "LlmpoError" in ancestors}
    caught = set()
    for path in sorted((SRC / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                for kind in types:
                    name = ast.unparse(kind).rsplit(".", 1)[-1]
                    if name in names:
                        caught.add((path.name, name))
    assert caught == {("__init__.py", "LlmpoError"), ("experiments.py", "ConfigError")}
