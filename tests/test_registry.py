"""The plug-in registries: lazy loading, entry points, unknown names, and a third-party package.

The last test builds a package in the test (a pyproject declaring one backend and one judge in the
entry-point groups), installs it offline with pip into a folder, and runs an experiment from YAML
through ``llmpo run`` in a subprocess with that folder on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmpo.config import parse_config
from llmpo.errors import ConfigError
from llmpo.registry import (
    BACKENDS,
    JUDGES,
    SOURCES,
    STRATEGIES,
    THRESHOLDS,
    Registry,
    judged_by_people,
)
from tests.probe import SRC, imported, top_level


@pytest.fixture
def rescan():
    """Entry points are scanned once per process: scan again for a distribution a test adds."""
    from llmpo import registry

    registry._installed_entry_points.cache_clear()
    yield
    registry._installed_entry_points.cache_clear()


def _module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def _dist_info(folder: Path, name: str, entry_points: str) -> None:
    """An installed distribution's metadata with ``entry_points`` (what pip would write)."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


# ---- lazy loading --------------------------------------------------------------------------------
def test_registering_a_name_imports_nothing_until_it_is_used(tmp_path, monkeypatch):
    _module(tmp_path, "lazy_thing_mod", "VALUE = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[object] = Registry("thing", "llmpo.test-none", "thing")
    registry.register("lazy", "lazy_thing_mod:VALUE")
    assert "lazy" in registry and registry.names() == ["lazy"]
    assert "lazy_thing_mod" not in sys.modules and not registry.is_loaded("lazy")
    value = registry.get("lazy")
    assert "lazy_thing_mod" in sys.modules and registry.is_loaded("lazy")
    assert value is sys.modules["lazy_thing_mod"].VALUE
    assert registry.get("lazy") is value  # imported once


def test_entry_points_are_listed_without_importing_the_plugin(tmp_path, monkeypatch, rescan):
    _module(tmp_path, "ep_thing_mod", "THING = 42\n")
    _dist_info(tmp_path, "ep_thing_pkg", "[llmpo.test-things]\nanswer = ep_thing_mod:THING\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[object] = Registry("thing", "llmpo.test-things", "thing")
    registry.register("builtin", "os:sep")
    assert registry.names() == ["builtin", "answer"]  # built-ins first, then plug-ins
    assert "ep_thing_mod" not in sys.modules
    assert registry.get("answer") == 42


def test_a_plugin_never_replaces_a_builtin(tmp_path, monkeypatch, rescan):
    _dist_info(tmp_path, "rogue_pkg", "[llmpo.test-rogue]\nopenai = os:sep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[object] = Registry("backend", "llmpo.test-rogue", "backend.type")
    registry.register("openai", "os:getcwd")
    with pytest.warns(RuntimeWarning, match="rogue_pkg registers the backend 'openai'"):
        names = registry.names()
    assert names == ["openai"] and registry.get("openai") is os.getcwd


def test_a_plugin_with_an_unusable_config_model_is_left_out_with_a_warning():
    """Left out, not fatal: a configuration union built with it would fail for every file."""
    from pydantic import BaseModel

    from llmpo.config import ReferenceJudgeConfig
    from llmpo.registry import JudgePlugin, config_models

    class Untagged(BaseModel):
        unit: str = "word"

    registry: Registry[JudgePlugin] = Registry("judge", "llmpo.test-none", "judge.type")
    registry.register("reference", JudgePlugin(ReferenceJudgeConfig, "os:sep"))
    registry.register("untagged", JudgePlugin(Untagged, "os:sep"))
    registry.register("missing", JudgePlugin("no_such_module_here:Config", "os:sep"))
    with pytest.warns(RuntimeWarning) as caught:
        models = config_models(registry)
    assert models == {"reference": ReferenceJudgeConfig}
    messages = [str(w.message) for w in caught]
    assert any("'untagged' left out" in m and "type: Literal['untagged']" in m for m in messages)
    assert any("'missing' left out" in m and "no_such_module_here" in m for m in messages)


def test_the_builtins_import_nothing_heavy_to_validate_a_configuration():
    """Reading a configuration names every backend and judge, and imports none of them."""
    code = (
        "import llmpo.config as c\n"
        "c.parse_config({'environment': {'type': 'llm', 'tasks': 't.jsonl', 'judge': "
        "{'type': 'llm', 'backend': {'type': 'local'}}}, 'policies': [{'name': 'a', "
        "'backend': {'type': 'openai', 'model': 'm'}}, {'name': 'b', 'backend': "
        "{'type': 'anthropic', 'model': 'm'}}]})\n"
    )
    _, modules = imported(code)
    heavy = {"llmpo.llm.backends", "llmpo.llm.local", "llmpo.human.queue"}
    assert modules & heavy == set()
    assert top_level(modules) & {"torch", "openai", "anthropic", "fastapi"} == set()


def test_builtin_names_are_registered():
    assert BACKENDS.builtin_names() == ["openai", "anthropic", "local"]
    assert JUDGES.builtin_names() == ["reference", "llm", "python", "human"]
    assert SOURCES.builtin_names() == ["synthetic", "replay", "llm"]
    assert {"llmpo", "llmpo-tracking", "uniform", "lucb"} <= set(STRATEGIES.builtin_names())
    assert {"kt", "universal", "hybrid"} <= set(THRESHOLDS.builtin_names())


# ---- unknown names -------------------------------------------------------------------------------
def test_an_unknown_name_names_the_field_the_known_names_and_the_fix():
    with pytest.raises(ConfigError) as caught:
        BACKENDS.get("nonesuch")
    message = str(caught.value)
    assert message.startswith("backend.type: unknown 'nonesuch' (backend); known: openai, ")
    assert "anthropic" in message and "local" in message
    assert "Fix: use one of these, or install the package" in message
    assert "entry-point group llmpo.backends" in message


def test_an_unknown_type_in_a_configuration_lists_the_registered_types(tmp_path):
    data = {
        "environment": {"type": "llm", "tasks": "t.jsonl", "judge": {"type": "oracle"}},
        "policies": [
            {"name": "a", "backend": {"type": "openai", "model": "m"}},
            {"name": "b", "backend": {"type": "openai", "model": "m"}},
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "x.yaml", tmp_path)
    message = str(caught.value)
    assert "x.yaml: field 'environment.judge'" in message
    assert "'reference', 'llm', 'python', 'human'" in message
    assert "install the package that provides this type" in message


def test_an_unknown_strategy_lists_the_registered_ones():
    from llmpo.experiment import Experiment
    from llmpo.spaces import Unstructured

    with pytest.raises(ConfigError, match=r"strategy: unknown 'magic' \(strategy\); known: llmpo"):
        Experiment(Unstructured(3), 0.05, "magic")
    # A rule of the other space is named as such, with the rules of this one.
    with pytest.raises(ConfigError, match="'lucb' is not a rule of the unstructured space"):
        Experiment(Unstructured(3), 0.05, "lucb")
    assert Experiment(Unstructured(3), 0.05, "top-two").strategy.name == "top-two"


def test_a_registered_strategy_and_threshold_are_used_by_the_experiment():
    """A rule and a threshold registered under new names (as an entry point would) are what
    ``strategy:`` and ``threshold:`` reach: the run follows the rule, the model the threshold."""
    from llmpo.experiment import Experiment
    from llmpo.spaces import Unstructured
    from llmpo.stats.thresholds import KTThreshold
    from llmpo.strategies.base import Uniform

    class FirstPairOnly(Uniform):
        name = "first-pair-only"

        def select(self, model, rng):
            return (0, 1)

    class DoubleKT(KTThreshold):
        name = "double-kt"

        def common(self, t, delta, log_multiplicity):
            return 2.0 * super().common(t, delta, log_multiplicity)

    STRATEGIES.register("first-pair-only", FirstPairOnly, origin="a test")
    THRESHOLDS.register("double-kt", DoubleKT, origin="a test")
    try:
        experiment = Experiment(Unstructured(4), 0.05, "first-pair-only", threshold="double-kt")
        assert isinstance(experiment.strategy, FirstPairOnly)
        assert isinstance(experiment.threshold, DoubleKT)
        asked = []
        for _ in range(5):
            (pair,) = experiment.ask()
            experiment.tell(*pair, 1.0)
            asked.append(tuple(pair))
        assert set(asked) == {(0, 1)}
    finally:
        STRATEGIES.unregister("first-pair-only")
        THRESHOLDS.unregister("double-kt")


def test_a_registered_replay_format_reads_the_replay_file(tmp_path):
    """``environment.format`` names a registered reader (as an entry point in
    ``llmpo.replay_formats`` would); an unknown one lists the known formats."""
    from llmpo.environments.replay import Judgment
    from llmpo.registry import REPLAY_FORMATS
    from llmpo.runtime.setup import build_environment

    def read_tsv(path):
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        return [Judgment(a, b, float(outcome), task) for a, b, outcome, task in rows]

    (tmp_path / "votes.tsv").write_text("x\ty\t1\tt1\ny\tz\t0.5\tt2\nx\tz\t0\tt3\n")
    data = {"environment": {"type": "replay", "path": "votes.tsv", "format": "tsv"}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "r.yaml", tmp_path)
    assert "r.yaml: field 'environment.format': unknown replay format 'tsv'" in str(caught.value)
    assert "judgments" in str(caught.value) and "inspect" in str(caught.value)
    REPLAY_FORMATS.register("tsv", read_tsv, origin="a test")
    try:
        environment = build_environment(parse_config(data, "r.yaml", tmp_path))
    finally:
        REPLAY_FORMATS.unregister("tsv")
    assert sorted(environment.policies) == ["x", "y", "z"]


def test_judged_by_people_is_the_registration_s_property():
    assert judged_by_people({"type": "human"}) and not judged_by_people({"type": "llm"})
    assert not judged_by_people(None) and not judged_by_people({"type": "uninstalled"})
    assert JUDGES.get("human").people and not JUDGES.get("reference").people


# ---- a third-party package -----------------------------------------------------------------------
PLUGIN_INIT = '''
"""A third-party llmpo plug-in: a backend and a judge (configuration models only, light)."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmpo.registry import BackendPlugin, JudgePlugin


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["echo"]
    model: str
    words: int = Field(ge=1)


class LongerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["longer"]
    unit: Literal["word", "char"] = "word"


BACKEND = BackendPlugin(EchoConfig, "llmpo_echo.impl:EchoBackend", worker_processes=True)
JUDGE = JudgePlugin(LongerConfig, "llmpo_echo.impl:make_judge")
'''

PLUGIN_IMPL = '''
"""The heavy part, imported only when a run uses the plug-in."""
from llmpo.llm.backends import Backend, Generation
from llmpo.llm.judges import Judge, Verdict


class EchoBackend(Backend):
    """Answers every request with ``words`` copies of the model's name: deterministic."""

    def __init__(self, config):
        self.config = config
        self.label = f"echo {config.model}"

    async def complete(self, request, timeout):
        text = " ".join([self.config.model] * self.config.words)
        return Generation(text, 3, self.config.words, 0.0)

    async def aclose(self):
        pass


class LongerJudge(Judge):
    """The longer answer wins; equal lengths tie."""

    def __init__(self, unit):
        self.unit = unit

    def size(self, answer):
        return len(answer.split()) if self.unit == "word" else len(answer)

    async def judge(self, task, answer_a, answer_b, rng):
        a, b = self.size(answer_a), self.size(answer_b)
        return Verdict(0.5 if a == b else float(a > b), None, {"sizes": [a, b]})


def make_judge(config, generate):
    return LongerJudge(config.unit)
'''

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "llmpo-echo"
version = "0.1"

[project.entry-points."llmpo.backends"]
echo = "llmpo_echo:BACKEND"

[project.entry-points."llmpo.judges"]
longer = "llmpo_echo:JUDGE"

[tool.setuptools]
packages = ["llmpo_echo"]
"""

EXPERIMENT = """
delta: 0.05
seed: 7
store: runs.db
policies:
  - {name: terse, backend: {type: echo, model: terse, words: 1}}
  - {name: wordy, backend: {type: echo, model: wordy, words: 5}}
  - {name: middling, backend: {type: echo, model: middling, words: 3}}
environment:
  type: llm
  tasks: tasks.jsonl
  client_processes: PROCESSES
  judge: {type: longer, unit: word}
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plug-in package, built and installed (offline, no dependencies) into a folder."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "src" / "llmpo_echo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_INIT)
    (package / "impl.py").write_text(PLUGIN_IMPL)
    (root / "src" / "pyproject.toml").write_text(PYPROJECT)
    site = root / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(site),
            str(root / "src"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (site / "llmpo_echo" / "impl.py").is_file()
    return site


def _llmpo(folder: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)])}
    return subprocess.run(
        [sys.executable, "-m", "llmpo", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env=environment,
        timeout=300,
    )


def test_a_third_party_backend_and_judge_run_an_experiment_from_yaml(plugin_site, tmp_path):
    """Built in the test, registered only through entry points, run by ``llmpo run``: the
    backend answers deterministically (``words`` copies of its name), the judge prefers the
    longer answer, so ``wordy`` beats both others every time and the run certifies it."""
    (tmp_path / "tasks.jsonl").write_text(
        "".join(json.dumps({"id": f"t{i}", "prompt": f"say {i}"}) + "\n" for i in range(5))
    )
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT.replace("PROCESSES", "0"))
    done = _llmpo(tmp_path, plugin_site, "run", "experiment.yaml", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["certified"] is True and result["winner"] == "wordy"
    assert 0 < result["n_comparisons"] <= 200
    # Paid in the plug-in backend's calls and the tokens it reported; the judge calls no model.
    calls = result["calls"]
    assert calls["generation_calls"] > 0 and calls["judge_calls"] == 0
    assert result["input_tokens"] > 0 and result["input_tokens"] % 3 == 0


def test_a_plugin_s_configuration_is_validated_with_its_own_fields(plugin_site, tmp_path):
    """A misspelt field of the plug-in's backend is named with the plug-in's own fields, and an
    unknown judge type lists the plug-in's types beside the built-ins."""
    (tmp_path / "tasks.jsonl").write_text(json.dumps({"id": "t", "prompt": "p"}) + "\n")
    base = EXPERIMENT.replace("PROCESSES", "0")
    (tmp_path / "bad.yaml").write_text(base.replace("words: 5}", "words: 5, wrods: 2}"))
    (tmp_path / "unknown.yaml").write_text(base.replace("type: longer", "type: shorter"))
    code = (
        "from llmpo.config import load_config\n"
        "from llmpo.errors import ConfigError\n"
        "for name in ('bad.yaml', 'unknown.yaml'):\n"
        "    try:\n"
        "        load_config(name)\n"
        "    except ConfigError as error:\n"
        "        print(error)\n"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(SRC)])}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    bad, unknown = done.stdout.strip().split("\n")
    assert bad.startswith("bad.yaml: field 'policies.1.backend.wrods'")
    assert "did you mean 'words'" in bad
    assert unknown.startswith("unknown.yaml: field 'environment.judge'")
    assert "'longer'" in unknown and "'reference'" in unknown


def test_a_worker_process_builds_a_plugin_backend_by_its_registration(plugin_site, monkeypatch):
    """``client_processes``: the worker process, started afresh, finds the plug-in through its
    entry point and builds the backend from the pickled configuration (every call below is
    made in the worker)."""
    import asyncio

    from llmpo.llm.backends import GenerationRequest
    from llmpo.llm.worker import ProcessBackend

    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv("PYTHONPATH", str(plugin_site))  # the worker's; the source is added to it
    from llmpo_echo import EchoConfig

    # This process read the entry points before the plug-in was on its path: register it here.
    BACKENDS.register("echo", "llmpo_echo:BACKEND", origin="llmpo-echo")
    try:
        config = EchoConfig(type="echo", model="m", words=4)

        async def work() -> tuple[str, int]:
            backend = ProcessBackend(config, 1)
            try:
                await backend.start()
                generation = await backend.complete(GenerationRequest((("user", "hi"),), "m"), 30)
                return generation.text, backend.worker_calls
            finally:
                await backend.aclose()

        text, worker_calls = asyncio.run(work())
    finally:
        BACKENDS.unregister("echo")
    assert text == "m m m m" and worker_calls == 1
