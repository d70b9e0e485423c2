"""The shard store through its real files: streaming, ranges, faults, repair, GC, crash."""

import contextlib
import os
import resource
import sqlite3
import subprocess

import pytest
from prometheus_client import REGISTRY
from hypothesis import given, settings
from hypothesis import strategies as st
import trio

from appliance.fsck import fsck
from appliance.namespace import ObjectRecord
from appliance.store import (INLINE_MAX, SEGMENT_SIZE, InProcessClient, ShardServer,
                             StoreReadError, StoreUnavailable, UnavailableClient)
from appliance.store import store as store_module, transport
from appliance.store import repair as repair_module
from appliance.store import scrub
from appliance.store.extent import Reference
from appliance.store.repair import Repairer, backlog_by_device
from appliance.store.scrub import Scrubber
from appliance.store.store import READ_BATCH_SEGMENTS

from conftest import Node
from storekit import chunks, read_all

MiB = 1 << 20


async def write_committed(node, data):
    extent = await node.store.write(chunks(data))
    await node.meta.txn([], node.store.commit_ops([extent]))
    return extent


async def test_small_data_is_inline_and_large_is_erasure_coded(node_factory):
    async with node_factory() as node:
        small = await node.store.write(chunks(b"x" * INLINE_MAX))
        assert small.inline == b"x" * INLINE_MAX and not small.sid
        big = await node.store.write(chunks(b"y" * (INLINE_MAX + 1)))
        assert big.inline is None
        assert all(node.shard_path(big, i).exists() for i in range(6))


@pytest.mark.parametrize("size", [INLINE_MAX + 1, SEGMENT_SIZE, 5 * SEGMENT_SIZE + 17])
async def test_roundtrip_and_ranges(node_factory, size):
    data = os.urandom(size)
    async with node_factory() as node:
        e = await write_committed(node, data)
        assert await read_all(node.store.read(e)) == data
        for lo, hi in [(0, 1), (size - 1, size), (SEGMENT_SIZE - 3, SEGMENT_SIZE + 3),
                       (1000, size // 2)]:
            if lo < hi <= size:
                assert await read_all(node.store.read(e, lo, hi)) == data[lo:hi]


async def test_replicated_pool(node_factory):
    data = os.urandom(3 * MiB)
    async with node_factory(pool="replicated:3", disks=3) as node:
        e = await write_committed(node, data)
        os.unlink(node.shard_path(e, 0))
        os.unlink(node.shard_path(e, 2))
        assert await read_all(node.store.read(e)) == data


async def test_m_shards_lost_or_corrupt_read_exact_bytes_and_repair(node_factory):
    data = os.urandom(6 * MiB + 5)
    async with node_factory() as node:
        e = await write_committed(node, data)
        os.unlink(node.shard_path(e, 0))
        path = node.shard_path(e, 3)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x40  # one flipped bit in a fragment in the middle
        path.write_bytes(bytes(raw))
        assert await read_all(node.store.read(e)) == data
        assert sorted(kv.key for kv in await node.meta.scan_prefix(b"r/")) == [
            b"r/%s/0" % e.sid.encode(), b"r/%s/3" % e.sid.encode()]
        devices = node.store.pools[e.pool].devices_for(e.sid)
        for page in (1000, 1):  # `appliance disk list` counts the queue per device
            assert await backlog_by_device(node.meta, page) == {devices[0]: 1, devices[3]: 1}
        assert await Repairer(node.store).repair_some() == 2
        assert await node.meta.count_prefix(b"r/") == 0
        assert await backlog_by_device(node.meta) == {}
        for i in range(6):
            node.servers[node.store.pools[e.pool].devices_for(e.sid)[i]].verify(e.sid, i)
        # with the repaired shards, losing two *other* shards is survivable again
        os.unlink(node.shard_path(e, 1))
        os.unlink(node.shard_path(e, 2))
        assert await read_all(node.store.read(e)) == data


async def test_more_than_m_lost_is_an_error_never_wrong_bytes(node_factory):
    data = os.urandom(2 * MiB)
    async with node_factory() as node:
        e = await write_committed(node, data)
        for i in (0, 4):
            os.unlink(node.shard_path(e, i))
        path = node.shard_path(e, 1)
        raw = bytearray(path.read_bytes())
        raw[-100] ^= 1
        path.write_bytes(bytes(raw))
        with pytest.raises(StoreReadError):
            await read_all(node.store.read(e))


async def test_a_reader_out_of_descriptors_fails_without_blaming_the_shards(node_factory):
    """A read that fails because this process may open no more files (EMFILE) fails as a
    read, but queues no repair: the shards are fine, and rewriting them would not help."""
    data = os.urandom(2 * MiB)
    async with node_factory() as node:
        e = await write_committed(node, data)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))  # every open(2): EMFILE
        try:
            with pytest.raises(StoreReadError, match="Too many open files"):
                await read_all(node.store.read(e))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert await node.meta.count_prefix(b"r/") == 0
        assert await read_all(node.store.read(e)) == data


async def test_write_survives_a_failed_disk_and_queues_repair(node_factory):
    data = os.urandom(3 * MiB)
    async with node_factory() as node:
        # a disk whose shard directory cannot be written (an unwritable file in its place)
        bad = node.servers["d2"]
        os.rename(bad._tmp, bad._tmp.with_name("tmp.gone"))
        bad._tmp.write_bytes(b"")
        await node.ns.create_bucket("b", "root")
        e = await node.ns.write_data(chunks(data))
        await node.ns.commit_object(
            "b", ObjectRecord(key="k", size=e.size, etag="x", mtime=0, extents=[e]))
        assert await read_all(node.store.read(e)) == data
        queued = [kv.key for kv in await node.meta.scan_prefix(b"r/")]
        assert len(queued) == 1
        bad._tmp.unlink()
        os.rename(bad._tmp.with_name("tmp.gone"), bad._tmp)
        assert await Repairer(node.store).repair_some() == 1
        report = await fsck(node.meta, node.store, node.ns)
        assert report.clean


async def test_write_survives_a_device_detached_under_it(node_factory):
    """A disk detached while a PUT streams to it (appliance.disks closes its client): the
    write goes on with the other five and queues that shard for repair."""
    data = os.urandom(12 * MiB)
    async with node_factory() as node:
        async def body():
            for n in range(0, len(data), MiB):
                if n == 6 * MiB:
                    node.clients["d3"].close()
                yield data[n:n + MiB]

        e = await node.store.write(body())
        assert await read_all(node.store.read(e)) == data
        index = node.store.pools[e.pool].devices_for(e.sid).index("d3")
        assert [kv.key for kv in await node.meta.scan_prefix(b"r/")] == \
            [b"r/%s/%d" % (e.sid.encode(), index)]


async def test_write_survives_a_disk_filling_up_under_data_and_parity(node_factory, tmp_path):
    """A real 1 MiB filesystem as one disk: every write's shard there fails with ENOSPC, a
    data shard's in an append, a parity shard's (staged for O_DIRECT, written behind) in its
    commit. The write still succeeds on the others, queues the lost shard's repair, and no
    partial file is left behind."""
    small = tmp_path / "disk2"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        async with node_factory() as node:
            indices = set()
            while not indices & {0, 1, 2, 3} or not indices & {4, 5}:
                assert len(indices) < 60, "placement never put data and parity on d2"
                data = os.urandom(6 * MiB + 5)
                e = await write_committed(node, data)
                index = node.store.pools[e.pool].devices_for(e.sid).index("d2")
                indices.add(index)
                assert await node.meta.get(b"r/%s/%d" % (e.sid.encode(), index)) is not None
                assert await read_all(node.store.read(e)) == data
                assert list((small / "tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


async def test_repairs_onto_a_full_disk_wait_and_say_so_once(node_factory, tmp_path,
                                                               monkeypatch, caplog):
    """A shard lost because its disk is full stays queued: the repairer tries it, says once
    that the disk is out of space, leaves it alone for FULL_RETRY_S instead of failing (and
    logging) every round, and repairs it once there is room."""
    monkeypatch.setattr(repair_module, "FULL_RETRY_S", 1.0)
    small = tmp_path / "disk2"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        async with node_factory() as node:
            while True:  # until a write places a shard (1.5 MiB) on the 1 MiB disk
                data = os.urandom(6 * MiB + 5)
                e = await write_committed(node, data)
                if await node.meta.count_prefix(b"r/"):
                    break
            repairer = Repairer(node.store)
            for _ in range(3):
                assert await repairer.repair_some() == 0
            said = [r for r in caplog.records if "out of space" in r.getMessage()]
            assert len(said) == 1 and "d2" in said[0].getMessage()
            assert await node.meta.count_prefix(b"r/") == 1
            subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
            assert await repairer.repair_some() == 0  # still waiting out FULL_RETRY_S
            await trio.sleep(1.0)
            assert await repairer.repair_some() == 1
            assert await node.meta.count_prefix(b"r/") == 0
            assert await read_all(node.store.read(e)) == data
            devices = node.store.pools[e.pool].devices_for(e.sid)
            for i in range(6):
                node.servers[devices[i]].verify(e.sid, i)
    finally:
        subprocess.run(["umount", str(small)], check=True)


async def test_background_work_outlives_a_full_metadata_disk(tmp_path, monkeypatch, caplog):
    """The metadata's filesystem filled to the last byte by another process, its ballast
    gone too: garbage collection cannot commit, and says so and waits, instead of ending
    (and the node with it); once there is room it finishes."""
    monkeypatch.setattr(repair_module, "META_RETRY_S", 0.2)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    try:
        for i in range(6):  # only the metadata on the small filesystem: deleting shards
            (tmp_path / f"disk{i}").mkdir()  # must not make room on it
            (small / f"disk{i}").symlink_to(tmp_path / f"disk{i}")
        async with Node(small) as node:
            e = await write_committed(node, os.urandom(256 * 1024))
            await node.meta.txn([], node.store.release_ops([e]))
            # An empty WAL: SQLite's next commit must grow the file (a WAL with room from
            # earlier commits is reused after a checkpoint, and could take a few more).
            with contextlib.closing(sqlite3.connect(small / "meta.db")) as db:
                assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            assert os.path.getsize(small / "meta.db-wal") == 0
            (small / "meta.db.ballast").unlink()  # given up already (its room is filled too)
            filler = small / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                           capture_output=True)
            assert os.statvfs(small).f_bavail == 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(Repairer(node.store, idle_s=0.1).run)
                await trio.sleep(1.0)
                said = [r for r in caplog.records if "wait" in r.getMessage()
                        and "garbage collection" in r.getMessage()]
                assert said and await node.meta.count_prefix(b"g/") == 1
                filler.unlink()
                with trio.fail_after(5):
                    while await node.meta.count_prefix(b"g/"):
                        await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
            assert not any(node.shard_path(e, i).exists() for i in range(6))
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.parametrize("case", ["plain", "record changed", "already queued"])
async def test_scrub_queues_a_repair_only_while_the_record_points_at_the_extent(
        node_factory, case):
    """A shard the scrub finds missing is queued for repair, unless the record that pointed
    at its extent changed meanwhile (deleted, its stripe set released and collected: a
    repair entry for it would never be done), or it is queued already (a disk being
    rebuilt: queued again, it would be repaired twice)."""
    record_changed = case == "record changed"
    async with node_factory() as node:
        e = await write_committed(node, os.urandom(3 * MiB))
        rev = await node.meta.put(b"o/bkt/key", b"a record pointing at e")
        os.unlink(node.shard_path(e, 1))
        if record_changed:
            await node.meta.put(b"o/bkt/key", b"replaced after the scrub listed it")
        if case == "already queued":
            await node.store.queue_repairs([(e, 1)], "disk replaced")
            queued = await node.meta.get(b"r/%s/1" % e.sid.encode())

        async def references(after: bytes):
            yield Reference(e, b"o/bkt/key", rev)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(Scrubber(node.store, references, rate=0).run)
            with trio.fail_after(10):
                while (await scrub.load_state(node.meta)).last is None:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        last = (await scrub.load_state(node.meta)).last
        assert last.checked == 6 and last.damaged == (0 if record_changed else 1)
        assert await node.meta.count_prefix(b"r/") == (0 if record_changed else 1)
        if case == "already queued":  # the entry is the rebuild's, untouched
            assert await node.meta.get(b"r/%s/1" % e.sid.encode()) == queued


@pytest.fixture
def freezable_disk(tmp_path):
    """``disk2`` on a real ext4 filesystem (on a loop device): ``fsfreeze --freeze`` makes
    every write to it block in the kernel until it is thawed, as a hung disk's do."""
    image = tmp_path / "disk2.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    mnt = tmp_path / "disk2"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    yield mnt
    subprocess.run(["fsfreeze", "--unfreeze", str(mnt)], capture_output=True)  # if frozen
    # lazy: a failed test may leave a call of the device's write thread still in there
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)


async def test_writes_give_up_on_a_hung_disk(node_factory, freezable_disk, caplog):
    """A disk whose writes hang (its filesystem frozen mid-PUT) costs that PUT its straggler
    grace (3 s once the other five shards have answered), not the 30 s shard timeout, and
    the PUTs after it nothing: its shards are counted as failed and queued for repair. Once
    the disk answers again, the abandoned shards are aborted, leaving nothing behind, and
    the disk takes shards again."""
    assert store_module.SHARD_OP_TIMEOUT_S >= 30  # the defaults, as a node runs them
    freeze = ["fsfreeze", "--freeze", str(freezable_disk)]
    thaw = ["fsfreeze", "--unfreeze", str(freezable_disk)]
    data = os.urandom(6 * MiB + 5)

    async def body():
        yield data[:3 * MiB]
        await trio.sleep(0.2)  # every shard is open and has been appended to
        subprocess.run(freeze, check=True)
        yield data[3 * MiB:]

    def d2_index(e) -> int:
        return node.store.pools[e.pool].devices_for(e.sid).index("d2")

    async with node_factory() as node, trio.open_nursery() as nursery:
        async def watchdog():  # so that a write that waits for the disk ends, and fails below
            await trio.sleep(20)
            subprocess.run(thaw, capture_output=True)
        nursery.start_soon(watchdog)
        took = []
        extents = []
        for source in (body(), chunks(data)):
            started = trio.current_time()
            extents.append(await node.store.write(source))
            took.append(trio.current_time() - started)
            await node.meta.txn([], node.store.commit_ops(extents[-1:]))
        nursery.cancel_scope.cancel()
        subprocess.run(thaw, capture_output=True)  # unless the watchdog did
        assert took[0] < 10, f"the first PUT waited {took[0]:.1f} s for the hung disk"
        # the second PUT did not wait out a grace: d2 refused its shard at once
        assert took[1] < transport.STRAGGLER_MIN_S, \
            f"the second PUT waited {took[1]:.1f} s for the hung disk"
        assert any(extents[1].sid in r.getMessage() and "has not returned" in r.getMessage()
                   for r in caplog.records)
        for e in extents:
            assert await node.meta.get(b"r/%s/%d" % (e.sid.encode(), d2_index(e))) is not None
            assert await read_all(node.store.read(e)) == data
        with trio.fail_after(10):
            while list((freezable_disk / "tmp").iterdir()):
                await trio.sleep(0.05)
        assert list(node.servers["d2"].list_shards()) == []
        e = await write_committed(node, data)  # the disk answers again: all six shards
        assert await node.meta.get(b"r/%s/%d" % (e.sid.encode(), d2_index(e))) is None
        assert node.shard_path(e, d2_index(e)).exists()


async def test_a_disk_that_stalls_briefly_keeps_its_shards(node_factory, freezable_disk):
    """A disk whose writes stall for a second (its filesystem frozen, then thawed) is slower
    than the others, not hung: it answers within its straggler grace, so the PUT waits for
    it and its shard is written, not dropped and queued for repair."""
    data = os.urandom(6 * MiB + 5)

    async def body():
        yield data[:3 * MiB]
        await trio.sleep(0.2)
        subprocess.run(["fsfreeze", "--freeze", str(freezable_disk)], check=True)
        thaw_at.set()
        yield data[3 * MiB:]

    async def thaw_later():
        await thaw_at.wait()
        await trio.sleep(1.0)
        subprocess.run(["fsfreeze", "--unfreeze", str(freezable_disk)], check=True)

    thaw_at = trio.Event()
    async with node_factory() as node, trio.open_nursery() as nursery:
        nursery.start_soon(thaw_later)
        started = trio.current_time()
        e = await node.store.write(body())
        await node.meta.txn([], node.store.commit_ops([e]))
        assert trio.current_time() - started >= 1.0  # it did wait for the stalled disk
        assert await node.meta.count_prefix(b"r/") == 0
        d2 = node.store.pools[e.pool].devices_for(e.sid).index("d2")
        assert node.shard_path(e, d2).exists()
        node.servers["d2"].verify(e.sid, d2)
        assert await read_all(node.store.read(e)) == data


async def test_reads_go_around_a_hung_disk(node_factory, monkeypatch):
    """A disk whose reads hang costs a GET one hedge delay, not one per batch: once a read
    has gone unanswered for STALLED_AFTER_S, later reads skip the disk and decode from parity.
    Its shards are not queued for repair (they are not known to be bad), and once the read
    returns the disk is read again.

    The hang is real: the shard file is replaced by a FIFO, whose open() blocks in the
    kernel until a writer comes, as a read from a hung disk blocks."""
    hedge = 2.0
    monkeypatch.setattr(store_module, "HEDGE_AFTER_S", hedge)
    monkeypatch.setattr(store_module, "READ_BATCH_SEGMENTS", 2)
    monkeypatch.setattr(transport, "STALLED_AFTER_S", 0.5)
    data = os.urandom(16 * SEGMENT_SIZE)  # 8 batches

    def skipped(device) -> float:
        return REGISTRY.get_sample_value("appliance_shard_reads_skipped_total",
                                         {"device": device}) or 0.0

    async with node_factory() as node:
        e = await write_committed(node, data)
        device = node.store.pools[e.pool].devices_for(e.sid)[0]  # holds data shard 0
        client = node.store.clients[device]
        shard = node.shard_path(e, 0)
        os.rename(shard, f"{shard}.real")
        os.mkfifo(shard)
        before = skipped(device)
        started = trio.current_time()
        assert await read_all(node.store.read(e)) == data
        took = trio.current_time() - started
        # the first batch waited a hedge (no read-ahead here); the other seven did not
        assert took < 2 * hedge, f"the GET took {took:.1f} s: it raced the hung disk again"
        assert skipped(device) - before == 7
        assert await node.meta.get(b"r/%s/0" % e.sid.encode()) is None
        assert client.reads_stalled()

        # The disk answers again: the hung opens return (and their reads fail, unheard).
        writer = os.open(shard, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if nobody waits
        os.replace(f"{shard}.real", shard)
        os.close(writer)
        with trio.fail_after(10):
            while client.reads_stalled():
                await trio.sleep(0.05)
        assert await read_all(node.store.read(e)) == data
        assert skipped(device) == before + 7


async def test_repair_leaves_an_unavailable_devices_shards_queued_and_goes_on(node_factory,
                                                                              caplog):
    """Shards queued for a device that is not attached are not tried; they stay queued, and a
    queue of them longer than one round does not keep other shards from their repair."""
    async with node_factory() as node:
        extents = sorted([await write_committed(node, os.urandom(MiB + n)) for n in range(4)],
                         key=lambda e: e.sid)
        attached = node.clients["d5"]
        node.clients["d5"] = UnavailableClient("d5", "not mounted")
        try:
            for e in extents[:3]:  # queued first (keys in sid order), all for d5
                await node.store.queue_repair(
                    e, node.store.pools[e.pool].devices_for(e.sid).index("d5"), "d5 is away")
            last = extents[3]
            lost = next(i for i, d in enumerate(node.store.pools[last.pool].devices_for(last.sid))
                        if d != "d5")
            os.unlink(node.shard_path(last, lost))
            await node.store.queue_repair(last, lost, "missing")
            repairer = Repairer(node.store)
            assert [await repairer.repair_some(limit=2) for _ in range(2)] == [0, 1]
            assert node.shard_path(last, lost).exists()
            assert await node.meta.count_prefix(b"r/") == 3
            assert not [r for r in caplog.records if "failed" in r.getMessage()]  # not tried
        finally:
            node.clients["d5"] = attached


async def test_a_write_that_cannot_reach_its_quorum_fails_at_once(node_factory):
    """With two of six disks unavailable a 4+2 write can make only four shards durable, one
    short of its K+1 quorum: it fails with StoreUnavailable as soon as every shard has
    answered, without waiting for a quorum that cannot come, and leaves no shard behind."""
    async with node_factory() as node:
        for d in ("d1", "d4"):
            node.clients[d] = UnavailableClient(d, "not mounted")
        started = trio.current_time()
        with pytest.raises(StoreUnavailable, match="only 4 of 6 shards durable"):
            await node.store.write(chunks(os.urandom(3 * MiB)))
        assert trio.current_time() - started < transport.STRAGGLER_MIN_S
        for d, server in node.servers.items():
            assert list(server.list_shards()) == [], d


async def test_a_disk_back_from_the_dead_loses_its_cut_off_writes_not_new_ones(node_factory):
    """d3 goes away in the middle of a write (its directory moved elsewhere, as a disk that
    drops off: the partial shard file stays on it, out of reach of the abort) and comes back
    while the node runs. The write went on with five shards. Once d3 is attached again, the
    repair task's clean-up removes that partial file, and not the one of a write in flight
    on d3 at that moment, which then completes on all six disks."""
    data = os.urandom(6 * MiB + 5)
    async with node_factory() as node:
        disk, away = node.tmp / "disk3", node.tmp / "disk3.away"

        async def cut_off():
            yield data[:3 * MiB]
            await trio.sleep(0.2)  # every shard is open and has been appended to
            away_client = node.clients["d3"]
            disk.rename(away)
            node.store.set_client("d3", UnavailableClient("d3", "the disk went away"))
            away_client.submit(away_client.server.close)  # as disks.Devices detaches it
            away_client.close()
            yield data[3 * MiB:]

        first = await node.store.write(cut_off())
        await node.meta.txn([], node.store.commit_ops([first]))
        d3_index = node.store.pools[first.pool].devices_for(first.sid).index("d3")
        assert [p.name.split(".")[0] for p in (away / "tmp").iterdir()] == [first.sid]

        away.rename(disk)  # back, while the node runs
        node.servers["d3"] = ShardServer(disk, "d3")
        node.store.set_client("d3", InProcessClient(node.servers["d3"]))
        resume = trio.Event()

        async def in_flight():
            yield data[:3 * MiB]
            await resume.wait()
            yield data[3 * MiB:]

        async with trio.open_nursery() as nursery:
            second = []
            nursery.start_soon(lambda: write_into(node, in_flight(), second))
            with trio.fail_after(10):
                while len(node.servers["d3"].tmp_sids()) < 2:
                    await trio.sleep(0.01)
            assert await node.store.clean_returned() == 1
            left = node.servers["d3"].tmp_sids()
            assert len(left) == 1 and first.sid not in left
            resume.set()
        assert await node.meta.count_prefix(b"r/") == 1  # first's shard on d3, nothing else
        assert await node.meta.get(b"r/%s/%d" % (first.sid.encode(), d3_index)) is not None
        assert node.servers["d3"].tmp_sids() == set()
        for e in (first, second[0]):
            assert await read_all(node.store.read(e)) == data
        d3 = node.store.pools[second[0].pool].devices_for(second[0].sid).index("d3")
        assert node.shard_path(second[0], d3).exists()


async def write_into(node, body, out: list) -> None:
    extent = await node.store.write(body)
    await node.meta.txn([], node.store.commit_ops([extent]))
    out.append(extent)


async def test_aborted_body_leaves_nothing(node_factory):
    async def body():
        yield os.urandom(3 * MiB)
        await trio.sleep(0.2)  # shard files are open by now
        yield os.urandom(3 * MiB)
        await trio.sleep(0.2)  # and a batch is written
        raise ConnectionResetError("client went away")

    async with node_factory() as node:
        fds = len(os.listdir("/proc/self/fd"))
        with pytest.raises(ConnectionResetError):
            await node.store.write(body())
        assert all(not list(s.list_shards()) for s in node.servers.values())
        assert await node.meta.count_prefix(b"w/") == 0
        # no partial shard file, and no shard file left open
        assert [f for s in node.servers.values() for f in (s.root / "tmp").iterdir()] == []
        assert len(os.listdir("/proc/self/fd")) == fds


async def test_replaced_and_deleted_objects_are_garbage_collected(node_factory):
    async with node_factory() as node:
        await node.ns.create_bucket("b", "root")
        for gen in range(3):
            e = await node.ns.write_data(chunks(os.urandom(2 * MiB)))
            rec = ObjectRecord(key="k", size=e.size, etag="x", mtime=0, extents=[e])
            await node.ns.commit_object("b", rec)
        await node.ns.delete_object("b", "k")
        assert await node.meta.count_prefix(b"g/") == 3
        assert await node.store.collect_garbage() == 3
        assert all(not list(s.list_shards()) for s in node.servers.values())
        assert (await fsck(node.meta, node.store, node.ns)).clean


async def test_crash_leaves_pending_write_that_recover_cleans(node_factory):
    """Simulates a crash between shard writes and the commit: the intent survives, recover()
    hands it to GC, and fsck then finds no orphan."""
    async with node_factory() as node:
        await node.store.write(chunks(os.urandom(2 * MiB)))  # never committed
        assert await node.meta.count_prefix(b"w/") == 1
    async with node_factory() as node:  # "restart"
        assert await node.store.recover() == 1
        await node.store.collect_garbage()
        report = await fsck(node.meta, node.store, node.ns)
        assert report.clean and report.shards == 0


async def test_slow_shard_is_hedged(node_factory, monkeypatch):
    data = os.urandom(2 * MiB)
    async with node_factory() as node:
        e = await write_committed(node, data)
        slow_dev = node.store.pools[e.pool].devices_for(e.sid)[0]
        client = node.store.clients[slow_dev]

        def slow(real):
            def slow_read(*a):
                import time
                time.sleep(3)
                return real(*a)
            return slow_read

        # a slow disk: every kind of read from it takes 3 s
        monkeypatch.setattr(client.server, "read", slow(client.server.read))
        monkeypatch.setattr(client.server, "read_into", slow(client.server.read_into))
        with trio.fail_after(2.5):
            assert await read_all(node.store.read(e)) == data


@pytest.mark.parametrize("chunk_sizes", [[SEGMENT_SIZE + 1], [3 * SEGMENT_SIZE + 5],
                                         [10, SEGMENT_SIZE, 7], [SEGMENT_SIZE] * 3])
async def test_any_chunking_of_the_body_reads_back(node_factory, chunk_sizes):
    """Regression: a first chunk larger than a segment used to become one oversized segment."""
    data = os.urandom(sum(chunk_sizes))

    async def body():
        off = 0
        for n in chunk_sizes:
            yield data[off:off + n]
            off += n

    async with node_factory() as node:
        e = await node.store.write(body())
        assert await read_all(node.store.read(e)) == data


async def test_cauchy_pool_survives_m_losses(node_factory):
    """ec:4+5 uses Cauchy Reed-Solomon (Vandermonde is only MDS up to M=4): any 5 may go."""
    data = os.urandom(2 * MiB + 99)
    async with node_factory(pool="ec:4+5", disks=9) as node:
        e = await write_committed(node, data)
        for i in (0, 2, 3, 6, 8):
            os.unlink(node.shard_path(e, i))
        assert await read_all(node.store.read(e)) == data


async def test_repair_rate_is_a_runtime_knob(node_factory):
    from appliance.store import ratelimit, repair

    async with node_factory() as node:
        worker = Repairer(node.store, rate=1e9, idle_s=0.05)
        await ratelimit.set_rate(node.meta, repair.RATE_KEY, 5e6)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
        assert worker.rate == 5e6


async def test_read_ahead_fetches_each_segment_once(node_factory):
    b = READ_BATCH_SEGMENTS
    data = os.urandom((2 * b + 1) * MiB)
    async with node_factory() as node, trio.open_nursery() as nursery:
        await nursery.start(node.store.run)
        e = await write_committed(node, data)
        calls = []
        real = node.store.read_segments

        async def counting(extent, first, count, *a):
            calls.append((first, count))
            return await real(extent, first, count, *a)

        node.store.read_segments = counting
        assert await read_all(node.store.read(e)) == data
        assert sorted(calls) == [(0, b), (b, b), (2 * b, 1)]
        calls.clear()
        assert await read_all(node.store.read(e, 100, 200)) == data[100:200]
        assert calls == [(0, 1)]
        nursery.cancel_scope.cancel()


async def test_delete_bucket_racing_puts_never_strands_an_object(node_factory):
    """Once DeleteBucket succeeds no object of that bucket may exist (it would reappear if the
    bucket were created again)."""
    from appliance.namespace import BucketNotEmpty, NoSuchBucket
    from appliance.store import Extent

    async with node_factory() as node:
        ns = node.ns
        for _ in range(30):
            await ns.create_bucket("race", "root")

            async def putter():
                for i in range(50):
                    rec = ObjectRecord(key=f"k{i}", size=3, etag="x", mtime=0,
                                       extents=[Extent(3, inline=b"abc")])
                    try:
                        await ns.commit_object("race", rec)
                    except NoSuchBucket:
                        return
                    await trio.sleep(0)

            async def deleter():
                while True:
                    try:
                        await ns.delete_bucket("race")
                        return
                    except BucketNotEmpty:
                        for r in await ns.list_objects("race"):
                            await ns.delete_object("race", r.key)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(putter)
                nursery.start_soon(deleter)
            assert await ns.get_bucket("race") is None
            assert await ns.list_objects("race") == []


@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=8),
       size=st.sampled_from([1, 7, 64, 1000]))
@settings(max_examples=300, deadline=None)
def test_cut_segments_exact_sizes_same_bytes(data, cuts, size):
    from appliance.store.store import cut_segments

    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])] or [b""]

    async def go():
        async def rest():
            for p in pieces[1:]:
                yield p
        return [b"".join(s) async for s in cut_segments(pieces[:1], rest(), size)]

    out = trio.run(go)
    assert b"".join(out) == data
    assert all(len(s) == size for s in out[:-1])
    assert not out or 0 < len(out[-1]) <= size


def resident_bytes(path) -> int:
    """Bytes of ``path`` in the page cache (util-linux fincore, i.e. mincore(2))."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


async def test_parity_is_written_past_the_page_cache(node_factory):
    """Data shards stay cached for the reads that follow a write; parity, read only after a
    loss, goes to disk without taking page cache (O_DIRECT) and still reads back."""
    data = os.urandom(8 * MiB + 3)
    async with node_factory() as node:
        e = await write_committed(node, data)
        size = {i: node.shard_path(e, i).stat().st_size for i in range(6)}
        for i in range(4):
            assert resident_bytes(node.shard_path(e, i)) >= size[i]  # whole pages
        for i in (4, 5):
            # only the unaligned tail (< one 4 KiB block) goes through the page cache
            assert resident_bytes(node.shard_path(e, i)) <= 8192, i
        for i in (0, 1):
            os.unlink(node.shard_path(e, i))
        assert await read_all(node.store.read(e)) == data
