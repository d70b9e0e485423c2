"""The parsed S3 request: method, bucket and key, query parameters, headers.

Bucket and key come from the path (path style, ``/bucket/key``) or, when the gateway has a
domain configured and the Host header is ``bucket.DOMAIN``, from the host (virtual-host style,
``/key``). See https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html.

The key is decoded from the ASGI ``raw_path`` (the wire bytes): ASGI's ``path`` is already
percent-decoded, which would make ``a%2Fb`` and ``a/b`` the same thing and turn ``%25`` into
ambiguity. Keys are taken verbatim otherwise: ``+`` is a plus sign, ``//``, ``..`` and a leading
``/`` are significant.
"""

from __future__ import annotations

import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import S3Error
from .sigv4 import parse_query

if TYPE_CHECKING:
    from .body import BodyReader
    from .sigv4 import AuthResult

MAX_KEY_BYTES = 1024
MAX_HEADER_BYTES = 16 * 1024
"""Largest request header section (names + values) accepted; AWS's own limit is 8 KB, and
hypercorn refuses header sections over 16 KiB that arrive in more than one read."""


def new_request_id() -> str:
    """16 upper-case hex characters, like AWS's x-amz-request-id."""
    return secrets.token_hex(8).upper()


@dataclass
class S3Request:
    """One request as the controllers see it.

    ``bucket``/``key`` are None when absent (service and bucket requests). ``query`` maps each
    parameter (percent-decoded, ``+`` read as space) to its first value; valueless parameters
    such as ``?uploads`` map to ``""``. ``headers`` maps lower-case names to values decoded as
    latin-1 (the wire bytes); repeated headers are joined with ``,``.
    """

    scope: dict
    method: str
    raw_path: bytes
    query_string: bytes
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: dict[str, str]
    request_id: str = field(default_factory=new_request_id)
    user: str = ""
    """The authenticated user name (the account that owns buckets it creates)."""
    auth: AuthResult | None = None
    body: BodyReader | None = None
    op: str = "Unknown"
    """Operation name for logs and metrics (AWS API name, e.g. ``PutObject``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    leases: list = field(default_factory=list)
    """Memory reserved for this request (membudget.Lease), given back once it is answered."""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def resource(self) -> str:
        """The ``<Resource>`` of error bodies: ``/bucket/key`` (decoded)."""
        if self.bucket is None:
            return "/"
        return "/" + self.bucket + ("/" + self.key if self.key is not None else "")


def parse_request(scope: dict, domain: str | None) -> S3Request:
    """Build an :class:`S3Request` from an ASGI HTTP scope.

    Raises S3Error InvalidURI when the path does not decode to UTF-8, InvalidBucketName when a
    virtual-host bucket name is empty, RequestHeaderSectionTooLarge over MAX_HEADER_BYTES."""
    headers: dict[str, str] = {}
    size = 0
    for name, value in scope.get("headers", ()):
        n = bytes(name).decode("latin-1").lower()
        v = bytes(value).decode("latin-1")
        size += len(n) + len(v) + 4
        headers[n] = headers[n] + "," + v if n in headers else v
    if size > MAX_HEADER_BYTES:
        raise S3Error("RequestHeaderSectionTooLarge", MaxSizeAllowed=str(MAX_HEADER_BYTES))
    raw_path = scope.get("raw_path")
    if raw_path is None:
        raw_path = urllib.parse.quote(scope["path"]).encode()
    raw_path = bytes(raw_path)
    query_string = bytes(scope.get("query_string", b""))
    query: dict[str, str] = {}
    for name, value in parse_query(query_string):
        query.setdefault(name, value)

    bucket: str | None = None
    host = headers.get("host", "").strip().lower()
    if host.startswith("["):  # IPv6 literal
        hostname = host.split("]", 1)[0] + "]"
    else:
        hostname = host.rsplit(":", 1)[0] if ":" in host else host
    rest = raw_path
    if domain and hostname.endswith("." + domain.lower()):
        bucket = hostname[: -len(domain) - 1]
        if not bucket:
            raise S3Error("InvalidBucketName", BucketName="")
        rest = raw_path[1:] if raw_path.startswith(b"/") else raw_path
        key = _decode(rest) if rest else None
    else:
        path = raw_path[1:] if raw_path.startswith(b"/") else raw_path
        b, sep, k = path.partition(b"/")
        bucket = _decode(b) if b else None
        key = _decode(k) if k else None
        if bucket is None and k:
            raise S3Error("InvalidURI")
    return S3Request(scope=scope, method=scope["method"].upper(), raw_path=raw_path,
                     query_string=query_string, bucket=bucket, key=key, query=query,
                     headers=headers)


def _decode(raw: bytes) -> str:
    try:
        return urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None
