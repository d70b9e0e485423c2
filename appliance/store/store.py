"""The shard store: streams data into erasure-coded stripe sets and reads it back verified.

Write (DESIGN.md §4): a pending-write intent ``w/<sid>`` is recorded first; the body is cut into
segments, each encoded into K+M fragments and streamed to the K+M shard servers of the stripe
set's placement group; the write succeeds when at least K+1 shards are durable. Shards that
failed are queued for repair. The caller then commits a record pointing at the extent in a
metadata transaction that includes :meth:`Store.commit_ops` (clearing the intent); a crash
before that leaves an intent, and :meth:`Store.recover` turns it into garbage collection.

Read: the K data shards are read first (no decode work), each fragment's crc32c verified by the
shard server; a missing, corrupt or slow shard makes the read go to parity (hedging), and every
shard found broken is queued for repair (heal on read). Fewer than K good shards: StoreReadError,
never wrong bytes.

Metadata keys owned by the store: ``c/pool/<name>`` pool config and PG table,
``w/<sid>`` pending writes, ``r/<sid>/<index>`` shards to repair, ``g/<sid>`` stripe sets to
garbage-collect.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator

import trio

from ..meta import Compare, Delete, MetaStore, Put
from . import metrics
from ..buffers import unfilled_bytearray
from ..diskspace import is_full_error
from .codec import PoolSpec, codec_for
from .directio import STAGING_SIZE
from .extent import SEGMENT_SIZE, Extent
from .placement import Device, build_pg_table, pg_of
from .shardfile import ShardError
from .transport import DeviceUnavailable, ShardClient, Tally, append_many

log = logging.getLogger(__name__)

INLINE_MAX = 4096
"""Objects up to this size live inside their metadata record (no shard files, no extra fsync)."""
BATCH_SEGMENTS = 4
"""Segments sent to a shard server per call: amortises thread hops, bounds memory to
BATCH_SEGMENTS * segment size * (K+M)/K per in-flight batch."""
READ_BATCH_SEGMENTS = 16
"""Segments a streaming read asks each shard server for per call."""
READ_AHEAD = 1
"""Batches a streaming read fetches ahead of the one being sent: memory per GET stream is at
most (1 + READ_AHEAD) * READ_BATCH_SEGMENTS segments, 32 MiB (Ceph RGW's GET window is 16 MiB).
Measured on a 1 GiB GET, 5 runs each (MB/s, noisy by +-15%): batch 4 / ahead 1: 1,090; 4/2:
1,050; 4/4: 1,030; 8/1: 1,130; 8/2: 1,060-1,150; 16/1: 1,220. With segments read straight
into place (2026-11-21, interleaved A/B, 4 pairs): 16/1 1,650-1,780 MB/s at 0.70-0.76
CPU-s/GiB against 8/1 1,520-1,710 at 0.77-0.84; 4/1 was below 8/1."""
HEDGE_AFTER_S = 0.25
"""A shard read slower than this gets a parity read raced against it."""
SHARD_OP_TIMEOUT_S = 30.0
"""A shard server that does not answer one write-path call (create, append, commit, delete)
within this is treated as failed for that stripe set: the write goes on without it (or fails
below quorum) and the call is abandoned. An in-process call stuck in the kernel still holds
its device's write thread; the shard's abort runs after it, and until it returns the device
refuses new shard writes at once (transport.InProcessClient). 30 s as Ceph's
osd_op_complaint_time, and below the 60 s read timeout of AWS SDKs, so a client's first PUT
that meets a hung disk is slow but not failed."""
DEFAULT_PG_COUNT = 256


def _deferred_delete_key(device: str, sid: str = "", index: int | None = None) -> bytes:
    """``d/<device>/<sid>/<index>``: a shard to delete once ``device`` is attached; without
    ``sid``, the prefix of the device's entries."""
    key = f"d/{device}/"
    if sid:
        key += f"{sid}/{index}"
    return key.encode()


class StoreError(Exception):
    pass


class StoreUnavailable(StoreError):
    """Too few shard servers answered to meet the write quorum."""


class StoreFull(StoreUnavailable):
    """The write quorum was missed because disks are within their free-space reserve (or out
    of space): with those disks healthy, it would have been met (see diskspace)."""


class StoreReadError(StoreError):
    """Fewer than K good shards of a segment could be read: the data cannot be returned."""


async def cut_segments(first: list, rest: AsyncIterator[bytes], size: int
                       ) -> AsyncIterator[list[bytes | memoryview]]:
    """The chunks ``first`` then ``rest`` cut into ``size``-byte segments (the last may be
    shorter), each as the list of pieces (chunks, or memoryview slices of them) that make it up.

    Nothing is copied here: the encoder copies the pieces straight into the data fragments
    (:meth:`Codec.encode`), where a join would be a second copy of every byte."""
    pending: collections.deque = collections.deque()
    have = 0
    chunks = iter(first)
    while True:
        chunk = next(chunks, None)
        if chunk is None:
            try:
                chunk = await anext(rest)
            except StopAsyncIteration:
                break
        if chunk:
            pending.append(chunk)
            have += len(chunk)
            while have >= size:
                parts, need = [], size
                while need:
                    head = pending[0]
                    if len(head) <= need:
                        parts.append(pending.popleft())
                        need -= len(head)
                    else:
                        view = memoryview(head)
                        parts.append(view[:need])
                        pending[0] = view[need:]
                        need = 0
                have -= size
                yield parts
    if have:
        yield list(pending)


class _Placement:
    """Buffers for one healthy read of segments: ``dests[i][n]`` is the writable slice of
    segment n's buffer that data fragment i's share goes to, after ``skip`` header bytes.

    A data shard's buffers are only trusted once its ``read_into`` returned: a read that lost
    a hedge race or failed may leave (or keep writing) anything in them, and then the
    segments are decoded from fragments instead (see :meth:`complete`)."""

    def __init__(self, codec, lengths: list[int], skip: int, layouts: list[list[tuple[int, int]]]):
        self.codec, self.lengths, self.skip = codec, lengths, skip
        self.buffers = [unfilled_bytearray(n) for n in lengths]  # the shares tile each one
        views = [memoryview(buf) for buf in self.buffers]
        self.dests = [[view[slice(*layout[i])] for view, layout in zip(views, layouts)]
                      for i in range(codec.spec.k)]

    @classmethod
    def plan(cls, pool: Pool, lengths: list[int]) -> _Placement | None:
        layouts = [pool.codec.data_layout(n) for n in lengths]
        if not layouts or any(x is None for x in layouts):
            return None
        return cls(pool.codec, lengths, layouts[0][0], [x[1] for x in layouts])

    def complete(self, frags: dict) -> bool:
        """Whether every data shard was read into place and its headers are as planned."""
        k = self.codec.spec.k
        placed = [frags.get(i) for i in range(k)]
        if not all(isinstance(f, _PlacedShard) for f in placed):
            return False
        return all(self.codec.data_headers_match([f.ends[n][0] for f in placed], length)
                   for n, length in enumerate(self.lengths))

    def segments(self) -> list[memoryview]:
        return [memoryview(buf).toreadonly() for buf in self.buffers]


class _PlacedShard:
    """A data shard read into a :class:`_Placement`: per segment, the fragment's bytes
    around its share as (head, tail)."""

    def __init__(self, dests: list[memoryview], ends: list[tuple[bytes, bytes]]):
        self.dests, self.ends = dests, ends

    def fragment(self, n: int) -> bytes:
        head, tail = self.ends[n]
        return b"".join((head, self.dests[n], tail))


def _fragment(f: list[bytes] | _PlacedShard, n: int) -> bytes:
    return f.fragment(n) if isinstance(f, _PlacedShard) else f[n]


class _Prefetch:
    """``fn(*args)`` run ahead of need in the store's nursery, or on demand without one."""

    def __init__(self, fn, *args):
        self._fn, self._args = fn, args
        self._done = trio.Event()
        self._value = self._error = None
        self._started = False

    def start(self, nursery: trio.Nursery) -> None:
        self._started = True  # now, not when the task first runs: result() must not race it
        nursery.start_soon(self.run)

    async def run(self) -> None:
        self._started = True
        try:
            self._value = await self._fn(*self._args)
        except Exception as e:  # delivered to whoever asks for the result
            self._error = e
        finally:  # also when the store shuts down under us (then neither is set)
            self._done.set()

    async def result(self):
        if not self._started:
            await self.run()
        await self._done.wait()
        if self._error is not None:
            raise self._error
        if self._value is None:
            raise StoreError("read-ahead was cancelled (store shutting down)")
        return self._value


class Pool:
    """A pool's spec, PG table and epoch as held in the metadata store."""

    def __init__(self, name: str, spec: PoolSpec, table: list[list[str]], epoch: int):
        self.name, self.spec, self.table, self.epoch = name, spec, table, epoch
        self.codec = codec_for(spec.name)

    @classmethod
    def from_record(cls, rec: dict) -> Pool:
        """The pool held in its ``c/pool/<name>`` record ({"spec", "epoch", "table"})."""
        spec = PoolSpec.parse(rec["spec"])
        return cls(spec.name, spec, rec["table"], rec["epoch"])

    def devices_for(self, sid: str) -> list[str]:
        return self.table[pg_of(sid, len(self.table))]


def _j(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_PROCESS_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
"""Errors of the reading process (out of descriptors or memory), not of the shard."""


def shard_at_fault(e: BaseException) -> bool:
    """Whether a failed shard read says the shard is bad (missing, corrupt, unreadable), so
    that it is to be repaired; not when the reader ran out of descriptors or memory, nor
    when the shard's device is not attached."""
    if isinstance(e, ShardError):
        return True
    if isinstance(e, DeviceUnavailable):
        return False
    return isinstance(e, OSError) and e.errno not in _PROCESS_ERRNOS


def _repair_key(sid: str, index: int) -> bytes:
    return b"r/%s/%d" % (sid.encode(), index)


def _repair_entry(extent: Extent, index: int, reason: str) -> Put:
    """``r/<sid>/<index>``: shard ``index`` of ``extent`` is to be rewritten."""
    return Put(_repair_key(extent.sid, index),
               _j({"extent": extent.to_json(), "reason": reason, "t": time.time()}))


class Store:
    """Use :meth:`Store.open`. ``clients`` maps device id to its :class:`ShardClient`."""

    def __init__(self, meta: MetaStore, clients: dict[str, ShardClient], pools: dict[str, Pool],
                 default_pool: str):
        self.meta = meta
        self.clients = clients
        self.pools = pools
        self.default_pool = default_pool
        self._repair_queued: set[tuple[str, int]] = set()
        self._work = trio.Event()
        self._tasks: trio.Nursery | None = None
        self._returned: set[str] = set()  # attached while running, partial files unchecked
        for device, client in clients.items():
            metrics.DEVICE_UP.labels(device).set(int(client.available))

    def set_client(self, device: str, client: ShardClient) -> None:
        """Reach ``device`` through ``client`` from now on (a disk attached, detached or
        replaced while running). Writes in flight keep the client they started with."""
        self.clients[device] = client
        metrics.DEVICE_UP.labels(device).set(int(client.available))
        if client.available:
            self._returned.add(device)
        self._work.set()  # repair and deferred deletes may now reach the device

    @classmethod
    async def open(cls, meta: MetaStore, clients: dict[str, ShardClient], pool: str = "ec:4+2",
                   devices: list[Device] | None = None, pg_count: int = DEFAULT_PG_COUNT
                   ) -> Store:
        """Load the pool ``pool`` from metadata, creating it (and its PG table) on first start."""
        spec = PoolSpec.parse(pool)
        key = b"c/pool/" + spec.name.encode()
        kv = await meta.get(key)
        if kv is None:
            devs = devices or [Device(d) for d in clients]
            table = build_pg_table(pg_count, devs, spec.width, spec.m)
            rec = {"spec": spec.name, "epoch": 1, "table": table}
            res = await meta.txn([Compare(key, 0)], [Put(key, _j(rec))])
            if not res.succeeded:
                kv = await meta.get(key)
        rec = json.loads(kv.value) if kv else rec
        unknown = {d for row in rec["table"] for d in row} - set(clients)
        if unknown:
            raise StoreError(f"pool {spec.name} places shards on devices not attached: "
                             f"{sorted(unknown)}")
        pools = {spec.name: Pool.from_record(rec)}
        return cls(meta, clients, pools, spec.name)

    # -- memory ----------------------------------------------------------------------------
    def write_footprint(self, length: int | None, pool: str | None = None) -> int:
        """Bytes of buffers one :meth:`write` of ``length`` bytes (None: not known) holds at
        most, for admission control (appliance.membudget): the batch being cut from the
        body, one queued, one being encoded and its K+M fragments, and, with in-process
        shard servers, the O_DIRECT staging of the parity shards (two buffers each). 0 for
        an inline object. 26 MiB for ec:4+2; 256 parallel PUTs of 32 MiB averaged 22 MiB
        of gateway memory each."""
        if length is not None and length <= INLINE_MAX:
            return 0
        spec = self.pools[pool or self.default_pool].spec
        batch = BATCH_SEGMENTS * SEGMENT_SIZE
        if length is not None:
            batch = min(batch, -(-length // SEGMENT_SIZE) * SEGMENT_SIZE)
        staging = 0 if spec.replicated else spec.m * 2 * STAGING_SIZE
        return 3 * batch + batch * spec.width // spec.k + staging

    def read_footprint(self, extents: list[Extent], start: int, end: int) -> int:
        """Bytes of buffers :meth:`read_many` of ``[start, end)`` holds at most, for
        admission control: the batch of segments being sent and READ_AHEAD batches fetched
        ahead, one extent at a time. 0 when only inline data is read. 32 MiB for a large
        range; 128 GETs whose clients did not read held ~34 MiB of gateway memory each. This
        is a healthy read, whose shares are read straight into the segments; a degraded read
        also holds the fragments it decodes from, up to twice as much while it lasts."""
        most, base = 0, 0
        window = (1 + READ_AHEAD) * READ_BATCH_SEGMENTS
        for e in extents:
            lo, hi = max(start - base, 0), min(end - base, e.size)
            if lo < hi and e.inline is None:
                seg = e.segment_size
                most = max(most, min(window, (hi - 1) // seg - lo // seg + 1) * seg)
            base += e.size
        return most

    # -- writing ---------------------------------------------------------------------------
    async def write(self, body: AsyncIterable[bytes], *, pool: str | None = None) -> Extent:
        """Store ``body``; returns its extent once at least K+1 shards are durable.

        ``body`` yields bytes-like chunks of any size, which must not change after they are
        yielded: they are encoded later, without a copy. Small bodies (<= INLINE_MAX) come back
        as an inline extent. Raises StoreUnavailable (StoreFull when disks are full); an
        exception from ``body`` (a client that went away, a bad chunk signature) aborts the
        write and propagates. Nothing is referenced until the caller commits the extent.
        """
        it = aiter(body)
        head: list = []
        have = 0
        async for chunk in it:
            head.append(chunk)
            have += len(chunk)
            if have > INLINE_MAX:
                break
        else:
            return Extent(have, inline=b"".join(head))
        p = self.pools[pool or self.default_pool]
        sid = secrets.token_hex(16)
        # The writer's pid lets a supervisor release the writes of a process that died.
        await self.meta.put(b"w/" + sid.encode(),
                            _j({"pool": p.name, "t": time.time(), "pid": os.getpid()}))
        try:
            size, failed = await self._write_shards(p, sid, head, it)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._destroy(p, sid, list(range(p.spec.width)))
                await self.meta.delete(b"w/" + sid.encode())
            raise
        extent = Extent(size, sid=sid, pool=p.name)
        for index in failed:
            await self.queue_repair(extent, index, "write failed")
        return extent

    async def _write_shards(self, p: Pool, sid: str, head: list,
                            rest: AsyncIterator[bytes]) -> tuple[int, list[int]]:
        """Stream the body into K+M shards; returns (size, indices of failed shards). Every
        shard left open on the way out (an error, a cancellation) is aborted."""
        spec, codec = p.spec, p.codec
        devices = p.devices_for(sid)
        clients = [self.clients[d] for d in devices]
        header = {"pool": spec.name, "seg": SEGMENT_SIZE, "frag": codec.fragment_size(SEGMENT_SIZE)}
        handles: dict[int, int] = {}  # shard index -> open handle, while it is healthy
        failed: list[int] = []
        full: list[int] = []  # those of failed refused for lack of space
        size = 0

        def fail(index: int, e: Exception) -> None:
            if not isinstance(e, DeviceUnavailable):  # said once, when the node started
                log.warning("shard %s.%d on %s failed: %s", sid, index, devices[index], e)
            metrics.SHARD_FAILURES.labels(devices[index], "write", type(e).__name__).inc()
            failed.append(index)
            if is_full_error(e):
                full.append(index)

        def unavailable(message: str, tolerable: int) -> StoreUnavailable:
            """StoreFull when the full disks made the difference: without them no more than
            ``tolerable`` shards would have failed."""
            if full and len(failed) - len(full) <= tolerable:
                names = ", ".join(devices[i] for i in full)
                return StoreFull(f"{message}; out of space on {names}")
            return StoreUnavailable(message)

        def check_quorum() -> None:
            if len(failed) > spec.m:  # out of reach: stop early
                raise unavailable(f"{len(failed)} of {spec.width} shard writes failed", spec.m)

        async def each_shard(op, indices) -> None:
            """``op(index)`` for every shard concurrently. A shard whose call fails, or has
            not answered after SHARD_OP_TIMEOUT_S or its straggler grace once a write quorum
            has (transport.Tally), is dropped."""
            indices = list(indices)
            tally = Tally(len(indices), spec.write_quorum)
            answered: set[int] = set()

            async def run(index: int) -> None:
                try:
                    await op(index)
                except (OSError, ShardError) as e:
                    fail(index, e)
                    await abort(index)
                answered.add(index)
                tally.finished(index not in failed)

            async with trio.open_nursery() as nursery:
                for index in indices:
                    nursery.start_soon(run, index)
                await tally.wait(SHARD_OP_TIMEOUT_S)
                nursery.cancel_scope.cancel()
            for index in indices:
                if index not in answered:
                    fail(index, trio.TooSlowError("no answer in time"))
                    await abort(index)

        async def create(index: int) -> None:
            # Parity is read only when a shard is lost: written past the page cache it costs
            # less CPU and evicts nothing (docs/benchmarks.md).
            handles[index] = await clients[index].create(sid, index, header,
                                                         cached=spec.read_by_default(index))

        async def commit(index: int) -> None:
            await clients[index].commit(handles.pop(index))
            metrics.SHARD_OPS.labels(devices[index], "write").inc()

        async def abort(index: int) -> None:
            handle = handles.pop(index, None)
            if handle is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    try:
                        await clients[index].abort(handle)
                    except (OSError, ShardError) as e:
                        log.warning("could not abort shard %s.%d: %s", sid, index, e)

        def encode_batch(segments: list[list[bytes | memoryview]]) -> list[list[bytearray]]:
            per_shard = [[] for _ in range(spec.width)]
            for seg in segments:
                for i, frag in enumerate(codec.encode(seg)):
                    per_shard[i].append(frag)
            return per_shard

        async def writer(batches: trio.MemoryReceiveChannel) -> None:
            async for segments in batches:
                # In a worker thread: the ISA-L encoder releases the GIL, so the event loop
                # keeps receiving (and hashing) the next batch meanwhile.
                per_shard = await trio.to_thread.run_sync(encode_batch, segments)
                live = sorted(handles)
                errors = await append_many(
                    [(clients[i], handles[i], per_shard[i]) for i in live], SHARD_OP_TIMEOUT_S,
                    quorum=spec.write_quorum)
                for index, e in zip(live, errors):
                    if e is not None:
                        fail(index, e)
                        await abort(index)
                check_quorum()

        try:
            await each_shard(create, range(spec.width))
            check_quorum()
            # The body is cut into batches here while the writer encodes and stores the
            # previous one.
            to_write, batches = trio.open_memory_channel(1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, batches)
                try:
                    async with to_write:
                        batch: list[list[bytes | memoryview]] = []
                        async for segment in cut_segments(head, rest, SEGMENT_SIZE):
                            batch.append(segment)
                            size += sum(map(len, segment))
                            if len(batch) == BATCH_SEGMENTS:
                                await to_write.send(batch)
                                batch = []
                        if batch:
                            await to_write.send(batch)
                except BaseException:
                    nursery.cancel_scope.cancel()
                    raise
            await each_shard(commit, sorted(handles))
        finally:
            for index in sorted(handles):
                await abort(index)
        ok = spec.width - len(failed)
        if ok < spec.write_quorum:
            raise unavailable(f"only {ok} of {spec.width} shards durable, need "
                              f"{spec.write_quorum}", spec.width - spec.write_quorum)
        for i in set(range(spec.width)) - set(failed):
            metrics.SHARD_BYTES.labels(devices[i], "write").inc(
                size // spec.k if not spec.replicated else size)
        return size, failed

    async def _destroy(self, p: Pool, sid: str, indices: list[int]) -> None:
        devices = p.devices_for(sid)
        for i in indices:
            await self._delete_shard(devices[i], sid, i)

    async def _delete_shard(self, device: str, sid: str, index: int) -> None:
        """Delete one shard file; a failure is logged (the file is left as an orphan)."""
        try:
            with trio.fail_after(SHARD_OP_TIMEOUT_S):
                await self.clients[device].delete(sid, index)
        except (OSError, ShardError, trio.TooSlowError) as e:
            log.warning("could not delete shard %s.%d on %s: %s", sid, index, device, e)

    def commit_ops(self, extents: list[Extent]) -> list:
        """Metadata ops that make ``extents`` referenced: add them to the committing txn."""
        return [Delete(b"w/" + e.sid.encode()) for e in extents if e.sid]

    def release_ops(self, extents: list[Extent]) -> list:
        """Metadata ops that hand ``extents`` to garbage collection once the txn commits."""
        return [Put(b"g/" + e.sid.encode(), _j(e.to_json())) for e in extents if e.sid]

    async def discard(self, extents: list[Extent]) -> None:
        """Release extents that were written but never committed."""
        ops = self.commit_ops(extents) + self.release_ops(extents)
        if ops:
            await self.meta.txn([], ops)
            self._work.set()

    # -- reading ---------------------------------------------------------------------------
    async def read_many(self, extents: list[Extent], start: int, end: int
                        ) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the concatenation of ``extents``."""
        base = 0
        for e in extents:
            lo, hi = max(start - base, 0), min(end - base, e.size)
            if lo < hi:
                async for piece in self.read(e, lo, hi):
                    yield piece
            base += e.size
            if base >= end:
                return

    async def read(self, extent: Extent, start: int = 0, end: int | None = None
                   ) -> AsyncIterator[bytes]:
        """Bytes [start, end) of one extent; only the segments holding them are read."""
        end = extent.size if end is None else min(end, extent.size)
        if start >= end:
            return
        if extent.inline is not None:
            yield extent.inline[start:end]
            return
        seg = extent.segment_size
        first, last = start // seg, (end - 1) // seg
        batches = [(b, min(READ_BATCH_SEGMENTS, last + 1 - b))
                   for b in range(first, last + 1, READ_BATCH_SEGMENTS)]
        # READ_AHEAD batches are fetched while earlier ones are being sent.
        queue: collections.deque[_Prefetch] = collections.deque()
        upcoming = iter(batches)
        for batch_first, count in batches:
            while len(queue) <= READ_AHEAD:
                nxt = next(upcoming, None)
                if nxt is None:
                    break
                queue.append(self._prefetch(extent, *nxt))
            segments = await queue.popleft().result()
            for i, data in enumerate(segments):
                off = (batch_first + i) * seg
                lo, hi = max(start - off, 0), min(end - off, len(data))
                yield data if (lo, hi) == (0, len(data)) else data[lo:hi]

    def _prefetch(self, extent: Extent, first: int, count: int) -> _Prefetch:
        job = _Prefetch(self.read_segments, extent, first, count)
        if self._tasks is not None:
            job.start(self._tasks)
        return job

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Host the store's background tasks (read-ahead) until cancelled. Without it the
        store works the same, only reads do not overlap fetching with sending."""
        async with trio.open_nursery() as nursery:
            self._tasks = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._tasks = None

    async def read_segments(self, extent: Extent, first: int, count: int
                            ) -> list[bytes | memoryview]:
        """Decoded segments [first, first+count) of ``extent``. Raises StoreReadError.

        A healthy read of an EC pool reads each data shard's share of a segment straight
        into that segment's buffer (:meth:`Codec.data_layout`) and returns read-only views of
        them: no decode and no copy to join the shares. Anything else (parity needed, headers
        not as expected, replicated pools) decodes fragments, returning bytes."""
        p = self.pools[extent.pool]
        seg = extent.segment_size
        lengths = [min(seg, extent.size - (first + n) * seg) for n in range(count)]
        placement = _Placement.plan(p, lengths)
        frags = await self.fetch_fragments(extent, p, first, count, frozenset(), placement)
        if placement is not None and placement.complete(frags):
            return placement.segments()
        out = []
        for n in range(count):
            data = p.codec.decode({i: _fragment(f, n) for i, f in frags.items()})
            if len(data) != lengths[n]:
                raise StoreReadError(f"{extent.sid} segment {first + n}: decoded {len(data)} "
                                     f"bytes, expected {lengths[n]}")
            out.append(data)
        return out

    async def fetch_fragments(self, extent: Extent, p: Pool, first: int, count: int,
                              exclude: frozenset[int], placement: _Placement | None = None
                              ) -> dict[int, list[bytes] | _PlacedShard]:
        """Verified fragments from K shards, data shards first, racing parity against failures
        and slowness, and reading around devices whose reads hang. With a ``placement``, data
        shards are read into its buffers and come back as :class:`_PlacedShard`."""
        k, width = p.spec.k, p.spec.width
        devices = p.devices_for(extent.sid)
        order = [i for i in range(width) if i not in exclude]
        # A device whose reads hang is read last, not raced after HEDGE_AFTER_S on every
        # call. Its shards are not known to be bad, so nothing is queued for repair.
        stalled = {i for i in order if self.clients[devices[i]].reads_stalled()}
        if stalled:
            order = [i for i in order if i not in stalled] + sorted(stalled)
        good: dict[int, list[bytes] | _PlacedShard] = {}
        broken: list[tuple[int, str]] = []
        send, recv = trio.open_memory_channel(width)
        launched = 0

        async def read_one(index: int):
            client = self.clients[devices[index]]
            try:
                if placement is not None and index < k:
                    dests = placement.dests[index]
                    res = _PlacedShard(dests, await client.read_into(
                        extent.sid, index, first, count, placement.skip, dests))
                else:
                    res = await client.read(extent.sid, index, first, count)
                metrics.SHARD_OPS.labels(client.device_id, "read").inc()
            except (OSError, ShardError) as e:
                metrics.SHARD_FAILURES.labels(client.device_id, "read", type(e).__name__).inc()
                res = e
            await send.send((index, res))

        async with trio.open_nursery() as nursery:
            def launch():
                nonlocal launched
                nursery.start_soon(read_one, order[launched])
                launched += 1

            for _ in range(min(k, len(order))):
                launch()
            outstanding = launched
            while len(good) < k and outstanding:
                with trio.move_on_after(HEDGE_AFTER_S) as cs:
                    index, res = await recv.receive()
                if cs.cancelled_caught:
                    if launched < len(order):
                        launch()
                        outstanding += 1
                    continue
                outstanding -= 1
                if isinstance(res, Exception):
                    broken.append((index, res))
                    if launched < len(order):
                        launch()
                        outstanding += 1
                else:
                    good[index] = res
            nursery.cancel_scope.cancel()
        for i in stalled.difference(order[:launched]):
            metrics.SKIPPED_READS.labels(devices[i]).inc()
        if any(i >= k for i in good):
            metrics.DEGRADED_READS.inc()
        for index, e in broken:
            if shard_at_fault(e):
                await self.queue_repair(extent, index, str(e))
        if len(good) < k:
            raise StoreReadError(
                f"stripe set {extent.sid}: only {len(good)} of {k} needed shards readable "
                f"({'; '.join(str(e) for _, e in broken)})")
        return dict(sorted(good.items())[:k])

    # -- repair and garbage collection queues ------------------------------------------------
    async def queue_repair(self, extent: Extent, index: int, reason: str) -> None:
        """Record that shard ``index`` of ``extent`` must be rewritten (idempotent)."""
        if (extent.sid, index) in self._repair_queued:
            return
        self._repair_queued.add((extent.sid, index))
        log.info("queue repair of %s.%d: %s", extent.sid, index, reason)
        await self.queue_repairs([(extent, index)], reason)

    async def queue_repairs(self, shards: list[tuple[Extent, int]], reason: str,
                            guard: list[Compare] | None = None) -> bool:
        """Record many (extent, index) pairs for repair in one metadata transaction (without
        :meth:`queue_repair`'s memory of what this process already queued), if every
        compare of ``guard`` holds; returns whether they were recorded."""
        if not shards:
            return True
        res = await self.meta.txn(guard or [], [_repair_entry(e, i, reason) for e, i in shards])
        if res.succeeded:
            self._work.set()
        return res.succeeded

    async def repair_queued(self, sid: str, index: int) -> bool:
        """Whether shard ``index`` of stripe set ``sid`` waits for repair."""
        return await self.meta.get(_repair_key(sid, index)) is not None

    async def wait_for_work(self, timeout: float) -> None:
        """Sleep until repair or garbage collection work is queued, or ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._work.wait()
        self._work = trio.Event()

    def repair_done(self, sid: str, index: int) -> None:
        self._repair_queued.discard((sid, index))

    async def recover(self, pid: int | None = None) -> int:
        """Release writes that were interrupted by a crash: remove their partial shard files and
        hand their stripe sets to garbage collection. Returns the number of writes released.

        ``pid=None``: every pending write (node start, nothing in flight). ``pid``: only those
        of that writer process, which must be dead (a gateway process that crashed)."""
        intents = []
        for kv in await self.meta.scan_prefix(b"w/"):
            if pid is None or json.loads(kv.value).get("pid") == pid:
                intents.append(kv)
        sids = {kv.key[2:].decode() for kv in intents}
        for c in self.clients.values():
            if not c.available:  # its partial files are removed when it is attached again
                continue
            with trio.move_on_after(SHARD_OP_TIMEOUT_S):  # a hung disk cleans up when it can
                await c.clean_tmp(None if pid is None else sids)
        for kv in intents:
            sid = kv.key[2:].decode()
            info = json.loads(kv.value)
            ext = Extent(0, sid=sid, pool=info["pool"])
            await self.meta.txn([Compare(kv.key, kv.mod_rev)],
                                [Delete(kv.key), *self.release_ops([ext])])
        if intents:
            self._work.set()
        return len(intents)

    async def clean_returned(self) -> int:
        """Remove the partial shard files that devices attached while running brought back
        (writes cut off when the disk went away: their aborts could not reach it); returns
        how many. Only files of stripe sets with no write registered (``w/``) go: a write
        registers before it creates a shard and unregisters after its shards are renamed,
        so a write in flight in any process keeps its files. Call from the one task that
        also runs repair (a repair's partial files have no ``w/`` either); a crashed
        writer's files stay for :meth:`recover`."""
        removed = 0
        for device in list(self._returned):
            self._returned.discard(device)
            client = self.clients[device]
            if not client.available:
                continue
            try:
                with trio.fail_after(SHARD_OP_TIMEOUT_S):
                    sids = await client.tmp_sids()
                    stale = {sid for sid in sids
                             if await self.meta.get(b"w/" + sid.encode()) is None}
                    if stale:
                        removed += await client.clean_tmp(stale)
            except (OSError, trio.TooSlowError) as e:  # gone again, or hung: the next start
                log.warning("device %s: partial shard files not checked: %r", device, e)
                continue
            if stale:
                log.warning("device %s: removed the partial shard files of %d writes cut off "
                            "when it went away", device, len(stale))
        return removed

    async def collect_garbage(self, limit: int = 100) -> int:
        """Delete the shards of up to ``limit`` released stripe sets; returns how many stripe
        sets and deferred shard deletes were done.

        A shard on an unavailable device cannot be deleted now: a ``d/<device>/<sid>/<index>``
        entry replaces the stripe set's ``g/`` one, and is done once the device is attached
        again (rather than left behind as an orphan)."""
        entries = await self.meta.scan_prefix(b"g/", limit=limit)
        metrics.GC_BACKLOG.set(await self.meta.count_prefix(b"g/"))
        for kv in entries:
            sid = kv.key[2:].decode()
            ext = Extent.from_json(json.loads(kv.value))
            p = self.pools.get(ext.pool)
            # Repair entries go first: a repair that finishes after this sees its entry gone
            # and removes the shard it wrote (see Repairer).
            for r in await self.meta.scan_prefix(b"r/" + sid.encode() + b"/"):
                await self.meta.delete(r.key)
            deferred = []
            if p is not None:
                devices = p.devices_for(sid)
                here = [i for i, d in enumerate(devices) if self.clients[d].available]
                await self._destroy(p, sid, here)
                deferred = [Put(_deferred_delete_key(d, sid, i), b"")
                            for i, d in enumerate(devices) if i not in here]
            await self.meta.txn([Compare(kv.key, kv.mod_rev)], [Delete(kv.key), *deferred])
        return len(entries) + await self._collect_deferred(limit)

    async def _collect_deferred(self, limit: int) -> int:
        """Do up to ``limit`` deferred shard deletes of each attached device."""
        done = 0
        for device, client in self.clients.items():
            if not client.available:
                continue
            for kv in await self.meta.scan_prefix(_deferred_delete_key(device), limit=limit):
                _, _, sid, index = kv.key.decode().split("/")
                await self._delete_shard(device, sid, int(index))
                await self.meta.delete(kv.key)
                done += 1
        return done
