"""Hash a request body in one background thread, overlapping with the store's work.

MD5 (the ETag) costs ~1.4 ms per MiB and is the S3 PUT bottleneck (DESIGN.md §4); hashlib
releases the GIL, so one dedicated thread fed through a bounded queue hashes while the event
loop keeps receiving, erasure-coding and writing. One thread per body, not one
``to_thread`` hop per chunk: a hop costs ~60 us and would serialise the work anyway.

Usage::

    hasher = HashThread(["MD5", "CRC32"])
    try:
        async for chunk in body:
            await hasher.feed(chunk)      # blocks only while the queue is full
            ...
        digests = await hasher.finish()   # {"MD5": b"...", "CRC32": b"..."}
    finally:
        hasher.close()                    # idempotent; stops the thread on errors
"""

from __future__ import annotations

import queue
import threading

import trio

from .checksums import MultiHasher

INLINE_LIMIT = 256 * 1024
"""Bodies known to be at most this long are hashed on the event loop (:class:`InlineHasher`):
starting a thread (~100 us) costs more than hashing them (~0.35 ms for MD5 of 256 KiB)."""
QUEUE_DEPTH = 8
"""Chunks waiting for the hasher (with ~1 MiB chunks: at most ~8 MiB buffered per request)."""

_STOP = object()


class HashThread:
    """Feeds every chunk to the hashers of ``algorithms`` (names as in appliance.s3.checksums,
    e.g. ``MD5``, ``SHA256``, ``CRC32``) in a dedicated daemon thread."""

    def __init__(self, algorithms):
        self.hashers = MultiHasher(algorithms)
        self._q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._done = threading.Event()
        self._aborted = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="s3-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        update = self.hashers.update
        try:
            while True:
                try:
                    item = self._q.get(timeout=1.0)
                except queue.Empty:
                    if self._aborted:
                        return
                    continue
                if item is _STOP:
                    return
                if not self._aborted and self._error is None:
                    try:
                        update(item)
                    except BaseException as e:  # noqa: BLE001 - reported by finish()
                        self._error = e
        finally:
            self._done.set()

    async def feed(self, chunk: bytes) -> None:
        """Queue ``chunk`` (it must not be mutated afterwards). Waits, off the event loop,
        only while QUEUE_DEPTH chunks are already waiting."""
        try:
            self._q.put_nowait(chunk)
        except queue.Full:
            await trio.to_thread.run_sync(self._q.put, chunk)

    async def finish(self) -> dict[str, bytes]:
        """Wait until everything fed is hashed; returns algorithm -> raw digest."""
        await self.feed(_STOP)
        await trio.to_thread.run_sync(self._done.wait)
        self._closed = True
        if self._error is not None:
            raise self._error
        return self.hashers.digests()

    def close(self) -> None:
        """Stop the thread without waiting (after an error). Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._aborted = True
        try:
            self._q.put_nowait(_STOP)
        except queue.Full:
            pass  # the thread drains the queue without hashing and exits on its own


class InlineHasher:
    """Same interface as :class:`HashThread`, hashing on the caller's thread (small bodies)."""

    def __init__(self, algorithms):
        self.hashers = MultiHasher(algorithms)

    async def feed(self, chunk: bytes) -> None:
        self.hashers.update(chunk)

    async def finish(self) -> dict[str, bytes]:
        return self.hashers.digests()

    def close(self) -> None:
        pass


def queue_footprint(length: int | None, chunk: int = 1 << 20) -> int:
    """Bytes the hasher for a body of ``length`` bytes (None: unknown) may hold queued, fed
    chunks of at most ``chunk`` bytes."""
    return 0 if length is not None and length <= INLINE_LIMIT else QUEUE_DEPTH * chunk


def hasher_for(algorithms, length: int | None) -> HashThread | InlineHasher:
    """A hasher for a body of ``length`` bytes (None: unknown, e.g. chunked transfer)."""
    if length is not None and length <= INLINE_LIMIT:
        return InlineHasher(algorithms)
    return HashThread(algorithms)
