"""The metadata interface: an ordered key-value store with revisions, transactions and leases.

Modelled on etcd v3 (https://etcd.io/docs/v3.5/learning/api/) so that the cluster engine maps
onto it one to one: every key carries ``mod_rev``, the store-wide revision of its last change;
a transaction compares revisions and then applies one of two op lists atomically. Keys and
values are ``bytes``; keys sort as unsigned bytes (memcmp), which is also S3's listing order
for UTF-8 keys.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KV:
    """One stored pair. ``mod_rev`` is the store revision that last wrote it (>= 1)."""

    key: bytes
    value: bytes
    mod_rev: int
    lease: int = 0


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: bytes


@dataclass(frozen=True)
class Compare:
    """True when ``key``'s ``mod_rev`` equals ``mod_rev``; ``mod_rev=0`` means "key absent"."""

    key: bytes
    mod_rev: int


Op = Put | Delete


@dataclass
class TxnResult:
    succeeded: bool
    revision: int = 0
    """The store revision after the transaction (unchanged when nothing was written)."""
    failed_keys: list[bytes] = field(default_factory=list)


class MetaError(Exception):
    """The metadata engine could not do what was asked (I/O error, closed, corrupt)."""


class LeaseNotFound(MetaError):
    pass


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's range_end rule).

    An empty result means "no upper bound" (prefix was empty or all 0xff)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b""


class MetaStore(abc.ABC):
    """Async ordered KV store. All methods run under trio.

    Durability contract: when ``put``, ``delete`` or ``txn`` return, the change is on stable
    storage (fsync'd for the embedded engine, quorum-committed for etcd).
    """

    @abc.abstractmethod
    async def get(self, key: bytes) -> KV | None: ...

    @abc.abstractmethod
    async def scan(
        self, start: bytes, end: bytes = b"", *, limit: int = 0, reverse: bool = False
    ) -> list[KV]:
        """Keys in ``[start, end)`` in byte order (``end=b""``: to the last key); ``limit=0``: all."""

    async def scan_prefix(self, prefix: bytes, *, after: bytes = b"", limit: int = 0) -> list[KV]:
        """Keys starting with ``prefix`` and strictly greater than ``after`` (if given)."""
        start = after + b"\x00" if after and after >= prefix else prefix
        return await self.scan(start, prefix_end(prefix), limit=limit)

    @abc.abstractmethod
    async def txn(
        self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> TxnResult:
        """Atomically: if every compare holds apply ``success`` else ``failure``."""

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        return (await self.txn([], [Put(key, value, lease)])).revision

    async def delete(self, key: bytes) -> None:
        await self.txn([], [Delete(key)])

    async def count_prefix(self, prefix: bytes) -> int:
        return len(await self.scan(prefix, prefix_end(prefix)))

    def check_room(self) -> None:
        """Raise diskspace.DiskFull when the engine's storage is within its free-space
        reserve. Callers check before adding data; deletes never do, so that they can free
        space. Default: an engine whose storage is not a local filesystem never refuses."""

    @abc.abstractmethod
    async def lease_grant(self, ttl: float) -> int:
        """A new lease id; keys put with it are deleted when it expires (``ttl`` seconds)."""

    @abc.abstractmethod
    async def lease_keepalive(self, lease: int) -> None:
        """Renew ``lease`` for its ttl. Raises LeaseNotFound when it already expired."""

    @abc.abstractmethod
    async def lease_revoke(self, lease: int) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...
