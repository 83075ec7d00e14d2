"""HTTP/1.1 request parsing, sans-I/O (RFC 9110 / RFC 9112).

Owns the wire grammar of a request head: request line, header fields, framing
headers, limits, and the status each malformed input earns. Must not touch sockets,
clocks, files or signals: bytes in, a ``Request`` or an ``HttpError`` out.

Strictness is the point (it is what stops request smuggling: a front proxy and this
server must never disagree about where a request ends). The choices made where the
RFCs leave room, each pinned by a test in ``tests/unit/test_http.py``:

* Lines end with CRLF only. A bare LF (RFC 9112 §2.2 MAY accept it) or a bare CR
  (§2.2 MUST reject or replace) anywhere in the head → 400. One rule everywhere:
  a proxy that splits on LF and a server that splits on CRLF see different heads.
* Empty lines (CRLF) before the request line are skipped (§2.2 SHOULD) and counted
  in ``consumed``; they count toward ``limits.header_bytes`` so a CRLF flood ends
  in 431 instead of an ever-growing buffer.
* ``HTTP/1.x`` with x ≥ 2 is served as HTTP/1.1 (``minor`` = 1, RFC 9110 §2.5:
  a higher minor version is processed as the highest one we implement). Any other
  major version, 0 included, → 505. ``HTTP/2`` (no minor) or ``http/1.1`` → 400.
  A two-token line (HTTP/0.9) → 400.
* Request-target (§3.2): origin-form; absolute-form with scheme http or https only,
  no userinfo, non-empty host — its authority becomes ``host`` (§3.2.2) and an empty
  path becomes "/"; asterisk-form only with OPTIONS (``path`` = "*"); authority-form
  (``host:port``) only with CONNECT (``path`` = "", ``host`` = the authority), so
  the planner answers 405 like nginx. Every other combination → 400. A target may
  hold any visible ASCII except ``#`` (fragments are never sent, RFC 9110 §7.1);
  percent-encodings are left for the static layer to decode.
* Host (§3.2): HTTP/1.1 needs exactly one; a second Host field, or a value that is
  not ``uri-host [":" port]`` (port at most 5 digits, IPv6 literals checked) → 400,
  for every version. An empty Host is valid only with an absolute-form target (the
  client had no authority to send in origin-form, RFC 9110 §4.2.1).
* Framing (§6): Transfer-Encoding with Content-Length → 400; Transfer-Encoding in
  HTTP/1.0 → 400 (§6.1 "faulty framing"); Transfer-Encoding whose final coding is not
  ``chunked`` → 400 (§6.3 MUST); any other Transfer-Encoding → 501 (no request
  bodies are accepted). Content-Length must be 1*DIGIT ≤ 2**63 - 1; a list or
  repeated fields with identical values (``5, 5``) are accepted as that value (RFC
  9110 §8.6 MAY); differing values, signs, hex, empty members → 400.
* Limits: a request line longer than ``limits.request_line`` (CRLF excluded) → 414;
  a head (leading empty lines + request line + fields + final CRLF) longer than
  ``limits.header_bytes``, or more than ``limits.headers`` field lines → 431.
* Errors are raised in stream order: the status is the one for the first byte at
  which the head became certainly invalid, so it does not depend on how the bytes
  were split across reads.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from forkserver.config import Limits
from forkserver.errors import HttpError

__all__ = ["HttpError", "Request", "parse_request"]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which
# made building a Request 1.3 us instead of 0.4 us, on every request.
@dataclass(slots=True)
class Request:
    # Read-only by contract: HeadParser hands the same Request (and headers dict) to
    # every request whose head is byte-identical.
    method: str  # the method token exactly as sent (case-sensitive, RFC 9110 §9.1)
    target: str  # the request-target exactly as sent
    path: str  # percent-encoded path of the target: starts with "/", except "*" and ""
    # ("*" for OPTIONS *, "" for CONNECT's authority-form; the planner answers those)
    query: str  # raw query without the "?", "" when absent
    minor: int  # HTTP/1.<minor>; only 0 and 1 get here
    headers: Mapping[str, str]  # lower-cased names; repeated fields joined with ", "
    keep_alive: bool  # the client allows the connection to persist after this request
    host: str  # the Host field value ("" for HTTP/1.0 without Host), or the authority
    # of an absolute-form or authority-form target, which wins (RFC 9112 §3.2.2)
    content_length: int  # 0 when absent
    line: str  # the request line, latin-1 decoded, for the access log


# Largest Content-Length accepted: beyond a signed 64-bit offset no file or socket
# API can honour it, and a 10**6-digit value must not reach int() at all.
MAX_CONTENT_LENGTH = 2**63 - 1
# A port has at most five digits (65535); nginx rejects longer ones the same way.
MAX_PORT_DIGITS = 5

# -- grammar (RFC 9110 §5.6.2, RFC 9112 §3 and §5), on latin-1 decoded text -------------
_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
# request-target bytes: visible ASCII except "#" (no fragments); no SP, CTL or 8-bit.
_TARGET_CHAR = r"\x21\x22\x24-\x7e"
# field-value bytes: HTAB, SP, VCHAR and obs-text; never another CTL, CR or LF.
_VALUE_CHAR = r"\t\x20-\x7e\x80-\xff"

_REQUEST_LINE = re.compile(rf"([{_TCHAR}]+) ([{_TARGET_CHAR}]+) HTTP/([0-9])\.([0-9])")
# Every prefix of a valid request line (CRLF not included) matches this.
_REQUEST_LINE_PREFIX = re.compile(
    rf"[{_TCHAR}]*|[{_TCHAR}]+ [{_TARGET_CHAR}]*"
    rf"|[{_TCHAR}]+ [{_TARGET_CHAR}]+ (?:H(?:T(?:T(?:P(?:/(?:[0-9](?:\.[0-9]?)?)?)?)?)?)?)?"
)
# Zero or more complete field lines, each "name:value" CRLF; obs-fold, whitespace
# before the colon, empty names and CTLs all fail it.
_FIELD_LINES = re.compile(rf"(?:[{_TCHAR}]++:[{_VALUE_CHAR}]*+\r\n)*+")
# Every prefix of one field line (CRLF not included) matches this.
_FIELD_LINE_PREFIX = re.compile(rf"(?:[{_TCHAR}]++(?::[{_VALUE_CHAR}]*+)?)?")
# One pass over the field block both checks and extracts: (name, value) with the
# leading OWS left out, one match per whole field line. The lookbehind anchors each
# match at a line start and every match ends at its line's CRLF with no CR or LF
# inside, so as many matches as LFs in the block means every line matched whole, which
# is _FIELD_LINES' verdict. Every quantifier is possessive, so nothing is ever given
# back and a line that fails is tried from its start only (the lookbehind): the cost
# stays linear (tests/unit/test_linear_parsers.py). The value runs to the CRLF and its
# trailing OWS is stripped in Python (rstrip): a regex that ended the value at its last
# visible byte made the engine give back the whole tail of every value, 0.65 us more
# per browser head (3.2 against 2.5 us for findall and the dict). Checking with
# _FIELD_LINES and then extracting with findall cost 4.7 us of a 7.5 us parse.
_FIELD = re.compile(rf"(?<=\n)([{_TCHAR}]++):[ \t]*+([{_VALUE_CHAR}]*+)\r\n")
# Field names as browsers and tools send them, lower-cased once here: a lookup is
# cheaper than str.lower() per field; any other name is lowered as it comes.
_COMMON_NAMES = (
    "Host", "User-Agent", "Accept", "Accept-Language", "Accept-Encoding", "Referer",
    "Cookie", "Connection", "Cache-Control", "Pragma", "Upgrade-Insecure-Requests",
    "If-None-Match", "If-Modified-Since", "Range", "If-Range", "Authorization",
    "Content-Length", "Origin", "DNT", "TE", "Priority", "Sec-Fetch-Dest",
    "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "X-Forwarded-For",
)
_LOWER_NAMES = {
    form: name.lower() for name in _COMMON_NAMES for form in (name, name.lower())
}
LEADING_EMPTY_LINES = re.compile(rb"(?:\r\n)*")

# uri-host [":" port] (RFC 9110 §7.2, RFC 3986 §3.2.2); the IP-literal is checked
# further by _valid_ip_literal.
_REG_NAME = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]++|%[0-9A-Fa-f]{2})*+"
_HOST_AND_PORT = rf"(\[[^\[\]]*\]|{_REG_NAME})(?::([0-9]{{0,{MAX_PORT_DIGITS}}}))?"
_HOST = re.compile(_HOST_AND_PORT)
_IP_FUTURE = re.compile(r"v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")
# absolute-form: http(s) "://" authority path-abempty [ "?" query ]
_ABSOLUTE_FORM = re.compile(r"(?i:https?)://([^/?]*)(/[^?]*)?(?:\?(.*))?")
_DIGITS = re.compile(r"[0-9]+")

# A worker sees the same few Host values on every request; remembering the ones that
# passed skips a regex per request. Bounded (entries and entry length) so that a client
# cycling through names cannot grow it; only valid values enter, so it can never let a
# bad one through.
VALID_HOST_CACHE_SIZE = 256
VALID_HOST_CACHE_MAX_LENGTH = 270  # a DNS name (253) or IPv6 literal, plus ":port"
_valid_hosts: set[str] = set()


def parse_request(buf: bytes | bytearray, limits: Limits) -> tuple[Request, int] | None:
    """Parse one request head from the start of ``buf``.

    Returns ``(request, consumed)`` where ``consumed`` counts the bytes of the head
    (including any leading empty lines), or None when more bytes are needed. Raises
    HttpError as soon as the bytes so far can never become a valid head.
    """
    start = 0
    if buf.startswith(b"\r\n"):  # RFC 9112 §2.2: skip empty lines before the request
        leading = LEADING_EMPTY_LINES.match(buf)
        start = leading.end() if leading else 0
    end = buf.find(b"\r\n\r\n", start)
    if end < 0 or end + 4 > limits.header_bytes:
        _reject_incomplete(buf, start, limits)
        return None

    # Fast path: the whole head is here. Syntax is checked by a few C-level regex
    # passes; any failure hands over to _head_error, which names the status.
    text = buf[start : end + 2].decode("latin-1")  # request line + field lines, CRLF each
    line_end = text.find("\r\n")
    match = _REQUEST_LINE.fullmatch(text, 0, line_end)
    if match is None or line_end > limits.request_line or match[3] != "1":
        raise _complete_head_error(text, limits)
    fields_start = line_end + 2
    field_count = text.count("\n", fields_start)
    if field_count > limits.headers:
        raise _complete_head_error(text, limits)
    pairs = _FIELD.findall(text, fields_start)
    if len(pairs) != field_count:  # some line is not a whole field line
        raise _complete_head_error(text, limits)

    method, target, _, minor_digit = match.groups()
    minor = 0 if minor_digit == "0" else 1  # RFC 9110 §2.5: 1.2..1.9 are served as 1.1
    lower = _LOWER_NAMES.get
    headers = {lower(name) or name.lower(): value.rstrip(" \t") for name, value in pairs}
    if len(headers) != len(pairs):
        headers = _join_repeated(pairs)

    host = headers.get("host")
    if host is None:
        if minor:
            raise HttpError(400, "missing Host header")  # RFC 9112 §3.2
        host = ""
    elif host not in _valid_hosts:
        if not _valid_host(host):
            # A repeated Host was joined with ", " and never matches (RFC 9112 §3.2).
            raise HttpError(400, "invalid Host header")
        if len(_valid_hosts) < VALID_HOST_CACHE_SIZE and len(host) <= VALID_HOST_CACHE_MAX_LENGTH:
            _valid_hosts.add(host)

    if target[0] == "/":
        path, _, query = target.partition("?")
        if method == "CONNECT":
            raise HttpError(400, "CONNECT needs an authority-form target")  # RFC 9112 §3.2.3
        if (not host or host[0] == ":") and "host" in headers:
            raise HttpError(400, "empty Host header")  # RFC 9110 §4.2.1
    else:
        path, query, host = _other_target_form(method, target, host, "host" in headers)

    content_length = 0
    length_field = headers.get("content-length")
    if length_field is not None:
        content_length = _content_length(length_field)
    coding = headers.get("transfer-encoding")
    if coding is not None:
        _reject_transfer_encoding(coding, length_field is not None, minor)

    connection = headers.get("connection")
    if connection is None:
        keep_alive = minor == 1
    else:
        options = {token.strip(" \t") for token in connection.lower().split(",")}
        keep_alive = "close" not in options and (minor == 1 or "keep-alive" in options)

    # Positional: keyword arguments cost ~0.3 us more per request, and the order is
    # the field order of Request just above.
    request = Request(
        method, target, path, query, minor, headers, keep_alive, host, content_length,
        text[:line_end],
    )
    return request, end + 4


def _reject_incomplete(buf: bytes | bytearray, start: int, limits: Limits) -> None:
    """Raise if the head that starts at ``start`` can no longer become valid.

    Called when no complete head lies within ``limits.header_bytes``. Only the bytes
    inside that limit are examined, so the status matches what a byte-by-byte feed
    would have produced.
    """
    if start >= limits.header_bytes:
        raise HttpError(431, "request head too large")  # a flood of empty lines
    text = buf[start : limits.header_bytes].decode("latin-1")
    error = _head_error(text, limits)
    if error is not None:
        raise error
    if len(buf) >= limits.header_bytes:
        raise HttpError(431, "request head too large")


def _complete_head_error(text: str, limits: Limits) -> HttpError:
    """The error for a complete head that the fast path refused."""
    # _head_error always finds one: the fast path and it check the same grammar.
    return _head_error(text, limits) or HttpError(400, "malformed request head")


def _head_error(text: str, limits: Limits) -> HttpError | None:
    """The first certain error in a head, in stream order (or None if there is none).

    ``text`` is the head from its request line on, without the final empty line; its
    last line may be unfinished. Errors are checked in the order their bytes arrive:
    request line (414, then 400, then 505), the first ``limits.headers`` field lines
    (400), one field line too many (431). The caller adds the size limit, which is
    always the last to become certain.
    """
    newline = text.find("\n")
    line = text if newline < 0 else text[:newline]
    has_cr = line.endswith("\r")
    content = line[:-1] if has_cr else line
    if len(content) > limits.request_line:
        if not _REQUEST_LINE_PREFIX.fullmatch(content, 0, limits.request_line):
            return HttpError(400, "malformed request line")
        return HttpError(414, "request line too long")
    if not _REQUEST_LINE_PREFIX.fullmatch(content):
        return HttpError(400, "malformed request line")
    if newline < 0:
        return None  # request line still arriving
    if not has_cr:
        return HttpError(400, "bare LF after the request line")
    match = _REQUEST_LINE.fullmatch(content)
    if match is None:
        return HttpError(400, "malformed request line")
    if match[3] != "1":
        return HttpError(505, "HTTP version not supported")

    fields_start = newline + 1
    last_newline = text.rfind("\n")
    complete_lines = text.count("\n", fields_start)
    checked_end = last_newline + 1
    if complete_lines > limits.headers:
        checked_end = fields_start
        for _ in range(limits.headers):
            checked_end = text.index("\n", checked_end) + 1
    if not _FIELD_LINES.fullmatch(text, fields_start, checked_end):
        return HttpError(400, "malformed header field")
    if complete_lines > limits.headers:
        return HttpError(431, "too many header fields")
    tail = text[last_newline + 1 :]
    if tail and tail != "\r":  # an unfinished field line ("\r" may be the final CRLF)
        if complete_lines >= limits.headers:
            return HttpError(431, "too many header fields")
        if not _FIELD_LINE_PREFIX.fullmatch(tail[:-1] if tail.endswith("\r") else tail):
            return HttpError(400, "malformed header field")
    return None


def _join_repeated(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Header dict for a head with repeated names: values joined with ", " (RFC 9110 §5.3)."""
    # Gathered, then joined once: appending each repeat to the joined string would copy
    # the growing value again for every field, quadratic in the number of repeats.
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(_LOWER_NAMES.get(name) or name.lower(), []).append(value.rstrip(" \t"))
    return {key: ", ".join(parts) for key, parts in values.items()}


def _valid_host(value: str) -> bool:
    """Host = uri-host [":" port] (RFC 9112 §3.2, RFC 3986 §3.2.2)."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    literal = match[1]
    return not literal.startswith("[") or _valid_ip_literal(literal[1:-1])


def _valid_ip_literal(inside: str) -> bool:
    """IPv6address or IPvFuture between the brackets; zone identifiers are refused."""
    if _IP_FUTURE.fullmatch(inside):
        return True
    if "%" in inside:
        return False
    try:
        ipaddress.IPv6Address(inside)
    except ValueError:
        return False
    return True


def _other_target_form(
    method: str, target: str, host: str, has_host_field: bool
) -> tuple[str, str, str]:
    """(path, query, host) for an asterisk-, authority- or absolute-form target."""
    if target == "*":
        if method != "OPTIONS":
            raise HttpError(400, "asterisk-form is only for OPTIONS")  # RFC 9112 §3.2.4
        if (not host or host[0] == ":") and has_host_field:
            raise HttpError(400, "empty Host header")  # RFC 9110 §4.2.1
        return "*", "", host
    if method == "CONNECT":
        # authority-form = uri-host ":" port (RFC 9112 §3.2.3); let it through so the
        # planner can answer 405, as nginx does.
        match = _HOST.fullmatch(target)
        if match is None or not match[2] or not _valid_authority(target):
            raise HttpError(400, "malformed authority-form target")
        return "", "", target
    match = _ABSOLUTE_FORM.fullmatch(target)
    if match is None:
        raise HttpError(400, "malformed request target")
    authority = match[1]
    if not _valid_authority(authority):
        # No userinfo (RFC 9110 §4.2.4), no empty host (§4.2.1).
        raise HttpError(400, "malformed request target")
    # RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host.
    return match[2] or "/", match[3] or "", authority


def _valid_authority(authority: str) -> bool:
    return _valid_host(authority) and not authority.startswith(":") and authority != ""


def _content_length(value: str) -> int:
    """Content-Length = 1*DIGIT; identical repeats are one value (RFC 9110 §8.6)."""
    if not _DIGITS.fullmatch(value):
        members = {member.strip(" \t") for member in value.split(",")}
        if len(members) != 1:
            raise HttpError(400, "conflicting Content-Length")
        value = members.pop()
        if not _DIGITS.fullmatch(value):
            raise HttpError(400, "invalid Content-Length")
    if len(value) > len(str(MAX_CONTENT_LENGTH)) or int(value) > MAX_CONTENT_LENGTH:
        raise HttpError(400, "Content-Length too large")
    return int(value)


def _reject_transfer_encoding(value: str, has_content_length: bool, minor: int) -> None:
    """Every request with Transfer-Encoding is refused; the status says why (RFC 9112 §6)."""
    if has_content_length:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")  # §6.3 item 3
    if minor == 0:
        raise HttpError(400, "Transfer-Encoding in HTTP/1.0")  # §6.1
    final = value.rsplit(",", 1)[-1].strip(" \t").lower()
    if final != "chunked":
        raise HttpError(400, "chunked is not the final transfer coding")  # §6.3 item 4
    raise HttpError(501, "request bodies are not supported")  # §6.1 (unsupported coding)
