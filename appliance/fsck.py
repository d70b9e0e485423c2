"""Consistency check of a node: are all referenced shards present and all present shards
referenced?

A stripe set is *referenced* when an object record or an uploaded part points at it, or it is
accounted for by the store (a pending write ``w/``, garbage waiting for collection ``g/``).
A shard file of any other stripe set is an orphan: space that nothing will ever free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .meta import MetaStore
from .namespace import Namespace
from .store import Store


@dataclass
class FsckReport:
    shards: int = 0
    stripe_sets: int = 0
    orphans: list[str] = field(default_factory=list)
    """``device:sid.index`` of shard files no record references."""
    missing: list[str] = field(default_factory=list)
    """``sid.index`` of shards a record needs that no device has (repair will rebuild them)."""
    pending: int = 0
    garbage: int = 0

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.missing


async def fsck(meta: MetaStore, store: Store, ns: Namespace) -> FsckReport:
    refs = {e.sid: e.pool async for e in ns.referenced_extents() if e.sid}
    accounted = {kv.key[2:].decode() for p in (b"w/", b"g/") for kv in await meta.scan_prefix(p)}
    report = FsckReport(stripe_sets=len(refs),
                        pending=await meta.count_prefix(b"w/"),
                        garbage=await meta.count_prefix(b"g/"))
    present: set[tuple[str, int]] = set()
    for dev, client in store.clients.items():
        for sid, index in await client.list_shards():
            report.shards += 1
            present.add((sid, index))
            if sid not in refs and sid not in accounted:
                report.orphans.append(f"{dev}:{sid}.{index}")
    for sid, pool in refs.items():
        for index in range(store.pools[pool].spec.width):
            if (sid, index) not in present:
                report.missing.append(f"{sid}.{index}")
    return report
