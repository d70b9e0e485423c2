"""One S3 gateway process of a node (started by :mod:`appliance.node`, not by hand).

A node runs several of these so that S3 requests use every core: the HTTP stack, SigV4 and
pyeclib hold the GIL, so one process tops out at one core (DESIGN.md §4). Each gateway opens
the node's metadata and shard servers itself (SQLite WAL serialises writers across processes;
pending writes carry the writer's pid so the supervisor can release those of a gateway that
died) and accepts connections from the one listening socket the supervisor opened: whichever
gateway is idle takes a new connection first, and connections waiting to be accepted survive
the death of any one gateway. Repair, garbage collection and crash recovery run
in the supervisor only.

Contract with the supervisor: ``python -m appliance.gateway CONFIG`` where CONFIG is JSON with
data_dir, bind, region, domain, parent (its pid), listen_fd (the listening socket it
inherits), conn_table_fd, workers and slot (its row in the shared connection table, see
:mod:`appliance.connbalance`) and ready_fd. The gateway writes one byte to ready_fd once it serves, and closes it. It dies with the supervisor (PR_SET_PDEATHSIG), and SIGTERM/SIGINT stop it
gracefully: no new connections, requests in flight finish (hypercorn's graceful timeout).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import trio

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 10
"""Seconds requests in flight get to finish after SIGTERM."""
_PR_SET_PDEATHSIG = 1


def listen_backlog() -> int:
    """Connections the kernel may queue for accept(): the system's ceiling
    (``net.core.somaxconn``, 4096 since Linux 5.4), as Go servers use. A burst of connections
    beyond the queue is answered with SYN cookies and resets: with hypercorn's default of 100,
    600 clients connecting at once to a node saw 110-190 of them reset."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4096


def listen_socket(bind: str, backlog: int | None = None) -> socket.socket:
    """A listening TCP socket for ``HOST:PORT`` (``[v6]:PORT`` too), inheritable by the
    gateway processes; ``backlog`` defaults to :func:`listen_backlog`. Raises OSError."""
    backlog = listen_backlog() if backlog is None else backlog
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the supervisor dies (a crash of the node is a crash of all of
    it: no gateway may go on committing writes the restarted node does not know about)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


async def serve(cfg: dict) -> None:
    import hypercorn.config
    import hypercorn.trio

    from .node import open_node
    from .s3.app import S3App
    from . import connbalance
    from .s3.http_compat import APP_QUEUE_SIZE, install_server_shims

    install_server_shims()
    connbalance.install(connbalance.ConnectionTable(cfg["conn_table_fd"], cfg["workers"],
                                                    cfg["slot"]))
    sock = socket.socket(fileno=cfg["listen_fd"])
    async with open_node(Path(cfg["data_dir"]), watch_disks=True) as (meta, store, ns,
                                                                        accounts):
        hc = hypercorn.config.Config()
        hc.bind = [f"fd://{sock.fileno()}"]
        hc.accesslog = None
        hc.graceful_timeout = GRACEFUL_TIMEOUT_S
        hc.keep_alive_timeout = 75  # longer than typical client idle timeouts (60 s)
        hc.max_app_queue_size = APP_QUEUE_SIZE
        hc.backlog = listen_backlog()  # hypercorn calls listen() again with it
        app = S3App(ns, accounts, region=cfg["region"], domain=cfg["domain"],
                    memory_budget=cfg["request_memory"] // cfg["workers"])
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            nursery.start_soon(wait_for_signal, stop)
            os.write(cfg["ready_fd"], b"1")
            os.close(cfg["ready_fd"])
            await hypercorn.trio.serve(app, hc, shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()


async def wait_for_signal(stop: trio.Event, note: str | None = None) -> None:
    """Set ``stop`` on the first SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            if note:
                print(note, file=sys.stderr, flush=True)
            stop.set()
            return


def main(argv: list[str] | None = None) -> int:
    cfg = json.loads((argv if argv is not None else sys.argv[1:])[0])
    _die_with_parent(cfg["parent"])
    logging.basicConfig(level=os.environ.get("APPLIANCE_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(serve, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
