"""The descriptor of stored data: what an object record (or a volume chunk map) points at."""

from __future__ import annotations

import base64
from dataclasses import dataclass

SEGMENT_SIZE = 1 << 20
"""Bytes of user data per stripe (DESIGN.md §4: 1 MiB segments)."""


@dataclass(frozen=True)
class Extent:
    """``size`` bytes of data, either ``inline`` in the metadata record or erasure-coded.

    An erasure-coded extent is a stripe set: K+M shard files named by ``sid`` (a unique
    stripe-set id, never reused), each holding fragment i of every ``segment_size`` segment.
    Extents are immutable: new data always gets a new ``sid``, so readers of an older record
    (a snapshot, a listing in progress) keep seeing consistent bytes until it is released.
    """

    size: int
    inline: bytes | None = None
    sid: str = ""
    pool: str = ""
    segment_size: int = SEGMENT_SIZE

    @property
    def segments(self) -> int:
        return -(-self.size // self.segment_size) if self.size else 0

    def to_json(self) -> dict:
        if self.inline is not None:
            return {"size": self.size, "inline": base64.b64encode(self.inline).decode()}
        return {"size": self.size, "sid": self.sid, "pool": self.pool, "seg": self.segment_size}

    @classmethod
    def from_json(cls, d: dict) -> Extent:
        if "inline" in d:
            return cls(d["size"], inline=base64.b64decode(d["inline"]))
        return cls(d["size"], sid=d["sid"], pool=d["pool"], segment_size=d["seg"])


@dataclass(frozen=True)
class Reference:
    """An extent as the layer above points at it: from the metadata record ``key`` at
    revision ``mod_rev``. The key is where a walk over all references can resume; the pair
    guards a change made because of the extent (``Compare(key, mod_rev)`` holds only while
    the record still points at it)."""

    extent: Extent
    key: bytes
    mod_rev: int
