"""Free-space reserve: new data stops short of filling a filesystem.

A filesystem filled to the last block fails every write, including the metadata
transactions of the deletes that would free space (SQLite needs room for its WAL), and
leaves a disk shared with the system unusable. So new data is refused while a filesystem
has no more than ``RESERVE_FRACTION`` of its size free; that reserve is left to metadata,
deletes and recovery. MinIO fills a disk to 99% at most (``diskFillFraction``,
cmd/globals.go); Ceph stops client writes at its full ratio (``mon_osd_full_ratio``, 0.95).
"""

from __future__ import annotations

import contextlib
import errno
import os

RESERVE_FRACTION = 0.01
"""Share of a filesystem's size that new data leaves free."""


class DiskFull(OSError):
    """New data refused: the filesystem at ``path`` is within its free-space reserve."""

    def __init__(self, path: str | os.PathLike, free: int, reserve: int, keep: int = 0):
        kept = f", and {keep} bytes kept for deletes" if keep else ""
        super().__init__(errno.ENOSPC, f"{free} bytes free, below the reserve of {reserve} "
                                       f"bytes ({RESERVE_FRACTION:.0%} of the filesystem{kept})",
                         str(path))


def is_full_error(e: BaseException) -> bool:
    """True for a refusal for lack of space: DiskFull, or ENOSPC/EDQUOT from the kernel."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def space(path: str | os.PathLike) -> tuple[int, int, int]:
    """(free, size, reserve) in bytes of the filesystem holding ``path``: free space as an
    unprivileged user sees it (``f_bavail``, statvfs(3)), and the reserve new data leaves."""
    st = os.statvfs(path)
    size = st.f_blocks * st.f_frsize
    return st.f_bavail * st.f_frsize, size, int(size * RESERVE_FRACTION)


def check_room(path: str | os.PathLike, keep: int = 0) -> None:
    """Raise DiskFull unless the filesystem holding ``path`` has more than its reserve (and
    ``keep`` bytes more: a ballast given up, :class:`Ballast`) free."""
    free, _, reserve = space(path)
    if free <= reserve + keep:
        raise DiskFull(path, free, reserve, keep)


BALLAST_BYTES = 8 << 20
"""Size of a :class:`Ballast`: SQLite's WAL grows in pages of 4 KiB, and a delete commits a
few of them, so 8 MiB takes thousands of deletes (the WAL is reused after a checkpoint)."""


class Ballast:
    """A file of ``size`` allocated bytes at ``path``, kept beside data that must stay
    writable (the metadata) and given up when its filesystem is full: when another process
    has taken the last byte, the reserve included, the writes that free space (deletes)
    can still commit. Restored once the filesystem has room for it above its reserve.
    Several processes may share one path."""

    def __init__(self, path: str | os.PathLike, size: int = BALLAST_BYTES):
        self.path = os.fspath(path)
        self.size = size

    @property
    def in_place(self) -> bool:
        return os.path.exists(self.path)

    def release(self) -> bool:
        """Give its space back to the filesystem; False if there was none to give."""
        try:
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False

    def restore(self) -> bool:
        """Allocate it if it is missing and its filesystem has room above the reserve;
        returns whether it is in place."""
        if self.in_place:
            return True
        free, _, reserve = space(os.path.dirname(os.path.abspath(self.path)))
        if free - self.size <= reserve:
            return False
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)  # whole or absent, whichever process wins
            return True
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False
