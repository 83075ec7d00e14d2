"""HTTP semantics over real sockets: curl for ranges, conditionals and compressed
variants; h11 as a strict client over keep-alive connections.

One server (two workers) serves the whole module from a docroot made here. curl is a
hard requirement (``.ci/run`` installs it): a missing curl fails, it never skips.
Every response on a kept-alive connection goes through h11, which refuses anything
malformed: a body on a 304, a wrong Content-Length, a stray byte between responses.
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import random
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest

from forkserver import __version__
from tests.support import Server, running, wait_for

DATA = random.Random(7).randbytes(100_000)
SCRIPT = b"".join(b"console.log('line %d of forkserver test script');\n" % i for i in range(400))
PAGE = b"<!DOCTYPE html><title>page</title><p>hello</p>\n"
NOT_FOUND_PAGE = b"<!DOCTYPE html><title>custom 404</title>\n"
CURL_TIMEOUT = 20.0


def brotli_stored(data: bytes) -> bytes:
    """A valid brotli stream (RFC 7932) holding ``data`` in uncompressed meta-blocks.

    Python has no brotli module; this is enough for curl and browsers to decode.
    Bits are packed from the least significant end: WBITS=16 ("0"), then per block
    ISLAST=0, MNIBBLES=4 ("00"), MLEN-1 (16 bits), ISUNCOMPRESSED=1, padding to the
    byte, the raw bytes; finally ISLAST=1, ISLASTEMPTY=1.
    """
    out = bytearray()
    first = True
    for start in range(0, len(data), 65536):
        chunk = data[start : start + 65536]
        bits = []
        if first:
            bits.append(0)  # WBITS = 16
            first = False
        bits += [0, 0, 0]  # ISLAST = 0, MNIBBLES = 4
        bits += [((len(chunk) - 1) >> i) & 1 for i in range(16)]
        bits.append(1)  # ISUNCOMPRESSED
        while len(bits) % 8:
            bits.append(0)
        for i in range(0, len(bits), 8):
            out.append(sum(bit << j for j, bit in enumerate(bits[i : i + 8])))
        out += chunk
    if first:
        return b"\x03"  # empty stream: WBITS=16, ISLAST=1, ISLASTEMPTY=1 packed as 0b011
    out.append(0b11)  # ISLAST = 1, ISLASTEMPTY = 1
    return bytes(out)


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("http") / "www"
    (root / "errors").mkdir(parents=True)
    (root / "listing" / "sub dir").mkdir(parents=True)
    (root / "data.bin").write_bytes(DATA)
    (root / "app.js").write_bytes(SCRIPT)
    (root / "app.js.gz").write_bytes(gzip.compress(SCRIPT, mtime=0))
    (root / "app.js.br").write_bytes(brotli_stored(SCRIPT))
    (root / "page.html").write_bytes(PAGE)
    (root / "errors" / "404.html").write_bytes(NOT_FOUND_PAGE)
    (root / "listing" / "a&b <c>.txt").write_text("x")
    (root / "listing" / "100%.txt").write_text("y")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docroot: Path) -> Iterator[Server]:
    settings = {
        "docroot": str(docroot),
        "workers": 2,
        "server_tokens": True,
        "autoindex": True,
        "error_pages": {404: "/errors/404.html"},
        "headers": {"X-Served-By": "forkserver-test"},
        "cache_control": {"*.js": "public, max-age=31536000, immutable"},
    }
    with running(tmp_path_factory.mktemp("http-server"), settings) as started:
        yield started


# -- curl -----------------------------------------------------------------------------------
class Curl:
    """One curl run: the status, the response headers (last response) and the body."""

    def __init__(self, server: Server, tmp_path: Path, *args: str, path: str = "/") -> None:
        headers_file = tmp_path / "headers.txt"
        body_file = tmp_path / "body.bin"
        headers_file.unlink(missing_ok=True)
        if "-C" not in args:  # a resumed download continues the file that is there
            body_file.unlink(missing_ok=True)
        run = subprocess.run(
            ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), "-D", str(headers_file),
             "-o", str(body_file), "-w", "%{http_code}", *args, server.url(path)],
            capture_output=True, timeout=CURL_TIMEOUT + 5, check=False,
        )
        assert run.returncode == 0, run.stderr.decode()
        self.status = int(run.stdout)
        blocks = headers_file.read_bytes().decode("latin-1").strip().split("\r\n\r\n")
        self.head_lines = blocks[-1].split("\r\n")
        self.headers = {
            name.lower(): value
            for name, _, value in (line.partition(": ") for line in self.head_lines[1:])
        }
        self.body = body_file.read_bytes() if body_file.exists() else b""


def test_curl_single_range(server: Server, tmp_path: Path) -> None:
    got = Curl(server, tmp_path, "-r", "0-99", path="/data.bin")
    assert got.status == 206
    assert got.headers["content-range"] == "bytes 0-99/100000"
    assert got.headers["content-length"] == "100"
    assert got.body == DATA[:100]


@pytest.mark.parametrize(
    ("spec", "first", "last"), [("-500", 99_500, 99_999), ("99500-", 99_500, 99_999),
                                ("99990-2000000", 99_990, 99_999)]
)
def test_curl_suffix_and_open_ended_ranges(
    server: Server, tmp_path: Path, spec: str, first: int, last: int
) -> None:
    got = Curl(server, tmp_path, "-r", spec, path="/data.bin")
    assert got.status == 206
    assert got.headers["content-range"] == f"bytes {first}-{last}/100000"
    assert got.body == DATA[first : last + 1]


def test_curl_several_ranges_are_multipart(server: Server, tmp_path: Path) -> None:
    got = Curl(server, tmp_path, "-r", "1000-1009,0-9,-5,5-14", path="/data.bin")
    assert got.status == 206
    kind = got.headers["content-type"]
    assert re.fullmatch(r"multipart/byteranges; boundary=[0-9a-f]{24}", kind)
    assert got.headers["content-length"] == str(len(got.body))
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + got.body
    )
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.iter_parts()]
    assert parts == [  # 0-9 and 5-14 coalesced, in the order first asked for
        ("bytes 1000-1009/100000", DATA[1000:1010]),
        ("bytes 0-14/100000", DATA[0:15]),
        ("bytes 99995-99999/100000", DATA[99_995:]),
    ]


def test_curl_unsatisfiable_range_is_416(server: Server, tmp_path: Path) -> None:
    got = Curl(server, tmp_path, "-r", "100000-", path="/data.bin")
    assert got.status == 416
    assert got.headers["content-range"] == "bytes */100000"


def test_curl_resumes_a_download(server: Server, tmp_path: Path) -> None:
    partial = tmp_path / "body.bin"
    partial.write_bytes(DATA[:30_000])
    got = Curl(server, tmp_path, "-C", "-", path="/data.bin")
    assert got.status == 206
    assert got.headers["content-range"] == "bytes 30000-99999/100000"
    assert partial.read_bytes() == DATA


def test_curl_range_with_a_wrong_if_range_gets_the_whole_file(
    server: Server, tmp_path: Path
) -> None:
    wrong = Curl(server, tmp_path, "-r", "0-9", "-H", 'If-Range: "nope"', path="/data.bin")
    assert wrong.status == 200 and wrong.body == DATA
    tag = Curl(server, tmp_path, "-I", path="/data.bin").headers["etag"]
    right = Curl(server, tmp_path, "-r", "0-9", "-H", f"If-Range: {tag}", path="/data.bin")
    assert right.status == 206 and right.body == DATA[:10]


def test_curl_etag_revalidation_gets_304(server: Server, tmp_path: Path) -> None:
    etags = tmp_path / "etag.txt"
    first = Curl(server, tmp_path, "--etag-save", str(etags), path="/page.html")
    assert first.status == 200 and first.body == PAGE
    again = Curl(server, tmp_path, "--etag-compare", str(etags), path="/page.html")
    assert again.status == 304 and again.body == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["last-modified"] == first.headers["last-modified"]
    assert again.headers["cache-control"] == "no-cache"
    assert "content-length" not in again.headers and "content-type" not in again.headers
    wait_for(lambda: '"GET /page.html HTTP/1.1" 304 - ' in server.access_log,
             what="the 304 in the access log")


def test_curl_time_conditions(server: Server, tmp_path: Path) -> None:
    modified = Curl(server, tmp_path, "-I", path="/page.html").headers["last-modified"]
    assert Curl(server, tmp_path, "-z", modified, path="/page.html").status == 304
    older = "Thu, 01 Jan 1998 00:00:00 GMT"
    assert Curl(server, tmp_path, "-z", older, path="/page.html").status == 200
    # -z with a leading dash sends If-Unmodified-Since: modified after it → 412.
    assert Curl(server, tmp_path, "-z", "-" + older, path="/page.html").status == 412


@pytest.mark.parametrize(("accept", "coding"), [("br", "br"), ("gzip", "gzip")])
def test_curl_decodes_precompressed_variants(
    server: Server, tmp_path: Path, accept: str, coding: str
) -> None:
    got = Curl(server, tmp_path, "--compressed", "-H", f"Accept-Encoding: {accept}",
               path="/app.js")
    assert got.status == 200
    assert got.headers["content-encoding"] == coding
    assert got.headers["vary"] == "Accept-Encoding"
    assert got.headers["content-type"] == "text/javascript; charset=utf-8"
    assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert got.body == SCRIPT  # curl decoded the variant back to the file


def test_curl_range_of_a_variant_is_of_the_encoded_bytes(server: Server, tmp_path: Path) -> None:
    encoded = gzip.compress(SCRIPT, mtime=0)
    got = Curl(server, tmp_path, "-H", "Accept-Encoding: gzip", "-r", "0-1", path="/app.js")
    assert got.status == 206
    assert got.headers["content-range"] == f"bytes 0-1/{len(encoded)}"
    assert got.body == encoded[:2] == b"\x1f\x8b"


def test_curl_head_ignores_range(server: Server, tmp_path: Path) -> None:
    got = Curl(server, tmp_path, "-I", "-r", "0-9", path="/data.bin")
    assert got.status == 200
    assert got.headers["content-length"] == "100000"
    assert got.headers["accept-ranges"] == "bytes"
    assert "content-range" not in got.headers


def test_curl_sees_the_configured_headers_pages_and_listing(
    server: Server, tmp_path: Path
) -> None:
    missing = Curl(server, tmp_path, path="/nope.html")
    assert missing.status == 404 and missing.body == NOT_FOUND_PAGE
    assert missing.headers["x-served-by"] == "forkserver-test"
    assert missing.headers["server"] == f"forkserver/{__version__}"
    listing = Curl(server, tmp_path, path="/listing/")
    assert listing.status == 200
    assert b'href="a%26b%20%3Cc%3E.txt">a&amp;b &lt;c&gt;.txt</a>' in listing.body
    assert b'href="100%25.txt"' in listing.body and b'href="sub%20dir/"' in listing.body
    json_listing = Curl(server, tmp_path, "-H", "Accept: application/json", path="/listing/")
    assert json_listing.headers["content-type"] == "application/json; charset=utf-8"
    assert b'"name":"sub dir","type":"directory"' in json_listing.body


# -- h11 as a strict client ---------------------------------------------------------------------
Exchange = tuple[str, str, list[tuple[str, str]]]  # method, target, extra request headers


def read_response(
    conn: h11.Connection, sock: socket.socket
) -> tuple[h11.Response, bytes]:
    """The next complete response, parsed by h11 (which raises on anything malformed)."""
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            conn.receive_data(data)
            assert data, "the server closed the connection mid-response"
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, bytes(body)
        else:
            raise AssertionError(f"unexpected h11 event {event!r}")


def fields(response: h11.Response) -> dict[str, str]:
    return {name.decode().lower(): value.decode() for name, value in response.headers}


def exchanges(etag: str, gzip_tag: str) -> list[tuple[Exchange, int]]:
    return [
        (("GET", "/page.html", []), 200),
        (("HEAD", "/page.html", []), 200),
        (("GET", "/page.html", [("If-None-Match", etag)]), 304),
        (("HEAD", "/page.html", [("If-None-Match", etag)]), 304),
        (("GET", "/page.html", [("If-Match", '"nope"')]), 412),
        (("GET", "/data.bin", [("Range", "bytes=10-19")]), 206),
        (("GET", "/data.bin", [("Range", "bytes=0-0,-1")]), 206),
        (("GET", "/data.bin", [("Range", "bytes=200000-")]), 416),
        (("HEAD", "/data.bin", [("Range", "bytes=0-9")]), 200),
        (("GET", "/app.js", [("Accept-Encoding", "gzip")]), 200),
        (("GET", "/app.js", [("Accept-Encoding", "gzip"), ("If-None-Match", gzip_tag)]), 304),
        (("GET", "/app.js", [("Accept-Encoding", "br"), ("Range", "bytes=0-3")]), 206),
        (("GET", "/nope", []), 404),
        (("HEAD", "/nope", []), 404),
        (("GET", "/listing", []), 301),
        (("GET", "/listing/", [("Accept", "application/json")]), 200),
        (("GET", "/%zz", []), 400),
        (("DELETE", "/page.html", []), 405),
        (("GET", "/page.html", [("If-Modified-Since", "Thu, 01 Jan 1998 00:00:00 GMT")]), 200),
    ]


def validators(server: Server) -> tuple[str, str]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        conn = h11.Connection(h11.CLIENT)
        tags = []
        for extra in ([], [("Accept-Encoding", "gzip")]):
            sock.sendall(conn.send(h11.Request(
                method="HEAD", target="/page.html" if not extra else "/app.js",
                headers=[("Host", "test"), *extra])))
            sock.sendall(conn.send(h11.EndOfMessage()))
            response, _ = read_response(conn, sock)
            tags.append(fields(response)["etag"])
            conn.start_next_cycle()
    return tags[0], tags[1]


# What a GET of each target a HEAD asks for would carry: the HEAD's Content-Length.
# (A Range on a HEAD is ignored: the answer is the whole file's 200.)
GET_BODY_LENGTHS = {"/page.html": len(PAGE), "/data.bin": len(DATA), "/nope": len(NOT_FOUND_PAGE)}


def check(
    method: str, target: str, response: h11.Response, body: bytes, status: int
) -> None:
    assert response.status_code == status, (method, status, response)
    headers = fields(response)
    assert headers["server"] == f"forkserver/{__version__}"
    assert "date" in headers and headers["x-served-by"] == "forkserver-test"
    if status == 304:
        assert "content-length" not in headers and "content-type" not in headers
        assert body == b""
    elif method == "HEAD":
        assert body == b"" and int(headers["content-length"]) == GET_BODY_LENGTHS[target]
    else:
        assert int(headers["content-length"]) == len(body)


def test_h11_parses_every_response_on_one_keep_alive_connection(server: Server) -> None:
    etag, gzip_tag = validators(server)
    plan = exchanges(etag, gzip_tag)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        conn = h11.Connection(h11.CLIENT)
        for (method, target, extra), status in plan:
            request = h11.Request(method=method, target=target, headers=[("Host", "t"), *extra])
            sock.sendall(conn.send(request))
            sock.sendall(conn.send(h11.EndOfMessage()))
            response, body = read_response(conn, sock)
            check(method, target, response, body, status)
            if extra == [("Range", "bytes=10-19")]:
                assert body == DATA[10:20]
            conn.start_next_cycle()  # h11 refuses to go on if the framing was off
        assert conn.our_state is h11.IDLE and conn.their_state is h11.IDLE


def test_h11_parses_pipelined_responses(server: Server) -> None:
    """All requests in one write; the responses, in order, parsed by one h11 client."""
    etag, gzip_tag = validators(server)
    plan = [(e, s) for e, s in exchanges(etag, gzip_tag) if e[0] in ("GET", "HEAD")]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        wire = bytearray()
        for (method, target, extra), _ in plan:
            writer = h11.Connection(h11.CLIENT)  # one per request: only its bytes are wanted
            wire += writer.send(h11.Request(method=method, target=target,
                                            headers=[("Host", "t"), *extra]))
            wire += writer.send(h11.EndOfMessage())
        sock.sendall(bytes(wire))
        reader = h11.Connection(h11.CLIENT)
        for (method, target, extra), status in plan:
            # Replay the request into the reader so it knows what each response answers.
            reader.send(h11.Request(method=method, target=target, headers=[("Host", "t"), *extra]))
            reader.send(h11.EndOfMessage())
            response, body = read_response(reader, sock)
            check(method, target, response, body, status)
            reader.start_next_cycle()
