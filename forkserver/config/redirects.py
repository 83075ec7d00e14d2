"""Redirect templates: ``/new/{rest}{query}`` checked once at load, filled per request.

Owns the template grammar (SPEC §8), its load-time checks and the rendering of a
``Location`` from the parts of a request (forkserver/sites/rules.py calls ``render``;
it lives here so the configuration can check templates without importing the sites
package). Pure string work: no requests, no files.

What a client sends can only land where the template puts a placeholder, and only
as URI characters: values keep the percent-encoding as sent (``%20`` stays
``%20``; nothing is decoded, so no space, CR/LF or ``<`` can ever appear), and the
few visible characters a request-target may carry but a URI may not (``"<>\\^`{|}``)
are percent-encoded on the way. A template cannot give the client the authority: an
absolute template's scheme and host are literal and end before the first
placeholder (``https://example.org{rest}`` with ``rest`` = ``@evil.example`` would
be a userinfo), and a relative one that would start with ``//`` after filling
(``/{rest}`` with ``rest`` = ``/evil.example``) keeps one slash, so a browser never
reads it as a network-path reference to another host (RFC 3986 §4.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "PLACEHOLDERS", "REDIRECT_STATUSES", "Template", "TemplateProblem", "compile_template",
    "rest_offset",
]

PATH, REST, QUERY = "path", "rest", "query"
PLACEHOLDERS = (PATH, REST, QUERY)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
DEFAULT_REDIRECT_STATUS = 301
MAX_TEMPLATE_CHARS = 2048

# The URI characters a value may keep as sent (RFC 3986 §2.2, §3.3, §3.4, and "%" of
# the escapes already there); quote() escapes every other character. "?" only in
# the query.
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# A template's literal text: visible ASCII URI characters (reserved, unreserved, "%").
_LITERAL = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ABSOLUTE = re.compile(r"(?i:https?)://")


class TemplateProblem(ValueError):
    """Why a redirect template is refused; completes the sentence "redirect: T …"."""


@dataclass(frozen=True, slots=True)
class Template:
    """A checked template: literal text and placeholder names, alternating."""

    parts: tuple[str, ...]  # literal, name, literal, name, …, literal (odd length)
    relative: bool  # starts with "/" (the same host)

    @property
    def uses_rest(self) -> bool:
        return REST in self.parts[1::2]

    def render(self, path: str, rest: str, query: str) -> str:
        """The Location for one request; ``query`` is the raw query without "?"."""
        values = {
            PATH: quote(path, safe=_PATH_SAFE),
            REST: quote(rest, safe=_PATH_SAFE),
            QUERY: "?" + quote(query, safe=_QUERY_SAFE) if query else "",
        }
        parts = self.parts
        out = [parts[0]]
        for index in range(1, len(parts), 2):
            out.append(values[parts[index]])
            out.append(parts[index + 1])
        location = "".join(out)
        if self.relative and location.startswith("//"):
            # "/{rest}" with rest "/evil.example": one slash, never another host.
            location = "/" + location.lstrip("/")
        return location


def compile_template(text: str) -> Template:
    """A Template from ``text``; TemplateProblem says what is wrong with it."""
    if not text:
        raise TemplateProblem("is empty")
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(f"is longer than {MAX_TEMPLATE_CHARS} characters")
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(_literal(text[position : match.start()]))
        name = match[1]
        if name not in PLACEHOLDERS:
            raise TemplateProblem(
                f"has an unknown placeholder {{{name}}} (use {{path}}, {{rest}} or {{query}})"
            )
        parts.append(name)
        position = match.end()
    parts.append(_literal(text[position:]))
    if _ABSOLUTE.match(text):
        _check_authority(parts)
        return Template(tuple(parts), relative=False)
    if not text.startswith("/") or text.startswith("//"):
        raise TemplateProblem(
            "must start with a single '/' (this site) or with http:// or https:// and a host"
        )
    return Template(tuple(parts), relative=True)


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise TemplateProblem("has a '{' or '}' that is not part of {path}, {rest} or {query}")
    if not _LITERAL.fullmatch(text):
        raise TemplateProblem(
            "has characters a URI cannot carry (spaces, quotes, '<', '>', '\\', controls "
            "or non-ASCII: percent-encode them)"
        )
    return text


def rest_offset(pattern: str) -> int | None:
    """Where ``{rest}`` starts in a path the glob ``pattern`` matches, or None.

    ``{rest}`` is what a trailing ``*``/``**`` matched. It is found without a second
    match when the glob is anchored (has a "/", as in cache_control) and that star is
    its only one: every earlier token (a character, ``?`` or a ``[class]``) matches
    exactly one character, so the rest starts at their count.
    """
    if "/" not in pattern:
        return None
    if not pattern.startswith("/"):
        pattern = "/" + pattern
    if not pattern.endswith("*"):
        return None
    prefix = pattern.rstrip("*")
    if len(pattern) - len(prefix) > 2:
        return None  # "***" is no glob anyone means
    count, i, n = 0, 0, len(prefix)
    while i < n:
        char = prefix[i]
        if char == "*":
            return None
        if char == "[":  # a class is one character; the same reading as caching.py's
            j = i + 1
            if j < n and prefix[j] == "!":
                j += 1
            if j < n and prefix[j] == "]":
                j += 1
            j = prefix.find("]", j)
            if j >= 0:
                i = j
        count += 1
        i += 1
    return count


def _check_authority(parts: list[str]) -> None:
    """The scheme and host of an absolute template are literal, and end before any value."""
    first = parts[0]
    authority_start = first.index("//") + 2
    end = len(first)
    for mark in "/?#":
        found = first.find(mark, authority_start)
        if found >= 0:
            end = min(end, found)
    authority = first[authority_start:end]
    if not authority or "@" in authority:
        raise TemplateProblem("must name a host after the scheme, without a user name")
    if end == len(first) and len(parts) > 1 and parts[1] != PATH:
        # {path} always starts with "/", which ends the authority. {rest} could start
        # with "@evil.example" or ".evil.example"; {query} may be empty and let the
        # next value follow the host.
        raise TemplateProblem(
            f"puts {{{parts[1]}}} right after the host: write a '/' before it "
            f"(https://host/{{{parts[1]}}})"
        )
