"""ShardServer.read_into: the scattered read returns exactly the bytes of read, and fails the
same way on damaged files; ShardServer.verify (the scrub) finds damage anywhere in a file
and reads it past the page cache. Through real shard files."""

import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.store import ShardServer
from appliance.store.directio import DirectReader
from appliance.store.shardfile import TRAILER_LEN, ShardCorrupt, ShardNotFound

FRAG = 300


def write_shard(root, fragments, sid="ab12cd", index=1):
    server = ShardServer(root, "d0")
    h = server.create(sid, index, {"frag": FRAG})
    server.append(h, fragments)
    server.commit(h)
    return server


def fragments_of(seed: int, count: int, last: int) -> list[bytes]:
    frags = [(seed + s).to_bytes(8, "little") * (FRAG // 8 + 1) for s in range(count)]
    frags = [f[:FRAG] for f in frags]
    frags[-1] = frags[-1][:last]
    return frags


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 9), last=st.integers(1, FRAG), seed=st.integers(0, 2**32),
       data=st.data())
def test_read_into_scatters_exactly_what_read_returns(tmp_path_factory, count, last, seed,
                                                      data):
    frags = fragments_of(seed, count, last)
    server = write_shard(tmp_path_factory.mktemp("disk"), frags)
    first = data.draw(st.integers(0, count - 1))
    n = data.draw(st.integers(1, count - first))
    want = [bytes(f) for f in server.read("ab12cd", 1, first, n)]
    assert want == frags[first:first + n]
    skip = data.draw(st.integers(0, min(len(f) for f in want)))
    sizes = [data.draw(st.integers(0, len(f) - skip)) for f in want]
    bufs = [bytearray(b"\xee" * (size + 2)) for size in sizes]  # guard bytes either side
    ends = server.read_into("ab12cd", 1, first, n, skip,
                            [memoryview(b)[1:1 + size] for b, size in zip(bufs, sizes)])
    for f, buf, size, (head, tail) in zip(want, bufs, sizes, ends):
        assert bytes(buf[1:1 + size]) == f[skip:skip + size]
        assert buf[0] == buf[-1] == 0xEE  # nothing written outside the destination
        assert head + bytes(buf[1:1 + size]) + tail == f


def test_read_into_detects_damage_anywhere_in_a_fragment(tmp_path):
    frags = fragments_of(7, 3, FRAG)
    server = write_shard(tmp_path, frags)
    path = server.path("ab12cd", 1)
    clean = path.read_bytes()
    header_len = len(clean) - 3 * (FRAG + 4) - TRAILER_LEN
    assert header_len > 0

    def read_into():
        dests = [memoryview(bytearray(100)) for _ in range(3)]
        return server.read_into("ab12cd", 1, 0, 3, 80, dests)

    # a flipped bit in the head, in the part read into place, and in the tail
    for offset in (header_len + FRAG + 4 + 10, header_len + 120,
                   header_len + 2 * (FRAG + 4) + 250):
        raw = bytearray(clean)
        raw[offset] ^= 0x10
        path.write_bytes(bytes(raw))
        with pytest.raises(ShardCorrupt, match="checksum mismatch"):
            read_into()
    path.write_bytes(clean[:header_len + FRAG])
    with pytest.raises(ShardCorrupt):
        read_into()
    path.write_bytes(clean)
    read_into()
    with pytest.raises(ShardCorrupt, match="expected at least"):  # asks for more than there is
        server.read_into("ab12cd", 1, 0, 1, 80, [memoryview(bytearray(FRAG))])
    os.unlink(path)
    with pytest.raises(ShardNotFound):
        read_into()


@pytest.mark.parametrize("max_read", [DirectReader.MAX_READ, 2 * (FRAG + 4) + 100])
def test_verify_finds_damage_in_every_byte_of_a_shard(tmp_path, monkeypatch, max_read):
    # A small max_read makes verify read the file in several pieces (records across reads).
    monkeypatch.setattr(DirectReader, "MAX_READ", max_read)
    frags = fragments_of(3, 5, 123)
    server = write_shard(tmp_path, frags)
    path = server.path("ab12cd", 1)
    clean = path.read_bytes()
    assert server.verify("ab12cd", 1) == 5
    for offset in range(len(clean)):  # header, fragments, their CRCs, trailer
        raw = bytearray(clean)
        raw[offset] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(ShardCorrupt):
            server.verify("ab12cd", 1)
    for damaged in (clean[:-1], clean[:len(clean) // 2], clean + b"\0", b""):
        path.write_bytes(damaged)
        with pytest.raises(ShardCorrupt):
            server.verify("ab12cd", 1)
    path.write_bytes(clean)
    assert server.verify("ab12cd", 1) == 5
    os.unlink(path)
    with pytest.raises(ShardNotFound):
        server.verify("ab12cd", 1)


def resident_bytes(path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out)


def test_verify_reads_the_disk_not_the_page_cache(tmp_path):
    """A scrub must check what the disk holds, and must not fill the page cache with cold
    shards: after verify, none of the file is cached (on a filesystem with O_DIRECT)."""
    frags = [os.urandom(FRAG) for _ in range(2000)]  # ~600 KiB
    server = write_shard(tmp_path, frags)
    path = server.path("ab12cd", 1)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean after commit's fdatasync
    finally:
        os.close(fd)
    if resident_bytes(path):
        pytest.skip("this filesystem keeps files in memory (tmpfs)")
    assert server.verify("ab12cd", 1) == 2000
    assert resident_bytes(path) == 0
    server.read("ab12cd", 1, 0, 1)  # a plain read does fill it: the check can fail
    assert resident_bytes(path) > 0
