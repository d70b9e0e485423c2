"""Conditional requests (RFC 7232) and byte ranges (RFC 7233) as S3 applies them.

Precedence (RFC 7232 §6, which S3 follows): If-Match, else If-Unmodified-Since -> 412;
then If-None-Match, else If-Modified-Since -> 304 for GET/HEAD (412 for other methods).
Unparsable dates are ignored. https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
"""

from __future__ import annotations

from ..namespace import ObjectRecord
from .errors import S3Error
from .xmlio import http_date, parse_http_date


def _etags(value: str) -> list[str]:
    out = []
    for part in value.split(","):
        t = part.strip()
        if t.startswith("W/"):
            t = t[2:]
        out.append(t.strip('"'))
    return out


def etag_matches(header: str, etag: str) -> bool:
    """True if the If-Match/If-None-Match list ``header`` names ``etag`` (or is ``*``)."""
    tags = _etags(header)
    return "*" in tags or etag in tags


def _not_modified_headers(rec: ObjectRecord) -> dict[str, str]:
    return {"etag": f'"{rec.etag}"', "last-modified": http_date(rec.mtime)}


def check_preconditions(headers: dict[str, str], rec: ObjectRecord, *, read: bool = True,
                        prefix: str = "") -> None:
    """Evaluate the conditional headers against ``rec``.

    ``read``: GET/HEAD (a failed If-None-Match/If-Modified-Since answers 304 NotModified);
    otherwise every failure is 412. ``prefix``: ``"x-amz-copy-source-"`` for CopyObject's
    source conditions (always 412). Raises S3Error PreconditionFailed or NotModified."""
    mtime = int(rec.mtime)
    im = headers.get(prefix + "if-match")
    ius = headers.get(prefix + "if-unmodified-since")
    inm = headers.get(prefix + "if-none-match")
    ims = headers.get(prefix + "if-modified-since")
    if im is not None:
        if not etag_matches(im, rec.etag):
            raise S3Error("PreconditionFailed", Condition=prefix + "If-Match")
    elif ius is not None:
        t = parse_http_date(ius)
        if t is not None and mtime > t:
            raise S3Error("PreconditionFailed", Condition=prefix + "If-Unmodified-Since")
    not_modified = "NotModified" if read and not prefix else "PreconditionFailed"
    if inm is not None:
        if etag_matches(inm, rec.etag):
            if not_modified == "NotModified":
                raise S3Error("NotModified", headers=_not_modified_headers(rec))
            raise S3Error("PreconditionFailed", Condition=prefix + "If-None-Match")
    elif ims is not None:
        t = parse_http_date(ims)
        if t is not None and mtime <= t:
            if not_modified == "NotModified":
                raise S3Error("NotModified", headers=_not_modified_headers(rec))
            raise S3Error("PreconditionFailed", Condition=prefix + "If-Modified-Since")


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The byte range ``[start, end)`` a Range header asks of a ``size``-byte object.

    None: no Range, a syntactically invalid one, or several ranges (AWS then returns the whole
    object with 200). Raises S3Error InvalidRange (416, with ``Content-Range: bytes */size``)
    when the range is unsatisfiable: first byte past the end, or a suffix of 0 bytes."""
    if value is None:
        return None
    unit, sep, spec = value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:
        if not last:
            return None
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size, value)
        return max(size - n, 0), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None  # last < first: syntactically invalid, ignored (RFC 7233 §2.1)
    if start >= size:
        raise _unsatisfiable(size, value)
    return start, min(end, size)


def _unsatisfiable(size: int, value: str) -> S3Error:
    return S3Error("InvalidRange", headers={"content-range": f"bytes */{size}"},
                   RangeRequested=value, ActualObjectSize=str(size))
