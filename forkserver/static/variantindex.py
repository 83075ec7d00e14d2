"""Which directories hold precompressed siblings: one listing per directory per window.

Owns a worker's memory of the ``.br``/``.zst``/``.gz`` names in each directory it
served from, so that a file with no variant (most files) costs no probe at all: before,
every request made one failing ``faccessat`` per suffix. A directory is listed again
once its entry is CACHE_RECHECK_SECONDS old, the same window as the open-file cache,
so a variant added (or removed) beside a file is seen within a second. Bounded:
INDEX_DIRECTORIES entries (oldest listing dropped first), INDEX_NAMES variant names in
all; a directory that cannot be listed, has more than LISTING_LIMIT entries or more
variant names than fit is remembered as "unknown", and its files are probed as before.
Must not open anything itself (the docroot lists through its contained walk) nor
decide whether a variant is fresh or inside: a name in the index only means "probe".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from forkserver.static.filecache import CACHE_RECHECK_SECONDS

__all__ = [
    "INDEXED_SUFFIXES",
    "INDEX_DIRECTORIES",
    "INDEX_NAMES",
    "LISTING_LIMIT",
    "VariantIndex",
]

INDEXED_SUFFIXES = (".br", ".zst", ".gz")
INDEX_DIRECTORIES = 1024  # a worker's directories remembered at once
INDEX_NAMES = 16_384  # variant names remembered in all (~1 MiB at most)
LISTING_LIMIT = 16_384  # a larger directory is not listed every second: probe its files

# (monotonic time the listing goes stale, its variant names or None for "unknown")
_Entry = tuple[float, frozenset[str] | None]


class VariantIndex:
    """Variant names per directory (its names from the docroot, "/"-joined)."""

    __slots__ = ("_entries", "_list", "_monotonic", "names")

    def __init__(
        self, list_names: Callable[[list[str]], list[str] | None],
        monotonic: Callable[[], float],
    ) -> None:
        self._list = list_names
        self._monotonic = monotonic
        # Oldest listing first; an OrderedDict because evicting the oldest of a dict
        # walks past the dummies its deletions left (static/filecache.py).
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.names = 0  # variant names held

    def may_exist(self, names: list[str], variant: str) -> bool:
        """False when ``variant`` (a name beside the file ``names``) was not in its
        directory at the last listing; True means "probe it"."""
        if not variant.endswith(INDEXED_SUFFIXES):
            return True
        known = self.known(names)
        return known is None or variant in known

    def known(self, names: list[str]) -> frozenset[str] | None:
        """The variant names beside the file ``names`` at the last listing (None:
        unknown, probe each): one lookup for all of a file's suffixes."""
        key = "/".join(names[:-1])
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._monotonic():
            entry = self._refresh(key, names[:-1])
        return entry[1]

    def _refresh(self, key: str, directory: list[str]) -> _Entry:
        self.forget(key)
        listed = self._list(directory)
        known: frozenset[str] | None = None
        if listed is not None and len(listed) <= LISTING_LIMIT:
            known = frozenset(name for name in listed if name.endswith(INDEXED_SUFFIXES))
            if len(known) > INDEX_NAMES // 4:
                known = None  # one directory must not take the whole budget
        count = len(known) if known else 0
        entries = self._entries
        while entries and (
            len(entries) >= INDEX_DIRECTORIES or self.names + count > INDEX_NAMES
        ):
            self.forget(next(iter(entries)))  # the oldest listing
        entry = (self._monotonic() + CACHE_RECHECK_SECONDS, known)
        entries[key] = entry
        self.names += count
        return entry

    def forget(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry[1]:
            self.names -= len(entry[1])

    def __len__(self) -> int:
        return len(self._entries)
