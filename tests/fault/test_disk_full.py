"""Disks that fill up, for real: a running `appliance up` whose disks are a small tmpfs,
filled through S3 until the appliance refuses new data, in two layouts: everything in the data
dir on that filesystem (metadata and the six stand-in disks, the default layout), and six
`--disks` on it with the metadata elsewhere (as with one disk per drive in production). Then
a data dir filled to the last byte by another process."""

import os
import subprocess

import pytest
from botocore.exceptions import ClientError

import helpers
from helpers import metric_total, wait_for

pytestmark = pytest.mark.fault
MiB = 1 << 20
DISK_MIB = 160


@pytest.fixture(params=["data-dir", "disks"])
def small_disk_appliance(request, tmp_path):
    """(appliance, the small filesystem's mount point, True if the metadata is on it too)."""
    yield from _small_disk_appliance(tmp_path, request.param == "data-dir")


@pytest.fixture
def small_data_dir_appliance(tmp_path):
    """(appliance, its data dir's small filesystem): metadata and the six disks on it."""
    for app, small, _ in _small_disk_appliance(tmp_path, shared=True):
        yield app, small


def _small_disk_appliance(tmp_path, shared: bool):
    root = tmp_path / "app"
    small = tmp_path / "small"
    small.mkdir()
    if shared:
        root.mkdir()
        (root / "data").symlink_to(small)
        extra = []
    else:
        disks = [small / f"drive{i}" for i in range(6)]
        extra = ["--disks", ",".join(map(str, disks))]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(small)],
                   check=True)
    try:
        if not shared:
            for d in disks:
                d.mkdir()
        app = helpers.Appliance(root, extra_args=["--workers", "1", *extra])
        try:
            app.start()
            yield app, small, shared
        finally:
            app.stop()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def refused_as_full(e: ClientError) -> bool:
    return (e.response["ResponseMetadata"]["HTTPStatusCode"] == 507
            and e.response["Error"]["Code"] == "StorageFull")


def test_a_full_disk_refuses_new_data_keeps_its_reserve_and_deletes_make_room(
        small_disk_appliance):
    app, small, shared = small_disk_appliance
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="fill")
    stored = {}
    refusal = None
    for i in range(DISK_MIB):  # 1.5 MiB on disk per object (EC 4+2): full long before
        data = os.urandom(MiB)
        try:
            s3.put_object(Bucket="fill", Key=f"obj-{i:03d}", Body=data)
        except ClientError as e:
            refusal = e
            break
        stored[f"obj-{i:03d}"] = data
    assert refusal is not None, "the disk never filled"
    assert refused_as_full(refusal), refusal.response
    assert "Delete objects to make room" in refusal.response["Error"]["Message"]
    assert len(stored) > DISK_MIB // 2 // 1.5, "refused long before the disk was full"
    refused_key = f"obj-{len(stored):03d}"

    # The refusal is the reserve's, not the kernel's ENOSPC: with separate disks the shard
    # servers refused new shards and say why in their failure metric; with the metadata on
    # the full filesystem, the node refused before any shard (and refuses small objects below).
    if not shared:
        assert metric_total(app, "appliance_shard_failures_total", reason="DiskFull") >= 3
    # `appliance disk list` tells the operator which disks are full.
    listed = app.cli("disk", "list", json_output=True)
    assert [row["disk"] for row in listed] == ["full (new shards refused)"] * 6, listed
    assert all(row["free_bytes"] < row["size_bytes"] // 50 for row in listed), listed
    # The refused PUT left nothing: no object, no partial shard file.
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="fill", Key=refused_key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert [p for p in small.glob("**/tmp/*")] == []

    # A small object lives in the metadata: refused when the metadata's disk is the full one,
    # taken when it is not. A new upload likewise.
    tiny = b"x" * 100
    for attempt in (lambda: s3.put_object(Bucket="fill", Key="tiny", Body=tiny),
                    lambda: s3.create_multipart_upload(Bucket="fill", Key="mpu")):
        if shared:
            with pytest.raises(ClientError) as e:
                attempt()
            assert refused_as_full(e.value), e.value.response
        else:
            attempt()
    if not shared:
        stored["tiny"] = tiny

    # Everything stored reads back exactly, and lists.
    for key in list(stored)[::7]:
        assert s3.get_object(Bucket="fill", Key=key)["Body"].read() == stored[key]
    listed = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="fill")
              for o in page.get("Contents", [])]
    assert listed == sorted(stored)

    # Deletes work on the full disk, and once garbage collection has run, space is back.
    victims = list(stored)[: len(stored) // 2]
    out = s3.delete_objects(Bucket="fill", Delete={"Objects": [{"Key": k} for k in victims]})
    assert not out.get("Errors") and len(out["Deleted"]) == len(victims)
    for k in victims:
        del stored[k]
    again = os.urandom(MiB)

    def put_again():
        try:
            s3.put_object(Bucket="fill", Key="after-delete", Body=again)
            return True
        except ClientError as e:
            assert refused_as_full(e), e.response
            return False
    wait_for(put_again, timeout=30, interval=0.5, what="a PUT accepted after the deletes")
    assert s3.get_object(Bucket="fill", Key="after-delete")["Body"].read() == again
    assert [row["disk"] for row in app.cli("disk", "list", json_output=True)] == ["ok"] * 6
    for key in stored:
        assert s3.get_object(Bucket="fill", Key=key)["Body"].read() == stored[key]


def test_a_data_dir_filled_to_the_last_byte_by_another_process_keeps_the_node_up(
        small_data_dir_appliance):
    """Another process fills the data dir's filesystem completely (the reserve too). The node
    stays up: stored objects read back and list, new data gets 507, and deletes go on by
    giving up the metadata's ballast. Filled again to the last byte, deletes wait (503) and
    the background work retries; once the space is freed, everything goes on and the
    ballast is restored. (Its gateways once died of SIGBUS here, writing their mmapped
    metrics files on the full filesystem, and so did their replacements.)"""
    app, small = small_data_dir_appliance
    ballast = app.data_dir / "meta.db.ballast"
    assert ballast.stat().st_size == 8 * MiB
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="fill")
    stored = {f"obj-{i}": os.urandom(MiB) for i in range(3)} | {"tiny": b"hello"}
    for key, data in stored.items():
        s3.put_object(Bucket="fill", Key=key, Body=data)
    # A scrub pass in progress (~4.5 MB of shards at 0.1 MB/s) saves its progress in
    # metadata every 15 s (after each object's shards).
    wait_for(lambda: app.cli("scrub", json_output=True)["last"], what="the first scrub pass")
    app.cli("scrub", "--rate", "0.1")
    app.cli("scrub", "--start")
    wait_for(lambda: app.cli("scrub", json_output=True)["running"], what="a scrub pass")
    fillers = [small / "filler-1", small / "filler-2"]
    subprocess.run(["dd", "if=/dev/zero", f"of={fillers[0]}", "bs=64k"], capture_output=True)
    assert os.statvfs(small).f_bavail == 0

    for key, data in stored.items():  # new metric series too: a first GetObject 200
        assert s3.get_object(Bucket="fill", Key=key)["Body"].read() == data
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="fill")["Contents"]) == \
        sorted(stored)
    for body in (b"x", os.urandom(MiB)):
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="fill", Key="new", Body=body)
        assert refused_as_full(e.value), e.value.response
    assert helpers.http_get(app.host, app.port, "/health")[0] == 200
    assert helpers.http_get(app.host, app.port, "/metrics")[0] == 200

    # A delete commits in the ballast's room; that room is not taken by new data.
    s3.delete_object(Bucket="fill", Key="obj-0")
    del stored["obj-0"]
    assert not ballast.exists() and "gave up the 8 MiB ballast" in app.logs()
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="fill")["Contents"]) == \
        sorted(stored)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="fill", Key="new", Body=b"x")
    assert refused_as_full(e.value), e.value.response

    wait_for(lambda: app.cli("repair", json_output=True)["awaiting_gc"] == 0,
             what="obj-0's shards to be deleted")

    # Filled again, ballast gone: deletes wait, and so does the scrub's progress (it
    # retries; the node stays up).
    subprocess.run(["dd", "if=/dev/zero", f"of={fillers[1]}", "bs=64k"], capture_output=True)
    assert os.statvfs(small).f_bavail == 0
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="fill", Key="obj-1")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    wait_for(lambda: "scrub waits" in app.logs(), timeout=40, what="a scrub save to fail")
    assert app.running and "exited with code" not in app.logs()

    for f in fillers:
        f.unlink()
    s3.put_object(Bucket="fill", Key="new", Body=b"after")
    s3.delete_object(Bucket="fill", Key="obj-1")
    assert s3.get_object(Bucket="fill", Key="new")["Body"].read() == b"after"
    app.cli("scrub", "--rate", "0")
    wait_for(lambda: not app.cli("scrub", json_output=True)["running"], what="the scrub pass")
    assert app.cli("scrub", json_output=True)["last"]["damaged"] == 0

    def ballast_back():  # restored by a commit at least 10 s after the last look
        s3.put_object(Bucket="fill", Key="later", Body=b"x")
        return ballast.exists()

    wait_for(ballast_back, timeout=30, interval=1, what="the ballast to be restored")
    assert ballast.stat().st_size == 8 * MiB
    assert app.running and "exited with code" not in app.logs()
