"""Consistency check of a node: are all referenced shards present and all present shards
referenced?

A stripe set is *referenced* when an object record or an uploaded part points at it, or it is
accounted for by the store (a pending write ``w/``, garbage waiting for collection ``g/``, a
shard delete deferred until its device is attached ``d/``).
A shard file of any other stripe set is an orphan: space that nothing will ever free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .meta import MetaStore
from .namespace import Namespace
from .store import Store
from .store.shardfile import ShardError


@dataclass
class FsckReport:
    shards: int = 0
    stripe_sets: int = 0
    orphans: list[str] = field(default_factory=list)
    """``device:sid.index`` of shard files no record references."""
    missing: list[str] = field(default_factory=list)
    """``sid.index`` of shards a record needs that no device has (repair will rebuild them)."""
    corrupt: list[str] = field(default_factory=list)
    """``device:sid.index`` of shard files failing their checksums (only with verify=True)."""
    unavailable: list[str] = field(default_factory=list)
    """Devices not attached (their shards are neither listed nor counted missing)."""
    pending: int = 0
    garbage: int = 0

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.corrupt or self.unavailable)


async def fsck(meta: MetaStore, store: Store, ns: Namespace, verify: bool = False
               ) -> FsckReport:
    """Compare the shards on every device with what metadata references. ``verify``: also
    read every shard and check all its checksums (a scrub)."""
    refs = {e.sid: e.pool async for e in ns.referenced_extents() if e.sid}
    accounted = {kv.key[2:].decode() for p in (b"w/", b"g/") for kv in await meta.scan_prefix(p)}
    accounted |= {kv.key.split(b"/")[2].decode() for kv in await meta.scan_prefix(b"d/")}
    report = FsckReport(stripe_sets=len(refs),
                        pending=await meta.count_prefix(b"w/"),
                        garbage=await meta.count_prefix(b"g/"))
    present: set[tuple[str, int]] = set()
    for dev, client in store.clients.items():
        if not client.available:
            report.unavailable.append(dev)
            continue
        for sid, index in await client.list_shards():
            report.shards += 1
            present.add((sid, index))
            if sid not in refs and sid not in accounted:
                report.orphans.append(f"{dev}:{sid}.{index}")
            elif verify:
                try:
                    await client.verify(sid, index)
                except ShardError as e:
                    report.corrupt.append(f"{dev}:{sid}.{index} ({e})")
    for sid, pool in refs.items():
        devices = store.pools[pool].devices_for(sid)
        for index in range(store.pools[pool].spec.width):
            if (sid, index) not in present and devices[index] not in report.unavailable:
                report.missing.append(f"{sid}.{index}")
    return report
