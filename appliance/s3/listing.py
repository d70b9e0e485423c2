"""Listing with prefix, delimiter and a resume position: the engine behind ListObjects(V2) and
ListObjectVersions.

The object index is an ordered range scan (``Namespace.list_objects``). With a delimiter, every
key that contains it after the prefix rolls up into a common prefix; once one is found the scan
jumps past all its keys in one step (``prefix_end`` of the common prefix) instead of reading
them, so a listing of ``a/`` with a million keys under ``a/x/`` costs one extra scan.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from ..meta import prefix_end
from ..namespace import Namespace, ObjectRecord

SCAN_BATCH = 1000


@dataclass
class Page:
    """One page: ``entries`` in key order, each an ObjectRecord or a common-prefix str.
    ``next_start``: scan position (inclusive, bytes) to continue from when ``truncated``."""

    entries: list = field(default_factory=list)
    truncated: bool = False
    next_start: bytes = b""

    @property
    def records(self) -> list[ObjectRecord]:
        return [e for e in self.entries if isinstance(e, ObjectRecord)]

    @property
    def prefixes(self) -> list[str]:
        return [e for e in self.entries if isinstance(e, str)]

    @property
    def last(self) -> str:
        """The last entry's key or common prefix (v1 NextMarker)."""
        e = self.entries[-1]
        return e if isinstance(e, str) else e.key


def start_after(marker: str, prefix: str, delimiter: str) -> bytes:
    """Scan position for "entries strictly after ``marker``" (v1 marker, v2 start-after).

    If the marker lies inside a common prefix (``prefix + x + delimiter + ...``), that common
    prefix sorts at or before the marker and was already returned, so the scan starts after
    all of its keys."""
    if delimiter and marker.startswith(prefix):
        i = marker.find(delimiter, len(prefix))
        if i >= 0:
            end = prefix_end(marker[:i + len(delimiter)].encode())
            if end:
                return end
    return marker.encode() + b"\0"


async def list_page(ns: Namespace, bucket: str, *, prefix: str = "", delimiter: str = "",
                    start: bytes = b"", max_keys: int = 1000) -> Page:
    """Up to ``max_keys`` entries (keys and common prefixes) with ``prefix``, from scan
    position ``start`` (inclusive, UTF-8 bytes)."""
    page = Page()
    if max_keys <= 0:
        return page
    pos = start
    while True:
        limit = min(SCAN_BATCH, max_keys - len(page.entries) + 1)
        batch = await ns.list_objects(bucket, prefix, start=pos, limit=limit)
        for rec in batch:
            key = rec.key.encode()
            if key < pos:
                continue  # inside the common prefix just rolled up
            if len(page.entries) == max_keys:
                page.truncated = True
                page.next_start = pos
                return page
            i = rec.key.find(delimiter, len(prefix)) if delimiter else -1
            if i >= 0:
                cp = rec.key[:i + len(delimiter)]
                page.entries.append(cp)
                pos = prefix_end(cp.encode())  # skip all of cp's keys: never empty for UTF-8
            else:
                page.entries.append(rec)
                pos = key + b"\0"
        if len(batch) < limit:
            return page  # the scan reached the end of the prefix


def encode_token(pos: bytes) -> str:
    """An opaque ListObjectsV2 continuation token for scan position ``pos``."""
    return base64.urlsafe_b64encode(pos).decode()


def decode_token(token: str) -> bytes | None:
    """The scan position of a continuation token, or None if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if not raw or base64.urlsafe_b64encode(raw).decode() != token:
        return None
    return raw
