"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
ListMultipartUploads.

Parts are stored as extents of their own; CompleteMultipartUpload stitches them into one object
record without copying data (the record's extents are the parts' extents in order and
``record.parts`` their sizes), its ETag is ``md5(md5(part1) || ... || md5(partN))-N``.
"""

from __future__ import annotations

import base64
import functools
import time

from ...namespace import NoSuchUpload, ObjectRecord, Part, PartChanged, Upload
from ..body import store_body
from ..checksums import (ALGORITHMS, composite_checksum, decode_checksum, full_object_crc,
                         multipart_etag)
from ..copying import check_copy_size, copy_data, parse_copy_range
from ..errors import S3Error, invalid_argument
from ..headers import check_unsupported, content_headers, user_metadata
from ..request import S3Request
from ..response import Response, empty, xml_response
from ..xmlio import E, child_text, iso8601, parse
from .base import Controller, owner_xml
from .bucket import check_canned_acl
from .listing import _encoder, _max_keys

MIN_PART_SIZE = 5 << 20
"""Every part but the last must be at least 5 MiB (AWS)."""
MAX_PART_SIZE = 5 << 30
MAX_PART_NUMBER = 10000
MAX_COMPLETE_BODY = 10000 * 512 + 4096
MAX_LIST = 1000


def _checksum_settings(req: S3Request) -> tuple[str, str]:
    """(algorithm, type) from x-amz-checksum-algorithm / x-amz-checksum-type."""
    alg = (req.header("x-amz-checksum-algorithm") or "").strip().upper()
    ctype = (req.header("x-amz-checksum-type") or "").strip().upper()
    if alg and alg not in ALGORITHMS:
        raise invalid_argument("Checksum algorithm provided is unsupported. Please try again "
                               "with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, "
                               "SHA256]", "x-amz-checksum-algorithm", alg)
    if ctype and ctype not in ("COMPOSITE", "FULL_OBJECT"):
        raise invalid_argument("Value for x-amz-checksum-type header is invalid.",
                               "x-amz-checksum-type", ctype)
    if ctype and not alg:
        raise S3Error("InvalidRequest", "The x-amz-checksum-type header can only be used with "
                                        "the x-amz-checksum-algorithm header.")
    if alg and not ctype:
        ctype = "FULL_OBJECT" if alg == "CRC64NVME" else "COMPOSITE"
    if ctype == "FULL_OBJECT" and alg in ("SHA1", "SHA256"):
        raise S3Error("InvalidRequest", f"The FULL_OBJECT checksum type cannot be used with "
                                        f"the {alg.lower()} checksum algorithm.")
    if ctype == "COMPOSITE" and alg == "CRC64NVME":
        raise S3Error("InvalidRequest", "The COMPOSITE checksum type cannot be used with the "
                                        "crc64nvme checksum algorithm.")
    return alg, ctype


def _part_number(req: S3Request) -> int:
    raw = req.query.get("partNumber", "")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PART_NUMBER:
        raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive",
                               "partNumber", raw)
    return int(raw)


class MultipartController(Controller):
    def handlers(self) -> dict:
        return {
            "CreateMultipartUpload": self.create,
            "UploadPart": self.upload_part,
            "UploadPartCopy": self.upload_part_copy,
            "CompleteMultipartUpload": self.complete,
            "AbortMultipartUpload": self.abort,
            "ListParts": self.list_parts,
            "ListMultipartUploads": self.list_uploads,
        }

    async def _upload(self, req: S3Request) -> Upload:
        await self.bucket(req)
        upload_id = req.query.get("uploadId", "")
        up = await self.ns.get_upload(req.bucket, req.key, upload_id) if upload_id else None
        if up is None:
            raise S3Error("NoSuchUpload", UploadId=upload_id)
        return up

    async def create(self, req: S3Request) -> Response:
        """Start an upload; the content headers, x-amz-meta-* and the checksum algorithm
        (x-amz-checksum-algorithm, x-amz-checksum-type) are kept for the final object.
        Response: ``InitiateMultipartUploadResult`` with the UploadId.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html"""
        await self.bucket(req)
        check_unsupported(req)
        check_canned_acl(req)
        alg, ctype = _checksum_settings(req)
        template = {"headers": content_headers(req), "meta": user_metadata(req),
                    "checksum_algorithm": alg, "checksum_type": ctype}
        up = await self.ns.create_upload(req.bucket, req.key, req.user, template)
        headers = []
        if alg:
            headers += [("x-amz-checksum-algorithm", alg), ("x-amz-checksum-type", ctype)]
        return xml_response(E("InitiateMultipartUploadResult", E("Bucket", req.bucket),
                              E("Key", req.key), E("UploadId", up.upload_id)), headers=headers)

    async def upload_part(self, req: S3Request) -> Response:
        """Store part ``partNumber`` (1..10000) of ``uploadId``; replaces an earlier part with
        that number. Digests are verified as for PutObject; the upload's checksum algorithm is
        computed for every part. Response: ETag (and x-amz-checksum-*).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPart.html"""
        number = _part_number(req)
        up = await self._upload(req)
        alg = up.template.get("checksum_algorithm") or None
        stored = await store_body(req, self.ns, max_size=MAX_PART_SIZE, checksum_algorithm=alg,
                                  admit=functools.partial(self.gw.admit, req))
        checksums = dict(stored.checksums)
        part = Part(number, stored.size, stored.etag, time.time(), stored.extent, checksums)
        await self.ns.put_part(up, part)  # discards the extent itself on NoSuchUpload
        headers = [("etag", f'"{part.etag}"')]
        headers += [(f"x-amz-checksum-{a.lower()}", v) for a, v in checksums.items()]
        return empty(200, headers)

    async def upload_part_copy(self, req: S3Request) -> Response:
        """A part copied from ``x-amz-copy-source`` (optionally ``x-amz-copy-source-range:
        bytes=a-b``, InvalidRange outside the source), with the x-amz-copy-source-if-*
        conditions. Response: ``CopyPartResult`` with ETag and LastModified.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html"""
        number = _part_number(req)
        up = await self._upload(req)
        _, _, src = await self.copy_source(req)
        rng = req.header("x-amz-copy-source-range")
        start, end = parse_copy_range(rng, src.size) if rng else (0, src.size)
        check_copy_size(end - start)
        alg = up.template.get("checksum_algorithm") or None
        algorithms = ["MD5"] + ([alg] if alg else [])
        extents, digests = await copy_data(self.ns, src, start, end, algorithms,
                                           admit=functools.partial(self.gw.admit, req))
        checksums = {alg: base64.b64encode(digests[alg]).decode()} if alg else {}
        part = Part(number, end - start, digests["MD5"].hex(), time.time(), extents[0],
                    checksums)
        await self.ns.put_part(up, part)
        return xml_response(E("CopyPartResult", E("LastModified", iso8601(part.mtime)),
                              E("ETag", f'"{part.etag}"'),
                              [E(f"Checksum{a}", v) for a, v in checksums.items()]))

    async def complete(self, req: S3Request) -> Response:
        """Assemble the listed parts (``<CompleteMultipartUpload><Part><PartNumber>
        <ETag>``...) into the object.

        Errors: MalformedXML (bad or empty list), InvalidPartOrder (not ascending),
        InvalidPart (unknown part, ETag or checksum mismatch), EntityTooSmall (a part other
        than the last below 5 MiB), NoSuchUpload. Response: 200
        ``CompleteMultipartUploadResult`` (Location, Bucket, Key, ETag, checksum).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html"""
        up = await self._upload(req)
        root = parse(await req.body.read_all(MAX_COMPLETE_BODY), "CompleteMultipartUpload")
        wanted = []
        for el in root.findall("Part"):
            num, etag = child_text(el, "PartNumber"), child_text(el, "ETag")
            if num is None or etag is None or not num.strip().isdigit():
                raise S3Error("MalformedXML")
            sums = {a: child_text(el, f"Checksum{a}") for a in ALGORITHMS
                    if child_text(el, f"Checksum{a}")}
            wanted.append((int(num), etag.strip().strip('"'), sums))
        if not wanted:
            raise S3Error("MalformedXML")
        if any(b[0] <= a[0] for a, b in zip(wanted, wanted[1:])):
            raise S3Error("InvalidPartOrder", UploadId=up.upload_id)
        have = {p.number: p for p in await self.ns.list_parts(up)}
        chosen: list[Part] = []
        for num, etag, sums in wanted:
            p = have.get(num)
            if p is None or p.etag != etag:
                raise S3Error("InvalidPart", UploadId=up.upload_id, PartNumber=str(num),
                              ETag=etag)
            for a, v in sums.items():
                if p.checksums.get(a) is not None and p.checksums[a] != v.strip():
                    raise S3Error("InvalidPart", f"The {a} checksum of part {num} does not "
                                                 "match", UploadId=up.upload_id)
            chosen.append(p)
        for p in chosen[:-1]:
            if p.size < MIN_PART_SIZE:
                raise S3Error("EntityTooSmall", ProposedSize=str(p.size),
                              MinSizeAllowed=str(MIN_PART_SIZE), PartNumber=str(p.number),
                              ETag=p.etag)
        etag = multipart_etag([bytes.fromhex(p.etag) for p in chosen])
        checksums, ctype = self._final_checksum(up, chosen)
        t = up.template
        rec = ObjectRecord(key=req.key, size=sum(p.size for p in chosen), etag=etag,
                           mtime=time.time(), extents=[p.extent for p in chosen],
                           headers=dict(t.get("headers", {})), meta=dict(t.get("meta", {})),
                           checksums=checksums, checksum_type=ctype,
                           parts=[p.size for p in chosen])
        try:
            await self.ns.complete_upload(up, chosen, rec)
        except NoSuchUpload:
            raise S3Error("NoSuchUpload", UploadId=up.upload_id) from None
        except PartChanged as e:
            raise S3Error("InvalidPart", f"Part {e} was replaced while completing",
                          UploadId=up.upload_id) from None
        host = req.header("host", "")
        headers = [(f"x-amz-checksum-{a.lower()}", v) for a, v in checksums.items()]
        if ctype:
            headers.append(("x-amz-checksum-type", ctype))
        return xml_response(E("CompleteMultipartUploadResult",
                              E("Location", f"http://{host}/{req.bucket}/{req.key}"),
                              E("Bucket", req.bucket), E("Key", req.key),
                              E("ETag", f'"{etag}"'),
                              [E(f"Checksum{a}", v) for a, v in checksums.items()],
                              E("ChecksumType", ctype) if ctype else None), headers=headers)

    @staticmethod
    def _final_checksum(up: Upload, parts: list[Part]) -> tuple[dict[str, str], str]:
        alg = up.template.get("checksum_algorithm")
        ctype = up.template.get("checksum_type") or ""
        if not alg or any(alg not in p.checksums for p in parts):
            return {}, ""
        digests = [decode_checksum(alg, p.checksums[alg]) for p in parts]
        if ctype == "FULL_OBJECT":
            crc = full_object_crc(alg, [(d, p.size) for d, p in zip(digests, parts)])
            return {alg: base64.b64encode(crc).decode()}, ctype
        return {alg: composite_checksum(alg, digests)}, "COMPOSITE"

    async def abort(self, req: S3Request) -> Response:
        """204; NoSuchUpload if it is unknown (or already completed/aborted).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html"""
        up = await self._upload(req)
        try:
            await self.ns.abort_upload(up)
        except NoSuchUpload:
            raise S3Error("NoSuchUpload", UploadId=up.upload_id) from None
        return empty(204)

    async def list_parts(self, req: S3Request) -> Response:
        """Parts after ``part-number-marker``, at most ``max-parts`` (default and cap 1000),
        with ``NextPartNumberMarker`` when truncated.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html"""
        up = await self._upload(req)
        marker_raw = req.query.get("part-number-marker", "0") or "0"
        if not marker_raw.isdigit():
            raise invalid_argument("Provided part-number-marker not an integer or within "
                                   "integer range", "part-number-marker", marker_raw)
        marker = min(int(marker_raw), MAX_PART_NUMBER)
        max_parts = _max_keys(req, "max-parts")
        parts = await self.ns.list_parts(up, after=marker, limit=max_parts + 1)
        truncated = len(parts) > max_parts
        parts = parts[:max_parts]
        alg = up.template.get("checksum_algorithm")
        root = E("ListPartsResult",
                 E("Bucket", req.bucket), E("Key", req.key), E("UploadId", up.upload_id),
                 E("Initiator", E("ID", up.owner), E("DisplayName", up.owner)),
                 owner_xml(up.owner), E("StorageClass", "STANDARD"),
                 E("PartNumberMarker", marker),
                 E("NextPartNumberMarker", parts[-1].number if parts else marker),
                 E("MaxParts", max_parts), E("IsTruncated", truncated),
                 E("ChecksumAlgorithm", alg) if alg else None,
                 E("ChecksumType", up.template.get("checksum_type")) if alg else None,
                 [E("Part", E("PartNumber", p.number), E("LastModified", iso8601(p.mtime)),
                    E("ETag", f'"{p.etag}"'), E("Size", p.size),
                    [E(f"Checksum{a}", v) for a, v in p.checksums.items()])
                  for p in parts])
        return xml_response(root)

    async def list_uploads(self, req: S3Request) -> Response:
        """Uploads in progress ordered by key then upload id, after ``key-marker`` /
        ``upload-id-marker``, with ``prefix``, ``delimiter`` (CommonPrefixes), ``max-uploads``
        and ``encoding-type``.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html"""
        await self.bucket(req)
        q = req.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        key_marker = q.get("key-marker", "")
        id_marker = q.get("upload-id-marker", "") if key_marker else ""
        max_uploads, enc = _max_keys(req, "max-uploads"), _encoder(req)
        entries: list = []  # Upload or common-prefix str
        truncated = False
        skip_cp: str | None = None
        if delimiter and key_marker.startswith(prefix):
            i = key_marker.find(delimiter, len(prefix))
            if i >= 0:
                skip_cp = key_marker[:i + len(delimiter)]
        km, im = key_marker, id_marker
        while not truncated:
            batch = await self.ns.list_uploads(req.bucket, prefix, key_marker=km,
                                               upload_id_marker=im, limit=MAX_LIST)
            for u in batch:
                if skip_cp is not None and u.key.startswith(skip_cp):
                    continue
                if len(entries) == max_uploads:
                    truncated = True
                    break
                i = u.key.find(delimiter, len(prefix)) if delimiter else -1
                if i >= 0:
                    skip_cp = u.key[:i + len(delimiter)]
                    entries.append(skip_cp)
                else:
                    entries.append(u)
            if truncated or len(batch) < MAX_LIST:
                break
            # Uploads are few: walk on (through a common prefix too; see namespace.list_uploads).
            km, im = batch[-1].key, batch[-1].upload_id
        last = entries[-1] if entries else None
        next_key = (last if isinstance(last, str) else last.key) if last is not None else ""
        next_id = last.upload_id if last is not None and not isinstance(last, str) else ""
        root = E("ListMultipartUploadsResult",
                 E("Bucket", req.bucket), E("KeyMarker", enc(key_marker)),
                 E("UploadIdMarker", id_marker),
                 E("NextKeyMarker", enc(next_key)) if truncated else None,
                 E("NextUploadIdMarker", next_id) if truncated else None,
                 E("Prefix", enc(prefix)),
                 E("Delimiter", enc(delimiter)) if delimiter else None,
                 E("MaxUploads", max_uploads), E("IsTruncated", truncated),
                 E("EncodingType", "url") if "encoding-type" in q else None,
                 [E("Upload", E("Key", enc(u.key)), E("UploadId", u.upload_id),
                    E("Initiator", E("ID", u.owner), E("DisplayName", u.owner)),
                    owner_xml(u.owner), E("StorageClass", "STANDARD"),
                    E("Initiated", iso8601(u.initiated)),
                    E("ChecksumAlgorithm", u.template.get("checksum_algorithm"))
                    if u.template.get("checksum_algorithm") else None)
                  for u in entries if not isinstance(u, str)],
                 [E("CommonPrefixes", E("Prefix", enc(p))) for p in entries
                  if isinstance(p, str)])
        return xml_response(root)

