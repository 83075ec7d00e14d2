"""htpasswd files of bcrypt hashes: read and checked at load, every problem with file:line.

Owns the file format (``user:hash`` per line, as ``htpasswd -B`` writes it) and the
refusal of every hash kind but bcrypt (``$2y$``, ``$2b$``, ``$2a$``): MD5
(``$apr1$``), SHA-1 (``{SHA}``), crypt(3) and plain text are fast enough to
brute-force from a leaked file, so a file holding one is a configuration error that
names the line, not a silent downgrade. Must not check passwords (``auth``) or know
about requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_COST", "MAX_HTPASSWD_BYTES", "MIN_COST", "Htpasswd", "HtpasswdError", "parse_htpasswd",
    "read_htpasswd",
]

# A real file has a few users; this bounds what a reload reads (the master reads it).
MAX_HTPASSWD_BYTES = 1024 * 1024
# bcrypt's cost is log2 of its rounds. htpasswd -B writes 5 by default; 4 is bcrypt's
# own minimum. Above 14 one check takes a second or more of a thread: a few wrong
# passwords would then hold the pool, so such a file is refused.
MIN_COST, MAX_COST = 4, 14
# "$2y$" cost "$" then 53 characters of bcrypt's base64 (22 of salt, 31 of hash).
_BCRYPT = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}")
# What the other kinds look like, to say which one a line holds.
_KINDS = (
    ("$apr1$", "an Apache MD5 hash ($apr1$)"),
    ("{SHA}", "a SHA-1 hash ({SHA})"),
    ("$1$", "an MD5-crypt hash ($1$)"),
    ("$5$", "a SHA-256-crypt hash ($5$)"),
    ("$6$", "a SHA-512-crypt hash ($6$)"),
    ("$2x$", "a bcrypt hash of the buggy $2x$ kind"),
)
_FIX = "re-create it with 'htpasswd -B'"


class HtpasswdError(Exception):
    """Every problem of one file, each ``FILE:LINE: reason``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Htpasswd:
    """One file's users: name → bcrypt hash (bytes, as bcrypt.checkpw takes it)."""

    path: str
    users: dict[str, bytes]

    def hash_of(self, user: str) -> bytes | None:
        return self.users.get(user)


def _kind(hashed: str) -> str:
    for prefix, kind in _KINDS:
        if hashed.startswith(prefix):
            return kind
    if len(hashed) == 13:
        return "a DES crypt(3) hash"
    return "not a bcrypt hash (plain text or an unknown kind)"


def parse_htpasswd(path: str, text: str) -> Htpasswd:
    """The users of a file's ``text``; HtpasswdError lists every bad line."""
    users: dict[str, bytes] = {}
    first_line: dict[str, int] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        where = f"{path}:{number}"
        if not colon or not user:
            problems.append(f"{where}: is not 'user:hash'")
            continue
        if not user.isprintable() or user != user.strip():
            problems.append(f"{where}: the user name has blanks or control characters")
            continue
        match = _BCRYPT.fullmatch(hashed)
        if match is None:
            problems.append(f"{where}: user {user!r}: the hash is {_kind(hashed)}; only "
                            f"bcrypt ($2y$, $2b$, $2a$) is accepted: {_FIX}")
            continue
        cost = int(match[1])
        if not MIN_COST <= cost <= MAX_COST:
            problems.append(f"{where}: user {user!r}: bcrypt cost {cost} is outside "
                            f"{MIN_COST}-{MAX_COST} (htpasswd -B -C 10 is a good choice)")
            continue
        if user in first_line:
            problems.append(f"{where}: user {user!r} repeats line {first_line[user]}")
            continue
        first_line[user] = number
        users[user] = hashed.encode("ascii")
    if problems:
        raise HtpasswdError(problems)
    return Htpasswd(path, users)


def read_htpasswd(path: str, shown: str | None = None) -> Htpasswd:
    """Read and parse the file at ``path`` (named ``shown`` in messages)."""
    name = shown or path
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_HTPASSWD_BYTES + 1)
    except OSError as exc:
        raise HtpasswdError([f"{name}: cannot be read: {exc.strerror}"]) from None
    if len(data) > MAX_HTPASSWD_BYTES:
        raise HtpasswdError([f"{name}: is larger than {MAX_HTPASSWD_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise HtpasswdError([f"{name}:{line}: is not UTF-8"]) from None
    return parse_htpasswd(name, text)
