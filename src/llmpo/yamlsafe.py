"""YAML loading with bounds: no alias bomb, no duplicate key, no file too large to be a config.

``yaml.safe_load`` constructs no arbitrary objects, but anchors and aliases let a few hundred bytes
stand for billions of values (each alias is shared when loaded, but everything that walks the
result — validation, messages, JSON — expands it), and a key given twice silently keeps its last
value. :func:`load_yaml` composes the document, measures the size it has once aliases are
expanded, and refuses it beyond :data:`MAX_EXPANDED_NODES`; it refuses a repeated key with its
name and line. Values are never quoted in these messages (an expanded one could be enormous).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmpo.errors import ConfigError

__all__ = ["MAX_EXPANDED_NODES", "MAX_YAML_BYTES", "load_yaml", "read_yaml"]

#: The most values (scalars, lists, mappings) a document may hold with its aliases expanded.
MAX_EXPANDED_NODES = 100_000

#: The largest YAML file read (configurations and suites are a few kilobytes).
MAX_YAML_BYTES = 10 * 2**20

#: Nesting depth beyond which a document is refused (PyYAML composes recursively).
MAX_DEPTH = 200


def _expanded_size(node: yaml.Node, source: str) -> int:
    """Nodes in the tree ``node`` stands for once aliases are expanded (stops past the bound)."""
    sizes: dict[int, int] = {}

    def size(current: yaml.Node, depth: int, path: frozenset[int]) -> int:
        key = id(current)
        if key in path:
            raise ConfigError(
                f"{source}: an alias refers to a value that contains it (line "
                f"{current.start_mark.line + 1}), which expands forever. Fix: remove the alias"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{source}: nested more than {MAX_DEPTH} levels deep (line "
                f"{current.start_mark.line + 1}). Fix: flatten the document"
            )
        if key in sizes:
            return sizes[key]
        total = 1
        if isinstance(current, yaml.SequenceNode | yaml.MappingNode):
            children = (
                current.value
                if isinstance(current, yaml.SequenceNode)
                else [child for pair in current.value for child in pair]
            )
            inner = path | {key}
            for child in children:
                total += size(child, depth + 1, inner)
                if total > MAX_EXPANDED_NODES:
                    break
        sizes[key] = total
        return total

    return size(node, 0, frozenset())


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses repeated keys (checked before merge keys ``<<`` are applied)."""

    source = "<yaml>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it with its own message
                continue
            if repeated:
                shown = key if isinstance(key, str) and len(key) <= 80 else "(a long key)"
                raise ConfigError(
                    f"{self.source}: line {key_node.start_mark.line + 1}: the key '{shown}' is "
                    "given twice in the same mapping (YAML would silently keep the last). "
                    "Fix: keep one"
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document, within bounds.

    Parameters
    ----------
    text : str
        The document.
    source : str
        Its file name, for messages.

    Returns
    -------
    Any
        What ``yaml.safe_load`` would return (None for an empty document).

    Raises
    ------
    ConfigError
        For invalid YAML (with line and column), a document larger than
        :data:`MAX_EXPANDED_NODES` values once its aliases are expanded, nesting deeper than
        :data:`MAX_DEPTH`, or a key given twice in one mapping (with the key and its line).
    """
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # refuses unprintable characters at once
        loader.source = source
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, source) > MAX_EXPANDED_NODES:
            raise ConfigError(
                f"{source}: holds more than {MAX_EXPANDED_NODES:,} values once its aliases "
                "(*name) are expanded; refused. Fix: write the values out, or use fewer aliases"
            )
        return loader.construct_document(node)
    except ConfigError:
        raise
    except ValueError:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(
            f"{source}: a number with more digits than can be read (at most 4,300). Fix: "
            "write it with fewer digits"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise ConfigError(
            f"{source}: not valid YAML{where}: {problem}. Fix: check indentation and quoting there."
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{source}: nested too deeply to read. Fix: flatten the document"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path) -> Any:
    """:func:`load_yaml` of a file, read with a size bound and as UTF-8.

    Raises
    ------
    ConfigError
        When the file cannot be read, is larger than :data:`MAX_YAML_BYTES`, is not UTF-8 text,
        or :func:`load_yaml` refuses it.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read the file ({error.strerror}). Fix: check the path."
        ) from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_YAML_BYTES // 2**20} MB, too large for a configuration. "
            "Fix: check the path"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}). Fix: save the file as UTF-8"
        ) from None
    return load_yaml(text, str(path))
