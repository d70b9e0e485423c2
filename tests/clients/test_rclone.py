"""rclone (Debian's 1.60, aws-sdk-go v1) against the gateway, with the remote defined only by
RCLONE_CONFIG_APPL_* variables (type s3, provider Other, path style) and an empty config file.

rclone uploads multipart above --s3-upload-cutoff (200 MiB by default; lowered here) and stores
the MD5 of multipart uploads in X-Amz-Meta-Md5chksum so that `rclone check` can compare hashes.
"""

from __future__ import annotations

import re

import pytest

import helpers
from helpers import MiB

pytestmark = pytest.mark.clients

RCLONE = helpers.find_tool("rclone", "/usr/bin/rclone", env_var="APPLIANCE_TEST_RCLONE")
# Fail instead of retrying so gateway errors are seen; multipart from 10 MiB in 5 MiB parts.
COMMON = ["--retries", "1", "--low-level-retries", "1", "--s3-upload-cutoff", "10M", "--s3-chunk-size", "5M"]


@pytest.fixture(scope="module")
def renv(appliance, tmp_path_factory):
    assert RCLONE, "rclone not found: run dev/setup"
    cfg = tmp_path_factory.mktemp("rclone") / "rclone.conf"
    return helpers.rclone_env(appliance.endpoint, appliance.access_key, appliance.secret_key, cfg)


def rclone(env, *args, check=True, timeout=600):
    return helpers.run([RCLONE, *args, *COMMON], env=env, check=check, timeout=timeout)


def test_mkdir_lsd_rmdir(renv, appliance):
    name = helpers.unique_bucket_name("rclone")
    rclone(renv, "mkdir", f"appl:{name}")
    assert re.search(rf"\s{re.escape(name)}$", rclone(renv, "lsd", "appl:").stdout, re.M)
    appliance.boto3_client().head_bucket(Bucket=name)
    rclone(renv, "rmdir", f"appl:{name}")
    assert name not in rclone(renv, "lsd", "appl:").stdout


def test_copy_check_copy_back(renv, appliance, bucket, tmp_path):
    src = tmp_path / "src"
    expected = helpers.make_tree(src, extra=[("big/twelve-mib.bin", 12 * MiB + 7)])
    remote = f"appl:{bucket}/tree"
    rclone(renv, "copy", src, remote)
    helpers.assert_same_tree(expected, helpers.bucket_digest(appliance.boto3_client(), bucket, "tree/"), "bucket")

    proc = rclone(renv, "check", src, remote)
    log = proc.stderr
    assert "0 differences found" in log, helpers.describe(proc)
    assert f"{len(expected)} matching files" in log, helpers.describe(proc)
    assert "could not be checked" not in log, helpers.describe(proc)  # every MD5 available

    listed = rclone(renv, "lsf", "-R", "--files-only", remote).stdout.splitlines()
    assert sorted(listed) == sorted(expected)

    dst = tmp_path / "dst"
    rclone(renv, "copy", remote, dst)
    helpers.assert_same_tree(expected, helpers.tree_digest(dst), "copied back")

    # A changed file is reported by check, and fixed by a second copy.
    expected["dir/a.txt"] = helpers.write_random_file(src / "dir/a.txt", 11)
    proc = rclone(renv, "check", src, remote, check=False)
    assert proc.returncode != 0 and "1 differences found" in proc.stderr, helpers.describe(proc)
    rclone(renv, "copy", src, remote)
    proc = rclone(renv, "check", src, remote)
    assert "0 differences found" in proc.stderr, helpers.describe(proc)
