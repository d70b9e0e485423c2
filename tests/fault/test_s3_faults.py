"""Faults for real, through the S3 interface of a running `appliance up`: shard files deleted
and corrupted on disk, more than M shards gone, and SIGKILL in the middle of a PUT."""

import hashlib
import http.client
import os
import re
import subprocess
import urllib.parse

import pytest
from botocore.exceptions import ClientError

import helpers
from helpers import flip_byte, metric_total, wait_for

pytestmark = pytest.mark.fault
MiB = 1 << 20


def locate(app, bucket, key) -> list[dict]:
    return app.cli("locate", bucket, key, json_output=True)


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
    assert metric_total(appliance, "appliance_repaired_shards_total") >= 2
    wait_for(lambda: metric_total(appliance, "appliance_repair_backlog") == 0, what="empty backlog")
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
    wait_for(lambda: metric_total(app, "appliance_gc_backlog") == 0 and app.fsck()["clean"]
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
    wait_for(lambda: metric_total(app, "appliance_gc_backlog") == 0 and app.fsck()["shards"] == 0,
               what="all shards collected")
    assert app.fsck()["clean"]


def test_a_disk_missing_at_start_is_never_written_in_its_place(appliance_factory):
    """A disk that is not mounted at start (its mount point left empty) is not attached: the
    node serves from the other five, writes nothing in its place, and says so (log, metric,
    fsck). Its shards of new objects wait in the repair queue, and are rebuilt once the disk
    is back; its shards of deleted objects are deleted then."""
    app = appliance_factory()
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="degraded")
    old, new = os.urandom(9 * MiB + 1), os.urandom(7 * MiB + 3)
    s3.put_object(Bucket="degraded", Key="old", Body=old)
    (old_on_d2,) = [s["path"] for s in locate(app, "degraded", "old")[0]["shards"]
                    if s["device"] == "d2"]
    app.stop()
    disk = app.data_dir / "disks" / "disk2"
    away = app.data_dir / "disk2.unmounted"
    disk.rename(away)
    disk.mkdir()  # the empty mount point of a disk that did not mount
    app.start()
    assert "device d2 is unavailable" in app.logs()
    assert metric_total(app, "appliance_device_up", device="d2") == 0
    assert metric_total(app, "appliance_device_up", device="d3") == 1

    s3 = app.boto3_client()
    assert s3.get_object(Bucket="degraded", Key="old")["Body"].read() == old
    s3.put_object(Bucket="degraded", Key="new", Body=new)
    assert s3.get_object(Bucket="degraded", Key="new")["Body"].read() == new
    assert list(disk.iterdir()) == []
    report = app.fsck()
    assert report["unavailable"] == ["d2"] and not report["clean"]
    assert not report["missing"]  # the other devices hold all they should
    fsck = helpers.run([helpers.appliance_bin(), "fsck", "--data-dir", app.data_dir],
                       env=helpers.clean_env(), check=False)
    assert fsck.returncode == 1 and "unavailable device d2" in fsck.stdout
    (extent,) = locate(app, "degraded", "new")
    queued = sum(s["device"] == "d2" for s in extent["shards"])  # 0 or 1 (placement)
    assert app.cli("repair", json_output=True)["backlog"] == queued
    assert not re.search(r"repair of \S+ \[\d+\] failed", app.logs())  # not tried
    s3.delete_object(Bucket="degraded", Key="old")  # its shard on d2 is deleted later
    wait_for(lambda: metric_total(app, "appliance_gc_backlog") == 0, what="GC")
    assert app.fsck()["orphans"] == []

    app.stop()
    disk.rmdir()
    away.rename(disk)
    assert os.path.exists(old_on_d2)
    app.start()
    assert metric_total(app, "appliance_device_up", device="d2") == 1
    wait_for(lambda: app.cli("repair", json_output=True)["backlog"] == 0, what="repair")
    wait_for(lambda: not os.path.exists(old_on_d2), what="the deferred delete")
    assert app.fsck("--verify")["clean"]


def test_disks_mounted_at_each_others_paths_are_not_attached(appliance_factory):
    """Two disks swapped (each mounted at the other's path) are neither used nor written to:
    each one's label names the other device. With 4 of 4+2 left, GETs still return the
    exact bytes; PUTs, which need K+1 shards, fail with a 503."""
    app = appliance_factory()
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="swapped")
    data = os.urandom(5 * MiB)
    s3.put_object(Bucket="swapped", Key="k", Body=data)
    app.stop()
    disks = app.data_dir / "disks"
    before = {p: sorted(p.rglob("*")) for p in (disks / "disk0", disks / "disk1")}
    (disks / "disk0").rename(disks / "swap")
    (disks / "disk1").rename(disks / "disk0")
    (disks / "swap").rename(disks / "disk1")
    app.start()
    for device in ("d0", "d1"):
        assert metric_total(app, "appliance_device_up", device=device) == 0
    s3 = app.boto3_client()
    assert s3.get_object(Bucket="swapped", Key="k")["Body"].read() == data
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="swapped", Key="k2", Body=data)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    after = {p: sorted(p.rglob("*")) for p in (disks / "disk0", disks / "disk1")}
    assert sorted(map(len, after.values())) == sorted(map(len, before.values()))


def test_first_start_refuses_disks_that_are_missing_or_another_nodes(tmp_path, appliance_factory):
    disks = [tmp_path / f"disk{i}" for i in range(6)]
    for d in disks[1:]:
        d.mkdir()

    def up(data_dir):
        return subprocess.run([str(helpers.appliance_bin()), "up", "--data-dir", str(data_dir),
                               "--disks", ",".join(map(str, disks)), "--s3", "127.0.0.1:1"],
                              capture_output=True, text=True, timeout=60)

    out = up(tmp_path / "a")
    assert out.returncode != 0 and f"disk {disks[0]} is not a directory" in out.stderr
    assert list(disks[1].iterdir()) == []  # nothing labelled on the way
    disks[0].mkdir()
    app = appliance_factory(extra_args=["--disks", ",".join(map(str, disks))])
    app.stop()
    out = up(tmp_path / "b")  # another node on the same disks
    assert out.returncode != 0 and "belongs to another appliance" in out.stderr
