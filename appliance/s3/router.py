"""Request routing: (method, bucket?, key?, sub-resource, headers) -> AWS operation name.

The controllers register a handler per operation name (see ``controllers``); :class:`Router`
picks the name with :func:`operation` and returns the handler. Operations we do not support
route to ``NotImplemented`` (501); methods that make no sense on a resource to
``MethodNotAllowed`` (405). Unknown query parameters (``x-id=...`` that new SDKs add, presign
parameters) are ignored, as AWS does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .errors import S3Error
from .request import S3Request
from .response import Response

Handler = Callable[[S3Request], Awaitable[Response]]

# Bucket sub-resources: query parameter -> operation, per method.
_BUCKET_GET = {
    "acl": "GetBucketAcl", "versioning": "GetBucketVersioning", "location": "GetBucketLocation",
    "tagging": "GetBucketTagging", "policy": "GetBucketPolicy", "cors": "GetBucketCors",
    "lifecycle": "GetBucketLifecycleConfiguration", "encryption": "GetBucketEncryption",
    "website": "GetBucketWebsite", "object-lock": "GetObjectLockConfiguration",
    "ownershipControls": "GetBucketOwnershipControls",
    "publicAccessBlock": "GetPublicAccessBlock", "logging": "GetBucketLogging",
    "notification": "GetBucketNotificationConfiguration",
    "requestPayment": "GetBucketRequestPayment", "accelerate": "GetBucketAccelerateConfiguration",
    "policyStatus": "GetBucketPolicyStatus", "replication": "GetBucketReplication",
    "uploads": "ListMultipartUploads", "versions": "ListObjectVersions",
    "analytics": "NotImplemented", "inventory": "NotImplemented", "metrics": "NotImplemented",
    "intelligent-tiering": "NotImplemented", "metadataTable": "NotImplemented",
    "session": "NotImplemented",
}
_BUCKET_PUT = {
    "acl": "PutBucketAcl", "versioning": "NotImplemented", "tagging": "NotImplemented",
    "policy": "NotImplemented", "cors": "NotImplemented", "lifecycle": "NotImplemented",
    "encryption": "NotImplemented", "website": "NotImplemented", "object-lock": "NotImplemented",
    "ownershipControls": "NotImplemented", "publicAccessBlock": "NotImplemented",
    "logging": "NotImplemented", "notification": "NotImplemented",
    "requestPayment": "NotImplemented", "accelerate": "NotImplemented",
    "replication": "NotImplemented", "analytics": "NotImplemented",
    "inventory": "NotImplemented", "metrics": "NotImplemented",
    "intelligent-tiering": "NotImplemented", "metadataTable": "NotImplemented",
}
_BUCKET_DELETE = {
    # Nothing of these is ever configured here, so deleting them succeeds (204) as on AWS.
    "tagging": "DeleteBucketTagging", "policy": "DeleteBucketPolicy", "cors": "DeleteBucketCors",
    "lifecycle": "DeleteBucketLifecycle", "encryption": "DeleteBucketEncryption",
    "website": "DeleteBucketWebsite", "ownershipControls": "DeleteBucketOwnershipControls",
    "publicAccessBlock": "DeletePublicAccessBlock", "replication": "DeleteBucketReplication",
    "analytics": "NotImplemented", "inventory": "NotImplemented", "metrics": "NotImplemented",
    "intelligent-tiering": "NotImplemented", "metadataTable": "NotImplemented",
}
_OBJECT_GET = {
    "acl": "GetObjectAcl", "tagging": "GetObjectTagging", "attributes": "GetObjectAttributes",
    "legal-hold": "GetObjectLegalHold", "retention": "GetObjectRetention",
    "torrent": "NotImplemented",
}
_OBJECT_PUT = {
    "acl": "PutObjectAcl", "tagging": "NotImplemented", "legal-hold": "NotImplemented",
    "retention": "NotImplemented",
}
_OBJECT_POST = {"restore": "NotImplemented", "select": "NotImplemented",
                "renameObject": "NotImplemented"}


def _sub(req: S3Request, table: dict[str, str]) -> str | None:
    for name in req.query:
        if name in table:
            return table[name]
    return None


def operation(req: S3Request) -> str:
    """The AWS API operation name of ``req`` (e.g. ``PutObject``, ``ListObjectsV2``)."""
    m, q = req.method, req.query
    if req.bucket is None:
        if m == "GET":
            return "ListBuckets"
        return "MethodNotAllowed"
    if req.key is None:
        if m == "GET":
            op = _sub(req, _BUCKET_GET)
            if op:
                return op
            return "ListObjectsV2" if q.get("list-type") == "2" else "ListObjects"
        if m == "HEAD":
            return "HeadBucket"
        if m == "PUT":
            return _sub(req, _BUCKET_PUT) or "CreateBucket"
        if m == "DELETE":
            return _sub(req, _BUCKET_DELETE) or "DeleteBucket"
        if m == "POST":
            if "delete" in q:
                return "DeleteObjects"
            return "NotImplemented"  # browser-based POST uploads
        return "MethodNotAllowed"
    if m == "GET":
        if "uploadId" in q:
            return "ListParts"
        return _sub(req, _OBJECT_GET) or "GetObject"
    if m == "HEAD":
        return "HeadObject"
    if m == "PUT":
        if "uploadId" in q or "partNumber" in q:
            return "UploadPartCopy" if "x-amz-copy-source" in req.headers else "UploadPart"
        op = _sub(req, _OBJECT_PUT)
        if op:
            return op
        return "CopyObject" if "x-amz-copy-source" in req.headers else "PutObject"
    if m == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        return _sub(req, _OBJECT_POST) or "NotImplemented"
    if m == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        if "tagging" in q:
            return "DeleteObjectTagging"
        return "DeleteObject"
    return "MethodNotAllowed"


class Router:
    """Maps operation names to handlers registered by the controllers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def register(self, handlers: dict[str, Handler]) -> None:
        dup = set(handlers) & set(self.handlers)
        if dup:
            raise ValueError(f"operations registered twice: {sorted(dup)}")
        self.handlers.update(handlers)

    def resolve(self, req: S3Request) -> tuple[str, Handler]:
        """(operation name, handler). Raises S3Error MethodNotAllowed / NotImplemented."""
        op = operation(req)
        if op == "MethodNotAllowed":
            raise S3Error("MethodNotAllowed", Method=req.method,
                          ResourceType="SERVICE" if req.bucket is None else
                          "BUCKET" if req.key is None else "OBJECT")
        handler = self.handlers.get(op)
        if handler is None:
            raise S3Error("NotImplemented",
                          f"{op if op != 'NotImplemented' else 'This operation'} is not "
                          "implemented by this server")
        return op, handler
