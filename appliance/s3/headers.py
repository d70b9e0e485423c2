"""Object headers: what PutObject/CreateMultipartUpload store, what GET/HEAD return.

Stored (``ObjectRecord.headers``): Content-Type (default ``binary/octet-stream``, as AWS),
Content-Encoding (``aws-chunked`` removed: it describes the upload framing, not the object),
Content-Disposition, Content-Language, Cache-Control, Expires. User metadata
(``ObjectRecord.meta``): ``x-amz-meta-*`` with lower-case names, returned as sent; at most
2 KB (sum of UTF-8 name and value lengths) else MetadataTooLarge.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
"""

from __future__ import annotations

from ..namespace import ObjectRecord
from .errors import S3Error, invalid_argument
from .request import S3Request
from .xmlio import http_date

STORED_HEADERS = ("content-type", "content-encoding", "content-disposition", "content-language",
                  "cache-control", "expires")
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
META_PREFIX = "x-amz-meta-"
MAX_META_BYTES = 2048
# GetObject's response-* query parameters and the header each one overrides.
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
STORAGE_CLASSES = {"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                   "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS",
                   "SNOW", "EXPRESS_ONEZONE"}


def content_headers(req: S3Request) -> dict[str, str]:
    """The content headers of a PUT/CreateMultipartUpload/CopyObject(REPLACE) to store."""
    out = {}
    for name in STORED_HEADERS:
        v = req.header(name)
        if v is None:
            continue
        if name == "content-encoding":
            v = ",".join(t.strip() for t in v.split(",")
                         if t.strip() and t.strip().lower() != "aws-chunked")
            if not v:
                continue
        out[name] = v
    out.setdefault("content-type", DEFAULT_CONTENT_TYPE)
    return out


def user_metadata(req: S3Request) -> dict[str, str]:
    """``x-amz-meta-*`` headers as {name without prefix: value}. Raises MetadataTooLarge."""
    meta = {k[len(META_PREFIX):]: v for k, v in req.headers.items() if k.startswith(META_PREFIX)}
    size = sum(len(k.encode()) + len(v.encode("utf-8", "surrogateescape")) for k, v in meta.items())
    if size > MAX_META_BYTES:
        raise S3Error("MetadataTooLarge", Size=str(size), MaxSizeAllowed=str(MAX_META_BYTES))
    return meta


def check_unsupported(req: S3Request) -> None:
    """Refuse what we cannot honour: SSE-C and KMS encryption (NotImplemented), unknown storage
    classes (InvalidStorageClass). SSE-S3 (AES256) is accepted: data is at rest on our disks."""
    if any(k.startswith("x-amz-server-side-encryption-customer-") for k in req.headers):
        raise S3Error("NotImplemented", "Server-side encryption with customer keys (SSE-C) is "
                                        "not implemented")
    sse = req.header("x-amz-server-side-encryption")
    if sse is not None and sse != "AES256":
        raise S3Error("NotImplemented", f"Server-side encryption {sse} is not implemented")
    sc = req.header("x-amz-storage-class")
    if sc is not None and sc not in STORAGE_CLASSES:
        raise S3Error("InvalidStorageClass", StorageClassRequested=sc)
    if req.header("x-amz-object-lock-mode") or req.header("x-amz-object-lock-legal-hold"):
        raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")


def object_headers(rec: ObjectRecord, *, checksums: bool = False) -> list[tuple[str, str]]:
    """Response headers describing ``rec`` (without Content-Length/Content-Range).

    ``checksums``: include ``x-amz-checksum-*`` and ``x-amz-checksum-type`` (GET/HEAD with
    ``x-amz-checksum-mode: ENABLED`` on the whole object)."""
    h = [("etag", f'"{rec.etag}"'), ("last-modified", http_date(rec.mtime)),
         ("accept-ranges", "bytes")]
    for name in STORED_HEADERS:
        if name in rec.headers:
            h.append((name, rec.headers[name]))
    if "content-type" not in rec.headers:
        h.append(("content-type", DEFAULT_CONTENT_TYPE))
    h += [(META_PREFIX + k, v) for k, v in rec.meta.items()]
    if checksums and rec.checksums:
        h += [(f"x-amz-checksum-{a.lower()}", v) for a, v in rec.checksums.items()]
        if rec.checksum_type:
            h.append(("x-amz-checksum-type", rec.checksum_type))
    return h


def apply_overrides(req: S3Request, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """GetObject ``response-*`` query parameters replace the matching headers. Anonymous
    requests may not use them (AWS: InvalidRequest); ours are always signed."""
    over = {RESPONSE_OVERRIDES[k]: v for k, v in req.query.items() if k in RESPONSE_OVERRIDES}
    if not over:
        return headers
    return [(k, v) for k, v in headers if k not in over] + list(over.items())


def checksum_mode(req: S3Request) -> bool:
    return (req.header("x-amz-checksum-mode") or "").upper() == "ENABLED"


def metadata_directive(req: S3Request, name: str = "x-amz-metadata-directive") -> str:
    v = (req.header(name) or "COPY").strip().upper()
    if v not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown metadata directive.", name, v)
    return v
