"""config.py against hostile YAML: every file is a Config or a ConfigError, quickly.

The master re-reads its file on every HUP, so no file may make the loader raise
anything but ConfigError (that would end the master) or take long (the master does
nothing else meanwhile). A table names each known way a file can be wrong with the
exact message; hypothesis then throws generated documents at the loader — anchors,
aliases, merge keys, tags, flow and block nesting, odd scalars, random bytes.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkserver.config import Config, load_config
from forkserver.errors import ConfigError

TAG_REFUSED = (
    "is not accepted (forkserver reads plain data; only !!str, !!int, !!float, !!bool "
    "and !!null may be written)"
)
# Nine aliases of nine aliases, nine levels: 9**9 values if anything expanded it.
BILLION_LAUGHS = (
    "x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"x-{name}: &{name} [{', '.join(['*' + inner] * 9)}]\n"
        for inner, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "headers: {X-Lol: *i}\n"
)

# (id, file content, the problems with FILE standing for the file's path). Each one
# used to end the master on HUP, or is a file that must be refused with its line.
HOSTILE: list[tuple[str, bytes, list[str]]] = [
    ("merge-key-of-a-scalar", b"timeouts:\n  <<: 5\n", [
        "FILE:2: timeouts: a merge key '<<' takes a mapping or a list of mappings, such as "
        "'<<: *defaults' (write '\"<<\"' for a key of that name)"]),
    ("merged-value-is-wrong", b"x-defaults: &d {keepalive: abc}\ntimeouts: {<<: *d}\n", [
        "FILE:1: timeouts.keepalive: 'abc' is a string, expected a number of seconds"]),
    ("int-tag-on-a-key", b"port: 8080\n!!int abc: 1\n", [
        "FILE:2: 'abc': unreadable key: invalid literal for int() with base 10: 'abc'"]),
    ("local-tag-on-a-key", b"port: 8080\n!foo key: 1\n", [
        f"FILE:2:1: YAML error: the tag !foo {TAG_REFUSED}"]),
    ("float-tag-on-a-section", b"timeouts: !!float abc\n", [
        "FILE:1: timeouts: unreadable value: could not convert string to float: 'abc'"]),
    ("int-tag-on-nothing", b"port: !!int\nbacklog: !!int _\n", [
        "FILE:1: port: unreadable value: invalid literal for int() with base 10: ''",
        "FILE:2: backlog: unreadable value: invalid literal for int() with base 10: '_'"]),
    ("float-tag-on-nothing", b"timeouts: {send: !!float }\n", [
        "FILE:1: timeouts.send: unreadable value: could not convert string to float: ''"]),
    ("bool-tag-on-a-word", b"daemon: !!bool maybe\n", [
        "FILE:1: daemon: unreadable value: 'maybe' is not a YAML boolean"]),
    ("binary-tag", b"port: !!binary AAAA\n", [
        f"FILE:1:7: YAML error: the tag !!binary {TAG_REFUSED}"]),
    ("python-tag", b"host: !!python/object/apply:os.system [true]\n", [
        f"FILE:1:7: YAML error: the tag !!python/object/apply:os.system {TAG_REFUSED}"]),
    ("deep-nesting", b"workers: " + b"[" * 5000 + b"\n", [
        "FILE:1:41: YAML error: lists and mappings nested more than 32 deep"]),
    ("billion-laughs", BILLION_LAUGHS.encode(), [
        "FILE:6:10: YAML error: more than 100000 values once aliases are expanded (aliases "
        "of aliases multiply: is this an alias bomb?)"]),
    ("alias-inside-itself", b"headers: &a {x: *a}\n", [
        "FILE:1:17: YAML error: the alias *a is inside its own anchor &a (a value cannot "
        "contain itself)"]),
    ("huge-integer", b"port: 0x" + b"f" * 100 + b"\n", [
        "FILE:1: port: unreadable value: an integer longer than 64 characters"]),
    ("huge-value", b"docroot: " + b"a" * 20_000 + b"\n", [
        "FILE:1:10: YAML error: a value longer than 16384 characters"]),
    ("not-utf8", b"port: 8080\nhost: caf\xe9\n", ["FILE:2: the file is not UTF-8 text"]),
    ("nul-byte", b"port: 8080\n\x00\n", [
        "FILE:2: the file contains a NUL byte; a configuration is UTF-8 text"]),
    ("huge-file", b"port: 8080\n" + b"#" * 300_000 + b"\n", [
        "FILE:2: the file is larger than 256 KiB; a configuration is a few KiB (is this the "
        "right file?)"]),
    ("several-documents", b"port: 8080\n---\nport: 8081\n", [
        "FILE:2:1: YAML syntax error: but found another document (expected a single "
        "document in the stream)"]),
    ("empty", b"", [
        "FILE:1: the file is empty (to use every default on purpose, write a comment or "
        "'{}' in it)"]),
]


@pytest.mark.parametrize(("content", "problems"), [c[1:] for c in HOSTILE],
                         ids=[c[0] for c in HOSTILE])
def test_each_hostile_file_is_a_configuration_error_with_its_line(
    tmp_path: Path, content: bytes, problems: list[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.problems == [p.replace("FILE", str(path)) for p in problems]
    assert time.monotonic() - started < 2.0


# -- merge keys are read as YAML defines them ------------------------------------------


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_config(str(path))


def test_merge_keys_merge_and_the_mappings_own_keys_win(tmp_path: Path) -> None:
    config = load_text(tmp_path, (
        "x-timeouts: &slow {keepalive: 5, send: 7}\n"
        "x-fast: &fast {send: 1, header: 2}\n"
        "timeouts:\n  <<: [*fast, *slow]\n  graceful: 3\n  header: 4\n"
    ))
    # The first merged mapping wins over the second; the mapping's own keys win over both.
    assert (config.timeouts.keepalive, config.timeouts.send) == (5.0, 1.0)
    assert (config.timeouts.graceful, config.timeouts.header) == (3.0, 4.0)


def test_a_mapping_merged_twice_reads_the_same_both_times(tmp_path: Path) -> None:
    config = load_text(tmp_path, (
        "x-h: &h {<<: {X-A: a}, X-A: b}\nheaders: *h\nx-again: {<<: *h}\n"
    ))
    assert config.headers == (("X-A", "b"),)


def test_merge_chains_are_bounded(tmp_path: Path) -> None:
    text = "x-a0: &a0 {send: 1}\n" + "".join(
        f"x-a{i}: &a{i} {{<<: *a{i - 1}}}\n" for i in range(1, 40)
    ) + "timeouts: *a39\n"
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.problems == [
        f"{path}:8: timeouts: merge keys ('<<') nested more than 32 deep"
    ]


# -- generated documents -------------------------------------------------------------

KEYS = ["port", "host", "workers", "docroot", "timeouts", "limits", "headers", "status",
        "allow", "keepalive", "send", "cache_control", "mime_types", "error_pages", "x-d",
        "<<", "=", "?", "bogus", "1", "~"]
ODD_SCALARS = ["<<", "=", "~", "0b_", "0x_", "0x", "0b", "1:2:3", "1:" * 30 + "1", "0700",
               ".nan", "-.inf", "2001-13-45", "2001-12-14t21:59:43.10-05:00", "yes", "off",
               "''", '""', '"\\x00"', '"\\ud800"', "'a''b'", "-", "- a", "[]", "{}", "|", ">",
               "&", "*", "!", "!!", "%", "@", "`", "#x", "9" * 5000, "1e999", "8080"]
TAGS = ["!!int", "!!float", "!!bool", "!!null", "!!str", "!", "!foo", "!!binary", "!!set",
        "!!omap", "!!pairs", "!!timestamp", "!!seq", "!!map", "!!merge", "!!value",
        "!!python/name:os.system", "!<tag:example.com,2000:x>", "!e!x"]
ANCHORS = ["a", "b", "c"]


def scalars() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ODD_SCALARS + KEYS),
        st.integers(-(2**70), 2**70).map(str),
        st.text(alphabet="ab0:_.-+ x", max_size=8),
    )


def decorate(node: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Optionally prefix a tag and/or an anchor, or replace the node by an alias."""
    return st.one_of(
        node,
        st.tuples(st.sampled_from(TAGS), node).map(" ".join),
        st.tuples(st.sampled_from(ANCHORS), node).map(lambda p: f"&{p[0]} {p[1]}"),
        st.sampled_from(ANCHORS).map(lambda a: f"*{a}"),
    )


def flow_nodes() -> st.SearchStrategy[str]:
    return st.recursive(
        decorate(scalars()),
        lambda children: decorate(st.one_of(
            st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
            st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), children), children),
                     max_size=4).map(
                lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"),
            st.sampled_from(ANCHORS).map(lambda a: "{<<: *" + a + "}"),
            st.integers(1, 60).map(lambda n: "[" * n + "]" * n),
        )),
        max_leaves=12,
    )


def documents() -> st.SearchStrategy[bytes]:
    block = st.lists(
        st.tuples(decorate(st.sampled_from(KEYS)), flow_nodes()), min_size=0, max_size=6
    ).map(lambda pairs: "".join(f"{k}: {v}\n" for k, v in pairs))
    prefix = st.sampled_from(["", "---\n", "%YAML 1.1\n---\n", "%TAG !e! tag:e.com,2000:\n---\n",
                              "\ufeff", "--- !foo\n", "...\n"])
    suffix = st.sampled_from(["", "---\nport: 1\n", "...\n", "\t\n", "  - x\n", "# end\n"])
    text = st.tuples(prefix, block, suffix).map("".join).map(lambda t: t.encode())
    return st.one_of(text, st.binary(max_size=200), st.tuples(text, st.binary(max_size=8),
                     st.integers(0, 400)).map(lambda p: p[0][: p[2]] + p[1] + p[0][p[2]:]))


@pytest.fixture(scope="module")
def directory() -> Iterator[Path]:
    # hypothesis runs many examples per test call: one directory, rewritten each time.
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


# No deadline from hypothesis (a loaded 2-core machine makes its default 200 ms flaky);
# the bound asserted below is what matters, and it is generous: a real blow-up (deep
# recursion, alias expansion, quadratic integers) takes seconds to minutes.
@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=documents())
def test_any_document_is_a_config_or_a_configuration_error(
    directory: Path, content: bytes
) -> None:
    path = directory / "site.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    try:
        load_config(str(path))
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.startswith(f"{path}:") or problem.startswith("command line"), problem
    assert time.monotonic() - started < 5.0
