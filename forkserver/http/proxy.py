"""The PROXY protocol (HAProxy's, versions 1 and 2): the real client of a proxied connection.

Owns parsing the header a load balancer sends at the start of a connection, and the
``proxy_protocol_from`` trust check. Sans-I/O like request.py: bytes in, a
``ProxyHeader`` (or "need more bytes", or ``ProxyError``) out; no clock, no sockets.
The worker owns the deadline and what happens to a connection that fails.

Strict on purpose: a header that is not exactly what the specification allows is
refused, because whatever follows a malformed header cannot be trusted either. See
https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt (also shipped by Debian's
haproxy package as /usr/share/doc/haproxy/proxy-protocol.txt.gz).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_V1_BYTES", "MAX_V2_BYTES", "UNIX_CLIENT", "ProxyError", "ProxyHeader",
    "TrustedSources", "parse_proxy_header",
]

V1_PREFIX = b"PROXY "
V1_MAX = 107  # "PROXY UNKNOWN" + two full IPv6 addresses + two ports + CRLF (spec §2.1)
MAX_V1_BYTES = V1_MAX
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
# The specification allows 64 KiB of addresses and TLVs; a load balancer sends a few
# dozen bytes (a few hundred with TLVs such as SSL details). Anything near this bound
# is not a load balancer, and a worker should not buffer it.
MAX_V2_BYTES = 4096
UNIX_CLIENT = "unix:"  # the client of an AF_UNIX connection, in logs (nginx writes the same)

# v2 byte 13: version 2 in the high nibble, command in the low one.
V2_LOCAL, V2_PROXY = 0x20, 0x21
# v2 byte 14: family in the high nibble, transport in the low one.
FAMILY_UNSPEC, FAMILY_INET, FAMILY_INET6, FAMILY_UNIX = 0, 1, 2, 3
TRANSPORT_UNSPEC, TRANSPORT_STREAM, TRANSPORT_DGRAM = 0, 1, 2
# Address block sizes: two addresses and, for IP, two ports (spec §2.2).
ADDRESS_BYTES = {FAMILY_INET: 12, FAMILY_INET6: 36, FAMILY_UNIX: 216}

# v1 fields. Ports: decimal 0..65535 without heading zeroes. Addresses are checked
# by ipaddress after this coarse shape (which keeps out signs, blanks, scope ids).
V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
V1_IPV4 = re.compile(rb"[0-9.]{7,15}")
V1_IPV6 = re.compile(rb"[0-9A-Fa-f:.]{2,45}")


class ProxyError(ValueError):
    """The bytes are not a valid PROXY protocol header; the reason completes a log line."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header.

    ``client`` is the original client's address as text (IPv4-mapped IPv6 addresses
    shown as IPv4, an AF_UNIX client as ``unix:``), or None when the header says to use
    the connection's own peer: v1 ``UNKNOWN``, v2 ``LOCAL`` (a health check from the
    proxy itself), v2 ``AF_UNSPEC`` or an unspecified or datagram transport.
    """

    version: int  # 1 or 2
    client: str | None
    client_port: int | None = None


def parse_proxy_header(buffer: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    """``(header, bytes consumed)``, None while the header is incomplete, or ProxyError.

    Whatever follows the header in ``buffer`` belongs to the proxied protocol. A
    prefix that can no longer become a valid header is refused at once, so a client
    that speaks HTTP straight away is told apart after its first byte.
    """
    if not buffer:
        return None
    if buffer[0] == V1_PREFIX[0]:
        return _parse_v1(buffer)
    if buffer[0] == V2_SIGNATURE[0]:
        return _parse_v2(buffer)
    raise ProxyError("no PROXY protocol signature")


# -- version 1: one line of text --------------------------------------------------------


def _parse_v1(buffer: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    head = bytes(buffer[:V1_MAX])
    if not V1_PREFIX.startswith(head[: len(V1_PREFIX)]):
        raise ProxyError("no PROXY protocol signature")
    end = head.find(b"\r\n")
    if end < 0:
        if len(head) >= V1_MAX:
            raise ProxyError(f"v1 line without CRLF in its first {V1_MAX} bytes")
        if b"\r" in head[:-1] or b"\n" in head:
            raise ProxyError("v1 line ends with a lone CR or LF")
        return None
    line = head[len(V1_PREFIX) - 1 : end]  # from the space after PROXY
    if b"\r" in line or b"\n" in line:
        raise ProxyError("v1 line ends with a lone CR or LF")
    return _v1_fields(line), end + 2


def _v1_fields(line: bytes) -> ProxyHeader:
    if line.startswith(b" UNKNOWN") and line[8:9] in (b"", b" "):
        # The sender may omit or fill the rest; the receiver ignores it (spec §2.1).
        return ProxyHeader(1, None)
    fields = line.split(b" ")
    if fields[0] != b"" or len(fields) != 6:
        raise ProxyError("v1 line is not 'PROXY TCP4|TCP6|UNKNOWN SRC DST SPORT DPORT'")
    _, protocol, source, destination, source_port, destination_port = fields
    if protocol == b"TCP4":
        shape, parse = V1_IPV4, _ipv4
    elif protocol == b"TCP6":
        shape, parse = V1_IPV6, _ipv6
    else:
        raise ProxyError(f"v1 protocol {_show(protocol)} is not TCP4, TCP6 or UNKNOWN")
    client = ""
    for address in (source, destination):
        if not shape.fullmatch(address):
            raise ProxyError(f"v1 address {_show(address)} is not a {protocol.decode()} address")
        text = parse(address.decode("ascii"))
        client = client or text
    ports = []
    for port in (source_port, destination_port):
        if not V1_PORT.fullmatch(port) or int(port) > 65535:
            raise ProxyError(f"v1 port {_show(port)} is not 0..65535 without heading zeroes")
        ports.append(int(port))
    return ProxyHeader(1, client, ports[0])


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))  # refuses heading zeroes ("010.0.0.1")
    except ValueError:
        raise ProxyError(f"v1 address {text!r} is not an IPv4 address") from None


def _ipv6(text: str) -> str:
    try:
        return _shown(ipaddress.IPv6Address(text))
    except ValueError:
        raise ProxyError(f"v1 address {text!r} is not an IPv6 address") from None


def _shown(address: ipaddress.IPv6Address) -> str:
    """An IPv4-mapped IPv6 address as IPv4, like the worker shows a dual-stack peer."""
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


def _show(field: bytes) -> str:
    return repr(field[:48].decode("latin-1"))


# -- version 2: binary ----------------------------------------------------------------


def _parse_v2(buffer: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    signature = bytes(buffer[: len(V2_SIGNATURE)])
    if not V2_SIGNATURE.startswith(signature):
        raise ProxyError("no PROXY protocol signature")
    if len(buffer) > len(V2_SIGNATURE) and buffer[12] not in (V2_LOCAL, V2_PROXY):
        raise ProxyError(f"v2 version/command byte 0x{buffer[12]:02x} is not 0x20 or 0x21")
    if len(buffer) < V2_FIXED:
        return None
    local = buffer[12] == V2_LOCAL
    family, transport = buffer[13] >> 4, buffer[13] & 0x0F
    length = int.from_bytes(buffer[14:16], "big")
    total = V2_FIXED + length
    if total > MAX_V2_BYTES:
        raise ProxyError(f"v2 header of {total} bytes is larger than {MAX_V2_BYTES}")
    needed = 0
    if not local:  # LOCAL ignores the family byte and the whole block (spec §2.2)
        if family > FAMILY_UNIX or transport > TRANSPORT_DGRAM:
            raise ProxyError(f"v2 family/transport byte 0x{buffer[13]:02x} is not defined")
        needed = ADDRESS_BYTES.get(family, 0)
        if length < needed:
            raise ProxyError(f"v2 address block of {length} bytes, {needed} needed")
    if len(buffer) < total:
        return None
    if local:
        # The proxy's own connection (a health check): the connection's peer stands.
        return ProxyHeader(2, None), total
    if transport != TRANSPORT_STREAM or family == FAMILY_UNSPEC:
        # Valid, but not a stream connection we can describe: the real peer stands, and
        # the block is ignored (where its addresses end is not defined).
        return ProxyHeader(2, None), total
    block = bytes(buffer[V2_FIXED:total])
    _check_tlvs(block[needed:])
    if family == FAMILY_UNIX:
        return ProxyHeader(2, UNIX_CLIENT), total
    size = 4 if family == FAMILY_INET else 16
    port = int.from_bytes(block[2 * size : 2 * size + 2], "big")
    if family == FAMILY_INET:
        return ProxyHeader(2, str(ipaddress.IPv4Address(block[:4])), port), total
    return ProxyHeader(2, _shown(ipaddress.IPv6Address(block[:16])), port), total


def _check_tlvs(tlvs: bytes) -> None:
    """TLVs after the addresses are skipped, but must be whole: type, length, value."""
    offset = 0
    while offset < len(tlvs):
        if len(tlvs) - offset < 3:
            raise ProxyError("v2 TLV area ends inside a TLV header")
        size = int.from_bytes(tlvs[offset + 1 : offset + 3], "big")
        offset += 3 + size
        if offset > len(tlvs):
            raise ProxyError("v2 TLV runs past the end of the header")


# -- who may send a header ------------------------------------------------------------


class TrustedSources:
    """The ``proxy_protocol_from`` networks: which peers may speak for a client."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n) for n in networks]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
