"""Results computed once per file version, off the event loop: the per-worker hub.

Owns the three memos (compressed bodies, content tags, decoded ``.gz`` lengths), the
jobs in flight (one per key, however many requests wait for it) and the choice of
running a job inline (small inputs) or on the pool. Must not know about sockets,
connections or plans: the static site asks, and gets either the result or a
``Waiting``; the worker parks the request on it and plans it again when it fires.

Why "plan again" rather than hand the result to the waiter: the result is stored
before any waiter resumes (every result fits its memo: ``MAX_INPUT_BYTES`` is half
the body cache), so the second plan finds it like any later request, re-checks the
file as every plan does, and the static site keeps one code path.

The pool is whatever ``Submit`` the worker hands in (``forkserver.offload.Offload``
's ``submit``); None runs every job inline (tests, and a site without a pool).
A job the pool refuses (full) is not queued anywhere: the caller degrades (gzip →
the file as it is) or answers 503, so a flood costs bounded memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from forkserver.encoding.etags import ContentTags, hash_file
from forkserver.encoding.gunzip import MAX_DECODED_BYTES, Decoded, measure
from forkserver.encoding.gzipcache import (
    CACHE_BYTES,
    CACHE_ENTRIES,
    MAX_INPUT_BYTES,
    CompressedBody,
    FileIdentity,
    GzipCache,
    compress_file,
)
from forkserver.encoding.lru import Memo

__all__ = [
    "DECODED_BYTES",
    "INLINE_GZIP_BYTES",
    "INLINE_HASH_BYTES",
    "Busy",
    "Cancellable",
    "Failed",
    "Outcome",
    "Preparations",
    "Submit",
    "Waiting",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# Inputs up to these sizes are handled on the loop's own turn: it costs less than the
# hand-off to a thread and back (an eventfd write, an epoll wake-up, a second plan),
# and the stall is a fraction of a millisecond (measured here: BLAKE2b of 256 KiB
# ~0.3 ms; gzip level 6 of 16 KiB of CSS ~0.07 ms, of 64 KiB ~0.35 ms).
INLINE_HASH_BYTES = 256 * 1024
INLINE_GZIP_BYTES = 16 * 1024
# Decoded .gz bodies kept per worker (measured lengths of larger ones cost ~200 bytes).
DECODED_BYTES = 4 * 1024 * 1024
DECODED_ENTRIES = 1024
FAILED_ENTRIES = 256


class Outcome(Protocol[T_co]):
    """What the pool hands a callback: ``value``, or the ``error`` the work raised."""

    @property
    def value(self) -> T_co | None: ...

    @property
    def error(self) -> Exception | None: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Submit(Protocol):
    """``Offload.submit``: run ``work`` off the loop, call ``callback`` on it; None
    when the pool is full."""

    def __call__(
        self, work: Callable[[], T], callback: Callable[[Outcome[T]], None]
    ) -> Cancellable | None: ...


class Busy:
    """The pool is full: nothing was started (the caller degrades or answers 503)."""

    __slots__ = ()


class Failed:
    """The job ran and failed (an I/O error): the caller answers 500."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


BUSY = Busy()


class _Parked:
    """One waiter: ``cancel()`` when its connection goes away."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback

    def cancel(self) -> None:
        self.callback = None


class Waiting:
    """A job in flight; ``park(resume)`` calls ``resume()`` on the loop when it ends."""

    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: list[_Parked] = []

    def park(self, resume: Callable[[], None]) -> Cancellable:
        parked = _Parked(resume)
        self._parked.append(parked)
        return parked

    def release(self) -> None:
        """The result is stored (or the failure): resume every waiter still there."""
        parked, self._parked = self._parked, []
        for entry in parked:
            callback = entry.callback
            if callback is not None:
                entry.callback = None
                callback()


class _Job(Generic[T]):
    """A job's outcome → its memo; then its waiters resume."""

    __slots__ = ("hub", "key", "store", "waiting")

    def __init__(
        self, hub: Preparations, key: Hashable, store: Callable[[T], None]
    ) -> None:
        self.hub = hub
        self.key = key
        self.store = store
        self.waiting = Waiting()

    def finish(self, outcome: Outcome[T]) -> None:
        hub = self.hub
        hub._in_flight.pop(self.key, None)
        error = outcome.error
        if error is not None:
            reason = error.strerror if isinstance(error, OSError) else None
            hub._failed.put(self.key, reason or str(error) or type(error).__name__)
        elif outcome.value is not None:  # None: the pool dropped it unrun; plans retry
            self.store(outcome.value)
        self.waiting.release()


class _Inline(Generic[T]):
    """An outcome made on the spot, for jobs run inline."""

    __slots__ = ("error", "value")

    def __init__(self, value: T | None, error: Exception | None = None) -> None:
        self.value = value
        self.error = error


class Preparations:
    """Per worker: compressed bodies, content tags and decoded lengths, made once."""

    def __init__(
        self, submit: Submit | None = None, *, gzip_bytes: int = CACHE_BYTES,
        gzip_entries: int = CACHE_ENTRIES, max_decoded: int = MAX_DECODED_BYTES,
    ) -> None:
        self._submit = submit
        self.bodies = GzipCache(gzip_bytes, gzip_entries)
        self.tags = ContentTags()
        self.decoded: Memo[FileIdentity, Decoded] = Memo(DECODED_ENTRIES, DECODED_BYTES)
        self.max_decoded = max_decoded
        self.max_gzip_input = min(MAX_INPUT_BYTES, gzip_bytes // 2)
        self._in_flight: dict[Hashable, _Job[object]] = {}
        # Keys whose job raised (an I/O error): answered 500 until the file changes
        # (a new version is a new key), so a failing read is not retried per request.
        self._failed: Memo[Hashable, str] = Memo(FAILED_ENTRIES, 0)

    def attach(self, submit: Submit) -> None:
        """Run jobs on ``submit``'s pool from now on (what is remembered stays)."""
        self._submit = submit

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def content_tag(self, fd: int, identity: FileIdentity) -> str | Waiting | Busy | Failed:
        """The content ETag of this version of the open file ``fd`` (not consumed)."""
        tag = self.tags.get(identity)
        if tag is not None:
            return tag
        return self._start(
            ("tag", identity), lambda dup: hash_file(dup, identity), fd,
            identity.size <= INLINE_HASH_BYTES,
            lambda tag: self.tags.put(identity, tag),
        )

    def gzip_body(
        self, fd: int, identity: FileIdentity, level: int
    ) -> bytes | Waiting | Busy | Failed | None:
        """The gzip body of this version; None when the file is too large to compress."""
        if identity.size > self.max_gzip_input:
            return None
        body = self.bodies.get(identity, level)
        if body is not None:
            return body
        made = self._start(
            ("gzip", identity, level), lambda dup: compress_file(dup, identity, level), fd,
            identity.size <= INLINE_GZIP_BYTES, self._store_body,
        )
        return made.body if isinstance(made, CompressedBody) else made

    def decode(self, fd: int, identity: FileIdentity) -> Decoded | Waiting | Busy | Failed:
        """What decoding this version of a ``.gz`` gives (its length, its bytes if few,
        or why it cannot be served decoded)."""
        decoded = self.decoded.get(identity)
        if decoded is not None:
            return decoded
        return self._start(
            ("gunzip", identity),
            lambda dup: measure(dup, identity, max_decoded=self.max_decoded),
            fd, False, self._store_decoded,
        )

    def _store_body(self, result: CompressedBody) -> None:
        self.bodies.put(result)

    def _store_decoded(self, result: Decoded) -> None:
        size = len(result.body) if result.body is not None else 0
        if not self.decoded.put(result.source, result, size):
            # Only if KEEP_BYTES were ever above DECODED_BYTES: keep the length alone.
            self.decoded.put(result.source, Decoded(result.source, result.size, None,
                                                    result.problem))

    def _start(
        self, key: Hashable, work: Callable[[int], T], fd: int, inline: bool,
        store: Callable[[T], None],
    ) -> T | Waiting | Busy | Failed:
        reason = self._failed.get(key)
        if reason is not None:
            return Failed(reason)
        running = self._in_flight.get(key)
        if running is not None:
            return running.waiting
        dup = os.dup(fd)  # the job's own: the plan closes ``fd`` when it is done
        job: _Job[T] = _Job(self, key, store)
        if inline or self._submit is None:
            try:
                value = work(dup)
            except OSError as error:
                job.finish(_Inline(None, error))
                return Failed(error.strerror or str(error))
            store(value)
            return value
        ticket = self._submit(lambda: work(dup), job.finish)
        if ticket is None:
            os.close(dup)
            return BUSY
        self._in_flight[key] = job  # type: ignore[assignment]
        return job.waiting
