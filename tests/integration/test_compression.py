"""Compression and validators against the real program (issue 19, SPEC §10).

One server (two workers) with ``compress.gzip`` on serves a docroot made here:
``.br``/``.zst``/``.gz`` variants chosen by q-value, precompressed-only files (served
encoded, decoded on the fly, or 406), on-the-fly gzip, Accept-Encoding oddities, and
broken ``.gz`` files (a gzip bomb, truncated, not gzip) that must never cost the
worker. A second server runs ``etag: content``. Requests go over raw sockets (so no
client adds an Accept-Encoding of its own) and through ``curl --compressed``.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_http import brotli_stored
from tests.support import Server, read_until_closed, request, running, wait_for

CSS = b"".join(b".c%d { color: #%06x; margin: %dpx; }\n" % (i, i * 40503 % 16**6, i % 9)
               for i in range(3000))  # ~100 KiB
SCRIPT = b"".join(b"console.log('line %d');\n" % i for i in range(2000))
README = b"A file that exists only as README.txt.gz on disk.\n" * 200
# Larger than what is kept in memory decoded (1 MiB), and than gzip/hashing inline.
BIG_TEXT = b"".join(b"%08d some log line that is not all the same %x\n" % (i, i * 7919)
                    for i in range(60_000))  # ~3.3 MiB
MIB = 1024 * 1024
CURL_TIMEOUT = 20.0
TEXT_TYPES = ["text/*", "application/javascript", "application/json", "image/svg+xml"]


def zstd_of(data: bytes, path: Path) -> bytes:
    """A real zstd frame, made by the zstd command (``.ci/run`` installs it)."""
    source = path.with_suffix(".plain")
    source.write_bytes(data)
    subprocess.run(["zstd", "-q", "-f", "-o", str(path), str(source)], check=True, timeout=30)
    source.unlink()
    return path.read_bytes()


def bomb(decoded_mib: int) -> bytes:
    """A gzip file of ~1 KiB per MiB that decodes to ``decoded_mib`` MiB of zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = packer.compress(bytes(MIB)) + packer.flush()
    return member * decoded_mib


def older(path: Path, than: Path) -> None:
    mtime = than.stat().st_mtime_ns - 10**9
    os.utime(path, ns=(mtime, mtime))


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("compression")
    root = base / "www"
    root.mkdir()
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.gz").write_bytes(gzip.compress(b"secret outside the docroot\n"))
    (outside / "secret.zst").write_bytes(b"not served")
    # Every variant, fresh.
    (root / "app.js").write_bytes(SCRIPT)
    (root / "app.js.gz").write_bytes(gzip.compress(SCRIPT, mtime=0))
    (root / "app.js.br").write_bytes(brotli_stored(SCRIPT))
    zstd_of(SCRIPT, root / "app.js.zst")
    # A stale .zst (older than its file) beside a fresh .gz.
    (root / "stale.js").write_bytes(SCRIPT)
    zstd_of(b"old content", root / "stale.js.zst")
    older(root / "stale.js.zst", root / "stale.js")
    # A variant that is a symlink out of the docroot.
    (root / "linked.js").write_bytes(SCRIPT)
    (root / "linked.js.gz").symlink_to(outside / "secret.gz")
    (root / "escape.txt.gz").symlink_to(outside / "secret.gz")  # .gz-only, out
    # Precompressed-only files.
    (root / "README.txt.gz").write_bytes(gzip.compress(README, mtime=0))
    (root / "only-br.js.br").write_bytes(brotli_stored(SCRIPT))
    zstd_of(SCRIPT, root / "only-zst.js.zst")
    (root / "bomb.txt.gz").write_bytes(bomb(300))  # 300 MiB decoded: over the limit
    (root / "truncated.txt.gz").write_bytes(gzip.compress(os.urandom(4000) + README)[:2000])
    (root / "not-gzip.txt.gz").write_bytes(b"this is plain text, not gzip\n" * 20)
    (root / "big.log.gz").write_bytes(gzip.compress(BIG_TEXT, mtime=0))
    (root / "big.css").write_bytes(BIG_TEXT)
    # On-the-fly candidates.
    (root / "style.css").write_bytes(CSS)
    (root / "tiny.css").write_bytes(b"a{}\n")  # under min_size
    (root / "photo.png").write_bytes(os.urandom(50_000))  # a type not listed
    (root / "plain.bin").write_bytes(b"binary\n" * 100)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docroot: Path) -> Iterator[Server]:
    settings = {
        "docroot": str(docroot),
        "workers": 2,
        "compress": {"gzip": True, "types": TEXT_TYPES, "min_size": 1024, "level": 6},
    }
    with running(tmp_path_factory.mktemp("compression-server"), settings) as started:
        yield started


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            self.headers[name.lower()] = value

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def fetch(server: Server, path: str, *fields: str, method: str = "GET") -> Response:
    head = "".join(field + "\r\n" for field in fields)
    raw = request(server.port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                  f"Connection: close\r\n{head}\r\n".encode(), timeout=30)
    response = Response(raw)
    if method == "GET" and "content-length" in response.headers:
        assert len(response.body) == int(response.headers["content-length"])
    return response


def curl(
    server: Server, tmp_path: Path, path: str, *args: str
) -> tuple[int, dict[str, str], bytes]:
    headers_file, body_file = tmp_path / "headers.txt", tmp_path / "body.bin"
    run = subprocess.run(
        ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), "-D", str(headers_file),
         "-o", str(body_file), "-w", "%{http_code}", *args, server.url(path)],
        capture_output=True, timeout=CURL_TIMEOUT + 5, check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    block = headers_file.read_bytes().decode("latin-1").strip().split("\r\n\r\n")[-1]
    headers = {name.lower(): value for name, _, value in
               (line.partition(": ") for line in block.split("\r\n")[1:])}
    return int(run.stdout), headers, body_file.read_bytes()


# -- variants: br, zstd, gzip -------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "coding", "suffix"),
    [
        ("gzip, deflate, br, zstd", "br", ".br"),
        ("gzip, zstd", "zstd", ".zst"),
        ("br;q=0.5, zstd;q=0.9, gzip", "gzip", ".gz"),
        ("br;q=0.5, zstd;q=0.9, gzip;q=0.8", "zstd", ".zst"),
        ("zstd;q=0, gzip;q=0, br;q=0", None, ""),
    ],
)
def test_rfc9110_12_5_3_variant_chosen_by_q_value_br_zstd_gzip(
    server: Server, docroot: Path, accept: str, coding: str | None, suffix: str
) -> None:
    got = fetch(server, "/app.js", f"Accept-Encoding: {accept}")
    assert got.status == 200
    assert got.header("content-encoding") == coding
    assert got.header("vary") == "Accept-Encoding"
    assert got.header("content-type") == "text/javascript; charset=utf-8"
    assert got.body == (docroot / ("app.js" + suffix)).read_bytes()


def test_a_stale_zst_variant_is_never_served(server: Server, docroot: Path) -> None:
    got = fetch(server, "/stale.js", "Accept-Encoding: zstd")
    assert got.header("content-encoding") != "zstd"
    assert got.body != (docroot / "stale.js.zst").read_bytes()


def test_a_variant_symlinked_out_of_the_docroot_is_never_served(server: Server) -> None:
    got = fetch(server, "/linked.js", "Accept-Encoding: gzip")
    assert got.status == 200
    assert b"secret" not in got.body
    assert got.header("content-encoding") in (None, "gzip")
    if got.header("content-encoding") == "gzip":  # made on the fly from linked.js itself
        assert gzip.decompress(got.body) == SCRIPT
    else:
        assert got.body == SCRIPT
    for accept in ("gzip", "identity"):
        assert fetch(server, "/escape.txt", f"Accept-Encoding: {accept}").status == 404


# -- precompressed-only files -------------------------------------------------------------
def test_a_gz_only_file_is_sent_encoded_to_gzip_clients(server: Server, docroot: Path) -> None:
    got = fetch(server, "/README.txt", "Accept-Encoding: gzip, br")
    assert got.status == 200
    assert got.header("content-encoding") == "gzip"
    assert got.header("content-type") == "text/plain; charset=utf-8"
    assert got.header("vary") == "Accept-Encoding"
    assert got.body == (docroot / "README.txt.gz").read_bytes()


@pytest.mark.parametrize("fields", [(), ("Accept-Encoding: br",), ("Accept-Encoding: identity",)])
def test_a_gz_only_file_is_decoded_for_clients_without_gzip(
    server: Server, fields: tuple[str, ...]
) -> None:
    got = fetch(server, "/README.txt", *fields)
    assert got.status == 200
    assert got.header("content-encoding") is None
    assert got.header("content-length") == str(len(README))
    assert got.header("vary") == "Accept-Encoding"
    assert got.body == README


def test_head_of_a_gz_only_file_says_what_get_sends(server: Server) -> None:
    for fields in ((), ("Accept-Encoding: gzip",)):
        got = fetch(server, "/README.txt", *fields)
        head = fetch(server, "/README.txt", *fields, method="HEAD")
        assert head.status == 200 and head.body == b""
        for name in ("content-length", "content-encoding", "etag", "vary", "content-type"):
            assert head.header(name) == got.header(name), name


def test_rfc9110_13_1_2_conditionals_on_each_representation_of_a_gz_only_file(
    server: Server,
) -> None:
    encoded = fetch(server, "/README.txt", "Accept-Encoding: gzip")
    decoded = fetch(server, "/README.txt")
    encoded_tag, decoded_tag = encoded.header("etag"), decoded.header("etag")
    assert encoded_tag and decoded_tag and encoded_tag != decoded_tag
    assert fetch(server, "/README.txt", "Accept-Encoding: gzip",
                 f"If-None-Match: {encoded_tag}").status == 304
    assert fetch(server, "/README.txt", f"If-None-Match: {decoded_tag}").status == 304
    # Even a weak comparison tells the two representations apart.
    assert fetch(server, "/README.txt", f"If-None-Match: W/{encoded_tag}").status == 200
    not_modified = fetch(server, "/README.txt", f"If-None-Match: {decoded_tag}")
    assert not_modified.header("vary") == "Accept-Encoding"


def test_rfc9110_14_1_ranges_of_a_gz_only_file(server: Server, docroot: Path) -> None:
    encoded = (docroot / "README.txt.gz").read_bytes()
    got = fetch(server, "/README.txt", "Accept-Encoding: gzip", "Range: bytes=0-9")
    assert got.status == 206
    assert got.header("content-range") == f"bytes 0-9/{len(encoded)}"
    assert got.body == encoded[:10]
    # The decoded representation is made on the fly: Range is ignored.
    whole = fetch(server, "/README.txt", "Range: bytes=0-9")
    assert whole.status == 200 and whole.body == README


@pytest.mark.parametrize(
    ("path", "accept"),
    [("/only-br.js", "gzip"), ("/only-br.js", None), ("/only-zst.js", "gzip, br"),
     ("/only-zst.js", None)],
)
def test_rfc9110_15_5_7_br_or_zst_only_file_to_a_client_that_cannot_take_it_is_406(
    server: Server, path: str, accept: str | None
) -> None:
    fields = () if accept is None else (f"Accept-Encoding: {accept}",)
    got = fetch(server, path, *fields)
    assert got.status == 406
    assert got.header("vary") == "Accept-Encoding"
    assert b"406" in got.body


def test_br_and_zst_only_files_to_clients_that_take_them(server: Server, docroot: Path) -> None:
    got = fetch(server, "/only-zst.js", "Accept-Encoding: zstd")
    assert got.status == 200 and got.header("content-encoding") == "zstd"
    assert got.body == (docroot / "only-zst.js.zst").read_bytes()
    got = fetch(server, "/only-br.js", "Accept-Encoding: br")
    assert got.status == 200 and got.header("content-encoding") == "br"


def test_a_large_gz_only_file_is_decoded_while_it_is_sent(server: Server) -> None:
    head = fetch(server, "/big.log", method="HEAD")
    assert head.header("content-length") == str(len(BIG_TEXT))
    got = fetch(server, "/big.log")
    assert got.status == 200 and got.header("content-encoding") is None
    assert got.body == BIG_TEXT


def test_a_large_file_is_gzipped_off_the_loop_while_others_are_served(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
        slow.sendall(b"GET /big.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                     b"Connection: close\r\n\r\n")
        # Other clients are answered meanwhile (the two workers, and each one's loop).
        for _ in range(20):
            assert fetch(server, "/app.js").status == 200
        response = Response(read_until_closed(slow))
    assert response.status == 200 and response.header("content-encoding") == "gzip"
    assert gzip.decompress(response.body) == BIG_TEXT
    assert response.header("accept-ranges") == "none"


# -- broken .gz files ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "reason"),
    [("/bomb.txt", "bomb"), ("/truncated.txt", "truncated"), ("/not-gzip.txt", "not valid gzip")],
)
def test_a_broken_gz_only_file_is_refused_decoded_logged_and_the_worker_lives(
    server: Server, path: str, reason: str
) -> None:
    workers = sorted(server.workers())
    got = fetch(server, path)
    assert got.status == 500
    assert b"zeros" not in got.body and len(got.body) < 1000
    wait_for(lambda: reason in server.error_log and path[1:] in server.error_log,
             what=f"the {reason} logged")
    # As they are, for clients that take gzip (what nginx's gzip_static does too).
    assert fetch(server, path, "Accept-Encoding: gzip").status == 200
    assert fetch(server, "/app.js").status == 200
    assert sorted(server.workers()) == workers


def test_a_gzip_bomb_costs_no_worker_memory(server: Server) -> None:
    from tests.support import rss_bytes

    for _ in range(4):
        assert fetch(server, "/bomb.txt").status == 500
    for pid in server.workers():
        assert rss_bytes(pid) < 200 * MIB


# -- on-the-fly gzip ----------------------------------------------------------------------
def test_on_the_fly_gzip_for_a_listed_type(server: Server) -> None:
    identity = fetch(server, "/style.css")
    got = fetch(server, "/style.css", "Accept-Encoding: gzip, deflate")
    assert got.status == 200
    assert got.header("content-encoding") == "gzip"
    assert got.header("vary") == "Accept-Encoding"
    assert identity.header("vary") == "Accept-Encoding"
    assert gzip.decompress(got.body) == CSS
    assert int(got.header("content-length") or 0) < len(CSS) // 3
    tag, plain_tag = got.header("etag"), identity.header("etag")
    assert tag and plain_tag and tag != plain_tag
    assert tag.removeprefix("W/") != plain_tag.removeprefix("W/")
    assert fetch(server, "/style.css", "Accept-Encoding: gzip").body == got.body


def test_rfc9110_14_2_range_is_ignored_on_an_on_the_fly_response(server: Server) -> None:
    got = fetch(server, "/style.css", "Accept-Encoding: gzip", "Range: bytes=0-99")
    assert got.status == 200 and gzip.decompress(got.body) == CSS
    assert got.header("content-range") is None
    plain = fetch(server, "/style.css", "Range: bytes=0-99")
    assert plain.status == 206 and plain.body == CSS[:100]


def test_rfc9110_8_8_3_2_if_none_match_tells_gzip_from_identity(server: Server) -> None:
    tag = fetch(server, "/style.css", "Accept-Encoding: gzip").header("etag")
    assert fetch(server, "/style.css", "Accept-Encoding: gzip",
                 f"If-None-Match: {tag}").status == 304
    assert fetch(server, "/style.css", f"If-None-Match: {tag}").status == 200
    assert fetch(server, "/style.css", f"If-None-Match: W/{tag}").status == 200


def test_head_of_an_on_the_fly_response_says_what_get_sends(server: Server) -> None:
    got = fetch(server, "/style.css", "Accept-Encoding: gzip")
    head = fetch(server, "/style.css", "Accept-Encoding: gzip", method="HEAD")
    assert head.status == 200 and head.body == b""
    for name in ("content-length", "content-encoding", "etag", "vary"):
        assert head.header(name) == got.header(name), name


@pytest.mark.parametrize("path", ["/tiny.css", "/photo.png", "/plain.bin"])
def test_small_files_and_unlisted_types_are_not_compressed(server: Server, path: str) -> None:
    got = fetch(server, path, "Accept-Encoding: gzip")
    assert got.status == 200 and got.header("content-encoding") is None


def test_a_fresh_gz_variant_wins_over_compressing(server: Server, docroot: Path) -> None:
    got = fetch(server, "/app.js", "Accept-Encoding: gzip")
    assert got.body == (docroot / "app.js.gz").read_bytes()


def test_a_rewritten_file_is_compressed_again_never_stale(server: Server, docroot: Path) -> None:
    path = docroot / "changing.css"
    path.write_bytes(CSS)
    assert gzip.decompress(fetch(server, "/changing.css", "Accept-Encoding: gzip").body) == CSS
    new = CSS.replace(b"color", b"colour")
    replacement = docroot / "changing.css.tmp"
    replacement.write_bytes(new)
    os.rename(replacement, path)
    wait_for(lambda: gzip.decompress(
        fetch(server, "/changing.css", "Accept-Encoding: gzip").body) == new,
        what="the new version compressed")


@pytest.mark.parametrize(
    ("path", "accept", "coding"),
    [("/style.css", None, None), ("/app.js", None, None), ("/README.txt", None, None)],
)
def test_curl_compressed_decodes_every_representation(
    server: Server, tmp_path: Path, docroot: Path, path: str, accept: str | None,
    coding: str | None,
) -> None:
    expected = {"/style.css": CSS, "/app.js": SCRIPT, "/README.txt": README}[path]
    status, headers, body = curl(server, tmp_path, path, "--compressed")
    assert status == 200 and body == expected
    assert headers.get("content-encoding") in ("br", "zstd", "gzip")


# -- Accept-Encoding oddities -------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "accept", "status", "coding"),
    [
        ("/plain.bin", "identity;q=0", 406, None),
        ("/plain.bin", "*;q=0", 406, None),
        ("/plain.bin", "*;q=0, identity", 200, None),
        ("/style.css", "identity;q=0", 406, None),  # gzip not named: not acceptable
        ("/style.css", "gzip, identity;q=0", 200, "gzip"),
        ("/style.css", "gzip;q=0, identity;q=0", 406, None),
        ("/style.css", "gzip, gzip;q=0", 200, None),  # a refusal anywhere refuses
        ("/style.css", "gzip;q=1.0001", 200, None),  # malformed: skipped
        ("/style.css", "GZIP ; Q=0.5", 200, "gzip"),
        ("/style.css", "x-gzip", 200, "gzip"),
        ("/style.css", "*", 200, "gzip"),
        ("/app.js", "*", 200, "br"),
        ("/app.js", ",,, ;;; ,q=1, =", 200, None),
        ("/app.js", "zstd;q=0.5, zstd", 200, "zstd"),
    ],
)
def test_rfc9110_12_5_3_accept_encoding_oddities(
    server: Server, path: str, accept: str, status: int, coding: str | None
) -> None:
    got = fetch(server, path, f"Accept-Encoding: {accept}")
    assert got.status == status
    assert got.header("content-encoding") == coding
    if status == 406:
        assert got.header("vary") == "Accept-Encoding"


def test_repeated_accept_encoding_fields_are_one_list(server: Server) -> None:
    got = fetch(server, "/app.js", "Accept-Encoding: gzip;q=0.5", "Accept-Encoding: zstd")
    assert got.header("content-encoding") == "zstd"


# -- etag: content ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def content_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("etag-content") / "www"
    root.mkdir()
    settings = {"docroot": str(root), "workers": 2, "etag": "content",
                "compress": {"gzip": True}}
    (root / "index.html").write_bytes(b"<p>hello</p>\n")
    with running(tmp_path_factory.mktemp("etag-content-server"), settings) as started:
        yield started, root


def redeploy(root: Path, name: str, data: bytes, mtime_seconds: int) -> None:
    """Write a new file and rename it over the old one, as deploy tools do."""
    staged = root / f".{name}.new"
    staged.write_bytes(data)
    os.utime(staged, (mtime_seconds, mtime_seconds))
    os.rename(staged, root / name)


@pytest.mark.parametrize("size", [5_000, 3 * MIB])  # hashed inline, and off the loop
def test_etag_content_survives_a_redeploy_with_new_mtimes(
    content_server: tuple[Server, Path], size: int
) -> None:
    server, root = content_server
    data = os.urandom(size)
    name = f"bundle-{size}.js"
    redeploy(root, name, data, 1)  # Nix: mtime 1
    first = fetch(server, "/" + name)
    tag = first.header("etag")
    assert first.status == 200 and first.body == data and tag
    assert not tag.startswith("W/")
    redeploy(root, name, data, 1_700_000_000)  # same bytes, new inode and mtime
    wait_for(lambda: fetch(server, "/" + name).header("last-modified") !=
             first.header("last-modified"), what="the redeployed file served")
    assert fetch(server, "/" + name).header("etag") == tag
    assert fetch(server, "/" + name, f"If-None-Match: {tag}").status == 304
    redeploy(root, name, data[::-1], 1_700_000_000)
    wait_for(lambda: fetch(server, "/" + name).header("etag") != tag, what="a new tag")
    assert fetch(server, "/" + name, f"If-None-Match: {tag}").status == 200


def test_etag_content_with_gzip_on_the_fly_differs_by_representation(
    content_server: tuple[Server, Path],
) -> None:
    server, root = content_server
    (root / "style.css").write_bytes(CSS)
    plain = fetch(server, "/style.css").header("etag")
    coded = fetch(server, "/style.css", "Accept-Encoding: gzip").header("etag")
    assert plain and coded and plain != coded
    assert fetch(server, "/style.css", f"If-None-Match: {plain}").status == 304
    assert fetch(server, "/style.css", "Accept-Encoding: gzip",
                 f"If-None-Match: {plain}").status == 200
