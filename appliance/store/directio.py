"""Appending to and reading a file with O_DIRECT, past the page cache.

O_DIRECT needs the memory address, the file offset and the length of every write aligned to
the device's logical block (open(2), "O_DIRECT"; we align to 4096, which covers 512-byte and
4K devices). Shard fragments are not aligned, so appends are gathered in aligned staging
buffers (anonymous mmaps: page-aligned) and written a whole buffer at a time. What is left at
:meth:`DirectAppender.finish` is written in whole blocks, then its unaligned tail after
clearing O_DIRECT on the descriptor (fcntl F_SETFL); the caller then fdatasyncs as for any
file: O_DIRECT bypasses the page cache, not the device's write cache.

Why: a shard that will only be read when another is lost (a parity shard) gains nothing from
the page cache, yet a buffered write pays for a page-cache allocation and a copy per byte and
evicts data that will be read. Measured on this project's VMs in docs/benchmarks.md. A scrub
reads past the page cache (:class:`DirectReader`) so that it checks what the disk holds, not a
cached copy, and evicts nothing.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from concurrent.futures import Executor, Future

ALIGN = 4096
STAGING_SIZE = 2 << 20
"""Bytes gathered before a write; appends larger than this are written in several pieces."""


def open_direct(path: os.PathLike | str, flags: int, mode: int = 0o600) -> tuple[int, bool]:
    """``os.open(path, flags | O_DIRECT)``; where the filesystem refuses O_DIRECT (EINVAL;
    tmpfs did before Linux 6.6), the file is opened without it. Returns (fd, direct)."""
    try:
        return os.open(path, flags | os.O_DIRECT, mode), True
    except OSError as e:
        if e.errno != errno.EINVAL:  # O_DIRECT not supported on this filesystem
            raise
    return os.open(path, flags, mode), False


class StagingPool:
    """Reusable aligned buffers. Reuse matters: fresh anonymous memory costs page faults on
    every first touch (and on some hypervisors a host allocation as well)."""

    def __init__(self, keep: int = 16):
        self._free: list[mmap.mmap] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, STAGING_SIZE)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)
                return
        buf.close()


class DirectAppender:
    """Sequential appends to ``fd`` (opened with O_DIRECT, positioned at 0 with an empty file)
    through ``pool``'s staging buffers. Not thread-safe: one caller per file.

    Full staging buffers are written by ``writer`` (an executor shared by the device's
    files), one at a time per file, while the caller goes on staging the next: an O_DIRECT
    write waits for the device, and a PUT that waited for its parity shards' writes spent a
    third of its time there (docs/benchmarks.md). So ``write()`` returns once its bytes are
    staged, and a file holds at most two buffers, one filling and one being written.
    ``finish()`` returns once everything is written. A failed write is raised (OSError from
    write(2)) by the next ``write()`` or ``finish()``, and by every call after it: the file
    has a hole from then on. After ``finish()`` or ``close()`` no write is running and the
    appender holds no buffer, so the caller may close ``fd``."""

    def __init__(self, fd: int, pool: StagingPool, writer: Executor):
        self.fd = fd
        self._pool = pool
        self._writer = writer
        self._buf: mmap.mmap | None = pool.take()
        self._fill = 0
        self._in_flight: Future | None = None
        self._error: OSError | None = None

    def write(self, *pieces) -> None:
        """Stage ``pieces`` (bytes-like) in order, handing every full buffer to the writer."""
        self._raise_error()
        for piece in pieces:
            with memoryview(piece) as mv:
                mv = mv.cast("B")
                while len(mv):
                    n = min(len(mv), STAGING_SIZE - self._fill)
                    self._buf[self._fill:self._fill + n] = mv[:n]
                    self._fill += n
                    mv = mv[n:]
                    if self._fill == STAGING_SIZE:
                        self._write_behind()

    def finish(self) -> None:
        """Write everything staged, the unaligned tail through the page cache; returns once
        all of it is written (not synced: the caller fdatasyncs)."""
        self._wait()
        with memoryview(self._buf) as mv:
            blocks = self._fill & ~(ALIGN - 1)
            self._write(mv[:blocks])
            if self._fill > blocks:
                self._buffered()
                self._write(mv[blocks:self._fill])
        self._fill = 0
        self.close()

    def close(self) -> None:
        """Wait for the write in flight (its error is dropped), then give the staging buffer
        back (staged bytes are dropped). The wait matters: a write still running when the
        caller closes ``fd`` could land in another file that reuses the descriptor number."""
        try:
            self._wait()
        except OSError:
            pass
        if self._buf is not None:
            self._pool.give(self._buf)
            self._buf = None

    def _write_behind(self) -> None:
        """Hand the full staging buffer to the writer and go on with a fresh one."""
        self._wait()  # one write in flight per file: bounded memory, appends stay in order
        full, self._buf, self._fill = self._buf, self._pool.take(), 0
        self._in_flight = self._writer.submit(self._write_and_give, full)

    def _write_and_give(self, buf: mmap.mmap) -> None:
        try:
            with memoryview(buf) as mv:
                self._write(mv)
        finally:
            self._pool.give(buf)

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            try:
                in_flight.result()
            except OSError as e:
                self._error = e
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise OSError(self._error.errno, f"an earlier write failed: {self._error}")

    def _write(self, data: memoryview) -> None:
        """Write all of ``data``."""
        while len(data):
            try:
                data = data[os.write(self.fd, data):]
            except OSError as e:
                # EINVAL: the device wants a larger alignment than ALIGN. The failed write
                # wrote nothing; the rest goes through the page cache.
                if e.errno != errno.EINVAL or not self._direct():
                    raise
                self._buffered()

    def _direct(self) -> bool:
        return bool(fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_DIRECT)

    def _buffered(self) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)



class DirectReader:
    """Positioned reads of the file at ``path`` with O_DIRECT, through one of ``pool``'s
    staging buffers (plain reads where the filesystem refuses O_DIRECT). Raises
    FileNotFoundError like open(2). Not thread-safe; use as a context manager."""

    def __init__(self, path: os.PathLike | str, pool: StagingPool):
        self.fd, self.direct = open_direct(path, os.O_RDONLY | os.O_CLOEXEC)
        self._pool = pool
        self._buf = pool.take() if self.direct else None

    MAX_READ = STAGING_SIZE - 2 * ALIGN
    """Longest read :meth:`pread` takes: its aligned span must fit a staging buffer."""

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def pread(self, n: int, offset: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at the end of the file). Raises
        ValueError for ``n`` over MAX_READ, OSError for an I/O error (EIO: an unreadable
        sector)."""
        if n > self.MAX_READ:
            raise ValueError(f"read of {n} bytes, at most {self.MAX_READ}")
        if self._buf is None:
            return os.pread(self.fd, n, offset)
        start = offset - offset % ALIGN
        span = -(-(offset + n - start) // ALIGN) * ALIGN
        skip = offset - start
        with memoryview(self._buf) as mv:
            got = os.preadv(self.fd, [mv[:span]], start)  # short only at the end of the file
            return bytes(mv[skip:skip + max(0, min(n, got - skip))])

    def close(self) -> None:
        if self._buf is not None:
            self._pool.give(self._buf)
            self._buf = None
        os.close(self.fd)

    def __enter__(self) -> DirectReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
