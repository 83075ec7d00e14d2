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


# Token kinds: one character (a literal, "?" or a class), "*" and "**".
_ONE, _STAR, _ANY = "one", "star", "any"
Token = tuple[str, str]  # (kind, regular expression for it)


def _glob_tokens(pattern: str) -> tuple[bool, list[Token]]:
    """(anchored, tokens) of a glob; each token's regex is what glob_regex joins."""
    anchored = "/" in pattern
    if anchored and not pattern.startswith("/"):
        pattern = "/" + pattern
    out: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                out.append((_ANY, ".*"))
                i += 2
                continue
            out.append((_STAR, "[^/]*"))
        elif char == "?":
            out.append((_ONE, "[^/]"))
        elif char == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1  # a "]" right after "[" or "[!" is a member, as in fnmatch
            j = pattern.find("]", j)
            if j < 0:
                out.append((_ONE, re.escape(char)))
            else:
                inner = pattern[i + 1 : j].replace("\\", "\\\\")
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                elif inner.startswith("^"):
                    inner = "\\" + inner
                out.append((_ONE, f"[{inner}]"))
                i = j + 1
                continue
        else:
            out.append((_ONE, re.escape(char)))
        i += 1
    return anchored, out


def glob_regex(pattern: str) -> str:
    """A regular expression (for ``fullmatch`` on a URL path) equivalent to ``pattern``."""
    anchored, tokens = _glob_tokens(pattern)
    body = "".join(regex for _, regex in tokens)
    return body if anchored else f"(?:.*/)?{body}"


def _regex_is_linear(pattern: str) -> bool:
    """Whether glob_regex(pattern) backtracks at most linearly in the path's length.

    Each unbounded star (plus the "(?:.*/)?" of an unanchored glob) is a place the
    regex engine may retry; two stars that can cover the same characters retry in
    O(n**2) or worse (``*a*a*b`` on ``/aaaa…``: O(n**4)). Safe shapes: an anchored
    glob with at most one star; an unanchored one with no ``**`` and at most one
    ``*``: its prefix stops at each "/" once and the body's ``*`` then scans one
    segment, so the segments are scanned a bounded number of times.
    """
    anchored, tokens = _glob_tokens(pattern)
    stars = [kind for kind, _ in tokens if kind != _ONE]
    return len(stars) <= 1 if anchored else stars in ([], [_STAR])


class _GlobAutomaton:
    """All the rules as one NFA, run over the path a character at a time.

    Linear in the path for any globs (O(len(path)) steps of a few integer operations
    on a bitmask of all the rules' states: the bit-parallel Shift-And simulation of
    the glob's Thompson automaton), where a backtracking regex can be polynomial. Rule
    r's states are bits base_r .. base_r + len(tokens_r): bit base_r + i means "the
    first i tokens matched"; a star's state loops on its characters and is entered
    without consuming one. Adjacent stars are merged, so one step closes the set.
    Used only when some rule's regex could backtrack super-linearly.
    """

    __slots__ = ("_accept", "_any", "_chars", "_classes", "_eps", "_literals", "_question",
                 "_rule_of", "_star", "_start")

    CHAR_CACHE = 256  # characters whose transition masks are remembered

    def __init__(self, patterns: list[str]) -> None:
        self._literals: dict[str, int] = {}
        self._classes: list[tuple[re.Pattern[str], int]] = []
        self._question = self._star = self._any = self._eps = self._start = self._accept = 0
        self._rule_of: dict[int, int] = {}
        self._chars: dict[str, tuple[int, int]] = {}
        base = 0
        for index, pattern in enumerate(patterns):
            anchored, tokens = _glob_tokens(pattern)
            if not anchored:  # "(?:.*/)?": a "**" and a "/", both skippable at once
                tokens = [(_ANY, ".*"), (_ONE, "/"), *tokens]
                self._start |= 1 << (base + 2)
            merged: list[Token] = []
            for kind, regex in tokens:
                if kind != _ONE and merged and merged[-1][0] != _ONE:
                    # "[^/]*[^/]*" is "[^/]*"; either with ".*" is ".*"
                    if kind == _ANY:
                        merged[-1] = (_ANY, ".*")
                    continue
                merged.append((kind, regex))
            self._start |= 1 << base
            for offset, (kind, regex) in enumerate(merged, 1):
                bit = 1 << (base + offset)
                if kind == _ANY:
                    self._any |= bit
                    self._eps |= bit
                elif kind == _STAR:
                    self._star |= bit
                    self._eps |= bit
                elif regex == "[^/]":
                    self._question |= bit
                elif regex.startswith("["):  # a class; a literal "[" is escaped
                    self._classes.append((re.compile(regex, re.DOTALL), bit))
                else:
                    literal = regex[-1]  # re.escape of one character
                    self._literals[literal] = self._literals.get(literal, 0) | bit
            accept = base + len(merged)
            self._accept |= 1 << accept
            self._rule_of[accept] = index
            base = accept + 1
        self._start |= (self._start << 1) & self._eps

    def _masks(self, char: str) -> tuple[int, int]:
        """(states entered from their predecessor on ``char``, states that loop on it)."""
        masks = self._chars.get(char)
        if masks is None:
            single = self._literals.get(char, 0)
            loop = self._any
            if char != "/":
                single |= self._question
                loop |= self._star
            for regex, bit in self._classes:
                if regex.fullmatch(char):
                    single |= bit
            masks = (single, loop)
            if len(self._chars) < self.CHAR_CACHE:
                self._chars[char] = masks
        return masks

    def first_match(self, path: str) -> int | None:
        """Index of the first rule whose glob matches all of ``path``, or None."""
        states, eps = self._start, self._eps
        for char in path:
            single, loop = self._masks(char)
            states = ((states << 1) & single) | (states & loop)
            states |= (states << 1) & eps
            if not states:
                return None
        hits = states & self._accept
        if not hits:
            return None
        return self._rule_of[(hits & -hits).bit_length() - 1]


class CacheRules:
    """First-match lookup over the rules, with the built-in catch-all last."""

    __slots__ = ("_automaton", "_matcher", "_values")

    def __init__(self, rules: Iterable[tuple[str, str | None]]) -> None:
        ordered = list(rules)
        if all(pattern != CATCH_ALL for pattern, _ in ordered):
            ordered.append((CATCH_ALL, DEFAULT_CACHE_CONTROL))
        self._values = [value for _, value in ordered]
        patterns = [pattern for pattern, _ in ordered]
        self._automaton: _GlobAutomaton | None = None
        self._matcher: re.Pattern[str] | None = None
        if all(_regex_is_linear(pattern) for pattern in patterns):
            # One alternation, one fullmatch per request: the regex engine tries the
            # alternatives left to right, so lastindex names the first rule that
            # matches. Each alternative backtracks at most linearly (issue 13).
            alternatives = "|".join(f"({glob_regex(pattern)})" for pattern in patterns)
            self._matcher = re.compile(alternatives, re.DOTALL)
        else:
            # Some glob has stars a backtracking engine could retry in O(n**k) on a
            # path the client chose: run the automaton instead (a few us per path).
            self._automaton = _GlobAutomaton(patterns)

    def __call__(self, path: str) -> str | None:
        """The Cache-Control value for a URL path such as ``/css/site.css``, or None."""
        if self._matcher is None:
            assert self._automaton is not None
            index = self._automaton.first_match(path)
            return None if index is None else self._values[index]
        match = self._matcher.fullmatch(path)
        if match is None or match.lastindex is None:
            return None
        return self._values[match.lastindex - 1]
