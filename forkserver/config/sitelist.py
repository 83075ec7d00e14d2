"""The ``sites:`` list and the nested lines of ``sites:``/``rules:``, and the htpasswd files.

Owns what a site entry holds (``names``, ``default``, ``rules`` and the static-file
keys it may set for itself, each checked by that key's own rule), the checks across
sites (a name claimed twice, two defaults, a docroot that is not there), the line of
every nested place in the YAML (so each problem names its own line), and reading
the htpasswd files every ``auth`` names, once each, at load — so a reload with a bad
file changes nothing. Rules themselves are config/sites.py. Must not import the
schema (it is handed the per-key check) nor anything outside the config package.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Protocol

import yaml

from forkserver.config.checks import Invalid, InvalidItems, kind_of, show
from forkserver.config.htpasswd import Htpasswd, HtpasswdError, read_htpasswd
from forkserver.config.model import RuleSetting, SiteSetting
from forkserver.config.sites import LineOf, Problems, check_rules, site_names

__all__ = [
    "NESTED_KEYS", "SITE_KEYS", "check_sites", "file_only", "key_checker", "known_site_keys",
    "line_finder", "nested_lines", "read_passwords", "site_page_problems",
]

NESTED_KEYS = frozenset({"sites", "rules"})
# The keys a site may set for itself (SPEC §7); each is inherited whole from the top
# level when a site does not. Only those the schema knows are accepted.
SITE_KEYS = (
    "docroot", "autoindex", "precompressed", "cache_control", "headers", "mime_types",
    "error_pages", "rules", "compress", "etag", "tls",
)
MAX_SITES = 1000
CheckKey = Callable[[str, object], object]  # (key, value) → checked value, or Invalid


class KeyRule(Protocol):
    """What sitelist needs of a schema Setting (config/schema.py)."""

    @property
    def check(self) -> Callable[[object], object]: ...
    @property
    def is_path(self) -> bool: ...


def key_checker(schema: Mapping[str, KeyRule], defaults: object, base_dir: str) -> CheckKey:
    """A site key's check: the top-level key's own rule (paths made absolute against
    ``base_dir``), or for a section (``tls``) each child's rule, the rest defaulted:
    a site's section replaces the top-level one whole."""
    def check(key: str, value: object) -> object:
        setting = schema.get(key)
        if setting is not None:
            checked = setting.check(value)
            if setting.is_path and isinstance(checked, str) and checked != "-":
                checked = os.path.normpath(os.path.join(base_dir, checked))
            return checked
        children = {k.partition(".")[2]: s for k, s in schema.items() if k.startswith(key + ".")}
        if not isinstance(value, dict):
            raise Invalid(f"is {kind_of(value)}, expected a mapping of " + ", ".join(children))
        fields: dict[str, object] = {}
        for child, given in value.items():
            if child not in children:
                raise Invalid(f"has an unknown key {show(child)} (expected "
                              + ", ".join(children) + ")")
            fields[str(child)] = check(f"{key}.{child}", given)
        return replace(getattr(defaults, key), **fields)
    return check


def known_site_keys(schema: Collection[str]) -> frozenset[str]:
    """The SITE_KEYS this build's schema has (a section counts by its name)."""
    return frozenset(key.split(".")[0] for key in schema) & frozenset(SITE_KEYS)


def file_only(value: object) -> object:
    """The schema's check of ``sites``/``rules``: the built-in default (none)."""
    if value in (None, [], ()):
        return ()
    raise Invalid("can only be set in the configuration file")


def nested_lines(node: yaml.Node) -> dict[object, int]:
    """The line of every place under ``node``: ``(2,)``, ``(2, "rules", 0, "match")``, …

    Walks the composed nodes (bounded by the YAML guards' limits) with an explicit
    stack, so no depth of nesting recurses.
    """
    lines: dict[object, int] = {}
    stack: list[tuple[tuple[object, ...], yaml.Node]] = [((), node)]
    while stack:
        path, current = stack.pop()
        if isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                lines[(*path, index)] = item.start_mark.line + 1
                stack.append(((*path, index), item))
        elif isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode):
                    place = (*path, key_node.value)
                    lines[place] = key_node.start_mark.line + 1
                    stack.append((place, value_node))
    return lines


def line_finder(lines: dict[object, int], default: int) -> LineOf:
    """``line_of`` over ``nested_lines``: a place without its own line → its parent's."""
    def line_of(path: tuple[object, ...]) -> int:
        while path:
            line = lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return default
    return line_of


def check_sites(
    value: object, line_of: LineOf, base_dir: str, check_key: CheckKey, known: Collection[str]
) -> tuple[tuple[SiteSetting, ...], Problems]:
    """The sites in ``value`` and every problem, within a site and across sites."""
    problems: Problems = []
    if value is None:
        return (), problems
    if not isinstance(value, list) or len(value) > MAX_SITES:
        problems.append((line_of(()), f"sites: {show(value)} is not a list of at most "
                         f"{MAX_SITES} sites such as [{{names: [example.org], docroot: /srv}}]"))
        return (), problems
    sites: list[SiteSetting] = []
    claimed: dict[str, tuple[int, int]] = {}  # name → (site index, line)
    first_default: tuple[int, int] | None = None
    for index, item in enumerate(value):
        within = _within(line_of, index)
        before = len(problems)
        site = _site(item, f"sites[{index}]", within, base_dir, check_key, known, problems)
        if site is None:
            continue
        # Checked across sites even when this one has problems of its own, so a name
        # claimed twice is reported in the same run as a typo elsewhere.
        for position, name in enumerate(site.names):
            line = within(("names", position))
            if name in claimed:
                other, other_line = claimed[name]
                problems.append((line, f"sites[{index}].names[{position}]: {show(name)} is "
                                 f"already claimed by sites[{other}] (line {other_line})"))
            else:
                claimed[name] = (index, line)
        if site.default:
            line = within(("default",))
            if first_default is not None:
                problems.append((line, f"sites[{index}].default: a second default site "
                                 f"(sites[{first_default[0]}] at line {first_default[1]} is "
                                 "one); at most one site answers unclaimed names"))
            else:
                first_default = (index, line)
        if len(problems) == before:
            sites.append(site)
    return tuple(sites), problems


def _within(line_of: LineOf, index: int) -> LineOf:
    return lambda path: line_of((index, *path))


def _site(
    item: object, name: str, line_of: LineOf, base_dir: str, check_key: CheckKey,
    known: Collection[str], problems: Problems,
) -> SiteSetting | None:
    if not isinstance(item, dict):
        problems.append((line_of(()), f"{name}: {show(item)} is {kind_of(item)}, expected a "
                         "mapping with names: and the keys this site sets"))
        return None
    names = site_names(item.get("names"), name, _within_key(line_of, "names"), problems)
    default = item.get("default", False)
    if not isinstance(default, bool):
        problems.append((line_of(("default",)), f"{name}.default: {show(default)} is not "
                         "true or false"))
        default = False
    overrides: list[tuple[str, object]] = []
    for key, given in item.items():
        if key in ("names", "default"):
            continue
        where = line_of((key,))
        if key == "rules":
            rules, found = check_rules(given, f"{name}.rules", _within_key(line_of, "rules"),
                                       base_dir)
            problems.extend(found)
            overrides.append(("rules", rules))  # even (): a site may drop the top's rules
            continue
        if key not in SITE_KEYS or key not in known:
            allowed = ", ".join(k for k in ("names", "default", *SITE_KEYS) if k in known
                                or k in ("names", "default"))
            problems.append((where, f"{name}: unknown key {show(key)} (a site sets {allowed})"))
            continue
        try:
            overrides.append((key, check_key(key, given)))
        except Invalid as exc:
            problems.append((where, f"{name}.{key}: {show(given)} {exc.reason}"))
        except InvalidItems as exc:
            for entry, bad, problem in exc.problems:
                problems.append((line_of((key, entry)),
                                 f"{name}.{key}[{show(entry)}]: {show(bad)} {problem.reason}"))
    docroot = dict(overrides).get("docroot")
    if isinstance(docroot, str) and not os.path.isdir(docroot):
        problems.append((line_of(("docroot",)), f"{name}.docroot: {show(item['docroot'])} is "
                         f"not a directory (looked for {docroot})"))
    return SiteSetting(names, default, tuple(overrides), line_of(()))


def _within_key(line_of: LineOf, key: str) -> LineOf:
    return lambda path: line_of((key, *path))


def read_passwords(
    rules: tuple[RuleSetting, ...], sites: tuple[SiteSetting, ...]
) -> tuple[tuple[RuleSetting, ...], tuple[SiteSetting, ...], list[str]]:
    """The rules and sites with every ``auth``'s users read in; each file once.

    Problems are ``FILE:LINE: reason`` of the htpasswd files themselves (a weak hash
    kind, a bad line, an unreadable file); nothing is changed when there is any.
    """
    files: dict[str, Htpasswd | None] = {}
    problems: list[str] = []

    def with_users(rule: RuleSetting) -> RuleSetting:
        auth = rule.auth
        if auth is None:
            return rule
        if auth.htpasswd not in files:
            try:
                files[auth.htpasswd] = read_htpasswd(auth.htpasswd)
            except HtpasswdError as exc:
                files[auth.htpasswd] = None
                problems.extend(exc.problems)
        return replace(rule, auth=replace(auth, users=files[auth.htpasswd]))

    new_rules = tuple(map(with_users, rules))
    new_sites = tuple(
        replace(site, overrides=tuple(
            (key, tuple(map(with_users, value)) if key == "rules" and isinstance(value, tuple)
             else value) for key, value in site.overrides))
        for site in sites
    )
    return new_rules, new_sites, problems


def check_nested(
    key: str, value: object, lines: dict[object, int], line: int, base_dir: str,
    schema: Mapping[str, KeyRule], defaults: object,
) -> tuple[object, Problems]:
    """``rules`` or ``sites`` from the file: (checked value, [(line, "KEY: …")])."""
    line_of = line_finder(lines, line)
    if key == "rules":
        return check_rules(value, "rules", line_of, base_dir)
    return check_sites(value, line_of, base_dir, key_checker(schema, defaults, base_dir),
                       known_site_keys(schema))


def site_page_problems(
    sites: tuple[SiteSetting, ...], top_docroot: str, top_pages: tuple[tuple[int, str], ...],
    line_of: LineOf, page_problem: Callable[[str, str], str | None],
) -> Problems:
    """Each site's error pages checked against the docroot it serves, as the top level's are.

    A site that sets ``docroot`` or ``error_pages`` serves its pages (its own, else the
    top level's) from its docroot (its own, else the top level's); a page that is not a
    regular file inside it is reported at the page's line, or for inherited pages at
    the site's ``docroot`` line.
    """
    problems: Problems = []
    for index, site in enumerate(sites):
        own = dict(site.overrides)
        if "docroot" not in own and "error_pages" not in own:
            continue  # the top level's pages in the top level's docroot: checked there
        docroot = own.get("docroot", top_docroot)
        pages = own.get("error_pages", top_pages)
        if not isinstance(docroot, str) or not isinstance(pages, tuple) \
                or not os.path.isdir(docroot):
            continue  # a missing docroot is reported on its own
        inherited = "error_pages" not in own
        for status, page in pages:
            reason = page_problem(docroot, page)
            if reason is None:
                continue
            if inherited:
                problems.append((line_of((index, "docroot")), f"sites[{index}].error_pages"
                                 f"[{status}] (inherited from the top level): {show(page)} "
                                 f"{reason}"))
            else:
                problems.append((line_of((index, "error_pages", str(status))),
                                 f"sites[{index}].error_pages[{status}]: {show(page)} {reason}"))
    return problems


def passwords_into(values: dict[str, object]) -> list[str]:
    """Read the htpasswd files that ``values["rules"]``/``["sites"]`` name, into them."""
    rules, sites = values.get("rules", ()), values.get("sites", ())
    assert isinstance(rules, tuple) and isinstance(sites, tuple)
    rules, sites, problems = read_passwords(rules, sites)
    if not problems:
        values["rules"], values["sites"] = rules, sites
    return problems
