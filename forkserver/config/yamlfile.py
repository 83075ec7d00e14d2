"""The line-keeping YAML reader: the file's text → known keys with their lines.

Owns reading the file (read_text), YAML error messages and FileReader, which reports
every problem with file:line. Must not check values: the layers do.
"""

from __future__ import annotations

import re

import yaml

from forkserver.config.checks import kind_of, show
from forkserver.config.hints import unknown_key
from forkserver.config.schema import FILE_RANK, SCHEMA, SECTIONS, Entry, Problem
from forkserver.config.sitelist import NESTED_KEYS, nested_lines
from forkserver.config.yamlguard import MAX_FILE_BYTES, GuardedLoader, YamlRefused
from forkserver.errors import ConfigError

# Top-level keys starting with this are ignored: a place for anchors that merge keys use
# (the convention of docker compose's "extension fields").
EXTENSION_PREFIX = "x-"


def read_text(path: str, *, label: str) -> str:
    """The file's text; ConfigError with one clear line (naming ``label``) when unreadable."""
    try:
        with open(path, "rb") as stream:
            # One byte more than allowed tells "too big" from "exactly the limit" without
            # reading a huge file (or an endless one such as /dev/zero) into memory.
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([f"{label}: cannot read the configuration file: {reason}"]) from None
    if len(data) > MAX_FILE_BYTES:
        line = data.count(b"\n", 0, MAX_FILE_BYTES) + 1
        raise ConfigError([
            f"{label}:{line}: the file is larger than {MAX_FILE_BYTES // 1024} KiB; "
            "a configuration is a few KiB (is this the right file?)"
        ])
    if b"\0" in data:
        # A NUL byte means a binary file (or UTF-16 text): say so before YAML's
        # "special characters are not allowed" and before the UTF-8 check.
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise ConfigError([
            f"{label}:{line}: the file contains a NUL byte; a configuration is UTF-8 text"
        ])
    try:
        # utf-8-sig: a BOM left by a Windows editor is not part of the first key.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{label}:{line}: the file is not UTF-8 text"]) from None


# "access_log: -" reads as the start of a list on the same line as its key; since "-"
# means stderr in this schema, the bare dash is the likeliest cause of this error.
BARE_DASH_PROBLEM = "sequence entries are not allowed here"


def yaml_error_problem(path: str, source: str, exc: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: YAML syntax error: …`` with 1-based line and column."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        message = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            context_mark = exc.context_mark
            started = (
                f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
                if context_mark and exc.context.startswith("while") and context_mark != mark
                else ""
            )
            message += f" ({exc.context}{started})"
        if exc.problem == BARE_DASH_PROBLEM:
            message += " (for stderr write the dash in quotes: \"-\")"
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else (
            "YAML syntax error"
        )
        return f"{where}: {kind}: {message}"
    if isinstance(exc, yaml.reader.ReaderError):
        line = source.count("\n", 0, exc.position) + 1
        column = exc.position - (source.rfind("\n", 0, exc.position) + 1) + 1
        return (
            f"{path}:{line}:{column}: YAML syntax error: {exc.reason}: "
            f"#x{exc.character:04x}"
        )
    return f"{path}: YAML syntax error: {exc}"

class Unreadable(Exception):
    """PyYAML could not build a value: ``reason`` says why, for "KEY: unreadable value: …"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FileReader:
    """Walks the composed YAML node tree, so each key keeps its line.

    ``safe_load``'s plain dict would lose the lines, silently keep the last of two
    duplicate keys, and stop at the first bad value; this collects every problem.
    Values are still built by PyYAML's SafeConstructor, so no tag can run code.
    """

    def __init__(self, path: str, loader: GuardedLoader) -> None:
        self.path = path
        self.loader = loader
        self.entries: list[Entry] = []
        self.problems: list[Problem] = []
        self.empty_sections: dict[str, int] = {}  # section → its line, for unknown_key

    def report(self, line: int, key: str, message: str) -> None:
        self.problems.append(((FILE_RANK, line), f"{self.path}:{line}: {key}: {message}"))

    def construct(self, node: yaml.Node) -> object:
        """The value of ``node``, or Unreadable with the reason PyYAML could not build it.

        Tags were vetted while reading, so what fails here is a scalar that does not
        fit its type ("!!int abc", "!!bool maybe", "0x_", "2001-13-45") or a bad merge.
        """
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise Unreadable(exc.problem or "cannot be read") from None
        except KeyError as exc:  # SafeConstructor's !!bool looks the word up in a dict
            raise Unreadable(f"{show(exc.args[0])} is not a YAML boolean") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise Unreadable(str(exc)) from None

    def entries_of(self, node: yaml.MappingNode, key: str) -> list[tuple[yaml.Node, yaml.Node]]:
        """A mapping's entries with merge keys applied; [] and a problem if they cannot be."""
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            self.report(mark.line + 1, key or "<<", exc.problem or "bad merge key")
            return []
        return list(node.value)

    def read_mapping(self, node: yaml.MappingNode, section: str = "") -> None:
        prefix = section + "." if section else ""
        first_line: dict[str, int] = {}
        for key_node, value_node in self.entries_of(node, section):
            line = key_node.start_mark.line + 1
            try:
                name = self.key_name(key_node)
            except Unreadable as exc:
                self.report(line, prefix + show(key_node.value), f"unreadable key: {exc.reason}")
                continue
            if name is None:
                shown = show(self.construct(key_node)) if isinstance(
                    key_node, yaml.ScalarNode) else "a list or mapping"
                self.report(line, prefix + shown, "a key must be a name such as 'port'")
                continue
            if not section and name.startswith(EXTENSION_PREFIX):
                continue  # "x-defaults: &defaults {…}": only there to be merged elsewhere
            key = prefix + name
            if key in first_line:
                self.report(line, key, f"duplicate key, first given at line {first_line[key]}")
                continue
            first_line[key] = line
            if not section and key in SECTIONS:
                self.read_section(key, line, value_node)
            elif key not in SCHEMA or "." in name:  # "timeouts.header" must be nested
                self.report(line, key, unknown_key(key, section, self.empty_sections))
            else:
                self.read_value(key, line, value_node)

    def key_name(self, node: yaml.Node) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            return None
        name = self.construct(node)
        return name if isinstance(name, str) else None

    def read_section(self, section: str, line: int, node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            self.read_mapping(node, section)
        elif node.tag == NULL_TAG:  # "timeouts:" with every child commented out is fine
            self.empty_sections[section] = line  # unless its children follow unindented
        else:
            try:
                value = self.construct(node)
            except Unreadable as exc:
                self.report(line, section, f"unreadable value: {exc.reason}")
                return
            children = ", ".join(k.partition(".")[2] for k in SCHEMA if k.startswith(section))
            self.report(line, section, (
                f"{show(value)} is {kind_of(value)}, expected a mapping of {children}"
            ))

    def read_value(self, key: str, line: int, node: yaml.Node) -> None:
        if SCHEMA[key].mapping and isinstance(node, yaml.MappingNode):
            self.read_entries(key, line, node)
            return
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag == INT_TAG
            and not node.style
            and SURPRISING_INT.fullmatch(node.value)
        ):
            try:
                number = self.construct(node)
            except Unreadable as exc:
                self.report(line, key, f"unreadable value: {exc.reason}")
                return
            fix = ("quote it: socket_mode: '0660'" if key == "socket_mode" else
                   "write it without a leading zero or colon, or quote it")
            self.report(line, key, f"{show(node.value)} is read by YAML 1.1 as {number}; {fix}")
            return
        try:
            value = self.construct(node)
        except Unreadable as exc:  # "!!int abc", or a merge key taking a string
            self.report(line, key, f"unreadable value: {exc.reason}")
        else:
            # A list's entries keep their lines too, for one message per bad entry.
            lines: dict[object, int] = {}
            if isinstance(node, yaml.SequenceNode):
                lines = {i: item.start_mark.line + 1 for i, item in enumerate(node.value)}
            if key in NESTED_KEYS:  # sites:, rules:: every nested place keeps its line
                lines.update(nested_lines(node))
            self.entries.append(Entry(key, line, value, lines))

    def read_entries(self, key: str, line: int, node: yaml.MappingNode) -> None:
        """A mapping-valued key, keeping each entry's line for its own messages."""
        value: dict[object, object] = {}
        lines: dict[object, int] = {}
        for name_node, item_node in self.entries_of(node, key):
            item_line = name_node.start_mark.line + 1
            try:
                name = self.construct(name_node)
                item = self.construct(item_node)
            except Unreadable as exc:
                self.report(item_line, key, f"unreadable entry: {exc.reason}")
                continue
            if isinstance(name, list | dict):
                self.report(item_line, key, f"{show(name)} is {kind_of(name)}, not a name")
                continue
            if name in lines:
                self.report(item_line, f"{key}[{show(name)}]",
                            f"duplicate key, first given at line {lines[name]}")
                continue
            value[name], lines[name] = item, item_line
        self.entries.append(Entry(key, line, value, lines))


NULL_TAG = "tag:yaml.org,2002:null"
INT_TAG = "tag:yaml.org,2002:int"
# YAML 1.1 reads "0700" as octal 448 and "1:30" as 90 (base 60); neither is what
# someone writing a port or a count means, so such numbers are refused, not reinterpreted.
SURPRISING_INT = re.compile(r"[-+]?0[0-7_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+")


def read_entries(path: str, source: str) -> tuple[list[Entry], list[Problem]]:
    """Every known key in the file with its line, and a problem for everything else.

    ``path`` is only used in messages. Raises ConfigError at once for a file that
    cannot be read as YAML at all or whose top level is not a mapping.
    """
    if not source.strip():
        # Zero bytes is what an interrupted write or a stray "> site.yaml" leaves; taken
        # as "every default", a reload would serve the file's directory on port 8080.
        raise ConfigError([
            f"{path}:1: the file is empty (to use every default on purpose, write a "
            "comment or '{}' in it)"
        ])
    try:
        # The constructor already scans for forbidden characters (a ReaderError).
        loader = GuardedLoader(source)
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_error_problem(path, source, exc)]) from None
    except YamlRefused as exc:
        raise ConfigError([exc.problem(path)]) from None
    if loader.tag_problems:
        loader.dispose()
        raise ConfigError([refused.problem(path) for refused in loader.tag_problems])
    try:
        reader = FileReader(path, loader)
        if root is None or root.tag == NULL_TAG:  # empty, comments, "---": all defaults
            return [], []
        if not isinstance(root, yaml.MappingNode):
            found = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            raise ConfigError([
                f"{path}:{root.start_mark.line + 1}: the top level must be a mapping of "
                f"keys such as 'port: 8080', not {found}"
            ])
        reader.read_mapping(root)
        return reader.entries, reader.problems
    finally:
        loader.dispose()
