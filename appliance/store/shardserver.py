"""A shard server: stores shard files on one data disk (directory). Blocking calls.

Durability contract of ``commit``: the file's data and trailer are fdatasync'd, it is renamed
from ``tmp/`` into ``shards/`` and that directory is fsync'd, so a committed shard survives a
power cut. Every ``read`` verifies the header names the requested shard and each fragment's
crc32c before returning it. Transports (in-process today, TCP with the cluster) wrap these
calls; nothing here assumes the caller shares memory with the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..crc32c import crc32c, crc32c_at
from ..diskspace import check_room
from ..durable import fsync_dir

from .directio import DirectAppender, DirectReader, StagingPool, open_direct
from .shardfile import (CRC, TRAILER_LEN, ShardCorrupt, ShardError, ShardNotFound,
                        decode_header, decode_trailer, encode_header, encode_trailer,
                        segment_count)


_IOV_BATCH = 1024
"""Buffers per preadv or writev call (Linux's IOV_MAX)."""
WRITEBACK_EVERY = 2 << 20
"""Start writeback of a shard file each time this many bytes were appended (see append).
8 MiB left up to 256 MiB dirty when eight 64 MiB PUTs ended together, and their fdatasyncs
waited ~10% of the run on the disk; 1 MiB costs more calls than it saves (A/B in
docs/benchmarks.md)."""
ROOM_CHECK_EVERY = 8 << 20
"""Check the disk's free-space reserve each time this many bytes were appended."""
DIRECT_WRITERS = 2
"""Threads per device writing O_DIRECT shards' blocks behind the appends (directio)."""


def _load_sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _write_all(fd: int, iov: list, n: int) -> None:
    """Write all ``n`` bytes of ``iov`` (at most _IOV_BATCH buffers) at the file position."""
    done = os.writev(fd, iov)
    if done != n:  # short write: finish it the slow way
        rest = b"".join(iov)[done:]
        while rest:
            rest = rest[os.write(fd, rest):]


@dataclass
class _Open:
    sid: str
    index: int
    fd: int
    tmp: Path
    segments: int = 0
    digest: int = 0
    unsynced: int = 0
    unchecked: int = 0  # bytes appended since the last free-space check
    direct: DirectAppender | None = None


class ShardServer:
    """Shards of one device under ``root``: ``shards/<sid[:2]>/<sid>.<index>`` and ``tmp/``."""

    def __init__(self, root: str | os.PathLike, device_id: str):
        self.root = Path(root)
        self.device_id = device_id
        self._shards = self.root / "shards"
        self._tmp = self.root / "tmp"
        self._shards.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(exist_ok=True)
        self._open: dict[int, _Open] = {}
        self._handles = itertools.count(1)
        self._lock = threading.Lock()
        self._staging = StagingPool()
        self._direct_writer = ThreadPoolExecutor(DIRECT_WRITERS, f"direct-{device_id}")

    def path(self, sid: str, index: int) -> Path:
        return self._shards / sid[:2] / f"{sid}.{index}"

    # -- writing ---------------------------------------------------------------------------
    def create(self, sid: str, index: int, header: dict, cached: bool = True) -> int:
        """Start writing shard ``sid.index``; returns a handle for append/commit/abort.

        ``cached=False`` writes past the page cache (O_DIRECT, see directio) where the
        filesystem allows it: for shards not expected to be read soon, such as parity.
        Raises diskspace.DiskFull when the disk is within its free-space reserve."""
        check_room(self.root)
        tmp = self._tmp / f"{sid}.{index}.{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd, direct = (os.open(tmp, flags, 0o600), False) if cached else open_direct(tmp, flags)
        st = _Open(sid, index, fd, tmp)
        try:
            head = encode_header({**header, "sid": sid, "index": index})
            if direct:
                st.direct = DirectAppender(fd, self._staging, self._direct_writer)
                st.direct.write(head)
            else:
                os.write(fd, head)
        except BaseException:
            self._close(st)
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            h = next(self._handles)
            self._open[h] = st
        return h

    def append(self, handle: int, fragments: list[bytes]) -> None:
        """Append whole segments' fragments, each followed by its crc32c, in one writev.
        Raises diskspace.DiskFull once the disk is within its free-space reserve (checked
        every ROOM_CHECK_EVERY bytes), so that a large write stops there too."""
        st = self._open[handle]
        if st.unchecked >= ROOM_CHECK_EVERY:
            check_room(self.root)
            st.unchecked = 0
        iov = []
        for frag in fragments:
            c = CRC.pack(crc32c(frag))
            st.digest = crc32c(c, st.digest)
            iov += (frag, c)
        st.segments += len(fragments)
        want = sum(map(len, iov))
        st.unchecked += want
        if st.direct is not None:
            st.direct.write(*iov)
            return
        if len(iov) <= _IOV_BATCH:  # every append of the store's
            _write_all(st.fd, iov, want)
        else:
            for i in range(0, len(iov), _IOV_BATCH):
                batch = iov[i:i + _IOV_BATCH]
                _write_all(st.fd, batch, sum(map(len, batch)))
        st.unsynced += want
        if st.unsynced >= WRITEBACK_EVERY and _sync_file_range is not None:
            # Start writeback now (asynchronously) instead of leaving gigabytes dirty for the
            # final fdatasync: a 1 GiB PUT otherwise stalls ~1.5 s at the end flushing 1.5 GiB.
            _sync_file_range(st.fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
            st.unsynced = 0

    def commit(self, handle: int) -> None:
        """Seal the shard durably under its final name (see the module's contract). If that
        fails (a write behind, the trailer or fdatasync: a full or failing disk), the partial
        file is removed as by ``abort`` and the error raised."""
        st = self._open.pop(handle)
        final = self.path(st.sid, st.index)
        try:
            try:
                trailer = encode_trailer(st.segments, st.digest)
                if st.direct is not None:
                    st.direct.write(trailer)
                    st.direct.finish()
                else:
                    os.write(st.fd, trailer)
                os.fdatasync(st.fd)
            finally:
                self._close(st)
            final.parent.mkdir(exist_ok=True)
            os.rename(st.tmp, final)
        except BaseException:
            st.tmp.unlink(missing_ok=True)
            raise
        fsync_dir(final.parent)

    def abort(self, handle: int) -> None:
        st = self._open.pop(handle, None)
        if st:
            self._close(st)
            st.tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Abort every shard still being written and stop the device's writer threads."""
        for handle in list(self._open):
            self.abort(handle)
        self._direct_writer.shutdown()

    @staticmethod
    def _close(st: _Open) -> None:
        if st.direct is not None:
            st.direct.close()
        os.close(st.fd)

    # -- reading ---------------------------------------------------------------------------
    def read(self, sid: str, index: int, first: int, count: int) -> list[memoryview]:
        """Fragments of segments ``first .. first+count-1``, each crc-verified: read-only
        views of one private buffer (immutable bytes, so they are values like ``bytes``).

        Raises ShardNotFound, or ShardCorrupt naming the first bad segment."""
        with self._records(sid, index, first, count) as (fd, start, lengths):
            want = sum(n + 4 for n in lengths)
            buf = os.pread(fd, want, start)
            if len(buf) != want:
                raise ShardCorrupt(sid, index, "truncated")
        out = []
        view = memoryview(buf)  # slices share the one read buffer: no copy per fragment
        off = 0
        for s, flen in enumerate(lengths):
            if CRC.unpack_from(buf, off + flen)[0] != crc32c_at(buf, off, flen):
                raise ShardCorrupt(sid, index, f"segment {first + s} checksum mismatch")
            out.append(view[off:off + flen])
            off += flen + 4
        return out

    def read_into(self, sid: str, index: int, first: int, count: int, skip: int,
                  dests: list[memoryview]) -> list[tuple[bytes, bytes]]:
        """:meth:`read` scattered into the caller's buffers: bytes ``[skip, skip +
        len(dests[s]))`` of the fragment of segment ``first + s`` are read straight into the
        writable buffer ``dests[s]`` (one ``preadv``, no copy in between); the rest of each
        fragment comes back as ``(head, tail)``: its first ``skip`` bytes and those after
        the ``dests[s]`` part. Each fragment's crc32c is verified over all its bytes.

        Raises ShardNotFound, or ShardCorrupt (a checksum, truncation, or a fragment shorter
        than ``skip + len(dests[s])``). After an error the contents of ``dests`` are
        undefined."""
        parts = []
        with self._records(sid, index, first, count) as (fd, start, lengths):
            for s, flen in enumerate(lengths):
                tail = flen - skip - len(dests[s])
                if tail < 0:
                    raise ShardCorrupt(sid, index, f"segment {first + s}: fragment of {flen} "
                                       f"bytes, expected at least {flen - tail}")
                parts.append((bytearray(skip), dests[s], bytearray(tail), bytearray(4)))
            iov = [b for part in parts for b in part]
            want = sum(n + 4 for n in lengths)
            got = 0
            for i in range(0, len(iov), _IOV_BATCH):
                batch = iov[i:i + _IOV_BATCH]
                n = os.preadv(fd, batch, start + got)
                got += n
                if n != sum(len(b) for b in batch):
                    break
            if got != want:
                raise ShardCorrupt(sid, index, "truncated")
        for s, (head, dest, tail, crc) in enumerate(parts):
            if CRC.unpack(crc)[0] != crc32c(tail, crc32c(dest, crc32c(head))):
                raise ShardCorrupt(sid, index, f"segment {first + s} checksum mismatch")
        return [(bytes(head), bytes(tail)) for head, _, tail, _ in parts]

    @contextlib.contextmanager
    def _records(self, sid: str, index: int, first: int, count: int):
        """Open shard ``sid.index`` and locate the records (``fragment | crc32c``) of segments
        ``first .. first+count-1``: yields (fd, offset of the first, fragment lengths); the
        last fragment of a shard may be shorter than the others."""
        fd = self._open_shard(sid, index)
        try:
            hdr, hlen = self._header(fd, sid, index)
            frag = hdr["frag"]
            size = os.fstat(fd).st_size
            total = segment_count(size, hlen, frag)
            if first + count > total:
                raise ShardCorrupt(sid, index, f"has {total} segments, wanted {first + count}")
            start = hlen + first * (frag + 4)
            end = min(hlen + (first + count) * (frag + 4), size - TRAILER_LEN)
            lengths = [min(frag, end - start - s * (frag + 4) - 4) for s in range(count)]
            if lengths and lengths[-1] < 0:
                raise ShardCorrupt(sid, index, "truncated")
            yield fd, start, lengths
        finally:
            os.close(fd)

    def _open_shard(self, sid: str, index: int) -> int:
        try:
            return os.open(self.path(sid, index), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ShardNotFound(sid, index, "missing") from None

    def _header(self, fd: int, sid: str, index: int) -> tuple[dict, int]:
        return self._check_header(os.pread(fd, 4096, 0), sid, index)

    @staticmethod
    def _check_header(buf: bytes, sid: str, index: int) -> tuple[dict, int]:
        """(header, its length) from a shard file's first bytes; ShardCorrupt unless valid
        and naming shard ``sid.index``."""
        try:
            got = decode_header(buf)
        except ValueError as e:
            raise ShardCorrupt(sid, index, f"header: {e}") from None
        if got is None:
            raise ShardCorrupt(sid, index, "header truncated")
        hdr, hlen = got
        if hdr.get("sid") != sid or hdr.get("index") != index:
            raise ShardCorrupt(sid, index, f"header names {hdr.get('sid')}.{hdr.get('index')}")
        return hdr, hlen

    def verify(self, sid: str, index: int) -> int:
        """Scrub shard ``sid.index``: its header, every fragment's crc32c and the trailer's
        digest over them. Reads past the page cache (directio.DirectReader): what is checked
        is the disk's copy, and no cached data is evicted. Returns the segment count.

        Raises ShardNotFound, ShardCorrupt, or OSError for an unreadable file (EIO: a bad
        sector)."""
        try:
            reader = DirectReader(self.path(sid, index), self._staging)
        except FileNotFoundError:
            raise ShardNotFound(sid, index, "missing") from None
        with reader:
            hdr, hlen = self._check_header(reader.pread(min(4096, reader.MAX_READ), 0),
                                           sid, index)
            size = reader.size()
            try:
                segments, digest = decode_trailer(reader.pread(TRAILER_LEN,
                                                               max(0, size - TRAILER_LEN)))
            except ValueError as e:
                raise ShardCorrupt(sid, index, str(e)) from None
            frag = hdr["frag"]
            if segments != segment_count(size, hlen, frag):
                raise ShardCorrupt(sid, index, "segment count does not match file size")
            per_read = max(1, reader.MAX_READ // (frag + 4))
            running, offset, end = 0, hlen, size - TRAILER_LEN
            for first in range(0, segments, per_read):
                want = min(per_read * (frag + 4), end - offset)
                buf = reader.pread(want, offset)
                if len(buf) != want:
                    raise ShardCorrupt(sid, index, "truncated")
                for at in range(0, want, frag + 4):
                    flen = min(frag, want - at - 4)
                    if flen < 0:
                        raise ShardCorrupt(sid, index, "truncated")
                    crc = buf[at + flen:at + flen + 4]
                    if CRC.unpack(crc)[0] != crc32c_at(buf, at, flen):
                        raise ShardCorrupt(sid, index,
                                           f"segment {first + at // (frag + 4)} checksum mismatch")
                    running = crc32c(crc, running)
                offset += want
        if running != digest:
            raise ShardCorrupt(sid, index, "whole-shard digest mismatch")
        return segments

    # -- housekeeping ----------------------------------------------------------------------
    def delete(self, sid: str, index: int) -> bool:
        try:
            os.unlink(self.path(sid, index))
            return True
        except FileNotFoundError:
            return False

    def list_shards(self) -> Iterator[tuple[str, int]]:
        """Every committed shard on this device as (sid, index)."""
        for sub in sorted(self._shards.iterdir()):
            for f in sorted(sub.iterdir()):
                sid, _, idx = f.name.rpartition(".")
                if idx.isdigit():
                    yield sid, int(idx)

    def tmp_sids(self) -> set[str]:
        """Stripe-set ids of the partial shard files on this device (writes in flight, or
        left by a crash or by the disk going away)."""
        return {f.name.split(".", 1)[0] for f in self._tmp.iterdir()}

    def clean_tmp(self, sids: set[str] | None = None) -> int:
        """Remove partial writes left by a crash: all of them (``sids=None``; only when no write
        is in progress on this device), or those of the stripe sets ``sids``."""
        n = 0
        for f in self._tmp.iterdir():
            if sids is None or f.name.split(".", 1)[0] in sids:
                f.unlink(missing_ok=True)
                n += 1
        return n

    def usage(self) -> tuple[int, int]:
        """(used, total) bytes of the filesystem holding this device."""
        du = shutil.disk_usage(self.root)
        return du.used, du.total


__all__ = ["ShardServer", "ShardError", "ShardNotFound", "ShardCorrupt"]
