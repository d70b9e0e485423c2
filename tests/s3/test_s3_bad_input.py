"""Bad and hostile input: every case gets its S3 error (or a closed connection), the stored data
does not change, nothing leaks, and the server keeps serving."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import os
import socket
import struct
import time
import urllib.request

import botocore.exceptions
import pytest

from appliance.store.store import READ_BATCH_SEGMENTS
from s3kit import RawClient, S3Server, assert_no_leaks, meta_keys

MiB = 1 << 20
ORIGINAL = b"original contents"


@pytest.fixture
def target(s3c, bucket):
    """(bucket, key) holding ORIGINAL; the test asserts it is unchanged at the end."""
    s3c.put_object(Bucket=bucket, Key="obj", Body=ORIGINAL)
    return bucket, "obj"


def unchanged(s3, s3c, bucket, key="obj"):
    assert s3c.get_object(Bucket=bucket, Key=key)["Body"].read() == ORIGINAL
    assert [o["Key"] for o in s3c.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    with urllib.request.urlopen(s3.endpoint + "/health") as r:
        assert r.status == 200
    assert_no_leaks(s3)


def raw_send(server: S3Server, head: bytes, body: bytes = b"", *, close: bool = True,
             read: bool = False, timeout: float = 10) -> bytes:
    """Write bytes to a fresh connection; optionally read until the server closes."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        s.sendall(head + body)
        if close and not read:
            s.shutdown(socket.SHUT_WR)
        out = b""
        if read:
            while True:
                try:
                    b = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not b:
                    break
                out += b
        return out
    finally:
        s.close()


def signed_head(raw: RawClient, method: str, path: str, body: bytes, extra=None,
                payload_hash=None) -> bytes:
    hdrs = raw.sign(method, path, headers=extra or {}, body=body, payload_hash=payload_hash)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{raw.server.port}"]
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n").encode()


# -- truncated and mis-sized bodies --------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 3 * MiB + 7])
def test_truncated_body_then_disconnect(s3, s3c, raw, target, size):
    bucket, key = target
    body = os.urandom(size)
    head = signed_head(raw, "PUT", f"/{bucket}/{key}", body)
    head += f"Content-Length: {size}\r\n\r\n".encode()
    raw_send(s3, head, body[: size // 2])
    time.sleep(0.3)
    unchanged(s3, s3c, bucket)


def test_truncated_unsigned_body(s3, s3c, raw, target):
    bucket, key = target
    body = os.urandom(2 * MiB)
    head = signed_head(raw, "PUT", f"/{bucket}/{key}", body, payload_hash="UNSIGNED-PAYLOAD")
    head += f"Content-Length: {len(body)}\r\n\r\n".encode()
    raw_send(s3, head, body[:MiB + 3])
    time.sleep(0.3)
    unchanged(s3, s3c, bucket)


def test_content_length_shorter_than_signed_body(s3, s3c, raw, target):
    bucket, key = target
    body = os.urandom(100_000)
    head = signed_head(raw, "PUT", f"/{bucket}/{key}", body)
    head += b"Content-Length: 50000\r\n\r\n"
    resp = raw_send(s3, head, body, close=False, read=True)
    assert resp.startswith(b"HTTP/1.1 400") and b"XAmzContentSHA256Mismatch" in resp
    unchanged(s3, s3c, bucket)


def test_stalled_body_times_out(tmp_path):
    server = S3Server(tmp_path, body_timeout=1).start()
    try:
        c = server.client()
        c.create_bucket(Bucket="stall-bucket")
        c.put_object(Bucket="stall-bucket", Key="obj", Body=ORIGINAL)
        raw = RawClient(server)
        body = os.urandom(2 * MiB)
        head = signed_head(raw, "PUT", "/stall-bucket/obj", body)
        head += f"Content-Length: {len(body)}\r\n\r\n".encode()
        t0 = time.time()
        resp = raw_send(server, head, body[:MiB], close=False, read=True, timeout=20)
        assert time.time() - t0 < 15
        assert resp.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in resp
        assert c.get_object(Bucket="stall-bucket", Key="obj")["Body"].read() == ORIGINAL
        assert_no_leaks(server)
    finally:
        server.stop()


def test_missing_content_length(s3, s3c, raw, target):
    bucket, key = target
    head = signed_head(raw, "PUT", f"/{bucket}/{key}", b"") + b"\r\n"
    resp = raw_send(s3, head, close=False, read=True, timeout=5)
    assert resp.startswith(b"HTTP/1.1 411") and b"<Code>MissingContentLength</Code>" in resp
    unchanged(s3, s3c, bucket)


def test_entity_too_large_answered_before_body(s3, s3c, raw, target):
    bucket, key = target
    head = signed_head(raw, "PUT", f"/{bucket}/{key}", b"", payload_hash="UNSIGNED-PAYLOAD")
    head += f"Content-Length: {(5 << 30) + 1}\r\n\r\n".encode()
    resp = raw_send(s3, head, b"x" * 1000, close=False, read=True, timeout=10)
    assert resp.startswith(b"HTTP/1.1 400") and b"<Code>EntityTooLarge</Code>" in resp
    unchanged(s3, s3c, bucket)


def test_chunked_transfer_encoding(s3, s3c, raw, bucket):
    data = os.urandom(3 * MiB + 11)
    for payload_hash in ("UNSIGNED-PAYLOAD", None):
        head = signed_head(raw, "PUT", f"/{bucket}/te", data, payload_hash=payload_hash)
        chunks = b"".join(b"%x\r\n" % len(data[i:i + 70000]) + data[i:i + 70000] + b"\r\n"
                          for i in range(0, len(data), 70000)) + b"0\r\n\r\n"
        resp = raw_send(s3, head + b"Transfer-Encoding: chunked\r\n\r\n", chunks, close=False,
                        read=True, timeout=20)
        assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
        g = s3c.get_object(Bucket=bucket, Key="te")
        assert g["Body"].read() == data
        assert g["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_expect_100_continue(s3, s3c, raw, bucket):
    data = os.urandom(MiB)
    head = signed_head(raw, "PUT", f"/{bucket}/cont", data)
    head += f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n\r\n".encode()
    s = socket.create_connection(("127.0.0.1", s3.port), timeout=10)
    try:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100")
        s.sendall(data)
        assert s.recv(1000).startswith(b"HTTP/1.1 200")
    finally:
        s.close()
    assert s3c.get_object(Bucket=bucket, Key="cont")["Body"].read() == data


# -- authentication ------------------------------------------------------------------------


def _put(raw, path, body, headers, **kw):
    return raw.request("PUT", path, body=body, headers=headers, sign=False, **kw)


def test_tampered_requests(s3, s3c, raw, target):
    bucket, key = target
    path = f"/{bucket}/{key}"
    body = b"evil"
    good = raw.sign("PUT", path, body=body, headers={"x-amz-meta-a": "1"})

    cases = {}
    h = dict(good)
    h["x-amz-meta-a"] = "2"
    cases["header changed"] = ("SignatureDoesNotMatch", path, h)
    cases["path changed"] = ("SignatureDoesNotMatch", f"/{bucket}/other", dict(good))
    h = dict(good)
    h["x-amz-meta-extra"] = "added"
    cases["unsigned x-amz header"] = ("AccessDenied", path, h)
    h = dict(good)
    h["Authorization"] = h["Authorization"].replace("Signature=", "Signature=0")[:-1]
    cases["signature changed"] = ("SignatureDoesNotMatch", path, h)
    h = dict(good)
    h["Authorization"] = "AWS4-HMAC-SHA256 garbage"
    cases["malformed"] = ("AuthorizationHeaderMalformed", path, h)
    h = dict(good)
    akid = s3.creds["root"][0]
    h["Authorization"] = h["Authorization"].replace(akid, "AKNOSUCHKEY000000000")
    cases["unknown key"] = ("InvalidAccessKeyId", path, h)
    h = {k: v for k, v in good.items() if k.lower() != "x-amz-content-sha256"}
    cases["no content sha"] = ("InvalidRequest", path, h)
    h = {k: v for k, v in good.items() if k.lower() != "authorization"}
    cases["anonymous"] = ("AccessDenied", path, h)
    h = dict(good)
    h["Authorization"] = h["Authorization"].replace("AWS4-HMAC-SHA256", "AWS")
    cases["sigv2"] = ("InvalidRequest", path, h)
    for name, (code, p, hdrs) in cases.items():
        r = _put(raw, p, body, hdrs)
        assert r.error_code() == code, (name, r)
        assert r.status in (400, 403), name
    unchanged(s3, s3c, bucket)


def test_wrong_secret(s3, target):
    bucket, key = target
    c = s3.client()
    c._request_signer._credentials = type(c._request_signer._credentials)(
        s3.creds["root"][0], "wrong-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    unchanged(s3, s3.client(), bucket)


def test_clock_skew(s3, s3c, raw, target, monkeypatch):
    bucket, key = target
    import botocore.auth
    real = datetime.datetime

    class Skewed(real):
        @classmethod
        def utcnow(cls):
            return real.utcnow() - datetime.timedelta(minutes=20)

        @classmethod
        def now(cls, tz=None):
            return real.now(tz) - datetime.timedelta(minutes=20)

    monkeypatch.setattr(botocore.auth.datetime, "datetime", Skewed)
    hdrs = raw.sign("PUT", f"/{bucket}/{key}", body=b"late")
    monkeypatch.undo()
    r = _put(raw, f"/{bucket}/{key}", b"late", hdrs)
    assert r.status == 403 and r.error_code() == "RequestTimeTooSkewed"
    unchanged(s3, s3c, bucket)


def test_expired_presigned_url(s3, target):
    bucket, key = target
    c = s3.client(signature_version="s3v4")
    url = c.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key},
                                   ExpiresIn=1)
    time.sleep(2.1)
    req = urllib.request.Request(url, data=b"late", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403 and b"<Code>AccessDenied</Code>" in e.value.read()
    unchanged(s3, c, bucket)


def test_head_errors_have_no_body(raw, s3, target):
    bucket, key = target
    r = raw.request("HEAD", f"/{bucket}/{key}", sign=False)
    assert r.status == 403 and r.body == b""
    r = raw.request("HEAD", "/no-such-bucket-zz")
    assert r.status == 404 and r.body == b""


# -- malformed requests --------------------------------------------------------------------


def test_xml_bombs_and_bad_xml(s3, s3c, raw, target):
    bucket, key = target
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            b"<Delete><Object><Key>&lol2;</Key></Object></Delete>")
    ext = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           b"<Delete><Object><Key>&e;</Key></Object></Delete>")
    for body in (bomb, ext, b"<Delete><Object><Key>obj</Key></Object>", b"\xff\xfe<"):
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        r = raw.request("POST", f"/{bucket}", query="delete", body=body,
                        headers={"Content-MD5": md5})
        assert r.status == 400 and r.error_code() == "MalformedXML", body
    r = raw.request("PUT", "/new-bucket-badxml", body=b"<CreateBucketConfiguration>")
    assert r.status == 400 and r.error_code() == "MalformedXML"
    r = raw.request("PUT", f"/{bucket}/{key}", query="acl", body=b"<AccessControlPolicy")
    assert r.status == 400 and r.error_code() == "MalformedACLError"
    assert "new-bucket-badxml" not in [b["Name"] for b in s3c.list_buckets()["Buckets"]]
    unchanged(s3, s3c, bucket)


def test_oversized_headers(s3, s3c, raw, target):
    bucket, key = target
    # Over 16 KiB of headers: RequestHeaderSectionTooLarge (hypercorn itself only refuses
    # headers that arrive in pieces over its 16 KiB incomplete-event limit, without S3 XML).
    head = signed_head(raw, "PUT", f"/{bucket}/{key}", b"x")
    head += b"X-Junk: " + b"j" * 20000 + b"\r\nContent-Length: 1\r\n\r\n"
    resp = raw_send(s3, head, b"x", close=False, read=True)
    assert resp.startswith(b"HTTP/1.1 400")
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in resp
    # Within it but over S3's metadata limit: MetadataTooLarge.
    meta = {f"x-amz-meta-m{i}": "v" * 500 for i in range(6)}
    r = raw.request("PUT", f"/{bucket}/{key}", body=b"x", headers=meta)
    assert r.status == 400 and r.error_code() == "MetadataTooLarge"
    unchanged(s3, s3c, bucket)


def test_bad_paths_and_methods(s3, s3c, raw, target):
    bucket, key = target
    r = raw.request("GET", f"/{bucket}/%FF%FE")
    assert r.status == 400 and r.error_code() == "InvalidURI"
    r = raw.request("PATCH", f"/{bucket}/{key}", body=b"x")
    assert r.status == 405 and r.error_code() == "MethodNotAllowed"
    r = raw.request("POST", "/")
    assert r.status == 405 and r.error_code() == "MethodNotAllowed"
    r = raw.request("PUT", f"/{bucket}/{key}", query="tagging", body=b"<Tagging/>")
    assert r.status == 501 and r.error_code() == "NotImplemented"
    r = raw.request("PUT", f"/{bucket}/{key}", body=b"x", headers={"x-amz-storage-class": "NOPE"})
    assert r.status == 400 and r.error_code() == "InvalidStorageClass"
    r = raw.request("PUT", f"/{bucket}/{key}", body=b"x",
                    headers={"Content-Length": "abc"}, sign=True)
    assert r.status == 400
    unchanged(s3, s3c, bucket)


def test_client_disconnect_during_get(s3, s3c, bucket):
    data = os.urandom(16 * MiB)
    s3c.put_object(Bucket=bucket, Key="big", Body=data)
    raw = RawClient(s3)
    hdrs = raw.sign("GET", f"/{bucket}/big")
    conn = http.client.HTTPConnection("127.0.0.1", s3.port, timeout=10)
    conn.putrequest("GET", f"/{bucket}/big", skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 200 and r.read(100_000) == data[:100_000]
    conn.sock.close()
    conn.close()
    time.sleep(0.5)
    assert s3c.get_object(Bucket=bucket, Key="big")["Body"].read() == data


# -- unreadable data -----------------------------------------------------------------------


def _corrupt_segment(server: S3Server, sid: str, segment: int, shards: int) -> None:
    files = sorted((server.data_dir / "data").glob(f"disk*/shards/*/{sid}.*"))
    assert len(files) == 6
    for f in files[:shards]:
        raw = bytearray(f.read_bytes())
        (n,) = struct.unpack_from(">I", raw, 8)
        header_len = 8 + 4 + n + 4
        frag = json.loads(raw[12:12 + n])["frag"]
        off = header_len + segment * (frag + 4) + 10
        raw[off] ^= 0xFF
        f.write_bytes(bytes(raw))


def _sid_of(server: S3Server, bucket: str, key: str) -> str:
    (_, v), = meta_keys(server, f"o/{bucket}/{key}".encode())
    return json.loads(v)["extents"][0]["sid"]


def test_unreadable_object(s3, s3c, bucket):
    data = os.urandom(12 * MiB)
    s3c.put_object(Bucket=bucket, Key="bad", Body=data)
    sid = _sid_of(s3, bucket, "bad")
    # Two shards bad: degraded read still returns the right bytes.
    _corrupt_segment(s3, sid, 1, shards=2)
    assert s3c.get_object(Bucket=bucket, Key="bad")["Body"].read() == data
    # Segment 0 lost for good: an error before any byte is sent.
    _corrupt_segment(s3, sid, 0, shards=6)
    raw = RawClient(s3)
    r = raw.request("GET", f"/{bucket}/bad")
    assert r.status == 503 and r.error_code() == "ServiceUnavailable"
    assert b"cannot be read" in r.body


def test_unreadable_object_mid_stream(s3, s3c, bucket):
    # The bad segment is in the second read batch: the first one is sent before it fails.
    data = os.urandom((READ_BATCH_SEGMENTS + 4) * MiB)
    s3c.put_object(Bucket=bucket, Key="bad2", Body=data)
    _corrupt_segment(s3, _sid_of(s3, bucket, "bad2"), READ_BATCH_SEGMENTS + 2, shards=6)
    raw = RawClient(s3)
    hdrs = raw.sign("GET", f"/{bucket}/bad2")
    conn = http.client.HTTPConnection("127.0.0.1", s3.port, timeout=20)
    conn.putrequest("GET", f"/{bucket}/bad2", skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 200 and int(r.headers["content-length"]) == len(data)
    with pytest.raises(http.client.IncompleteRead) as e:
        r.read()
    got = e.value.partial
    assert len(got) < len(data) and got == data[:len(got)]  # a short body, never wrong bytes
    conn.close()
    # The readable part is still served.
    r2 = s3c.get_object(Bucket=bucket, Key="bad2", Range="bytes=0-1048575")
    assert r2["Body"].read() == data[:MiB]
    with urllib.request.urlopen(s3.endpoint + "/health") as h:
        assert h.status == 200
