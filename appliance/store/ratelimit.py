"""Rate limits of the background work (repair, scrub): a token bucket, and the runtime knob
that changes a running node's rate (a value in metadata the CLI writes and the node
re-reads)."""

from __future__ import annotations

import json

import trio


class TokenBucket:
    """``rate`` bytes per second with one second of burst; rate 0 means unlimited."""

    def __init__(self, rate: float):
        self.rate = rate
        self._tokens = rate
        self._last = trio.current_time()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = trio.current_time()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0:
            await trio.sleep(-self._tokens / self.rate)

    async def follow(self, meta, key: bytes) -> None:
        """Take the rate set at run time under ``key`` (:func:`set_rate`), if one is."""
        runtime = await get_rate(meta, key)
        if runtime is not None:
            self.rate = runtime


async def get_rate(meta, key: bytes) -> float | None:
    """The rate (bytes/s) set at run time under ``key``; None: the start-up value holds."""
    kv = await meta.get(key)
    return float(json.loads(kv.value)) if kv else None


async def set_rate(meta, key: bytes, rate: float) -> None:
    """Change the rate under ``key`` of every running node (bytes/s, 0 = unlimited)."""
    if rate < 0:
        raise ValueError("a rate must be >= 0")
    await meta.put(key, json.dumps(rate).encode())
