"""Fixes to hypercorn 0.13 / h11 0.14 (Debian 12) that our clients need, and
:func:`install_server_shims`, which installs every hypercorn/h11 change a gateway process makes.

Reason phrases on HTTP/1.1 status lines, for clients that need them.

h11 (under hypercorn) writes status lines as ``HTTP/1.1 100 `` with no reason phrase. RFC 9112
§4 makes the phrase optional, but the botocore bundled with aws-cli 2.9 and botocore < 1.36
reject ``100`` without ``Continue`` (their Expect: 100-continue handling parses the interim
line themselves) and fail every upload. There is no hypercorn setting for it, so we wrap h11's
response writer once, filling in the standard phrase from :class:`http.HTTPStatus` when the
response has none. A no-op when h11 already writes one.
"""

from __future__ import annotations

import contextlib
import http
import math
import socket

import h11._writers as _writers
import trio

_installed = False

RECV_SIZE = 1 << 20
"""Socket read size for hypercorn's trio worker (see app._larger_reads)."""
APP_QUEUE_SIZE = 1
"""hypercorn ``max_app_queue_size`` for the gateways: ASGI messages read ahead of the
application per connection (hypercorn's default is 10). hypercorn reads a request body as it
arrives, up to RECV_SIZE per read, whether or not the application has admitted the request
yet (appliance.membudget): with 10, each upload waiting for room held ~11 MiB (256 parallel
32 MiB PUTs against a 512 MiB budget: 1.31 GB per gateway), with 1 ~2 MiB (0.71-0.81 GB).
No throughput change measured between 10, 2 and 1 (parallel and single PUTs, interleaved).
0 (a rendezvous channel) hangs the server at start. A queue this short needs
:func:`disconnect_after_response_never_blocks`."""


def install_server_shims() -> None:
    """Install, process-wide and idempotently, every change we make to hypercorn and h11:
    reason phrases, keep-alive timers, full send buffers and non-blocking disconnects (here),
    pass-through request bodies (:mod:`.h11_buffer`) and response heads sent with the first
    body bytes (:mod:`.h11_send`). Call before serving; the gateways also set hypercorn's
    ``max_app_queue_size`` to APP_QUEUE_SIZE."""
    from . import h11_buffer, h11_send

    install_reason_phrases()
    keep_alive_timers()
    full_send_buffers()
    disconnect_after_response_never_blocks()
    h11_buffer.install()
    h11_send.install()


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def install_reason_phrases() -> None:
    """Make every h11 response carry its standard reason phrase (idempotent)."""
    global _installed
    if _installed:
        return
    original = _writers.write_any_response

    def write_any_response(response, write):
        if not response.reason:
            # h11 events are frozen dataclass-likes; this is how h11 itself sets fields.
            object.__setattr__(response, "reason", _phrase(response.status_code))
        return original(response, write)

    for key, writer in list(_writers.WRITERS.items()):
        if writer is original:
            _writers.WRITERS[key] = write_any_response
    _installed = True


def keep_alive_timers() -> None:
    """One keep-alive timer per connection, moved rather than restarted; released on EOF
    (idempotent).

    hypercorn 0.13's trio TCPServer starts a new timer task (``nursery.start``) each time a
    connection goes idle and cancels it when the next request arrives: a task start, a cancel
    and two locks per request, ~4% of the CPU of a 4 KiB GET. Here each connection gets one
    timer task, sleeping in a cancel scope whose deadline going idle sets to now + the
    keep-alive timeout and a new request sets to infinity (trio just files the new deadline).
    When the deadline passes, hypercorn's own ``_timeout`` closes the connection, as before.

    It also fixes a leak: hypercorn 0.13 keeps a connection's task group, and so its socket,
    open after reading EOF until the timer fires (75 s for us), so every closed client
    connection lingered in CLOSE-WAIT and a graceful shutdown waited out its whole timeout for
    them (later hypercorn releases cancel the timer on close). Here the read loop's end ends
    the timer task, and no new timer starts."""
    from hypercorn.trio import tcp_server

    server = tcp_server.TCPServer
    if getattr(server._read_data, "_ends_timer", False):
        return
    read_data = server._read_data

    async def timer(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await trio.sleep_forever()
        if not self._read_eof:  # the deadline passed (EOF cancels the scope instead)
            with trio.CancelScope(shield=True):
                await self._timeout()

    async def _start_keep_alive_timeout(self) -> None:
        if self._read_eof:
            return
        if self._keep_alive_timeout_handle is None:
            self._keep_alive_timeout_handle = await self._task_group._nursery.start(timer, self)
        self._keep_alive_timeout_handle.deadline = (trio.current_time()
                                                    + self.config.keep_alive_timeout)

    async def _stop_keep_alive_timeout(self) -> None:
        if self._keep_alive_timeout_handle is not None:
            self._keep_alive_timeout_handle.deadline = math.inf

    async def _read_data(self) -> None:
        try:
            await read_data(self)
        finally:
            self._read_eof = True
            if self._keep_alive_timeout_handle is not None:
                self._keep_alive_timeout_handle.cancel()

    _read_data._ends_timer = True
    server._read_eof = False
    server._read_data = _read_data
    server._start_keep_alive_timeout = _start_keep_alive_timeout
    server._stop_keep_alive_timeout = _stop_keep_alive_timeout


def full_send_buffers() -> None:
    """Let every connection queue as much unsent data as its socket's send buffer holds, as
    servers outside trio do (idempotent).

    trio's SocketStream sets ``TCP_NOTSENT_LOWAT`` to 16 KiB on each TCP socket (for latency
    of interactive protocols; trio issue #72). Then a ``send()`` takes only what TCP can put
    on the wire at once plus 16 KiB, and the sender is woken again each time the client has
    read a few hundred KiB: a 1 GiB GET made ~5,500 partial sends and ~6,400 epoll wake-ups,
    each a trip through trio's scheduler, while the JuiceFS gateway kept 4 MiB queued.
    Setting the option to 0 gives the socket the system's value back (the kernel uses the
    per-socket value only when it is not 0: ``tcp_notsent_lowat()`` in include/net/tcp.h;
    the sysctl ``net.ipv4.tcp_notsent_lowat``, unlimited by default, ip-sysctl.rst).
    Measured on a 1 GiB GET, interleaved A/B: boto3 1,420-1,840 MB/s against 1,075-1,260,
    and ~12% less server CPU per GiB (docs/benchmarks.md)."""
    from hypercorn.trio import tcp_server

    server = tcp_server.TCPServer
    if getattr(server.__init__, "_full_send_buffer", False):
        return
    init = server.__init__

    def __init__(self, app, config, context, stream) -> None:
        init(self, app, config, context, stream)
        if isinstance(stream, trio.SocketStream):
            with contextlib.suppress(OSError):  # not TCP (a Unix socket): nothing to undo
                stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 0)

    __init__._full_send_buffer = True
    server.__init__ = __init__


def disconnect_after_response_never_blocks() -> None:
    """Deliver ``http.disconnect`` to an application that has sent its whole response without
    waiting for room in its queue (idempotent).

    hypercorn 0.13 delivers it from inside the application's own last ``send()``
    (``HTTPStream.app_send`` -> ``StreamClosed`` -> ``HTTPStream.handle`` -> ``app_put``), and
    ``app_put`` waits while the application's queue (APP_QUEUE_SIZE messages) is full. A
    response sent without reading the whole request (an error, or 503 SlowDown before any of
    the body) leaves the queue full of body chunks, or of the end-of-body message of a GET,
    and then the send waits for the application to empty the queue, which it never will: the
    request hung until shutdown. With hypercorn's default of 10 messages that only happened
    when ten reads arrived during the error response; with 1 it happened every time. Once the
    response is complete the application needs no disconnect notice, so it is dropped when
    the queue has no room."""
    from hypercorn.protocol import http_stream
    from hypercorn.protocol.events import StreamClosed

    stream = http_stream.HTTPStream
    if getattr(stream.handle, "_never_blocks", False):
        return
    handle = stream.handle

    async def handle_(self, event) -> None:
        channel = getattr(getattr(self, "app_put", None), "__self__", None)
        if (isinstance(event, StreamClosed) and not self.closed
                and self.state is http_stream.ASGIHTTPState.CLOSED
                and isinstance(channel, trio.MemorySendChannel)):
            self.closed = True
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError,
                                     trio.ClosedResourceError):
                channel.send_nowait({"type": "http.disconnect"})
            return
        await handle(self, event)

    handle_._never_blocks = True
    stream.handle = handle_
