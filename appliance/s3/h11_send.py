"""Send a response's head together with its first body bytes: one socket write, not two.

hypercorn 0.13's HTTP/1.1 protocol writes the status line and headers with one ``send_all``
and every body piece with another, so a small response (a 4 KiB GET, any error, a 200 to a
PUT) costs two syscalls, two TCP segments on loopback (``TCP_NODELAY``) and two wake-ups of
the client. hypercorn writes the head only when the application sends its first
``http.response.body``, and then at once the body piece or the end of the message, so
:func:`install` makes the protocol hold the head's bytes and write them in front of the next
bytes it writes when those are small (:data:`COALESCE_MAX`), or just before them otherwise (a
large piece is never copied to prepend a few hundred bytes). The end of every ``app_send``
call writes a head still held (a head with no body bytes yet), so a head never waits across
a checkpoint and bytes are never reordered. h11 still produces every byte; only the number of
writes changes.
"""

from __future__ import annotations

import h11
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream

COALESCE_MAX = 64 << 10
"""Bytes written after a held head are copied behind it into one write up to this size."""


def install() -> None:
    """Patch hypercorn's H11Protocol and HTTPStream (idempotent; process-wide)."""
    if getattr(H11Protocol._send_h11_event, "_holds_head", False):
        return
    app_send = HTTPStream.app_send

    async def send_h11_event(self: H11Protocol, event) -> None:
        # hypercorn's own error rule: a failed send after the peer's error is dropped.
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            data = None
        head = self.__dict__.pop("_held_head", None)
        if type(event) is h11.Response and data is not None and head is None:
            self._held_head = data
            return
        if head is not None:
            if data is not None and len(data) <= COALESCE_MAX:
                data = head + data
            else:
                await self.send(RawData(data=head))
        if data is not None:
            await self.send(RawData(data=data))

    async def flushing_app_send(self: HTTPStream, message) -> None:
        await app_send(self, message)
        protocol = getattr(self.send, "__self__", None)
        head = protocol.__dict__.pop("_held_head", None) if protocol is not None else None
        if head is not None:
            await protocol.send(RawData(data=head))

    send_h11_event._holds_head = True
    H11Protocol._send_h11_event = send_h11_event
    HTTPStream.app_send = flushing_app_send
