"""What a controller returns: status, headers and a body (bytes or an async byte stream)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .xmlio import to_bytes


@dataclass
class Response:
    """``headers``: (lower-case name, value) pairs. ``body``: bytes, or an async iterator of
    bytes with ``length`` set (the Content-Length of the stream). A stream that raises after
    the headers went out makes the app abort the connection (the client sees a short body)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncIterator[bytes] = b""
    length: int | None = None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def xml_response(root: ET.Element, status: int = 200,
                 headers: list[tuple[str, str]] | None = None) -> Response:
    """An XML body with Content-Type application/xml."""
    return Response(status, [("content-type", "application/xml"), *(headers or [])],
                    to_bytes(root))


def empty(status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, list(headers or []))
