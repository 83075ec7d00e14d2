"""The hostile-YAML guards: bounds on size, nesting, aliases and tags, and merge keys.

Owns GuardedLoader, PyYAML's safe loader judging each event before it costs anything.
Must not know the schema: it reads any document, or refuses it.
"""

from __future__ import annotations

import yaml

# A configuration file is read on every reload by the master itself, so what a file can
# cost is bounded before PyYAML sees it or while it reads it, never after. A real file
# is a few KiB, a handful of levels deep, with a few hundred values; each bound is far
# above that and far below what would take a noticeable time (pure-Python PyYAML reads
# about 500 KiB a second).
MAX_FILE_BYTES = 256 * 1024
# PyYAML's composer and constructor recurse once per level: "workers: [[[[…" thousands
# deep ends in RecursionError after seconds of work. Events are counted instead.
MAX_NESTING = 32
# Aliases share nodes, but anything walking a value walks every path through it: nine
# aliases of nine aliases (a "billion laughs") is 9**9 values. Counting each alias at
# the size of what it names bounds every walk of the document, merges included.
MAX_VALUES = 100_000
# One value longer than this is a mistake (a pasted file?); it also bounds the work of
# YAML 1.1's base-60 integers ("1:0:0:…"), whose cost grows with the square of their length.
MAX_SCALAR_CHARS = 16_384
# An integer that needs more digits than this is no port, count or size: refusing it
# keeps int("1" * 5000) (Python refuses > 4300 digits) and huge hex numbers out.
MAX_INTEGER_CHARS = 64
# Explicit tags accepted: the standard scalar ones, harmless (they only say which plain
# type a scalar is, e.g. "!!str 0660"), and "!" (non-specific: a string). Every other
# tag (!!binary, !!set, !!omap, !!python/…, local ones such as !env) is refused, on a
# key or a value alike: forkserver reads plain data and nothing would interpret them.
YAML_TAG_PREFIX = "tag:yaml.org,2002:"
ACCEPTED_TAGS = frozenset(
    {"!"} | {YAML_TAG_PREFIX + t for t in ("str", "int", "float", "bool", "null")}
)
MERGE_TAG = YAML_TAG_PREFIX + "merge"


def short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:binary`` → ``!!binary``, as it is written in a file."""
    return "!!" + tag[len(YAML_TAG_PREFIX):] if tag.startswith(YAML_TAG_PREFIX) else tag


class YamlRefused(Exception):
    """The document breaks a bound or the tag rule at ``event``: stop reading it."""

    def __init__(self, event: yaml.Event, reason: str) -> None:
        super().__init__(reason)
        mark = event.start_mark  # the parser marks every event; None only in the stubs
        self.line, self.column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        self.reason = reason

    def problem(self, path: str) -> str:
        return f"{path}:{self.line}:{self.column}: YAML error: {self.reason}"


class GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, checking each parser event before the composer sees it.

    The parser and scanner are iterative, the composer and constructor recursive, so
    nesting, alias expansion and tags are all judged here, one event at a time, and
    the document is refused (YamlRefused) before any of them can cost anything.
    """

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.depth = 0
        self.values = 0  # nodes so far, each alias counted at the size of what it names
        self.open: list[tuple[str | None, int]] = []  # (anchor, values before) per level
        self.sizes: dict[str, int] = {}  # anchor → values under it, aliases expanded
        self.tag_problems: list[YamlRefused] = []  # all reported together, after reading

    def get_event(self) -> yaml.Event:
        event: yaml.Event = super().get_event()  # type: ignore[no-untyped-call]  # untyped stub
        self.guard(event)
        return event

    def guard(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in self.open):
                raise YamlRefused(event, f"the alias *{event.anchor} is inside its own anchor "
                                        f"&{event.anchor} (a value cannot contain itself)")
            self.count(event, self.sizes.get(event.anchor or "", 0))
            return
        if isinstance(event, yaml.NodeEvent):  # scalars and collection starts
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in ACCEPTED_TAGS:
                self.tag_problems.append(YamlRefused(event, (
                    f"the tag {short_tag(tag)} is not accepted (forkserver reads plain "
                    "data; only !!str, !!int, !!float, !!bool and !!null may be written)"
                )))
            self.count(event, 1)
        if isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_SCALAR_CHARS:
                raise YamlRefused(event, f"a value longer than {MAX_SCALAR_CHARS} characters")
            if event.anchor is not None:
                self.sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise YamlRefused(event, f"lists and mappings nested more than {MAX_NESTING} "
                                        "deep")
            self.open.append((event.anchor, self.values - 1))
        elif isinstance(event, yaml.CollectionEndEvent):
            self.depth -= 1
            anchor, before = self.open.pop()
            if anchor is not None:
                self.sizes[anchor] = self.values - before

    def count(self, event: yaml.Event, values: int) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise YamlRefused(event, (
                f"more than {MAX_VALUES} values once aliases are expanded (aliases of "
                "aliases multiply: is this an alias bomb?)"
            ))

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        self.merge(node, 1)

    def merge(self, node: yaml.MappingNode, depth: int) -> None:
        """Apply merge keys (``<<: *defaults``) in place, as YAML 1.1 defines them.

        Replaces PyYAML's version, which keeps overridden entries (fine for a dict, but
        this reader reports repeated keys) and recurses without bound through chains of
        merges. The mapping's own entries win over merged ones; of several merged
        mappings (``<<: [*a, *b]``) the first wins. Merged entries keep their nodes, so
        their lines in messages are where they are written (in the anchored mapping).
        Applying it twice changes nothing, so a mapping reached through two aliases
        reads the same both times.
        """
        if depth > MAX_NESTING:
            raise yaml.constructor.ConstructorError(
                None, None, f"merge keys ('<<') nested more than {MAX_NESTING} deep",
                node.start_mark,
            )
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                own.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [
                value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        "a merge key '<<' takes a mapping or a list of mappings, such as "
                        "'<<: *defaults' (write '\"<<\"' for a key of that name)",
                        source.start_mark,
                    )
                self.merge(source, depth + 1)
                merged.extend(source.value)
        taken = {entry_identity(key) for key, _ in own}
        kept = []
        for key, value in merged:
            if entry_identity(key) not in taken:
                taken.add(entry_identity(key))
                kept.append((key, value))
        node.value = kept + own

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INTEGER_CHARS:
            raise ValueError(f"an integer longer than {MAX_INTEGER_CHARS} characters")
        if is_blank_number(node):  # PyYAML would read value[0]: an IndexError
            raise ValueError(f"invalid literal for int() with base 10: {node.value!r}")
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        if is_blank_number(node):
            raise ValueError(f"could not convert string to float: {node.value!r}")
        return super().construct_yaml_float(node)

    def construct_yaml_word(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))


GuardedLoader.add_constructor(YAML_TAG_PREFIX + "int", GuardedLoader.construct_yaml_int)
GuardedLoader.add_constructor(YAML_TAG_PREFIX + "float", GuardedLoader.construct_yaml_float)
# YAML 1.1 gives a plain "<<" and "=" types of their own (merge, value), which mean
# something only as a key; anywhere else they are the text they look like.
for _special in ("merge", "value"):
    GuardedLoader.add_constructor(YAML_TAG_PREFIX + _special, GuardedLoader.construct_yaml_word)


def is_blank_number(node: yaml.Node) -> bool:
    """``!!int`` or ``!!float`` on nothing (or only underscores), which PyYAML cannot read."""
    return isinstance(node, yaml.ScalarNode) and not node.value.replace("_", "")


def entry_identity(key: yaml.Node) -> object:
    """What makes two mapping keys the same key: the same tag and text for a scalar."""
    return (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else id(key)
