"""Admission by memory: the buffers of the requests one process serves stay within a budget.

Each streaming read or write holds a bounded set of buffers (``Store.read_footprint`` and
``Store.write_footprint``), but a process that starts any number of them at once holds any
amount of memory. Measured on a node with two gateway processes: 128 clients that stopped
reading their GETs held 4.4 GB (~34 MiB each, the read-ahead window), 256 parallel PUTs
5.6 GB. Enough clients would have the kernel kill the gateways. So a request reserves its footprint before it starts
moving data. When the budget is spent it waits its turn, first come first served, until its
deadline, and is then refused (the S3 gateway answers 503 SlowDown, which the AWS SDKs retry
with backoff). MinIO bounds its requests the same way (``api requests_max``, with a 10 s
``requests_deadline``).

One :class:`MemoryBudget` serves one trio event loop; it is not thread-safe.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import trio


class BudgetExceeded(Exception):
    """No room in the budget within the wait."""


@dataclass(eq=False)
class _Waiter:
    nbytes: int
    granted: trio.Event = field(default_factory=trio.Event)


class Lease:
    """Bytes held in a :class:`MemoryBudget` until :meth:`release` (idempotent)."""

    def __init__(self, budget: MemoryBudget, nbytes: int):
        self._budget = budget
        self.nbytes = nbytes

    def release(self) -> None:
        if self._budget is not None:
            self._budget._give_back(self.nbytes)
            self._budget = None


class MemoryBudget:
    """A first-come-first-served counting semaphore over ``capacity`` bytes.

    ``used``: bytes reserved now; ``waiting``: reservations queued."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("a memory budget needs a positive capacity")
        self.capacity = capacity
        self.used = 0
        self._queue: collections.deque[_Waiter] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def try_reserve(self, nbytes: int) -> Lease | None:
        """Reserve ``nbytes`` (at most ``capacity``: a request larger than the whole budget
        runs alone) if that needs no wait: no earlier reservation is waiting and the bytes
        are free. None otherwise."""
        nbytes = max(0, min(nbytes, self.capacity))
        if not self._queue and self.used + nbytes <= self.capacity:
            self.used += nbytes
            return Lease(self, nbytes)
        return None

    async def reserve(self, nbytes: int, wait_s: float) -> Lease:
        """Reserve ``nbytes`` as :meth:`try_reserve` does, waiting behind earlier
        reservations for up to ``wait_s`` seconds; raises BudgetExceeded after that. A
        cancelled wait reserves nothing."""
        lease = self.try_reserve(nbytes)
        if lease is not None:
            return lease
        nbytes = max(0, min(nbytes, self.capacity))
        waiter = _Waiter(nbytes)
        self._queue.append(waiter)
        try:
            with trio.move_on_after(wait_s):
                await waiter.granted.wait()
        except BaseException:
            self._abandon(waiter)
            raise
        if not waiter.granted.is_set():
            self._abandon(waiter)
            raise BudgetExceeded(f"{nbytes} bytes not free within {wait_s:g} s "
                                 f"({self.used} of {self.capacity} reserved)")
        return Lease(self, nbytes)

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.granted.is_set():  # granted just as the wait ended
            self._give_back(waiter.nbytes)
        else:
            self._queue.remove(waiter)
            self._grant()  # it may have held back the ones behind it

    def _give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        self._grant()

    def _grant(self) -> None:
        while self._queue and self.used + self._queue[0].nbytes <= self.capacity:
            waiter = self._queue.popleft()
            self.used += waiter.nbytes
            waiter.granted.set()
