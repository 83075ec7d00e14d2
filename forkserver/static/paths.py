"""URL path → names under the docroot: percent-decoding once, dot-segments, hidden names.

Owns how a request's percent-encoded path becomes the plain names the contained walk
opens (``resolve_path``), which names are hidden (dotfiles, except ``.well-known`` at
the top), and how a path is copied into a redirect's Location. Must not touch the
filesystem: strings in, names or an ``HttpError`` out.

Decisions (pinned by ``tests/unit/test_static.py``):

* The path is percent-decoded exactly once; ``%`` not followed by two hex digits
  → 400; the bytes must be strict UTF-8 (overlong forms such as ``%c0%ae`` and
  surrogates → 400); NUL → 400. ``%2f`` decodes to ``/`` and then separates
  segments, so ``%2e%2e%2f`` is a dot-segment like ``../``. ``%252e`` decodes once to
  the literal name ``%2e``.
* Dot-segments are resolved (RFC 3986 §5.2.4); a ``..`` that would climb above the
  docroot → 400. Empty segments (``//``) are merged, as nginx's ``merge_slashes on``.
  A backslash is an ordinary filename byte on POSIX and never separates segments.
* Any segment starting with ``.`` → 404 (``.git``, ``.env``, ``.htpasswd``). One
  exception: ``.well-known`` as the first segment (RFC 8615), which exists to be
  public: ACME http-01 challenges, ``security.txt``. Dot-names below it are hidden
  again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from forkserver.errors import HttpError

__all__ = ["WELL_KNOWN", "ResolvedPath", "hidden", "redirect_location", "resolve_path"]


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    """A URL path after decoding and dot-segment resolution.

    ``segments`` are plain names: never empty, ``.``, ``..``, never containing ``/``
    or NUL, never starting with ``.``. ``directory`` says the path ended with ``/``
    (or with a dot-segment, which RFC 3986 §5.2.4 turns into one). ``canonical``
    says the decoded path was already in that form, so the path as sent can be reused
    in a redirect.
    """

    segments: tuple[str, ...]
    directory: bool
    canonical: bool


# Characters kept as they are when a path or query is copied into a Location: the
# RFC 3986 pchar set plus "%" (escapes stay as sent). quote() encodes all the rest.
_URI_SAFE = "/%!$&'()*+,;=:@"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def resolve_path(path: str) -> ResolvedPath:
    """Decode a percent-encoded URL path once and resolve its dot-segments.

    Raises HttpError(400) for a bad escape, invalid UTF-8, NUL or a climb above the
    root, and HttpError(404) for a dot segment (hidden file or directory). Both carry
    ``close=False``: the request was framed correctly; only its path is refused.
    """
    if not path.startswith("/"):
        raise HttpError(400, "path must start with /", close=False)
    if "%" in path or not path.isascii():
        if _BAD_ESCAPE.search(path):
            raise HttpError(400, "invalid percent-encoding", close=False)
        try:
            decoded = unquote_to_bytes(path).decode("utf-8")  # strict: overlong → error
        except UnicodeError:  # also a lone surrogate, which no request line can carry
            raise HttpError(400, "path is not valid UTF-8", close=False) from None
    else:
        decoded = path
    if "\x00" in decoded:
        raise HttpError(400, "NUL in path", close=False)

    if "/." not in decoded and "//" not in decoded:
        # Fast path: no dot-segment, no dotfile, no empty segment.
        directory = decoded.endswith("/")
        body = decoded[1:-1] if directory else decoded[1:]
        return ResolvedPath(tuple(body.split("/")) if body else (), directory, True)

    stack: list[str] = []
    parts = decoded.split("/")[1:]
    for part in parts:
        if part == "..":
            if not stack:
                raise HttpError(400, "path climbs above the docroot", close=False)
            stack.pop()
        elif part and part != ".":
            stack.append(part)
    last = parts[-1]
    directory = last in ("", ".", "..")
    if hidden(stack):
        raise HttpError(404, "hidden path segment", close=False)
    rebuilt = "/" + "/".join(stack) + ("/" if directory and stack else "")
    return ResolvedPath(tuple(stack), directory, rebuilt == decoded)


# RFC 8615: the one dot-name served, and only at the top of the docroot.
WELL_KNOWN = ".well-known"


def hidden(names: list[str]) -> bool:
    """Whether a path (segments from the docroot down) names a dotfile or dot-directory."""
    return any(
        name.startswith(".") and (index or name != WELL_KNOWN)
        for index, name in enumerate(names)
    )


def redirect_location(path: str, query: str, resolved: ResolvedPath) -> str:
    """The relative Location of the 301 that adds a directory's slash (RFC 9110 §10.2.2)."""
    if resolved.canonical:
        # The path as sent, its percent-encoding kept. Quoting again only touches
        # what is not already a URI character: a backslash (so no browser reads
        # "/\host" as "//host", an open redirect), controls, non-ASCII.
        location = quote(path, safe=_URI_SAFE) + "/"
    else:
        # Rebuilt from the normalised segments: "//evil.example" or "/a/../b"
        # never reach the Location as sent.
        location = quote("/" + "/".join(resolved.segments), safe="/") + "/"
    if query:
        location += "?" + quote(query, safe=_URI_SAFE + "?")
    return location
