"""How the store reaches shard servers.

:class:`ShardClient` is the interface (one per device); :class:`InProcessClient` runs a local
:class:`ShardServer`'s blocking calls in worker threads. Fragments cross the interface by
value (``bytes``, or read-only views of a buffer nobody else holds), exactly as they will over
TCP, so no caller may rely on shared memory.
"""

from __future__ import annotations

import abc

import trio

from .shardserver import ShardError, ShardServer


class ShardClient(abc.ABC):
    device_id: str

    @abc.abstractmethod
    async def create(self, sid: str, index: int, header: dict, cached: bool = True) -> int:
        """``cached=False``: the shard is not expected to be read soon (ShardServer.create)."""

    @abc.abstractmethod
    async def append(self, handle: int, fragments: list[bytes]) -> None: ...

    @abc.abstractmethod
    async def commit(self, handle: int) -> None:
        """Returns once the shard is durable (ShardServer.commit's contract)."""

    @abc.abstractmethod
    async def abort(self, handle: int) -> None: ...

    @abc.abstractmethod
    async def read(self, sid: str, index: int, first: int, count: int
                   ) -> list[bytes | memoryview]:
        """Verified fragments of segments [first, first+count). Raises ShardError."""

    @abc.abstractmethod
    async def read_into(self, sid: str, index: int, first: int, count: int, skip: int,
                        dests: list[memoryview]) -> list[tuple[bytes, bytes]]:
        """The same fragments, bytes [skip, skip+len(dests[s])) of each landing in the
        caller's writable buffer ``dests[s]``; returns the other bytes of each fragment as
        (head, tail). See ShardServer.read_into. Raises ShardError. After an error or a
        cancellation the contents of ``dests`` are undefined (and may still change)."""

    @abc.abstractmethod
    async def delete(self, sid: str, index: int) -> bool: ...

    @abc.abstractmethod
    async def verify(self, sid: str, index: int) -> int: ...

    @abc.abstractmethod
    async def list_shards(self) -> list[tuple[str, int]]: ...

    @abc.abstractmethod
    async def clean_tmp(self, sids: set[str] | None = None) -> int:
        """Remove partial shard files: all (no write in flight), or those of ``sids``."""


class InProcessClient(ShardClient):
    """A shard server in this process. Each device gets its own thread limiter, so one slow
    disk cannot take every worker thread from the others."""

    def __init__(self, server: ShardServer, threads: int = 4):
        self.server = server
        self.device_id = server.device_id
        self._limiter = trio.CapacityLimiter(threads)

    async def _run(self, fn, *args, cancellable: bool = False):
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter,
                                             cancellable=cancellable)

    async def create(self, sid, index, header, cached=True):
        return await self._run(self.server.create, sid, index, header, cached)

    async def append(self, handle, fragments):
        await self._run(self.server.append, handle, fragments)

    async def commit(self, handle):
        await self._run(self.server.commit, handle)

    async def abort(self, handle):
        await self._run(self.server.abort, handle)

    async def read(self, sid, index, first, count):
        # cancellable: a hedged read that lost the race is abandoned, not waited for.
        return await self._run(self.server.read, sid, index, first, count, cancellable=True)

    async def read_into(self, sid, index, first, count, skip, dests):
        # Cancellable like read: a cancelled call's thread may still write into ``dests``
        # afterwards, so a caller that abandons the call must drop those buffers.
        return await self._run(self.server.read_into, sid, index, first, count, skip, dests,
                               cancellable=True)

    async def delete(self, sid, index):
        return await self._run(self.server.delete, sid, index)

    async def verify(self, sid, index):
        return await self._run(self.server.verify, sid, index)

    async def list_shards(self):
        return await self._run(lambda: list(self.server.list_shards()))

    async def clean_tmp(self, sids=None):
        return await self._run(self.server.clean_tmp, sids)


async def append_many(calls: list[tuple[ShardClient, int, list]], timeout: float
                      ) -> list[Exception | None]:
    """``client.append(handle, fragments)`` for every ``(client, handle, fragments)`` in
    ``calls``; returns, per call, None or the OSError, ShardError or trio.TooSlowError it
    failed with (each call gets ``timeout`` seconds where it can be abandoned).

    The in-process ones run one after another in a single worker thread: a trio thread hop
    costs ~90 us of CPU on our VMs, and a PUT would otherwise make one per shard per batch
    (docs/benchmarks.md). Their order per shard is kept, which is all appends need. Other
    clients are called concurrently."""
    results: list[Exception | None] = [None] * len(calls)
    local = [n for n, (client, _, _) in enumerate(calls) if isinstance(client, InProcessClient)]
    remote = [n for n in range(len(calls)) if n not in local]

    def append_local() -> None:
        for n in local:
            client, handle, fragments = calls[n]
            try:
                client.server.append(handle, fragments)
            except (OSError, ShardError) as e:
                results[n] = e

    async def append_one(n: int) -> None:
        client, handle, fragments = calls[n]
        try:
            with trio.fail_after(timeout):
                await client.append(handle, fragments)
        except (OSError, ShardError, trio.TooSlowError) as e:
            results[n] = e

    async with trio.open_nursery() as nursery:
        for n in remote:
            nursery.start_soon(append_one, n)
        if local:
            await trio.to_thread.run_sync(append_local)
    return results
