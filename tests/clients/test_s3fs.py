"""s3fs-fuse (Debian's 1.90, libfuse2 with fuse3's fusermount) mounting a bucket of the gateway.

s3fs keeps plain objects (one per file, "dir/" marker objects for directories it creates) and
POSIX attributes in x-amz-meta-mode/-uid/-gid/-mtime; renames and chmod are server-side copies
(x-amz-metadata-directive: REPLACE). It uploads multipart above 25 MB (10 MB parts).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from helpers import MiB

pytestmark = pytest.mark.clients

S3FS = helpers.find_tool("s3fs", "/usr/bin/s3fs", env_var="APPLIANCE_TEST_S3FS")


@pytest.fixture(scope="module", autouse=True)
def _fuse():
    ok, why = helpers.fuse_usable()
    if not ok:
        pytest.skip(f"FUSE unusable here: {why}")
    assert S3FS, "s3fs not found (Debian package s3fs): run dev/setup"


@pytest.fixture(scope="module")
def passwd(appliance, tmp_path_factory):
    return helpers.write_s3fs_passwd(
        tmp_path_factory.mktemp("s3fs") / "passwd", appliance.access_key, appliance.secret_key
    )


@contextlib.contextmanager
def mounted(app, bucket: str, mountpoint: Path, passwd: Path, log: Path):
    mountpoint.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            helpers.s3fs_command(S3FS, app.endpoint, bucket, mountpoint, passwd),
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=helpers.clean_env(),
        )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"s3fs did not mount (exit {proc.poll()}):\n{helpers._tail(log.read_bytes())}\n{app.logs()}",
                    pytrace=False,
                )
            time.sleep(0.1)
        yield mountpoint
    finally:
        if os.path.ismount(mountpoint):
            if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
                subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], capture_output=True)
        try:
            proc.wait(60)  # s3fs exits once unmounted, after flushing what it still holds
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def diff_r(a: Path, b: Path):
    proc = subprocess.run(["diff", "-r", str(a), str(b)], capture_output=True, text=True)
    assert proc.returncode == 0, f"diff -r {a} {b}:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"


def test_copy_tree_through_mount(appliance, bucket, passwd, tmp_path):
    s3 = appliance.boto3_client()
    src = tmp_path / "src"
    expected = helpers.make_tree(src, extra=[("big/twenty-six-mib.bin", 26 * MiB + 3)])
    log = tmp_path / "s3fs.log"
    mnt = tmp_path / "mnt"
    with mounted(appliance, bucket, mnt, passwd, log):
        helpers.run(["cp", "-r", src, mnt / "tree"])
        diff_r(src, mnt / "tree")
    # After unmounting: everything is in the bucket as plain objects.
    helpers.assert_same_tree(expected, helpers.bucket_digest(s3, bucket, "tree/"), "bucket")
    head = s3.head_object(Bucket=bucket, Key="tree/small.txt")
    assert "mode" in head["Metadata"], head["Metadata"]  # s3fs's POSIX attributes survive

    # Objects written through S3 show up in a fresh mount (no s3fs cache), directories implied.
    s3.put_object(Bucket=bucket, Key="from-s3/nested/obj.txt", Body=b"written with boto3")
    with mounted(appliance, bucket, tmp_path / "mnt2", passwd, log) as m2:
        diff_r(src, m2 / "tree")
        assert (m2 / "from-s3/nested/obj.txt").read_bytes() == b"written with boto3"
        assert sorted(os.listdir(m2 / "from-s3")) == ["nested"]
        st = (m2 / "tree/big/twenty-six-mib.bin").stat()
        assert st.st_size == 26 * MiB + 3


def test_posix_operations_through_mount(appliance, bucket, passwd, tmp_path):
    s3 = appliance.boto3_client()
    log = tmp_path / "s3fs.log"
    with mounted(appliance, bucket, tmp_path / "mnt", passwd, log) as m:
        (m / "d").mkdir()
        (m / "d/file.txt").write_text("one\n")
        with open(m / "d/file.txt", "a") as f:  # append: s3fs re-uploads the object
            f.write("two\n")
        os.rename(m / "d/file.txt", m / "d/renamed.txt")  # server-side copy + delete
        os.chmod(m / "d/renamed.txt", 0o640)  # copy onto itself with new metadata
        (m / "d/gone.txt").write_text("x")
        os.unlink(m / "d/gone.txt")
        (m / "empty-dir").mkdir()
        (m / "empty-dir").rmdir()
        assert sorted(os.listdir(m / "d")) == ["renamed.txt"]
        assert (m / "d/renamed.txt").read_text() == "one\ntwo\n"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert keys == ["d/", "d/renamed.txt"], keys
    head = s3.head_object(Bucket=bucket, Key="d/renamed.txt")
    assert s3.get_object(Bucket=bucket, Key="d/renamed.txt")["Body"].read() == b"one\ntwo\n"
    assert int(head["Metadata"]["mode"]) & 0o7777 == 0o640, head["Metadata"]
