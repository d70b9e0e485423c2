"""Server-side copies (CopyObject, UploadPartCopy): the copy source and copying data.

``x-amz-copy-source`` is ``bucket/key`` or ``/bucket/key``, URL-encoded, optionally followed by
``?versionId=...`` (ignored: there is one version per key).
https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

import trio

from ..namespace import Namespace, ObjectRecord
from ..store import Extent
from .errors import S3Error, invalid_argument
from .hashing import hasher_for, queue_footprint
from .request import MAX_KEY_BYTES

MAX_COPY_SIZE = 5 << 30
"""Largest source of a single CopyObject / UploadPartCopy range (AWS: 5 GiB)."""


def parse_copy_source(value: str) -> tuple[str, str]:
    """(bucket, key) of an ``x-amz-copy-source`` header. Raises InvalidArgument."""
    raw = value.strip()
    path, _, query = raw.partition("?")
    if query and not query.startswith("versionId="):
        raise invalid_argument("Invalid copy source object key", "x-amz-copy-source", value)
    try:
        path = urllib.parse.unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_argument("Invalid copy source encoding", "x-amz-copy-source",
                               value) from None
    if path.startswith("/"):
        path = path[1:]
    bucket, sep, key = path.partition("/")
    if not bucket or not sep or not key:
        raise invalid_argument("Invalid copy source object key", "x-amz-copy-source", value)
    if len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError")
    return bucket, key


def check_copy_size(size: int) -> None:
    """Raises InvalidRequest when ``size`` bytes exceed what one copy may take."""
    if size > MAX_COPY_SIZE:
        raise S3Error("InvalidRequest", "The specified copy source is larger than the maximum "
                                        f"allowable size for a copy source: {MAX_COPY_SIZE}")


def parse_copy_range(value: str, size: int) -> tuple[int, int]:
    """``x-amz-copy-source-range: bytes=first-last`` -> ``[first, last+1)``.

    Raises InvalidArgument for a malformed value, InvalidRange when it lies outside the
    source object. https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html"""
    unit, sep, spec = value.strip().partition("=")
    first, dash, last = spec.partition("-")
    if (unit != "bytes" or not sep or not dash or not first.isdigit() or not last.isdigit()
            or int(last) < int(first)):
        raise invalid_argument("The x-amz-copy-source-range value must be of the form "
                               "bytes=first-last where first and last are the zero-based "
                               "offsets of the first and last bytes to copy",
                               "x-amz-copy-source-range", value)
    start, end = int(first), int(last) + 1
    if end > size:
        raise S3Error("InvalidRange", headers={"content-range": f"bytes */{size}"},
                      RangeRequested=value, ActualObjectSize=str(size))
    return start, end


async def copy_data(ns: Namespace, rec: ObjectRecord, start: int, end: int,
                    algorithms: list[str] = (),
                    admit: Callable[[int], Awaitable[None]] | None = None
                    ) -> tuple[list[Extent], dict[str, bytes]]:
    """Copy bytes ``[start, end)`` of ``rec`` into new extents; returns (extents, digests of
    ``algorithms`` over the copied bytes).

    A whole-object copy of inline data with no digest wanted reuses the extents (inline data is
    part of the record, nothing to share). Otherwise the data is read and written anew, so
    the copy never shares stripe sets with its source (each record's extents are released on
    their own), after ``admit(nbytes)`` has been awaited with the memory the copy may hold
    (the read window, the write buffers, the hashing queue; Gateway.admit). The caller
    commits the extents or discards them."""
    if (not algorithms and (start, end) == (0, rec.size)
            and all(e.inline is not None for e in rec.extents)):
        return list(rec.extents), {}
    if admit is not None:
        await admit(ns.read_footprint(rec, start, end) + ns.write_footprint(end - start)
                    + (queue_footprint(end - start) if algorithms else 0))
    hasher = hasher_for(algorithms, end - start) if algorithms else None

    async def data():
        # The store cuts segments without copying and the hasher takes any piece size, so
        # the source's pieces go through as read.
        async for piece in ns.read(rec, start, end):
            if hasher is not None:
                await hasher.feed(piece)
            yield piece

    extent = None
    try:
        extent = await ns.write_data(data())
        digests = await hasher.finish() if hasher is not None else {}
    except BaseException:
        if hasher is not None:
            hasher.close()
        if extent is not None:
            with trio.CancelScope(shield=True):
                await ns.discard([extent])
        raise
    return [extent], digests
