"""Per-judge sign-in tokens: random, shown once, stored only as a salted SHA-256 hash.

A token holds 192 random bits, so a fast hash is enough (no guessing can find a preimage); the
salt keeps equal hashes from revealing anything across stores.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from llmpo.errors import ConfigError
from llmpo.store import Store

#: Allowed judge names: what appears in the store, the status page and the exports.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@ -]{0,39}$")
TOKEN_PREFIX = "llmpo_"


def check_name(name: str) -> str:
    """A valid judge name, stripped.

    Raises
    ------
    ValueError
        Naming the rule.
    """
    name = name.strip()
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"judge name {name!r}: use 1 to 40 letters, digits, spaces or _ . @ -, starting "
            "with a letter or digit"
        )
    return name


def hash_token(token: str, salt: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(f"{salt}:{token}".encode()).hexdigest()


def add_judge(store: Store, name: str, replace: bool = False) -> str:
    """Create (or with ``replace``, renew) a judge's token; returns the token, never stored.

    Raises
    ------
    ValueError
        For an invalid name.
    StoreError
        When the judge exists and ``replace`` is False.
    """
    name = check_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    salt = secrets.token_hex(16)
    store.set_judge(name, salt, hash_token(token, salt), replace)
    return token


def judge_for_token(store: Store, token: str | None) -> str | None:
    """The name of the judge whose token this is, or None (every hash is compared)."""
    if not token or len(token) > 200:
        return None
    found = None
    for name, salt, stored in store.judge_credentials():
        if hmac.compare_digest(hash_token(token, salt), stored):
            found = name
    return found


def csrf_token(token: str) -> str:
    """The anti-forgery value a judge's forms carry: derived from their (secret) token."""
    return hmac.new(token.encode(), b"llmpo-csrf-v1", hashlib.sha256).hexdigest()
