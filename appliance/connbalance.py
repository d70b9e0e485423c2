"""Spread S3 connections evenly over a node's gateway processes (fewest connections first).

All gateways accept from one listening socket. The kernel wakes every idle gateway for a new
connection and whichever calls accept() first gets it, so a burst of connections (a client
opening its connection pool) lands unevenly: 8 connections over 2 gateways split 8/0 or 5/3 in
most of our trials, which leaves a core idle for as long as those connections live.

Each gateway publishes how many connections it holds in a small shared table (a memfd the
supervisor creates, one 8-byte slot per gateway). When a connection is waiting, a gateway that
holds more than the least-loaded other gateway lets it go first, for up to ``MAX_DEFER_S``
(after that it accepts anyway: the other may be stuck in a long computation).
"""

from __future__ import annotations

import mmap
import os
import socket
import struct

import trio

MAX_DEFER_S = 0.02
_SLOT = struct.Struct("<q")


class ConnectionTable:
    """``slots`` connection counters in the shared memory behind ``fd``; this process owns
    slot ``mine`` (-1: none, a read-only observer such as the supervisor)."""

    def __init__(self, fd: int, slots: int, mine: int = -1):
        self.slots, self.mine = slots, mine
        self._mm = mmap.mmap(fd, slots * _SLOT.size)

    @classmethod
    def create(cls, slots: int) -> tuple[ConnectionTable, int]:
        """A new zeroed table; returns it and its fd (inheritable, for the gateways)."""
        fd = os.memfd_create("appliance-connections", 0)
        os.ftruncate(fd, slots * _SLOT.size)
        return cls(fd, slots), fd

    def get(self, slot: int) -> int:
        return _SLOT.unpack_from(self._mm, slot * _SLOT.size)[0]

    def set(self, slot: int, value: int) -> None:
        _SLOT.pack_into(self._mm, slot * _SLOT.size, value)

    def add(self, delta: int) -> None:
        self.set(self.mine, self.get(self.mine) + delta)

    def should_defer(self) -> bool:
        """True while another gateway holds fewer connections than this one."""
        own = self.get(self.mine)
        return any(self.get(s) < own for s in range(self.slots) if s != self.mine)


class BalancedListener(trio.abc.Listener):
    """A trio listener on ``sock`` (a listening trio socket) that counts the connections it
    hands out in ``table`` and defers to less-loaded gateways. Whoever serves a connection
    takes 1 off the count when it ends (see :func:`install`)."""

    def __init__(self, sock, table: ConnectionTable):
        self.socket = sock
        self.table = table
        # A second handle on the same listening socket for non-blocking accept() calls: a
        # connection another gateway took first is EAGAIN here, and we wait again.
        self._raw = socket.socket(fileno=os.dup(sock.fileno()))
        self._raw.setblocking(False)

    async def accept(self) -> trio.SocketStream:
        while True:
            await trio.lowlevel.wait_readable(self.socket)
            deadline = trio.current_time() + MAX_DEFER_S
            while self.table.should_defer() and trio.current_time() < deadline:
                await trio.sleep(0.0005)
            try:
                conn, _ = self._raw.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as e:
                if self._raw.fileno() < 0:
                    raise trio.ClosedResourceError from e
                raise
            self.table.add(1)
            conn.setblocking(False)
            return trio.SocketStream(trio.socket.from_stdlib_socket(conn))

    async def aclose(self) -> None:
        self._raw.close()
        self.socket.close()
        await trio.lowlevel.checkpoint()


def install(table: ConnectionTable) -> None:
    """Make hypercorn (in this process) accept through :class:`BalancedListener`.

    hypercorn 0.13 builds its listeners with ``trio.SocketListener(...)`` inside
    ``worker_serve`` and offers no hook, so the name is replaced in this process, which only
    serves hypercorn; each connection's TCPServer reports its end."""
    from hypercorn.trio import tcp_server

    trio.SocketListener = lambda sock: BalancedListener(sock, table)
    run = tcp_server.TCPServer.run

    async def counted_run(self) -> None:
        try:
            await run(self)
        finally:
            table.add(-1)

    tcp_server.TCPServer.run = counted_run
