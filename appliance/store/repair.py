"""Background work of the store: rewriting broken shards and collecting garbage.

A device whose disk was replaced (``appliance disk replace``) is marked for rebuild
(:func:`request_rebuild`); once it is attached, every shard placed on it is queued for repair.

Repair takes stripe sets most-degraded first (the fewer healthy shards left, the sooner), reads
K healthy shards segment by segment, rebuilds the missing fragments and writes them as new
shard files. Its speed is capped by ``rate`` bytes/s (a runtime knob, 0 = unlimited), and
``appliance_repair_backlog`` shows how many shards wait.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable

import trio

from ..diskspace import is_full_error
from ..meta import Compare, Delete, MetaError
from . import metrics
from .extent import Extent
from .ratelimit import TokenBucket
from .shardfile import ShardError
from .store import BATCH_SEGMENTS, SEGMENT_SIZE, SHARD_OP_TIMEOUT_S, Pool, Store, StoreError

log = logging.getLogger(__name__)

FULL_RETRY_S = 60.0
"""How long repairs onto a device wait after one was refused there for lack of space."""
META_RETRY_S = 10.0
"""How long background work waits after a metadata write failed (its disk full, say)."""


RATE_KEY = b"c/repair/rate"
"""Metadata key of the runtime repair rate (ratelimit.set_rate); overrides the start-up
value."""


REBUILD_PREFIX = b"c/rebuild/"
"""``c/rebuild/<device>``: every shard placed on the device is to be rebuilt (its disk was
replaced); cleared once the node's repair worker has queued them all."""


async def request_rebuild(meta, device: str) -> None:
    """Mark ``device`` for rebuild: the running node (or the next to start) queues a repair
    of every shard placed on it as soon as the device is attached."""
    await meta.put(REBUILD_PREFIX + device.encode(), json.dumps({"t": time.time()}).encode())


async def rebuilds_requested(meta) -> list[str]:
    """Devices marked for rebuild whose shards are not queued yet."""
    marks = await meta.scan_prefix(REBUILD_PREFIX)
    return [kv.key[len(REBUILD_PREFIX):].decode() for kv in marks]


async def backlog_by_device(meta, page: int = 1000) -> Counter[str]:
    """Shards queued for repair, counted by the device each is to be written on: every
    ``r/<sid>/<index>`` entry mapped through its pool's PG table. For ``appliance disk list``
    (the progress of a rebuild); works whether or not a node is running."""
    pools = {p.name: p for p in (Pool.from_record(json.loads(kv.value))
                                 for kv in await meta.scan_prefix(b"c/pool/"))}
    counts: Counter[str] = Counter()
    after = b""
    while True:
        entries = await meta.scan_prefix(b"r/", after=after, limit=page)
        for kv in entries:
            _, sid, index = kv.key.decode().split("/")
            pool = pools.get(json.loads(kv.value)["extent"].get("pool"))
            if pool is not None:
                counts[pool.devices_for(sid)[int(index)]] += 1
        if len(entries) < page:
            return counts
        after = entries[-1].key


class Repairer:
    """Runs repair and garbage collection for ``store`` until cancelled.

    ``rate`` (bytes/s) applies until a rate is set at run time under RATE_KEY
    (``appliance repair --rate``); the worker re-reads it before each round. ``referenced``
    lists every extent the layer above points at (Namespace.referenced_extents); without it
    rebuild marks wait."""

    def __init__(self, store: Store, rate: float = 200e6, idle_s: float = 1.0,
                 referenced: Callable[[], AsyncIterator[Extent]] | None = None):
        self.store = store
        self.bucket = TokenBucket(rate)
        self.idle_s = idle_s
        self.referenced = referenced
        self._after = b""  # where the next round's scan of the queue starts
        self._full_until: dict[str, float] = {}  # device -> when repairs onto it go on

    @property
    def rate(self) -> float:
        return self.bucket.rate

    async def run(self) -> None:
        while True:
            try:
                did = await self._round()
            except MetaError as e:  # the metadata's disk is full, say: the node stays up
                log.error("repair and garbage collection wait %.0f s: %s", META_RETRY_S, e)
                await trio.sleep(META_RETRY_S)
                continue
            if not did:
                await self.store.wait_for_work(self.idle_s)

    async def _round(self) -> int:
        await self.bucket.follow(self.store.meta, RATE_KEY)
        metrics.REPAIR_RATE.set(self.bucket.rate)
        did = await self.store.collect_garbage()
        await self.store.clean_returned()
        did += await self.queue_rebuilds()
        return did + await self.repair_some()

    async def queue_rebuilds(self, batch: int = 1000) -> int:
        """Queue a repair of every referenced shard placed on an attached device marked for
        rebuild and not on it yet, then clear the mark; returns the shards queued.

        Runs in the same loop as garbage collection, never during it: a stripe set released
        while this lists has its repair entries removed by the next collection (which
        deletes them before the shards)."""
        meta, store = self.store.meta, self.store
        queued = 0
        for mark in await meta.scan_prefix(REBUILD_PREFIX):
            device = mark.key[len(REBUILD_PREFIX):].decode()
            client = store.clients.get(device)
            if self.referenced is None or client is None or not client.available:
                continue
            try:
                with trio.fail_after(SHARD_OP_TIMEOUT_S):  # a hung disk must not stop GC
                    present = set(await client.list_shards())
            except (OSError, trio.TooSlowError) as e:
                log.error("rebuild of %s waits: cannot list its shards: %r", device, e)
                continue
            todo: list[tuple[Extent, int]] = []
            n = 0
            async for extent in self.referenced():
                if not extent.sid or extent.pool not in store.pools:
                    continue
                for index, d in enumerate(store.pools[extent.pool].devices_for(extent.sid)):
                    if d == device and (extent.sid, index) not in present:
                        todo.append((extent, index))
                if len(todo) >= batch:
                    await store.queue_repairs(todo, "disk replaced")
                    n, todo = n + len(todo), []
            await store.queue_repairs(todo, "disk replaced")
            n += len(todo)
            await meta.txn([Compare(mark.key, mark.mod_rev)], [Delete(mark.key)])
            log.warning("device %s: its disk was replaced, %d shards queued for rebuild",
                        device, n)
            queued += n
        return queued

    async def repair_some(self, limit: int = 1000) -> int:
        """Repair the stripe sets named by up to ``limit`` queue entries; returns shards fixed.

        Shards of an unavailable device stay queued until it is attached again, and those of
        a device out of space for FULL_RETRY_S after it refused a repair. Each round goes on
        from where the last one stopped, so that a long queue of those cannot keep the
        others waiting."""
        meta = self.store.meta
        entries = await meta.scan_prefix(b"r/", after=self._after, limit=limit)
        self._after = entries[-1].key if len(entries) == limit else b""
        metrics.REPAIR_BACKLOG.set(await meta.count_prefix(b"r/"))
        by_sid: dict[str, list] = defaultdict(list)
        for kv in entries:
            by_sid[kv.key.split(b"/")[1].decode()].append(kv)
        fixed = 0

        def index_of(kv) -> int:  # r/<sid>/<index>
            return int(kv.key.split(b"/")[2])

        # Most degraded first: the stripe sets with the most missing shards are closest to loss.
        for sid, kvs in sorted(by_sid.items(), key=lambda item: -len(item[1])):
            extent = Extent.from_json(json.loads(kvs[0].value)["extent"])
            devices = self.store.pools[extent.pool].devices_for(sid)
            now = trio.current_time()
            kvs = [kv for kv in kvs if self._writable(devices[index_of(kv)], now)]
            if not kvs:
                continue
            indices = sorted({index_of(kv) for kv in kvs})
            try:
                await self.repair(extent, indices, kvs)
                fixed += len(indices)
            except (StoreError, ShardError, OSError, trio.TooSlowError) as e:
                if is_full_error(e):
                    # Said once per device and pause, not once per shard and round: a full
                    # disk stays full until objects are deleted. Which of the targets is full
                    # is not known here, so all of them wait.
                    targets = [devices[i] for i in indices]
                    log.warning("repairs onto %s wait %.0f s: out of space (%s)",
                                ", ".join(targets), FULL_RETRY_S, e)
                    for d in targets:
                        self._full_until[d] = now + FULL_RETRY_S
                else:
                    log.error("repair of %s %s failed: %r", sid, indices, e)
        if entries:
            metrics.REPAIR_BACKLOG.set(await meta.count_prefix(b"r/"))
        return fixed

    def _writable(self, device: str, now: float) -> bool:
        """Whether repairs may write onto ``device`` now: attached, and not out of space
        within the last FULL_RETRY_S."""
        return self.store.clients[device].available and self._full_until.get(device, 0) <= now

    async def repair(self, extent: Extent, indices: list[int], entries: list) -> None:
        store = self.store
        p = store.pools[extent.pool]
        devices = p.devices_for(extent.sid)
        if await store.meta.get(b"g/" + extent.sid.encode()) is not None:
            await store.meta.txn([], [Delete(kv.key) for kv in entries])
            return
        header = {"pool": p.spec.name, "seg": SEGMENT_SIZE,
                  "frag": p.codec.fragment_size(SEGMENT_SIZE)}
        handles = {}
        try:
            for i in indices:
                with trio.fail_after(SHARD_OP_TIMEOUT_S):
                    handles[i] = await store.clients[devices[i]].create(
                        extent.sid, i, header, cached=p.spec.read_by_default(i))
            exclude = frozenset(indices)
            for first in range(0, extent.segments, BATCH_SEGMENTS):
                count = min(BATCH_SEGMENTS, extent.segments - first)
                frags = await store.fetch_fragments(extent, p, first, count, exclude)
                rebuilt: dict[int, list[bytes]] = {i: [] for i in indices}
                for n in range(count):
                    for i, frag in p.codec.reconstruct({j: f[n] for j, f in frags.items()},
                                                       indices).items():
                        rebuilt[i].append(frag)
                for i in indices:
                    await self.bucket.take(sum(map(len, rebuilt[i])))
                    with trio.fail_after(SHARD_OP_TIMEOUT_S):
                        await store.clients[devices[i]].append(handles[i], rebuilt[i])
                    metrics.REPAIRED_BYTES.inc(sum(map(len, rebuilt[i])))
            for i in indices:
                with trio.fail_after(SHARD_OP_TIMEOUT_S):
                    await store.clients[devices[i]].commit(handles.pop(i))
        finally:
            for i, h in handles.items():
                with trio.CancelScope(shield=True), trio.move_on_after(SHARD_OP_TIMEOUT_S):
                    await store.clients[devices[i]].abort(h)
        res = await store.meta.txn([Compare(kv.key, kv.mod_rev) for kv in entries],
                                   [Delete(kv.key) for kv in entries])
        for i in indices:
            store.repair_done(extent.sid, i)
        if not res.succeeded:
            # An entry that vanished was taken by garbage collection (it deletes repair entries
            # before shards): remove what we wrote so no orphan is left. An entry that was only
            # re-queued stays and is simply repaired again.
            for kv in entries:
                if await store.meta.get(kv.key) is None:
                    i = int(kv.key.split(b"/")[2])
                    await store.clients[devices[i]].delete(extent.sid, i)
        metrics.REPAIRED_SHARDS.inc(len(indices))
        log.info("repaired %s shards %s", extent.sid, indices)
