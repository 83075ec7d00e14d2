"""Cache-Control by glob: the ``cache_control`` rules → the value for a URL path.

Owns the glob syntax of the rules and the first-match lookup. Pure string work:
must not touch files, sockets or requests.

Glob syntax (pinned by ``tests/unit/test_caching.py``), gitignore-like:

* A pattern without ``/`` matches the last path segment (the file name) anywhere:
  ``*.css`` matches ``/site.css`` and ``/a/b/site.css``.
* A pattern with a ``/`` is anchored at the docroot (a leading ``/`` is optional):
  ``/assets/*`` matches ``/assets/app.js`` but not ``/assets/img/logo.png``;
  ``/assets/**`` matches everything below ``/assets/``.
* ``*`` is any run of characters except ``/``, ``**`` any run including ``/``, ``?``
  one character except ``/``, ``[abc]``/``[a-z]``/``[!abc]`` a class. Matching is
  case-sensitive, like the filesystem.
* Rules are tried in the order written; the first match decides. A rule whose value
  is None sends no Cache-Control. The built-in rule ``"*": "no-cache"`` is always
  last, so a file that matches nothing is revalidated on every use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["DEFAULT_CACHE_CONTROL", "CacheRules", "glob_regex"]

# Without explicit freshness a cache may invent some from Last-Modified (RFC 9111
# §4.2.2); "no-cache" makes every use a cheap conditional request instead.
DEFAULT_CACHE_CONTROL = "no-cache"
CATCH_ALL = "*"


def glob_regex(pattern: str) -> str:
    """A regular expression (for ``fullmatch`` on a URL path) equivalent to ``pattern``."""
    anchored = "/" in pattern
    if anchored and not pattern.startswith("/"):
        pattern = "/" + pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1  # a "]" right after "[" or "[!" is a member, as in fnmatch
            j = pattern.find("]", j)
            if j < 0:
                out.append(re.escape(char))
            else:
                inner = pattern[i + 1 : j].replace("\\", "\\\\")
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                elif inner.startswith("^"):
                    inner = "\\" + inner
                out.append(f"[{inner}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(char))
        i += 1
    body = "".join(out)
    return body if anchored else f"(?:.*/)?{body}"


class CacheRules:
    """First-match lookup over the rules, with the built-in catch-all last."""

    __slots__ = ("_matcher", "_values")

    def __init__(self, rules: Iterable[tuple[str, str | None]]) -> None:
        ordered = list(rules)
        if all(pattern != CATCH_ALL for pattern, _ in ordered):
            ordered.append((CATCH_ALL, DEFAULT_CACHE_CONTROL))
        self._values = [value for _, value in ordered]
        # One alternation, one fullmatch per request: the regex engine tries the
        # alternatives left to right, so lastindex names the first rule that matches.
        alternatives = "|".join(f"({glob_regex(pattern)})" for pattern, _ in ordered)
        self._matcher = re.compile(alternatives, re.DOTALL)

    def __call__(self, path: str) -> str | None:
        """The Cache-Control value for a URL path such as ``/css/site.css``, or None."""
        match = self._matcher.fullmatch(path)
        if match is None or match.lastindex is None:
            return None
        return self._values[match.lastindex - 1]
