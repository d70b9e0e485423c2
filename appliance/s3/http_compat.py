"""Reason phrases on HTTP/1.1 status lines, for clients that need them.

h11 (under hypercorn) writes status lines as ``HTTP/1.1 100 `` with no reason phrase. RFC 9112
§4 makes the phrase optional, but the botocore bundled with aws-cli 2.9 and botocore < 1.36
reject ``100`` without ``Continue`` (their Expect: 100-continue handling parses the interim
line themselves) and fail every upload. There is no hypercorn setting for it, so we wrap h11's
response writer once, filling in the standard phrase from :class:`http.HTTPStatus` when the
response has none. A no-op when h11 already writes one.
"""

from __future__ import annotations

import http

import h11._writers as _writers

_installed = False


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


def close_idle_connections_on_eof() -> None:
    """Release a connection as soon as the client closes it (idempotent).

    hypercorn 0.13's trio TCPServer keeps a connection's task group, and so its socket, open
    after reading EOF until the keep-alive timer fires (75 s for us): every closed client
    connection lingers in CLOSE-WAIT, and a graceful shutdown waits out its whole timeout for
    them. Later hypercorn releases cancel the timer on close; we do the same: once the read
    loop ends, the timer is cancelled and not started again."""
    from hypercorn.trio import tcp_server

    server = tcp_server.TCPServer
    if getattr(server._read_data, "_closes_on_eof", False):
        return
    read_data, start_timer = server._read_data, server._start_keep_alive_timeout

    async def _read_data(self) -> None:
        try:
            await read_data(self)
        finally:
            self._read_eof = True
            await self._stop_keep_alive_timeout()

    async def _start_keep_alive_timeout(self) -> None:
        if not getattr(self, "_read_eof", False):
            await start_timer(self)

    _read_data._closes_on_eof = True
    server._read_data = _read_data
    server._start_keep_alive_timeout = _start_keep_alive_timeout
