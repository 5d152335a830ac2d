"""llmpo's error classes, and the one place where secrets are scrubbed from error text.

Every error llmpo raises on purpose derives from :class:`LlmpoError`; its message names the file
or field at fault and the fix (also kept as the error's ``field``, ``problem`` and ``fix``). Error
text that may carry a secret (a server's error body, a configuration value) goes through
:func:`scrub` — or :func:`clip`, which scrubs *before* it shortens, so that no part of a key
survives a cut — before it reaches stderr, the store or a report.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "BackendError",
    "ConfigError",
    "DataError",
    "LlmpoError",
    "RunFailedError",
    "StateError",
    "StoreError",
    "clip",
    "looks_like_key",
    "register_secret",
    "scrub",
    "scrub_value",
]


class LlmpoError(Exception):
    """Base of every error llmpo raises on purpose: a message for its user, never a traceback.

    The command line catches this one type (in :mod:`llmpo.cli`), prints the message and exits
    with :attr:`exit_code`. Catch it to handle any error of llmpo's; the subclasses below say
    which part of the input or which resource is at fault.

    Parameters
    ----------
    message : str, optional
        The whole message. By default it is composed from ``field``, ``problem`` and ``fix``:
        ``field 'FIELD': PROBLEM. Fix: FIX.``
    field : str, optional
        What is at fault: a configuration field (dotted), a file, an argument.
    problem : str, optional
        What is wrong with it.
    fix : str, optional
        What to do about it.
    """

    #: Exit status of the command line for this error: 2, as for a usage error (bad input).
    exit_code: int = 2

    def __init__(
        self,
        message: str = "",
        *,
        field: str | None = None,
        problem: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        if not message:
            where = f"field '{field}': " if field else ""
            message = f"{where}{problem or 'invalid'}" + (f". Fix: {fix}." if fix else "")
        super().__init__(message)


class ConfigError(LlmpoError, ValueError):
    """A configuration or argument that cannot be used; names the file, the field and the fix."""


class DataError(LlmpoError, ValueError):
    """An input file (instance, tasks, judgments) that cannot be used; names the file and field."""


class PluginError(LlmpoError, TypeError):
    """A plug-in registered wrongly (a name taken, an object of the wrong kind, a config model
    without its ``type`` tag); names the plug-in and what it must provide."""


class StoreError(LlmpoError, RuntimeError):
    """A store that cannot be used (corrupt, foreign, newer, busy, missing), with the fix."""


class BackendError(LlmpoError, RuntimeError):
    """A generation that failed for good (after retries, or a permanent error)."""


class StateError(LlmpoError, RuntimeError):
    """An operation the object's state does not allow (telling an experiment that is done)."""


class RunFailedError(LlmpoError, RuntimeError):
    """A run stopped by a failure it cannot retry (a live backend); every finished comparison
    is stored, so it can be resumed."""

    #: A run that failed exits 1 (an input error exits 2).
    exit_code = 1


#: Shown in place of a secret.
MASK = "***"

#: Secrets shorter than this are not registered (a placeholder such as "x" would mask everything).
_MIN_SECRET = 8

#: Secrets of this process (API keys read at run time); never written anywhere.
_secrets: set[str] = set()

# Key-shaped tokens of the common providers (sk-…, sk-ant-…, gsk_…, hf_…, AIza…, xai-…), and any
# bearer token, so that a key that was never registered (a config value, a server echoing another
# key) is masked as well. Long enough not to catch ordinary words.
_KEY_PATTERN = re.compile(
    r"(?:\b(?:sk|pk|rk|gsk|xai)[-_][A-Za-z0-9_\-]{12,}"
    r"|\bhf_[A-Za-z0-9]{20,}"
    r"|\bAIza[A-Za-z0-9_\-]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{12,}=*)"
)


def register_secret(secret: str) -> None:
    """Remember ``secret`` (an API key read at run time) so that :func:`scrub` masks it."""
    if len(secret) >= _MIN_SECRET:
        _secrets.add(secret)


def looks_like_key(value: str) -> bool:
    """Whether ``value`` has the shape of an API key (e.g. ``sk-…``) rather than a name."""
    if _KEY_PATTERN.search(value):
        return True
    # A long run of mixed letters and digits that is not an environment-variable name (those
    # are upper case): a key of an unknown provider.
    return (
        len(value) >= 32
        and re.fullmatch(r"[A-Za-z0-9_\-.]+", value) is not None
        and re.search(r"[0-9]", value) is not None
        and re.search(r"[a-z]", value) is not None
    )


def _mask_fragments(text: str, secret: str) -> str:
    """Mask a piece of ``secret`` cut off at either end of ``text`` (≥ 8 characters of it)."""
    for size in range(len(secret) - 1, _MIN_SECRET - 1, -1):
        if text.endswith(secret[:size]):
            text = text[:-size] + MASK
            break
    for size in range(len(secret) - 1, _MIN_SECRET - 1, -1):
        if text.startswith(secret[-size:]):
            text = MASK + text[size:]
            break
    return text


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every known secret, every key-shaped token and ``secrets`` masked.

    A piece of a secret at the very start or end of ``text`` (a cut made elsewhere) is masked
    too.
    """
    known = {*_secrets, *(secret for secret in secrets if len(secret) >= _MIN_SECRET)}
    for secret in sorted(known, key=len, reverse=True):
        text = _mask_fragments(text.replace(secret, MASK), secret)
    return _KEY_PATTERN.sub(MASK, text)


def scrub_value(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, numbers) with :func:`scrub` applied to every
    string in it."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: scrub_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(item) for item in value]
    return value


def clip(text: str, limit: int, *secrets: str) -> str:
    """:func:`scrub` ``text``, then shorten it to ``limit`` characters (with a ``…`` marker).

    Scrubbing first is the point: a cut made before would leave the part of a key that straddles
    it unrecognisable.
    """
    text = scrub(text, *secrets)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
