"""encoding/etags.py: strong tags from the bytes, stable across redeploys; tags of
encoded representations differ even under weak comparison."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from forkserver.encoding.etags import (
    HASH_CHUNK,
    ContentTags,
    coded_tag,
    hash_bytes,
    hash_file,
)
from forkserver.encoding.gzipcache import FileChanged, FileIdentity, file_identity

ETAGC = set(range(0x21, 0x7F)) - {0x22}  # RFC 9110 §8.8.3 etagc, ASCII part


def tag_of(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    return hash_file(fd, file_identity(os.fstat(fd)))


def test_rfc9110_8_8_3_content_tag_is_a_strong_entity_tag(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"hello\n")
    tag = tag_of(path)
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    assert all(ord(c) in ETAGC for c in tag[1:-1])
    assert tag == hash_bytes(b"hello\n")
    expected = hashlib.blake2b(b"hello\n", digest_size=16).hexdigest()
    assert tag == f'"{expected}"'


def test_identical_content_redeployed_keeps_its_tag(tmp_path: Path) -> None:
    first = tmp_path / "release-1" / "app.js"
    second = tmp_path / "release-2" / "app.js"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"console.log(1);\n" * 100)
    os.utime(first, ns=(1, 1))  # Nix sets mtime 1
    os.utime(second, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    assert file_identity(os.stat(first)) != file_identity(os.stat(second))
    assert tag_of(first) == tag_of(second)
    second.write_bytes(b"console.log(2);\n" * 100)
    assert tag_of(first) != tag_of(second)


def test_a_file_larger_than_one_chunk_is_hashed_whole(tmp_path: Path) -> None:
    data = os.urandom(HASH_CHUNK * 2 + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert tag_of(path) == hash_bytes(data)


def test_a_file_truncated_while_hashed_gets_no_tag(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 5000)
    fd = os.open(path, os.O_RDONLY)
    identity = file_identity(os.fstat(fd))
    os.truncate(path, 10)
    with pytest.raises(FileChanged):
        hash_file(fd, identity)


def test_rfc9110_8_8_3_2_gzip_tag_differs_from_identity_even_weakly() -> None:
    tag = hash_bytes(b"body")
    gz = coded_tag(tag, "gzip6")
    assert gz != tag and gz.startswith('"') and gz.endswith('"')
    # Weak comparison ignores W/ only: the opaque parts must differ.
    assert gz.removeprefix("W/") != tag.removeprefix("W/")
    assert coded_tag(tag, "gzip9") != gz  # another level, other bytes
    assert coded_tag(tag, "gunzip") not in (tag, gz)
    assert coded_tag('"ab-1-2"', "gzip6") == '"ab-1-2-gzip6"'
    assert coded_tag('W/"x"', "gzip6") == 'W/"x-gzip6"'


def test_content_tags_are_remembered_per_version_and_bounded() -> None:
    tags = ContentTags(max_entries=2)
    a, b, c = (FileIdentity(1, inode, 10, 5) for inode in (1, 2, 3))
    tags.put(a, '"a"')
    tags.put(b, '"b"')
    assert tags.get(a) == '"a"'
    tags.put(c, '"c"')
    assert tags.get(b) is None and tags.get(a) == '"a"' and len(tags) == 2
