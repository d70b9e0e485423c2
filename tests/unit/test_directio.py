"""O_DIRECT appends through aligned staging buffers, against the real kernel and filesystem."""

import errno
import fcntl
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.store import directio
from appliance.store.directio import DirectAppender, StagingPool, open_direct

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
WRITER = ThreadPoolExecutor(2, "test-direct")
"""The block writers of every test here (the property test's examples cannot share a
function-scoped fixture)."""


def fs_type(path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                          text=True, check=True).stdout.strip()


def append_all(path, pieces, pool) -> bool:
    """Write ``pieces`` through a DirectAppender; returns whether O_DIRECT was in effect for
    the block writes."""
    fd, direct = open_direct(path, FLAGS)
    try:
        app = DirectAppender(fd, pool, WRITER)
        for group in pieces:
            app.write(*group)
        was_direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        app.finish()
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert was_direct == direct
    return direct


piece_sizes = st.lists(st.lists(st.integers(0, 3 * directio.STAGING_SIZE // 2), max_size=4),
                       max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=piece_sizes)
def test_file_holds_exactly_the_appended_bytes(tmp_path, sizes):
    pool = StagingPool()
    blob = os.urandom(sum(map(sum, sizes)) + 1)
    pieces, at = [], 0
    for group in sizes:
        pieces.append([])
        for n in group:
            pieces[-1].append(memoryview(blob)[at:at + n])
            at += n
    path = tmp_path / f"f{os.urandom(4).hex()}"
    direct = append_all(path, pieces, pool)
    assert path.read_bytes() == blob[:at]
    assert direct, f"O_DIRECT was refused on {fs_type(tmp_path)}"


def test_staging_buffers_are_reused(tmp_path):
    pool = StagingPool(keep=2)
    for i in range(4):
        append_all(tmp_path / f"f{i}", [[b"x" * (directio.STAGING_SIZE + 10_000)]], pool)
    assert len(pool._free) == 2  # one written behind, one with the rest


def test_alignment_the_device_refuses_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    """No block device takes 256-byte O_DIRECT writes: the kernel says EINVAL, and the
    appender goes on through the page cache without losing or repeating a byte."""
    monkeypatch.setattr(directio, "ALIGN", 256)
    data = os.urandom(5 * 256)  # no unaligned tail: O_DIRECT is cleared only by the fallback
    path = tmp_path / "f"
    fd, direct = open_direct(path, FLAGS)
    assert direct
    try:
        app = DirectAppender(fd, StagingPool(), WRITER)
        app.write(data[:700], data[700:])
        app.finish()
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
    finally:
        os.close(fd)
    assert path.read_bytes() == data


@pytest.fixture
def small_fs(tmp_path):
    """A real 1 MiB filesystem (tmpfs takes O_DIRECT since Linux 6.6), to fill up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_failed_write_is_raised_by_the_next_call_and_every_one_after(small_fs):
    """Block writes run behind the appends: the device's ENOSPC reaches the caller at the
    latest from finish(), and the appender refuses everything after it (the file has a
    hole), while close() still releases the descriptor and the buffers."""
    pool = StagingPool()
    fd, direct = open_direct(small_fs / "f", FLAGS)
    assert direct, f"O_DIRECT was refused on {fs_type(small_fs)}"
    try:
        app = DirectAppender(fd, pool, WRITER)
        with pytest.raises(OSError) as failed:
            for _ in range(4):
                app.write(os.urandom(directio.STAGING_SIZE // 2 + 100))
            app.finish()
        assert failed.value.errno == errno.ENOSPC
        with pytest.raises(OSError, match="an earlier write failed"):
            app.write(b"x" * 8192)
        with pytest.raises(OSError, match="an earlier write failed"):
            app.finish()
        app.close()
        assert app._buf is None
    finally:
        os.close(fd)


def test_close_waits_for_the_write_in_flight(tmp_path):
    """Once close() returns, no write is left running on the descriptor, which the caller
    is about to close (and the kernel may hand to another file)."""
    for i in range(5):
        fd, direct = open_direct(tmp_path / f"f{i}", FLAGS)
        assert direct
        try:
            app = DirectAppender(fd, StagingPool(), WRITER)
            app.write(b"y" * (directio.STAGING_SIZE + 100))  # a whole staging buffer in flight
            app.close()
            assert os.fstat(fd).st_size == directio.STAGING_SIZE
        finally:
            os.close(fd)
