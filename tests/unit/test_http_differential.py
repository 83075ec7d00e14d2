"""Differential test: forkserver.http against h11 (the anchor of docs/architecture.md).

The same bytes go to ``h11.Connection(h11.SERVER)`` (receive_data, then next_event: a
``Request`` event means accepted, ``RemoteProtocolError`` means rejected) and to
``parse_request``, and the accept/reject verdicts must agree:

* over the whole corpus of tests/unit/test_http.py, except the cases listed in
  ``CORPUS_DIFFERENCES``;
* over hypothesis-generated heads drawn from a grammar where both parsers promise
  the same answer (valid pieces, and invalid pieces both must refuse);
* one-sided over mutated heads: whatever forkserver accepts, h11 accepts too, with
  the same method, target, version and fields (forkserver is never the more lenient).

Where forkserver deliberately differs, the case sits in ``DELIBERATE_DIFFERENCES``
with its reason, and the test asserts both sides of the difference, so a change in
either parser (or in h11) shows up here instead of silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from forkserver.config import Limits
from forkserver.errors import HttpError
from forkserver.http import MAX_CONTENT_LENGTH, Request, parse_request
from tests.unit.test_http import (
    MALFORMED,
    VALID,
    VALUE_CHARS,
    head,
    mutated_heads,
    valid_requests,
)

LIMITS = Limits()
ACCEPT, REJECT = "accept", "reject"

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def h11_event(raw: bytes) -> h11.Request | None:
    """h11's reading of one complete head: the Request, or None when it refuses it."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request), f"h11 did not finish the head: {event!r}"
    return event


def h11_verdict(raw: bytes) -> str:
    return REJECT if h11_event(raw) is None else ACCEPT


def our_verdict(raw: bytes) -> str:
    try:
        result = parse_request(raw, LIMITS)
    except HttpError:
        return REJECT
    assert result is not None, "a complete head must not need more bytes"
    return ACCEPT


def our_status(raw: bytes) -> int:
    """200 for an accepted head, else the status of the HttpError."""
    try:
        result = parse_request(raw, LIMITS)
    except HttpError as error:
        return error.status
    assert result is not None
    return 200


@dataclass(frozen=True)
class Difference:
    reason: str
    h11: str  # h11's verdict on every example
    examples: tuple[tuple[bytes, int], ...]  # (head, our status; 200 = accepted)

    @property
    def ours(self) -> str:
        verdicts = {ACCEPT if status == 200 else REJECT for _, status in self.examples}
        assert len(verdicts) == 1, "one difference, one verdict"
        return verdicts.pop()


FIELDS_OVER_LIMIT = head("Host: a", *(f"X-{i}: v" for i in range(LIMITS.headers)))
LONG_LINE = "GET /" + "a" * (LIMITS.request_line - len("GET / HTTP/1.1") + 1) + " HTTP/1.1"

DELIBERATE_DIFFERENCES: dict[str, Difference] = {
    "leading-empty-lines": Difference(
        "RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request "
        "line (robustness after a body with a stray CRLF); h11 reports 'no request line'.",
        REJECT,
        ((b"\r\n" + head("Host: a"), 200), (b"\r\n\r\n\r\n" + head("Host: a"), 200)),
    ),
    "unsupported-major-version": Difference(
        "RFC 9110 §15.6.6: an HTTP/1.1 server answers 505 to a major version it does not "
        "speak (HTTP/2.0 prior knowledge, HTTP/0.9 with a version); h11 leaves the version "
        "to the application.",
        ACCEPT,
        (
            (head("Host: a", request="GET / HTTP/2.0"), 505),
            (head(request="GET / HTTP/0.9"), 505),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        ),
    ),
    "higher-minor-needs-host": Difference(
        "RFC 9110 §2.5: HTTP/1.2..1.9 are served as HTTP/1.1, so Host is required as for "
        "1.1 (RFC 9112 §3.2); h11 requires Host only for exactly '1.1'.",
        ACCEPT,
        ((head(request="GET / HTTP/1.2"), 400), (head(request="GET / HTTP/1.9"), 400)),
    ),
    "fragment-in-target": Difference(
        "RFC 9110 §7.1: clients never send a fragment; a '#' in the request-target is "
        "malformed. h11 accepts any VCHAR.",
        ACCEPT,
        ((head("Host: a", request="GET /a#b HTTP/1.1"), 400),),
    ),
    "request-target-form": Difference(
        "RFC 9112 §3.2: origin-form, absolute-form (http/https, non-empty host, no userinfo), "
        "asterisk-form only for OPTIONS, authority-form only for CONNECT; anything else is "
        "400. h11 does not look at the target's form.",
        ACCEPT,
        (
            (head("Host: a", request="GET x HTTP/1.1"), 400),
            (head("Host: a", request="GET * HTTP/1.1"), 400),
            (head("Host: a", request="GET ftp://a/ HTTP/1.1"), 400),
            (head("Host: a", request="GET http://u@a/ HTTP/1.1"), 400),
            (head("Host: a", request="CONNECT / HTTP/1.1"), 400),
        ),
    ),
    "bare-lf": Difference(
        "RFC 9112 §2.2 MAY accept a bare LF; forkserver refuses it everywhere so it never "
        "sees a different head than a proxy that splits on CRLF (smuggling). h11 accepts.",
        ACCEPT,
        (
            (b"GET / HTTP/1.1\nHost: a\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
        ),
    ),
    "obs-fold": Difference(
        "RFC 9112 §5.2: obs-fold may be rejected or unfolded; forkserver rejects. h11 "
        "unfolds, which turns ' Transfer-Encoding: chunked' into part of the previous field.",
        ACCEPT,
        (
            (head("Host: a", "X: one", " two"), 400),
            (head("Host: a", "Transfer-Encoding:", " chunked"), 400),
            (head("Host: a", " Transfer-Encoding: chunked"), 400),
        ),
    ),
    "control-in-field-value": Difference(
        "RFC 9110 §5.5: field values hold VCHAR, obs-text, SP and HTAB only. h11 refuses "
        "only NUL and whitespace controls; forkserver refuses every CTL but HTAB.",
        ACCEPT,
        (
            (head("Host: a", "X: a\x01b"), 400),
            (head("Host: a", "X: a\x7f"), 400),
            (head("Host: a", "X: \x1b[m"), 400),
        ),
    ),
    "host-value": Difference(
        'RFC 9112 §3.2: a Host that is not uri-host [":" port] MUST get 400, and an empty '
        "host is invalid for an http URI (RFC 9110 §4.2.1). h11 only counts Host fields.",
        ACCEPT,
        (
            (head("Host: a b"), 400),
            (head("Host:"), 400),
            (head("Host: :80"), 400),
            (head("Host: [::1"), 400),
            (head("Host: a:123456"), 400),
            (head("Host: u@a"), 400),
            (head("Host: a b", request="GET / HTTP/1.0"), 400),
        ),
    ),
    "transfer-encoding": Difference(
        "No request bodies are accepted: chunked → 501; with Content-Length → 400 (RFC 9112 "
        "§6.3, the classic smuggling pair); in HTTP/1.0 → 400 (§6.1). h11 reads chunked "
        "bodies and lets Transfer-Encoding override Content-Length.",
        ACCEPT,
        (
            (head("Host: a", "Transfer-Encoding: chunked"), 501),
            (head("Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"), 400),
            (head("Transfer-Encoding: chunked", request="GET / HTTP/1.0"), 400),
        ),
    ),
    "content-length-range": Difference(
        f"Content-Length above {MAX_CONTENT_LENGTH} (2**63 - 1) cannot be an offset; h11 caps "
        "at 20 digits instead.",
        ACCEPT,
        (
            (head("Host: a", f"Content-Length: {MAX_CONTENT_LENGTH + 1}"), 400),
            (head("Host: a", "Content-Length: " + "9" * 20), 400),
        ),
    ),
    "limits": Difference(
        "414/431 limits (request line, head bytes, field count) apply however the head "
        "arrives; h11's only limit is max_incomplete_event_size, checked while the head is "
        "incomplete, so a head that arrives in one read is never refused.",
        ACCEPT,
        (
            (head("Host: a", request=LONG_LINE), 414),
            (FIELDS_OVER_LIMIT, 431),
            (head("Host: a", "X: " + "v" * LIMITS.header_bytes), 431),
        ),
    ),
}

# Corpus cases of test_http.py whose verdicts differ, and the difference that explains each.
CORPUS_DIFFERENCES: dict[str, str] = {
    "leading-crlf-rfc9112-2.2": "leading-empty-lines",
    "several-leading-crlf": "leading-empty-lines",
    "http20-rfc9110-15.6.6": "unsupported-major-version",
    "http30": "unsupported-major-version",
    "http09-three-tokens": "unsupported-major-version",
    "http99": "unsupported-major-version",
    "h2-prior-knowledge-preface": "unsupported-major-version",
    "http12-no-host": "higher-minor-needs-host",
    "target-fragment-rfc9110-7.1": "fragment-in-target",
    **dict.fromkeys(
        [
            "target-relative",
            "target-other-scheme",
            "target-scheme-without-slashes",
            "absolute-form-empty-host-rfc9110-4.2.1",
            "absolute-form-only-port",
            "absolute-form-userinfo-rfc9110-4.2.4",
            "absolute-form-bad-ipv6",
            "absolute-form-bad-port",
            "asterisk-form-for-get-rfc9112-3.2.4",
            "asterisk-form-with-path",
            "authority-form-for-get",
            "connect-origin-form-rfc9112-3.2.3",
            "connect-without-port",
            "connect-empty-port",
            "connect-asterisk",
            "connect-absolute-form",
            "connect-userinfo",
        ],
        "request-target-form",
    ),
    **dict.fromkeys(
        [
            "bare-lf-everywhere",
            "bare-lf-after-request-line",
            "bare-lf-after-field",
            "bare-lf-terminator",
            "lf-cr-lf-terminator",
        ],
        "bare-lf",
    ),
    **dict.fromkeys(
        ["obs-fold-rfc9112-5.2", "obs-fold-tab", "te-obs-fold", "te-leading-space-name"],
        "obs-fold",
    ),
    **dict.fromkeys(["ctl-in-value", "esc-in-value", "del-in-value"], "control-in-field-value"),
    **dict.fromkeys(
        [
            "empty-host-origin-form-rfc9110-4.2.1",
            "empty-host-http10",
            "empty-host-asterisk-form",
            "host-only-port",
            "host-space",
            "host-list",
            "host-userinfo",
            "host-path",
            "host-bad-port",
            "host-long-port",
            "host-two-ports",
            "host-bare-ipv6",
            "host-unclosed-ipv6",
            "host-bad-ipv6",
            "host-ipv6-zone",
            "host-bad-percent",
            "host-non-ascii",
            "host-invalid-absolute-form",
            "host-invalid-http10",
        ],
        "host-value",
    ),
    **dict.fromkeys(
        [
            "cl-and-te-rfc9112-6.3",
            "te-and-cl",
            "te-chunked-rfc9112-6.1",
            "te-chunked-uppercase",
            "te-chunked-tab-ows",
            "te-http10-rfc9112-6.1",
        ],
        "transfer-encoding",
    ),
    "cl-over-2-63": "content-length-range",
}

CORPUS = {case.id: case.raw for case in VALID} | {case.id: case.raw for case in MALFORMED}


def expected_verdicts(name: str) -> tuple[str, str]:
    difference = DELIBERATE_DIFFERENCES[name]
    return difference.ours, difference.h11


# -- the table ------------------------------------------------------------------------------


def test_every_corpus_difference_names_a_known_difference() -> None:
    assert set(CORPUS_DIFFERENCES) <= set(CORPUS)
    assert set(CORPUS_DIFFERENCES.values()) <= set(DELIBERATE_DIFFERENCES)


@pytest.mark.parametrize(
    "name,index",
    [(name, i) for name, diff in DELIBERATE_DIFFERENCES.items() for i in range(len(diff.examples))],
)
def test_deliberate_difference(name: str, index: int) -> None:
    difference = DELIBERATE_DIFFERENCES[name]
    raw, status = difference.examples[index]
    assert h11_verdict(raw) == difference.h11, "h11 changed: revisit this difference"
    assert our_status(raw) == status
    assert difference.ours != difference.h11


@pytest.mark.parametrize("case_id", sorted(CORPUS))
def test_corpus_verdict_matches_h11(case_id: str) -> None:
    raw = CORPUS[case_id]
    verdicts = our_verdict(raw), h11_verdict(raw)
    if case_id in CORPUS_DIFFERENCES:
        assert verdicts == expected_verdicts(CORPUS_DIFFERENCES[case_id])
    else:
        assert verdicts[0] == verdicts[1]


@pytest.mark.parametrize("case_id", sorted(case.id for case in VALID))
def test_corpus_accepted_fields_match_h11(case_id: str) -> None:
    raw = CORPUS[case_id]
    if CORPUS_DIFFERENCES.get(case_id) == "leading-empty-lines":
        assert_same_reading(raw, h11_raw=raw.lstrip(b"\r\n"))  # h11 reads the rest alike
    else:
        assert case_id not in CORPUS_DIFFERENCES
        assert_same_reading(raw)


def assert_same_reading(raw: bytes, h11_raw: bytes | None = None) -> None:
    """Both parsers accepted ``raw``; they must agree on what it says."""
    result = parse_request(raw, LIMITS)
    event = h11_event(raw if h11_raw is None else h11_raw)
    assert result is not None and event is not None
    ours: Request = result[0]
    assert ours.method == event.method.decode("latin-1")
    assert ours.target == event.target.decode("latin-1")
    h11_minor = int(event.http_version.decode("ascii").split(".")[1])
    assert ours.minor == min(h11_minor, 1)
    joined: dict[str, str] = {}
    for name, value in event.headers.raw_items():
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        joined[key] = f"{joined[key]}, {text}" if key in joined else text
    length = joined.pop("content-length", None)
    ours_length = ours.headers.get("content-length")
    assert {k: v for k, v in ours.headers.items() if k != "content-length"} == joined
    assert (ours_length is None) == (length is None)
    assert ours.content_length == (int(length.split(",")[0]) if length else 0)


# -- generated heads where both parsers promise the same verdict ---------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TARGET_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")
tokens = st.text(TCHARS, min_size=1, max_size=10).filter(lambda t: t != "CONNECT")
good_values = st.text(VALUE_CHARS, max_size=20)
# Controls both refuse in a value: NUL, VT, FF, and a bare CR inside the line.
bad_values = st.tuples(good_values, st.sampled_from("\x00\x0b\x0c\r"), good_values).map(
    lambda parts: f"x{parts[0]}{parts[1]}y{parts[2]}"
)
bad_names = st.sampled_from(["", "X Y", "X ", "X\t", "(x)", "X@", "é", "X\x00", "a/b", "[x]"])
good_hosts = st.sampled_from(["example.com", "a", "127.0.0.1:8080", "[::1]:80", "x_y.z"])
good_lengths = st.integers(0, 10**18).map(str)
bad_lengths = st.sampled_from(["", "+5", "-1", "0x10", "1e3", "5 5", "5, 6", "abc", "5;"])


@st.composite
def agreeing_heads(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(head, valid): an origin-form head where h11 and forkserver must agree.

    Each piece is either valid or broken in a way both parsers refuse; ``valid`` is
    true when no broken piece was chosen (then both must accept).
    """
    broken = False

    def pick(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> str:
        nonlocal broken
        if draw(st.integers(0, 14)) == 0:
            broken = True
            return draw(bad)
        return draw(good)

    method = pick(tokens, st.sampled_from(["", "GE T", "G(T", "GET\x00", "GÉT", "GET\t"]))
    target = pick(
        st.text(TARGET_CHARS, max_size=25).map(lambda t: "/" + t),
        st.sampled_from(["", "/a b", "/\x80", "/\x01", "/\x7f", "/a\tb"]),
    )
    version = pick(
        st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
        st.sampled_from(["HTTP/1", "HTTP/1.10", "http/1.1", "HTTP/1.1 ", "HTTP/11", "HTTP/x.1"]),
    )
    lines: list[str] = []
    host_count = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    if host_count == 2 or (host_count == 0 and version == "HTTP/1.1"):
        broken = True
    lines += [f"Host: {draw(good_hosts)}" for _ in range(host_count)]
    for _ in range(draw(st.integers(0, 6))):
        name = pick(tokens.filter(lambda n: n.lower() not in RESERVED), bad_names)
        ows = draw(st.sampled_from(["", " ", "\t "]))
        lines.append(f"{name}:{ows}{pick(good_values, bad_values)}")
    if draw(st.booleans()):
        if draw(st.integers(0, 4)) == 0:
            broken = True
            lengths = [draw(bad_lengths)]
        else:
            lengths = draw(st.lists(good_lengths, min_size=1, max_size=2))
            broken = broken or len(set(lengths)) > 1
        lines += [f"Content-Length: {length}" for length in lengths]
    if draw(st.booleans()):
        option = draw(st.sampled_from(["close", "keep-alive", "Upgrade, close"]))
        lines.append(f"Connection: {option}")
    order = draw(st.permutations(lines))
    raw = f"{method} {target} {version}\r\n".encode("latin-1")
    raw += "".join(f"{line}\r\n" for line in order).encode("latin-1") + b"\r\n"
    return raw, not broken


RESERVED = {"host", "content-length", "transfer-encoding", "connection"}


@PROPERTY_SETTINGS
@given(agreeing_heads())
def test_property_generated_heads_same_verdict(case: tuple[bytes, bool]) -> None:
    raw, valid = case
    verdict = our_verdict(raw)
    assert verdict == h11_verdict(raw)
    assert verdict == (ACCEPT if valid else REJECT)
    if valid:
        assert_same_reading(raw)


@PROPERTY_SETTINGS
@given(valid_requests())
def test_property_valid_requests_same_reading(case: tuple[bytes, dict[str, object]]) -> None:
    raw, _ = case
    assert h11_verdict(raw) == ACCEPT
    assert_same_reading(raw)


@PROPERTY_SETTINGS
@given(mutated_heads())
def test_property_never_more_lenient_than_h11(raw: bytes) -> None:
    """Whatever forkserver accepts, h11 accepts too and reads the same way."""
    assume(not raw.startswith(b"\r\n"))  # leading-empty-lines: the one lenient difference
    try:
        result = parse_request(raw, LIMITS)
    except HttpError:
        return
    if result is None:
        return
    assert_same_reading(raw[: result[1]])
