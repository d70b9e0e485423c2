"""PutObject, GetObject, HeadObject, DeleteObject: data, ranges, conditionals, metadata,
checksums, keys, aws-chunked bodies."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import zlib

import botocore.exceptions
import pytest
from s3util import aws_chunked_signed, aws_chunked_unsigned, seed_of, signing_key

from s3kit import quote_key


def code_of(e) -> str:
    return e.response["Error"]["Code"]


def status_of(e) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("size", [0, 1, 4096, 4097, (1 << 20) + 1, 5 * (1 << 20) + 123])
def test_put_get_sizes(s3c, bucket, size):
    data = os.urandom(size)
    r = s3c.put_object(Bucket=bucket, Key=f"obj{size}", Body=data)
    assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    g = s3c.get_object(Bucket=bucket, Key=f"obj{size}")
    assert g["Body"].read() == data
    assert g["ContentLength"] == size and g["ETag"] == r["ETag"]
    h = s3c.head_object(Bucket=bucket, Key=f"obj{size}")
    assert h["ContentLength"] == size and h["ETag"] == r["ETag"]


def test_overwrite_replaces(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"one" * 5000)
    s3c.put_object(Bucket=bucket, Key="k", Body=b"two")
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"


def test_metadata_and_content_headers(s3c, bucket):
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    s3c.put_object(Bucket=bucket, Key="m", Body=b"x", ContentType="text/plain; charset=utf-8",
                   ContentEncoding="gzip", ContentDisposition='attachment; filename="a b.txt"',
                   ContentLanguage="de-DE", CacheControl="max-age=60", Expires=expires,
                   Metadata={"Color": "Blue", "x-y": "1 2  3"})
    for r in (s3c.get_object(Bucket=bucket, Key="m"), s3c.head_object(Bucket=bucket, Key="m")):
        assert r["ContentType"] == "text/plain; charset=utf-8"
        assert r["ContentEncoding"] == "gzip"
        assert r["ContentDisposition"] == 'attachment; filename="a b.txt"'
        assert r["ContentLanguage"] == "de-DE"
        assert r["CacheControl"] == "max-age=60"
        assert r["Expires"] == expires
        assert r["Metadata"] == {"color": "Blue", "x-y": "1 2  3"}
        lm = r["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
        assert lm.endswith(" GMT") and len(lm) == 29
    s3c.put_object(Bucket=bucket, Key="d", Body=b"x")
    assert s3c.head_object(Bucket=bucket, Key="d")["ContentType"] == "binary/octet-stream"


def test_metadata_too_large(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"before")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.put_object(Bucket=bucket, Key="k", Body=b"after", Metadata={"big": "v" * 2100})
    assert code_of(e.value) == "MetadataTooLarge"
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"before"


@pytest.fixture
def obj(s3c, bucket):
    data = bytes(range(256)) * 4 + b"tail"  # 1028 bytes
    s3c.put_object(Bucket=bucket, Key="r", Body=data)
    return bucket, data


@pytest.mark.parametrize("rng,want,cr", [
    ("bytes=0-0", (0, 1), "bytes 0-0/1028"),
    ("bytes=10-19", (10, 20), "bytes 10-19/1028"),
    ("bytes=-10", (1018, 1028), "bytes 1018-1027/1028"),
    ("bytes=1000-", (1000, 1028), "bytes 1000-1027/1028"),
    ("bytes=1000-99999", (1000, 1028), "bytes 1000-1027/1028"),
    ("bytes=-5000", (0, 1028), "bytes 0-1027/1028"),
    ("bytes=1027-1027", (1027, 1028), "bytes 1027-1027/1028"),
])
def test_ranges(s3c, obj, rng, want, cr):
    bucket, data = obj
    r = s3c.get_object(Bucket=bucket, Key="r", Range=rng)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == cr
    assert r["Body"].read() == data[want[0]:want[1]]
    assert r["ContentLength"] == want[1] - want[0]


@pytest.mark.parametrize("rng", ["bytes=0-1,5-6", "bytes=abc", "bytes=5-2", "items=0-1",
                                 "bytes=-"])
def test_ignored_ranges_return_whole_object(s3c, obj, rng):
    bucket, data = obj
    r = s3c.get_object(Bucket=bucket, Key="r", Range=rng)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert r["Body"].read() == data


@pytest.mark.parametrize("rng", ["bytes=1028-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range(s3c, obj, rng):
    bucket, _ = obj
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.get_object(Bucket=bucket, Key="r", Range=rng)
    assert code_of(e.value) == "InvalidRange" and status_of(e.value) == 416
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes */1028"


def test_range_on_large_object_spanning_segments(s3c, bucket):
    data = os.urandom(3 * (1 << 20) + 777)
    s3c.put_object(Bucket=bucket, Key="big", Body=data)
    for a, b in ((0, 1 << 20), ((1 << 20) - 5, (1 << 20) + 5), (2 * (1 << 20) + 1, len(data))):
        r = s3c.get_object(Bucket=bucket, Key="big", Range=f"bytes={a}-{b - 1}")
        assert r["Body"].read() == data[a:b]


def test_conditionals(s3c, obj):
    bucket, _ = obj
    h = s3c.head_object(Bucket=bucket, Key="r")
    etag, lm = h["ETag"], h["LastModified"]
    past, future = lm - datetime.timedelta(hours=1), lm + datetime.timedelta(hours=1)

    def status(**kw):
        try:
            return s3c.get_object(Bucket=bucket, Key="r", **kw)["ResponseMetadata"][
                "HTTPStatusCode"]
        except botocore.exceptions.ClientError as e:
            return status_of(e)

    assert status(IfMatch=etag) == 200
    assert status(IfMatch='"nope"') == 412
    assert status(IfMatch="*") == 200
    assert status(IfNoneMatch=etag) == 304
    assert status(IfNoneMatch='"nope"') == 200
    assert status(IfModifiedSince=past) == 200
    assert status(IfModifiedSince=future) == 304
    assert status(IfModifiedSince=lm) == 304
    assert status(IfUnmodifiedSince=future) == 200
    assert status(IfUnmodifiedSince=past) == 412
    # RFC 7232 precedence: a true If-Match makes If-Unmodified-Since irrelevant...
    assert status(IfMatch=etag, IfUnmodifiedSince=past) == 200
    # ...and If-None-Match makes If-Modified-Since irrelevant.
    assert status(IfNoneMatch='"nope"', IfModifiedSince=future) == 200
    assert status(IfNoneMatch=etag, IfModifiedSince=past) == 304
    assert status(IfMatch='"nope"', IfNoneMatch='"nope"') == 412


def test_not_modified_has_no_body(raw, obj):
    bucket, _ = obj
    r = raw.request("GET", f"/{bucket}/r")
    etag = r.headers["etag"]
    r = raw.request("GET", f"/{bucket}/r", headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b"" and r.headers["etag"] == etag
    r = raw.request("HEAD", f"/{bucket}/r", headers={"If-Match": '"x"'})
    assert r.status == 412 and r.body == b""


def test_response_overrides(s3c, obj):
    bucket, _ = obj
    r = s3c.get_object(Bucket=bucket, Key="r", ResponseContentType="image/png",
                       ResponseContentDisposition="inline", ResponseCacheControl="no-cache",
                       ResponseContentLanguage="fr", ResponseContentEncoding="identity",
                       ResponseExpires=datetime.datetime(2031, 1, 1,
                                                         tzinfo=datetime.timezone.utc))
    assert r["ContentType"] == "image/png"
    assert r["ContentDisposition"] == "inline"
    assert r["CacheControl"] == "no-cache"
    assert r["ContentLanguage"] == "fr"
    assert r["ContentEncoding"] == "identity"


def crc64nvme(data: bytes) -> bytes:
    import crcmod
    f = crcmod.mkCrcFun(0x1AD93D23594C93659, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
    return f(data).to_bytes(8, "big")


def test_crc64nvme_reference_value():
    assert crc64nvme(b"123456789").hex() == "ae8b14860a799888"


@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_checksums_stored_and_returned(s3c, raw, bucket, alg):
    data = os.urandom(100_000)
    if alg == "CRC64NVME":  # botocore needs awscrt for it: send the header ourselves
        sent = base64.b64encode(crc64nvme(data)).decode()
        r = raw.request("PUT", f"/{bucket}/c", body=data,
                        headers={"x-amz-checksum-crc64nvme": sent})
        assert r.status == 200 and r.headers["x-amz-checksum-crc64nvme"] == sent
    else:
        r = s3c.put_object(Bucket=bucket, Key="c", Body=data, ChecksumAlgorithm=alg)
        sent = r[f"Checksum{alg}"]
    h = s3c.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert h[f"Checksum{alg}"] == sent
    g = s3c.get_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert g[f"Checksum{alg}"] == sent and g["Body"].read() == data
    assert f"Checksum{alg}" not in s3c.head_object(Bucket=bucket, Key="c")
    rg = s3c.get_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED", Range="bytes=0-9")
    assert f"Checksum{alg}" not in rg
    if alg == "CRC32":
        assert base64.b64decode(sent) == zlib.crc32(data).to_bytes(4, "big")


def test_bad_content_md5_and_checksum_change_nothing(raw, s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"original")
    body = b"new data" * 1000
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = raw.request("PUT", f"/{bucket}/k", body=body, headers={"Content-MD5": wrong_md5})
    assert r.status == 400 and r.error_code() == "BadDigest"
    r = raw.request("PUT", f"/{bucket}/k", body=body, headers={"Content-MD5": "notbase64!"})
    assert r.status == 400 and r.error_code() == "InvalidDigest"
    wrong_crc = base64.b64encode(b"\0\0\0\0").decode()
    r = raw.request("PUT", f"/{bucket}/k", body=body, headers={"x-amz-checksum-crc32": wrong_crc})
    assert r.status == 400 and r.error_code() == "BadDigest"
    # Big body (erasure-coded path) with a wrong MD5.
    big = os.urandom(3 << 20)
    r = raw.request("PUT", f"/{bucket}/k", body=big, headers={"Content-MD5": wrong_md5})
    assert r.status == 400 and r.error_code() == "BadDigest"
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = raw.request("PUT", f"/{bucket}/k", body=body, headers={"Content-MD5": good})
    assert r.status == 200
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == body


def test_payload_sha256_mismatch(raw, s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"original")
    body = os.urandom(2 << 20)
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    r = raw.request("PUT", f"/{bucket}/k", body=body, send_body=tampered)
    assert r.status == 400 and r.error_code() == "XAmzContentSHA256Mismatch"
    r = raw.request("PUT", f"/{bucket}/k", body=b"tiny", send_body=b"tinY")
    assert r.status == 400 and r.error_code() == "XAmzContentSHA256Mismatch"
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"


def test_aws_chunked_signed(raw, s3, s3c, bucket):
    data = os.urandom(200_000)
    headers = {"Content-Encoding": "aws-chunked,gzip",
               "x-amz-decoded-content-length": str(len(data))}
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    path = f"/{bucket}/chunked"
    signed = raw.sign("PUT", path, headers=headers, payload_hash=mode)
    seed, ts, scope = seed_of(signed)
    key = signing_key(s3.creds["root"][1], ts[:8])
    body = aws_chunked_signed(data, 65536, key, ts, scope, seed)
    r = raw.request("PUT", path, headers=signed, body=body, sign=False)
    assert r.status == 200, r
    g = s3c.get_object(Bucket=bucket, Key="chunked")
    assert g["Body"].read() == data
    assert g["ContentEncoding"] == "gzip"  # aws-chunked is never stored
    # A flipped payload byte breaks its chunk's signature: rejected, object unchanged.
    signed = raw.sign("PUT", path, headers=headers, payload_hash=mode)
    seed, ts, scope = seed_of(signed)
    bad = bytearray(aws_chunked_signed(os.urandom(200_000), 65536, key, ts, scope, seed))
    bad[100] ^= 1
    r = raw.request("PUT", path, headers=signed, body=bytes(bad), sign=False)
    assert r.status == 403 and r.error_code() == "SignatureDoesNotMatch"
    assert s3c.get_object(Bucket=bucket, Key="chunked")["Body"].read() == data


def test_aws_chunked_only_encoding_stores_none(raw, s3, s3c, bucket):
    data = b"hello chunks"
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    path = f"/{bucket}/unsigned"
    body = aws_chunked_unsigned(data, 5, {"x-amz-checksum-crc32": crc})
    r = raw.request("PUT", path, headers=headers, body=body,
                    payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert r.status == 200, r
    g = s3c.get_object(Bucket=bucket, Key="unsigned", ChecksumMode="ENABLED")
    assert g["Body"].read() == data and "ContentEncoding" not in g
    assert g["ChecksumCRC32"] == crc
    # Wrong trailer checksum: BadDigest, unchanged.
    body = aws_chunked_unsigned(b"other stuff!", 5, {"x-amz-checksum-crc32": crc})
    headers["x-amz-decoded-content-length"] = "12"
    r = raw.request("PUT", path, headers=headers, body=body,
                    payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert r.status == 400 and r.error_code() == "BadDigest"
    assert s3c.get_object(Bucket=bucket, Key="unsigned")["Body"].read() == data


def test_aws_chunked_signed_trailer(raw, s3, s3c, bucket):
    data = os.urandom(70_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}
    path = f"/{bucket}/st"
    signed = raw.sign("PUT", path, headers=headers,
                      payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
    seed, ts, scope = seed_of(signed)
    key = signing_key(s3.creds["root"][1], ts[:8])
    body = aws_chunked_signed(data, 65536, key, ts, scope, seed,
                              trailers={"x-amz-checksum-crc32": crc})
    r = raw.request("PUT", path, headers=signed, body=body, sign=False)
    assert r.status == 200, r
    assert s3c.get_object(Bucket=bucket, Key="st")["Body"].read() == data


def test_aws_chunked_decoded_length_mismatch(raw, s3c, bucket):
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "100",
               "x-amz-trailer": "x-amz-checksum-crc32"}
    data = b"x" * 50
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    r = raw.request("PUT", f"/{bucket}/short", headers=headers,
                    body=aws_chunked_unsigned(data, 10, {"x-amz-checksum-crc32": crc}),
                    payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert r.status == 400 and r.error_code() == "IncompleteBody"
    with pytest.raises(s3c.exceptions.NoSuchKey):
        s3c.get_object(Bucket=bucket, Key="short")


KEYS = ["plus+sign", "space in key", "percent%25%", "tilde~", "../dots/..", "/leading",
        "a//double", "unicode/äöü/日本", "trailing/", "q?mark&amp=1#hash", "\\back",
        "semi;colon,comma", "x" * 1024, "emoji😀"]


@pytest.mark.parametrize("key", KEYS)
def test_keys_roundtrip(s3c, bucket, key):
    s3c.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3c.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = [o["Key"] for o in s3c.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == [key]
    listed = [o["Key"] for o in s3c.list_objects(Bucket=bucket)["Contents"]]
    assert listed == [key]
    s3c.delete_object(Bucket=bucket, Key=key)
    assert s3c.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_slash_variants_are_distinct(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="a/", Body=b"dir")
    s3c.put_object(Bucket=bucket, Key="a/b", Body=b"file")
    s3c.put_object(Bucket=bucket, Key="a%2Fb", Body=b"literal")
    assert s3c.get_object(Bucket=bucket, Key="a/")["Body"].read() == b"dir"
    assert s3c.get_object(Bucket=bucket, Key="a/b")["Body"].read() == b"file"
    assert s3c.get_object(Bucket=bucket, Key="a%2Fb")["Body"].read() == b"literal"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.head_object(Bucket=bucket, Key="a")
    assert status_of(e.value) == 404


def test_encoded_slash_in_raw_path(raw, s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="x/y", Body=b"slash")
    s3c.put_object(Bucket=bucket, Key="x%y", Body=b"pct")
    # (x%2Fy is the key x/y too, but signing it depends on how the client canonicalises.)
    assert raw.request("GET", f"/{bucket}/x%25y").body == b"pct"
    assert raw.request("GET", f"/{bucket}/{quote_key('x%y')}").body == b"pct"


def test_key_too_long(raw, s3c, bucket):
    r = raw.request("PUT", f"/{bucket}/" + "k" * 1025, body=b"x")
    assert r.status == 400 and r.error_code() == "KeyTooLongError"
    r = raw.request("PUT", f"/{bucket}/" + quote_key("é" * 513), body=b"x")  # 1026 bytes
    assert r.status == 400 and r.error_code() == "KeyTooLongError"
    assert s3c.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_get_missing(s3c, raw, bucket):
    with pytest.raises(s3c.exceptions.NoSuchKey):
        s3c.get_object(Bucket=bucket, Key="nope")
    r = raw.request("GET", f"/{bucket}/nope")
    assert r.status == 404 and r.error_code() == "NoSuchKey"
    assert b"<Resource>/" + bucket.encode() + b"/nope</Resource>" in r.body
    assert r.headers["x-amz-request-id"] and b"<RequestId>" in r.body
    r = raw.request("HEAD", f"/{bucket}/nope")
    assert r.status == 404 and r.body == b""


def test_delete_object(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="d", Body=b"x")
    r = s3c.delete_object(Bucket=bucket, Key="d")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    r = s3c.delete_object(Bucket=bucket, Key="d")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(s3c.exceptions.NoSuchKey):
        s3c.get_object(Bucket=bucket, Key="d")


def test_put_to_missing_bucket(s3c):
    with pytest.raises(s3c.exceptions.NoSuchBucket):
        s3c.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"x")


def test_conditional_writes(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="c", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.put_object(Bucket=bucket, Key="c", Body=b"2", IfNoneMatch="*")
    assert status_of(e.value) == 412
    etag = s3c.head_object(Bucket=bucket, Key="c")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.put_object(Bucket=bucket, Key="c", Body=b"3", IfMatch='"0000"')
    assert status_of(e.value) == 412
    s3c.put_object(Bucket=bucket, Key="c", Body=b"4", IfMatch=etag)
    assert s3c.get_object(Bucket=bucket, Key="c")["Body"].read() == b"4"


def test_presigned_get_and_put(s3, bucket):
    import urllib.request
    s3c = s3.client(signature_version="s3v4")  # boto3 presigns with SigV2 unless told
    s3c.put_object(Bucket=bucket, Key="p", Body=b"presigned!")
    url = s3c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"},
                                     ExpiresIn=60)
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"presigned!"
    url = s3c.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "p2"},
                                     ExpiresIn=60)
    req = urllib.request.Request(url, data=b"uploaded", method="PUT")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
    assert s3c.get_object(Bucket=bucket, Key="p2")["Body"].read() == b"uploaded"


def test_object_subresources(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="o", Body=b"x")
    assert s3c.get_object_acl(Bucket=bucket, Key="o")["Grants"][0]["Permission"] == \
        "FULL_CONTROL"
    assert s3c.get_object_tagging(Bucket=bucket, Key="o")["TagSet"] == []
    s3c.put_object_acl(Bucket=bucket, Key="o", ACL="private")
    attrs = s3c.get_object_attributes(Bucket=bucket, Key="o",
                                      ObjectAttributes=["ETag", "ObjectSize", "StorageClass"])
    assert attrs["ObjectSize"] == 1 and attrs["ETag"] == hashlib.md5(b"x").hexdigest()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.put_object(Bucket=bucket, Key="sse", Body=b"x", SSECustomerAlgorithm="AES256",
                       SSECustomerKey="k" * 32)
    assert code_of(e.value) in ("NotImplemented", "InvalidRequest")


def test_expected_bucket_owner(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"x", ExpectedBucketOwner="root")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.put_object(Bucket=bucket, Key="k", Body=b"y", ExpectedBucketOwner="other")
    assert code_of(e.value) == "AccessDenied"
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_concurrent_writers_and_readers(s3, s3c, bucket):
    import concurrent.futures
    from s3kit import assert_no_leaks
    bodies = [os.urandom(n) for n in (10, 5000, 1 << 20, 3 << 20, 2_000_000, 7, 4096, 6 << 20)]
    etags = {f'"{hashlib.md5(b).hexdigest()}"': b for b in bodies}

    def write(b):
        s3.client().put_object(Bucket=bucket, Key="hot", Body=b)

    def read(_):
        c = s3.client()
        try:
            r = c.get_object(Bucket=bucket, Key="hot")
        except c.exceptions.NoSuchKey:
            return
        assert etags[r["ETag"]] == r["Body"].read()

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(write, b) for b in bodies] + [ex.submit(read, i) for i in range(8)]
        for f in futs:
            f.result()
    r = s3c.get_object(Bucket=bucket, Key="hot")
    assert etags[r["ETag"]] == r["Body"].read()
    assert_no_leaks(s3)
