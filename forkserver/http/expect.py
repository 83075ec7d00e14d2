"""The HTTP core's server-wide answers: the Expect field, and ``OPTIONS *``.

Owns what no site or file decides: an expectation the server cannot meet gets 417
(RFC 9110 §10.1.1), and ``OPTIONS *`` — a question about the server itself, not a
resource — gets 200 with the methods it implements (RFC 9110 §9.3.7). Must not
touch sockets or the file system; the worker asks before it plans a request.

``Expect: 100-continue`` is met without an interim response: request bodies are
never read (a request with one is answered and its connection closed, RFC 9112
§9.6), and RFC 9110 §10.1.1 lets a server that will not read the content answer
with the final status at once instead of 100 (Continue).
"""

from __future__ import annotations

from collections.abc import Callable

from forkserver.http.request import Request
from forkserver.http.response import NOSNIFF, Plan, encode_fields

ALLOW = "GET, HEAD, OPTIONS"  # OPTIONS * (RFC 9110 §9.3.7): what this server implements
CONTINUE = "100-continue"  # the one expectation defined (RFC 9110 §10.1.1)


def unmet_expectation(request: Request) -> bool:
    """True when the Expect field asks for anything but 100-continue.

    The field is a list (``100-continue, foo`` holds two expectations: 417) and its
    value is case-insensitive; empty list elements are allowed and ignored (RFC 9110
    §5.6.1). HTTP/1.0 requests' 100-continue is ignored as §10.1.1 requires; other
    expectations still cannot be met. One split: linear in the field's length.
    """
    value = request.headers.get("expect")
    if value is None:
        return False
    items = [item.strip(" \t").lower() for item in value.split(",")]
    return any(item and item != CONTINUE for item in items)


class ServerAnswers:
    """The two answers, built once per worker (the configured extra headers included)."""

    def __init__(
        self, error_plan: Callable[..., Plan], extra: list[tuple[str, str]],
    ) -> None:
        self.error_plan = error_plan  # the site's page for a status (head=...)
        headers = [("Allow", ALLOW), ("Content-Length", "0"), NOSNIFF, *extra]
        self.options = Plan(200, headers, encoded=encode_fields(headers))

    def answer(self, request: Request) -> Plan | None:
        """417, or the answer to OPTIONS *; None: plan the request as usual."""
        if unmet_expectation(request):
            return self.error_plan(417, head=request.method == "HEAD")
        if request.path == "*" and request.method == "OPTIONS":
            return self.options
        return None
