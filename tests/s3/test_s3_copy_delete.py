"""CopyObject and DeleteObjects."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import urllib.parse
import zlib

import botocore.exceptions
import pytest

from s3kit import assert_no_leaks

MiB = 1 << 20


def code_of(e) -> str:
    return e.response["Error"]["Code"]


@pytest.mark.parametrize("size", [10, 3 * MiB + 5])
def test_copy_data_and_metadata(s3, s3c, bucket, size):
    data = os.urandom(size)
    src = s3c.put_object(Bucket=bucket, Key="src", Body=data, ContentType="text/a",
                         Metadata={"k": "v"}, ChecksumAlgorithm="CRC32")
    r = s3c.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == src["ETag"]
    assert r["CopyObjectResult"]["LastModified"].tzinfo is not None
    g = s3c.get_object(Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    assert g["Body"].read() == data and g["ContentType"] == "text/a"
    assert g["Metadata"] == {"k": "v"} and g["ChecksumCRC32"] == src["ChecksumCRC32"]
    r = s3c.copy_object(Bucket=bucket, Key="copy2", CopySource=f"{bucket}/src",
                        MetadataDirective="REPLACE", ContentType="text/b",
                        Metadata={"new": "1"})
    g = s3c.get_object(Bucket=bucket, Key="copy2")
    assert g["Body"].read() == data and g["ContentType"] == "text/b"
    assert g["Metadata"] == {"new": "1"}
    # The copies do not share data with the source: delete it, collect garbage, read again.
    s3c.delete_object(Bucket=bucket, Key="src")
    assert_no_leaks(s3)
    assert s3c.get_object(Bucket=bucket, Key="copy")["Body"].read() == data
    assert s3c.get_object(Bucket=bucket, Key="copy2")["Body"].read() == data


def test_copy_multipart_source(s3c, bucket):
    parts = [os.urandom(5 * MiB), b"end"]
    up = s3c.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    done = [{"PartNumber": i, "ETag": s3c.upload_part(Bucket=bucket, Key="mp", UploadId=up,
                                                      PartNumber=i, Body=p)["ETag"]}
            for i, p in enumerate(parts, 1)]
    s3c.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up,
                                  MultipartUpload={"Parts": done})
    s3c.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "mp"})
    assert s3c.get_object(Bucket=bucket, Key="c")["Body"].read() == b"".join(parts)


def test_copy_onto_itself(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="self", Body=b"same", Metadata={"a": "1"})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"})
    assert code_of(e.value) == "InvalidRequest"
    s3c.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"},
                    MetadataDirective="REPLACE", Metadata={"a": "2"})
    g = s3c.get_object(Bucket=bucket, Key="self")
    assert g["Body"].read() == b"same" and g["Metadata"] == {"a": "2"}


@pytest.mark.parametrize("key", ["sp ace+plus", "pct%41", "ü/ñ", "/lead", "q?x=1"])
def test_copy_source_encoding(s3c, raw, bucket, key):
    s3c.put_object(Bucket=bucket, Key=key, Body=key.encode())
    s3c.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": key})
    assert s3c.get_object(Bucket=bucket, Key="dst")["Body"].read() == key.encode()
    # Raw forms: with a leading slash and a versionId suffix.
    src = "/" + bucket + "/" + urllib.parse.quote(key, safe="/") + "?versionId=null"
    r = raw.request("PUT", f"/{bucket}/dst2", headers={"x-amz-copy-source": src})
    assert r.status == 200, r
    assert b"<CopyObjectResult" in r.body and b'<ETag>"' in r.body
    assert s3c.get_object(Bucket=bucket, Key="dst2")["Body"].read() == key.encode()


def test_copy_source_conditions(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="s", Body=b"x")
    h = s3c.head_object(Bucket=bucket, Key="s")
    etag, lm = h["ETag"], h["LastModified"]
    past, future = lm - datetime.timedelta(hours=1), lm + datetime.timedelta(hours=1)
    src = {"Bucket": bucket, "Key": "s"}
    ok = [dict(CopySourceIfMatch=etag), dict(CopySourceIfNoneMatch='"x"'),
          dict(CopySourceIfModifiedSince=past), dict(CopySourceIfUnmodifiedSince=future),
          dict(CopySourceIfMatch=etag, CopySourceIfUnmodifiedSince=past)]
    bad = [dict(CopySourceIfMatch='"x"'), dict(CopySourceIfNoneMatch=etag),
           dict(CopySourceIfModifiedSince=future), dict(CopySourceIfUnmodifiedSince=past)]
    for kw in ok:
        s3c.copy_object(Bucket=bucket, Key="d", CopySource=src, **kw)
    for kw in bad:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3c.copy_object(Bucket=bucket, Key="d2", CopySource=src, **kw)
        assert code_of(e.value) == "PreconditionFailed", kw
    with pytest.raises(s3c.exceptions.NoSuchKey):
        s3c.get_object(Bucket=bucket, Key="d2")


def test_copy_errors(s3c, raw, bucket):
    with pytest.raises(s3c.exceptions.NoSuchKey):
        s3c.copy_object(Bucket=bucket, Key="d", CopySource={"Bucket": bucket, "Key": "none"})
    with pytest.raises(s3c.exceptions.NoSuchBucket):
        s3c.copy_object(Bucket=bucket, Key="d",
                        CopySource={"Bucket": "no-such-bucket-x", "Key": "k"})
    for bad in ("nokey", "", "/", bucket + "/"):
        r = raw.request("PUT", f"/{bucket}/d", headers={"x-amz-copy-source": bad})
        assert r.status == 400 and r.error_code() == "InvalidArgument", bad
    s3c.put_object(Bucket=bucket, Key="s", Body=b"x")
    r = raw.request("PUT", f"/{bucket}/d", headers={"x-amz-copy-source": f"{bucket}/s",
                                                    "x-amz-metadata-directive": "MOVE"})
    assert r.status == 400 and r.error_code() == "InvalidArgument"
    assert s3c.list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def _delete_body(keys, quiet=False) -> bytes:
    items = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    return (f"<Delete>{'<Quiet>true</Quiet>' if quiet else ''}{items}</Delete>").encode()


def _md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def test_delete_objects(s3c, bucket):
    for k in ("a", "b", "c/d"):
        s3c.put_object(Bucket=bucket, Key=k, Body=b"x")
    r = s3c.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a"}, {"Key": "c/d"}, {"Key": "missing"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["a", "c/d", "missing"]
    assert "Errors" not in r
    assert [o["Key"] for o in s3c.list_objects_v2(Bucket=bucket)["Contents"]] == ["b"]
    r = s3c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b"}], "Quiet": True})
    assert "Deleted" not in r and "Errors" not in r
    assert s3c.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_delete_objects_digests(raw, s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"x")
    body = _delete_body(["k"])
    q = "delete"
    r = raw.request("POST", f"/{bucket}", query=q, body=body)
    assert r.status == 400 and r.error_code() == "InvalidRequest"  # no digest at all
    r = raw.request("POST", f"/{bucket}", query=q, body=body,
                    headers={"Content-MD5": _md5(b"other")})
    assert r.status == 400 and r.error_code() == "BadDigest"
    crc = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    r = raw.request("POST", f"/{bucket}", query=q, body=body,
                    headers={"x-amz-checksum-crc32": crc})
    assert r.status == 400 and r.error_code() == "BadDigest"
    assert s3c.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    r = raw.request("POST", f"/{bucket}", query=q, body=body,
                    headers={"x-amz-checksum-crc32": crc})
    assert r.status == 200 and b"<Deleted><Key>k</Key></Deleted>" in r.body
    assert s3c.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.parametrize("body", [
    b"<Delete></Delete>", b"<Delete><Object></Object></Delete>", b"not xml",
    b"<Wrong><Object><Key>k</Key></Object></Wrong>",
    b'<!DOCTYPE d [<!ENTITY x "k">]><Delete><Object><Key>&x;</Key></Object></Delete>',
    _delete_body([f"k{i}" for i in range(1001)])])
def test_delete_objects_malformed(raw, s3c, bucket, body):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = raw.request("POST", f"/{bucket}", query="delete", body=body,
                    headers={"Content-MD5": _md5(body)})
    assert r.status == 400 and r.error_code() == "MalformedXML", r
    assert s3c.list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def test_delete_objects_max_and_long_keys(raw, s3c, bucket):
    keys = [f"k{i:04d}" for i in range(1000)]
    s3c.put_object(Bucket=bucket, Key="k0000", Body=b"x")
    body = _delete_body(keys + [], quiet=True)
    r = raw.request("POST", f"/{bucket}", query="delete", body=body,
                    headers={"Content-MD5": _md5(body)})
    assert r.status == 200 and b"<Deleted>" not in r.body
    body = _delete_body(["x" * 1025, "ok"])
    r = raw.request("POST", f"/{bucket}", query="delete", body=body,
                    headers={"Content-MD5": _md5(body)})
    assert r.status == 200 and b"<Code>KeyTooLongError</Code>" in r.body
    assert b"<Deleted><Key>ok</Key></Deleted>" in r.body
