"""Disks that fail, come back late and are replaced, on a running `appliance up`: the node
notices within DISK_CHECK_S, serves degraded meanwhile, and `appliance disk replace` rebuilds
every shard of the device onto the new disk from the others."""

import json
import os
import shutil

import pytest

import helpers
from helpers import metric_total, wait_for

pytestmark = pytest.mark.fault
MiB = 1 << 20


def locate(app, bucket, key) -> list[dict]:
    return app.cli("locate", bucket, key, json_output=True)


def device_up(app, device: str) -> float:
    return metric_total(app, "appliance_device_up", device=device)


def disk_list(app) -> dict[str, dict]:
    return {row["device"]: row for row in app.cli("disk", "list", json_output=True)}


def disk_cli(app, *args):
    return helpers.run([helpers.appliance_bin(), "disk", *args, "--data-dir", app.data_dir],
                       env=helpers.clean_env(), check=False)


def put_objects(s3, bucket: str) -> dict[str, bytes]:
    """Objects of every shape: inline, one segment, many segments, multipart."""
    objects = {"tiny": b"t" * 1000, "one": os.urandom(300_000), "big": os.urandom(9 * MiB + 1)}
    objects.update({f"k{i:02}": os.urandom(64 * 1024 * (i + 1) + i) for i in range(12)})
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    parts = [os.urandom(5 * MiB), os.urandom(2 * MiB + 7)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="multi")
    etags = [s3.upload_part(Bucket=bucket, Key="multi", UploadId=up["UploadId"], PartNumber=n,
                            Body=body)["ETag"] for n, body in enumerate(parts, 1)]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="multi", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    objects["multi"] = b"".join(parts)
    return objects


def assert_all_exact(s3, bucket: str, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key


def assert_exact_without(app, s3, bucket: str, objects: dict[str, bytes],
                         lost: tuple[str, str]) -> None:
    """Delete every shard on the two devices ``lost`` (M of 4+2), then read all back: every
    stripe set has a shard on each of the six disks, so this needs the other four."""
    for key in objects:
        for extent in locate(app, bucket, key):
            for shard in extent["shards"]:
                if shard["device"] in lost:
                    os.unlink(shard["path"])
    assert_all_exact(s3, bucket, objects)


def wait_rebuilt(app, device: str) -> None:
    wait_for(lambda: not disk_list(app)[device]["rebuild"]
             and app.cli("repair", json_output=True)["backlog"] == 0,
             timeout=60, what=f"the rebuild of {device}")
    assert [row["repairs"] for row in disk_list(app).values()] == [0] * 6


def test_a_disk_failed_while_running_is_replaced_and_rebuilt(appliance_factory):
    """The disk under d2 dies and a new, empty one is mounted in its place while the node
    runs. The node detaches d2 (nothing is written on the new disk), serves every object
    degraded, and after `appliance disk replace d2` attaches the new disk and rebuilds all
    of d2's shards: then, with two other disks' shards deleted, every object still reads
    back exactly, from shards only the rebuild can have written."""
    app = appliance_factory()
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="rebuild")
    objects = put_objects(s3, "rebuild")
    disk = app.data_dir / "disks" / "disk2"
    assert device_up(app, "d2") == 1

    shutil.rmtree(disk)  # the disk is gone; a new one is mounted at the same path
    disk.mkdir()
    wait_for(lambda: device_up(app, "d2") == 0, what="d2 detached")
    assert "device d2 detached" in app.logs()
    assert_all_exact(s3, "rebuild", objects)
    objects["during"] = os.urandom(3 * MiB + 5)  # its shard for d2 waits in the repair queue
    s3.put_object(Bucket="rebuild", Key="during", Body=objects["during"])
    assert list(disk.iterdir()) == []
    listed = disk_list(app)
    assert "has no appliance-disk.json" in listed["d2"]["disk"]
    # The queue is all d2's: "during"'s shard and those the degraded reads missed.
    backlog = app.cli("repair", json_output=True)["backlog"]
    assert listed["d2"]["repairs"] == backlog >= 1
    assert [row["repairs"] for device, row in listed.items() if device != "d2"] == [0] * 5

    out = disk_cli(app, "replace", "d2")
    assert out.returncode == 0, helpers.describe(out)
    assert disk_list(app)["d2"]["disk"] == "ok"
    wait_for(lambda: device_up(app, "d2") == 1, what="d2 attached")
    wait_rebuilt(app, "d2")
    # Each of the 17 stripe sets (14 objects, 2 parts, "during") has a shard on every disk.
    assert "device d2: its disk was replaced, 17 shards queued for rebuild" in app.logs()
    report = app.fsck("--verify")
    assert report["clean"], report

    assert_exact_without(app, s3, "rebuild", objects, lost=("d0", "d1"))  # needs d2's shards


def test_a_disk_mounted_late_is_attached_without_a_restart(appliance_factory):
    """A disk that was not mounted when the node started is attached once it is: new
    objects' shards for it, queued meanwhile, are rebuilt onto it."""
    app = appliance_factory()
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="late")
    app.stop()
    disk = app.data_dir / "disks" / "disk3"
    away = app.data_dir / "disk3.unmounted"
    disk.rename(away)
    disk.mkdir()
    app.start()
    assert device_up(app, "d3") == 0
    data = os.urandom(6 * MiB)
    s3.put_object(Bucket="late", Key="k", Body=data)
    assert app.cli("repair", json_output=True)["backlog"] == 1

    disk.rmdir()
    away.rename(disk)  # mounted now
    wait_for(lambda: device_up(app, "d3") == 1, what="d3 attached")
    wait_for(lambda: app.cli("repair", json_output=True)["backlog"] == 0, what="repair")
    assert app.fsck("--verify")["clean"]
    (d3,) = [s for s in locate(app, "late", "k")[0]["shards"] if s["device"] == "d3"]
    assert os.path.getsize(d3["path"]) > 1 * MiB


def test_a_dead_disk_replaced_at_a_new_path_while_stopped(appliance_factory, tmp_path):
    """The node may be stopped: the replacement is recorded (layout, label, rebuild mark) and
    the next start attaches the disk at its new path and rebuilds onto it. The old --disks
    list is refused from then on, with a hint."""
    app = appliance_factory()
    s3 = app.boto3_client()
    s3.create_bucket(Bucket="moved")
    objects = put_objects(s3, "moved")
    app.stop()
    old = app.data_dir / "disks" / "disk4"
    shutil.rmtree(old)  # dead and pulled out
    new = tmp_path / "new-disk"
    (new / "lost+found").mkdir(parents=True)  # a fresh ext4 has one
    out = disk_cli(app, "replace", "d4", "--path", new, "--json")
    assert out.returncode == 0, helpers.describe(out)
    [row] = json.loads(out.stdout)
    assert {k: row[k] for k in ("device", "path", "disk", "rebuild", "repairs")} == {
        "device": "d4", "path": str(new), "disk": "ok", "rebuild": "queued", "repairs": 0}
    assert 0 < row["free_bytes"] <= row["size_bytes"]
    app.start()
    assert device_up(app, "d4") == 1
    wait_rebuilt(app, "d4")
    assert app.fsck("--verify")["clean"]
    assert not old.exists()
    assert_exact_without(app, s3, "moved", objects, lost=("d0", "d5"))  # needs d4's shards


def test_replace_refuses_disks_that_are_not_new_and_changes_nothing(appliance_factory,
                                                                    tmp_path):
    app = appliance_factory()
    layout = (app.data_dir / "appliance.json").read_text()
    labels = {p: p.read_text() for p in app.data_dir.glob("disks/*/appliance-disk.json")}
    full = tmp_path / "full"
    full.mkdir()
    (full / "photo.jpg").write_bytes(b"x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "appliance-disk.json").write_text('{"node_id": "other", "device": "d1"}')
    cases = [
        (["d2"], "is d2's disk and is in place"),
        (["d9"], "no device 'd9'"),
        (["d2", "--path", str(full)], "is not empty (photo.jpg)"),
        (["d2", "--path", str(foreign)], "a disk of another device or node"),
        (["d2", "--path", str(app.data_dir / "disks" / "disk3")], "is the disk of d3"),
        (["d2", "--path", str(tmp_path / "absent")], "is not a directory"),
    ]
    for args, message in cases:
        out = disk_cli(app, "replace", *args)
        assert out.returncode == 1 and message in out.stderr, (args, helpers.describe(out))
    assert (app.data_dir / "appliance.json").read_text() == layout
    assert {p: p.read_text() for p in labels} == labels
    assert not any(row["rebuild"] for row in disk_list(app).values())
    assert all(device_up(app, f"d{i}") == 1 for i in range(6))
