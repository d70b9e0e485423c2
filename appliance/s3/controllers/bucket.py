"""The bucket resource: create, head, delete, location, and the minimal answers for bucket
configuration sub-resources (ACL, versioning, tagging, policy, ...) that clients probe.

Listing lives in :mod:`.listing` (ListObjects, ListObjectsV2, ListObjectVersions).
"""

from __future__ import annotations

import ipaddress
import re

from ...namespace import BucketExists, BucketNotEmpty, NoSuchBucket
from ..errors import S3Error
from ..request import S3Request
from ..response import Response, empty, xml_response
from ..xmlio import E, child_text, parse
from .base import Controller, owner_xml

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
MAX_CONFIG_BODY = 64 * 1024
"""Largest CreateBucketConfiguration / ACL body read."""
PRIVATE_ACLS = {"private", "bucket-owner-full-control"}


def valid_bucket_name(name: str) -> bool:
    """AWS general purpose bucket naming rules: 3-63 of a-z 0-9 . -, starting and ending with a
    letter or digit, no ``..``, not an IPv4 address, no reserved prefix or suffix.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html"""
    if not _NAME_RE.match(name) or ".." in name:
        return False
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return False
    try:
        ipaddress.IPv4Address(name)
        return False
    except ValueError:
        return True


def acl_xml(user: str):
    """An AccessControlPolicy granting FULL_CONTROL to ``user`` only (the only ACL we have)."""
    return E("AccessControlPolicy", owner_xml(user),
             E("AccessControlList",
               E("Grant",
                 E("Grantee", E("ID", user), E("DisplayName", user),
                   **{"xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                      "xsi:type": "CanonicalUser"}),
                 E("Permission", "FULL_CONTROL"))))


def check_canned_acl(req: S3Request) -> None:
    """Buckets and objects are private to their owner (like AWS's BucketOwnerEnforced):
    only the private canned ACLs are accepted. Raises AccessControlListNotSupported."""
    acl = req.header("x-amz-acl")
    if acl is not None and acl.strip() not in PRIVATE_ACLS:
        raise S3Error("AccessControlListNotSupported")
    if any(h.startswith("x-amz-grant-") for h in req.headers):
        raise S3Error("AccessControlListNotSupported")


class BucketController(Controller):
    def handlers(self) -> dict:
        h = {
            "CreateBucket": self.create_bucket,
            "HeadBucket": self.head_bucket,
            "DeleteBucket": self.delete_bucket,
            "GetBucketLocation": self.get_location,
            "GetBucketAcl": self.get_acl,
            "PutBucketAcl": self.put_acl,
            "GetBucketVersioning": self.get_versioning,
        }
        for op, tag in _EMPTY_CONFIGS.items():
            h[op] = self._fixed_xml(tag)
        for op, code in _MISSING_CONFIGS.items():
            h[op] = self._missing(code)
        for op in _DELETE_CONFIGS:
            h[op] = self._delete_config
        return h

    async def create_bucket(self, req: S3Request) -> Response:
        """Create bucket ``req.bucket`` owned by the caller.

        Body: optional ``CreateBucketConfiguration`` whose ``LocationConstraint`` must be empty
        or this gateway's region. Errors: InvalidBucketName, BucketAlreadyOwnedByYou (409),
        BucketAlreadyExists (409), MalformedXML, IllegalLocationConstraintException.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html
        """
        name = req.bucket
        if not valid_bucket_name(name):
            raise S3Error("InvalidBucketName", BucketName=name)
        body = await req.body.read_all(MAX_CONFIG_BODY)
        if body.strip():
            cfg = parse(body, "CreateBucketConfiguration")
            loc = child_text(cfg, "LocationConstraint", "")
            if loc not in ("", self.gw.region):
                raise S3Error("IllegalLocationConstraintException",
                              f"The {loc} location constraint is incompatible for the region "
                              "specific endpoint this request was sent to.")
        if req.header("x-amz-bucket-object-lock-enabled", "").lower() == "true":
            raise S3Error("NotImplemented", "Object Lock is not supported")
        check_canned_acl(req)
        try:
            await self.ns.create_bucket(name, req.user)
        except BucketExists as e:
            code = "BucketAlreadyOwnedByYou" if e.owner == req.user else "BucketAlreadyExists"
            raise S3Error(code, BucketName=name) from None
        return empty(200, [("location", "/" + name)])

    async def head_bucket(self, req: S3Request) -> Response:
        """200 with ``x-amz-bucket-region`` when the bucket exists and is the caller's;
        404/403 without a body otherwise.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html"""
        await self.bucket(req)
        return empty(200, [("x-amz-bucket-region", self.gw.region)])

    async def delete_bucket(self, req: S3Request) -> Response:
        """204; BucketNotEmpty (409) while it holds objects or multipart uploads.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteBucket.html"""
        await self.bucket(req)
        try:
            await self.ns.delete_bucket(req.bucket)
        except NoSuchBucket:
            raise S3Error("NoSuchBucket", BucketName=req.bucket) from None
        except BucketNotEmpty:
            raise S3Error("BucketNotEmpty", BucketName=req.bucket) from None
        return empty(204)

    async def get_location(self, req: S3Request) -> Response:
        """``<LocationConstraint>`` with the region; empty for us-east-1, as AWS answers.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html"""
        await self.bucket(req)
        region = "" if self.gw.region == "us-east-1" else self.gw.region
        return xml_response(E("LocationConstraint", region or None))

    async def get_acl(self, req: S3Request) -> Response:
        """FULL_CONTROL for the owner (buckets are private).
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketAcl.html"""
        b = await self.bucket(req)
        return xml_response(acl_xml(b.owner))

    async def put_acl(self, req: S3Request) -> Response:
        """Accepts only the private canned ACLs (x-amz-acl private / bucket-owner-full-control)
        or a body granting the owner FULL_CONTROL; anything else AccessControlListNotSupported.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketAcl.html"""
        b = await self.bucket(req)
        await check_acl_body(req, b.owner)
        return empty(200)

    async def get_versioning(self, req: S3Request) -> Response:
        """An empty VersioningConfiguration: versioning was never enabled.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html"""
        await self.bucket(req)
        return xml_response(E("VersioningConfiguration"))

    def _fixed_xml(self, tag: str):
        async def handler(req: S3Request) -> Response:
            await self.bucket(req)
            root = E(tag)
            if tag == "RequestPaymentConfiguration":
                root.append(E("Payer", "BucketOwner"))
            return xml_response(root)
        return handler

    def _missing(self, code: str):
        async def handler(req: S3Request) -> Response:
            await self.bucket(req)
            raise S3Error(code, BucketName=req.bucket)
        return handler

    async def _delete_config(self, req: S3Request) -> Response:
        await self.bucket(req)
        return empty(204)


async def check_acl_body(req: S3Request, owner: str) -> None:
    """Validate a Put*Acl request: canned private ACL, or an AccessControlPolicy body whose only
    grant is FULL_CONTROL to the owner. Raises AccessControlListNotSupported / MalformedACLError."""
    check_canned_acl(req)
    body = await req.body.read_all(MAX_CONFIG_BODY)
    if not body.strip():
        return
    try:
        policy = parse(body, "AccessControlPolicy")
    except S3Error:
        raise S3Error("MalformedACLError") from None
    grants = policy.findall("AccessControlList/Grant")
    for g in grants:
        if (child_text(g, "Permission") != "FULL_CONTROL"
                or (g.findtext("Grantee/ID") or "") != owner):
            raise S3Error("AccessControlListNotSupported")


# GET sub-resources answered with an empty configuration document.
_EMPTY_CONFIGS = {
    "GetBucketLogging": "BucketLoggingStatus",
    "GetBucketNotificationConfiguration": "NotificationConfiguration",
    "GetBucketRequestPayment": "RequestPaymentConfiguration",
    "GetBucketAccelerateConfiguration": "AccelerateConfiguration",
}
# GET sub-resources that AWS answers with a 404 error when nothing is configured.
_MISSING_CONFIGS = {
    "GetBucketTagging": "NoSuchTagSet",
    "GetBucketPolicy": "NoSuchBucketPolicy",
    "GetBucketPolicyStatus": "NoSuchBucketPolicy",
    "GetBucketCors": "NoSuchCORSConfiguration",
    "GetBucketLifecycleConfiguration": "NoSuchLifecycleConfiguration",
    "GetBucketEncryption": "ServerSideEncryptionConfigurationNotFoundError",
    "GetBucketWebsite": "NoSuchWebsiteConfiguration",
    "GetObjectLockConfiguration": "ObjectLockConfigurationNotFoundError",
    "GetBucketOwnershipControls": "OwnershipControlsNotFoundError",
    "GetPublicAccessBlock": "NoSuchPublicAccessBlockConfiguration",
    "GetBucketReplication": "ReplicationConfigurationNotFoundError",
}
_DELETE_CONFIGS = (
    "DeleteBucketTagging", "DeleteBucketPolicy", "DeleteBucketCors", "DeleteBucketLifecycle",
    "DeleteBucketEncryption", "DeleteBucketWebsite", "DeleteBucketOwnershipControls",
    "DeletePublicAccessBlock", "DeleteBucketReplication",
)
