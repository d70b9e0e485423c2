"""O_DIRECT appends through aligned staging buffers, against the real kernel and filesystem."""

import fcntl
import os
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.store import directio
from appliance.store.directio import DirectAppender, StagingPool, open_direct

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def fs_type(path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                          text=True, check=True).stdout.strip()


def append_all(path, pieces, pool) -> bool:
    """Write ``pieces`` through a DirectAppender; returns whether O_DIRECT was in effect for
    the block writes."""
    fd, direct = open_direct(path, FLAGS)
    try:
        app = DirectAppender(fd, pool)
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
        append_all(tmp_path / f"f{i}", [[b"x" * 10_000]], pool)
    assert len(pool._free) == 1


def test_alignment_the_device_refuses_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    """No block device takes 256-byte O_DIRECT writes: the kernel says EINVAL, and the
    appender goes on through the page cache without losing or repeating a byte."""
    monkeypatch.setattr(directio, "ALIGN", 256)
    data = os.urandom(5 * 256 + 7)
    path = tmp_path / "f"
    fd, direct = open_direct(path, FLAGS)
    assert direct
    try:
        app = DirectAppender(fd, StagingPool())
        app.write(data[:700], data[700:])
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        app.finish()
    finally:
        os.close(fd)
    assert path.read_bytes() == data
