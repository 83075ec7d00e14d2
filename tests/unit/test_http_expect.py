"""The Expect field and OPTIONS * (forkserver/http/expect.py), in memory."""

from __future__ import annotations

import pytest

from forkserver.config.model import Limits
from forkserver.http.expect import ALLOW, ServerAnswers, unmet_expectation
from forkserver.http.request import Request, parse_request
from forkserver.http.response import Plan


def request(head: str) -> Request:
    parsed = parse_request(head.encode() + b"\r\n\r\n", Limits(header_bytes=65536))
    assert parsed is not None
    return parsed[0]


@pytest.mark.parametrize(("field", "unmet"), [
    ("100-continue", False),
    ("100-Continue", False),
    ("100-CONTINUE", False),
    (" 100-continue ", False),
    ("100-continue,", False),  # an empty list element is allowed (RFC 9110 §5.6.1)
    ("", False),
    ("foo", True),
    ("100-continue, foo", True),
    ("foo, 100-continue", True),
    ("100-continue;x=1", True),
    ("101-continue", True),
])
def test_expectations(field: str, unmet: bool) -> None:
    parsed = request(f"GET / HTTP/1.1\r\nHost: a\r\nExpect: {field}")
    assert unmet_expectation(parsed) is unmet


def test_two_expect_fields_are_one_list() -> None:
    parsed = request("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: foo")
    assert unmet_expectation(parsed)


def error_plan(status: int, head: bool = False) -> Plan:
    return Plan(status, [("Content-Length", "3")], b"" if head else b"err")


def test_answers() -> None:
    answers = ServerAnswers(error_plan, [("X-Site", "1")])
    options = answers.answer(request("OPTIONS * HTTP/1.1\r\nHost: a"))
    assert options is not None and options.status == 200
    assert ("Allow", ALLOW) in options.headers and ("X-Site", "1") in options.headers
    assert answers.answer(request("OPTIONS /x HTTP/1.1\r\nHost: a")) is None
    refused = answers.answer(request("HEAD / HTTP/1.1\r\nHost: a\r\nExpect: x"))
    assert refused is not None and refused.status == 417 and refused.body == b""
    assert answers.answer(
        request("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue")) is None


def test_a_long_expect_list_is_one_pass() -> None:
    """One split and one look at each element (linear: docs/security.md)."""
    many = "100-continue," * 2000
    assert not unmet_expectation(request(f"GET / HTTP/1.1\r\nHost: a\r\nExpect: {many}"))
    assert unmet_expectation(request(f"GET / HTTP/1.1\r\nHost: a\r\nExpect: {many}x"))
