"""Appending to a file with O_DIRECT, past the page cache.

O_DIRECT needs the memory address, the file offset and the length of every write aligned to
the device's logical block (open(2), "O_DIRECT"; we align to 4096, which covers 512-byte and
4K devices). Shard fragments are not aligned, so appends are gathered in an aligned staging
buffer (an anonymous mmap: page-aligned) and only its whole-block prefix is written; the
remainder moves to the buffer's start. The unaligned tail left at :meth:`DirectAppender.finish`
is written after clearing O_DIRECT on the descriptor (fcntl F_SETFL), then the caller
fdatasyncs as for any file: O_DIRECT bypasses the page cache, not the device's write cache.

Why: a shard that will only be read when another is lost (a parity shard) gains nothing from
the page cache, yet a buffered write pays for a page-cache allocation and a copy per byte and
evicts data that will be read. Measured on this project's VMs in docs/benchmarks.md.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading

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
    through ``pool``'s staging buffers. Not thread-safe: one writer per file.

    ``write(data)`` may keep up to ALIGN-1 bytes staged; ``finish()`` writes them. After
    ``finish()`` or ``close()`` the appender holds no buffer. Raises OSError from write(2)."""

    def __init__(self, fd: int, pool: StagingPool):
        self.fd = fd
        self._pool = pool
        self._buf: mmap.mmap | None = pool.take()
        self._fill = 0

    def write(self, *pieces) -> None:
        """Append ``pieces`` (bytes-like) in order, writing every full staging buffer and, at
        the end, the whole-block prefix of what is staged."""
        buf = self._buf
        for piece in pieces:
            with memoryview(piece) as mv:
                mv = mv.cast("B")
                while len(mv):
                    n = min(len(mv), STAGING_SIZE - self._fill)
                    buf[self._fill:self._fill + n] = mv[:n]
                    self._fill += n
                    mv = mv[n:]
                    if self._fill == STAGING_SIZE:
                        self._write_blocks()
        self._write_blocks()

    def finish(self) -> None:
        """Write everything staged, the unaligned tail through the page cache."""
        self._write_blocks()
        if self._fill:
            self._buffered()
            self._write(self._fill)
            self._fill = 0
        self.close()

    def close(self) -> None:
        """Give the staging buffer back (staged bytes are dropped)."""
        if self._buf is not None:
            self._pool.give(self._buf)
            self._buf = None

    def _write_blocks(self) -> None:
        blocks = self._fill & ~(ALIGN - 1)
        if not blocks:
            return
        self._write(blocks)
        tail = self._fill - blocks
        if tail:
            self._buf.move(0, blocks, tail)
        self._fill = tail

    def _write(self, n: int) -> None:
        """Write the first ``n`` staged bytes, all of them."""
        with memoryview(self._buf) as mv:
            rest = mv[:n]
            while len(rest):
                try:
                    rest = rest[os.write(self.fd, rest):]
                except OSError as e:
                    # EINVAL: the device wants a larger alignment than ALIGN. The failed
                    # write wrote nothing; the rest goes through the page cache.
                    if e.errno != errno.EINVAL or not self._direct():
                        raise
                    self._buffered()

    def _direct(self) -> bool:
        return bool(fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_DIRECT)

    def _buffered(self) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)

