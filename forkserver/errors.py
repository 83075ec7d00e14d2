"""Exceptions shared across layers.

Owns the error types that carry a user-facing meaning (an HTTP status, a list of
configuration problems, a start-up failure). Imports nothing from the package.
"""

from __future__ import annotations


class HttpError(Exception):
    """A request that must be answered with an error status.

    Raised by the parser (400/414/431/501/505) and by the static planner (400 for a
    path that climbs above the docroot). ``close`` says whether the connection must be
    closed after the response: after a framing error the rest of the byte stream
    cannot be trusted (RFC 9112 §6.3), so parser errors always close.
    """

    def __init__(self, status: int, reason: str, *, close: bool = True) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.close = close


class ConfigError(Exception):
    """One or more configuration problems, each already formatted for a human.

    Every problem names the key, the value and where it came from (``file:line`` or
    ``command line``), so the CLI can print them one per line and exit 2.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupError(Exception):
    """A runtime failure before serving (cannot bind, pidfile held): exit status 1."""
