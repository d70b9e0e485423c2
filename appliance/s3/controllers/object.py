"""The object resource: PutObject, GetObject, HeadObject, DeleteObject, CopyObject,
DeleteObjects, and the object ACL/tagging/attributes answers.

Write path: stream the body into the store (:func:`appliance.s3.body.store_body`, which
verifies lengths and digests), then commit the record: the commit is the linearisation point,
and any failure before it discards the stored data.
"""

from __future__ import annotations

import functools
import logging
import time

import trio

from ...namespace import ConflictError, ObjectRecord
from ..body import store_body
from ..checksums import Hasher, decode_content_md5, select_checksum, verify_digest
from ..conditional import check_preconditions, etag_matches, parse_range
from ..copying import check_copy_size, copy_data
from ..errors import S3Error, invalid_argument
from ..headers import (apply_overrides, check_unsupported, checksum_mode, content_headers,
                       metadata_directive, object_headers, user_metadata)
from ..request import MAX_KEY_BYTES, S3Request
from ..response import Response, empty, xml_response
from ..xmlio import E, child_text, http_date, iso8601, parse
from .base import Controller
from .bucket import acl_xml, check_acl_body, check_canned_acl

log = logging.getLogger(__name__)

MAX_PUT_SIZE = 5 << 30
"""Largest single PutObject / UploadPart body (AWS: 5 GiB)."""
MAX_DELETE_KEYS = 1000
MAX_DELETE_BODY = 2 << 20


class ObjectController(Controller):
    def handlers(self) -> dict:
        return {
            "PutObject": self.put_object,
            "GetObject": self.get_object,
            "HeadObject": self.head_object,
            "DeleteObject": self.delete_object,
            "CopyObject": self.copy_object,
            "DeleteObjects": self.delete_objects,
            "GetObjectAcl": self.get_acl,
            "PutObjectAcl": self.put_acl,
            "GetObjectTagging": self.get_tagging,
            "DeleteObjectTagging": self.delete_tagging,
            "GetObjectAttributes": self.get_attributes,
            "GetObjectLegalHold": self.no_object_lock,
            "GetObjectRetention": self.no_object_lock,
        }

    async def _record(self, req: S3Request) -> ObjectRecord:
        await self.bucket(req)
        rec = await self.ns.get_object(req.bucket, req.key)
        if rec is None:
            raise S3Error("NoSuchKey", Key=req.key)
        return rec

    # -- PutObject ---------------------------------------------------------------------------
    async def put_object(self, req: S3Request) -> Response:
        """Store the body as ``req.key``.

        Headers: Content-Length (411 MissingContentLength without it unless chunked),
        Content-MD5, x-amz-checksum-* or a trailer, Content-Type and the other content
        headers, x-amz-meta-* (2 KB), If-None-Match: * / If-Match (conditional writes).
        Response: ETag, x-amz-checksum-* of the checksum the client used.
        Errors: EntityTooLarge (> 5 GiB), BadDigest, InvalidDigest, XAmzContentSHA256Mismatch,
        IncompleteBody, MetadataTooLarge, PreconditionFailed.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html
        """
        await self.bucket(req)
        check_unsupported(req)
        check_canned_acl(req)
        headers = content_headers(req)
        meta = user_metadata(req)
        expect_rev = await self._write_condition(req)
        stored = await store_body(req, self.ns, max_size=MAX_PUT_SIZE,
                                  admit=functools.partial(self.gw.admit, req))
        rec = ObjectRecord(key=req.key, size=stored.size, etag=stored.etag, mtime=time.time(),
                           extents=[stored.extent], headers=headers, meta=meta,
                           checksums=stored.checksums,
                           checksum_type="FULL_OBJECT" if stored.checksums else "")
        await self._commit(req, rec, expect_rev)
        out = [("etag", f'"{rec.etag}"')]
        out += [(f"x-amz-checksum-{a.lower()}", v) for a, v in rec.checksums.items()]
        if rec.checksum_type:
            out.append(("x-amz-checksum-type", rec.checksum_type))
        return empty(200, out)

    async def _write_condition(self, req: S3Request) -> int | None:
        """expect_rev for commit_object from If-None-Match: * / If-Match (conditional writes,
        https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html)."""
        inm, im = req.header("if-none-match"), req.header("if-match")
        if inm is None and im is None:
            return None
        cur = await self.ns.get_object(req.bucket, req.key)
        if inm is not None:
            if inm.strip() != "*":
                raise S3Error("NotImplemented", "If-None-Match supports only *")
            if cur is not None:
                raise S3Error("PreconditionFailed", Condition="If-None-Match")
            return 0
        if cur is None:
            raise S3Error("NoSuchKey", Key=req.key)
        if not etag_matches(im, cur.etag):
            raise S3Error("PreconditionFailed", Condition="If-Match")
        return cur.mod_rev

    async def _commit(self, req: S3Request, rec: ObjectRecord, expect_rev: int | None) -> None:
        """Commit ``rec``; on failure its (new, erasure-coded) extents are discarded."""
        try:
            await self.ns.commit_object(req.bucket, rec, expect_rev=expect_rev)
        except BaseException as e:
            with trio.CancelScope(shield=True):
                await self.ns.discard([x for x in rec.extents if x.sid])
            if isinstance(e, ConflictError):
                raise S3Error("PreconditionFailed") from None
            raise

    # -- GetObject / HeadObject --------------------------------------------------------------
    async def get_object(self, req: S3Request, head: bool = False) -> Response:
        """The object's bytes, whole (200) or a range (206 + Content-Range).

        Range: ``bytes=a-b``, ``bytes=a-``, ``bytes=-n``; several ranges or invalid syntax:
        the whole object; unsatisfiable: 416 InvalidRange. ``partNumber``: that part of a
        multipart object (206, x-amz-mp-parts-count). Conditionals: If-Match,
        If-Unmodified-Since (412), If-None-Match, If-Modified-Since (304). ``response-*``
        query parameters override the returned headers. ``x-amz-checksum-mode: ENABLED``
        adds the stored checksum for whole-object reads.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
        """
        rec = await self._record(req)
        check_preconditions(req.headers, rec, read=True)
        extra: list[tuple[str, str]] = []
        pn = req.query.get("partNumber")
        if pn is not None:
            if not pn.isdigit() or not 1 <= int(pn) <= 10000:
                raise invalid_argument("Part number must be an integer between 1 and 10000, "
                                       "inclusive", "partNumber", pn)
            if req.header("range") is not None:
                raise S3Error("InvalidRequest", "Cannot specify both Range header and "
                                                "partNumber query parameter")
            n = int(pn)
            parts = rec.parts or [rec.size]
            if n > len(parts):
                raise S3Error("InvalidPartNumber", PartNumberRequested=pn,
                              ActualPartCount=str(len(parts)))
            start = sum(parts[:n - 1])
            rng = (start, start + parts[n - 1]) if rec.parts else None
            if rec.parts:
                extra.append(("x-amz-mp-parts-count", str(len(rec.parts))))
        else:
            rng = parse_range(req.header("range"), rec.size)
        headers = object_headers(rec, checksums=checksum_mode(req) and rng is None)
        status = 200
        start, end = 0, rec.size
        if rng is not None:
            start, end = rng
            status = 206
            headers.append(("content-range", f"bytes {start}-{end - 1}/{rec.size}"))
        headers = apply_overrides(req, headers) + extra
        length = end - start
        headers.append(("content-length", str(length)))
        if head or length == 0:
            return Response(status, headers, b"", length)
        await self.gw.admit(req, self.ns.read_footprint(rec, start, end))
        return Response(status, headers, self.ns.read(rec, start, end), length)

    async def head_object(self, req: S3Request) -> Response:
        """GetObject without the body (errors carry no body either).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html"""
        return await self.get_object(req, head=True)

    # -- DeleteObject(s) ---------------------------------------------------------------------
    async def delete_object(self, req: S3Request) -> Response:
        """204, whether or not the key existed.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html"""
        await self.bucket(req)
        await self.ns.delete_object(req.bucket, req.key)
        return empty(204)

    async def delete_objects(self, req: S3Request) -> Response:
        """Delete up to 1000 keys named in a ``<Delete>`` body; ``<Quiet>true`` reports only
        errors. The body must carry Content-MD5 or an x-amz-checksum-* (header or trailer),
        which is verified (BadDigest). Errors: MalformedXML (bad XML, no or > 1000 keys),
        InvalidRequest (no digest).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html
        """
        await self.bucket(req)
        md5 = req.header("content-md5")
        want_md5 = decode_content_md5(md5) if md5 is not None else None
        expected = select_checksum(req.headers.items())
        if want_md5 is None and expected is None:
            raise S3Error("InvalidRequest", "Missing required header for this request: "
                                            "Content-MD5 or x-amz-checksum-*")
        body = await req.body.read_all(MAX_DELETE_BODY)
        if want_md5 is not None:
            h = Hasher("MD5")
            h.update(body)
            verify_digest("MD5", want_md5, h.digest())
        if expected is not None:
            h = Hasher(expected.algorithm)
            h.update(body)
            verify_digest(expected.algorithm, expected.from_trailers(req.body.trailers),
                          h.digest())
        root = parse(body, "Delete")
        quiet = (child_text(root, "Quiet", "false") or "").strip().lower() == "true"
        objects = root.findall("Object")
        if not objects or len(objects) > MAX_DELETE_KEYS:
            raise S3Error("MalformedXML")
        keys = []
        for o in objects:
            k = child_text(o, "Key")
            if k is None:
                raise S3Error("MalformedXML")
            keys.append((k, child_text(o, "VersionId")))
        results = []
        for key, version in keys:
            if len(key.encode()) > MAX_KEY_BYTES:
                results.append(E("Error", E("Key", key), E("Code", "KeyTooLongError"),
                                 E("Message", "Your key is too long")))
                continue
            if not key:
                results.append(E("Error", E("Key", key), E("Code", "InvalidArgument"),
                                 E("Message", "Invalid key")))
                continue
            try:
                await self.ns.delete_object(req.bucket, key)
            except Exception as e:  # noqa: BLE001 - reported per key, as AWS does
                log.warning("DeleteObjects %s/%s failed: %s", req.bucket, key, e)
                results.append(E("Error", E("Key", key), E("Code", "InternalError"),
                                 E("Message", "We encountered an internal error. Please try "
                                              "again.")))
                continue
            if not quiet:
                results.append(E("Deleted", E("Key", key),
                                 E("VersionId", version) if version else None))
        return xml_response(E("DeleteResult", results))

    # -- CopyObject --------------------------------------------------------------------------
    async def copy_object(self, req: S3Request) -> Response:
        """Copy ``x-amz-copy-source`` to ``req.key``.

        ``x-amz-metadata-directive``: COPY (default: the source's content headers and
        metadata) or REPLACE (the request's). Copying an object onto itself needs REPLACE
        (InvalidRequest otherwise). Source conditions: x-amz-copy-source-if-match,
        -if-none-match, -if-modified-since, -if-unmodified-since (412 PreconditionFailed).
        Response: ``CopyObjectResult`` with ETag and LastModified.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html
        """
        await self.bucket(req)
        check_unsupported(req)
        check_canned_acl(req)
        src_bucket, src_key, src = await self.copy_source(req)
        directive = metadata_directive(req)
        if (src_bucket, src_key) == (req.bucket, req.key) and directive != "REPLACE":
            raise S3Error("InvalidRequest",
                          "This copy request is illegal because it is trying to copy an object "
                          "to itself without changing the object's metadata, storage class, "
                          "website redirect location or encryption attributes.")
        check_copy_size(src.size)
        if directive == "REPLACE":
            headers, meta = content_headers(req), user_metadata(req)
        else:
            headers, meta = dict(src.headers), dict(src.meta)
        expect_rev = await self._write_condition(req)
        extents, _ = await copy_data(self.ns, src, 0, src.size,
                                     admit=functools.partial(self.gw.admit, req))
        rec = ObjectRecord(key=req.key, size=src.size, etag=src.etag, mtime=time.time(),
                           extents=extents, headers=headers, meta=meta,
                           checksums=dict(src.checksums), checksum_type=src.checksum_type,
                           parts=list(src.parts))
        await self._commit(req, rec, expect_rev)
        return xml_response(E("CopyObjectResult", E("LastModified", iso8601(rec.mtime)),
                              E("ETag", f'"{rec.etag}"'),
                              [E(f"Checksum{a}", v) for a, v in rec.checksums.items()
                               if rec.checksum_type == "FULL_OBJECT"]))

    # -- sub-resources -----------------------------------------------------------------------
    async def get_acl(self, req: S3Request) -> Response:
        """FULL_CONTROL for the bucket owner.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObjectAcl.html"""
        await self._record(req)
        return xml_response(acl_xml(req.user))

    async def put_acl(self, req: S3Request) -> Response:
        """Only private ACLs are accepted (AccessControlListNotSupported otherwise).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObjectAcl.html"""
        await self._record(req)
        await check_acl_body(req, req.user)
        return empty(200)

    async def get_tagging(self, req: S3Request) -> Response:
        """An empty TagSet (tags are not stored).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObjectTagging.html"""
        await self._record(req)
        return xml_response(E("Tagging", E("TagSet")))

    async def delete_tagging(self, req: S3Request) -> Response:
        """204: there are never tags to delete.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjectTagging.html"""
        await self._record(req)
        return empty(204)

    async def no_object_lock(self, req: S3Request) -> Response:
        await self._record(req)
        raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")

    async def get_attributes(self, req: S3Request) -> Response:
        """The attributes named in ``x-amz-object-attributes`` (ETag, Checksum, ObjectParts,
        StorageClass, ObjectSize).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObjectAttributes.html"""
        rec = await self._record(req)
        check_preconditions(req.headers, rec, read=False)
        wanted = {a.strip() for a in (req.header("x-amz-object-attributes") or "").split(",")}
        valid = {"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"}
        if not wanted - {""} or wanted - valid - {""}:
            raise invalid_argument("Invalid attribute name specified.",
                                   "x-amz-object-attributes",
                                   req.header("x-amz-object-attributes") or "")
        root = E("GetObjectAttributesResponse",
                 E("ETag", rec.etag) if "ETag" in wanted else None,
                 E("Checksum", [E(f"Checksum{a}", v) for a, v in rec.checksums.items()],
                   E("ChecksumType", rec.checksum_type) if rec.checksum_type else None)
                 if "Checksum" in wanted and rec.checksums else None,
                 E("ObjectParts", E("TotalPartsCount", len(rec.parts)))
                 if "ObjectParts" in wanted and rec.parts else None,
                 E("StorageClass", "STANDARD") if "StorageClass" in wanted else None,
                 E("ObjectSize", rec.size) if "ObjectSize" in wanted else None)
        return xml_response(root, headers=[("last-modified", http_date(rec.mtime))])

