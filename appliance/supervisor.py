"""The node's gateway processes: start them, restart one that dies, stop them all.

A gateway that exits unexpectedly (a crash, the OOM killer) is replaced; before that its
pending writes are released (:meth:`Store.recover` with its pid) so no partial shard or
intent of it outlives it, and its live gauges are dropped from the merged metrics. A
replacement that dies within ``CRASH_LOOP_S`` of being started stops the node: something is
wrong that restarting will not fix.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import trio

from .connbalance import ConnectionTable
from .gateway import GRACEFUL_TIMEOUT_S
from .meta import MetaError
from .store import Store

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
CRASH_LOOP_S = 10.0


class GatewayFailure(Exception):
    """A gateway process could not start, or keeps dying."""


@dataclass
class _Gateway:
    slot: int
    proc: subprocess.Popen
    started: float
    replacement: bool


class GatewayPool:
    """``count`` gateway processes accepting S3 connections from ``listener``, which the pool
    owns from now on (closed when the gateways stop).

    ``keep_fds``: descriptors every gateway inherits (the data directory's lock, so a restarted
    node cannot start while any gateway of the old one still runs)."""

    def __init__(self, count: int, config: dict, listener: socket.socket,
                 keep_fds: tuple[int, ...] = ()):
        self.count = count
        self.listener = listener
        self.connections, table_fd = ConnectionTable.create(count)
        self.config = {**config, "listen_fd": listener.fileno(), "conn_table_fd": table_fd,
                       "workers": count}
        self.keep_fds = (listener.fileno(), table_fd, *keep_fds)
        self.gateways: dict[int, _Gateway] = {}
        self.stopping = False

    async def start(self) -> None:
        """Start every gateway and wait until each listens. Raises GatewayFailure."""
        async with trio.open_nursery() as nursery:
            for slot in range(self.count):
                nursery.start_soon(self._spawn, slot)

    async def _spawn(self, slot: int, replacement: bool = False) -> _Gateway:
        ready_r, ready_w = os.pipe()
        cfg = {**self.config, "parent": os.getpid(), "ready_fd": ready_w, "slot": slot}
        self.connections.set(slot, 0)
        try:
            # Popen on the trio thread, not a worker thread: PR_SET_PDEATHSIG in the child
            # fires when the *thread* that forked it exits.
            proc = subprocess.Popen([sys.executable, "-m", "appliance.gateway", json.dumps(cfg)],
                                    pass_fds=(ready_w, *self.keep_fds))
        finally:
            os.close(ready_w)
        try:
            with trio.move_on_after(READY_TIMEOUT_S):
                await trio.lowlevel.wait_readable(ready_r)
            ready = os.read(ready_r, 1) if _readable(ready_r) else b""
        finally:
            os.close(ready_r)
        if ready != b"1":
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            raise GatewayFailure(f"gateway process {slot} failed to start (exit code {code})")
        gw = _Gateway(slot, proc, time.monotonic(), replacement)
        self.gateways[slot] = gw
        return gw

    async def supervise(self, store: Store, stop: trio.Event) -> None:
        """Watch the gateways until ``stop`` is set, replacing any that dies; then stop them
        gracefully. Raises GatewayFailure (after stopping the others) on a crash loop."""
        failure: list[GatewayFailure] = []
        async with trio.open_nursery() as nursery:
            for slot in list(self.gateways):
                nursery.start_soon(self._watch, slot, store, stop, failure)
            await stop.wait()
            self.stopping = True
            # Our copy of the listening socket goes first: once the gateways close theirs, no
            # connection may be left queued with nobody to accept it.
            self.listener.close()
            await self._stop_all()
            nursery.cancel_scope.cancel()
        if failure:
            raise failure[0]

    async def _watch(self, slot: int, store: Store, stop: trio.Event,
                     failure: list[GatewayFailure]) -> None:
        while True:
            gw = self.gateways[slot]
            code = await _wait_exit(gw.proc)
            if self.stopping:
                return
            log.error("gateway process %d (pid %d) exited with code %s; releasing its writes",
                      slot, gw.proc.pid, code)
            _forget_metrics(gw.proc.pid)
            self.connections.set(slot, 0)  # its connections died with it
            try:
                released = await store.recover(gw.proc.pid)
            except MetaError as e:  # the metadata's disk is full, say: the node's next start
                log.error("writes of the dead gateway not released (the next start does): %s",
                          e)
                released = 0
            if released:
                log.warning("released %d writes of the dead gateway", released)
            if gw.replacement and time.monotonic() - gw.started < CRASH_LOOP_S:
                failure.append(GatewayFailure(
                    f"gateway process {slot} died again {time.monotonic() - gw.started:.1f}s "
                    f"after it was replaced (exit code {code}); stopping the node"))
                stop.set()
                return
            try:
                await self._spawn(slot, replacement=True)
            except GatewayFailure as e:
                failure.append(e)
                stop.set()
                return

    async def _stop_all(self) -> None:
        for gw in self.gateways.values():
            if gw.proc.poll() is None:
                gw.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(GRACEFUL_TIMEOUT_S + 5):
            for gw in self.gateways.values():
                await _wait_exit(gw.proc)
        for gw in self.gateways.values():
            if gw.proc.poll() is None:
                log.error("gateway process %d ignored SIGTERM; killing it", gw.slot)
                gw.proc.kill()
                gw.proc.wait()


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


async def _wait_exit(proc: subprocess.Popen) -> int:
    """Wait for ``proc`` to exit without a thread (pidfd, Linux >= 5.3); returns its code."""
    if proc.poll() is not None:
        return proc.returncode
    fd = os.pidfd_open(proc.pid)
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
    return proc.wait()


def _forget_metrics(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
