"""hypercorn's response path with fewer writes and no copies of large bodies.

1. **A response's head goes out with its first body bytes.** hypercorn 0.13's HTTP/1.1
   protocol writes the status line and headers with one ``send_all`` and every body piece with
   another, so a small response (a 4 KiB GET, any error, a 200 to a PUT) costs two syscalls,
   two TCP segments on loopback (``TCP_NODELAY``) and two wake-ups of the client. hypercorn
   writes the head only when the application sends its first ``http.response.body``, and
   then at once the body piece or the end of the message, so the protocol here holds the
   head's bytes and writes them in front of the next bytes when those are small
   (:data:`COALESCE_MAX`), or just before them otherwise. The end of every ``app_send`` call
   writes a head still held (a head with no body bytes yet), so a head never waits across a
   checkpoint and bytes are never reordered.
2. **A memoryview body is written as it is.** hypercorn turns every ASGI body into ``bytes``
   (a copy, unless it already is bytes) and h11 joins its framing and the data into one
   ``bytes`` (another copy for anything but bytes). GETs send segments the store read straight
   into their buffers (read-only memoryviews), 1 MiB each: copying them again cost ~17% of a
   single-stream GET's event loop. So hypercorn's ``bytes(...)`` of a body passes
   memoryviews through, and h11's output pieces are written without joining any piece larger
   than :data:`COALESCE_MAX`. Other bodies, and every request body, are converted as before.

h11 still produces every byte (framing, Content-Length accounting); only the number of writes
and copies changes. :func:`install` applies both (idempotent; process-wide).
"""

from __future__ import annotations

import builtins

import h11
from hypercorn.events import RawData
from hypercorn.protocol import http_stream
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream

COALESCE_MAX = 64 << 10
"""Pieces up to this many bytes are joined into one write; larger ones are written alone."""


def _bytes_or_view(value=b""):
    """``bytes(value)``, except that a memoryview is returned as it is (not copied)."""
    return value if type(value) is memoryview else builtins.bytes(value)


def install() -> None:
    """Patch hypercorn's H11Protocol and HTTPStream (idempotent; process-wide)."""
    if getattr(H11Protocol._send_h11_event, "_holds_head", False):
        return
    app_send = HTTPStream.app_send

    async def send_h11_event(self: H11Protocol, event) -> None:
        # hypercorn's own error rule: a failed send after the peer's error is dropped.
        try:
            pieces = self.connection.send_with_data_passthrough(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            pieces = None
        head = self.__dict__.pop("_held_head", None)
        if type(event) is h11.Response and pieces is not None and head is None:
            self._held_head = b"".join(pieces)
            return
        run = [head] if head is not None else []
        for piece in pieces or ():
            if len(piece) > COALESCE_MAX:
                if run:
                    await self.send(RawData(data=b"".join(run)))
                    run = []
                await self.send(RawData(data=piece))
            else:
                run.append(piece)
        if run:
            await self.send(RawData(data=b"".join(run)))

    async def flushing_app_send(self: HTTPStream, message) -> None:
        await app_send(self, message)
        protocol = getattr(self.send, "__self__", None)
        head = protocol.__dict__.pop("_held_head", None) if protocol is not None else None
        if head is not None:
            await protocol.send(RawData(data=head))

    send_h11_event._holds_head = True
    H11Protocol._send_h11_event = send_h11_event
    HTTPStream.app_send = flushing_app_send
    # hypercorn calls bytes(...) on every ASGI body; this module-level name wins over the
    # builtin inside http_stream only.
    http_stream.bytes = _bytes_or_view
