"""Faults for real, through the S3 interface of a running `appliance up`: shard files deleted
and corrupted on disk, more than M shards gone, and SIGKILL in the middle of a PUT."""

import hashlib
import http.client
import os
import re
import urllib.parse

import pytest
from botocore.exceptions import ClientError

import helpers
from helpers import wait_for

pytestmark = pytest.mark.fault
MiB = 1 << 20


def locate(app, bucket, key) -> list[dict]:
    return app.cli("locate", bucket, key, json_output=True)


def flip_byte(path, offset_fraction=0.5):
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(int(size * offset_fraction))
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x20]))


def metric(app, name) -> float:
    status, body = helpers.http_get(app.host, app.port, "/metrics")
    m = re.search(rb"^%s(?:\{[^}]*\})? ([0-9.e+-]+)$" % name.encode(), body, re.M)
    return float(m.group(1)) if m else 0.0


def test_m_shards_lost_or_corrupt_get_exact_bytes_and_repair(appliance, bucket):
    s3 = appliance.boto3_client()
    data = os.urandom(9 * MiB + 123)
    s3.put_object(Bucket=bucket, Key="victim", Body=data)
    (extent,) = locate(appliance, bucket, "victim")
    shards = extent["shards"]
    os.unlink(shards[0]["path"])          # a lost data shard
    flip_byte(shards[2]["path"])           # a silently corrupted data shard

    got = s3.get_object(Bucket=bucket, Key="victim")["Body"].read()
    assert got == data

    # the read queued both shards for repair; the background worker rewrites them
    wait_for(lambda: appliance.fsck("--verify")["clean"], what="repair of both shards")
    assert os.path.exists(shards[0]["path"])
    assert metric(appliance, "appliance_repaired_shards_total") >= 2
    wait_for(lambda: metric(appliance, "appliance_repair_backlog") == 0, what="empty backlog")
    status = appliance.cli("repair", json_output=True)
    assert status["backlog"] == 0
    # repaired shards carry the data: lose two *other* shards and read again
    os.unlink(shards[1]["path"])
    os.unlink(shards[3]["path"])
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="victim", Range="bytes=5000000-5000099")[
        "Body"].read() == data[5000000:5000100]


def test_more_than_m_shards_lost_fails_with_5xx_never_wrong_bytes(appliance, bucket):
    s3 = appliance.boto3_client()
    data = os.urandom(3 * MiB)
    s3.put_object(Bucket=bucket, Key="doomed", Body=data)
    (extent,) = locate(appliance, bucket, "doomed")
    os.unlink(extent["shards"][0]["path"])
    os.unlink(extent["shards"][4]["path"])
    flip_byte(extent["shards"][1]["path"], 0.9)

    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="doomed")["Body"].read()
    status = err.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert 500 <= status < 600, err.value.response
    assert err.value.response["Error"]["Message"]
    # the server is still healthy for everything else
    s3.put_object(Bucket=bucket, Key="fine", Body=b"still works")
    assert s3.get_object(Bucket=bucket, Key="fine")["Body"].read() == b"still works"


def _put_and_die(app, url: str, total: int, kill_after: int, piece: bytes) -> None:
    """Stream a PUT of `total` bytes to a presigned URL; SIGKILL the appliance once
    `kill_after` bytes are sent (kill_after == total: after the last byte, before the answer)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("PUT", u.path + "?" + u.query, skip_accept_encoding=True)
    conn.putheader("Content-Length", str(total))
    conn.endheaders()
    sent = 0
    try:
        while sent < total:
            n = min(len(piece), total - sent)
            conn.send(piece[:n])
            sent += n
            if sent >= kill_after:
                app.kill()
                break
    except OSError:
        app.kill()
    finally:
        conn.close()


@pytest.mark.parametrize("kill_fraction", [0.3, 1.0])
def test_sigkill_during_put_keeps_old_or_new_and_leaves_no_orphans(appliance_factory,
                                                                   kill_fraction):
    app = appliance_factory()
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="crash")
    old = os.urandom(6 * MiB)
    s3.put_object(Bucket="crash", Key="k", Body=old)
    piece = os.urandom(MiB)
    total = 64 * MiB
    new_digest = hashlib.sha256()
    for _ in range(total // MiB):
        new_digest.update(piece)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "crash", "Key": "k"},
                                    ExpiresIn=600)
    _put_and_die(app, url, total, int(total * kill_fraction), piece)
    assert not app.running

    app.start()
    s3 = app.boto3_client()
    body = s3.get_object(Bucket="crash", Key="k")["Body"].read()
    assert body == old or hashlib.sha256(body).digest() == new_digest.digest()
    wait_for(lambda: metric(app, "appliance_gc_backlog") == 0 and app.fsck()["clean"]
               and app.fsck()["pending"] == 0, what="cleanup after the crash")
    report = app.fsck("--verify")
    assert report["orphans"] == [] and report["missing"] == [] and report["corrupt"] == []


def test_sigkill_during_multipart_upload_then_abort_leaves_nothing(appliance_factory):
    app = appliance_factory()
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="mpu")
    up = s3.create_multipart_upload(Bucket="mpu", Key="big")
    s3.upload_part(Bucket="mpu", Key="big", UploadId=up["UploadId"], PartNumber=1,
                   Body=os.urandom(5 * MiB))
    url = s3.generate_presigned_url(
        "upload_part", Params={"Bucket": "mpu", "Key": "big", "UploadId": up["UploadId"],
                               "PartNumber": 2}, ExpiresIn=600)
    _put_and_die(app, url, 32 * MiB, 16 * MiB, os.urandom(MiB))
    app.start()
    s3 = app.boto3_client()
    parts = s3.list_parts(Bucket="mpu", Key="big", UploadId=up["UploadId"]).get("Parts", [])
    assert [p["PartNumber"] for p in parts] == [1]
    s3.abort_multipart_upload(Bucket="mpu", Key="big", UploadId=up["UploadId"])
    wait_for(lambda: metric(app, "appliance_gc_backlog") == 0 and app.fsck()["shards"] == 0,
               what="all shards collected")
    assert app.fsck()["clean"]
