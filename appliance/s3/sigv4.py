"""AWS Signature Version 4 verification for the S3 gateway (server side).

This module answers one question: *who sent this request, and did they really
sign it?*  It never reads the body.  Two wire forms are supported:

* the ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
  Signature=...`` header
  (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html);
* presigned URLs carrying ``X-Amz-Algorithm``, ``X-Amz-Credential``,
  ``X-Amz-Date``, ``X-Amz-Expires``, ``X-Amz-SignedHeaders`` and
  ``X-Amz-Signature`` in the query string
  (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html).

Typical use::

    request = SignedRequest.from_asgi(scope)
    auth = verify_request(request, secret_for=keys.get, now=datetime.now(timezone.utc))
    # ... read the body; if auth.payload_sha256 is not None, compare it:
    auth.verify_payload(hashlib.sha256(body).digest())
    # ... or, for auth.payload_hash starting with "STREAMING-", decode the body
    # with appliance.s3.chunked.AwsChunkedDecoder.from_auth(auth, ...).

Every failure is an :class:`S3AuthError` whose ``code`` is the AWS error code
(``AccessDenied``, ``SignatureDoesNotMatch``, ...) and ``status`` the HTTP
status AWS uses; the application turns it into the S3 XML error body.  The same
exception class is used by ``appliance.s3.chunked`` and
``appliance.s3.checksums`` so the app has one thing to catch.

Canonicalisation rules that matter for S3 and differ from other services:

* the path is *not* normalised (``..``, ``//`` and a leading ``/`` in a key are
  significant) and *not* double-encoded: the canonical URI is the path with
  every byte except ``A-Za-z0-9-._~/`` percent-encoded.  We percent-decode the
  raw wire path and re-encode it that way, so a client that sent ``~`` as
  ``%7E``, or a ``+`` or ``:`` unencoded, still verifies.
* the query string is decoded (``+`` meaning space, as S3 reads it) and every
  name and value re-encoded with only ``A-Za-z0-9-._~`` left alone, then sorted
  by name and value.  :func:`parse_query` gives the app the same decoding.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_PRESIGN_EXPIRES",
    "MAX_SKEW",
    "STREAMING_PAYLOAD",
    "STREAMING_PAYLOAD_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthResult",
    "S3AuthError",
    "SignedRequest",
    "canonical_query",
    "canonical_uri",
    "derive_signing_key",
    "parse_query",
    "verify_payload_sha256",
    "verify_request",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

#: Largest clock difference accepted for header auth (AWS: 15 minutes).
MAX_SKEW = timedelta(minutes=15)
#: Longest lifetime of a presigned URL in seconds (AWS: 7 days).
MAX_PRESIGN_EXPIRES = 604800

_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# yyyyMMdd'T'HHmmss'Z' and yyyyMMdd, parsed by hand: datetime.strptime costs ~10 us a call.
_AMZ_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
_CREDENTIAL_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_PAYLOAD_LITERALS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER}
)
_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


# ---------------------------------------------------------------------------
# Errors


# AWS answers 403 for "you are not who you say" and 400 for "your request is
# malformed".  Codes not listed here are client errors (400).
_STATUS = {
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
}


class S3AuthError(Exception):
    """An S3 protocol error found while authenticating or decoding a request.

    Attributes:
        code: the AWS error code, e.g. ``"SignatureDoesNotMatch"``; goes into
            ``<Code>`` of the XML error body.
        message: human readable text for ``<Message>`` (AWS wording where known).
        status: HTTP status: 403 for ``AccessDenied``, ``InvalidAccessKeyId``,
            ``SignatureDoesNotMatch``, ``RequestTimeTooSkewed``; 400 otherwise
            (``AuthorizationHeaderMalformed``, ``InvalidArgument``, ...).
        details: extra ``<Name>value</Name>`` elements AWS adds to the error body
            (e.g. ``StringToSign``, ``CanonicalRequest``, ``RequestTime``);
            string values only.

    See https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html for
    the list of codes and statuses.
    """

    def __init__(
        self, code: str, message: str, status: int | None = None, **details: str
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else _STATUS.get(code, 400)
        self.details = details


def _malformed_header(reason: str) -> S3AuthError:
    return S3AuthError(
        "AuthorizationHeaderMalformed", f"The authorization header is malformed; {reason}"
    )


def _malformed_query(reason: str) -> S3AuthError:
    return S3AuthError("AuthorizationQueryParametersError", reason)


# ---------------------------------------------------------------------------
# Request view


@dataclass(frozen=True)
class SignedRequest:
    """Immutable view of the parts of an HTTP request that SigV4 covers.

    Attributes:
        method: HTTP method as sent, e.g. ``"PUT"``.
        raw_path: the percent-encoded path bytes exactly as on the wire (ASGI
            ``raw_path``), without the query string, e.g. ``b"/bkt/a%20b"``.
        query_string: the raw query bytes after ``?`` (ASGI ``query_string``),
            e.g. ``b"uploads&prefix=a%2Fb"``; ``b""`` when there is none.
        headers: ``(name, value)`` pairs in wire order; names lower-case.  Values
            are ``str`` decoded from the wire bytes as latin-1 (the ASGI/h11
            convention), so that ``value.encode("latin-1")`` gives back the
            exact bytes the client signed.  Repeated names are allowed.
    """

    method: str
    raw_path: bytes
    query_string: bytes
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def from_asgi(cls, scope: Mapping) -> SignedRequest:
        """Build the view from an ASGI HTTP ``scope`` (keys ``method``,
        ``raw_path`` or ``path``, ``query_string``, ``headers``)."""
        raw_path = scope.get("raw_path")
        if raw_path is None:
            # ASGI allows servers to omit raw_path; rebuild the AWS encoding.
            raw_path = urllib.parse.quote(scope["path"], safe="/~").encode("ascii")
        headers = tuple(
            (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
            for name, value in scope.get("headers", ())
        )
        return cls(scope["method"], bytes(raw_path), bytes(scope.get("query_string", b"")), headers)

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` (lower-case), in wire order."""
        return [value for key, value in self.headers if key == name]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


# ---------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class AuthResult:
    """What a successfully verified request proved.

    Attributes:
        access_key_id: the caller's access key id, e.g. ``"AKIAIOSFODNN7EXAMPLE"``.
        region: the region from the credential scope, e.g. ``"us-east-1"``.
        date: credential scope date, ``"YYYYMMDD"``.
        timestamp: request time as signed, ``"YYYYMMDDTHHMMSSZ"`` (the
            ``x-amz-date`` value, or the ``Date`` header converted).
        scope: credential scope, ``"YYYYMMDD/REGION/s3/aws4_request"``.
        signature: the verified request signature (64 lower-case hex); it is
            the *seed* signature that the first aws-chunked chunk chains from.
        signing_key: the 32-byte SigV4 signing key for this scope; needed to
            verify chunk and trailer signatures.  Kept out of ``repr``.
        payload_hash: the value signed as payload hash: the
            ``x-amz-content-sha256`` header (a 64-hex SHA-256,
            ``UNSIGNED-PAYLOAD`` or one of the ``STREAMING-*`` literals), or
            ``UNSIGNED-PAYLOAD`` for presigned URLs.
        signed_headers: names from ``SignedHeaders`` / ``X-Amz-SignedHeaders``.
        presigned: ``True`` for query-string auth.
        expires_at: when a presigned URL stops working (UTC); ``None`` for
            header auth.
    """

    access_key_id: str
    region: str
    date: str
    timestamp: str
    scope: str
    signature: str
    signing_key: bytes = field(repr=False)
    payload_hash: str
    signed_headers: tuple[str, ...]
    presigned: bool
    expires_at: datetime | None = None

    @property
    def payload_sha256(self) -> str | None:
        """The claimed SHA-256 of the body (lower-case hex) when the client
        signed one, else ``None`` (``UNSIGNED-PAYLOAD`` / ``STREAMING-*``)."""
        if _HEX64.fullmatch(self.payload_hash):
            return self.payload_hash.lower()
        return None

    @property
    def streaming(self) -> bool:
        """True when the body is aws-chunked (``x-amz-content-sha256: STREAMING-*``)."""
        return self.payload_hash.startswith("STREAMING-")

    def verify_payload(self, sha256_digest: bytes) -> None:
        """Check the body's SHA-256 (32 raw bytes) against ``payload_sha256``.

        No-op when the payload was not signed as a hash.  Raises
        :class:`S3AuthError` ``XAmzContentSHA256Mismatch`` (400) on mismatch.
        """
        if self.payload_sha256 is not None:
            verify_payload_sha256(self.payload_sha256, sha256_digest)


def verify_payload_sha256(expected_hex: str, actual_digest: bytes) -> None:
    """Compare the client's ``x-amz-content-sha256`` hex with the body digest.

    Args:
        expected_hex: 64 hex characters as the client sent them.
        actual_digest: ``hashlib.sha256(body).digest()`` (32 bytes).

    Raises:
        S3AuthError: ``XAmzContentSHA256Mismatch`` (400), as AWS does when
            "The provided 'x-amz-content-sha256' header does not match what was
            computed." (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
    """
    actual_hex = actual_digest.hex()
    if not hmac.compare_digest(expected_hex.lower().encode("ascii"), actual_hex.encode("ascii")):
        raise S3AuthError(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ClientComputedContentSHA256=expected_hex,
            S3ComputedContentSHA256=actual_hex,
        )


# ---------------------------------------------------------------------------
# Canonical forms


def _aws_quote(raw: bytes, safe: str) -> str:
    # quote_from_bytes always leaves A-Za-z0-9-._~ alone, which is exactly the
    # "unreserved" set of the AWS UriEncode() rule; everything else becomes %XX
    # with upper-case hex, as AWS requires.
    return urllib.parse.quote_from_bytes(raw, safe=safe)


def canonical_uri(raw_path: bytes) -> str:
    """The SigV4 CanonicalURI of an S3 request path.

    Args:
        raw_path: path bytes as sent on the wire, possibly percent-encoded.

    Returns:
        The path percent-decoded and re-encoded with the AWS ``UriEncode`` rule
        (``/`` kept), without dot-segment removal or slash merging; ``"/"`` for
        an empty path.  E.g. ``b"/b/a+b%7E"`` -> ``"/b/a%2Bb~"``.

    S3 rule: "URI-encode each path segment ... do not normalize" and "do not
    double-encode" (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
    """
    if not raw_path:
        return "/"
    return _aws_quote(urllib.parse.unquote_to_bytes(raw_path), safe="/")


def _split_query(query_string: bytes) -> list[tuple[bytes, bytes]]:
    # S3 reads "+" in a query string as a space, like HTML forms do.
    pairs = []
    for part in query_string.split(b"&"):
        if not part:
            continue  # "a&&b" and a trailing "&" carry no parameter
        name, _, value = part.partition(b"=")
        pairs.append(
            (
                urllib.parse.unquote_to_bytes(name.replace(b"+", b" ")),
                urllib.parse.unquote_to_bytes(value.replace(b"+", b" ")),
            )
        )
    return pairs


def parse_query(query_string: bytes) -> list[tuple[str, str]]:
    """Decode a raw query string the way signatures are checked.

    Args:
        query_string: raw bytes after ``?``.

    Returns:
        ``(name, value)`` pairs in wire order, percent-decoded, ``+`` read as a
        space, UTF-8 decoded (invalid bytes replaced).  ``?uploads`` gives
        ``[("uploads", "")]``.  The app should read parameters with this so it
        acts on the same values the signature covered.
    """
    return [
        (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        for name, value in _split_query(query_string)
    ]


def canonical_query(query_string: bytes, exclude: Iterable[str] = ()) -> str:
    """The SigV4 CanonicalQueryString.

    Args:
        query_string: raw bytes after ``?``.
        exclude: parameter names to leave out (``X-Amz-Signature`` for
            presigned URLs).

    Returns:
        ``name=value`` pairs joined by ``&``, each name and value re-encoded
        with the AWS ``UriEncode`` rule (``/`` encoded too), sorted by encoded
        name then value; a valueless parameter becomes ``name=``.
        (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html)
    """
    skip = {name.encode("utf-8") for name in exclude}
    encoded = sorted(
        (_aws_quote(name, safe=""), _aws_quote(value, safe=""))
        for name, value in _split_query(query_string)
        if name not in skip
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _header_bytes(value: str) -> bytes:
    # Header values arrive latin-1 decoded (see SignedRequest); encoding them
    # back yields the wire bytes the client signed.  Anything wider than
    # latin-1 cannot have come off the wire, so the caller built it: use UTF-8.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _canonical_headers(request: SignedRequest, signed_headers: Iterable[str]) -> bytes:
    lines = []
    for name in signed_headers:
        # Repeated headers are joined with "," and every value is trimmed with
        # inner runs of whitespace collapsed ("Trimall" in the AWS docs).
        # bytes.split() only splits on ASCII whitespace, like AWS.
        values = (b" ".join(_header_bytes(v).split()) for v in request.header_values(name))
        lines.append(name.encode("ascii") + b":" + b",".join(values) + b"\n")
    return b"".join(lines)


def _canonical_request(
    request: SignedRequest,
    signed_headers: tuple[str, ...],
    payload_hash: str,
    query_exclude: Iterable[str] = (),
) -> bytes:
    return b"\n".join(
        [
            request.method.encode("ascii"),
            canonical_uri(request.raw_path).encode("ascii"),
            canonical_query(request.query_string, query_exclude).encode("ascii"),
            _canonical_headers(request, signed_headers),
            ";".join(signed_headers).encode("ascii"),
            payload_hash.encode("ascii"),
        ]
    )


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


@functools.lru_cache(maxsize=256)  # a pure function; a key is used for a whole day
def derive_signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 signing key: HMAC chain over date, region, service, terminator.

    Args:
        secret: the secret access key.
        date: ``"YYYYMMDD"``.
        region: e.g. ``"us-east-1"``.
        service: ``"s3"``.

    Returns:
        32 bytes.  (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html)
    """
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, TERMINATOR)


def _string_to_sign(timestamp: str, scope: str, canonical_request: bytes) -> str:
    return "\n".join(
        [ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request).hexdigest()]
    )


# ---------------------------------------------------------------------------
# Parsing helpers


@dataclass(frozen=True)
class _Credential:
    access_key_id: str
    date: str
    region: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{SERVICE}/{TERMINATOR}"


def _parse_credential(value: str, region: str | None) -> tuple[_Credential | None, str]:
    """Return (credential, "") or (None, reason) with AWS's wording."""
    parts = value.split("/")
    if len(parts) != 5 or not all(parts):
        return None, (
            'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    akid, date, cred_region, service, terminator = parts
    if not _is_date(date):
        return None, (
            f'incorrect date format "{date}". This date in the credential must be in the format "yyyyMMdd".'
        )
    if service != SERVICE:
        return None, f'incorrect service "{service}". This endpoint belongs to "{SERVICE}".'
    if terminator != TERMINATOR:
        return None, f'incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".'
    if region is not None and cred_region != region:
        return None, f"the region '{cred_region}' is wrong; expecting '{region}'"
    return _Credential(akid, date, cred_region), ""


def _is_date(value: str) -> bool:
    """``yyyyMMdd`` naming a real day."""
    m = _CREDENTIAL_DATE.fullmatch(value)
    if m is None:
        return False
    try:
        datetime(*map(int, m.groups()))
    except ValueError:  # no such day
        return False
    return True


def _parse_amz_date(value: str) -> datetime | None:
    m = _AMZ_DATE.fullmatch(value)
    if m is None:
        return None
    try:
        return datetime(*map(int, m.groups()), tzinfo=timezone.utc)
    except ValueError:  # no such day or time
        return None


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _lookup_secret(secret_for: Callable[[str], str | None] | Mapping[str, str], akid: str) -> str:
    secret = secret_for.get(akid) if isinstance(secret_for, Mapping) else secret_for(akid)
    if secret is None:
        raise S3AuthError(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=akid,
        )
    return secret


def _check_signed_headers(request: SignedRequest, signed: tuple[str, ...]) -> None:
    # AWS requires "host" and every x-amz-* header that is present to be
    # signed; otherwise an intermediary could add e.g. x-amz-copy-source or
    # x-amz-meta-* to a signed request.
    required = {"host"} | {name for name, _ in request.headers if name.startswith("x-amz-")}
    missing = sorted(required - set(signed))
    if missing:
        raise S3AuthError(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(missing),
        )


def _parse_signed_headers(value: str) -> tuple[str, ...] | None:
    names = tuple(value.split(";"))
    if not value or not all(names) or any(n != n.lower() or n.strip() != n for n in names):
        return None
    return names


def _as_utc(now: datetime) -> datetime:
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


def _check_signature(
    request: SignedRequest,
    credential: _Credential,
    secret: str,
    timestamp: str,
    signed_headers: tuple[str, ...],
    payload_hash: str,
    provided: str,
    query_exclude: Iterable[str] = (),
    expires_at: datetime | None = None,
) -> AuthResult:
    """Verify ``provided``; returns what the request proved (presigned when ``query_exclude``
    names the signature parameter). Raises S3AuthError SignatureDoesNotMatch."""
    canonical = _canonical_request(request, signed_headers, payload_hash, query_exclude)
    string_to_sign = _string_to_sign(timestamp, credential.scope, canonical)
    key = derive_signing_key(secret, credential.date, credential.region)
    expected = hmac.new(key, string_to_sign.encode("ascii"), hashlib.sha256).hexdigest()
    # Constant time, so that response timing leaks nothing about the signature.
    if not hmac.compare_digest(expected.encode("ascii"), provided.encode("utf-8", "replace")):
        raise S3AuthError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            AWSAccessKeyId=credential.access_key_id,
            StringToSign=string_to_sign,
            SignatureProvided=provided,
            CanonicalRequest=canonical.decode("latin-1"),
        )
    return AuthResult(
        access_key_id=credential.access_key_id,
        region=credential.region,
        date=credential.date,
        timestamp=timestamp,
        scope=credential.scope,
        signature=provided,
        signing_key=key,
        payload_hash=payload_hash,
        signed_headers=signed_headers,
        presigned=bool(query_exclude),
        expires_at=expires_at,
    )


# ---------------------------------------------------------------------------
# Entry point


def verify_request(
    request: SignedRequest,
    secret_for: Callable[[str], str | None] | Mapping[str, str],
    now: datetime,
    *,
    region: str | None = None,
) -> AuthResult:
    """Authenticate a request signed with SigV4 (header or presigned URL).

    Args:
        request: the request view (see :class:`SignedRequest`).
        secret_for: access key id -> secret access key, or ``None`` when the key
            is unknown; a callable or a mapping.
        now: the current time (``datetime``; naive values are taken as UTC).
        region: if given, the only region accepted in the credential scope;
            ``None`` accepts any region name.

    Returns:
        :class:`AuthResult`.  The body is *not* checked here: see
        :meth:`AuthResult.verify_payload` and ``appliance.s3.chunked``.

    Raises:
        S3AuthError: with one of these codes:

        * ``AccessDenied`` (403): no credentials at all ("Access Denied"); no
          valid ``x-amz-date``/``Date``; ``host`` or a present ``x-amz-*``
          header not signed; presigned URL expired ("Request has expired") or
          dated in the future ("Request is not valid yet").
        * ``InvalidAccessKeyId`` (403): ``secret_for`` returned ``None``.
        * ``SignatureDoesNotMatch`` (403): wrong signature; ``details`` hold the
          ``StringToSign`` and ``CanonicalRequest`` to help client debugging.
        * ``RequestTimeTooSkewed`` (403): header auth more than 15 minutes from
          ``now``.
        * ``AuthorizationHeaderMalformed`` (400): unparsable ``Authorization``,
          bad credential scope, region mismatch.
        * ``AuthorizationQueryParametersError`` (400): missing or bad
          ``X-Amz-*`` query parameters, ``X-Amz-Expires`` outside 1..604800.
        * ``InvalidArgument`` (400): both header and query auth; bad
          ``x-amz-content-sha256`` value.
        * ``InvalidRequest`` (400): SigV2 or SigV4a; missing
          ``x-amz-content-sha256`` on header auth.

    Protocol: https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
    and https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html .
    """
    now = _as_utc(now)
    authorization = request.header("authorization")
    query_names = {name for name, _ in parse_query(request.query_string)}
    if authorization is not None and "X-Amz-Algorithm" in query_names:
        raise S3AuthError(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
        )
    if authorization is not None:
        return _verify_header_auth(request, authorization, secret_for, now, region)
    if "X-Amz-Algorithm" in query_names:
        return _verify_presigned(request, secret_for, now, region)
    if {"AWSAccessKeyId", "Signature"} <= query_names:  # a SigV2 presigned URL
        raise _unsupported_mechanism()
    raise S3AuthError("AccessDenied", "Access Denied")


def _unsupported_mechanism() -> S3AuthError:
    return S3AuthError(
        "InvalidRequest",
        "The authorization mechanism you have provided is not supported. "
        "Please use AWS4-HMAC-SHA256.",
    )


def _verify_header_auth(
    request: SignedRequest,
    authorization: str,
    secret_for: Callable[[str], str | None] | Mapping[str, str],
    now: datetime,
    region: str | None,
) -> AuthResult:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        # "AWS AKID:sig" is SigV2, "AWS4-ECDSA-P256-SHA256" is SigV4a.
        if algorithm in ("AWS", "AWS4-ECDSA-P256-SHA256"):
            raise _unsupported_mechanism()
        raise _malformed_header(f"the authorization header requires '{ALGORITHM}'.")

    components: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if sep and key in ("Credential", "SignedHeaders", "Signature"):
            components[key] = value.strip()
    if len(components) != 3:
        raise _malformed_header(
            "the authorization header requires three components: "
            "Credential, SignedHeaders, and Signature."
        )
    credential, reason = _parse_credential(components["Credential"], region)
    if credential is None:
        raise _malformed_header(reason)
    signed_headers = _parse_signed_headers(components["SignedHeaders"])
    if signed_headers is None:
        raise _malformed_header("the SignedHeaders component is mal-formed.")

    # x-amz-date wins over Date; both are accepted by AWS.
    amz_date = request.header("x-amz-date")
    if amz_date is not None:
        when = _parse_amz_date(amz_date.strip())
    else:
        http_date = request.header("date")
        when = _parse_http_date(http_date) if http_date is not None else None
    if when is None:
        raise S3AuthError("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    timestamp = when.strftime(_AMZ_DATE_FORMAT)
    if credential.date != timestamp[:8]:
        raise _malformed_header(
            f'Invalid credential date "{credential.date}". '
            f'This date is not the same as X-Amz-Date: "{timestamp[:8]}".'
        )

    payload_hash = request.header("x-amz-content-sha256")
    if payload_hash is None:
        raise S3AuthError(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    payload_hash = payload_hash.strip()
    if payload_hash not in _PAYLOAD_LITERALS and not _HEX64.fullmatch(payload_hash):
        raise S3AuthError(
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
            "or a valid sha256 value.",
            ArgumentName="x-amz-content-sha256",
            ArgumentValue=payload_hash,
        )

    _check_signed_headers(request, signed_headers)
    secret = _lookup_secret(secret_for, credential.access_key_id)
    if abs(now - when) > MAX_SKEW:
        raise S3AuthError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            RequestTime=timestamp,
            ServerTime=now.strftime(_AMZ_DATE_FORMAT),
            MaxAllowedSkewMilliseconds=str(int(MAX_SKEW.total_seconds() * 1000)),
        )
    return _check_signature(
        request, credential, secret, timestamp, signed_headers, payload_hash,
        components["Signature"],
    )


def _verify_presigned(
    request: SignedRequest,
    secret_for: Callable[[str], str | None] | Mapping[str, str],
    now: datetime,
    region: str | None,
) -> AuthResult:
    params: dict[str, str] = {}
    for name, value in parse_query(request.query_string):
        if name in _PRESIGN_PARAMS or name == "X-Amz-Content-Sha256":
            if name in params:
                raise _malformed_query(f"Duplicate query parameter {name}.")
            params[name] = value
    if any(name not in params for name in _PRESIGN_PARAMS):
        raise _malformed_query(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _malformed_query(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    credential, reason = _parse_credential(params["X-Amz-Credential"], region)
    if credential is None:
        raise _malformed_query(f"Error parsing the X-Amz-Credential parameter; {reason}")
    when = _parse_amz_date(params["X-Amz-Date"])
    if when is None:
        raise _malformed_query(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        )
    timestamp = params["X-Amz-Date"]
    if credential.date != timestamp[:8]:
        raise _malformed_query(
            f'Invalid credential date "{credential.date}". '
            f'This date is not the same as X-Amz-Date: "{timestamp[:8]}".'
        )
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isdigit():
        if expires_text.startswith("-") and expires_text[1:].isdigit():
            raise _malformed_query("X-Amz-Expires must be non-negative")
        raise _malformed_query("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGN_EXPIRES:
        raise _malformed_query(
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES}"
        )
    if expires < 1:
        raise _malformed_query("X-Amz-Expires must be at least 1 second")
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"])
    if signed_headers is None:
        raise _malformed_query("X-Amz-SignedHeaders is mal-formed.")

    # Presigned URLs sign the literal UNSIGNED-PAYLOAD, unless the signer put
    # an X-Amz-Content-Sha256 parameter in the URL (some SDKs can).
    payload_hash = params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)
    if payload_hash != UNSIGNED_PAYLOAD and not _HEX64.fullmatch(payload_hash):
        raise S3AuthError(
            "InvalidArgument",
            "X-Amz-Content-Sha256 must be UNSIGNED-PAYLOAD or a valid sha256 value.",
            ArgumentName="X-Amz-Content-Sha256",
            ArgumentValue=payload_hash,
        )

    _check_signed_headers(request, signed_headers)
    secret = _lookup_secret(secret_for, credential.access_key_id)
    expires_at = when + timedelta(seconds=expires)
    if now > expires_at:
        raise S3AuthError(
            "AccessDenied",
            "Request has expired",
            XAmzExpires=expires_text,
            Expires=expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    if when - now > MAX_SKEW:
        raise S3AuthError("AccessDenied", "Request is not valid yet")
    return _check_signature(
        request, credential, secret, timestamp, signed_headers, payload_hash,
        params["X-Amz-Signature"], query_exclude=("X-Amz-Signature",), expires_at=expires_at,
    )
