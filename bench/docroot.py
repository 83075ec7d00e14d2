"""The files every server serves: random content of fixed sizes in a temporary docroot.

Owns their names, sizes and sha256 digests (the byte-exact check compares against
these). Random content keeps compression and deduplication from flattering anyone.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
# Random bytes are generated in chunks so the 10 MiB file never needs two copies in memory.
WRITE_CHUNK_BYTES = MIB


@dataclass(frozen=True)
class ServedFile:
    name: str
    size: int
    sha256: str

    @property
    def url_path(self) -> str:
        return "/" + self.name


SMALL_FILE = "1k.bin"
MEDIUM_FILE = "64k.bin"
LARGE_FILE = "10m.bin"
FILE_SIZES = {SMALL_FILE: KIB, MEDIUM_FILE: 64 * KIB, LARGE_FILE: 10 * MIB}


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their sha256 hex digest."""
    digest = hashlib.sha256()
    with path.open("wb") as output:
        remaining = size
        while remaining > 0:
            chunk = os.urandom(min(WRITE_CHUNK_BYTES, remaining))
            digest.update(chunk)
            output.write(chunk)
            remaining -= len(chunk)
    path.chmod(0o644)  # nginx workers run as nobody and must read it
    return digest.hexdigest()


def build_docroot(directory: Path) -> dict[str, ServedFile]:
    """Create ``directory`` with the benchmark files; return them by name."""
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    return {
        name: ServedFile(name, size, write_random_file(directory / name, size))
        for name, size in FILE_SIZES.items()
    }
