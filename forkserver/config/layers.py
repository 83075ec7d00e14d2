"""Layers: defaults, then the file, then the command line → one checked Config.

Owns the order values win in, the rules between keys, load_config and build_config.
Must not touch sockets, signals or processes: it may read files and stat paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from forkserver.config.checks import Invalid, InvalidItems, InvalidKey, show
from forkserver.config.listen import listen_problems
from forkserver.config.model import MAX_WORKERS, UNIX_PREFIX, Config
from forkserver.config.preflight import usable_cpus
from forkserver.config.protection import burst_problem
from forkserver.config.schema import (
    COMMAND_LINE,
    COMMAND_LINE_RANK,
    DEFAULT_RANK,
    DEFAULTS,
    FILE_RANK,
    SCHEMA,
    SECTIONS,
    Entry,
    Origin,
    Problem,
    field_of,
)
from forkserver.config.sitelist import (
    NESTED_KEYS,
    check_nested,
    line_finder,
    passwords_into,
    site_page_problems,
)
from forkserver.config.yamlfile import read_entries, read_text
from forkserver.errors import ConfigError

# -- assembling a Config --------------------------------------------------------------

T = TypeVar("T")


def pick(values: Mapping[str, object], key: str, kind: type[T]) -> T:
    value = values[key]
    assert isinstance(value, kind), (key, value)  # every value passed its check
    return value


def pick_optional(values: Mapping[str, object], key: str) -> str | None:
    value = values[key]
    assert value is None or isinstance(value, str), (key, value)
    return value

def resolve_path(value: str | None, base_dir: str) -> str | None:
    """Absolute path; ``-`` (stderr) and None (off) keep their meaning."""
    if value is None or value == "-":
        return value
    return os.path.normpath(os.path.join(base_dir, value))


def docroot_problem(value: object, resolved: str, origin: Origin) -> Problem | None:
    looked = f" (looked for {resolved})" if value != resolved else ""
    if not os.path.exists(resolved):
        return origin.problem(value, f"does not exist{looked}")
    if not os.path.isdir(resolved):
        return origin.problem(value, f"is not a directory{looked}")
    return None


def item_problem(
    path: str, entry: Entry, name: object, item: object, problem: Invalid, file_dir: str
) -> Problem:
    """``FILE:LINE: KEY: NAME reason`` for a bad name, ``KEY[NAME]: VALUE reason`` else."""
    line = entry.item_lines.get(name, entry.line)
    if isinstance(problem, InvalidKey):
        origin = Origin(f"{path}:{line}", entry.key, file_dir, (FILE_RANK, line))
        return origin.problem(name, problem.reason)
    origin = Origin(f"{path}:{line}", f"{entry.key}[{show(name)}]", file_dir, (FILE_RANK, line))
    return origin.problem(item, problem.reason)


def error_page_file_problem(docroot: str, page: str) -> str | None:
    """Why ``page`` (``/errors/404.html``) cannot be served from ``docroot``, or None."""
    looked = os.path.join(docroot, page.lstrip("/"))
    real_root = os.path.realpath(docroot)
    real = os.path.realpath(looked)
    inside = real.startswith(real_root.rstrip("/") + "/")
    hidden = any(part.startswith(".") for part in real[len(real_root) :].split("/"))
    if not inside or hidden:
        return f"leads outside the docroot or to a hidden file (looked for {looked})"
    if not os.path.isfile(real):
        return f"is not a file in the docroot (looked for {looked})"
    return None


def limits_problem(values: Mapping[str, object], origins: Mapping[str, Origin]) -> Problem | None:
    """The head includes the request line, so a smaller head limit makes no sense."""
    request_line = pick(values, "limits.request_line", int)
    header_bytes = pick(values, "limits.header_bytes", int)
    if header_bytes >= request_line:
        return None
    origin = origins["limits.header_bytes"]
    if origin.rank[0] == DEFAULT_RANK:  # only the request line was set: blame it
        return origins["limits.request_line"].problem(
            request_line, f"is larger than limits.header_bytes ({header_bytes}), "
            "and the request head includes the request line"
        )
    return origin.problem(
        header_bytes, f"is smaller than limits.request_line ({request_line}), "
        "and the request head includes the request line"
    )


def socket_keys_problem(
    values: Mapping[str, object], origins: Mapping[str, Origin]
) -> Problem | None:
    """socket_mode and socket_owner describe a socket file: they need a unix: host."""
    listen = values["listen"]
    assert isinstance(listen, tuple)
    if pick(values, "host", str).startswith(UNIX_PREFIX) or any(e.is_unix for e in listen):
        return None
    for key in ("socket_mode", "socket_owner"):
        if values[key] is not None:
            return origins[key].problem(
                values[key], "applies only to a unix socket (host: 'unix:/path')"
            )
    return None


def group_problem(values: Mapping[str, object], origins: Mapping[str, Origin]) -> Problem | None:
    """group changes only the workers' group: alone it would leave them running as root."""
    if values["group"] is None or values["user"] is not None:
        return None
    return origins["group"].problem(
        values["group"], "needs user as well: a worker that stays root keeps root's power "
        "whatever its group (set user, or remove group)"
    )


class Layers:
    """Values layered as they arrive: built-in defaults, then the file, then the command line.

    Each offered value is checked where it comes from; a bad one is recorded as a
    problem and the layer below stays, so one mistake never hides another.
    """

    def __init__(self, default_dir: str) -> None:
        self.given: dict[str, object] = {}  # as written, for messages
        self.values: dict[str, object] = {}  # checked and normalized
        self.origins: dict[str, Origin] = {}
        self.problems: list[Problem] = []
        self.item_lines: dict[str, dict[object, int]] = {}  # mapping key → entry → line
        self.file_label: str | None = None  # the file as named in messages
        for key, setting in SCHEMA.items():
            default = Origin("built-in default", key, default_dir, (DEFAULT_RANK, 0))
            self.keep(key, setting.default, setting.check(setting.default), default)

    def keep(self, key: str, given: object, value: object, origin: Origin) -> None:
        self.given[key], self.values[key], self.origins[key] = given, value, origin

    def offer_from_file(self, path: str, file_dir: str, entry: Entry) -> None:
        origin = Origin(f"{path}:{entry.line}", entry.key, file_dir, (FILE_RANK, entry.line))
        if entry.key in NESTED_KEYS:  # sites:, rules: (config/sitelist.py)
            value, found = check_nested(entry.key, entry.value, entry.item_lines, entry.line,
                                        file_dir, SCHEMA, DEFAULTS)
            self.problems.extend(((FILE_RANK, n), f"{path}:{n}: {text}") for n, text in found)
            if not found:
                self.keep(entry.key, entry.value, value, origin)
                self.item_lines[entry.key] = entry.item_lines  # sites' error pages, later
            return
        try:
            self.keep(entry.key, entry.value, SCHEMA[entry.key].check(entry.value), origin)
            self.item_lines[entry.key] = entry.item_lines
        except Invalid as exc:
            self.problems.append(origin.problem(entry.value, exc.reason))
        except InvalidItems as exc:
            for name, item, problem in exc.problems:
                self.problems.append(
                    item_problem(path, entry, name, item, problem, file_dir)
                )

    def offer_from_command_line(self, key: str, value: object, command_dir: str) -> None:
        flag = "--" + key.replace("_", "-")
        origin = Origin(COMMAND_LINE, flag, command_dir, (COMMAND_LINE_RANK, 0))
        if key not in SCHEMA:
            self.problems.append((origin.rank, f"{COMMAND_LINE}: {flag}: not a configuration key"))
            return
        setting = SCHEMA[key]
        typed = value
        try:
            # argparse gives text; once read, "--port 99999" is the number 99999, not '99999'.
            typed = setting.from_text(value) if isinstance(value, str) else value
            self.keep(key, value, setting.check(typed), origin)
        except Invalid as exc:
            self.problems.append(origin.problem(typed, exc.reason))

    def resolve_paths(self) -> None:
        for key, setting in SCHEMA.items():
            if setting.is_path:
                base_dir = self.origins[key].base_dir
                self.values[key] = resolve_path(pick_optional(self.values, key), base_dir)

    def check_together(self) -> None:
        """Rules on the final values: the docroot in use exists, the limits agree."""
        docroot = pick(self.values, "docroot", str)
        docroot_bad = docroot_problem(self.given["docroot"], docroot, self.origins["docroot"])
        values, origins = self.values, self.origins
        for problem in (
            docroot_bad, limits_problem(values, origins), socket_keys_problem(values, origins),
            group_problem(values, origins), burst_problem(values, origins),
        ):
            if problem is not None:
                self.problems.append(problem)
        self.problems.extend(listen_problems(values, origins))
        if docroot_bad is None:
            self.problems.extend(self.error_page_problems(docroot))
            self.problems.extend(self.site_error_page_problems(docroot))
        # The htpasswd files the rules name, read now: a reload with a bad one changes nothing.
        self.problems.extend(((FILE_RANK, 0), text) for text in passwords_into(self.values))

    def error_page_problems(self, docroot: str) -> list[Problem]:
        """Each configured error page must be a regular file inside the docroot in use."""
        pages = self.values["error_pages"]
        assert isinstance(pages, tuple)
        origin = self.origins["error_pages"]
        lines = self.item_lines.get("error_pages", {})
        problems = []
        for status, page in pages:
            reason = error_page_file_problem(docroot, page)
            if reason is None:
                continue
            line = lines.get(status, origin.rank[1])
            where = f"{self.file_label}:{line}" if self.file_label else origin.where
            problems.append(
                ((origin.rank[0], line), f"{where}: error_pages[{status}]: {show(page)} {reason}")
            )
        return problems

    def site_error_page_problems(self, docroot: str) -> list[Problem]:
        """Each site's error pages against its docroot (config/sitelist.py)."""
        sites, pages = self.values["sites"], self.values["error_pages"]
        assert isinstance(sites, tuple) and isinstance(pages, tuple)
        if not sites:
            return []
        origin = self.origins["sites"]
        line_of = line_finder(self.item_lines.get("sites", {}), origin.rank[1])
        found = site_page_problems(sites, docroot, pages, line_of, error_page_file_problem)
        return [((FILE_RANK, line), f"{self.file_label}:{line}: {text}") for line, text in found]


def load_config(
    path: str | None, overrides: Mapping[str, object] | None = None, *, cwd: str | None = None
) -> Config:
    """Load ``path`` (or the built-in defaults when None) and apply ``overrides``.

    ``overrides`` holds command-line values keyed like the YAML (``host``, ``port``,
    ``docroot``, ``workers``, ``daemon``, ``pidfile``); they win over the file.
    Strings are accepted for every override (argparse gives ``"8081"``) and checked
    by the same rules. Relative paths in the file resolve against the file's
    directory; those in overrides against ``cwd`` (default: the current directory;
    a master reloading after daemonizing can pass the directory it started in).
    Raises ConfigError listing every problem.
    """
    try:
        command_dir = os.path.abspath(cwd) if cwd is not None else os.getcwd()
    except FileNotFoundError:
        raise ConfigError(["the current directory no longer exists"]) from None
    source: str | None = None
    if path is None:
        layers = Layers(default_dir=command_dir)
    else:
        source = os.path.abspath(os.path.join(command_dir, path))
        file_dir = os.path.dirname(source)
        # The default docroot "." is the file's directory, like any relative path in it.
        layers = Layers(default_dir=file_dir)
        layers.file_label = path
        entries, layers.problems = read_entries(path, read_text(source, label=path))
        for entry in entries:
            layers.offer_from_file(path, file_dir, entry)
    for key, value in (overrides or {}).items():
        layers.offer_from_command_line(key, value, command_dir)
    layers.resolve_paths()
    layers.check_together()
    if layers.problems:
        ordered = sorted(layers.problems, key=lambda problem: problem[0])  # stable sort
        raise ConfigError([message for _, message in ordered])
    return build_config(layers.values, source)


def build_config(values: Mapping[str, object], source: str | None) -> Config:
    """The frozen Config: each key's checked value set on the field the key names.

    A loop over SCHEMA ("timeouts.send" → Config.timeouts.send), not a list of every
    key; the one conversion is ``workers: auto`` → the CPUs this process may use.
    """
    fields: dict[str, Any] = {"source": source}
    sections: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key in SCHEMA:
        section, name = field_of(key)
        (sections[section] if section else fields)[name] = values[key]
    for section, inner in sections.items():
        fields[section] = replace(getattr(DEFAULTS, section), **inner)
    if fields["workers"] == "auto":
        fields["workers"] = min(usable_cpus(), MAX_WORKERS)
    return Config(**fields)
