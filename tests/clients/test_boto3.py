"""boto3 against the real gateway: the current release (default CRC32 request checksums since
1.36) and, through a subprocess, a pre-2025 release (Content-MD5, no default checksums).

Over plain HTTP current botocore sends `x-amz-checksum-crc32` as a header with a signed payload;
over HTTPS it sends it as an aws-chunked trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER). The
`client` fixture runs the affected tests both ways (the trailer variant forces what botocore
does over TLS; see helpers.make_boto3_client).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
import sys
import textwrap
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

import helpers
from helpers import MiB

pytestmark = pytest.mark.clients


# ------------------------------------------------------------------------------- utilities


def err(excinfo) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a ClientError."""
    e = excinfo.value
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code")


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def crc32c_b64(data: bytes) -> str:
    import crc32c  # Debian python3-crc32c

    return b64(crc32c.crc32c(data).to_bytes(4, "big"))


CHECKSUMS = {
    "CRC32": crc32_b64,
    "CRC32C": crc32c_b64,
    "SHA1": lambda d: b64(hashlib.sha1(d).digest()),
    "SHA256": lambda d: b64(hashlib.sha256(d).digest()),
}


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart_etag(parts: list[bytes]) -> str:
    return '"%s-%d"' % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(), len(parts))


class HeaderLog:
    """Records the headers boto3 actually sends (after signing) for each operation."""

    def __init__(self, client):
        self.sent: list[tuple[str, dict]] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request, **kwargs):
        self.sent.append((request.method, {k.lower(): _s(v) for k, v in request.headers.items()}))

    def last(self, method: str) -> dict:
        return [h for m, h in self.sent if m == method][-1]


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def s3(appliance):
    return appliance.boto3_client()


@pytest.fixture(params=["header-checksum", "trailer-checksum"])
def client(request, appliance):
    """Current boto3, checksum sent as a header (plain HTTP) or as an aws-chunked trailer."""
    return appliance.boto3_client(trailer_checksums=request.param == "trailer-checksum")


# ----------------------------------------------------------------------------- credentials


def test_credentials_file(appliance, s3):
    mode = stat.S_IMODE(os.stat(appliance.credentials_file).st_mode)
    assert mode == 0o600, f"{appliance.credentials_file} has mode {oct(mode)}"
    assert appliance.access_key and appliance.secret_key
    s3.list_buckets()  # the root key works


def test_bad_credentials_rejected(appliance, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    wrong_secret = helpers.make_boto3_client(appliance.endpoint, appliance.access_key, "x" * 40)
    with pytest.raises(ClientError) as ei:
        wrong_secret.get_object(Bucket=bucket, Key="k")
    assert err(ei) == (403, "SignatureDoesNotMatch")
    unknown = helpers.make_boto3_client(appliance.endpoint, "AKNOSUCHKEY000000000", "x" * 40)
    with pytest.raises(ClientError) as ei:
        unknown.list_buckets()
    assert err(ei) == (403, "InvalidAccessKeyId")
    # Anonymous (unsigned) requests get AccessDenied on a private bucket.
    with pytest.raises(urllib.error.HTTPError) as hi:
        urllib.request.urlopen(f"{appliance.endpoint}/{bucket}/k", timeout=30)
    assert hi.value.code == 403
    assert b"<Code>AccessDenied</Code>" in hi.value.read()


def test_second_user_is_isolated(appliance, s3, bucket):
    ak, sk = appliance.create_key()
    other = helpers.make_boto3_client(appliance.endpoint, ak, sk)
    assert bucket not in [b["Name"] for b in other.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as ei:
        other.create_bucket(Bucket=bucket)
    assert err(ei) == (409, "BucketAlreadyExists")
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    with pytest.raises(ClientError) as ei:
        other.get_object(Bucket=bucket, Key="private")
    assert err(ei) == (403, "AccessDenied")
    mine = helpers.unique_bucket_name("other")
    other.create_bucket(Bucket=mine)
    other.put_object(Bucket=mine, Key="k", Body=b"v")
    assert other.get_object(Bucket=mine, Key="k")["Body"].read() == b"v"
    helpers.delete_bucket(other, mine)


# ---------------------------------------------------------------------------------- buckets


def test_bucket_lifecycle(s3):
    name = helpers.unique_bucket_name("life")
    with pytest.raises(ClientError) as ei:
        s3.head_bucket(Bucket=name)
    assert err(ei)[0] == 404
    resp = s3.create_bucket(Bucket=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp.get("Location") == "/" + name  # what us-east-1 answers
    s3.head_bucket(Bucket=name)
    listed = {b["Name"]: b for b in s3.list_buckets()["Buckets"]}
    assert name in listed
    created = listed[name]["CreationDate"]
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    # Creating a bucket you own again: 200 in us-east-1 (legacy) or 409 BucketAlreadyOwnedByYou.
    try:
        s3.create_bucket(Bucket=name)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 409

    s3.put_object(Bucket=name, Key="keep", Body=b"1")
    with pytest.raises(ClientError) as ei:
        s3.delete_bucket(Bucket=name)
    assert err(ei) == (409, "BucketNotEmpty")
    s3.delete_object(Bucket=name, Key="keep")
    resp = s3.delete_bucket(Bucket=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as ei:
        s3.head_bucket(Bucket=name)
    assert err(ei)[0] == 404
    with pytest.raises(ClientError) as ei:
        s3.delete_bucket(Bucket=name)
    assert err(ei) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as ei:
        s3.list_objects_v2(Bucket=name)
    assert err(ei) == (404, "NoSuchBucket")


@pytest.mark.parametrize("name", ["ab", "UPPER-case", "under_score", "-dash-first", "a" * 64, "1.2.3.4"])
def test_invalid_bucket_names(appliance, name):
    # Sent raw (boto3 validates some names client-side): PUT /<name> signed.
    client = appliance.boto3_client()  # botocore only checks [A-Za-z0-9._-]{1,255} itself
    with pytest.raises(ClientError) as ei:
        client.create_bucket(Bucket=name)
    assert err(ei) == (400, "InvalidBucketName")


def test_missing_things(s3, bucket):
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="no/such/key")
    assert err(ei) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key="no/such/key")
    assert err(ei)[0] == 404
    missing_bucket = helpers.unique_bucket_name("missing")
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=missing_bucket, Key="k")
    assert err(ei) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=missing_bucket, Key="k", Body=b"x")
    assert err(ei) == (404, "NoSuchBucket")
    # Deleting a key that does not exist succeeds (204).
    assert s3.delete_object(Bucket=bucket, Key="never")["ResponseMetadata"]["HTTPStatusCode"] == 204


# ---------------------------------------------------------------------------------- objects


def test_put_get_metadata_and_headers(client, bucket):
    log = HeaderLog(client)
    data = os.urandom(200_000)
    resp = client.put_object(
        Bucket=bucket,
        Key="meta/obj.bin",
        Body=data,
        Metadata={"color": "blue", "Mixed-Case": "Value"},
        ContentType="application/x-test",
        ContentDisposition='attachment; filename="obj.bin"',
        ContentEncoding="gzip",  # stored as given, never decoded
        ContentLanguage="en-GB",
        CacheControl="max-age=60",
    )
    sent = log.last("PUT")
    # What current boto3 sends, so the test really exercises the 2025 behaviour.
    assert "x-amz-checksum-crc32" in sent or "x-amz-trailer" in sent, sent
    if "x-amz-trailer" in sent:
        assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        assert "aws-chunked" in sent["content-encoding"]
    assert resp["ETag"] == f'"{md5_hex(data)}"'
    assert resp["ChecksumCRC32"] == crc32_b64(data)

    for got in (
        client.get_object(Bucket=bucket, Key="meta/obj.bin"),
        client.head_object(Bucket=bucket, Key="meta/obj.bin"),
    ):
        assert got["ContentLength"] == len(data)
        assert got["ETag"] == resp["ETag"]
        assert got["ContentType"] == "application/x-test"
        assert got["ContentDisposition"] == 'attachment; filename="obj.bin"'
        # aws-chunked is a transfer detail and must not be stored.
        assert got.get("ContentEncoding") == "gzip"
        assert got["ContentLanguage"] == "en-GB"
        assert got["CacheControl"] == "max-age=60"
        # User metadata names come back lower-case, as from AWS.
        assert got["Metadata"] == {"color": "blue", "mixed-case": "Value"}
        assert got["AcceptRanges"] == "bytes"
        age = dt.datetime.now(dt.timezone.utc) - got["LastModified"]
        assert abs(age.total_seconds()) < 600
    body = client.get_object(Bucket=bucket, Key="meta/obj.bin")["Body"].read()
    assert body == data

    # Response header overrides (signed requests may set them).
    got = client.get_object(
        Bucket=bucket,
        Key="meta/obj.bin",
        ResponseContentType="text/x-override",
        ResponseContentDisposition="inline",
        ResponseCacheControl="no-cache",
    )
    assert got["ContentType"] == "text/x-override"
    assert got["ContentDisposition"] == "inline"
    assert got["CacheControl"] == "no-cache"
    assert got["Body"].read() == data


def test_overwrite_and_empty_object(client, bucket):
    client.put_object(Bucket=bucket, Key="k", Body=b"first version")
    client.put_object(Bucket=bucket, Key="k", Body=b"second")
    got = client.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"second"
    client.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = client.get_object(Bucket=bucket, Key="empty")
    assert got["ContentLength"] == 0 and got["Body"].read() == b""
    assert got["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'


@pytest.mark.parametrize("size", [1, 4096, 1 * MiB + 1, 5 * MiB + 12345])
def test_put_get_sizes(client, bucket, size):
    data = os.urandom(size)
    client.put_object(Bucket=bucket, Key=f"size/{size}", Body=data)
    got = client.get_object(Bucket=bucket, Key=f"size/{size}")
    assert got["ContentLength"] == size
    assert got["Body"].read() == data


def test_integrity_checks(s3, bucket):
    data = b"integrity" * 1000
    good = b64(hashlib.md5(data).digest())
    s3.put_object(Bucket=bucket, Key="md5-ok", Body=data, ContentMD5=good)
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=bucket, Key="md5-bad", Body=data, ContentMD5=b64(hashlib.md5(b"other").digest()))
    assert err(ei) == (400, "BadDigest")
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=bucket, Key="crc-bad", Body=data, ChecksumCRC32=crc32_b64(b"other"))
    assert err(ei) == (400, "BadDigest")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["md5-ok"]


@pytest.mark.parametrize("algorithm", sorted(CHECKSUMS) + ["CRC64NVME"])
def test_checksum_mode_returns_stored_checksum(appliance, bucket, algorithm):
    from botocore.httpchecksum import _CHECKSUM_CLS

    if algorithm.lower() not in _CHECKSUM_CLS:
        pytest.skip(f"this botocore cannot compute {algorithm} (needs a newer awscrt)")
    for mode in ("header", "trailer"):
        client = appliance.boto3_client(trailer_checksums=mode == "trailer")
        data = os.urandom(300_000)
        key = f"sum/{algorithm}/{mode}"
        put = client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm=algorithm)
        field = f"Checksum{algorithm}"
        if algorithm in CHECKSUMS:
            expected = CHECKSUMS[algorithm](data)
            assert put[field] == expected
        else:
            expected = put[field]
        got = client.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got.get(field) == expected, f"{field} not returned: {sorted(got)}"
        assert got["Body"].read() == data  # botocore also validates the checksum here
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head.get(field) == expected
        # Without ChecksumMode the checksum is not returned.
        assert field not in client.head_object(Bucket=bucket, Key=key)


def test_default_crc32_returned(s3, bucket):
    data = b"default checksum"
    s3.put_object(Bucket=bucket, Key="crc", Body=data)  # current boto3 adds CRC32 by itself
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc32_b64(data)
    assert got["Body"].read() == data


# ----------------------------------------------------------------------------------- ranges


def test_ranged_reads(s3, bucket):
    data = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=-10": (990, 999),
        "bytes=5-": (5, 999),
        "bytes=995-2000": (995, 999),  # clipped to the end
        "bytes=999-999": (999, 999),
    }
    for rng, (first, last) in cases.items():
        got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, rng
        assert got["ContentRange"] == f"bytes {first}-{last}/1000", rng
        assert got["ContentLength"] == last - first + 1, rng
        assert got["Body"].read() == data[first : last + 1], rng
    for rng in ("bytes=1000-1001", "bytes=5000-"):
        with pytest.raises(ClientError) as ei:
            s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert err(ei) == (416, "InvalidRange"), rng
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="empty", Range="bytes=40-50")
    assert err(ei) == (416, "InvalidRange")


def test_ranged_read_of_large_object(s3, bucket):
    """Ranges that cross the store's 1 MiB segments and EC fragments."""
    data = os.urandom(5 * MiB + 777)
    s3.put_object(Bucket=bucket, Key="big-r", Body=data)
    for first, last in [(0, MiB), (MiB - 1, MiB + 1), (3 * MiB - 5, 5 * MiB + 700), (len(data) - 1, len(data) - 1)]:
        got = s3.get_object(Bucket=bucket, Key="big-r", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == data[first : last + 1], (first, last)


# ------------------------------------------------------------------------------ conditions


def test_conditional_get(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")["ETag"]
    lm = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    past = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    future = lm + dt.timedelta(days=1)

    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert err(ei) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert err(ei)[0] == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"other"')["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=future)
    assert err(ei)[0] == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=past)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=past)
    assert err(ei) == (412, "PreconditionFailed")
    # If-Match true wins over If-Unmodified-Since false (RFC 7232, as S3 documents).
    s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=past)
    # If-None-Match false wins over If-Modified-Since true: 304.
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag, IfModifiedSince=past)
    assert err(ei)[0] == 304
    # HEAD answers the same way, without a body.
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert err(ei)[0] == 304
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"nope"')
    assert err(ei)[0] == 412


# ------------------------------------------------------------------------------------- copy


def test_copy_object(s3, bucket, make_bucket):
    src_key = "src/a b+c.bin"  # CopySource needs URL-encoding: boto3 does it from the dict
    data = os.urandom(70_000)
    src = s3.put_object(
        Bucket=bucket, Key=src_key, Body=data, ContentType="application/x-src", Metadata={"m": "1"}
    )
    # COPY (the default): metadata and content type come along; single-part ETag is the MD5.
    r = s3.copy_object(Bucket=bucket, Key="dst/copy", CopySource={"Bucket": bucket, "Key": src_key})
    assert r["CopyObjectResult"]["ETag"] == src["ETag"]
    h = s3.head_object(Bucket=bucket, Key="dst/copy")
    assert h["ContentType"] == "application/x-src" and h["Metadata"] == {"m": "1"}
    assert s3.get_object(Bucket=bucket, Key="dst/copy")["Body"].read() == data
    # REPLACE: only the new metadata.
    s3.copy_object(
        Bucket=bucket,
        Key="dst/replace",
        CopySource={"Bucket": bucket, "Key": src_key},
        MetadataDirective="REPLACE",
        Metadata={"n": "2"},
        ContentType="text/plain",
    )
    h = s3.head_object(Bucket=bucket, Key="dst/replace")
    assert h["Metadata"] == {"n": "2"} and h["ContentType"] == "text/plain"
    assert s3.get_object(Bucket=bucket, Key="dst/replace")["Body"].read() == data
    # Into another bucket.
    other = make_bucket()
    s3.copy_object(Bucket=other, Key="x", CopySource={"Bucket": bucket, "Key": src_key})
    assert s3.get_object(Bucket=other, Key="x")["Body"].read() == data
    # Onto itself: illegal without a change, allowed with REPLACE (how tools change metadata).
    with pytest.raises(ClientError) as ei:
        s3.copy_object(Bucket=bucket, Key=src_key, CopySource={"Bucket": bucket, "Key": src_key})
    assert err(ei) == (400, "InvalidRequest")
    s3.copy_object(
        Bucket=bucket,
        Key=src_key,
        CopySource={"Bucket": bucket, "Key": src_key},
        MetadataDirective="REPLACE",
        Metadata={"m": "changed"},
    )
    h = s3.head_object(Bucket=bucket, Key=src_key)
    assert h["Metadata"] == {"m": "changed"}
    assert s3.get_object(Bucket=bucket, Key=src_key)["Body"].read() == data
    # Source missing.
    with pytest.raises(ClientError) as ei:
        s3.copy_object(Bucket=bucket, Key="y", CopySource={"Bucket": bucket, "Key": "nope"})
    assert err(ei) == (404, "NoSuchKey")
    # Conditional copy.
    with pytest.raises(ClientError) as ei:
        s3.copy_object(
            Bucket=bucket, Key="z", CopySource={"Bucket": bucket, "Key": src_key},
            CopySourceIfMatch='"0123456789abcdef0123456789abcdef"',
        )
    assert err(ei) == (412, "PreconditionFailed")


def test_copy_large_object(s3, bucket):
    data = os.urandom(6 * MiB + 3)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    s3.copy_object(Bucket=bucket, Key="big-copy", CopySource={"Bucket": bucket, "Key": "big"})
    assert helpers.sha256_bytes(s3.get_object(Bucket=bucket, Key="big-copy")["Body"].read()) == helpers.sha256_bytes(data)


# ----------------------------------------------------------------------------- delete many


def test_delete_objects(s3, bucket):
    keys = [f"d/{i}" for i in range(5)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    log = HeaderLog(s3)
    r = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": k} for k in keys[:3] + ["d/missing"]]},
    )
    sent = log.last("POST")
    assert "x-amz-checksum-crc32" in sent or "content-md5" in sent
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted(keys[:3] + ["d/missing"])
    assert not r.get("Errors")
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="d/")["Contents"]]
    assert left == keys[3:]
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[3:]], "Quiet": True})
    assert not r.get("Deleted") and not r.get("Errors")
    assert s3.list_objects_v2(Bucket=bucket, Prefix="d/")["KeyCount"] == 0


# -------------------------------------------------------------------------------- multipart


def test_multipart_100mib_upload_download(appliance, bucket, big_file, tmp_path):
    path, digest = big_file
    chunk = 8 * MiB
    cfg = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=4)
    # Uploads as botocore does over HTTPS (aws-chunked + CRC32 trailer per part).
    up = appliance.boto3_client(trailer_checksums=True)
    up.upload_file(str(path), bucket, "big/100MiB.bin", Config=cfg)
    head = up.head_object(Bucket=bucket, Key="big/100MiB.bin")
    assert head["ContentLength"] == path.stat().st_size
    data = path.read_bytes()
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    assert head["ETag"] == multipart_etag(parts)
    del data, parts
    out = tmp_path / "down.bin"
    appliance.boto3_client().download_file(bucket, "big/100MiB.bin", str(out), Config=cfg)
    assert helpers.sha256_file(out) == digest


def test_multipart_low_level(s3, bucket):
    key = "mp/obj"
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 17), os.urandom(1234)]
    mpu = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-mp", Metadata={"k": "v"})
    uid = mpu["UploadId"]
    ups = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert uid in ups
    etags = []
    for n, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=p)
        assert r["ETag"] == f'"{md5_hex(p)}"'
        etags.append(r["ETag"])
    # Re-uploading a part replaces it.
    r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=3, Body=parts[2])
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (n, e, len(p)) for n, (e, p) in enumerate(zip(etags, parts), 1)
    ]
    # Not visible before completion.
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key=key)
    assert err(ei)[0] == 404
    # A wrong ETag is InvalidPart.
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]},
        )
    assert err(ei) == (400, "InvalidPart")
    r = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    assert r["ETag"] == multipart_etag(parts)
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["ETag"] == multipart_etag(parts)
    assert got["ContentType"] == "application/x-mp" and got["Metadata"] == {"k": "v"}
    assert got["Body"].read() == b"".join(parts)
    # Part-number reads: PartNumber=2 is exactly the second part.
    got = s3.get_object(Bucket=bucket, Key=key, PartNumber=2)
    assert got["Body"].read() == parts[1]
    assert got["PartsCount"] == 3
    # The finished upload is gone.
    with pytest.raises(ClientError) as ei:
        s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)
    assert err(ei) == (404, "NoSuchUpload")


def test_multipart_part_rules_and_abort(s3, bucket):
    key = "mp/rules"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"a" * 1000)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=b"b" * 1000)["ETag"]
    # Every part but the last must be at least 5 MiB.
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert err(ei) == (400, "EntityTooSmall")
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)
    with pytest.raises(ClientError) as ei:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=3, Body=b"c")
    assert err(ei) == (404, "NoSuchUpload")
    assert uid not in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)

    # Parts must be listed in ascending order (both 5 MiB, so only the order is wrong).
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p1, p2 = b"1" * (5 * MiB), b"2" * (5 * MiB)
    e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]},
        )
    assert err(ei) == (400, "InvalidPartOrder")
    # A subset of the uploaded parts may be completed; the rest are discarded.
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}]})
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["ContentLength"] == len(p2) and got["Body"].read() == p2
    assert got["ETag"] == multipart_etag([p2])


# ---------------------------------------------------------------------------------- listing

N_FLAT = 2000
N_DIRS, N_PER_DIR = 25, 20


@pytest.fixture(scope="module")
def listing(appliance):
    """A bucket with 2,500 keys: flat/k0000..k1999 and tree/d00..d24/f00..f19."""
    s3 = appliance.boto3_client(max_pool_connections=16)
    name = helpers.unique_bucket_name("listing")
    s3.create_bucket(Bucket=name)
    keys = [f"flat/k{i:04d}" for i in range(N_FLAT)]
    keys += [f"tree/d{d:02d}/f{f:02d}" for d in range(N_DIRS) for f in range(N_PER_DIR)]

    def put(k):
        s3.put_object(Bucket=name, Key=k, Body=k.encode())

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(put, keys))
    return name, sorted(keys)


def test_list_v2_pagination(s3, listing):
    name, keys = listing
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=name))
    assert [p["KeyCount"] for p in pages] == [1000, 1000, 500]
    assert [p["IsTruncated"] for p in pages] == [True, True, False]
    assert all(p.get("NextContinuationToken") for p in pages[:2])
    assert "NextContinuationToken" not in pages[2]
    got = [o["Key"] for p in pages for o in p["Contents"]]
    assert got == keys  # all, once, in UTF-8 binary order
    sizes = {o["Key"]: o["Size"] for p in pages for o in p["Contents"]}
    assert all(sizes[k] == len(k) for k in keys)
    first = pages[0]["Contents"][0]
    assert first["ETag"] == f'"{md5_hex(first["Key"].encode())}"'
    assert first.get("StorageClass", "STANDARD") == "STANDARD"


def test_list_v2_delimiter(s3, listing):
    name, _ = listing
    r = s3.list_objects_v2(Bucket=name, Delimiter="/")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["flat/", "tree/"]
    assert "Contents" not in r and r["KeyCount"] == 2 and not r["IsTruncated"]
    r = s3.list_objects_v2(Bucket=name, Prefix="tree/", Delimiter="/")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == [f"tree/d{d:02d}/" for d in range(N_DIRS)]
    assert r["KeyCount"] == N_DIRS
    r = s3.list_objects_v2(Bucket=name, Prefix="tree/d07/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == [f"tree/d07/f{f:02d}" for f in range(N_PER_DIR)]
    assert "CommonPrefixes" not in r
    r = s3.list_objects_v2(Bucket=name, Prefix="nothing/")
    assert r["KeyCount"] == 0 and "Contents" not in r


def test_list_v2_delimiter_paginated(s3, listing):
    name, _ = listing
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket=name, Prefix="tree/", Delimiter="/", PaginationConfig={"PageSize": 7}
        )
    )
    assert [p["KeyCount"] for p in pages] == [7, 7, 7, 4]
    assert [p["IsTruncated"] for p in pages] == [True, True, True, False]
    prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    assert prefixes == [f"tree/d{d:02d}/" for d in range(N_DIRS)]
    # Mixed keys and prefixes: "flat/..." keys roll up, under a prefix that matches both.
    r = s3.list_objects_v2(Bucket=name, Prefix="tree/d0", Delimiter="/")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == [f"tree/d{d:02d}/" for d in range(10)]


def test_list_v2_start_after_and_token(s3, listing):
    name, keys = listing
    r = s3.list_objects_v2(Bucket=name, StartAfter="flat/k1997", MaxKeys=4)
    assert [o["Key"] for o in r["Contents"]] == ["flat/k1998", "flat/k1999", "tree/d00/f00", "tree/d00/f01"]
    assert r["IsTruncated"] and r["StartAfter"] == "flat/k1997"
    r2 = s3.list_objects_v2(Bucket=name, ContinuationToken=r["NextContinuationToken"], MaxKeys=2)
    assert [o["Key"] for o in r2["Contents"]] == ["tree/d00/f02", "tree/d00/f03"]
    r = s3.list_objects_v2(Bucket=name, StartAfter="zzz")
    assert r["KeyCount"] == 0 and not r["IsTruncated"]


def test_list_v1_marker(s3, listing):
    name, keys = listing
    r = s3.list_objects(Bucket=name, Marker="flat/k0999", MaxKeys=5)
    assert [o["Key"] for o in r["Contents"]] == [f"flat/k{i:04d}" for i in range(1000, 1005)]
    assert r["IsTruncated"] and r["Marker"] == "flat/k0999" and r["MaxKeys"] == 5
    # Without a delimiter the next marker is the last key (NextMarker is optional then).
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=name))
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys
    assert [len(p["Contents"]) for p in pages] == [1000, 1000, 500]
    # With a delimiter, NextMarker is returned when truncated.
    r = s3.list_objects(Bucket=name, Prefix="tree/", Delimiter="/", MaxKeys=10)
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == [f"tree/d{d:02d}/" for d in range(10)]
    assert r["IsTruncated"] and r["NextMarker"] == "tree/d09/"
    r = s3.list_objects(Bucket=name, Prefix="tree/", Delimiter="/", MaxKeys=10, Marker=r["NextMarker"])
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == [f"tree/d{d:02d}/" for d in range(10, 20)]


# ---------------------------------------------------------------------------- odd key names

ODD_KEYS = [
    "a b+c%d~e/../f ü.txt",
    "/leading-slash.txt",
    "double//slash",
    "trailing-dot.",
    "q?x=1&y#frag",
    "snow ☃ and emoji 😀",
    "'quotes' \"double\" <angle> & amp",
    "percent%2F-not-a-slash",
    "  spaces  around  ",
]


def test_odd_keys(s3, bucket):
    for i, key in enumerate(ODD_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=f"{i}".encode())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(ODD_KEYS, key=lambda k: k.encode())
    v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    assert v1 == listed
    for i, key in enumerate(ODD_KEYS):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == f"{i}".encode(), key
        s3.head_object(Bucket=bucket, Key=key)
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": ODD_KEYS[0]})
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == b"0"
    # ".." must not be resolved: "a b+c%d~e/../f ü.txt" is not "f ü.txt".
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="f ü.txt")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in ODD_KEYS]})
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted(ODD_KEYS)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["copied"]


def test_presigned_get_with_boto3(appliance, s3, bucket):
    data = os.urandom(10_000)
    s3.put_object(Bucket=bucket, Key="pre/x y", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre/x y"}, ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.read() == data
    bad = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    with pytest.raises(urllib.error.HTTPError) as hi:
        urllib.request.urlopen(bad, timeout=30)
    assert hi.value.code == 403


# ------------------------------------------------------------------------------ legacy boto3

LEGACY_SCRIPT = textwrap.dedent(
    r'''
    import base64, hashlib, json, os, sys
    import boto3, botocore
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    v = tuple(int(x) for x in boto3.__version__.split(".")[:2])
    assert v < (1, 36), f"expected a pre-1.36 boto3, got {boto3.__version__} from {boto3.__file__}"
    endpoint, ak, sk, bucket, workdir = sys.argv[1:6]
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                      region_name="us-east-1",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                    retries={"max_attempts": 1}))
    sent = []
    s3.meta.events.register("before-send.s3", lambda request, **kw: sent.append(
        (request.method, {k.lower(): v.decode() if isinstance(v, bytes) else v
                          for k, v in request.headers.items()})))

    data = os.urandom(100_000)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    r = s3.put_object(Bucket=bucket, Key="legacy/md5", Body=data, ContentMD5=md5)
    assert r["ETag"] == '"%s"' % hashlib.md5(data).hexdigest(), r["ETag"]
    hdrs = sent[-1][1]
    assert hdrs.get("content-md5") == md5
    assert not any(h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm" for h in hdrs), hdrs
    assert s3.get_object(Bucket=bucket, Key="legacy/md5")["Body"].read() == data

    s3.put_object(Bucket=bucket, Key="legacy/plain", Body=b"no checksum at all")  # (but Content-MD5)
    assert not any(h.startswith("x-amz-checksum-") for h in sent[-1][1])
    assert s3.get_object(Bucket=bucket, Key="legacy/plain", Range="bytes=3-10")["Body"].read() == b"checksum"

    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"legacy/del/{i}", Body=b"x")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"legacy/del/{i}"} for i in range(3)]})
    assert "content-md5" in sent[-1][1], sent[-1]  # DeleteObjects requires Content-MD5 here
    assert sorted(d["Key"] for d in r["Deleted"]) == [f"legacy/del/{i}" for i in range(3)]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="legacy/del/")["KeyCount"] == 0

    path = os.path.join(workdir, "mp.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(20 * 1024 * 1024 + 5))
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    s3.upload_file(path, bucket, "legacy/mp.bin", Config=cfg)
    assert not any(h.startswith("x-amz-checksum-") for m, hs in sent for h in hs)
    head = s3.head_object(Bucket=bucket, Key="legacy/mp.bin")
    assert head["ETag"].endswith('-3"'), head["ETag"]
    out = os.path.join(workdir, "mp.out")
    s3.download_file(bucket, "legacy/mp.bin", out, Config=cfg)
    assert open(out, "rb").read() == open(path, "rb").read()
    print(json.dumps({"boto3": boto3.__version__, "botocore": botocore.__version__, "requests": len(sent)}))
    '''
)


def test_legacy_boto3(appliance, bucket, tmp_path):
    legacy = helpers.LEGACY_BOTO3_DIR
    assert (legacy / "boto3").is_dir(), f"{legacy} missing: run dev/setup"
    script = tmp_path / "legacy_boto3.py"
    script.write_text(LEGACY_SCRIPT)
    env = helpers.clean_env()
    env.update(
        PYTHONPATH=str(legacy),
        AWS_CONFIG_FILE=os.environ["AWS_CONFIG_FILE"],
        AWS_SHARED_CREDENTIALS_FILE=os.environ["AWS_SHARED_CREDENTIALS_FILE"],
        AWS_EC2_METADATA_DISABLED="true",
    )
    proc = helpers.run(
        [sys.executable, script, appliance.endpoint, appliance.access_key, appliance.secret_key, bucket, tmp_path],
        env=env,
        timeout=300,
    )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["boto3"].startswith("1.35.")


# ---------------------------------------------------------------------------- restart/crash
# These restart the module's appliance, so they run last in this module.


def test_data_survives_restart(appliance, s3, bucket):
    small, large = os.urandom(100), os.urandom(3 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="persist/small", Body=small, Metadata={"x": "y"})
    s3.put_object(Bucket=bucket, Key="persist/large", Body=large)
    keys_before = appliance.access_key, appliance.secret_key
    rc = appliance.stop()
    assert rc == 0, f"appliance exited {rc} on SIGTERM\n{appliance.logs()}"
    appliance.start()
    assert (appliance.access_key, appliance.secret_key) == keys_before
    s3 = appliance.boto3_client()
    got = s3.get_object(Bucket=bucket, Key="persist/small")
    assert got["Body"].read() == small and got["Metadata"] == {"x": "y"}
    assert s3.get_object(Bucket=bucket, Key="persist/large")["Body"].read() == large
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="persist/")["Contents"]] == [
        "persist/large", "persist/small",
    ]


@pytest.mark.fault
def test_acknowledged_write_survives_sigkill(appliance, s3, bucket):
    data = os.urandom(2 * MiB + 1)
    s3.put_object(Bucket=bucket, Key="crash/acked", Body=data)
    s3.put_object(Bucket=bucket, Key="crash/small", Body=b"small")
    appliance.kill()
    appliance.start()
    s3 = appliance.boto3_client()
    assert s3.get_object(Bucket=bucket, Key="crash/acked")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="crash/small")["Body"].read() == b"small"
