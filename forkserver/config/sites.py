"""Checks of the ``rules:`` and ``sites:`` values read from YAML, each problem with its line.

Owns what a rule and a site entry may hold and the words of their messages. Pure:
values in (as PyYAML built them), settings or problems out; the configuration
package turns each ``(line, text)`` problem into ``FILE:LINE: text`` and loads the
htpasswd files the rules name. Must not read files itself.

``line_of(path)`` gives the line of a place in the value: ``(2,)`` is the third
rule, ``(2, "redirect")`` its redirect; a place without its own line reports at
its nearest enclosing one.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from urllib.parse import quote

from forkserver.config.checks import Invalid, kind_of, network, show
from forkserver.config.entries import extra_header
from forkserver.config.model import AuthSetting, RuleSetting
from forkserver.config.redirects import (
    DEFAULT_REDIRECT_STATUS,
    REDIRECT_STATUSES,
    TemplateProblem,
    compile_template,
    rest_offset,
)

__all__ = ["RULE_KEYS", "LineOf", "NameProblem", "Problems", "check_rules", "config_name",
           "site_names"]

LineOf = Callable[[tuple[object, ...]], int]
Problems = list[tuple[int, str]]  # (line, "KEY: VALUE reason")

RULE_KEYS = ("match", "redirect", "status", "fallback", "allow", "auth", "headers")
ACTIONS = ("redirect", "fallback", "allow", "auth", "headers")
MAX_RULES = 1000  # a list longer than this is a generated mistake, not a site's rules
# A realm is shown to users and quoted in WWW-Authenticate (RFC 9110 §11.6.1): visible
# characters and spaces, no '"' or '\' that would need escaping.
_REALM = re.compile(r"[\x20-\x7e]{1,200}")
_FALLBACK_SAFE = "/!$&'()*+,;=:@-._~"
WILDCARD_PREFIX = "*."
MAX_NAME_LENGTH = 253  # RFC 1035 §2.3.4, without the final dot
# A configured name: DNS labels of letters, digits, "-" (and "_", which real host
# names carry, e.g. "_acme"), each 1..63 characters, dot-separated.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class NameProblem(ValueError):
    """A configured site name is not a host name; the message completes "NAME …"."""


def _ipv6_literal(inside: str) -> str | None:
    # The same form as sites.hosts.ipv6_name gives a Host (a test pins the agreement).
    try:
        return f"[{ipaddress.IPv6Address(inside).compressed}]"
    except ValueError:
        return None




def config_name(value: str) -> str:
    """A name from ``sites[].names`` normalized like ``sites.hosts.site_name``; NameProblem if bad.

    Accepted: a DNS name (``example.org``, ``www.example.org.``, any case), a wildcard
    ``*.example.org`` (one ``*`` label, leftmost, then a name), an IPv4 address, an
    IPv6 literal in brackets (``[::1]``). Refused: ports, spaces, a bare ``*``, a
    ``*`` inside a label (``w*.example.org``) and anything else no Host could carry.
    """
    if not value or value != value.strip():
        raise NameProblem("is not a host name (empty, or blanks around it)")
    if value.startswith("["):
        if not value.endswith("]"):
            raise NameProblem("is not an IPv6 literal such as '[::1]'")
        name = _ipv6_literal(value[1:-1])
        if name is None:
            raise NameProblem("is not an IPv6 literal such as '[::1]'")
        return name
    wildcard = value.startswith(WILDCARD_PREFIX)
    rest = value[len(WILDCARD_PREFIX) :] if wildcard else value
    name = rest.lower()
    if name.endswith("."):
        name = name[:-1]
    if "*" in name:
        raise NameProblem(
            "has a '*' that is not the whole leftmost label (write '*.example.org')"
        )
    if ":" in name:
        raise NameProblem("has a port or a colon: a site is chosen by name, whatever the port")
    if len(name) > MAX_NAME_LENGTH or not all(map(_LABEL.fullmatch, name.split("."))):
        raise NameProblem(
            "is not a host name (labels of letters, digits and '-', 1 to 63 characters, "
            "separated by dots)"
        )
    return WILDCARD_PREFIX + name if wildcard else name


def check_rules(
    value: object, key: str, line_of: LineOf, base_dir: str
) -> tuple[tuple[RuleSetting, ...], Problems]:
    """The rules in ``value`` (a list of mappings), and every problem found in them."""
    problems: Problems = []
    if value is None:
        return (), problems
    if not isinstance(value, list):
        problems.append((line_of(()), f"{key}: {show(value)} is {kind_of(value)}, expected "
                         "a list of rules such as [{match: '/old/**', redirect: '/new/{rest}'}]"))
        return (), problems
    if len(value) > MAX_RULES:
        problems.append((line_of(()), f"{key}: has {len(value)} rules, more than {MAX_RULES}"))
        return (), problems
    rules: list[RuleSetting] = []
    for index, item in enumerate(value):
        rule = _rule(item, f"{key}[{index}]", _within(line_of, index), base_dir, problems)
        if rule is not None:
            rules.append(rule)
    return tuple(rules), problems


def _within(line_of: LineOf, index: int) -> LineOf:
    """``line_of`` for the places inside item ``index``."""
    return lambda path: line_of((index, *path))


def _rule(
    item: object, name: str, line_of: LineOf, base_dir: str, problems: Problems
) -> RuleSetting | None:
    def bad(path: tuple[object, ...], text: str) -> None:
        problems.append((line_of(path), text))

    if not isinstance(item, dict):
        bad((), f"{name}: {show(item)} is {kind_of(item)}, expected a mapping with match: "
                 "and one of " + ", ".join(ACTIONS))
        return None
    before = len(problems)
    for unknown in item.keys() - set(RULE_KEYS):
        bad((unknown,), f"{name}: unknown key {show(unknown)} (a rule has "
                        + ", ".join(RULE_KEYS) + ")")
    match = item.get("match")
    if "match" not in item:
        bad((), f"{name}: has no match: (every rule needs a glob such as '/old/**')")
    elif not isinstance(match, str) or not match or any(ord(c) < 32 for c in match):
        bad(("match",), f"{name}.match: {show(match)} is not a glob such as '*.woff2' or "
                        "'/old/**'")
    if not isinstance(match, str) or not match:
        match = None
    if not any(action in item for action in ACTIONS):
        bad((), f"{name}: does nothing: give it one of " + ", ".join(ACTIONS))
    redirect = _redirect(item, name, match, bad)
    status = item.get("status", DEFAULT_REDIRECT_STATUS)
    if "status" in item and (redirect is None or status not in REDIRECT_STATUSES
                             or isinstance(status, bool)):
        why = ("is only for a redirect" if "redirect" not in item
               else "is not one of " + ", ".join(map(str, REDIRECT_STATUSES)))
        bad(("status",), f"{name}.status: {show(status)} {why}")
    fallback = _fallback(item.get("fallback"), name, bad) if "fallback" in item else None
    allow = _allow(item.get("allow"), name, bad) if "allow" in item else None
    auth = _auth(item.get("auth"), name, base_dir, bad) if "auth" in item else None
    headers = _headers(item.get("headers"), name, bad) if "headers" in item else ()
    if len(problems) > before or match is None:
        return None
    assert isinstance(status, int)
    return RuleSetting(match, redirect, status, fallback, allow, auth, headers, line_of(()))


def _redirect(
    item: dict[object, object], name: str, match: str | None,
    bad: Callable[[tuple[object, ...], str], None],
) -> str | None:
    if "redirect" not in item:
        return None
    text = item["redirect"]
    if not isinstance(text, str):
        bad(("redirect",), f"{name}.redirect: {show(text)} is {kind_of(text)}, expected a "
                           "template such as '/new/{rest}{query}'")
        return None
    try:
        template = compile_template(text)
    except TemplateProblem as exc:
        bad(("redirect",), f"{name}.redirect: {show(text)} {exc}")
        return None
    if template.uses_rest and match is not None and rest_offset(match) is None:
        bad(("redirect",), f"{name}.redirect: {show(text)} uses {{rest}}, which needs a match "
                           "anchored with '/' whose only star is its last, such as '/old/**'")
        return None
    return text


def _fallback(
    value: object, name: str, bad: Callable[[tuple[object, ...], str], None]
) -> str | None:
    where = ("fallback",)
    if not isinstance(value, str) or not value.startswith("/"):
        bad(where, f"{name}.fallback: {show(value)} is not a path in the docroot such as "
                   "'/app/index.html'")
        return None
    segments = value.split("/")[1:]
    if (any(s in (".", "..") for s in segments) or value.endswith("/")
            or any(ord(c) < 32 or c in "?#%\\" for c in value)):
        bad(where, f"{name}.fallback: {show(value)} must name a file plainly (no '..', '.', "
                   "'?', '#', '%', '\\' or trailing '/')")
        return None
    # The static site takes paths as a client sends them: percent-encoded.
    return quote(value, safe=_FALLBACK_SAFE)


def _allow(
    value: object, name: str, bad: Callable[[tuple[object, ...], str], None]
) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value:
        bad(("allow",), f"{name}.allow: {show(value)} is not a non-empty list of networks "
                        "such as ['10.0.0.0/8', '::1']")
        return None
    networks: list[str] = []
    for index, item in enumerate(value):
        try:
            networks.append(network(item))
        except Invalid as exc:
            bad(("allow", index), f"{name}.allow[{index}]: {show(item)} {exc.reason}")
    return tuple(networks) if len(networks) == len(value) else None


def _auth(
    value: object, name: str, base_dir: str, bad: Callable[[tuple[object, ...], str], None]
) -> AuthSetting | None:
    if not isinstance(value, dict) or set(value) != {"realm", "htpasswd"}:
        bad(("auth",), f"{name}.auth: {show(value)} is not a mapping of exactly realm and "
                       "htpasswd, such as {realm: Staff, htpasswd: conf/staff.htpasswd}")
        return None
    realm, path = value["realm"], value["htpasswd"]
    ok = True
    if not isinstance(realm, str) or not _REALM.fullmatch(realm) or '"' in realm \
            or "\\" in realm:
        bad(("auth", "realm"), f"{name}.auth.realm: {show(realm)} is not 1 to 200 visible "
                               "ASCII characters or spaces without '\"' or '\\'")
        ok = False
    if not isinstance(path, str) or not path or any(ord(c) < 32 for c in path):
        bad(("auth", "htpasswd"), f"{name}.auth.htpasswd: {show(path)} is not a file path")
        ok = False
    if not ok:
        return None
    assert isinstance(realm, str) and isinstance(path, str)
    return AuthSetting(realm, os.path.normpath(os.path.join(base_dir, path)))


def _headers(
    value: object, name: str, bad: Callable[[tuple[object, ...], str], None]
) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value:
        bad(("headers",), f"{name}.headers: {show(value)} is not a mapping of header names "
                          "to values, such as {Access-Control-Allow-Origin: '*'}")
        return ()
    fields: list[tuple[str, str]] = []
    for field_name, field_value in value.items():
        try:
            checked_name, checked_value = extra_header(field_name, field_value)
        except Invalid as exc:
            shown = field_name if type(exc) is not Invalid else field_value
            bad(("headers", field_name),
                f"{name}.headers[{show(field_name)}]: {show(shown)} {exc.reason}")
            continue
        assert isinstance(checked_name, str) and isinstance(checked_value, str)
        fields.append((checked_name, checked_value))
    return tuple(fields)


def site_names(
    value: object, name: str, line_of: LineOf, problems: Problems
) -> tuple[str, ...]:
    """A site's ``names`` list, each normalized (``hosts.config_name``), or () on problems."""
    if not isinstance(value, list) or not value:
        problems.append((line_of(()), f"{name}.names: {show(value)} is not a non-empty list "
                         "of host names such as [example.org, '*.example.org']"))
        return ()
    names: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            problems.append((line_of((index,)), f"{name}.names[{index}]: {show(item)} is "
                             f"{kind_of(item)}, expected a host name"))
            continue
        try:
            names.append(config_name(item))
        except NameProblem as exc:
            problems.append((line_of((index,)), f"{name}.names[{index}]: {show(item)} {exc}"))
    return tuple(names)  # the good ones: the caller knows from ``problems`` if any was bad
