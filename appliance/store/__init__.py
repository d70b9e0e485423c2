"""The erasure-coded shard store (DESIGN.md §4)."""

from .codec import PoolSpec, PoolSpecError
from .extent import SEGMENT_SIZE, Extent, Reference
from .placement import Device
from .shardserver import ShardServer
from .store import (INLINE_MAX, Store, StoreError, StoreFull, StoreReadError,
                    StoreUnavailable)
from .transport import DeviceUnavailable, InProcessClient, ShardClient, UnavailableClient

__all__ = ["PoolSpec", "PoolSpecError", "SEGMENT_SIZE", "Extent", "Reference", "Device",
           "ShardServer",
           "INLINE_MAX", "Store", "StoreError", "StoreFull", "StoreReadError",
           "StoreUnavailable",
           "DeviceUnavailable", "InProcessClient", "ShardClient", "UnavailableClient"]
