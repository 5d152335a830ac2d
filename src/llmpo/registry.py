"""The plug-in points of llmpo: names → lazily imported objects, open to other packages.

Five registries, one per kind of plug-in (docs/plugins.md), and one for the file formats a
replay source reads (:data:`REPLAY_FORMATS`, group ``llmpo.replay_formats``):

========================  ====================  ==================================================
registry                  entry-point group     what a name stands for
========================  ====================  ==================================================
:data:`BACKENDS`          ``llmpo.backends``    a :class:`BackendPlugin` (``backend.type``)
:data:`JUDGES`            ``llmpo.judges``      a :class:`JudgePlugin` (``judge.type``)
:data:`SOURCES`           ``llmpo.sources``     a :class:`SourcePlugin` (``environment.type``)
:data:`STRATEGIES`        ``llmpo.strategies``  a :class:`~llmpo.strategies.base.Strategy` class
:data:`THRESHOLDS`        ``llmpo.thresholds``  a :class:`~llmpo.stats.thresholds.Threshold` class
========================  ====================  ==================================================

Every registration is a ``"module:attribute"`` string (or the object itself), imported the first
time the name is used, so that listing or validating names imports nothing heavy (torch, the
``openai`` SDK, the web app). Other packages add names through Python entry points: the entry
point's name is the plug-in's name and its value the ``"module:attribute"`` of the object. The
entry points of a group are read once, on the first look-up, and their modules imported only
when their name is used — except the configuration models of backends, judges and sources, which
:mod:`llmpo.config` needs to build its tagged unions (a plug-in's YAML validates with its own
fields and errors).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, get_args, get_origin

from llmpo.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint
    from pathlib import Path

    from pydantic import BaseModel

    from llmpo.config import ExperimentConfig
    from llmpo.environments.base import Environment
    from llmpo.llm.backends import Backend
    from llmpo.llm.judges import Generate, Judge

__all__ = [
    "BACKENDS",
    "JUDGES",
    "REPLAY_FORMATS",
    "SOURCES",
    "STRATEGIES",
    "THRESHOLDS",
    "BackendPlugin",
    "JudgePlugin",
    "Registry",
    "SourcePlugin",
    "StrategyPlugin",
    "config_models",
    "judged_by_people",
    "load_object",
]

T = TypeVar("T")


def load_object(target: str) -> Any:
    """The object a ``"module:attribute"`` string names (``attribute`` may be dotted).

    Raises
    ------
    ImportError
        When the module cannot be imported.
    AttributeError
        When it has no such attribute.
    """
    module_name, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split(".") if attribute else ():
        obj = getattr(obj, part)
    return obj


def _resolve(value: Any) -> Any:
    """``value``, or the object it names when it is a ``"module:attribute"`` string."""
    return load_object(value) if isinstance(value, str) else value


class _Selectable(Protocol):
    """What :func:`importlib.metadata.entry_points` returns (its type varies with Python)."""

    def select(self, *, group: str) -> Iterable[EntryPoint]: ...


@functools.cache
def _installed_entry_points() -> _Selectable:
    """Every installed entry point, scanned once for all the registries (one scan of the
    installed distributions costs a few milliseconds; one per group would cost each time)."""
    from importlib.metadata import entry_points  # ~20 ms to import: only when names are read

    return entry_points()


@dataclass(frozen=True)
class _Entry:
    """One registered name: what it points at, and who registered it."""

    target: Any
    #: ``"llmpo"`` for the built-ins, the distribution's name for an entry point.
    origin: str


class Registry(Generic[T]):
    """Names of one kind of plug-in, each imported the first time it is used.

    Parameters
    ----------
    kind : str
        What a name stands for, in messages (``"backend"``).
    group : str
        The entry-point group other packages register in (``"llmpo.backends"``).
    field : str
        The configuration field that holds a name (``"backend.type"``), in messages.
    adapt : callable, optional
        Called with each loaded object; returns it in this registry's form, or raises
        TypeError when it is not of this kind.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        field: str,
        adapt: Callable[[Any], T] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self.field = field
        self._adapt = adapt
        self._entries: dict[str, _Entry] = {}
        self._loaded: dict[str, T] = {}
        self._tables: list[str] = []
        self._entry_points_read = False

    # ---- registering --------------------------------------------------------------------------
    def register(self, name: str, target: T | str, *, origin: str = "llmpo") -> None:
        """Register ``name`` for ``target`` (an object, or its ``"module:attribute"``).

        Nothing is imported here. Raises PluginError when ``name`` is taken.
        """
        if name in self._entries:
            raise PluginError(
                f"{self.kind} {name!r} is registered already (by {self._entries[name].origin})"
            )
        self._entries[name] = _Entry(target, origin)

    def include(self, table: str) -> None:
        """Register every item of the mapping ``table`` (``"module:attribute"``) as a built-in.

        The mapping is imported on the first look-up, so that a table kept beside its classes
        (:data:`llmpo.stats.thresholds.THRESHOLDS`) stays the one list of the built-ins.
        """
        self._tables.append(table)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests, and a plug-in replacing itself)."""
        self._entries.pop(name, None)
        self._loaded.pop(name, None)

    def _read_tables(self) -> None:
        """Add the names of the included tables (imports the tables' modules), once."""
        while self._tables:
            for name, target in load_object(self._tables.pop(0)).items():
                self._entries.setdefault(name, _Entry(target, "llmpo"))

    def _read_entry_points(self) -> None:
        """Add the included tables' names and the names other packages declare in
        :attr:`group`, once (no plug-in is imported)."""
        self._read_tables()
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for point in _installed_entry_points().select(group=self.group):
            origin = point.dist.name if point.dist is not None else point.value
            if point.name in self._entries:
                # A plug-in never silently replaces a name (a built-in or another package's).
                warnings.warn(
                    f"{origin} registers the {self.kind} {point.name!r} (entry point group "
                    f"{self.group}), which {self._entries[point.name].origin} registers "
                    "already; the plug-in's is ignored. Fix: give it another name",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            self._entries[point.name] = _Entry(point.value, origin)

    # ---- looking up ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every registered name: the built-ins first, then installed plug-ins."""
        self._read_entry_points()
        return list(self._entries)

    def builtin_names(self) -> list[str]:
        """The names llmpo itself registers (without reading the entry points: for help texts
        that must stay cheap)."""
        self._read_tables()
        return [name for name, entry in self._entries.items() if entry.origin == "llmpo"]

    def __contains__(self, name: object) -> bool:
        self._read_entry_points()
        return name in self._entries

    def is_loaded(self, name: str) -> bool:
        """Whether ``name``'s object has been imported already."""
        return name in self._loaded

    def unknown(self, name: object, field: str | None = None) -> ConfigError:
        """The error for a name nobody registered: the field, the known names, the fix."""
        known = ", ".join(self.names())
        return ConfigError(
            f"{field or self.field}: unknown {name!r} ({self.kind}); known: {known}. Fix: use "
            f"one of these, or install the package that provides {name!r} (it registers it in "
            f"the entry-point group {self.group}, docs/plugins.md)"
        )

    def get(self, name: str, field: str | None = None) -> T:
        """The object registered as ``name``, imported on first use.

        Raises
        ------
        ConfigError
            For an unknown name (naming ``field``, default :attr:`field`, and the known names),
            or a plug-in that cannot be imported.
        """
        if name in self._loaded:
            return self._loaded[name]
        if name not in self:
            raise self.unknown(name, field)
        entry = self._entries[name]
        try:
            loaded = _resolve(entry.target)
            if self._adapt is not None:
                loaded = self._adapt(loaded)
        except (ImportError, AttributeError, TypeError) as error:
            raise ConfigError(
                f"{field or self.field}: the {self.kind} {name!r} (from {entry.origin}) "
                f"cannot be loaded from {entry.target!r}: {type(error).__name__}: {error}. Fix: "
                f"reinstall {entry.origin}, or correct its entry point in group {self.group}"
            ) from None
        self._loaded[name] = loaded
        return loaded


# ---- what backends, judges and sources register ----------------------------------------------
@dataclass(frozen=True)
class BackendPlugin:
    """A backend: its configuration model and what builds it.

    Attributes
    ----------
    config : type[BaseModel] or str
        A pydantic model with a field ``type: Literal["<name>"]`` and a ``model: str`` (the
        model the prices and reports name); ``base_url`` and ``api_key_env`` are optional and
        keep their usual meaning. Validated like every llmpo configuration (``extra="forbid"``
        recommended).
    factory : callable or str
        ``factory(config) -> Backend`` (:class:`~llmpo.llm.backends.Backend`), imported when the
        first call is made.
    worker_processes : bool
        Whether its calls may run in worker processes (``client_processes``): the factory is
        then also called in the worker, with the pickled configuration.
    """

    config: type[BaseModel] | str
    factory: Callable[[Any], Backend] | str
    worker_processes: bool = False

    def config_model(self) -> type[BaseModel]:
        """The configuration model (imported)."""
        model: type[BaseModel] = _resolve(self.config)
        return model

    def create(self, config: Any) -> Backend:
        """The backend ``config`` describes."""
        backend: Backend = _resolve(self.factory)(config)
        return backend


@dataclass(frozen=True)
class JudgePlugin:
    """A judge: its configuration model, what builds it, and whether people judge.

    Attributes
    ----------
    config : type[BaseModel] or str
        A pydantic model with a field ``type: Literal["<name>"]``; a field ``backend`` (a
        backend configuration) gives the judge a model to call through ``generate``.
    factory : callable or str
        ``factory(config, generate) -> Judge`` (:class:`~llmpo.llm.judges.Judge`); ``generate``
        sends a request to the judge's ``backend`` with the run's retries, rate limits and
        accounting (None when the configuration has no backend).
    people : bool
        True when people give the verdicts (``llmpo serve``): such an experiment is served,
        not run.
    """

    config: type[BaseModel] | str
    factory: Callable[[Any, Generate | None], Judge] | str
    people: bool = False

    def config_model(self) -> type[BaseModel]:
        """The configuration model (imported)."""
        model: type[BaseModel] = _resolve(self.config)
        return model

    def create(self, config: Any, generate: Generate | None = None) -> Judge:
        """The judge ``config`` describes."""
        judge: Judge = _resolve(self.factory)(config, generate)
        return judge


@dataclass(frozen=True)
class SourcePlugin:
    """A source of outcomes (the ``environment`` of a configuration).

    Attributes
    ----------
    config : type[BaseModel] or str
        A pydantic model with a field ``type: Literal["<name>"]``. Its ``Path`` fields are made
        absolute (relative to the configuration file's folder) when the configuration is read.
    build : callable or str
        ``build(config, part, evaluation_tasks) -> Environment``: ``config`` the whole
        :class:`~llmpo.config.ExperimentConfig`, ``part`` ``"selection"`` or ``"evaluation"``
        (held-out tasks only), ``evaluation_tasks`` a held-out task file or None.
    run_options : bool
        True when ``build`` also takes the driver's keyword options (``cache``: the store's
        answer cache, ``concurrency``, ``seed``), as a live source does; other sources are
        built without them.
    """

    config: type[BaseModel] | str
    build: Callable[..., Environment] | str
    run_options: bool = False

    def config_model(self) -> type[BaseModel]:
        """The configuration model (imported)."""
        model: type[BaseModel] = _resolve(self.config)
        return model

    def create(
        self,
        config: ExperimentConfig,
        part: str,
        evaluation_tasks: Path | None,
        **options: Any,
    ) -> Environment:
        """The environment of ``config`` (one part of its tasks); ``options`` reach only a
        source registered with ``run_options``."""
        build = _resolve(self.build)
        if not self.run_options:
            options = {}
        environment: Environment = build(config, part, evaluation_tasks, **options)
        return environment


@dataclass(frozen=True)
class StrategyPlugin:
    """A sampling rule by name, with its class for each kind of policy space.

    An entry point in ``llmpo.strategies`` may name a
    :class:`~llmpo.strategies.base.Strategy` subclass (used on every space) or a
    :class:`StrategyPlugin` (its classes, per space; None where the rule does not apply).
    """

    unstructured: type | str | None
    structured: type | str | None

    def for_space(self, structured: bool) -> type | None:
        """The class for an unstructured or a structured space, or None."""
        target = self.structured if structured else self.unstructured
        return None if target is None else _resolve(target)


def _strategy(value: Any) -> StrategyPlugin:
    """A registered strategy as a :class:`StrategyPlugin` (a bare class serves every space)."""
    if isinstance(value, StrategyPlugin):
        return value
    base = load_object("llmpo.strategies.base:Strategy")
    if not (isinstance(value, type) and issubclass(value, base)):
        raise PluginError(f"expected a Strategy subclass or a StrategyPlugin, got {value!r}")
    return StrategyPlugin(value, value)


def _instance_of(kind: type[T]) -> Callable[[Any], T]:
    def check(value: Any) -> T:
        if not isinstance(value, kind):
            raise PluginError(f"expected a {kind.__name__}, got {type(value).__name__}")
        return value

    return check


def _subclass_of(target: str) -> Callable[[Any], type]:
    def check(value: Any) -> type:
        base = load_object(target)
        if not (isinstance(value, type) and issubclass(value, base)):
            raise PluginError(f"expected a subclass of {base.__name__}, got {value!r}")
        return value

    return check


BACKENDS: Registry[BackendPlugin] = Registry(
    "backend", "llmpo.backends", "backend.type", _instance_of(BackendPlugin)
)
JUDGES: Registry[JudgePlugin] = Registry(
    "judge", "llmpo.judges", "environment.judge.type", _instance_of(JudgePlugin)
)
SOURCES: Registry[SourcePlugin] = Registry(
    "environment", "llmpo.sources", "environment.type", _instance_of(SourcePlugin)
)
#: Readers of replay files that hold individual judgments: ``reader(path) -> list[Judgment]``
#: (``environment.format``; ``counts`` and ``arena``, aggregated pair counts, are built in).
REPLAY_FORMATS: Registry[Callable[[Path], Any]] = Registry(
    "replay format", "llmpo.replay_formats", "environment.format"
)
STRATEGIES: Registry[StrategyPlugin] = Registry(
    "strategy", "llmpo.strategies", "strategy", _strategy
)
THRESHOLDS: Registry[type] = Registry(
    "threshold", "llmpo.thresholds", "threshold", _subclass_of("llmpo.stats.thresholds:Threshold")
)

THRESHOLDS.include("llmpo.stats.thresholds:THRESHOLDS")

# ---- the built-ins (strings: nothing is imported until a name is used) -------------------------
BACKENDS.register(
    "openai",
    BackendPlugin(
        "llmpo.config:BackendConfig", "llmpo.llm.backends:OpenAIBackend", worker_processes=True
    ),
)
BACKENDS.register(
    "anthropic",
    BackendPlugin("llmpo.config:AnthropicBackendConfig", "llmpo.llm.backends:AnthropicBackend"),
)
BACKENDS.register(
    "local", BackendPlugin("llmpo.config:LocalBackendConfig", "llmpo.llm.local:LocalBackend")
)

JUDGES.register(
    "reference",
    JudgePlugin("llmpo.config:ReferenceJudgeConfig", "llmpo.llm.judges:ReferenceJudge.from_config"),
)
JUDGES.register(
    "llm", JudgePlugin("llmpo.config:LLMJudgeConfig", "llmpo.llm.judges:LLMJudge.from_config")
)
JUDGES.register(
    "python",
    JudgePlugin("llmpo.config:PythonJudgeConfig", "llmpo.llm.judges:PythonJudge.from_config"),
)
JUDGES.register(
    "human",
    JudgePlugin(
        "llmpo.config:HumanJudgeConfig", "llmpo.human.queue:HumanJudge.from_config", people=True
    ),
)

REPLAY_FORMATS.register("judgments", "llmpo.environments.replay:read_judgments")
REPLAY_FORMATS.register("pandalm", "llmpo.datasets:load_pandalm")
REPLAY_FORMATS.register("promptfoo", "llmpo.integrations.promptfoo:read_results")
REPLAY_FORMATS.register("inspect", "llmpo.integrations.inspect:read_logs")

_UNSTRUCTURED = "llmpo.strategies.unstructured"
_STRUCTURED = "llmpo.strategies.structured"
_BASELINES = "llmpo.strategies.baselines"
_STRUCTURED_BASELINES = "llmpo.strategies.structured_baselines"
_UNIFORM = "llmpo.strategies.base:Uniform"
for _name, _plugin in {
    # "llmpo" is each space's default rule (docs/statistics.md, docs/structured.md).
    "llmpo": StrategyPlugin(f"{_UNSTRUCTURED}:BalanceRule", f"{_STRUCTURED}:BestResponse"),
    "llmpo-tracking": StrategyPlugin(f"{_UNSTRUCTURED}:TrackingRule", f"{_STRUCTURED}:Tracking"),
    "uniform": StrategyPlugin(_UNIFORM, _UNIFORM),
    "top-two": StrategyPlugin(f"{_BASELINES}:TopTwo", None),
    "successive-elimination": StrategyPlugin(f"{_BASELINES}:SuccessiveElimination", None),
    "knockout": StrategyPlugin(f"{_BASELINES}:Knockout", None),
    "xy-static": StrategyPlugin(None, f"{_STRUCTURED_BASELINES}:XYStatic"),
    "lucb": StrategyPlugin(None, f"{_STRUCTURED_BASELINES}:StructuredLUCB"),
}.items():
    STRATEGIES.register(_name, _plugin)

SOURCES.register(
    "synthetic",
    SourcePlugin(
        "llmpo.config:SyntheticEnvironmentConfig", "llmpo.runtime.setup:synthetic_source"
    ),
)
SOURCES.register(
    "replay",
    SourcePlugin("llmpo.config:ReplayEnvironmentConfig", "llmpo.runtime.setup:replay_source"),
)
SOURCES.register(
    "llm",
    SourcePlugin(
        "llmpo.config:LLMEnvironmentConfig", "llmpo.runtime.setup:llm_source", run_options=True
    ),
)


def judged_by_people(judge: Any) -> bool:
    """Whether people give the verdicts of ``judge`` (a judge configuration, its mapping as
    stored, or None): the :attr:`JudgePlugin.people` of its type.

    An unknown type (a plug-in no longer installed) counts as not judged by people.
    """
    kind = judge.get("type") if isinstance(judge, Mapping) else getattr(judge, "type", None)
    if not isinstance(kind, str) or kind not in JUDGES:
        return False
    return JUDGES.get(kind).people


def _check_config_model(name: str, model: Any) -> None:
    """Raise TypeError unless ``model`` is a pydantic model tagged ``type: Literal[name]``."""
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(f"its config is not a pydantic model ({model!r})")
    tag = model.model_fields.get("type")
    if (
        tag is None
        or get_origin(tag.annotation) is not Literal
        or get_args(tag.annotation) != (name,)
    ):
        raise PluginError(
            f"its config {model.__name__} needs the field type: Literal[{name!r}] (the tag "
            "that tells it apart in a configuration)"
        )


def config_models(registry: Registry[Any]) -> dict[str, type[BaseModel]]:
    """The configuration model of every name of ``registry`` (imports the plug-ins' models).

    A plug-in whose model cannot be imported, or is not a pydantic model tagged
    ``type: Literal["<name>"]``, is left out with a warning: it must not make every
    configuration unreadable (its name then gets the "unknown type" error).
    """
    models: dict[str, type[BaseModel]] = {}
    for name in registry.names():
        try:
            model = registry.get(name).config_model()
            _check_config_model(name, model)
        except (ConfigError, ImportError, AttributeError, TypeError) as error:
            warnings.warn(
                f"{registry.kind} plug-in {name!r} left out: {error}", RuntimeWarning, stacklevel=2
            )
            continue
        models[name] = model
    return models
