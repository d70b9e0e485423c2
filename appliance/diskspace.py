"""Free-space reserve: new data stops short of filling a filesystem.

A filesystem filled to the last block fails every write, including the metadata
transactions of the deletes that would free space (SQLite needs room for its WAL), and
leaves a disk shared with the system unusable. So new data is refused while a filesystem
has no more than ``RESERVE_FRACTION`` of its size free; that reserve is left to metadata,
deletes and recovery. MinIO fills a disk to 99% at most (``diskFillFraction``,
cmd/globals.go); Ceph stops client writes at its full ratio (``mon_osd_full_ratio``, 0.95).
"""

from __future__ import annotations

import errno
import os

RESERVE_FRACTION = 0.01
"""Share of a filesystem's size that new data leaves free."""


class DiskFull(OSError):
    """New data refused: the filesystem at ``path`` is within its free-space reserve."""

    def __init__(self, path: str | os.PathLike, free: int, reserve: int):
        super().__init__(errno.ENOSPC, f"{free} bytes free, below the reserve of {reserve} "
                                       f"bytes ({RESERVE_FRACTION:.0%} of the filesystem)",
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


def check_room(path: str | os.PathLike) -> None:
    """Raise DiskFull unless the filesystem holding ``path`` has more than its reserve free."""
    free, _, reserve = space(path)
    if free <= reserve:
        raise DiskFull(path, free, reserve)
