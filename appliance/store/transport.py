"""How the store reaches shard servers.

:class:`ShardClient` is the interface (one per device); :class:`InProcessClient` runs a local
:class:`ShardServer`'s blocking calls in threads: its writes in the device's own write thread,
in order and abandonable, its reads in trio worker threads. Fragments cross the interface by
value (``bytes``, or read-only views of a buffer nobody else holds), exactly as they will over
TCP, so no caller may rely on shared memory.
"""

from __future__ import annotations

import abc
import errno
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

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
    async def verify(self, sid: str, index: int) -> int:
        """Check every byte of the shard as its disk holds it (ShardServer.verify); returns
        its segment count. Raises ShardNotFound, ShardCorrupt, OSError (EIO)."""

    @abc.abstractmethod
    async def list_shards(self) -> list[tuple[str, int]]: ...

    @abc.abstractmethod
    async def tmp_sids(self) -> set[str]:
        """Stripe-set ids of the device's partial shard files."""

    @abc.abstractmethod
    async def clean_tmp(self, sids: set[str] | None = None) -> int:
        """Remove partial shard files: all (no write in flight), or those of ``sids``."""

    available = True
    """False for a device of the layout that is not attached (:class:`UnavailableClient`)."""

    def close(self) -> None:
        """Release what the client holds (threads, connections)."""

    def reads_stalled(self) -> bool:
        """Whether a read sent to this device has gone unanswered for over STALLED_AFTER_S
        (a hung disk), or the device is unavailable: readers then read around it instead of
        racing it on every call."""
        return not self.available


STALLED_AFTER_S = 1.0
"""A device with a write-path call given up on (a timeout, a cancellation) that has run this
long takes no new shard writes until that call returns (:class:`DeviceStalled`). A healthy
device's abandoned call returns within milliseconds; a hung one's would make every later
create or append wait out its own timeout behind it. Likewise a device with a read running
this long is read around (:meth:`ShardClient.reads_stalled`): a healthy 16-segment read
takes milliseconds, and a hung one would cost every later read a hedge delay."""


STRAGGLER_MIN_S = 3.0
STRAGGLER_FACTOR = 4.0
"""Once a write quorum of a PUT's shards has answered a call (a create, a batch of appends, a
commit), the others get ``max(STRAGGLER_MIN_S, STRAGGLER_FACTOR * t)`` more, t being how
long the quorum took; a shard still unanswered then is failed (and repaired later), as one
that timed out. So a disk whose writes hang costs a PUT about 3 s instead of the whole
shard timeout, while a disk that is merely slower than the others (all busy flushing, say)
keeps its shards: they are given several times what the fast ones took."""


def straggler_grace(quorum_s: float) -> float:
    """Seconds the calls still running get after a quorum answered in ``quorum_s``."""
    return max(STRAGGLER_MIN_S, STRAGGLER_FACTOR * quorum_s)


class Tally:
    """Counts calls that finish in any thread, and wakes the trio task waiting in
    :meth:`wait` at most twice: when ``quorum`` of them have succeeded, and when all
    ``total`` have finished (so a batch of calls costs one or two event-loop wake-ups, not
    one per call). Create in the trio thread."""

    def __init__(self, total: int, quorum: int):
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self._left, self._to_quorum = total, quorum
        self.enough, self.everything = trio.Event(), trio.Event()
        if quorum <= 0:
            self.enough.set()
        if total <= 0:
            self.everything.set()

    def finished(self, ok: bool) -> None:
        """One call finished (``ok``: it succeeded). Any thread."""
        with self._lock:
            self._left -= 1
            self._to_quorum -= ok
            fire = [self.enough, self.everything] if self._left == 0 else (
                [self.enough] if ok and self._to_quorum == 0 else [])
        if fire:  # all finished counts as "enough" too: a quorum out of reach ends the wait
            try:
                self._token.run_sync_soon(lambda: [e.set() for e in fire])
            except trio.RunFinishedError:
                pass  # nobody is waiting any more

    async def wait(self, timeout: float) -> None:
        """Until every call has finished, or the quorum has and the others have had their
        :func:`straggler_grace`, or ``timeout`` seconds in all."""
        started = trio.current_time()
        with trio.move_on_after(timeout):
            await self.enough.wait()
            with trio.move_on_after(straggler_grace(trio.current_time() - started)):
                await self.everything.wait()


class DeviceStalled(OSError):
    """The device has not returned from a call given up on; see STALLED_AFTER_S."""


class InProcessClient(ShardClient):
    """A shard server in this process.

    The calls that write (create, append, commit, abort, delete, clean_tmp) run in the
    device's own thread, one after another in the order they are made, and are waited for
    without holding a thread. A caller that stops waiting (a timeout, a cancellation) abandons
    the call, which still runs, and the calls made after it still run after it. That is what
    lets the store give up on a disk whose writes hang in the kernel: it counts the shard as
    failed and aborts it, and the abort runs once the stuck call returns. A shard whose
    create was abandoned is aborted as soon as it exists. While an abandoned call has not
    returned, new creates, appends and commits fail at once (STALLED_AFTER_S).

    Reads run in trio worker threads, at most ``threads`` at a time per device, so one slow
    disk cannot take every worker thread from the others. A read still running after
    STALLED_AFTER_S makes :meth:`reads_stalled` true until it returns."""

    def __init__(self, server: ShardServer, threads: int = 4):
        self.server = server
        self.device_id = server.device_id
        self._limiter = trio.CapacityLimiter(threads)
        self._writes = ThreadPoolExecutor(1, f"shard-{server.device_id}")
        self._abandoned: dict[Future, float] = {}  # call -> when it was queued
        self._reading: dict[object, float] = {}  # read running in a thread -> when it started
        self._reading_lock = threading.Lock()

    def close(self) -> None:
        """Stop the device's write thread once its queue is done (without waiting for it)."""
        self._writes.shutdown(wait=False)

    def submit(self, fn, *args, new_work: bool = False) -> Future:
        """Queue the server's blocking ``fn(*args)`` behind the device's earlier writes.
        ``new_work`` (a create, append or commit) raises DeviceStalled instead if an
        abandoned call has run for over STALLED_AFTER_S."""
        if new_work and (age := self._stalled_for()):
            raise DeviceStalled(errno.ETIMEDOUT, f"device {self.device_id} has not returned "
                                f"from a call made {age:.0f} s ago")
        try:
            return self._writes.submit(fn, *args)
        except RuntimeError:  # closed: the device was detached under a write in flight
            raise DeviceUnavailable(errno.ENODEV, f"device {self.device_id} was detached") \
                from None

    def abandon(self, future: Future, queued: float) -> None:
        """Nobody waits for ``future`` (queued at ``queued``, time.monotonic) any more."""
        self._abandoned[future] = queued
        future.add_done_callback(lambda f: self._abandoned.pop(f, None))  # any thread

    def _stalled_for(self) -> float:
        oldest = min(list(self._abandoned.values()), default=None)
        age = 0.0 if oldest is None else time.monotonic() - oldest
        return age if age > STALLED_AFTER_S else 0.0

    async def _write(self, fn, *args, new_work: bool = True, on_abandon=None):
        """Queue ``fn(*args)`` (see submit) and return its result. If the wait is cancelled,
        ``on_abandon(future)`` runs when the call returns."""
        queued = time.monotonic()
        future = self.submit(fn, *args, new_work=new_work)
        try:
            await wait_futures([future])
        except trio.Cancelled:
            self.abandon(future, queued)
            if on_abandon is not None:
                future.add_done_callback(on_abandon)
            raise
        return future.result()

    async def _run(self, fn, *args, cancellable: bool = False):
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter,
                                             cancellable=cancellable)

    async def _read(self, fn, *args):
        """``fn(*args)`` in a worker thread, timed from when the thread starts it until it
        returns (which may be long after an abandoned caller stopped waiting)."""
        token = object()

        def timed():
            with self._reading_lock:
                self._reading[token] = time.monotonic()
            try:
                return fn(*args)
            finally:
                with self._reading_lock:
                    del self._reading[token]

        # cancellable: a read that lost a hedge race is abandoned, not waited for.
        return await self._run(timed, cancellable=True)

    def reads_stalled(self) -> bool:
        with self._reading_lock:
            oldest = min(self._reading.values(), default=None)
        return oldest is not None and time.monotonic() - oldest > STALLED_AFTER_S

    async def create(self, sid, index, header, cached=True):
        return await self._write(self.server.create, sid, index, header, cached,
                                 on_abandon=self._abort_created)

    def _abort_created(self, future: Future) -> None:
        if future.exception() is None:
            try:
                self.submit(self.server.abort, future.result())
            except DeviceUnavailable:  # closed: the next start's clean_tmp removes the file
                pass

    async def append(self, handle, fragments):
        await self._write(self.server.append, handle, fragments)

    async def commit(self, handle):
        await self._write(self.server.commit, handle)

    async def abort(self, handle):
        if self._stalled_for():  # queued behind the stuck call; waiting would not help
            self.submit(self.server.abort, handle)
            return
        await self._write(self.server.abort, handle, new_work=False)

    async def read(self, sid, index, first, count):
        return await self._read(self.server.read, sid, index, first, count)

    async def read_into(self, sid, index, first, count, skip, dests):
        # An abandoned call's thread may still write into ``dests`` afterwards, so a caller
        # that abandons the call must drop those buffers.
        return await self._read(self.server.read_into, sid, index, first, count, skip, dests)

    async def delete(self, sid, index):
        return await self._write(self.server.delete, sid, index, new_work=False)

    async def verify(self, sid, index):
        # Not timed as a read (reads_stalled): verifying a large shard takes seconds on a
        # healthy disk. Cancellable: a scrub gives up on a disk that hangs.
        return await self._run(self.server.verify, sid, index, cancellable=True)

    async def list_shards(self):
        return await self._run(lambda: list(self.server.list_shards()), cancellable=True)

    async def tmp_sids(self):
        return await self._run(self.server.tmp_sids, cancellable=True)

    async def clean_tmp(self, sids=None):
        return await self._write(self.server.clean_tmp, sids, new_work=False)


class DeviceUnavailable(OSError):
    """The device is not attached: its disk is missing or not this node's, or it was
    detached (appliance.disks)."""


class UnavailableClient(ShardClient):
    """A device of the layout that could not be attached (``reason``): every call fails at
    once with DeviceUnavailable, so writes go on without it and reads go around it, and
    nothing is ever written in its place (say, to the empty mount point of a disk that is
    not mounted)."""

    available = False

    def __init__(self, device_id: str, reason: str):
        self.device_id, self.reason = device_id, reason

    def _fail(self):
        raise DeviceUnavailable(errno.ENODEV, f"device {self.device_id} is unavailable: "
                                f"{self.reason}")

    async def create(self, sid, index, header, cached=True):
        self._fail()

    async def append(self, handle, fragments):
        self._fail()

    async def commit(self, handle):
        self._fail()

    async def abort(self, handle):
        self._fail()

    async def read(self, sid, index, first, count):
        self._fail()

    async def read_into(self, sid, index, first, count, skip, dests):
        self._fail()

    async def delete(self, sid, index):
        self._fail()

    async def verify(self, sid, index):
        self._fail()

    async def list_shards(self):
        self._fail()

    async def tmp_sids(self):
        self._fail()

    async def clean_tmp(self, sids=None):
        self._fail()


async def wait_futures(futures: list[Future]) -> None:
    """Wait until every one of ``futures`` (concurrent.futures, run by other threads) is done,
    without a thread of our own: the last one to finish wakes the trio task (:class:`Tally`).
    Cancellable; the futures are left running."""
    pending = [f for f in futures if not f.done()]
    if not pending:
        return
    tally = Tally(len(pending), len(pending))
    for f in pending:
        f.add_done_callback(lambda _: tally.finished(True))
    await tally.everything.wait()


async def append_many(calls: list[tuple[ShardClient, int, list]], timeout: float,
                      quorum: int | None = None) -> list[Exception | None]:
    """``client.append(handle, fragments)`` for every ``(client, handle, fragments)`` in
    ``calls``, concurrently; returns, per call, None or the OSError, ShardError or
    trio.TooSlowError it failed with. A call is abandoned when not done after ``timeout``
    seconds, or once ``quorum`` calls have succeeded and it has had its straggler grace
    (:class:`Tally`); None: wait for all.

    The in-process ones are queued on their devices directly and waited for together: one
    or two wake-ups of the event loop per batch instead of one per shard (a trio thread hop
    costs ~90 us of CPU on our VMs, docs/benchmarks.md)."""
    results: list[Exception | None] = [None] * len(calls)
    tally = Tally(len(calls), len(calls) if quorum is None else quorum)
    local: dict[int, Future] = {}
    remote_done: set[int] = set()
    queued = time.monotonic()
    for n, (client, handle, fragments) in enumerate(calls):
        if isinstance(client, InProcessClient):
            try:
                local[n] = client.submit(client.server.append, handle, fragments,
                                         new_work=True)
            except OSError as e:  # DeviceStalled, or DeviceUnavailable once detached
                results[n] = e
                tally.finished(False)
                continue
            local[n].add_done_callback(lambda f: tally.finished(f.exception() is None))

    async def append_one(n: int) -> None:
        client, handle, fragments = calls[n]
        try:
            await client.append(handle, fragments)
        except (OSError, ShardError) as e:
            results[n] = e
        remote_done.add(n)
        tally.finished(results[n] is None)

    async with trio.open_nursery() as nursery:
        for n in range(len(calls)):
            if not isinstance(calls[n][0], InProcessClient):
                nursery.start_soon(append_one, n)
        await tally.wait(timeout)
        nursery.cancel_scope.cancel()  # remote stragglers
    for n, future in local.items():
        if not future.done():
            calls[n][0].abandon(future, queued)
            results[n] = trio.TooSlowError("no answer in time")
        elif isinstance(future.exception(), (OSError, ShardError)):
            results[n] = future.exception()
        else:
            future.result()  # anything else is a bug: raise it
    for n in range(len(calls)):
        if not isinstance(calls[n][0], InProcessClient) and n not in remote_done:
            results[n] = trio.TooSlowError("no answer in time")
    return results
