"""Placement: object -> placement group -> K+M devices, by weighted rendezvous hashing.

``pg = hash(stripe-set id) mod P``; each PG maps to ``width`` devices chosen by Ceph's straw2
rule (Weil et al., "CRUSH", SC'06; straw2 in Ceph Hammer): every device draws
``ln(u) / weight`` with ``u`` a uniform hash of (pg, device), and the highest draws win. A
failure domain holds at most one shard of a PG when there are enough domains, else at most M
(so losing one domain still leaves K). Shard indices stay bound to their device across layout
changes: a newcomer only takes an index whose device left (positional re-binding would move
~3.5x as many shards, DESIGN.md §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import xxhash


class PlacementError(Exception):
    pass


@dataclass(frozen=True)
class Device:
    """A shard server's disk: ``id`` (stable name), ``weight`` (e.g. TiB), failure ``domain``."""

    id: str
    weight: float = 1.0
    domain: str = ""

    @property
    def failure_domain(self) -> str:
        return self.domain or self.id


def pg_of(sid: str, pg_count: int) -> int:
    return xxhash.xxh64_intdigest(sid.encode()) % pg_count


def _draw(pg: int, dev: Device) -> float:
    # u in (0, 1]; ln(u) <= 0, so a larger weight pulls the draw towards 0 (wins more often).
    u = (xxhash.xxh64_intdigest(f"{pg}/{dev.id}".encode()) + 1) / 2.0**64
    return math.log(u) / dev.weight


def _domain_cap(devices: list[Device], width: int, m: int) -> int:
    domains = {d.failure_domain for d in devices if d.weight > 0}
    if len(domains) >= width:
        return 1
    if len(domains) * m < width:
        raise PlacementError(
            f"{len(domains)} failure domains cannot hold {width} shards with at most {m} each")
    return m


def place(pg: int, devices: list[Device], width: int, m: int,
          previous: list[str] | None = None) -> list[str]:
    """Device id for each shard index 0..width-1 of ``pg``.

    ``previous``: the PG's current mapping; indices whose device is still present (and within
    the domain cap) keep it, and only freed indices are filled. Raises PlacementError.
    """
    live = [d for d in devices if d.weight > 0]
    cap = _domain_cap(live, width, m)
    by_id = {d.id: d for d in live}
    ranked = sorted(live, key=lambda d: _draw(pg, d), reverse=True)
    slots: list[str | None] = [None] * width
    used: dict[str, int] = {}
    per_dev: dict[str, int] = {}
    for i, dev_id in enumerate(previous or []):
        dev = by_id.get(dev_id)
        if dev and used.get(dev.failure_domain, 0) < cap and i < width:
            slots[i] = dev_id
            used[dev.failure_domain] = used.get(dev.failure_domain, 0) + 1
            per_dev[dev_id] = per_dev.get(dev_id, 0) + 1
    # Fill free indices in draw order; pass again (up to cap) when domains are scarce, always
    # preferring the device of a domain that holds fewest shards of this PG so far.
    for _ in range(cap):
        for dev in ranked:
            if None not in slots:
                return slots  # type: ignore[return-value]
            if used.get(dev.failure_domain, 0) >= cap:
                continue
            if per_dev.get(dev.id, 0) > min(per_dev.get(d.id, 0) for d in ranked
                                            if d.failure_domain == dev.failure_domain):
                continue
            slots[slots.index(None)] = dev.id
            used[dev.failure_domain] = used.get(dev.failure_domain, 0) + 1
            per_dev[dev.id] = per_dev.get(dev.id, 0) + 1
    if None in slots:
        raise PlacementError(f"not enough devices to place {width} shards")
    return slots  # type: ignore[return-value]


def build_pg_table(pg_count: int, devices: list[Device], width: int, m: int,
                   previous: list[list[str]] | None = None) -> list[list[str]]:
    return [place(pg, devices, width, m, previous[pg] if previous else None)
            for pg in range(pg_count)]
