"""Every parser that sees client bytes works in time linear in its input (issue 13).

docs/security.md ("Parsing client bytes is linear") names each parser and these
tests. Work is bounded by CPU time, never by wall-clock time (other processes share
the machine):

* ``cpu_budget``: one whole adversarial input, at the size limits, must parse within
  ``CPU_BUDGET`` of this process's CPU. The limit is enforced by ITIMER_PROF: SIGPROF
  interrupts the regex engine too (sre checks for signals), so a catastrophic pattern
  fails the test in 50 ms instead of hanging it.
* ``assert_linear``: doubling the adversarial part of an input at most about triples
  the median CPU cost (linear work doubles it; quadratic work quadruples it).

Inputs are built from the separators each grammar uses — repeated commas, ``;q=``,
quotes left open, runs of whitespace, ``%``, ``/`` and dots — since those are what
a backtracking pattern or a rescanning loop spends its time on.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import re
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserver.config import Limits
from forkserver.config.model import RuleSetting
from forkserver.encoding.negotiation import coding_weights, refuses_identity, select_coding
from forkserver.errors import HttpError
from forkserver.http import HeadParser, HeadScan, parse_request
from forkserver.http import heads as http_heads
from forkserver.http.negotiate import prefers_json, prefers_plain_text
from forkserver.http.proxy import V2_SIGNATURE, ProxyError, parse_proxy_header
from forkserver.logformats import escape_field
from forkserver.sites.auth import basic_credentials
from forkserver.sites.hosts import site_name
from forkserver.sites.rules import Rules
from forkserver.static import resolve_path
from forkserver.static.caching import CacheRules, glob_regex
from forkserver.static.conditional import evaluate_preconditions, if_range_holds, parse_etags
from forkserver.static.ranges import parse_range

LIMITS = Limits()  # request_line 8190, header_bytes 16384, headers 100
HEAD = LIMITS.header_bytes
LINE = LIMITS.request_line
CPU_BUDGET = 0.05  # seconds of CPU for one adversarial input at the limits
MEASURE_FLOOR = 0.004  # each timed batch runs at least this long, so noise is small
GROWTH = 8.0  # 4x the input: linear costs ~4x, quadratic 16x; room for a busy CPU


class OverBudget(Exception):
    """The block used more CPU than its budget."""


@contextlib.contextmanager
def cpu_budget(seconds: float = CPU_BUDGET) -> Iterator[None]:
    """Raise OverBudget once this process has spent ``seconds`` of CPU in the block."""

    def over(signum: int, frame: FrameType | None) -> None:
        raise OverBudget(f"more than {seconds * 1000:.0f} ms of CPU")

    previous = signal.signal(signal.SIGPROF, over)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def quietly(parse: Callable[[str], object], value: str) -> None:
    """Run a parser; refusing the input (its error) is as good as accepting it."""
    with contextlib.suppress(HttpError, ProxyError):
        parse(value)


def batch_cost(parse: Callable[[str], object], value: str, repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        quietly(parse, value)
    return time.process_time() - start


def median_cost(parse: Callable[[str], object], value: str, repeat: int) -> float:
    return statistics.median(batch_cost(parse, value, repeat) for _ in range(5))


def assert_linear(parse: Callable[[str], object], make: Callable[[int], str], size: int) -> None:
    """The whole input of ``size`` parses within budget, and a quarter of it costs ≥ 1/8."""
    full, half = make(size), make(size // 4)
    with cpu_budget():
        quietly(parse, full)
    gc.disable()
    try:
        repeat = 1
        while batch_cost(parse, half, repeat) < MEASURE_FLOOR:
            repeat *= 2
        small = median_cost(parse, half, repeat)
        large = median_cost(parse, full, repeat)
    finally:
        gc.enable()
    assert large <= GROWTH * small, f"4x the input cost x{large / small:.1f}"


# -- the parsers, as functions of one text ------------------------------------------------
def head(text: str) -> object:
    return parse_request(text.encode("latin-1"), LIMITS)


def field(name: str) -> Callable[[str], object]:
    """A whole request head carrying one field whose value is the input."""

    def parse(value: str) -> object:
        return head(f"GET / HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n\r\n")

    return parse


def host(value: str) -> object:
    return head(f"GET / HTTP/1.1\r\nHost: {value}\r\n\r\n")


def conditional(name: str) -> Callable[[str], object]:
    def parse(value: str) -> object:
        return evaluate_preconditions({name: value}, '"abc-1-2"', 1_700_000_000)

    return parse


def if_range(value: str) -> object:
    return if_range_holds(value, '"abc-1-2"', 1_700_000_000, 1_700_000_000.0, 1_800_000_000.0)


def byte_range(value: str) -> object:
    return parse_range(value, 1_000_000)


def accept_encoding(value: str) -> object:
    # Values this long are never remembered (CACHE_MAX_VALUE): each call parses.
    return select_coding(value, ("br", "zstd", "gzip")), refuses_identity(value)


def proxy(value: str) -> object:
    return parse_proxy_header(value.encode("latin-1"))


STAR_RULES = CacheRules(
    [("*a*a*a*b", "1"), ("**a**a**b", "2"), ("/**/x*y/**/z", "3"), ("**.css", "4")]
)

SITE_RULES = Rules([
    RuleSetting("*a*a*a*b", headers=(("X-A", "1"),)),
    RuleSetting("/**a**a**b", allow=("10.0.0.0/8",)),
    RuleSetting("/r/**", redirect="/new/{rest}{query}"),
    RuleSetting("*.css", headers=(("X-B", "2"),)),
])
FILL = HEAD - 64  # room for the request line and Host around an adversarial field
# (name, parser, input of about n characters, n at the limit)
CASES: list[tuple[str, Callable[[str], object], Callable[[int], str], int]] = [
    # request line (http.py _REQUEST_LINE, _REQUEST_LINE_PREFIX)
    ("line: spaces in the target", head,
     lambda n: "GET /" + " " * n + "HTTP/1.1\r\nHost: x\r\n\r\n", LINE - 16),
    ("line: long target, junk after the version", head,
     lambda n: "GET /" + "a" * n + " HTTP/1.1 x\r\nHost: x\r\n\r\n", LINE - 32),
    ("line: one long token", head, lambda n: "G" * n + "\r\n\r\n", LINE),
    ("line: over the limit, separators", head,
     lambda n: "GET " + "/ " * (n // 2) + "\r\n\r\n", HEAD - 16),
    ("line: incomplete, separators", head, lambda n: "GET " + "/ " * (n // 2), LINE),
    # field lines (_FIELD_LINES, _FIELD, _FIELD_LINE_PREFIX, _head_error)
    ("field: whitespace runs", field("A"),
     lambda n: " \t" * (n // 4) + "x" + " " * (n // 2), FILL),
    ("field: word and space", field("A"), lambda n: "a " * (n // 2), FILL),
    ("field: trailing whitespace, then a control byte", field("A"),
     lambda n: "x" + " \t" * (n // 2) + "\x00", FILL),
    ("field: control byte at the end", field("A"),
     lambda n: "a " * (n // 2) + "\x01", FILL),
    ("field: long name, no colon", head,
     lambda n: "GET / HTTP/1.1\r\n" + "A" * n + "\r\n\r\n", FILL),
    ("field: space before the colon", head,
     lambda n: "GET / HTTP/1.1\r\n" + "A" * n + " : x\r\n\r\n", FILL),
    ("field: 98 repeats of one name", head,
     lambda n: "GET / HTTP/1.1\r\nHost: x\r\n" + ("A: " + "b" * (n // 100) + "\r\n") * 98
     + "\r\n", FILL),
    ("field: incomplete head of many fields", head,
     lambda n: "GET / HTTP/1.1\r\n" + "A: b\r\n" * (n // 6), FILL),
    # Host (_HOST, _valid_ip_literal)
    ("host: escapes", host, lambda n: "a%2" * (n // 3), FILL),
    ("host: brackets", host, lambda n: "[" * n, FILL),
    ("host: colons", host, lambda n: "a:" * (n // 2), FILL),
    ("host: IPv6 literal of colons", host, lambda n: "[" + ":" * n + "]", FILL),
    ("host: IPvFuture", host, lambda n: "[v1." + "a" * n + "]", FILL),
    # absolute-form (_ABSOLUTE_FORM, _valid_authority)
    ("target: absolute-form slashes and queries", head,
     lambda n: "GET http://" + "a/" * (n // 4) + "?" * (n // 2) + " HTTP/1.1\r\nHost: x\r\n\r\n",
     LINE - 32),
    ("target: absolute-form userinfo", head,
     lambda n: "GET http://" + "a@" * (n // 2) + "/ HTTP/1.1\r\nHost: x\r\n\r\n", LINE - 32),
    ("target: authority-form", head,
     lambda n: "CONNECT " + "a" * n + ":1 HTTP/1.1\r\nHost: x\r\n\r\n", LINE - 32),
    # framing fields
    ("Content-Length: list", field("Content-Length"), lambda n: "5, " * (n // 3), FILL),
    ("Content-Length: digits", field("Content-Length"), lambda n: "9" * n, FILL),
    ("Connection: commas", field("Connection"), lambda n: ", " * (n // 2), FILL),
    ("Transfer-Encoding: list", field("Transfer-Encoding"),
     lambda n: "chunked, " * (n // 9), FILL),
    # conditional.py: entity-tag lists and HTTP-dates
    ("If-None-Match: commas after a tag", conditional("if-none-match"),
     lambda n: '"a"' + "," * n + "x", FILL),
    ("If-Match: commas after a tag", conditional("if-match"),
     lambda n: '"a"' + "," * n + "x", FILL),
    ("If-None-Match: long valid list", conditional("if-none-match"),
     lambda n: '"a", ' * (n // 5), FILL),
    ("If-None-Match: separators", conditional("if-none-match"),
     lambda n: ", \t" * (n // 3), FILL),
    ("If-Match: unclosed quote", conditional("if-match"), lambda n: '"' + "a" * n, FILL),
    ("If-Match: quotes", conditional("if-match"), lambda n: '"a",' + '"' * n, FILL),
    ("If-None-Match: W/ repeated", conditional("if-none-match"), lambda n: "W/" * (n // 2), FILL),
    ("If-None-Match: spaces then junk", conditional("if-none-match"),
     lambda n: '"a"' + " " * n + "x", FILL),
    ("If-None-Match: tag, spaces, commas", conditional("if-none-match"),
     lambda n: '"a"' + " , " * (n // 3) + '"b" x', FILL),
    ("If-Modified-Since: trailing spaces", conditional("if-modified-since"),
     lambda n: "Sun, 06 Nov 1994 08:49:37 GMT" + " " * n, FILL),
    ("If-Unmodified-Since: repeated day names", conditional("if-unmodified-since"),
     lambda n: "Sun, " * (n // 5), FILL),
    ("If-Range: repeated dates", if_range,
     lambda n: "Sun Nov  6 08:49:37 1994 " * (n // 25), FILL),
    # ranges.py
    ("Range: commas", byte_range, lambda n: "bytes=" + "," * n, FILL),
    ("Range: many ranges", byte_range, lambda n: "bytes=" + "0-0," * (n // 4), FILL),
    ("Range: long numbers", byte_range,
     lambda n: "bytes=" + "0" * (n // 2) + "-" + "9" * (n // 2), FILL),
    ("Range: dashes", byte_range, lambda n: "bytes=" + "1-" * (n // 2), FILL),
    ("Range: spaces", byte_range, lambda n: "bytes=" + " " * n + "0-1", FILL),
    ("Range: equals signs", byte_range, lambda n: "=" * n, FILL),
    # negotiate.py
    ("Accept-Encoding: many ;q=", coding_weights, lambda n: "gzip" + ";q=1" * (n // 4), FILL),
    ("Accept-Encoding: commas", coding_weights, lambda n: "," * n + "x", FILL),
    ("Accept-Encoding: semicolons", coding_weights, lambda n: "gzip" + ";" * n, FILL),
    ("Accept-Encoding: long q", coding_weights, lambda n: "gzip;q=0." + "0" * n, FILL),
    ("Accept-Encoding: whitespace", coding_weights, lambda n: " \t" * (n // 2), FILL),
    # encoding/negotiation.py: the site's Accept-Encoding (br, zstd, gzip, 406)
    ("Accept-Encoding (site): many ;q=", accept_encoding,
     lambda n: "zstd" + ";q=1" * (n // 4), FILL),
    ("Accept-Encoding (site): commas", accept_encoding, lambda n: "," * n + "x", FILL),
    ("Accept-Encoding (site): duplicates", accept_encoding, lambda n: "gzip," * (n // 5), FILL),
    ("Accept-Encoding (site): spaced q", accept_encoding,
     lambda n: "br;q" + " " * n + "=0", FILL),
    ("Accept-Encoding (site): long q", accept_encoding, lambda n: "br;q=0." + "0" * n, FILL),
    ("Accept-Encoding (site): identity refusals", accept_encoding,
     lambda n: "identity;q=0," * (n // 13), FILL),
    ("Accept: many ;q=", prefers_json, lambda n: "text/html" + ";q=0.5" * (n // 6), FILL),
    ("Accept: many ranges", prefers_plain_text, lambda n: "a/b;q=0.1," * (n // 10), FILL),
    ("Accept: slashes", prefers_json, lambda n: "/" * n, FILL),
    # proxy.py (bounded to 107 bytes for v1, 4096 for v2, whatever the buffer holds)
    ("PROXY v1: spaces", proxy, lambda n: "PROXY " + " " * n, FILL),
    ("PROXY v1: long address", proxy, lambda n: "PROXY TCP4 " + "1." * n, FILL),
    ("PROXY v2: empty TLVs", proxy,
     lambda n: (V2_SIGNATURE + b"\x21\x11" + (12 + 3 * 1000).to_bytes(2, "big")
                + bytes(12) + b"\x01\x00\x00" * 1000).decode("latin-1") + "x" * n, FILL),
    # static.py: path decoding (_BAD_ESCAPE, unquote, dot-segments)
    ("path: percent signs", resolve_path, lambda n: "/" + "%" * n, LINE),
    ("path: broken escapes", resolve_path, lambda n: "/" + "%2" * (n // 2), LINE),
    ("path: valid escapes", resolve_path, lambda n: "/" + "%25" * (n // 3), LINE),
    ("path: dot-dot segments", resolve_path, lambda n: "/a" + "/a/.." * (n // 5), LINE),
    ("path: dot segments", resolve_path, lambda n: "/" + "./" * (n // 2) + "x", LINE),
    ("path: empty segments", resolve_path, lambda n: "/" * n, LINE),
    # logs.py: the access log's escaping
    ("log: quotes and backslashes", escape_field, lambda n: '"\\' * (n // 2), HEAD),
    ("log: control bytes", escape_field, lambda n: "\x00\x1b" * (n // 2), HEAD),
    # caching.py: cache_control globs with several stars, on request paths
    ("cache_control: a run of one letter", STAR_RULES, lambda n: "/" + "a" * n, LINE),
    ("cache_control: many segments", STAR_RULES, lambda n: "/a" * (n // 2), LINE),
    ("cache_control: dotted segments", STAR_RULES, lambda n: "/a." * (n // 3) + "css/", LINE),
    # sites/: Authorization, the Host that picks a site, rules and redirect templates
    ("Authorization: long base64", basic_credentials, lambda n: "Basic " + "QUFB" * (n // 4),
     FILL),
    ("Authorization: colons", basic_credentials,
     lambda n: "Basic " + base64.b64encode(b":" * (n * 3 // 4)).decode()[: n], FILL),
    ("Authorization: spaces", basic_credentials, lambda n: "Basic" + " " * n + "x", FILL),
    ("site name: dots", site_name, lambda n: "." * n, FILL),
    ("site name: labels", site_name, lambda n: "a." * (n // 2), FILL),
    ("site name: IPv6 colons", site_name, lambda n: "[" + ":" * n + "]", FILL),
    ("rules: a run of one letter", lambda p: SITE_RULES.decide(p, "", "127.0.0.1"),
     lambda n: "/" + "a" * n, LINE),
    ("rules: many segments", lambda p: SITE_RULES.decide(p, "", "127.0.0.1"),
     lambda n: "/r" + "/a" * (n // 2), LINE),
    ("redirect: characters to escape", lambda p: SITE_RULES.decide(p, p[1:], "::1"),
     lambda n: "/r/" + '"<' * (n // 2), LINE),
]


@pytest.mark.parametrize(
    ("parse", "make", "size"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_adversarial_input_at_the_limit_parses_in_linear_time(
    parse: Callable[[str], object], make: Callable[[int], str], size: int
) -> None:
    assert_linear(parse, make, size)


# -- issue 13: the request that hung a worker ---------------------------------------------
ISSUE_13 = b'GET /any-existing-file HTTP/1.1\r\nHost: x\r\nIf-None-Match: "a",' + (
    b"," * 30 + b"x\r\n\r\n"
)


@pytest.mark.parametrize("name", ["if-none-match", "if-match"])
def test_issue_13_comma_flood_after_an_entity_tag_is_cheap(name: str) -> None:
    # Before the fix each comma doubled the time: 30 commas took minutes of CPU.
    request, _ = parse_request(ISSUE_13.replace(b"If-None-Match", name.encode()), LIMITS) or (
        pytest.fail("the head did not parse")
    )
    value = request.headers[name]
    with cpu_budget():
        assert parse_etags(value) is None  # a broken list matches nothing
        verdict = evaluate_preconditions(request.headers, '"a"', 1_700_000_000)
    assert verdict.value == (412 if name == "if-match" else 200)


# -- properties over the separator alphabet -----------------------------------------------
SEPARATORS = ' \t,;="/W*-%.?q0a'
units = st.text(alphabet=SEPARATORS, min_size=1, max_size=6)
PARSERS: list[Callable[[str], object]] = [
    field("A"), host, conditional("if-match"), conditional("if-none-match"),
    conditional("if-modified-since"), if_range, byte_range, coding_weights, prefers_json,
    prefers_plain_text, proxy, escape_field, STAR_RULES,
    lambda value: resolve_path("/" + value),
    lambda value: head(f"GET /{value} HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@settings(max_examples=150, deadline=None)
@given(unit=units, count=st.integers(1, 2000), tail=st.text(alphabet=SEPARATORS, max_size=3))
def test_property_repeated_separators_parse_within_budget(unit: str, count: int, tail: str) -> None:
    value = unit * count + tail
    for parse in PARSERS:
        with cpu_budget():
            quietly(parse, value)


# The entity-tag list pattern before issue 13: exponential, so an oracle only for
# short inputs. The new parser must agree with it everywhere.
_OLD_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
_OLD_ETAG_LIST = re.compile(rf"[ \t,]*{_OLD_TAG}(?:[ \t]*,[ \t,]*(?:{_OLD_TAG})?)*[ \t,]*")


def old_parse_etags(value: str) -> list[str] | None:
    if value == "*":
        return ["*"]
    if not _OLD_ETAG_LIST.fullmatch(value):
        return None
    return re.findall(_OLD_TAG, value)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=' \t,"W/a*\\\x7f\xe9', max_size=12))
def test_property_entity_tag_lists_keep_their_meaning(value: str) -> None:
    assert parse_etags(value) == old_parse_etags(value)


GLOB_PATTERNS = st.text(alphabet="*?/a.[]!", min_size=1, max_size=8)
GLOB_PATHS = st.text(alphabet="/a.b[]!", max_size=10).map(lambda path: "/" + path)


# "[[" makes re warn of a future nested set; the globs mean a literal "[" in a class.
@pytest.mark.filterwarnings("ignore::FutureWarning")
@settings(max_examples=500, deadline=None)
@given(patterns=st.lists(GLOB_PATTERNS, min_size=1, max_size=3), path=GLOB_PATHS)
def test_property_glob_matcher_agrees_with_the_glob_regex(patterns: list[str], path: str) -> None:
    rules = CacheRules([(pattern, str(index)) for index, pattern in enumerate(patterns)])
    expected = "no-cache"
    for index, pattern in enumerate(patterns):
        if re.fullmatch(glob_regex(pattern), path, re.DOTALL):
            expected = str(index)
            break
    assert rules(path) == expected


# -- a head that arrives a byte at a time ---------------------------------------------------


def trickle(raw: bytes, monkeypatch: pytest.MonkeyPatch, scan: bool) -> tuple[object, int]:
    """Feed ``raw`` to a HeadParser one byte per read, as a worker's connection does;
    the outcome and the bytes parse_request was handed in all (its work is linear in
    what it is handed)."""
    examined = 0
    real = parse_request

    def counting(buf: bytes | bytearray, limits: Limits) -> object:
        nonlocal examined
        examined += len(buf)
        return real(buf, limits)

    monkeypatch.setattr(http_heads, "parse_request", counting)
    parser = HeadParser(LIMITS)
    progress = HeadScan() if scan else None
    buf = bytearray()
    outcome: object = None
    for byte in raw:
        buf.append(byte)
        try:
            outcome = parser.parse(buf, progress)
        except HttpError as error:
            outcome = ("error", error.status)
        if outcome is not None:
            break
    monkeypatch.undo()
    return outcome, examined


LIMIT_HEADS = {
    # a whole head of exactly header_bytes, many fields
    "fields": b"GET / HTTP/1.1\r\nHost: a\r\n"
    + b"".join(b"X-%02d: %s\r\n" % (n, b"v" * 150) for n in range(95)),
    # one long field value, up to the limit
    "value": b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * (HEAD - 40),
    # empty lines first, then a head
    "empty lines": b"\r\n" * 2000 + b"GET / HTTP/1.1\r\nHost: a\r\n",
}


@pytest.mark.parametrize("name", LIMIT_HEADS)
def test_a_head_trickled_a_byte_per_read_is_parsed_in_linear_work(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker re-parsed the whole buffered head on every read: a 16 KiB head sent a
    byte per packet cost ~0.45 s of CPU. With a HeadScan per connection, each byte is
    searched once and the head is checked again only when the buffer has doubled."""
    body = LIMIT_HEADS[name]
    whole = body + b"\r\n"  # complete, within the limit
    assert len(whole) <= HEAD
    outcome, examined = trickle(whole, monkeypatch, scan=True)
    assert outcome == parse_request(whole, LIMITS)
    assert examined <= 4 * HEAD  # quadratic would be ~len(whole)**2 / 2
    # The same, one byte over the limit: the same verdict as in one piece (431).
    over = body + b"x" * (HEAD - len(body) + 1)
    outcome, examined = trickle(over, monkeypatch, scan=True)
    assert outcome == ("error", 431)
    assert examined <= 4 * HEAD
    _, unscanned = trickle(whole, monkeypatch, scan=False)
    assert unscanned > 100 * HEAD  # what the test guards against


def test_a_trickled_invalid_head_keeps_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked less often, an invalid head still earns the status of its first bad
    byte, before the client has sent twice as much."""
    for raw, status in [
        (b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n" + b"x" * 40, 505),
        (b"GET /" + b"a" * (LINE + 10), 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: b\r\n" + b"x" * 60, 400),
    ]:
        outcome, _ = trickle(raw, monkeypatch, scan=True)
        assert outcome == ("error", status), raw[:40]
