"""SigV4 verification against the real client signer (botocore) and AWS's
published examples.

Requests are produced by a real boto3 client whose HTTP send is replaced by a
``before-send`` hook, so serialisation (key encoding, query building) and
signing are exactly what the SDK would put on the wire.
"""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from botocapture import capturing_client
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from appliance.s3.sigv4 import (
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    S3AuthError,
    SignedRequest,
    canonical_query,
    canonical_uri,
    parse_query,
    verify_payload_sha256,
    verify_request,
)

AKID = "AKIDTESTEXAMPLE0001"
SECRET = "s3cr3t/With+Odd=Chars"
KEYS = {AKID: SECRET}

ODD_KEYS = [
    "plain.txt",
    "with space",
    "plus+sign",
    "percent%25and%",
    "tilde~key",
    "unicode-üñí©ødé-日本",
    "dots/../up/./here",
    "/leading-slash",
    "//double/leading",
    "a//b///c",
    "trailing/",
    "reserved !$&'()*,;=:@[]",
    "question?mark#hash",
    "tab\tand\nnewline",
]


# ---------------------------------------------------------------------------
# helpers


def make_client(endpoint="http://s3.test:8080", style="path", secret=SECRET, **config):
    return capturing_client(endpoint, style=style, akid=AKID, secret=secret, **config)


def to_view(prepared) -> tuple[SignedRequest, bytes]:
    """What our server would see for a botocore prepared request: raw path and
    query exactly as in the URL, headers lower-cased and latin-1 decoded, the
    Host header the HTTP client adds."""
    url = urlsplit(prepared.url)
    headers = []
    for name, value in prepared.headers.items():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        headers.append((name.lower(), value))
    if not any(name == "host" for name, _ in headers):
        headers.append(("host", url.netloc))
    body = prepared.body
    if body is None:
        body = b""
    elif hasattr(body, "read"):
        body = body.read()
    elif isinstance(body, str):
        body = body.encode("utf-8")
    return (
        SignedRequest(prepared.method, url.path.encode("ascii"), url.query.encode("ascii"), tuple(headers)),
        body,
    )


def call(client, operation, **params) -> tuple[SignedRequest, bytes]:
    getattr(client, operation)(**params)
    return to_view(client.captured[-1])


def presigned_view(url: str, method: str = "GET", headers=()) -> SignedRequest:
    parts = urlsplit(url)
    return SignedRequest(
        method,
        parts.path.encode("ascii"),
        parts.query.encode("ascii"),
        (("host", parts.netloc), *headers),
    )


def now() -> datetime:
    return datetime.now(timezone.utc)


def replace_header(request: SignedRequest, name: str, value: str | None) -> SignedRequest:
    headers = [(n, v) for n, v in request.headers if n != name]
    if value is not None:
        headers.append((name, value))
    return SignedRequest(request.method, request.raw_path, request.query_string, tuple(headers))


def expect_error(code: str, status: int, request: SignedRequest, keys=KEYS, when=None, **kwargs) -> S3AuthError:
    with pytest.raises(S3AuthError) as info:
        verify_request(request, keys, when or now(), **kwargs)
    assert info.value.code == code, info.value
    assert info.value.status == status
    return info.value


# ---------------------------------------------------------------------------
# AWS's published examples (fixed vectors)

DOC_KEYS = {"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
DOC_NOW = datetime(2013, 5, 24, 0, 5, tzinfo=timezone.utc)
DOC_CRED = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
DOC_HOST = "examplebucket.s3.amazonaws.com"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# From https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html,
# sigv4-query-string-auth.html, sigv4-streaming.html and sigv4-streaming-trailers.html.
DOC_EXAMPLES = {
    "get-object-range": (
        "GET",
        b"/test.txt",
        b"",
        [
            ("host", DOC_HOST),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                DOC_CRED + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ],
    ),
    "put-object-dollar-key-date-header": (
        "PUT",
        b"/test%24file.text",
        b"",
        [
            ("host", DOC_HOST),
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"),
            (
                "authorization",
                DOC_CRED + "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"
                "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            ),
        ],
    ),
    "get-lifecycle": (
        "GET",
        b"/",
        b"lifecycle",
        [
            ("host", DOC_HOST),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                DOC_CRED + "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
                "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
            ),
        ],
    ),
    "list-objects": (
        "GET",
        b"/",
        b"max-keys=2&prefix=J",
        [
            ("host", DOC_HOST),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                DOC_CRED + "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            ),
        ],
    ),
    "presigned-get": (
        "GET",
        b"/test.txt",
        b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1"
        b"%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        b"&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        [("host", DOC_HOST)],
    ),
    "streaming-seed": (
        "PUT",
        b"/examplebucket/chunkObject.txt",
        b"",
        [
            ("host", "s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("content-length", "66824"),
            (
                "authorization",
                DOC_CRED + "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;"
                "x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
                "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
            ),
        ],
    ),
    "streaming-trailer-seed": (
        "PUT",
        b"/examplebucket/chunkObject.txt",
        b"",
        [
            ("host", "s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("x-amz-trailer", "x-amz-checksum-crc32c"),
            (
                "authorization",
                DOC_CRED + "SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;"
                "x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer,"
                "Signature=106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
            ),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(DOC_EXAMPLES))
def test_aws_documented_examples_verify(name):
    method, path, query, headers = DOC_EXAMPLES[name]
    auth = verify_request(SignedRequest(method, path, query, tuple(headers)), DOC_KEYS, DOC_NOW)
    assert auth.access_key_id == "AKIAIOSFODNN7EXAMPLE"
    assert auth.region == "us-east-1"
    assert auth.scope == "20130524/us-east-1/s3/aws4_request"
    assert auth.timestamp == "20130524T000000Z"
    assert len(auth.signing_key) == 32
    assert auth.presigned == (name == "presigned-get")
    if auth.presigned:
        assert auth.payload_hash == UNSIGNED_PAYLOAD
        assert auth.expires_at == datetime(2013, 5, 25, tzinfo=timezone.utc)


def test_aws_documented_example_tampered_fails():
    method, path, query, headers = DOC_EXAMPLES["get-object-range"]
    tampered = [(n, "bytes=0-10" if n == "range" else v) for n, v in headers]
    expect_error("SignatureDoesNotMatch", 403, SignedRequest(method, path, query, tuple(tampered)), DOC_KEYS, DOC_NOW)


# ---------------------------------------------------------------------------
# real client: header auth


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("key", ODD_KEYS)
def test_put_object_odd_keys(key, style):
    client = make_client(style=style)
    body = b"hello " + key.encode()
    request, sent = call(client, "put_object", Bucket="bucket", Key=key, Body=body, Metadata={"k": "v"})
    auth = verify_request(request, KEYS, now())
    assert auth.access_key_id == AKID
    assert not auth.presigned and not auth.streaming
    # Over plain HTTP botocore signs the payload hash; the app checks it.
    assert sent == body
    assert auth.payload_sha256 == hashlib.sha256(body).hexdigest()
    auth.verify_payload(hashlib.sha256(sent).digest())
    with pytest.raises(S3AuthError) as info:
        auth.verify_payload(hashlib.sha256(sent + b"x").digest())
    assert info.value.code == "XAmzContentSHA256Mismatch" and info.value.status == 400


@pytest.mark.parametrize("key", ODD_KEYS)
def test_get_object_odd_keys_with_query(key):
    client = make_client()
    request, _ = call(
        client, "get_object", Bucket="bucket", Key=key, Range="bytes=1-5", VersionId="v+1 /=~", PartNumber=2
    )
    assert b"versionId=" in request.query_string
    verify_request(request, KEYS, now())


def test_streaming_trailer_put_over_https_verifies():
    client = make_client(endpoint="https://s3.test:8443")
    request, _ = call(client, "put_object", Bucket="bucket", Key="a b+c", Body=io.BytesIO(b"x" * 1000))
    auth = verify_request(request, KEYS, now())
    assert auth.payload_hash == STREAMING_UNSIGNED_TRAILER
    assert auth.streaming
    assert auth.payload_sha256 is None
    auth.verify_payload(b"\0" * 32)  # no-op: nothing to compare


@pytest.mark.parametrize(
    "prefix", ["", "a b", "a+b", "é/ü", "100%", "x=y&z", "~tilde", "slash/", "*'()!"]
)
def test_list_objects_query_encoding(prefix):
    client = make_client()
    request, _ = call(
        client, "list_objects_v2", Bucket="bucket", Prefix=prefix, Delimiter="/", StartAfter="k+ é", MaxKeys=7
    )
    verify_request(request, KEYS, now())
    params = dict(parse_query(request.query_string))
    assert params["prefix"] == prefix
    assert params["start-after"] == "k+ é"


def test_valueless_query_parameters():
    client = make_client()
    request, _ = call(client, "create_multipart_upload", Bucket="bucket", Key="k")
    assert b"uploads" in request.query_string
    verify_request(request, KEYS, now())
    request, _ = call(client, "delete_objects", Bucket="bucket", Delete={"Objects": [{"Key": "a"}]})
    assert request.query_string == b"delete"
    verify_request(request, KEYS, now())


def test_service_level_request():
    client = make_client()
    request, _ = call(client, "list_buckets")
    assert canonical_uri(request.raw_path) == "/"
    verify_request(request, KEYS, now())


def test_virtual_host_with_port_and_date_header():
    # botocore signs with the Date header (RFC 1123) instead of x-amz-date when
    # the request carries one.
    request = AWSRequest(
        method="PUT",
        url="http://bucket.s3.test:9000/key%20one",
        headers={"Date": "whatever", "x-amz-meta-a": "1"},
        data=b"data",
    )
    S3SigV4Auth(Credentials(AKID, SECRET), "s3", "eu-central-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers
    view, _ = to_view(request.prepare())
    auth = verify_request(view, KEYS, now(), region="eu-central-1")
    assert auth.region == "eu-central-1"
    expect_error("AuthorizationHeaderMalformed", 400, view, region="us-east-1")


def test_header_value_whitespace_and_repeats():
    client = make_client()
    request, _ = call(client, "put_object", Bucket="b", Key="k", Body=b"", Metadata={"a": "x y", "b": "p,q"})
    # Extra inner/outer whitespace on the wire collapses to what was signed.
    spaced = replace_header(request, "x-amz-meta-a", "  x     y ")
    verify_request(spaced, KEYS, now())
    # A signed header sent as two lines is joined with "," for signing.
    split = replace_header(request, "x-amz-meta-b", None)
    split = SignedRequest(
        split.method, split.raw_path, split.query_string, split.headers + (("x-amz-meta-b", "p"), ("x-amz-meta-b", "q"))
    )
    verify_request(split, KEYS, now())


@pytest.mark.parametrize(
    "wire_path",
    [
        b"/bucket/%7Etilde%20%c3%bc%3A",  # over-encoded, lower-case hex
        b"/bucket/~tilde%20%C3%BC:",  # ":" left raw
    ],
)
def test_path_encoding_variants_verify(wire_path):
    client = make_client()
    request, _ = call(client, "get_object", Bucket="bucket", Key="~tilde ü:")
    assert request.raw_path == b"/bucket/~tilde%20%C3%BC%3A"
    variant = SignedRequest(request.method, wire_path, request.query_string, request.headers)
    verify_request(variant, KEYS, now())


def test_from_asgi_scope():
    client = make_client()
    request, _ = call(client, "get_object", Bucket="bucket", Key="ü x")
    scope = {
        "type": "http",
        "method": request.method,
        "path": "/bucket/ü x",
        "raw_path": request.raw_path,
        "query_string": request.query_string,
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers],
    }
    assert SignedRequest.from_asgi(scope) == request
    verify_request(SignedRequest.from_asgi(scope), KEYS, now())
    del scope["raw_path"]
    verify_request(SignedRequest.from_asgi(scope), KEYS, now())


# ---------------------------------------------------------------------------
# header auth failures


@pytest.fixture
def signed():
    client = make_client()
    request, _ = call(client, "put_object", Bucket="bucket", Key="dir/key", Body=b"abc", Metadata={"m": "1"})
    return request


def test_tampered_header_fails(signed):
    error = expect_error("SignatureDoesNotMatch", 403, replace_header(signed, "x-amz-meta-m", "2"))
    assert "CanonicalRequest" in error.details and "StringToSign" in error.details


def test_tampered_path_query_method_fail(signed):
    expect_error("SignatureDoesNotMatch", 403, SignedRequest("POST", signed.raw_path, b"", signed.headers))
    expect_error("SignatureDoesNotMatch", 403, SignedRequest("PUT", b"/bucket/dir/key2", b"", signed.headers))
    expect_error("SignatureDoesNotMatch", 403, SignedRequest("PUT", signed.raw_path, b"acl", signed.headers))
    # "+" in a query means space, and the signer encoded a literal "+"
    client = make_client()
    listing, _ = call(client, "list_objects_v2", Bucket="b", Prefix="a+b")
    assert b"prefix=a%2Bb" in listing.query_string
    expect_error(
        "SignatureDoesNotMatch",
        403,
        SignedRequest("GET", listing.raw_path, listing.query_string.replace(b"%2B", b"+"), listing.headers),
    )


def test_wrong_secret_and_unknown_key(signed):
    expect_error("SignatureDoesNotMatch", 403, signed, keys={AKID: "other"})
    expect_error("InvalidAccessKeyId", 403, signed, keys={})
    expect_error("InvalidAccessKeyId", 403, signed, keys=lambda akid: None)
    verify_request(signed, lambda akid: SECRET if akid == AKID else None, now())


def test_clock_skew(signed):
    stamp = datetime.strptime(signed.header("x-amz-date"), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    verify_request(signed, KEYS, stamp + timedelta(minutes=14))
    verify_request(signed, KEYS, stamp - timedelta(minutes=14))
    expect_error("RequestTimeTooSkewed", 403, signed, when=stamp + timedelta(minutes=16))
    expect_error("RequestTimeTooSkewed", 403, signed, when=stamp - timedelta(minutes=16))
    # naive datetimes are taken as UTC
    verify_request(signed, KEYS, stamp.replace(tzinfo=None))


def test_unsigned_amz_header_is_refused(signed):
    added = SignedRequest(signed.method, signed.raw_path, b"", signed.headers + (("x-amz-acl", "public-read"),))
    error = expect_error("AccessDenied", 403, added)
    assert error.details["HeadersNotSigned"] == "x-amz-acl"
    # other unsigned headers are fine (proxies add them)
    verify_request(SignedRequest(signed.method, signed.raw_path, b"", signed.headers + (("via", "1.1 p"),)), KEYS, now())


def test_anonymous_and_mixed_and_unsupported():
    expect_error("AccessDenied", 403, SignedRequest("GET", b"/b/k", b"", (("host", "h"),)))
    client = make_client()
    request, _ = call(client, "get_object", Bucket="b", Key="k")
    both = SignedRequest("GET", b"/b/k", b"X-Amz-Algorithm=AWS4-HMAC-SHA256", request.headers)
    expect_error("InvalidArgument", 400, both)
    sigv2 = replace_header(request, "authorization", "AWS AKID:c2lnbmF0dXJl")
    expect_error("InvalidRequest", 400, sigv2)
    v2_query = SignedRequest("GET", b"/b/k", b"AWSAccessKeyId=A&Expires=1&Signature=x", (("host", "h"),))
    expect_error("InvalidRequest", 400, v2_query)


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 ",
        "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=AKID/2013-05-24/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws5_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20130523/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, SignedHeaders=Host, Signature=00",
        "HMAC Credential=x",
    ],
)
def test_malformed_authorization(authorization):
    request = SignedRequest(
        "GET",
        b"/",
        b"",
        (
            ("host", "h"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY),
            ("authorization", authorization),
        ),
    )
    expect_error("AuthorizationHeaderMalformed", 400, request, keys={"AKID": "s"}, when=DOC_NOW)


def test_bad_dates_and_payload_hash(signed):
    expect_error("AccessDenied", 403, replace_header(signed, "x-amz-date", "2013-05-24T00:00:00Z"))
    expect_error("AccessDenied", 403, replace_header(signed, "x-amz-date", None))
    expect_error("InvalidRequest", 400, replace_header(signed, "x-amz-content-sha256", None))
    expect_error("InvalidArgument", 400, replace_header(signed, "x-amz-content-sha256", "abc"))


def test_verify_payload_sha256_helper():
    digest = hashlib.sha256(b"body").digest()
    verify_payload_sha256(digest.hex(), digest)
    verify_payload_sha256(digest.hex().upper(), digest)
    with pytest.raises(S3AuthError) as info:
        verify_payload_sha256(EMPTY, digest)
    assert info.value.code == "XAmzContentSHA256Mismatch"
    assert info.value.details["S3ComputedContentSHA256"] == digest.hex()


# ---------------------------------------------------------------------------
# presigned URLs


@pytest.mark.parametrize("key", ODD_KEYS)
def test_presigned_get_odd_keys(key):
    client = make_client()
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": key, "ResponseContentType": "text/plain; a=b"}, ExpiresIn=300
    )
    auth = verify_request(presigned_view(url), KEYS, now())
    assert auth.presigned and auth.payload_hash == UNSIGNED_PAYLOAD
    assert auth.payload_sha256 is None


def test_presigned_put_virtual_host():
    client = make_client(style="virtual")
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": "bucket", "Key": "up load+1"}, ExpiresIn=60, HttpMethod="PUT"
    )
    assert urlsplit(url).netloc == "bucket.s3.test:8080"
    verify_request(presigned_view(url, "PUT", (("content-length", "5"),)), KEYS, now())
    expect_error("SignatureDoesNotMatch", 403, presigned_view(url, "GET"))


def test_presigned_expiry_window():
    client = make_client()
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=100)
    request = presigned_view(url)
    signed_at = datetime.strptime(dict(parse_query(request.query_string))["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    signed_at = signed_at.replace(tzinfo=timezone.utc)
    verify_request(request, KEYS, signed_at + timedelta(seconds=100))
    error = expect_error("AccessDenied", 403, request, when=signed_at + timedelta(seconds=101))
    assert error.message == "Request has expired"
    # presigned URLs are not subject to the 15-minute skew of header auth...
    verify_request(request, KEYS, signed_at + timedelta(seconds=99))
    # ...but one dated in the future is not valid yet
    error = expect_error("AccessDenied", 403, request, when=signed_at - timedelta(minutes=20))
    assert error.message == "Request is not valid yet"


def test_presigned_tampering():
    client = make_client()
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=100)
    request = presigned_view(url)
    expect_error("SignatureDoesNotMatch", 403, request, keys={AKID: "wrong"})
    changed = SignedRequest("GET", b"/b/other", request.query_string, request.headers)
    expect_error("SignatureDoesNotMatch", 403, changed)
    extra = SignedRequest("GET", request.raw_path, request.query_string + b"&versionId=1", request.headers)
    expect_error("SignatureDoesNotMatch", 403, extra)
    longer = SignedRequest(
        "GET", request.raw_path, request.query_string.replace(b"X-Amz-Expires=100", b"X-Amz-Expires=9999"), request.headers
    )
    expect_error("SignatureDoesNotMatch", 403, longer)
    unsigned_header = SignedRequest("GET", request.raw_path, request.query_string, request.headers + (("x-amz-foo", "1"),))
    expect_error("AccessDenied", 403, unsigned_header)


@pytest.mark.parametrize(
    "change",
    [
        (b"X-Amz-Expires=100", b"X-Amz-Expires=604801"),
        (b"X-Amz-Expires=100", b"X-Amz-Expires=0"),
        (b"X-Amz-Expires=100", b"X-Amz-Expires=-1"),
        (b"X-Amz-Expires=100", b"X-Amz-Expires=abc"),
        (b"X-Amz-Expires=100&", b""),
        (b"X-Amz-Algorithm=AWS4-HMAC-SHA256", b"X-Amz-Algorithm=AWS4-HMAC-SHA1"),
        (b"X-Amz-Date=", b"X-Amz-Date=1"),
        (b"%2Fs3%2F", b"%2Fiam%2F"),
    ],
)
def test_presigned_bad_parameters(change):
    client = make_client()
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=100)
    request = presigned_view(url)
    old, new = change
    assert old in request.query_string
    bad = SignedRequest("GET", request.raw_path, request.query_string.replace(old, new, 1), request.headers)
    expect_error("AuthorizationQueryParametersError", 400, bad)


def test_presigned_max_expiry_accepted():
    client = make_client()
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=604800)
    auth = verify_request(presigned_view(url), KEYS, now() + timedelta(days=6))
    assert auth.expires_at is not None


# ---------------------------------------------------------------------------
# canonical forms, directly


def test_canonical_uri_rules():
    assert canonical_uri(b"") == "/"
    assert canonical_uri(b"/a+b") == "/a%2Bb"
    assert canonical_uri(b"/%7e/%2f/..//x") == "/~///..//x"
    assert canonical_uri(b"/a b") == "/a%20b"
    assert canonical_uri("/ü".encode()) == "/%C3%BC"


def test_canonical_query_rules():
    assert canonical_query(b"") == ""
    assert canonical_query(b"b=2&a=1&a=0&uploads") == "a=0&a=1&b=2&uploads="
    assert canonical_query(b"x=a+b&y=a%2Bb&z=~%7E") == "x=a%20b&y=a%2Bb&z=~~"
    assert canonical_query(b"X-Amz-Signature=s&k=v&&", exclude=["X-Amz-Signature"]) == "k=v"
    assert canonical_query(b"p=a/b") == "p=a%2Fb"
