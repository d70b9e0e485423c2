"""The background scrub, for real, through a running `appliance up`: damage no GET has met
(a flipped byte, a shard file gone, in a finished object and in a multipart upload still in
progress) is found by a scrub pass, repaired, and the data reads back exact; a pass
interrupted by SIGKILL goes on where it was saved after the restart."""

import hashlib
import os

import pytest

import helpers
from helpers import flip_byte, metric_total, wait_for

pytestmark = pytest.mark.fault
MiB = 1 << 20


def shard_paths(app, bucket, key) -> list[str]:
    (extent,) = app.cli("locate", bucket, key, json_output=True)
    return [s["path"] for s in extent["shards"]]


def scrub_status(app) -> dict:
    return app.cli("scrub", json_output=True)


def run_pass(app) -> dict:
    """Ask for a pass and wait for it to finish; returns its counts."""
    before = scrub_status(app)["last"]
    status = app.cli("scrub", "--start", json_output=True)
    assert status["start_requested"] or status["running"]

    def done():
        last = scrub_status(app)["last"]
        return last if last and last != before else None

    return wait_for(done, timeout=60, interval=0.5, what="a scrub pass")


def test_scrub_finds_damage_no_read_met_and_repair_fixes_it(appliance_factory, make_bucket):
    app = appliance_factory()
    # A pass runs at the first start (none ever did): over an empty store, done at once.
    first = wait_for(lambda: scrub_status(app)["last"], interval=0.5,
                     what="the first scrub pass")
    assert first["checked"] == 0 and not scrub_status(app)["running"]

    bucket = make_bucket(app)
    s3 = app.boto3_client()
    data = {"corrupt": os.urandom(5 * MiB + 17), "lost": os.urandom(2 * MiB + 5),
            "whole": os.urandom(3 * MiB)}
    for key, body in data.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    part = os.urandom(5 * MiB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="pending")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="pending", UploadId=upload, PartNumber=1,
                          Body=part)["ETag"]
    # The part is in no object yet, so `locate` cannot name its shards: they are the files
    # of the one stripe set no object uses.
    known = {os.path.basename(p).split(".")[0]
             for key in data for p in shard_paths(app, bucket, key)}
    part_shards = sorted(str(p) for p in app.data_dir.rglob("shards/*/*")
                         if p.name.split(".")[0] not in known)
    assert len(part_shards) == 6

    flip_byte(shard_paths(app, bucket, "corrupt")[1])        # a data shard, mid-file
    os.unlink(shard_paths(app, bucket, "lost")[5])           # a parity shard
    flip_byte(part_shards[0], at=0.9)
    assert not app.fsck("--verify")["clean"]

    counts = run_pass(app)
    assert counts["damaged"] == 3
    assert counts["checked"] == 4 * 6 and counts["skipped"] == 0
    assert counts["bytes"] == 6 * sum(-(-len(b) // 4) for b in [*data.values(), part])
    assert metric_total(app, "appliance_scrub_damaged_shards_total") == 3
    assert metric_total(app, "appliance_scrub_damaged_shards_total", reason="ShardCorrupt") == 2
    assert metric_total(app, "appliance_scrub_damaged_shards_total", reason="ShardNotFound") == 1

    wait_for(lambda: app.fsck("--verify")["clean"], what="repair of the damaged shards")
    # The scrub found them, not a read: no GET has touched the objects yet.
    assert metric_total(app, "appliance_shard_failures_total", op="read") == 0
    for key, body in data.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    s3.complete_multipart_upload(Bucket=bucket, Key="pending", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    got = s3.get_object(Bucket=bucket, Key="pending")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(part).digest()

    again = run_pass(app)  # everything is whole again
    assert again["damaged"] == 0 and again["checked"] == 4 * 6


def test_an_interrupted_pass_goes_on_after_a_restart(appliance_factory, make_bucket):
    app = appliance_factory()
    wait_for(lambda: scrub_status(app)["last"], interval=0.5, what="the first scrub pass")
    bucket = make_bucket(app)
    s3 = app.boto3_client()
    objects = 12
    for n in range(objects):
        s3.put_object(Bucket=bucket, Key=f"k{n:02d}", Body=os.urandom(1 * MiB + 1))
    # ~1.5 MB of shard data per object at 1 MB/s: the pass takes ~18 s, and saves its
    # progress every 10 s.
    app.cli("scrub", "--rate", "1")
    app.cli("scrub", "--start")
    saved = wait_for(lambda: (scrub_status(app)["current"] or {}).get("checked"),
                     timeout=40, interval=0.5, what="saved scrub progress")
    started = scrub_status(app)["current"]["started"]
    app.kill()
    app.restart()
    app.cli("scrub", "--rate", "0")
    last = wait_for(lambda: scrub_status(app)["last"] if scrub_status(app)["last"]["started"]
                    == started else None, timeout=60, interval=0.5,
                    what="the interrupted pass to finish")
    # The same pass, gone on from where it was saved: each shard counted once.
    assert 0 < saved < objects * 6
    assert last["checked"] == objects * 6 and last["damaged"] == 0

    # A rate that is no rate is refused, clearly, and changes nothing.
    for command in ("scrub", "repair"):
        for bad in ("-5", "nan", "fast"):
            proc = helpers.run([helpers.appliance_bin(), command, "--rate", bad,
                                "--data-dir", app.data_dir], env=helpers.clean_env(),
                               check=False)
            assert proc.returncode == 2 and "--rate" in proc.stderr, helpers.describe(proc)
            assert "Traceback" not in proc.stderr
    assert scrub_status(app)["rate_mb_s"] == 0
