"""Scrubbing: reading every stored shard back from its disk, in the background, to find the
damage no read has met yet (a flipped bit, a sector gone bad, a shard file gone), so that
repair rewrites it while the rest of its stripe set is still there. Without it, damage to
data nobody reads piles up unseen until a stripe set has lost more than M shards. Ceph
deep-scrubs every placement group once a week (``osd_deep_scrub_interval``); ZFS scrubs a
pool on demand.

A pass walks every referenced extent in the metadata's key order (``references``, e.g.
Namespace.references) and verifies each of its shards on an attached device
(ShardClient.verify: header, every fragment's crc32c and the trailer's digest, read past the
page cache). Each shard found missing, corrupt or unreadable (EIO) is queued for repair
(:class:`~appliance.store.repair.Repairer`), unless the record pointing at it changed
meanwhile. Shard reads are capped at ``rate`` bytes/s (a runtime knob under RATE_KEY).
Progress is saved in metadata every SAVE_EVERY_S, so a restarted node goes on where it left
off. A pass starts when the last one finished ``interval`` seconds ago or more (at once if
none ever did), or when asked (:func:`request_pass`, ``appliance scrub --start``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass

import trio

from ..meta import Compare, MetaError, MetaStore
from . import metrics
from .extent import Reference
from .ratelimit import TokenBucket
from .repair import META_RETRY_S
from .shardfile import ShardError
from .store import Store, shard_at_fault

log = logging.getLogger(__name__)

STATE_KEY = b"c/scrub/state"
"""JSON :class:`ScrubState`, written by the node that scrubs."""
RATE_KEY = b"c/scrub/rate"
"""Metadata key of the runtime scrub rate (ratelimit.set_rate); overrides the start-up
rate."""
START_KEY = b"c/scrub/start"
"""Present when a pass was asked for; the scrubber removes it when the pass starts."""

SAVE_EVERY_S = 10.0
"""Seconds between saves of a pass's progress (and re-reads of the rate)."""
POLL_S = 2.0
"""Seconds between looks for a requested pass while none is due."""
VERIFY_TIMEOUT_S = 300.0
"""A shard verify running longer than this is given up on (the disk hangs) and the shard
counted as skipped: a 5 GiB object's 1.25 GiB shard takes ~13 s at 100 MB/s."""


@dataclass
class PassCounts:
    started: float
    """Unix time the pass started."""
    checked: int = 0
    """Shards verified (damaged ones included)."""
    bytes: int = 0
    """Bytes of data those shards hold (the rate counts these)."""
    damaged: int = 0
    """Shards found missing, corrupt or unreadable, and queued for repair."""
    skipped: int = 0
    """Shards not verified: their device was not attached, or hung."""
    finished: float | None = None


@dataclass
class ScrubState:
    current: PassCounts | None = None
    """The pass in progress, if any."""
    cursor: str = ""
    """Hex of the key of the last record whose extents the current pass has done."""
    last: PassCounts | None = None
    """The last complete pass."""
    interval: float = 0.0
    """The scrubbing node's interval between passes, seconds (for ``appliance scrub``)."""

    @classmethod
    def from_json(cls, raw: bytes) -> ScrubState:
        d = json.loads(raw)
        return cls(current=PassCounts(**d["current"]) if d.get("current") else None,
                   cursor=d.get("cursor", ""),
                   last=PassCounts(**d["last"]) if d.get("last") else None,
                   interval=d.get("interval", 0.0))

    def to_json(self) -> bytes:
        return json.dumps({"current": asdict(self.current) if self.current else None,
                           "cursor": self.cursor,
                           "last": asdict(self.last) if self.last else None,
                           "interval": self.interval}).encode()


async def load_state(meta: MetaStore) -> ScrubState:
    kv = await meta.get(STATE_KEY)
    return ScrubState.from_json(kv.value) if kv else ScrubState()


async def request_pass(meta: MetaStore) -> None:
    """Ask the node for a pass now (taken within POLL_S; nothing if one is running)."""
    await meta.put(START_KEY, json.dumps({"t": time.time()}).encode())


async def pass_requested(meta: MetaStore) -> bool:
    return await meta.get(START_KEY) is not None


class Scrubber:
    """Runs scrub passes over ``store`` until cancelled. ``references(after)`` yields every
    referenced extent in key order after that key (Namespace.references); ``rate`` in bytes
    of shard data per second applies until one is set at run time; ``interval`` is the
    seconds from the end of a pass to the start of the next."""

    def __init__(self, store: Store,
                 references: Callable[[bytes], AsyncIterator[Reference]],
                 rate: float = 50e6, interval: float = 7 * 86400.0):
        self.store = store
        self.references = references
        self.bucket = TokenBucket(rate)
        self.interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self._next()
            except MetaError as e:  # the metadata's disk is full, say: the node stays up
                log.error("scrub waits %.0f s: %s", META_RETRY_S, e)
                await trio.sleep(META_RETRY_S)

    async def _next(self) -> None:
        """Start a pass if one is due and go on with it to its end; or wait POLL_S."""
        meta = self.store.meta
        await self._read_rate()
        state = await load_state(meta)
        if state.last is not None:
            metrics.SCRUB_LAST_PASS.set(state.last.finished)
        if state.current is None:
            asked = await pass_requested(meta)
            due = state.last is None or time.time() - state.last.finished >= self.interval
            if not (asked or due):
                await trio.sleep(POLL_S)
                return
            state.current, state.cursor = PassCounts(started=time.time()), ""
            await meta.delete(START_KEY)
            log.info("scrub pass started%s", " (asked for)" if asked else "")
        state.interval = self.interval
        await self._scrub_pass(state)

    async def _read_rate(self) -> None:
        await self.bucket.follow(self.store.meta, RATE_KEY)
        metrics.SCRUB_RATE.set(self.bucket.rate)

    async def _scrub_pass(self, state: ScrubState) -> None:
        """Go on with ``state.current`` from ``state.cursor`` to the end, saving as it goes."""
        meta, counts = self.store.meta, state.current
        saved = trio.current_time()
        key = None  # the record being done
        async for ref in self.references(bytes.fromhex(state.cursor)):
            if ref.key != key:
                if key is not None:
                    state.cursor = key.hex()  # its extents are all done
                key = ref.key
                if trio.current_time() - saved >= SAVE_EVERY_S:
                    await meta.put(STATE_KEY, state.to_json())
                    await self._read_rate()
                    saved = trio.current_time()
            await self._scrub_extent(ref, counts)
        counts.finished = time.time()
        state.current, state.cursor, state.last = None, "", counts
        await meta.put(STATE_KEY, state.to_json())
        metrics.SCRUB_LAST_PASS.set(counts.finished)
        log.info("scrub pass done in %.0f s: %d shards checked (%.1f GB), %d damaged and "
                 "queued for repair, %d skipped", counts.finished - counts.started,
                 counts.checked, counts.bytes / 1e9, counts.damaged, counts.skipped)

    async def _scrub_extent(self, ref: Reference, counts: PassCounts) -> None:
        """Verify every shard of ``ref``'s extent; queue the damaged ones for repair."""
        e, store = ref.extent, self.store
        p = store.pools.get(e.pool)
        if not e.sid or p is None:
            return
        shard_bytes = e.size if p.spec.replicated else -(-e.size // p.spec.k)
        damaged = []
        for index, device in enumerate(p.devices_for(e.sid)):
            client = store.clients[device]
            if not client.available or client.reads_stalled():
                counts.skipped += 1
                continue
            await self.bucket.take(shard_bytes)
            try:
                with trio.fail_after(VERIFY_TIMEOUT_S):
                    await client.verify(e.sid, index)
            except (ShardError, OSError, trio.TooSlowError) as err:
                if isinstance(err, trio.TooSlowError) or not shard_at_fault(err):
                    # The disk hangs or went away, or this process is out of descriptors.
                    log.warning("scrub: shard %s.%d on %s not checked: %r", e.sid, index,
                                device, err)
                    counts.skipped += 1
                    continue
                damaged.append((index, device, err))  # missing, corrupt, unreadable (EIO)
            counts.checked += 1
            counts.bytes += shard_bytes
            metrics.SCRUBBED_SHARDS.inc()
            metrics.SCRUBBED_BYTES.inc(shard_bytes)
        if not damaged:
            return
        # Not queued again when already waiting (a disk being rebuilt): re-queuing one under
        # the repair in flight would have it done twice. And queued only while the record
        # still points at the extent: one deleted meanwhile has its shards released (garbage
        # collection may have removed them under the scrub), and a repair entry for them
        # would never be done.
        new = [i for i, _, _ in damaged if not await store.repair_queued(e.sid, i)]
        if await store.queue_repairs([(e, i) for i in new], "scrub",
                                     guard=[Compare(ref.key, ref.mod_rev)]):
            counts.damaged += len(damaged)
            for index, device, err in damaged:
                log.warning("scrub: shard %s.%d on %s is damaged, queued for repair: %s",
                            e.sid, index, device, err)
                metrics.SCRUB_DAMAGED.labels(device, type(err).__name__).inc()


__all__ = ["Scrubber", "ScrubState", "PassCounts", "load_state", "request_pass",
           "pass_requested"]
