"""A least-recently-used memo bounded in entries and in bytes.

Owns eviction order and the two bounds; must not know what it stores or compute
anything (the callers store finished results: compressed bodies, content tags,
decoded sizes). Used on one thread only (the worker's loop), so no locking.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """``key → value`` with a size per value; the least recently used go first.

    ``max_entries`` bounds the dict (each entry costs ~200 bytes of Python objects
    besides its value); ``max_bytes`` bounds the sum of the sizes the caller gives.
    A value larger than ``max_bytes`` on its own is not kept at all, so one huge
    result cannot flush every small hot one.
    """

    __slots__ = ("_entries", "_sizes", "max_bytes", "max_entries", "size")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 0:
            raise ValueError("a Memo needs room for one entry")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # Insertion order is recency order: a hit moves the key to the end. An
        # OrderedDict: evicting the oldest of a plain dict walks past the dummies its
        # deletions left (static/filecache.py).
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}
        self.size = 0  # sum of the sizes of the values held

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or None."""
        entries = self._entries
        value = entries.get(key)
        if value is None:
            return None
        entries.move_to_end(key)  # most recently used
        return value

    def put(self, key: K, value: V, size: int = 0) -> bool:
        """Keep ``value``; evict the least recently used to make room.

        Returns False (and keeps nothing) when ``size`` alone exceeds ``max_bytes``.
        """
        self.discard(key)
        if size > self.max_bytes:
            return False
        entries, sizes = self._entries, self._sizes
        while entries and (
            len(entries) >= self.max_entries or self.size + size > self.max_bytes
        ):
            oldest, _ = entries.popitem(last=False)
            self.size -= sizes.pop(oldest)
        entries[key] = value
        sizes[key] = size
        self.size += size
        return True

    def discard(self, key: K) -> None:
        if self._entries.pop(key, None) is not None:
            self.size -= self._sizes.pop(key)

    def clear(self) -> None:
        self._entries.clear()
        self._sizes.clear()
        self.size = 0
