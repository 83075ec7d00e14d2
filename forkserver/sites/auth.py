"""HTTP Basic authentication (RFC 7617): parse the header, check it, remember the answer.

Owns the ``Authorization: Basic`` parser (linear and bounded: anything malformed is
simply "no credentials", i.e. 401, never an exception), the 401 challenge, and the
per-worker memory of checked credentials. A bcrypt check costs tens of milliseconds,
so ``Verifier.verdict`` never runs one: it answers from memory or hands back the
check as a callable the worker runs off its loop (``forkserver.offload``), and
``Verifier.record`` keeps its result. Must not touch sockets, threads or files.

The memory never holds a password: its keys are keyed BLAKE2b digests of the header
value (and the users' file) under a random key made per process, so a core dump or a leak of the
worker's memory yields nothing to try offline. It is an LRU of bounded size, for
right and wrong answers apart, so a client cycling through wrong passwords evicts
only other wrong answers, never a user's accepted one.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import bcrypt

from forkserver.config.htpasswd import Htpasswd

__all__ = [
    "GRANTED",
    "MAX_CREDENTIALS_CHARS",
    "REFUSED",
    "Guard",
    "Pending",
    "Verifier",
    "basic_credentials",
]

# An Authorization value longer than this is refused without decoding: a user name
# and a password of a few hundred characters each fit many times over.
MAX_CREDENTIALS_CHARS = 4096
# Credentials remembered per worker, right and wrong apart (one digest of 32 bytes
# and a dict slot each: ~100 KiB in all).
GRANTED_MEMORY = 1024
REFUSED_MEMORY = 1024
# For an unknown user the same bcrypt work is done against this hash, so how long a
# 401 takes does not tell which user names exist (cost 10, of "not a password").
_DUMMY_HASH = b"$2b$10$Q5FWj4zKDdcjC3VYyQyY5uwzqMYxiH8fb8OPDxA3qX7iAErGaYhN2"

GRANTED, REFUSED = True, False
# RFC 7617 §2: neither the user-id nor the password may contain a control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def basic_credentials(value: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization`` value, or None for anything else.

    RFC 7617 §2: ``Basic`` (any case), one or more spaces, token68 base64 of
    ``user-id ":" password`` in UTF-8 (§2.1, the charset we announce). Not Basic,
    not base64 (strictly: padding and alphabet), no colon, a control character, not
    UTF-8, or longer than MAX_CREDENTIALS_CHARS: None, and the caller answers 401.
    Every step is one linear pass.
    """
    if value is None or len(value) > MAX_CREDENTIALS_CHARS:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    token = token.lstrip(" ")
    if not token or not token.isascii():
        return None
    try:
        decoded = binascii.a2b_base64(token, strict_mode=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = text.partition(":")
    if not colon or not user or _CONTROL.search(text):
        return None
    return user, password


@dataclass(frozen=True, slots=True)
class Guard:
    """One ``auth`` rule, compiled: its realm, its users and the challenge to send."""

    realm: str  # checked at load: printable, no '"' or '\'
    users: Htpasswd
    # 16 bytes naming the users' file, for Verifier's keys (BLAKE2b's salt size).
    salt: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        salt = hashlib.blake2b(self.users.path.encode(), digest_size=16).digest()
        object.__setattr__(self, "salt", salt)

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate value of a 401 (RFC 7617 §2, §2.1)."""
        return f'Basic realm="{self.realm}", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class Pending:
    """A check to run off the loop; hand its result to ``Verifier.record``."""

    key: bytes
    work: Callable[[], bool]


class Verifier:
    """One per worker: answers from memory, or says which bcrypt check to run."""

    __slots__ = ("_granted", "_hashers", "_key", "_refused")

    def __init__(self) -> None:
        self._key = os.urandom(64)  # BLAKE2b's longest key
        self._granted: OrderedDict[bytes, None] = OrderedDict()
        self._refused: OrderedDict[bytes, None] = OrderedDict()
        # A keyed BLAKE2b per users' file (by its salt) with the key block already
        # compressed: a copy of it costs a third less than keying a new one per request.
        # As many as the configuration has htpasswd files.
        self._hashers: dict[bytes, hashlib.blake2b] = {}

    def verdict(self, guard: Guard, authorization: str | None) -> bool | Pending:
        """GRANTED, REFUSED (answer 401), or a Pending check for the offload pool.

        The memory is keyed by a keyed hash of the header value as sent (with the
        users' file): a remembered value costs one BLAKE2 of a few dozen bytes and a
        dict probe, not a base64 decode. Only values that parsed are ever remembered.
        """
        if authorization is None or len(authorization) > MAX_CREDENTIALS_CHARS:
            return REFUSED
        key = self._digest(guard, authorization)
        if key in self._granted:
            self._granted.move_to_end(key)
            return GRANTED
        if key in self._refused:
            self._refused.move_to_end(key)
            return REFUSED
        credentials = basic_credentials(authorization)
        if credentials is None:
            return REFUSED
        user, password = credentials
        hashed = guard.users.hash_of(user)
        secret = password.encode("utf-8")
        if hashed is None:
            def work() -> bool:
                bcrypt.checkpw(secret, _DUMMY_HASH)  # same time as a real check
                return False
        else:
            known = hashed

            def work() -> bool:
                return bcrypt.checkpw(secret, known)
        return Pending(key, work)

    def record(self, key: bytes, granted: bool) -> None:
        """Remember a finished check's answer (on the loop's thread)."""
        memory, size = (self._granted, GRANTED_MEMORY) if granted else (
            self._refused, REFUSED_MEMORY)
        memory[key] = None
        memory.move_to_end(key)
        if len(memory) > size:
            memory.popitem(last=False)

    def _digest(self, guard: Guard, authorization: str) -> bytes:
        # Keyed BLAKE2b is a MAC (RFC 7693 §2.5): without the per-process key the
        # digests say nothing about the passwords. The users' file is part of the
        # input (the salt), so guards of two files never share an answer.
        hasher = self._hashers.get(guard.salt)
        if hasher is None:
            hasher = self._hashers[guard.salt] = hashlib.blake2b(
                key=self._key, salt=guard.salt, digest_size=32)
        hasher = hasher.copy()
        hasher.update(authorization.encode("latin-1"))
        return hasher.digest()
