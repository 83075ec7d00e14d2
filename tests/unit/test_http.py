"""Unit tests for forkserver.http: the HTTP/1.1 request-head parser (RFC 9110/9112).

Tables of valid heads (the fields come out right) and malformed heads (each with the
status it earns, including the request-smuggling classics), every head fed split at
every byte, pipelining, the limits at and one past their boundary, and hypothesis
properties: arbitrary bytes only ever raise HttpError, generated requests round-trip,
a prefix of a valid head is never an error, and the status never depends on how the
bytes were split across reads.

Line endings: CRLF only. A bare LF or bare CR anywhere in the head is a 400 (RFC 9112
§2.2 allows accepting bare LF; refusing it everywhere keeps this server from seeing a
different head than a proxy in front of it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkserver.config import Limits
from forkserver.errors import HttpError
from forkserver.http import (
    HEAD_CACHE_ENTRIES,
    HEAD_CACHE_MAX_BYTES,
    MAX_CONTENT_LENGTH,
    HeadParser,
    Request,
    parse_request,
)

LIMITS = Limits()
SMALL = Limits(request_line=40, header_bytes=160, headers=4)
PARSER_STATUSES = {400, 414, 431, 501, 505}

PROPERTY_SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def head(*lines: str, request: str = "GET / HTTP/1.1") -> bytes:
    """A request head from its lines: CRLF after each, then the empty line."""
    return "".join(f"{line}\r\n" for line in (request, *lines)).encode("latin-1") + b"\r\n"


@dataclass(frozen=True)
class Valid:
    id: str
    raw: bytes
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Malformed:
    id: str
    raw: bytes
    status: int


# -- valid heads: the fields that come out ------------------------------------------------

VALID: list[Valid] = [
    Valid(
        "get-origin-form-rfc9112-3.2.1",
        head("Host: example.com"),
        {
            "method": "GET",
            "target": "/",
            "path": "/",
            "query": "",
            "minor": 1,
            "host": "example.com",
            "keep_alive": True,
            "content_length": 0,
            "line": "GET / HTTP/1.1",
            "headers": {"host": "example.com"},
        },
    ),
    Valid(
        "query-split-at-first-question-mark",
        head("Host: a", request="GET /a/b.html?x=1&y=/?z HTTP/1.1"),
        {"path": "/a/b.html", "query": "x=1&y=/?z", "target": "/a/b.html?x=1&y=/?z"},
    ),
    Valid("empty-query", head("Host: a", request="GET /a? HTTP/1.1"), {"path": "/a", "query": ""}),
    Valid(
        "path-stays-percent-encoded",
        head("Host: a", request="GET /a%20b/%2e%2e/%zz/%/c HTTP/1.1"),
        {"path": "/a%20b/%2e%2e/%zz/%/c"},
    ),
    Valid(
        "target-any-visible-ascii-but-hash-rfc9112-3.2",
        head("Host: a", request="GET /!$&'()*+,;=:@-._~\"<>\\^`{|}[] HTTP/1.1"),
        {"path": "/!$&'()*+,;=:@-._~\"<>\\^`{|}[]"},
    ),
    Valid("double-slash-path", head("Host: a", request="GET //x HTTP/1.1"), {"path": "//x"}),
    Valid("head-method", head("Host: a", request="HEAD /f HTTP/1.1"), {"method": "HEAD"}),
    Valid(
        "unknown-method-token-rfc9110-9.1",
        head("Host: a", request="BREW /pot HTTP/1.1"),
        {"method": "BREW"},
    ),
    Valid("method-case-preserved", head("Host: a", request="get / HTTP/1.1"), {"method": "get"}),
    Valid(
        "method-all-tchars",
        head("Host: a", request="!#$%&'*+-.^_`|~09azAZ / HTTP/1.1"),
        {"method": "!#$%&'*+-.^_`|~09azAZ"},
    ),
    Valid(
        "http10-without-host-rfc9112-3.2",
        head(request="GET / HTTP/1.0"),
        {"minor": 0, "host": "", "keep_alive": False, "headers": {}},
    ),
    Valid(
        "http10-keep-alive-rfc9112-9.3",
        head("Connection: Keep-Alive", request="GET / HTTP/1.0"),
        {"minor": 0, "keep_alive": True},
    ),
    Valid(
        "http10-keep-alive-and-close",
        head("Connection: keep-alive, close", request="GET / HTTP/1.0"),
        {"keep_alive": False},
    ),
    Valid("http10-with-host", head("Host: a:80", request="GET / HTTP/1.0"), {"host": "a:80"}),
    Valid("http11-connection-close", head("Host: a", "Connection: close"), {"keep_alive": False}),
    Valid(
        "http11-connection-token-list",
        head("Host: a", "Connection: Upgrade ,\tCLOSE"),
        {"keep_alive": False},
    ),
    Valid(
        "http11-connection-keep-alive",
        head("Host: a", "Connection: keep-alive"),
        {"keep_alive": True},
    ),
    Valid(
        "http11-connection-other-token",
        head("Host: a", "Connection: closed, x-close"),
        {"keep_alive": True},
    ),
    Valid(
        "http12-served-as-11-rfc9110-2.5",
        head("Host: a", request="GET / HTTP/1.2"),
        {"minor": 1, "keep_alive": True, "line": "GET / HTTP/1.2"},
    ),
    Valid("http19-served-as-11", head("Host: a", request="GET / HTTP/1.9"), {"minor": 1}),
    Valid(
        "absolute-form-authority-wins-rfc9112-3.2.2",
        head("Host: other.example", request="GET http://Example.com:8080/x/y?q=1 HTTP/1.1"),
        {
            "host": "Example.com:8080",
            "path": "/x/y",
            "query": "q=1",
            "target": "http://Example.com:8080/x/y?q=1",
            "headers": {"host": "other.example"},
        },
    ),
    Valid(
        "absolute-form-empty-path-is-slash-rfc9112-3.2.1",
        head("Host: a", request="GET http://a HTTP/1.1"),
        {"path": "/", "query": "", "host": "a"},
    ),
    Valid(
        "absolute-form-query-without-path",
        head("Host: a", request="GET http://a?q HTTP/1.1"),
        {"path": "/", "query": "q"},
    ),
    Valid(
        "absolute-form-https-any-case",
        head("Host: a", request="GET HTTPS://b/c HTTP/1.1"),
        {"host": "b", "path": "/c"},
    ),
    Valid(
        "absolute-form-with-empty-host-field-rfc9112-3.2",
        head("Host:", request="GET http://a/ HTTP/1.1"),
        {"host": "a", "headers": {"host": ""}},
    ),
    Valid(
        "absolute-form-ipv6-authority",
        head("Host: x", request="GET http://[2001:db8::1]:81/ HTTP/1.1"),
        {"host": "[2001:db8::1]:81"},
    ),
    Valid(
        "absolute-form-http10-without-host",
        head(request="GET http://a/b HTTP/1.0"),
        {"host": "a", "path": "/b", "minor": 0},
    ),
    Valid(
        "asterisk-form-options-rfc9112-3.2.4",
        head("Host: a", request="OPTIONS * HTTP/1.1"),
        {"method": "OPTIONS", "path": "*", "query": "", "target": "*"},
    ),
    Valid(
        "authority-form-connect-rfc9112-3.2.3",
        head("Host: a:443", request="CONNECT a:443 HTTP/1.1"),
        {"method": "CONNECT", "path": "", "query": "", "host": "a:443"},
    ),
    Valid("host-ipv4-port", head("Host: 127.0.0.1:8080"), {"host": "127.0.0.1:8080"}),
    Valid("host-ipv6-literal", head("Host: [::1]:8080"), {"host": "[::1]:8080"}),
    Valid("host-ipv4-mapped-ipv6", head("Host: [::ffff:1.2.3.4]"), {"host": "[::ffff:1.2.3.4]"}),
    Valid("host-ipvfuture-rfc3986-3.2.2", head("Host: [v7.abc:1]"), {"host": "[v7.abc:1]"}),
    Valid("host-trailing-dot", head("Host: example.com."), {"host": "example.com."}),
    Valid("host-empty-port-rfc3986-3.2.3", head("Host: a:"), {"host": "a:"}),
    Valid(
        "host-reg-name-chars",
        head("Host: a_b-c~d!$&'()*+,;=%41"),
        {"host": "a_b-c~d!$&'()*+,;=%41"},
    ),
    Valid("host-ows-stripped", head("Host: \t a \t"), {"host": "a"}),
    Valid(
        "field-ows-stripped-rfc9112-5.1",
        head("Host: a", "X-A:  one two \t"),
        {"headers": {"host": "a", "x-a": "one two"}},
    ),
    Valid(
        "field-empty-value", head("Host: a", "X-Empty:"), {"headers": {"host": "a", "x-empty": ""}}
    ),
    Valid(
        "field-only-whitespace", head("Host: a", "X-E: \t "), {"headers": {"host": "a", "x-e": ""}}
    ),
    Valid(
        "field-value-inner-tab", head("Host: a", "X: a\tb"), {"headers": {"host": "a", "x": "a\tb"}}
    ),
    Valid(
        "field-name-lower-cased-rfc9110-5.1",
        head("HOST: a", "User-AGENT: t/1"),
        {"headers": {"host": "a", "user-agent": "t/1"}},
    ),
    Valid(
        "field-name-all-tchars",
        head("Host: a", "!#$%&'*+-.^_`|~09azAZ: v"),
        {"headers": {"host": "a", "!#$%&'*+-.^_`|~09azaz": "v"}},
    ),
    Valid(
        "field-repeated-joined-rfc9110-5.3",
        head("Accept: a/b", "Host: a", "accept: c/d,e/f", "ACCEPT:"),
        {"headers": {"accept": "a/b, c/d,e/f, ", "host": "a"}},
    ),
    Valid(
        "field-obs-text-latin1-rfc9110-5.5",
        head("Host: a", "X: caf\xe9 \xff"),
        {"headers": {"host": "a", "x": "caf\xe9 \xff"}},
    ),
    Valid(
        "field-value-with-colons-and-quotes",
        head("Host: a", 'If-None-Match: "a:b", W/"c"'),
        {"headers": {"host": "a", "if-none-match": '"a:b", W/"c"'}},
    ),
    Valid("content-length-zero", head("Host: a", "Content-Length: 0"), {"content_length": 0}),
    Valid("content-length", head("Host: a", "Content-Length: 42"), {"content_length": 42}),
    Valid(
        "content-length-leading-zeros",
        head("Host: a", "Content-Length: 007"),
        {"content_length": 7},
    ),
    Valid(
        "content-length-identical-list-rfc9110-8.6",
        head("Host: a", "Content-Length: 5, 5"),
        {"content_length": 5},
    ),
    Valid(
        "content-length-identical-fields-rfc9110-8.6",
        head("Host: a", "Content-Length: 7", "content-length: 7"),
        {"content_length": 7},
    ),
    Valid(
        "content-length-maximum",
        head("Host: a", f"Content-Length: {MAX_CONTENT_LENGTH}"),
        {"content_length": MAX_CONTENT_LENGTH},
    ),
    Valid("leading-crlf-rfc9112-2.2", b"\r\n" + head("Host: a"), {"path": "/"}),
    Valid("several-leading-crlf", b"\r\n" * 5 + head("Host: a"), {"path": "/"}),
    Valid(
        "long-head-many-fields",
        head("Host: a", *(f"X-{i}: {'v' * 50}" for i in range(60))),
        {"host": "a"},
    ),
]

# -- malformed heads: the status each earns -----------------------------------------------

MALFORMED: list[Malformed] = [
    # request line (RFC 9112 §3)
    Malformed("empty-method", head("Host: a", request=" / HTTP/1.1"), 400),
    Malformed("double-space", head("Host: a", request="GET  / HTTP/1.1"), 400),
    Malformed("trailing-space", head("Host: a", request="GET / HTTP/1.1 "), 400),
    Malformed("leading-space", head("Host: a", request=" GET / HTTP/1.1"), 400),
    Malformed("tab-separator", head("Host: a", request="GET\t/ HTTP/1.1"), 400),
    Malformed("method-bad-char", head("Host: a", request="GE(T / HTTP/1.1"), 400),
    Malformed("method-nul", head("Host: a", request="GE\x00T / HTTP/1.1"), 400),
    Malformed("method-non-ascii", head("Host: a", request="G\xc9T / HTTP/1.1"), 400),
    Malformed("http09-two-tokens", head(request="GET /"), 400),
    Malformed("one-token", head(request="GET"), 400),
    Malformed("four-tokens", head("Host: a", request="GET / x HTTP/1.1"), 400),
    Malformed("version-lowercase-rfc9112-2.3", head("Host: a", request="GET / http/1.1"), 400),
    Malformed("version-no-minor", head("Host: a", request="GET / HTTP/1"), 400),
    Malformed("version-two-digit-minor", head("Host: a", request="GET / HTTP/1.10"), 400),
    Malformed("version-two-digit-major", head("Host: a", request="GET / HTTP/11.1"), 400),
    Malformed("version-no-dot", head("Host: a", request="GET / HTTP/11"), 400),
    Malformed("version-extra", head("Host: a", request="GET / HTTP/1.1.1"), 400),
    Malformed("version-missing", head("Host: a", request="GET / "), 400),
    Malformed("version-h2-no-minor", head("Host: a", request="GET / HTTP/2"), 400),
    Malformed("http20-rfc9110-15.6.6", head("Host: a", request="GET / HTTP/2.0"), 505),
    Malformed("http30", head("Host: a", request="GET / HTTP/3.0"), 505),
    Malformed("http09-three-tokens", head(request="GET / HTTP/0.9"), 505),
    Malformed("http99", head(request="GET / HTTP/9.9"), 505),
    Malformed("h2-prior-knowledge-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    Malformed("target-space", head("Host: a", request="GET /a b HTTP/1.1"), 400),
    Malformed("target-nul", head("Host: a", request="GET /a\x00 HTTP/1.1"), 400),
    Malformed("target-control", head("Host: a", request="GET /a\x01b HTTP/1.1"), 400),
    Malformed("target-del", head("Host: a", request="GET /a\x7f HTTP/1.1"), 400),
    Malformed("target-tab", head("Host: a", request="GET /a\tb HTTP/1.1"), 400),
    Malformed("target-non-ascii", head("Host: a", request="GET /caf\xc3\xa9 HTTP/1.1"), 400),
    Malformed("target-fragment-rfc9110-7.1", head("Host: a", request="GET /a#b HTTP/1.1"), 400),
    Malformed("target-relative", head("Host: a", request="GET a/b HTTP/1.1"), 400),
    Malformed("target-other-scheme", head("Host: a", request="GET ftp://a/ HTTP/1.1"), 400),
    Malformed(
        "target-scheme-without-slashes", head("Host: a", request="GET http:/a HTTP/1.1"), 400
    ),
    Malformed(
        "absolute-form-empty-host-rfc9110-4.2.1",
        head("Host: a", request="GET http:/// HTTP/1.1"),
        400,
    ),
    Malformed("absolute-form-only-port", head("Host: a", request="GET http://:80/ HTTP/1.1"), 400),
    Malformed(
        "absolute-form-userinfo-rfc9110-4.2.4",
        head("Host: a", request="GET http://u@a/ HTTP/1.1"),
        400,
    ),
    Malformed("absolute-form-bad-ipv6", head("Host: a", request="GET http://[::1/ HTTP/1.1"), 400),
    Malformed("absolute-form-bad-port", head("Host: a", request="GET http://a:b/ HTTP/1.1"), 400),
    Malformed(
        "asterisk-form-for-get-rfc9112-3.2.4", head("Host: a", request="GET * HTTP/1.1"), 400
    ),
    Malformed("asterisk-form-with-path", head("Host: a", request="OPTIONS *x HTTP/1.1"), 400),
    Malformed("authority-form-for-get", head("Host: a", request="GET a:80 HTTP/1.1"), 400),
    Malformed(
        "connect-origin-form-rfc9112-3.2.3", head("Host: a", request="CONNECT / HTTP/1.1"), 400
    ),
    Malformed("connect-without-port", head("Host: a", request="CONNECT a HTTP/1.1"), 400),
    Malformed("connect-empty-port", head("Host: a", request="CONNECT a: HTTP/1.1"), 400),
    Malformed("connect-asterisk", head("Host: a", request="CONNECT * HTTP/1.1"), 400),
    Malformed(
        "connect-absolute-form", head("Host: a", request="CONNECT http://a:1/ HTTP/1.1"), 400
    ),
    Malformed("connect-userinfo", head("Host: a", request="CONNECT u@a:1 HTTP/1.1"), 400),
    Malformed(
        "tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32, 400
    ),
    # line endings (RFC 9112 §2.2)
    Malformed("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    Malformed("bare-lf-after-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    Malformed("bare-lf-after-field", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    Malformed("bare-lf-terminator", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    Malformed("bare-lf-leading-empty-line", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    Malformed("bare-cr-leading", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    Malformed("bare-cr-in-request-line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    Malformed("bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    Malformed("bare-cr-line-ending", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    Malformed("cr-cr-lf", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
    Malformed("lf-cr-lf-terminator", b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    # field lines (RFC 9112 §5)
    Malformed("space-before-colon-rfc9112-5.1", head("Host : a"), 400),
    Malformed("tab-before-colon", head("Host: a", "X\t: b"), 400),
    Malformed("whitespace-before-first-field-rfc9112-2.2", head(" Host: a"), 400),
    Malformed("obs-fold-rfc9112-5.2", head("Host: a", "X: one", " two"), 400),
    Malformed("obs-fold-tab", head("Host: a", "X: one", "\ttwo"), 400),
    Malformed("missing-colon", head("Host: a", "X-No-Colon"), 400),
    Malformed("missing-colon-with-value", head("Host a"), 400),
    Malformed("empty-field-name", head("Host: a", ": value"), 400),
    Malformed("field-name-bad-char", head("Host: a", "X(y): z"), 400),
    Malformed("field-name-non-ascii", head("Host: a", "X\xe9: z"), 400),
    Malformed("field-name-nul", head("Host: a", "X\x00: z"), 400),
    Malformed("nul-in-value", head("Host: a", "X: a\x00b"), 400),
    Malformed("ctl-in-value", head("Host: a", "X: a\x01b"), 400),
    Malformed("esc-in-value", head("Host: a", "X: \x1b[31m"), 400),
    Malformed("del-in-value", head("Host: a", "X: a\x7fb"), 400),
    Malformed("vt-in-value", head("Host: a", "X: a\x0bb"), 400),
    Malformed("ff-in-value", head("Host: a", "X: a\x0cb"), 400),
    Malformed("nul-in-host", head("Host: a\x00b"), 400),
    # Host (RFC 9112 §3.2)
    Malformed("http11-no-host", head("Accept: */*"), 400),
    Malformed("http11-no-fields", head(), 400),
    Malformed("http12-no-host", head(request="GET / HTTP/1.2"), 400),
    Malformed("absolute-form-no-host-field", head(request="GET http://a/ HTTP/1.1"), 400),
    Malformed("duplicate-host-same", head("Host: a", "Host: a"), 400),
    Malformed("duplicate-host-different", head("Host: a", "host: b"), 400),
    Malformed("duplicate-host-empty", head("Host:", "Host:"), 400),
    Malformed("duplicate-host-http10", head("Host: a", "Host: b", request="GET / HTTP/1.0"), 400),
    Malformed(
        "duplicate-host-absolute-form",
        head("Host: a", "Host: b", request="GET http://a/ HTTP/1.1"),
        400,
    ),
    Malformed("empty-host-origin-form-rfc9110-4.2.1", head("Host:"), 400),
    Malformed("empty-host-http10", head("Host: ", request="GET / HTTP/1.0"), 400),
    Malformed("empty-host-asterisk-form", head("Host:", request="OPTIONS * HTTP/1.1"), 400),
    Malformed("host-only-port", head("Host: :80"), 400),
    Malformed("host-space", head("Host: a b"), 400),
    Malformed("host-list", head("Host: a, b"), 400),
    Malformed("host-userinfo", head("Host: u@a"), 400),
    Malformed("host-path", head("Host: a/b"), 400),
    Malformed("host-bad-port", head("Host: a:x"), 400),
    Malformed("host-long-port", head("Host: a:123456"), 400),
    Malformed("host-two-ports", head("Host: a:1:2"), 400),
    Malformed("host-bare-ipv6", head("Host: ::1"), 400),
    Malformed("host-unclosed-ipv6", head("Host: [::1"), 400),
    Malformed("host-bad-ipv6", head("Host: [::g]"), 400),
    Malformed("host-ipv6-zone", head("Host: [fe80::1%25eth0]"), 400),
    Malformed("host-bad-percent", head("Host: a%zz"), 400),
    Malformed("host-non-ascii", head("Host: caf\xe9"), 400),
    Malformed(
        "host-invalid-absolute-form", head("Host: a b", request="GET http://a/ HTTP/1.1"), 400
    ),
    Malformed("host-invalid-http10", head("Host: a b", request="GET / HTTP/1.0"), 400),
    # framing: the request-smuggling classics (RFC 9112 §6)
    Malformed(
        "cl-and-te-rfc9112-6.3",
        head("Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"),
        400,
    ),
    Malformed("te-and-cl", head("Host: a", "Transfer-Encoding: chunked", "Content-Length: 0"), 400),
    Malformed("te-chunked-rfc9112-6.1", head("Host: a", "Transfer-Encoding: chunked"), 501),
    Malformed("te-chunked-uppercase", head("Host: a", "transfer-encoding: CHUNKED"), 501),
    Malformed("te-chunked-tab-ows", head("Host: a", "Transfer-Encoding:\tchunked\t"), 501),
    Malformed("te-gzip-then-chunked", head("Host: a", "Transfer-Encoding: gzip, chunked"), 501),
    Malformed(
        "te-two-fields-chunked-last",
        head("Host: a", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"),
        501,
    ),
    Malformed("te-space-before-colon", head("Host: a", "Transfer-Encoding : chunked"), 400),
    Malformed("te-xchunked-rfc9112-6.3", head("Host: a", "Transfer-encoding: xchunked"), 400),
    Malformed("te-chunked-then-gzip", head("Host: a", "Transfer-Encoding: chunked, gzip"), 400),
    Malformed("te-identity", head("Host: a", "Transfer-Encoding: identity"), 400),
    Malformed("te-empty", head("Host: a", "Transfer-Encoding:"), 400),
    Malformed("te-obs-fold", head("Host: a", "Transfer-Encoding:", " chunked"), 400),
    Malformed("te-vertical-tab", head("Host: a", "Transfer-Encoding:\x0bchunked"), 400),
    Malformed(
        "te-http10-rfc9112-6.1", head("Transfer-Encoding: chunked", request="GET / HTTP/1.0"), 400
    ),
    Malformed("te-leading-space-name", head("Host: a", " Transfer-Encoding: chunked"), 400),
    Malformed("cl-plus", head("Host: a", "Content-Length: +5"), 400),
    Malformed("cl-minus", head("Host: a", "Content-Length: -1"), 400),
    Malformed("cl-hex", head("Host: a", "Content-Length: 0x10"), 400),
    Malformed("cl-exponent", head("Host: a", "Content-Length: 1e3"), 400),
    Malformed("cl-inner-space", head("Host: a", "Content-Length: 5 5"), 400),
    Malformed("cl-empty", head("Host: a", "Content-Length:"), 400),
    Malformed("cl-list-differs-rfc9110-8.6", head("Host: a", "Content-Length: 5, 6"), 400),
    Malformed("cl-fields-differ", head("Host: a", "Content-Length: 5", "Content-Length: 6"), 400),
    Malformed("cl-list-trailing-comma", head("Host: a", "Content-Length: 5,"), 400),
    Malformed("cl-list-leading-comma", head("Host: a", "Content-Length: ,5"), 400),
    Malformed("cl-list-empty-field", head("Host: a", "Content-Length: 5", "Content-Length:"), 400),
    Malformed("cl-list-same-number-different-text", head("Host: a", "Content-Length: 5, 05"), 400),
    Malformed("cl-over-2-63", head("Host: a", f"Content-Length: {MAX_CONTENT_LENGTH + 1}"), 400),
    Malformed("cl-thousand-digits", head("Host: a", "Content-Length: " + "9" * 1000), 400),
    Malformed("cl-superscript-digit", head("Host: a", "Content-Length: \xb2"), 400),
    Malformed("cl-space-before-colon", head("Host: a", "Content-Length : 5"), 400),
]


def feed(raw: bytes, limits: Limits = LIMITS) -> Iterator[tuple[int, tuple[Request, int] | None]]:
    """parse_request on every growing prefix of ``raw`` (as a worker's buffer grows)."""
    buf = bytearray()
    for index in range(len(raw)):
        buf.append(raw[index])
        yield index + 1, parse_request(buf, limits)


def status_of(raw: bytes | bytearray, limits: Limits = LIMITS) -> int:
    with pytest.raises(HttpError) as caught:
        parse_request(raw, limits)
    assert caught.value.close, "a parser error must close the connection (RFC 9112 §6.3)"
    return caught.value.status


def parse_whole(raw: bytes, limits: Limits = LIMITS) -> Request:
    result = parse_request(raw, limits)
    assert result is not None, "a complete head must parse"
    request, consumed = result
    assert consumed == len(raw)
    return request


def test_corpus_ids_are_unique() -> None:
    ids = [case.id for case in VALID] + [case.id for case in MALFORMED]
    assert len(ids) == len(set(ids))


# -- valid heads ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.id)
def test_valid_head_fields(case: Valid) -> None:
    request = parse_whole(case.raw)
    for name, expected in case.expect.items():
        assert getattr(request, name) == expected, name
    assert request.minor in (0, 1)
    assert request.path.startswith("/") or request.path in ("*", "")


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.id)
def test_valid_head_bytes_and_bytearray_agree(case: Valid) -> None:
    assert parse_request(case.raw, LIMITS) == parse_request(bytearray(case.raw), LIMITS)


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.id)
def test_valid_head_split_at_every_byte(case: Valid) -> None:
    """Every proper prefix needs more bytes; the whole gives the same Request."""
    whole = parse_whole(case.raw)
    results = list(feed(case.raw))
    for length, result in results[:-1]:
        assert result is None, f"prefix of {length} bytes"
    assert results[-1][1] == (whole, len(case.raw))


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.id)
def test_valid_head_in_two_reads(case: Valid) -> None:
    """A worker appends each read to its buffer: any cut into two reads gives the head."""
    whole = parse_request(case.raw, LIMITS)
    for cut in range(len(case.raw)):
        buf = bytearray(case.raw[:cut])
        assert parse_request(buf, LIMITS) is None
        buf += case.raw[cut:]
        assert parse_request(buf, LIMITS) == whole


# -- malformed heads -----------------------------------------------------------------------


@pytest.mark.parametrize("case", MALFORMED, ids=lambda case: case.id)
def test_malformed_head_status(case: Malformed) -> None:
    assert status_of(case.raw) == case.status
    assert status_of(bytearray(case.raw)) == case.status


@pytest.mark.parametrize("case", MALFORMED, ids=lambda case: case.id)
def test_malformed_head_split_at_every_byte(case: Malformed) -> None:
    """Fed byte by byte, the error comes as early as it is certain, with the same status."""
    for length in range(1, len(case.raw) + 1):
        try:
            result = parse_request(case.raw[:length], LIMITS)
        except HttpError as error:
            assert error.status == case.status, f"prefix of {length} bytes"
            return
        assert result is None, f"prefix of {length} bytes accepted"
    pytest.fail("never rejected")


def test_malformed_status_raised_early_for_garbage() -> None:
    """A TLS handshake or binary noise is refused on its first byte, not after a timeout."""
    assert status_of(b"\x16") == 400
    assert status_of(b"\x00") == 400
    assert status_of(b"GET /\x00") == 400
    assert status_of(b"GET / HTTP/2.0\r\n") == 505  # h2 prior knowledge: refused on the line


def test_incomplete_heads_need_more() -> None:
    for partial in (
        b"",
        b"\r",
        b"\r\n",
        b"\r\n\r",
        b"\r\n\r\n",
        b"G",
        b"GET / HTTP/1.1\r",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        b"GET / HTTP/1.1\r\nHost: a\r\nX",
    ):
        assert parse_request(partial, LIMITS) is None, partial


# -- pipelining ----------------------------------------------------------------------------


def test_pipelined_heads_are_consumed_one_at_a_time() -> None:
    """RFC 9112 §9.3.2: pipelined requests are parsed in order from one buffer."""
    first = head("Host: a", request="GET /one HTTP/1.1")
    second = head("Host: b", "Connection: close", request="HEAD /two?x HTTP/1.1")
    buf = bytearray(first + second)
    result = parse_request(buf, LIMITS)
    assert result is not None
    request, consumed = result
    assert (request.path, consumed) == ("/one", len(first))
    del buf[:consumed]
    result = parse_request(buf, LIMITS)
    assert result is not None
    request, consumed = result
    assert (request.method, request.path, request.query, request.keep_alive) == (
        "HEAD",
        "/two",
        "x",
        False,
    )
    assert consumed == len(second)


def test_pipelined_second_head_incomplete_or_bad() -> None:
    first = head("Host: a")
    result = parse_request(first + b"GET /next HT", LIMITS)
    assert result is not None and result[1] == len(first)
    result = parse_request(first + b"\x00garbage", LIMITS)  # the next head's problem
    assert result is not None and result[1] == len(first)
    assert status_of(b"\x00garbage") == 400


def test_pipelined_with_crlf_between() -> None:
    """Some clients send a stray CRLF after a request; it belongs to the next head."""
    first, second = head("Host: a"), head("Host: b")
    result = parse_request(first + b"\r\n" + second, LIMITS)
    assert result is not None and result[1] == len(first)
    result = parse_request(b"\r\n" + second, LIMITS)
    assert result is not None and result[1] == len(second) + 2


def test_bytes_after_head_are_not_body() -> None:
    """Content-Length is reported, never consumed: the worker owns the body bytes."""
    raw = head("Host: a", "Content-Length: 3")
    result = parse_request(raw + b"abc", LIMITS)
    assert result is not None and result[1] == len(raw)
    assert result[0].content_length == 3


def test_long_whitespace_runs_in_a_value() -> None:
    """OWS is stripped around the value, kept inside it; a long run of spaces inside a
    value once made the field regex rescan it from every position (quadratic)."""
    value = "a" + " \t" * 4000 + "b"
    request = parse_whole(head("Host: a", f"X:{' ' * 4000}{value}{' ' * 4000}"))
    assert request.headers["x"] == value



def test_ows_is_stripped_around_each_repeated_value_before_joining() -> None:
    """RFC 9110 §5.3: repeated fields join as one list; each value without its OWS."""
    request = parse_whole(head("Host: a", "Accept: a/b \t", "Accept:\t c/d ", "X: \t "))
    assert request.headers["accept"] == "a/b, c/d" and request.headers["x"] == ""

def test_host_cache_stays_bounded_and_strict() -> None:
    """Valid Host values are remembered (a regex saved per request), within bounds."""
    from forkserver.http import request as http

    for index in range(http.VALID_HOST_CACHE_SIZE + 50):
        parse_whole(head(f"Host: host-{index}.example"))
    parse_whole(head("Host: " + "a" * 1000))
    assert len(http._valid_hosts) <= http.VALID_HOST_CACHE_SIZE
    assert all(len(host) <= http.VALID_HOST_CACHE_MAX_LENGTH for host in http._valid_hosts)
    assert status_of(head("Host: host-1.example, host-1.example")) == 400
    assert status_of(head("Host: host-1.example", "Host: host-1.example")) == 400


# -- the head cache (HeadParser) ----------------------------------------------------------


def outcome(parse: Any, raw: bytes | bytearray) -> object:
    """What one parse gives: the result, or the status it raised."""
    try:
        return parse(raw)
    except HttpError as error:
        return ("error", error.status)


@pytest.mark.parametrize("limits", [LIMITS, SMALL], ids=["default-limits", "small-limits"])
def test_head_parser_agrees_with_parse_request_on_every_case(limits: Limits) -> None:
    """Every valid and malformed case, asked twice (the second time from the cache)."""
    parser = HeadParser(limits)
    cases: list[Valid | Malformed] = [*VALID, *MALFORMED]
    for case in cases:
        expected = outcome(lambda raw: parse_request(raw, limits), case.raw)
        assert outcome(parser.parse, case.raw) == expected, case.id
        assert outcome(parser.parse, bytearray(case.raw)) == expected, case.id


def test_head_parser_returns_the_remembered_request() -> None:
    parser = HeadParser(LIMITS)
    raw = head("Host: a", "User-Agent: x")
    first = parser.parse(raw)
    assert first is not None and parser.parse(bytearray(raw)) is first
    assert list(parser.heads) == [raw]


def test_head_parser_caches_only_the_head_of_a_pipeline() -> None:
    parser = HeadParser(LIMITS)
    one, two = head("Host: a"), head("Host: b")
    request, consumed = parser.parse(one + two[:5]) or (None, 0)
    assert request is not None and consumed == len(one) and list(parser.heads) == [one]
    assert parser.parse(one + two) == (request, len(one))
    assert parser.parse(two + one) == parse_request(two, LIMITS)


def test_head_parser_never_caches_errors_incomplete_or_long_heads() -> None:
    parser = HeadParser(LIMITS)
    for _ in range(2):
        assert outcome(parser.parse, head("Host: a", "Content-Length: 1, 2")) == ("error", 400)
        assert parser.parse(head("Host: a")[:-1]) is None
    long_head = head("Host: a", "X: " + "v" * HEAD_CACHE_MAX_BYTES)
    assert parser.parse(long_head) == parse_request(long_head, LIMITS)
    leading = b"\r\n" + head("Host: a")
    assert parser.parse(leading) == parse_request(leading, LIMITS)
    assert parser.heads == {leading: parse_request(leading, LIMITS)}


def test_head_parser_stays_bounded() -> None:
    """A client sending endless distinct heads cannot grow the cache."""
    parser = HeadParser(LIMITS)
    for index in range(HEAD_CACHE_ENTRIES * 2 + 10):
        raw = head("Host: a", f"X-Count: {index}")
        assert parser.parse(raw) == parse_request(raw, LIMITS)
        assert 1 <= len(parser.heads) <= HEAD_CACHE_ENTRIES


# -- limits at and one past the boundary ------------------------------------------------


def request_line_of(length: int) -> str:
    prefix, suffix = "GET /", " HTTP/1.1"
    return prefix + "a" * (length - len(prefix) - len(suffix)) + suffix


def test_request_line_at_limit_is_accepted() -> None:
    line = request_line_of(LIMITS.request_line)
    request = parse_whole(head("Host: a", request=line))
    assert request.line == line


def test_request_line_one_over_limit_is_414() -> None:
    assert status_of(head("Host: a", request=request_line_of(LIMITS.request_line + 1))) == 414


def test_request_line_over_limit_is_414_before_crlf_arrives() -> None:
    line = request_line_of(LIMITS.request_line).encode()
    assert parse_request(line, LIMITS) is None
    assert parse_request(line + b"\r", LIMITS) is None  # CRLF may still follow
    assert status_of(line + b"a") == 414
    assert status_of(line + b"\ra") == 414
    assert status_of(b"G" * (LIMITS.request_line + 1)) == 414


def test_request_line_over_limit_but_malformed_early_is_400() -> None:
    """Stream order: the bad byte came before the limit was passed."""
    assert status_of(b"GET /\x01" + b"a" * LIMITS.request_line) == 400


def head_of_size(size: int, limits: Limits = LIMITS) -> bytes:
    base = head("Host: a", "X: ")
    raw = head("Host: a", "X: " + "v" * (size - len(base)))
    assert len(raw) == size
    return raw


def test_head_at_byte_limit_is_accepted() -> None:
    parse_whole(head_of_size(LIMITS.header_bytes))


def test_head_one_byte_over_limit_is_431() -> None:
    assert status_of(head_of_size(LIMITS.header_bytes + 1)) == 431


def test_unterminated_head_reaching_limit_is_431() -> None:
    raw = head_of_size(LIMITS.header_bytes + 1)
    assert parse_request(raw[: LIMITS.header_bytes - 1], LIMITS) is None
    assert status_of(raw[: LIMITS.header_bytes]) == 431


def test_leading_empty_lines_count_toward_head_limit() -> None:
    """A CRLF flood must not grow the buffer forever (RFC 9112 §2.2 'at least one')."""
    assert status_of(b"\r\n" * (LIMITS.header_bytes // 2)) == 431
    raw = head("Host: a")
    padding = b"\r\n" * ((LIMITS.header_bytes - len(raw)) // 2)
    assert parse_request(padding + raw, LIMITS) is not None
    assert status_of(b"\r\n" + padding + raw) == 431


def test_field_count_at_limit_is_accepted() -> None:
    fields = ["Host: a", *(f"X-{i}: v" for i in range(LIMITS.headers - 1))]
    assert len(parse_whole(head(*fields)).headers) == LIMITS.headers


def test_field_count_one_over_limit_is_431() -> None:
    fields = ["Host: a", *(f"X-{i}: v" for i in range(LIMITS.headers))]
    assert status_of(head(*fields)) == 431


def test_field_count_over_limit_is_431_before_head_ends() -> None:
    fields = ["Host: a", *(f"X-{i}: v" for i in range(LIMITS.headers - 1))]
    partial = head(*fields)[:-2]  # all fields, no final CRLF
    assert parse_request(partial, LIMITS) is None
    assert parse_request(partial + b"\r", LIMITS) is None
    assert status_of(partial + b"X") == 431


def test_repeated_fields_count_each_line() -> None:
    fields = ["Host: a", *("Accept: v" for _ in range(LIMITS.headers))]
    assert status_of(head(*fields)) == 431


def test_custom_limits_are_honoured() -> None:
    limits = Limits(request_line=20, header_bytes=64, headers=2)
    assert parse_request(head("Host: a", request="GET /12345 HTTP/1.1"), limits) is not None
    assert parse_request(head("Host: a", request="GET /123456 HTTP/1.1"), limits) is not None
    assert status_of(head("Host: a", request="GET /1234567 HTTP/1.1"), limits) == 414
    assert status_of(head("Host: a", "A: 1", "B: 2"), limits) == 431
    assert status_of(head("Host: a", "A: " + "v" * 40), limits) == 431


SMALL_LIMIT_CASES = [
    (head("Host: a", request="GET /" + "a" * 40 + " HTTP/1.1"), 414),
    (head("Host: a", "X: " + "v" * 200), 431),
    (head("Host: a", "A: 1", "B: 2", "C: 3", "D: 4"), 431),
    (b"\r\n" * 100, 431),
    (head("Host: a", "A: 1", "B: 2", "C: 3", "D\x00: 4"), 431),  # line 5 is never looked at
    (head("Host: a", "A: \x00", "B: 2", "C: 3", "D: 4"), 400),  # stream order: line 2 first
    (head("Host: a", "X: " + "v" * 140 + "\x00"), 431),  # the bad byte is past the limit
]


@pytest.mark.parametrize("raw,status", SMALL_LIMIT_CASES)
def test_limit_errors_split_at_every_byte(raw: bytes, status: int) -> None:
    assert status_of(raw, SMALL) == status
    for length in range(1, len(raw) + 1):
        try:
            assert parse_request(raw[:length], SMALL) is None
        except HttpError as error:
            assert error.status == status, f"prefix of {length} bytes"
            return
    pytest.fail("never rejected")


# -- purity --------------------------------------------------------------------------------


def test_http_module_does_no_io() -> None:
    """The parsers (http/request.py, http/proxy.py) are sans-I/O: no sockets, signals,
    polling or clocks (docs/architecture.md)."""
    package = Path(__file__).resolve().parents[2] / "forkserver" / "http"
    for source in (package / "request.py", package / "proxy.py"):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"socket", "signal", "select", "selectors", "time", "os", "io"}


# -- properties ----------------------------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = "abcXYZ019-._~!$&'()*+,;=:@%/"
# field-vchar, SP and HTAB (RFC 9110 §5.5), obs-text included.
VALUE_CHARS = "\t" + "".join(chr(c) for c in (*range(0x20, 0x7F), *range(0x80, 0x100)))
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
field_values = st.text(VALUE_CHARS, max_size=30).map(lambda value: value.strip(" \t"))
HOSTS = ["example.com", "a", "127.0.0.1:8080", "[::1]", "[2001:db8::7]:443", "x_y.z:"]


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """A valid origin-form head plus the fields the parser must report."""
    method = draw(tokens.filter(lambda token: token != "CONNECT"))
    path = "/" + draw(st.text(PATH_CHARS, max_size=20))
    query = draw(st.none() | st.text(PATH_CHARS + "?", max_size=20))
    minor = draw(st.sampled_from([0, 1]))
    target = path if query is None else f"{path}?{query}"
    fields: list[tuple[str, str]] = []
    host = draw(st.sampled_from(HOSTS if minor == 1 else ["", *HOSTS]))
    if host:
        fields.append(("Host", host))
    reserved = {"host", "content-length", "transfer-encoding", "connection"}
    names = draw(st.lists(tokens.filter(lambda n: n.lower() not in reserved), max_size=8))
    for name in names:
        fields.append((name, draw(field_values)))
    length = draw(st.none() | st.integers(0, MAX_CONTENT_LENGTH))
    if length is not None:
        fields.append(("Content-Length", str(length)))
    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive, Upgrade"]))
    if connection is not None:
        fields.append(("Connection", connection))
    order = draw(st.permutations(fields))
    ows = draw(st.sampled_from(["", " ", "\t", "  "]))
    lines = [f"{name}:{ows}{value}{ows}" for name, value in order]
    raw = head(*lines, request=f"{method} {target} HTTP/1.{minor}")
    joined: dict[str, str] = {}
    for name, value in order:
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    keep_alive = (connection is None and minor == 1) or (
        connection is not None
        and "close" not in connection
        and (minor == 1 or "keep-alive" in connection.lower())
    )
    expect = {
        "method": method,
        "target": target,
        "path": path,
        "query": query or "",
        "minor": minor,
        "host": host,
        "content_length": length or 0,
        "headers": joined,
        "keep_alive": keep_alive,
    }
    return raw, expect


@PROPERTY_SETTINGS
@given(valid_requests())
def test_property_generated_requests_round_trip(case: tuple[bytes, dict[str, Any]]) -> None:
    raw, expect = case
    request = parse_whole(raw)
    for name, value in expect.items():
        assert getattr(request, name) == value, name


@PROPERTY_SETTINGS
@given(valid_requests(), st.data())
def test_property_prefix_of_valid_head_needs_more(
    case: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    raw, _ = case
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert parse_request(raw[:cut], LIMITS) is None


@PROPERTY_SETTINGS
@given(st.binary(max_size=400))
def test_property_random_bytes_only_raise_http_error(raw: bytes) -> None:
    check_outcome(raw, LIMITS)
    check_outcome(raw, SMALL)


SEEDS = [case.raw for case in VALID[:12]] + [head("Host: a", "Content-Length: 5")]


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    """A valid head with a few bytes replaced, inserted or deleted."""
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    interesting = st.sampled_from(b" \t\r\n\x00\x01\x7f\x80:,#/?@[]%\xff0Hh") | st.integers(0, 255)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or position == len(raw):
            raw.insert(position, draw(interesting))
        elif action == "replace":
            raw[position] = draw(interesting)
        else:
            del raw[position]
    return bytes(raw)


def check_outcome(raw: bytes, limits: Limits) -> tuple[str, int]:
    """Parse ``raw`` once; only a Request, None or an HttpError may come out."""
    try:
        result = parse_request(raw, limits)
    except HttpError as error:
        assert error.status in PARSER_STATUSES and error.close
        return "reject", error.status
    if result is None:
        return "incomplete", 0
    request, consumed = result
    assert 0 < consumed <= len(raw) and raw[consumed - 4 : consumed] == b"\r\n\r\n"
    assert request.minor in (0, 1)
    return "accept", consumed


@PROPERTY_SETTINGS
@given(mutated_heads())
def test_property_split_never_changes_the_verdict(raw: bytes) -> None:
    """Byte-by-byte feeding gives the same result as one read: stream-ordered errors."""
    whole = check_outcome(raw, SMALL)
    for length in range(1, len(raw) + 1):
        outcome = check_outcome(raw[:length], SMALL)
        if outcome[0] == "incomplete":
            continue
        assert outcome == whole, f"prefix of {length} bytes"
        return
    assert whole[0] == "incomplete"


@PROPERTY_SETTINGS
@given(mutated_heads())
def test_property_mutations_only_raise_http_error(raw: bytes) -> None:
    check_outcome(raw, LIMITS)


@PROPERTY_SETTINGS
@given(st.lists(mutated_heads(), min_size=1, max_size=6))
def test_property_head_parser_agrees_with_parse_request(heads: list[bytes]) -> None:
    """Each head twice through one HeadParser: always what parse_request says."""
    parser = HeadParser(SMALL)
    for raw in heads + heads:
        expected = outcome(lambda data: parse_request(data, SMALL), raw)
        assert outcome(parser.parse, raw) == expected
