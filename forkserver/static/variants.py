"""The vocabulary of representations: variant suffixes, the chosen one, decoded bodies.

Owns what a chosen representation of a file is (``Representation``: the file, a
precompressed variant, gzip made on the fly, or a ``.gz`` decoded), the suffix of each
precompressed variant, and ``DecodedBody`` (a ``.gz`` decoded while it is sent).
Must not choose (``coding.py`` does), open files, or build a response.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from forkserver.encoding import BR, GZIP, ZSTD, GunzipStream
from forkserver.http.response import BodyStream, FileBody

__all__ = ["VARIANT_SUFFIXES", "DecodedBody", "Representation"]

# Suffix of each precompressed variant (preference at equal q is negotiation's).
VARIANT_SUFFIXES = {BR: ".br", ZSTD: ".zst", GZIP: ".gz"}


class DecodedBody:
    """A ``.gz`` decoded while it is sent, in slices (a body too large to keep).

    The worker calls ``read()`` until ``done``; ``GunzipError`` means the file no
    longer decodes to the length in the head (rewritten since it was measured): the
    response is cut and logged. Owns ``fd`` until ``close()``.
    """

    __slots__ = ("_stream", "fd")

    def __init__(self, fd: int, input_size: int, length: int) -> None:
        self.fd = fd
        self._stream = GunzipStream(fd, input_size, expected=length)

    @property
    def done(self) -> bool:
        return self._stream.done

    def read(self) -> bytes:
        return self._stream.read()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(slots=True)
class Representation:
    """The chosen representation of a file.

    ``fd`` is the file to send, or -1 when ``body`` (in memory) or ``stream`` holds
    the content; ``st`` is the file the validators come from (the variant's own for
    a variant); ``length`` the Content-Length; ``ranges`` is False for content made
    per file version (gzip on the fly, a ``.gz`` decoded): Range is ignored on those.
    """

    fd: int
    st: os.stat_result
    encoding: str | None  # "br", "zstd", "gzip" or None
    has_variants: bool  # the response varies by Accept-Encoding
    tag: str
    length: int
    body: bytes | None = None
    stream: DecodedBody | None = None
    ranges: bool = True

    def content(self, head: bool) -> tuple[bytes, list[bytes | FileBody | BodyStream] | None]:
        """(in-memory body, segments after it) of a representation with ``fd`` -1;
        for HEAD, none (and the stream's descriptor is closed)."""
        if self.stream is not None:
            if head:
                self.stream.close()
                return b"", None
            return b"", [self.stream]
        return b"" if head else self.body or b"", None
