"""Multipart uploads: create, parts, copy parts, complete, abort, list parts and uploads."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zlib

import boto3.s3.transfer
import botocore.exceptions
import pytest

MiB = 1 << 20


def code_of(e) -> str:
    return e.response["Error"]["Code"]


def mp_etag(parts: list[bytes]) -> str:
    return '"%s-%d"' % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts))
                        .hexdigest(), len(parts))


def upload(s3c, bucket, key, parts, **create_kw):
    up = s3c.create_multipart_upload(Bucket=bucket, Key=key, **create_kw)["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        kw = {"ChecksumAlgorithm": create_kw["ChecksumAlgorithm"]} \
            if "ChecksumAlgorithm" in create_kw else {}
        r = s3c.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=p, **kw)
        assert r["ETag"] == f'"{hashlib.md5(p).hexdigest()}"'
        entry = {"PartNumber": i, "ETag": r["ETag"]}
        for k in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256"):
            if k in r:
                entry[k] = r[k]
        done.append(entry)
    return up, done


def test_roundtrip(s3c, bucket):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 17), os.urandom(1234)]
    up, done = upload(s3c, bucket, "mp", parts, ContentType="text/x-test",
                      Metadata={"Owner": "me"}, CacheControl="no-store")
    r = s3c.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up,
                                      MultipartUpload={"Parts": done})
    assert r["ETag"] == mp_etag(parts) and r["Key"] == "mp" and r["Bucket"] == bucket
    g = s3c.get_object(Bucket=bucket, Key="mp")
    assert g["Body"].read() == b"".join(parts)
    assert g["ETag"] == mp_etag(parts) and g["ContentType"] == "text/x-test"
    assert g["Metadata"] == {"owner": "me"} and g["CacheControl"] == "no-store"
    for n, p in enumerate(parts, 1):
        r = s3c.get_object(Bucket=bucket, Key="mp", PartNumber=n)
        assert r["PartsCount"] == 3 and r["Body"].read() == p
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.get_object(Bucket=bucket, Key="mp", PartNumber=4)
    assert code_of(e.value) == "InvalidPartNumber"
    # A range across part boundaries.
    a = 5 * MiB - 10
    r = s3c.get_object(Bucket=bucket, Key="mp", Range=f"bytes={a}-{a + 19}")
    assert r["Body"].read() == b"".join(parts)[a:a + 20]
    assert s3c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_single_small_part_and_empty_part(s3c, bucket):
    up, done = upload(s3c, bucket, "one", [b"tiny"])
    s3c.complete_multipart_upload(Bucket=bucket, Key="one", UploadId=up,
                                  MultipartUpload={"Parts": done})
    assert s3c.get_object(Bucket=bucket, Key="one")["Body"].read() == b"tiny"
    up, done = upload(s3c, bucket, "empty", [b""])
    s3c.complete_multipart_upload(Bucket=bucket, Key="empty", UploadId=up,
                                  MultipartUpload={"Parts": done})
    assert s3c.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def test_part_replacement_and_subset(s3c, bucket):
    up = s3c.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    p1a, p1b, p2, p3 = os.urandom(5 * MiB), os.urandom(5 * MiB), b"two" * 100, b"three"
    s3c.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=1, Body=p1a)
    e1 = s3c.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=1, Body=p1b)["ETag"]
    s3c.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=2, Body=p2)
    e3 = s3c.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=3, Body=p3)["ETag"]
    parts = s3c.list_parts(Bucket=bucket, Key="k", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MiB), (2, 300), (3, 5)]
    # Skip part 2: allowed, parts need only be ascending.
    s3c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}]})
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == p1b + p3


def test_complete_errors_change_nothing(s3c, raw, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"old")
    up, done = upload(s3c, bucket, "k", [os.urandom(5 * MiB), b"small", b"last"])

    def complete(parts):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=up,
                                          MultipartUpload={"Parts": parts})
        return code_of(e.value)

    assert complete([done[1], done[0]]) == "InvalidPartOrder"
    assert complete([done[0], done[0]]) == "InvalidPartOrder"
    assert complete([{"PartNumber": 1, "ETag": '"0123"'}]) == "InvalidPart"
    assert complete([done[0], {"PartNumber": 7, "ETag": done[1]["ETag"]}]) == "InvalidPart"
    assert complete(done) == "EntityTooSmall"  # part 2 is not the last and < 5 MiB
    r = raw.request("POST", f"/{bucket}/k", query=f"uploadId={up}",
                    body=b"<CompleteMultipartUpload></CompleteMultipartUpload>")
    assert r.status == 400 and r.error_code() == "MalformedXML"
    r = raw.request("POST", f"/{bucket}/k", query=f"uploadId={up}", body=b"<not xml")
    assert r.status == 400 and r.error_code() == "MalformedXML"
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old"
    # The upload is still usable after all that.
    s3c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=up,
                                  MultipartUpload={"Parts": [done[0], done[2]]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=up,
                                      MultipartUpload={"Parts": [done[0], done[2]]})
    assert code_of(e.value) == "NoSuchUpload"


def test_abort(s3c, bucket):
    up, _ = upload(s3c, bucket, "ab", [b"data"])
    r = s3c.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=up)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    for call in (lambda: s3c.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=up),
                 lambda: s3c.list_parts(Bucket=bucket, Key="ab", UploadId=up),
                 lambda: s3c.upload_part(Bucket=bucket, Key="ab", UploadId=up, PartNumber=1,
                                         Body=b"x"),
                 lambda: s3c.abort_multipart_upload(Bucket=bucket, Key="other", UploadId=up)):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e.value) == "NoSuchUpload"
    with pytest.raises(s3c.exceptions.NoSuchKey):
        s3c.get_object(Bucket=bucket, Key="ab")


@pytest.mark.parametrize("n", ["0", "10001", "-1", "abc"])
def test_bad_part_numbers(raw, s3c, bucket, n):
    up = s3c.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    r = raw.request("PUT", f"/{bucket}/k", query=f"partNumber={n}&uploadId={up}", body=b"x")
    assert r.status == 400 and r.error_code() == "InvalidArgument"
    assert s3c.list_parts(Bucket=bucket, Key="k", UploadId=up).get("Parts", []) == []


def test_list_parts_paging(s3c, bucket):
    up, _ = upload(s3c, bucket, "lp", [b"p%d" % i for i in range(7)])
    nums, marker = [], 0
    while True:
        r = s3c.list_parts(Bucket=bucket, Key="lp", UploadId=up, MaxParts=3,
                           PartNumberMarker=marker)
        nums += [p["PartNumber"] for p in r.get("Parts", [])]
        if not r["IsTruncated"]:
            break
        marker = r["NextPartNumberMarker"]
        assert marker == nums[-1]
    assert nums == list(range(1, 8))


def test_list_uploads(s3c, bucket):
    ids = {}
    for k in ["a/1", "a/2", "b", "b", "c/x/y", "d"]:
        ids.setdefault(k, []).append(
            s3c.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"])
    r = s3c.list_multipart_uploads(Bucket=bucket)
    assert sorted((u["Key"], u["UploadId"]) for u in r["Uploads"]) == \
        sorted((k, i) for k, v in ids.items() for i in v)
    r = s3c.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in r["Uploads"]] == ["b", "b", "d"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    r = s3c.list_multipart_uploads(Bucket=bucket, Prefix="a/")
    assert [u["Key"] for u in r["Uploads"]] == ["a/1", "a/2"]
    # Paging one at a time with both markers.
    seen, km, im = [], None, None
    while True:
        kw = {"KeyMarker": km, "UploadIdMarker": im} if km else {}
        r = s3c.list_multipart_uploads(Bucket=bucket, MaxUploads=1, **kw)
        seen += [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
        if not r["IsTruncated"]:
            break
        km, im = r["NextKeyMarker"], r["NextUploadIdMarker"]
    assert len(seen) == 6 and len(set(seen)) == 6
    assert [k for k, _ in seen] == sorted(k for k, _ in seen)


def test_upload_part_copy(s3c, bucket):
    src = os.urandom(6 * MiB + 100)
    s3c.put_object(Bucket=bucket, Key="src", Body=src)
    up = s3c.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    r1 = s3c.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=1,
                              CopySource={"Bucket": bucket, "Key": "src"},
                              CopySourceRange=f"bytes=0-{5 * MiB - 1}")
    r2 = s3c.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=2,
                              CopySource=f"{bucket}/src",
                              CopySourceRange=f"bytes={5 * MiB - 3}-{6 * MiB + 99}")
    assert r1["CopyPartResult"]["ETag"] == f'"{hashlib.md5(src[:5 * MiB]).hexdigest()}"'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=3,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceRange=f"bytes=0-{len(src)}")
    assert code_of(e.value) == "InvalidRange"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=3,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceIfMatch='"nope"')
    assert code_of(e.value) == "PreconditionFailed"
    s3c.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    want = src[:5 * MiB] + src[5 * MiB - 3:]
    assert s3c.get_object(Bucket=bucket, Key="dst")["Body"].read() == want


def test_composite_checksum(s3c, bucket):
    parts = [os.urandom(5 * MiB), b"end"]
    up, done = upload(s3c, bucket, "ck", parts, ChecksumAlgorithm="CRC32")
    r = s3c.complete_multipart_upload(Bucket=bucket, Key="ck", UploadId=up,
                                      MultipartUpload={"Parts": done})
    crcs = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    want = base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode() + "-2"
    assert r["ChecksumCRC32"] == want
    h = s3c.head_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert h["ChecksumCRC32"] == want and h.get("ChecksumType") == "COMPOSITE"
    lp = s3c.list_parts  # parts are gone after completion
    with pytest.raises(botocore.exceptions.ClientError):
        lp(Bucket=bucket, Key="ck", UploadId=up)


def test_full_object_checksum(s3c, bucket):
    parts = [os.urandom(5 * MiB), os.urandom(777)]
    up, done = upload(s3c, bucket, "fo", parts, ChecksumAlgorithm="CRC32",
                      ChecksumType="FULL_OBJECT")
    r = s3c.complete_multipart_upload(Bucket=bucket, Key="fo", UploadId=up,
                                      MultipartUpload={"Parts": done})
    want = base64.b64encode(zlib.crc32(b"".join(parts)).to_bytes(4, "big")).decode()
    assert r["ChecksumCRC32"] == want and r.get("ChecksumType") == "FULL_OBJECT"


def test_wrong_part_checksum_in_complete(s3c, bucket):
    parts = [b"only"]
    up, done = upload(s3c, bucket, "wc", parts, ChecksumAlgorithm="CRC32")
    done[0]["ChecksumCRC32"] = base64.b64encode(b"\0\0\0\1").decode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.complete_multipart_upload(Bucket=bucket, Key="wc", UploadId=up,
                                      MultipartUpload={"Parts": done})
    assert code_of(e.value) == "InvalidPart"


def test_boto3_managed_transfer(s3c, bucket):
    data = os.urandom(23 * MiB + 5)
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=8 * MiB,
                                           multipart_chunksize=8 * MiB, max_concurrency=4)
    s3c.upload_fileobj(io.BytesIO(data), bucket, "managed", Config=cfg)
    out = io.BytesIO()
    s3c.download_fileobj(bucket, "managed", out, Config=cfg)
    assert out.getvalue() == data
    assert s3c.head_object(Bucket=bucket, Key="managed")["ETag"].endswith('-3"')
