"""The service resource (``GET /``): ListBuckets."""

from __future__ import annotations

import base64
import binascii

from ..errors import invalid_argument
from ..request import S3Request
from ..response import Response, xml_response
from ..xmlio import E, iso8601
from .base import Controller, owner_xml


class ServiceController(Controller):
    def handlers(self) -> dict:
        return {"ListBuckets": self.list_buckets}

    async def list_buckets(self, req: S3Request) -> Response:
        """Buckets owned by the caller, by name.

        Query: ``prefix``, ``max-buckets`` (1..10000), ``continuation-token`` (opaque, from a
        previous ``ContinuationToken``); without ``max-buckets`` everything is returned.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListBuckets.html
        """
        prefix = req.query.get("prefix", "")
        buckets = sorted((b for b in await self.ns.list_buckets(req.user)
                          if b.name.startswith(prefix)), key=lambda b: b.name)
        token = req.query.get("continuation-token")
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise invalid_argument("The continuation token provided is incorrect",
                                       "continuation-token", token) from None
            buckets = [b for b in buckets if b.name > after]
        next_token = None
        if "max-buckets" in req.query:
            raw = req.query["max-buckets"]
            if not raw.isdigit() or not 1 <= int(raw) <= 10000:
                raise invalid_argument("max-buckets must be an integer between 1 and 10000",
                                       "max-buckets", raw)
            n = int(raw)
            if len(buckets) > n:
                buckets = buckets[:n]
                next_token = base64.urlsafe_b64encode(buckets[-1].name.encode()).decode()
        root = E("ListAllMyBucketsResult",
                 E("Buckets", [E("Bucket", E("Name", b.name), E("CreationDate", iso8601(b.created)),
                                 E("BucketRegion", self.gw.region)) for b in buckets]),
                 owner_xml(req.user),
                 E("ContinuationToken", next_token) if next_token else None,
                 E("Prefix", prefix) if "prefix" in req.query else None)
        return xml_response(root)

