"""Bucket listings: ListObjects (v1), ListObjectsV2, ListObjectVersions.

The paging logic is in :mod:`appliance.s3.listing`; this module parses parameters and writes
the XML. ``encoding-type=url`` URL-encodes every key-like value (Key, Prefix, Delimiter,
Marker, NextMarker, StartAfter, KeyMarker, NextKeyMarker and CommonPrefixes/Prefix).
"""

from __future__ import annotations

import urllib.parse

from ...namespace import ObjectRecord
from ..errors import invalid_argument
from ..listing import Page, decode_token, encode_token, list_page, start_after
from ..request import S3Request
from ..response import Response, xml_response
from ..xmlio import E, iso8601
from .base import Controller, owner_xml

MAX_KEYS = 1000


def _max_keys(req: S3Request, name: str = "max-keys") -> int:
    raw = req.query.get(name)
    if raw is None:
        return MAX_KEYS
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0 or n > 2**31 - 1:
        raise invalid_argument(f"Provided {name} not an integer or within integer range",
                               name, raw)
    return min(n, MAX_KEYS)


def _encoder(req: S3Request):
    et = req.query.get("encoding-type")
    if et is None:
        return lambda s: s
    if et.lower() != "url":
        raise invalid_argument("Invalid Encoding Method specified in Request",
                               "encoding-type", et)
    return lambda s: urllib.parse.quote_plus(s, safe="/")


def _contents(tag: str, rec: ObjectRecord, enc, owner: str | None, version: bool = False):
    return E(tag, E("Key", enc(rec.key)),
             E("VersionId", "null") if version else None,
             E("IsLatest", "true") if version else None,
             E("LastModified", iso8601(rec.mtime)),
             E("ETag", f'"{rec.etag}"'),
             [E("ChecksumAlgorithm", a) for a in rec.checksums],
             E("ChecksumType", rec.checksum_type) if rec.checksum_type else None,
             E("Size", rec.size),
             owner_xml(owner) if owner else None,
             E("StorageClass", "STANDARD"))


def _prefixes(page: Page, enc):
    return [E("CommonPrefixes", E("Prefix", enc(p))) for p in page.prefixes]


class ListingController(Controller):
    def handlers(self) -> dict:
        return {"ListObjects": self.list_objects, "ListObjectsV2": self.list_objects_v2,
                "ListObjectVersions": self.list_object_versions}

    async def list_objects(self, req: S3Request) -> Response:
        """Keys in order with ``prefix``; ``delimiter`` rolls keys up into CommonPrefixes;
        entries after ``marker``; at most ``max-keys`` (0..1000, default 1000) of them.
        ``NextMarker`` is returned when truncated and a delimiter was given.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjects.html"""
        b = await self.bucket(req)
        q = req.query
        prefix, delimiter, marker = q.get("prefix", ""), q.get("delimiter", ""), q.get("marker", "")
        max_keys, enc = _max_keys(req), _encoder(req)
        start = start_after(marker, prefix, delimiter) if marker else b""
        page = await list_page(self.ns, req.bucket, prefix=prefix, delimiter=delimiter,
                               start=start, max_keys=max_keys)
        root = E("ListBucketResult",
                 E("Name", req.bucket), E("Prefix", enc(prefix)), E("Marker", enc(marker)),
                 E("NextMarker", enc(page.last)) if page.truncated and delimiter else None,
                 E("MaxKeys", max_keys),
                 E("Delimiter", enc(delimiter)) if delimiter else None,
                 E("EncodingType", "url") if "encoding-type" in q else None,
                 E("IsTruncated", page.truncated),
                 [_contents("Contents", r, enc, b.owner) for r in page.records],
                 _prefixes(page, enc))
        return xml_response(root)

    async def list_objects_v2(self, req: S3Request) -> Response:
        """ListObjects v2: ``continuation-token`` (opaque; an invalid one is InvalidArgument)
        or ``start-after``; ``fetch-owner``; ``KeyCount`` counts keys and common prefixes.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html"""
        b = await self.bucket(req)
        q = req.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        max_keys, enc = _max_keys(req), _encoder(req)
        token, after = q.get("continuation-token"), q.get("start-after")
        if token is not None:
            start = decode_token(token)
            if start is None:
                raise invalid_argument("The continuation token provided is incorrect",
                                       "continuation-token", token)
        else:
            start = start_after(after, prefix, delimiter) if after else b""
        page = await list_page(self.ns, req.bucket, prefix=prefix, delimiter=delimiter,
                               start=start, max_keys=max_keys)
        owner = b.owner if q.get("fetch-owner", "").lower() == "true" else None
        root = E("ListBucketResult",
                 E("Name", req.bucket), E("Prefix", enc(prefix)),
                 E("MaxKeys", max_keys), E("KeyCount", len(page.entries)),
                 E("Delimiter", enc(delimiter)) if delimiter else None,
                 E("EncodingType", "url") if "encoding-type" in q else None,
                 E("IsTruncated", page.truncated),
                 E("ContinuationToken", token) if token is not None else None,
                 E("NextContinuationToken", encode_token(page.next_start))
                 if page.truncated else None,
                 E("StartAfter", enc(after)) if after is not None else None,
                 [_contents("Contents", r, enc, owner) for r in page.records],
                 _prefixes(page, enc))
        return xml_response(root)

    async def list_object_versions(self, req: S3Request) -> Response:
        """Versioning is never enabled, so every object has exactly one version, ``null``.
        ``key-marker`` works as ListObjects' marker; ``version-id-marker`` is ignored.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectVersions.html"""
        b = await self.bucket(req)
        q = req.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        marker = q.get("key-marker", "")
        max_keys, enc = _max_keys(req), _encoder(req)
        start = start_after(marker, prefix, delimiter) if marker else b""
        page = await list_page(self.ns, req.bucket, prefix=prefix, delimiter=delimiter,
                               start=start, max_keys=max_keys)
        root = E("ListVersionsResult",
                 E("Name", req.bucket), E("Prefix", enc(prefix)),
                 E("KeyMarker", enc(marker)), E("VersionIdMarker", q.get("version-id-marker", "")),
                 E("NextKeyMarker", enc(page.last)) if page.truncated else None,
                 E("NextVersionIdMarker", "null") if page.truncated else None,
                 E("MaxKeys", max_keys),
                 E("Delimiter", enc(delimiter)) if delimiter else None,
                 E("EncodingType", "url") if "encoding-type" in q else None,
                 E("IsTruncated", page.truncated),
                 [_contents("Version", r, enc, b.owner, version=True) for r in page.records],
                 _prefixes(page, enc))
        return xml_response(root)
