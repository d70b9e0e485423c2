"""A receive buffer for h11 that hands request bodies through without copying them.

h11 0.14 (Debian 12, under hypercorn) appends every socket read to a bytearray and slices body
data out of it twice (``maybe_extract_at_most`` copies ``data[:count]``, then ``_extract``
copies it again), and hypercorn then copies the result into ``bytes``: four copies of every
uploaded byte before the application sees it, ~0.3 ms per MiB on our machines. When a read
arrives into an empty buffer and the body reader takes all of it (the common case for a large
upload: each 1 MiB read is body and nothing else), :class:`PassThroughReceiveBuffer` returns
the ``bytes`` object the socket produced, and hypercorn's ``bytes(...)`` of it is free.

Every other case (headers, chunk-size lines, a read holding the end of one request and the
start of the next) goes through h11's own bytearray code, unchanged. Install with
:func:`install` (idempotent; process-wide, like the other hypercorn/h11 shims in
:mod:`.http_compat`).
"""

from __future__ import annotations

import h11._connection
from h11._receivebuffer import ReceiveBuffer


class PassThroughReceiveBuffer(ReceiveBuffer):
    """h11's ReceiveBuffer plus one pending ``bytes`` read kept as it came (``_chunk``).

    Invariant: ``_chunk`` is only set while ``_data`` is empty, so the buffer's content is
    always ``_data + _chunk``; anything but a whole-read body extraction first moves
    ``_chunk`` into ``_data`` (:meth:`_settle`) and then runs h11's code."""

    def __init__(self) -> None:
        super().__init__()
        self._chunk: bytes | None = None

    def _settle(self) -> None:
        if self._chunk is not None:
            self._data += self._chunk
            self._chunk = None

    def __iadd__(self, byteslike) -> PassThroughReceiveBuffer:
        if self._chunk is None and not self._data and type(byteslike) is bytes:
            self._chunk = byteslike
            return self
        self._settle()
        self._data += byteslike
        return self

    def __len__(self) -> int:
        return len(self._data) + (len(self._chunk) if self._chunk is not None else 0)

    def __bytes__(self) -> bytes:
        self._settle()
        return bytes(self._data)

    def maybe_extract_at_most(self, count: int):
        chunk = self._chunk
        if chunk is not None and count >= len(chunk):
            self._chunk = None
            self._next_line_search = 0
            self._multiple_lines_search = 0
            return chunk
        self._settle()
        if count <= 0 or not self._data:
            return None
        return self._extract(count)  # one copy, not h11's two

    def maybe_extract_next_line(self):
        self._settle()
        return super().maybe_extract_next_line()

    def maybe_extract_lines(self):
        self._settle()
        return super().maybe_extract_lines()

    def is_next_line_obviously_invalid_request_line(self) -> bool:
        self._settle()
        return super().is_next_line_obviously_invalid_request_line()


def install() -> None:
    """Make every new h11 connection use :class:`PassThroughReceiveBuffer`."""
    h11._connection.ReceiveBuffer = PassThroughReceiveBuffer
