"""Precompressed-only files for clients without gzip: ``X.gz`` decoded, bounded.

Owns reading a gzip file (RFC 1952, members in sequence) as decoded bytes in bounded
slices, measuring its decoded length once, and every way such a file can be wrong:
not gzip at all, truncated, trailing garbage, or a bomb that would decode to
gigabytes. Must not decide when decoding is wanted (the static site does) or send
anything.

Framing (the choice, and why): every response here carries a Content-Length (SPEC
§5), HEAD must say what GET would send, and a close-delimited body would cost the
connection. So the decoded length is learned first: ``measure`` decodes the whole
file once, on a pool thread (zlib's inflate releases the GIL), counting bytes and
keeping them when they are few, and the result is remembered per file version. Then:

* decoded ≤ ``KEEP_BYTES``: the bytes themselves are kept and sent from memory;
* larger: ``GunzipStream`` decodes again while sending, in slices of at most
  ``SLICE_BYTES`` out and ``INPUT_BUDGET`` in per call, against the measured length;
* not decodable, or more than ``max_decoded`` bytes: never served decoded (the
  static site answers 500 and logs the reason once per version). A client that
  accepts gzip still gets the file as it is.

Memory is bounded whatever the file: one input chunk, one output slice and zlib's
32 KiB window. A mismatch found while streaming (the file was rewritten in place
after it was measured) cuts the response: the caller closes the connection and logs
it, so a body never disagrees with its Content-Length unnoticed.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from forkserver.encoding.gzipcache import FileIdentity

__all__ = [
    "INPUT_CHUNK",
    "KEEP_BYTES",
    "MAX_DECODED_BYTES",
    "SLICE_BYTES",
    "Decoded",
    "GunzipError",
    "GunzipStream",
    "measure",
]

# Decoded bytes beyond this make the file "a bomb" for this server: not served
# decoded. 256 MiB takes about a quarter of a second of one pool thread to measure,
# once per file version; gzip's ratio is at most ~1032:1, so a legitimate file this
# large decoded is at least 250 KiB compressed. Real precompressed assets are far
# smaller; a file that decodes beyond it belongs uncompressed on disk.
MAX_DECODED_BYTES = 256 * 1024 * 1024
# Decoded bodies up to this are kept in memory (the compressed-body cache holds them).
KEEP_BYTES = 1024 * 1024
INPUT_CHUNK = 64 * 1024  # compressed bytes read per pread
SLICE_BYTES = 256 * 1024  # decoded bytes per call of GunzipStream.read
# Compressed bytes consumed per read() call at most, so that a file of empty members
# or empty stored blocks (much input, no output) cannot hold one call for long.
INPUT_BUDGET = 4 * INPUT_CHUNK
GZIP_WBITS = 31  # zlib: gzip header and trailer (16) + 32 KiB window (15)


class GunzipError(Exception):
    """The file cannot be served decoded; ``reason`` says why, for the error log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Decoded:
    """What measuring one ``.gz`` version found.

    ``problem`` is None when the file decodes cleanly to ``size`` bytes; ``body``
    holds them when ``size`` ≤ the ``keep`` limit it was measured with.
    """

    source: FileIdentity
    size: int
    body: bytes | None
    problem: str | None = None


class GunzipStream:
    """The decoded bytes of a gzip file, read in bounded slices from a descriptor.

    Does not own ``fd``. ``expected`` (the measured length, if known) makes a stream
    that would end early or run long an error at the first byte that shows it.
    """

    __slots__ = (
        "_decompressor", "_fd", "_input_size", "_offset", "_tail", "done", "expected",
        "max_decoded", "produced",
    )

    def __init__(
        self, fd: int, input_size: int, *, max_decoded: int = MAX_DECODED_BYTES,
        expected: int | None = None,
    ) -> None:
        self._fd = fd
        self._input_size = input_size
        self._offset = 0  # compressed bytes read so far
        self._tail = b""  # compressed bytes read but not yet fed to inflate
        self._decompressor = zlib.decompressobj(GZIP_WBITS)
        self.max_decoded = max_decoded if expected is None else min(max_decoded, expected)
        self.expected = expected
        self.produced = 0
        self.done = False

    def read(self, limit: int = SLICE_BYTES) -> bytes:
        """Up to ``limit`` decoded bytes; may be b"" before the end (see ``done``).

        Raises GunzipError for anything that is not one whole, sane gzip file.
        """
        out: list[bytes] = []
        produced = 0
        consumed = 0
        while produced < limit and not self.done and consumed < INPUT_BUDGET:
            data = self._tail
            if not data:
                data = self._next_input()
                consumed += len(data)
            try:
                piece = self._decompressor.decompress(data, limit - produced)
            except zlib.error as error:
                raise GunzipError(f"not valid gzip at byte {self._offset}: {error}") from None
            self._tail = self._decompressor.unconsumed_tail
            if piece:
                out.append(piece)
                produced += len(piece)
                if self.produced + produced > self.max_decoded:
                    raise GunzipError(self._too_long())
            if self._decompressor.eof:
                self._end_of_member()
        self.produced += produced
        if self.done and self.expected is not None and self.produced != self.expected:
            raise GunzipError(
                f"decodes to {self.produced} bytes now, {self.expected} when measured"
            )
        return b"".join(out)

    def _next_input(self) -> bytes:
        if self._offset >= self._input_size:
            raise GunzipError(f"truncated: the gzip stream ends without its trailer "
                              f"after {self._input_size} bytes")
        data = os.pread(self._fd, min(INPUT_CHUNK, self._input_size - self._offset),
                        self._offset)
        if not data:
            raise GunzipError(f"truncated: the file shrank to {self._offset} bytes")
        self._offset += len(data)
        return data

    def _end_of_member(self) -> None:
        """One gzip member ended: the file ends here, or another member follows
        (RFC 1952 §2.2: a gzip file is a series of members)."""
        rest = self._decompressor.unused_data
        if not rest and self._offset >= self._input_size:
            self.done = True
            return
        self._decompressor = zlib.decompressobj(GZIP_WBITS)
        self._tail = rest  # anything but a new member's header fails in decompress()

    def _too_long(self) -> str:
        if self.expected is not None and self.max_decoded == self.expected:
            return f"decodes to more than the {self.expected} bytes measured"
        return f"decodes to more than {self.max_decoded} bytes (a gzip bomb?)"


def measure(
    fd: int, identity: FileIdentity, *, max_decoded: int = MAX_DECODED_BYTES,
    keep: int = KEEP_BYTES,
) -> Decoded:
    """Decode the version ``identity`` of a gzip file once: runs on a pool thread.

    Never raises for bad content: the problem is in the result, so it is remembered
    and not measured again. Memory: ``keep`` bytes plus one slice. The caller hands
    over ``fd`` (a dup of its own) and this closes it.
    """
    try:
        stream = GunzipStream(fd, identity.size, max_decoded=max_decoded)
        kept: list[bytes] | None = []
        while not stream.done:
            piece = stream.read(SLICE_BYTES)
            if kept is not None:
                if stream.produced <= keep:
                    kept.append(piece)
                else:
                    kept = None  # too large to keep: count only
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (identity.size, identity.mtime_ns):
            return Decoded(identity, 0, None, "the file changed while it was decoded")
        body = b"".join(kept) if kept is not None else None
        return Decoded(identity, stream.produced, body)
    except GunzipError as error:
        return Decoded(identity, 0, None, error.reason)
    except OSError as error:
        return Decoded(identity, 0, None, f"cannot be read: {error.strerror}")
    finally:
        os.close(fd)
