"""The PROXY protocol parser (forkserver/proxy.py): valid headers, split arrival, malformed ones."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserver.http.proxy import (
    MAX_V1_BYTES,
    MAX_V2_BYTES,
    ProxyError,
    ProxyHeader,
    TrustedSources,
    parse_proxy_header,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    """A version 2 header: signature, version/command, family/transport, length, block."""
    size = len(block) if length is None else length
    return SIGNATURE + bytes([command, family]) + struct.pack("!H", size) + block


def inet(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed
            + struct.pack("!HH", source_port, destination_port))


def unix_block(source: bytes, destination: bytes) -> bytes:
    return source.ljust(108, b"\0") + destination.ljust(108, b"\0")


V1_TCP4 = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 80\r\n"
V2_TCP4 = v2(0x21, 0x11, inet("192.0.2.10", "198.51.100.1", 56324, 443))
V2_TCP6 = v2(0x21, 0x21, inet("2001:db8::7", "2001:db8::1", 40000, 80))

VALID = [
    (V1_TCP4, ProxyHeader(1, "192.0.2.10", 56324)),
    (V1_TCP6, ProxyHeader(1, "2001:db8::7", 40000)),
    (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", ProxyHeader(1, "0.0.0.0", 0)),
    (b"PROXY TCP6 ::FFFF:192.0.2.1 ::1 1 2\r\n", ProxyHeader(1, "192.0.2.1", 1)),
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 1 2\r\n", ProxyHeader(1, "2001:db8::7", 1)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None)),
    (b"PROXY UNKNOWN 2001:db8::7 2001:db8::1 40000 80\r\n", ProxyHeader(1, None)),
    (b"PROXY UNKNOWN anything at all\r\n", ProxyHeader(1, None)),
    (b"PROXY UNKNOWN " + b"f" * (MAX_V1_BYTES - 16) + b"\r\n", ProxyHeader(1, None)),
    (V2_TCP4, ProxyHeader(2, "192.0.2.10", 56324)),
    (V2_TCP6, ProxyHeader(2, "2001:db8::7", 40000)),
    (v2(0x21, 0x21, inet("::ffff:192.0.2.1", "::1", 7, 8)), ProxyHeader(2, "192.0.2.1", 7)),
    (v2(0x21, 0x31, unix_block(b"/run/client.sock", b"/run/lb.sock")), ProxyHeader(2, "unix:")),
    # LOCAL: the proxy's own health check; its block (even a nonsense family) is ignored.
    (v2(0x20, 0x00, b""), ProxyHeader(2, None)),
    (v2(0x20, 0x11, inet("192.0.2.10", "198.51.100.1", 1, 2)), ProxyHeader(2, None)),
    (v2(0x20, 0xFF, b"junk"), ProxyHeader(2, None)),
    # Valid, but nothing a stream server can use: the connection's peer stands.
    (v2(0x21, 0x00, b""), ProxyHeader(2, None)),
    (v2(0x21, 0x00, b"ignored address bytes"), ProxyHeader(2, None)),
    (v2(0x21, 0x12, inet("192.0.2.10", "198.51.100.1", 1, 2)), ProxyHeader(2, None)),
    (v2(0x21, 0x10, inet("192.0.2.10", "198.51.100.1", 1, 2)), ProxyHeader(2, None)),
    # TLVs after the addresses are skipped (here ALPN "h2", NOOP padding, AUTHORITY).
    (v2(0x21, 0x11, inet("192.0.2.10", "198.51.100.1", 5, 6)
        + b"\x01\x00\x02h2" + b"\x04\x00\x00" + b"\x02\x00\x0bexample.com"),
     ProxyHeader(2, "192.0.2.10", 5)),
]


@pytest.mark.parametrize(("data", "expected"), VALID, ids=[repr(d[:40]) for d, _ in VALID])
def test_valid_headers_name_the_client(data: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(data) == (expected, len(data))


@pytest.mark.parametrize(("data", "expected"), VALID, ids=[repr(d[:40]) for d, _ in VALID])
def test_what_follows_the_header_is_left_for_http(data: bytes, expected: ProxyHeader) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert parse_proxy_header(bytearray(data + request)) == (expected, len(data))


@pytest.mark.parametrize(("data", "expected"), VALID, ids=[repr(d[:40]) for d, _ in VALID])
def test_a_header_split_at_any_byte_waits_for_the_rest(
    data: bytes, expected: ProxyHeader
) -> None:
    for cut in range(len(data)):
        assert parse_proxy_header(data[:cut]) is None, cut
    assert parse_proxy_header(data) == (expected, len(data))


V1_TCP4_BODY = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 443"
MALFORMED = [
    # not PROXY protocol at all: told apart by the first byte
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXZ",
    b"PROXYTCP4",
    b"\r\n\r\n\x01",
    b"\r\n\r\n\x00\r\nQUIX",
    # v1: shape
    b"PROXY  TCP4 192.0.2.10 198.51.100.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.10  198.51.100.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1 2 \r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1 2 3\r\n",
    b"PROXY TCP4\r\n",
    b"PROXY\r\n",
    b"PROXY \r\n",
    b"PROXY tcp4 192.0.2.10 198.51.100.1 1 2\r\n",
    b"PROXY TCP5 192.0.2.10 198.51.100.1 1 2\r\n",
    b"PROXY UDP4 192.0.2.10 198.51.100.1 1 2\r\n",
    b"PROXY UNKNOWNX\r\n",
    b"PROXY\tTCP4 192.0.2.10 198.51.100.1 1 2\r\n",
    # v1: line ending
    (V1_TCP4_BODY + "\n").encode(),
    (V1_TCP4_BODY + "\r").encode() + b"X",
    (V1_TCP4_BODY + "\r\r\n").encode(),
    (V1_TCP4_BODY + "\n\r\n").encode(),
    b"PROXY TCP4 192.0.2.10\r198.51.100.1 1 2\r\n",
    b"PROXY UNKNOWN " + b"f" * (MAX_V1_BYTES - 15) + b"\r\n",  # 108 bytes
    b"PROXY UNKNOWN " + b"f" * 200,
    # v1: addresses
    b"PROXY TCP4 192.0.2.010 198.51.100.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.256 198.51.100.1 1 2\r\n",
    b"PROXY TCP4 192.0.2 198.51.100.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.10.1 198.51.100.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.10 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
    b"PROXY TCP4 localhost 198.51.100.1 1 2\r\n",
    b"PROXY TCP6 192.0.2.10 2001:db8::1 1 2\r\n",
    b"PROXY TCP6 2001:db8::7%eth0 2001:db8::1 1 2\r\n",
    b"PROXY TCP6 2001:db8:::7 2001:db8::1 1 2\r\n",
    b"PROXY TCP6 2001:db8::7::1 2001:db8::1 1 2\r\n",
    b"PROXY TCP6 [2001:db8::7] 2001:db8::1 1 2\r\n",
    b"PROXY TCP6 2001:db8::g 2001:db8::1 1 2\r\n",
    "PROXY TCP4 192.0.2.\u0661 198.51.100.1 1 2\r\n".encode(),
    # v1: ports
    b"PROXY TCP4 192.0.2.10 198.51.100.1 080 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 00 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 99999 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 100000 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 +1 2\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1 0x50\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1 \r\n",
    # v2: version and command
    SIGNATURE + b"\x11\x11",
    SIGNATURE + b"\x31\x11",
    SIGNATURE + b"\x22\x11",
    SIGNATURE + b"\x2f\x11",
    SIGNATURE + b"\x00",
    # v2: family and transport
    v2(0x21, 0x41, b"\0" * 12),
    v2(0x21, 0x13, b"\0" * 12),
    v2(0x21, 0xF1, b"\0" * 12),
    # v2: an address block too short for its family (a partial header)
    v2(0x21, 0x11, b"\0" * 11),
    v2(0x21, 0x21, b"\0" * 35),
    v2(0x21, 0x31, b"\0" * 215),
    v2(0x21, 0x11, b"", length=0),
    # v2: larger than any load balancer sends (refused before it is buffered)
    v2(0x21, 0x11, b"", length=MAX_V2_BYTES - 15),
    v2(0x21, 0x11, b"", length=0xFFFF),
    # v2: TLVs that do not add up
    v2(0x21, 0x11, inet("192.0.2.10", "198.51.100.1", 1, 2) + b"\x01"),
    v2(0x21, 0x11, inet("192.0.2.10", "198.51.100.1", 1, 2) + b"\x01\x00"),
    v2(0x21, 0x11, inet("192.0.2.10", "198.51.100.1", 1, 2) + b"\x01\x00\x03h2"),
    v2(0x21, 0x11, inet("192.0.2.10", "198.51.100.1", 1, 2) + b"\x01\x00\x02h2\x04"),
]


@pytest.mark.parametrize("data", MALFORMED, ids=[repr(d[:48]) for d in MALFORMED])
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_proxy_header(data)


@pytest.mark.parametrize("data", [
    b"G", b"\x16", b"p", b"PROXZ", b"\r\n\r\n\x01", SIGNATURE + b"\x11",
    v2(0x21, 0x11, b"", length=MAX_V2_BYTES)[:16],
    v2(0x21, 0x21, b"", length=20)[:16],
])
def test_a_prefix_that_cannot_become_a_header_is_refused_at_once(data: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_proxy_header(data)


def test_the_largest_allowed_headers_are_accepted() -> None:
    longest_v1 = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                  b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(longest_v1) == MAX_V1_BYTES
    assert parse_proxy_header(longest_v1) == (ProxyHeader(1, None), MAX_V1_BYTES)
    full_tcp6 = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                 b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert parse_proxy_header(full_tcp6) == (
        ProxyHeader(1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), len(full_tcp6))
    addresses = inet("192.0.2.10", "198.51.100.1", 1, 2)
    padding = MAX_V2_BYTES - 16 - len(addresses) - 3
    largest = v2(0x21, 0x11, addresses + b"\x04" + struct.pack("!H", padding) + b"\0" * padding)
    assert len(largest) == MAX_V2_BYTES
    assert parse_proxy_header(largest) == (ProxyHeader(2, "192.0.2.10", 1), MAX_V2_BYTES)


# -- properties -------------------------------------------------------------------------

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4)


def not_ipv4_mapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None


ipv6 = st.ip_addresses(v=6).filter(not_ipv4_mapped)


def shown(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(address)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    version = draw(st.sampled_from([1, 2]))
    family = draw(st.sampled_from([ipv4, ipv6]))
    source, destination = draw(family), draw(family)
    source_port, destination_port = draw(ports), draw(ports)
    expected = ProxyHeader(version, shown(source), source_port)
    if version == 1:
        protocol = "TCP4" if source.version == 4 else "TCP6"
        line = f"PROXY {protocol} {source} {destination} {source_port} {destination_port}\r\n"
        return line.encode(), expected
    block = source.packed + destination.packed + struct.pack("!HH", source_port,
                                                             destination_port)
    tlvs = draw(st.lists(st.binary(max_size=40), max_size=3))
    for value in tlvs:
        block += b"\x05" + struct.pack("!H", len(value)) + value
    return v2(0x21, 0x11 if source.version == 4 else 0x21, block), expected


@settings(max_examples=300, deadline=None)
@given(headers(), st.binary(max_size=64), st.data())
def test_any_valid_header_parses_back_whole_or_in_pieces(
    header: tuple[bytes, ProxyHeader], rest: bytes, data: st.DataObject
) -> None:
    encoded, expected = header
    assert parse_proxy_header(encoded + rest) == (expected, len(encoded))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    assert parse_proxy_header(encoded[:cut]) is None


@settings(max_examples=1000, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=120).map(lambda b: b"PROXY " + b),
    st.binary(max_size=300).map(lambda b: SIGNATURE + b),
    st.binary(max_size=120).map(lambda b: V1_TCP4[:20] + b),
))
def test_any_bytes_give_a_header_more_please_or_a_proxy_error(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProxyError:
        return
    if result is None:
        # Still waiting: a header could yet complete, and it would be bounded.
        assert len(data) < MAX_V2_BYTES
        return
    header, consumed = result
    assert 0 < consumed <= len(data)
    assert header.version in (1, 2)
    # The same bytes followed by anything parse the same way.
    assert parse_proxy_header(data[:consumed] + b"GET /") == (header, consumed)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_a_refused_prefix_stays_refused_however_it_continues(data: bytes) -> None:
    try:
        parse_proxy_header(data)
    except ProxyError:
        for more in (b"", b"\r\n", b"\0" * 300, b" 1 2\r\n"):
            with pytest.raises(ProxyError):
                parse_proxy_header(data + more)


# -- trusted sources -------------------------------------------------------------------

def test_trusted_sources_match_networks_and_mapped_addresses() -> None:
    trusted = TrustedSources(["127.0.0.1/32", "10.0.0.0/8", "::1/128", "2001:db8::/32"])
    for address in ("127.0.0.1", "10.200.3.4", "::1", "2001:db8::5", "::ffff:10.1.1.1"):
        assert address in trusted, address
    for address in ("127.0.0.2", "11.0.0.1", "::2", "2001:db9::1", "", "unix:", "junk"):
        assert address not in trusted, address


def test_no_trusted_sources_trust_nobody() -> None:
    assert "127.0.0.1" not in TrustedSources([])
