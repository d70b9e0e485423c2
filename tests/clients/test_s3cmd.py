"""s3cmd (Debian's 2.3) against the gateway, with a generated config file: path-style
(host_bucket without %(bucket)s), plain HTTP, SigV4. s3cmd uploads multipart above 15 MiB and
keeps the MD5 of multipart uploads in x-amz-meta-s3cmd-attrs for `sync`.
"""

from __future__ import annotations

import hashlib
import re

import pytest

import helpers
from helpers import MiB

pytestmark = pytest.mark.clients

S3CMD = helpers.find_tool("s3cmd", "/usr/bin/s3cmd", env_var="APPLIANCE_TEST_S3CMD")


@pytest.fixture(scope="module")
def s3cmd_cfg(appliance, tmp_path_factory):
    assert S3CMD, "s3cmd not found: run dev/setup"
    path = tmp_path_factory.mktemp("s3cmd") / "s3cfg"
    path.write_text(helpers.s3cmd_config(appliance.hostport, appliance.access_key, appliance.secret_key))
    path.chmod(0o600)
    return path


def s3cmd(cfg, *args, check=True, timeout=600):
    return helpers.run([S3CMD, "-c", cfg, "--no-progress", *args], env=helpers.clean_env(), check=check, timeout=timeout)


def test_basics(appliance, s3cmd_cfg, tmp_path):
    name = helpers.unique_bucket_name("s3cmd")
    out = s3cmd(s3cmd_cfg, "mb", f"s3://{name}").stdout
    assert f"Bucket 's3://{name}/' created" in out
    assert f"s3://{name}" in s3cmd(s3cmd_cfg, "ls").stdout

    small = tmp_path / "small.txt"
    small.write_text("hello s3cmd\n")
    big = tmp_path / "big.bin"
    big_digest = helpers.write_random_file(big, 20 * MiB + 3)  # 2 parts of 15 MiB max
    s3cmd(s3cmd_cfg, "put", small, f"s3://{name}/dir/small.txt")
    s3cmd(s3cmd_cfg, "put", big, f"s3://{name}/dir/big.bin")

    listing = s3cmd(s3cmd_cfg, "ls", f"s3://{name}/dir/").stdout
    sizes = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\S+ \S+ +(\d+) +(s3://\S+)$", listing, re.M)}
    assert sizes == {f"s3://{name}/dir/small.txt": 12, f"s3://{name}/dir/big.bin": 20 * MiB + 3}, listing
    top = s3cmd(s3cmd_cfg, "ls", f"s3://{name}").stdout
    assert re.search(rf"^\s+DIR +s3://{name}/dir/$", top, re.M), top
    assert f"s3://{name}/dir/big.bin" in s3cmd(s3cmd_cfg, "la", "--recursive").stdout

    info = s3cmd(s3cmd_cfg, "info", f"s3://{name}/dir/small.txt").stdout
    assert re.search(r"MD5 sum:\s+" + hashlib.md5(b"hello s3cmd\n").hexdigest(), info), info

    s3cmd(s3cmd_cfg, "get", f"s3://{name}/dir/small.txt", tmp_path / "small.out")
    assert (tmp_path / "small.out").read_text() == "hello s3cmd\n"
    s3cmd(s3cmd_cfg, "get", f"s3://{name}/dir/big.bin", tmp_path / "big.out")
    assert helpers.sha256_file(tmp_path / "big.out") == big_digest

    proc = s3cmd(s3cmd_cfg, "rb", f"s3://{name}", check=False)
    assert proc.returncode != 0 and "BucketNotEmpty" in proc.stdout + proc.stderr, helpers.describe(proc)

    s3cmd(s3cmd_cfg, "del", f"s3://{name}/dir/small.txt")
    assert "small.txt" not in s3cmd(s3cmd_cfg, "ls", f"s3://{name}/dir/").stdout
    s3cmd(s3cmd_cfg, "del", "--recursive", "--force", f"s3://{name}/")
    assert s3cmd(s3cmd_cfg, "ls", "--recursive", f"s3://{name}").stdout.strip() == ""
    out = s3cmd(s3cmd_cfg, "rb", f"s3://{name}").stdout
    assert f"Bucket 's3://{name}/' removed" in out
    assert f"s3://{name}" not in s3cmd(s3cmd_cfg, "ls").stdout


def test_sync_both_ways(appliance, s3cmd_cfg, bucket, tmp_path):
    src = tmp_path / "src"
    expected = helpers.make_tree(src, extra=[("big/sixteen-mib.bin", 16 * MiB + 1)])
    url = f"s3://{bucket}/tree/"
    s3cmd(s3cmd_cfg, "sync", f"{src}/", url)
    helpers.assert_same_tree(expected, helpers.bucket_digest(appliance.boto3_client(), bucket, "tree/"), "bucket")
    # s3cmd compares sizes and MD5s: nothing to upload the second time.
    out = s3cmd(s3cmd_cfg, "sync", f"{src}/", url).stdout
    assert "upload:" not in out, out

    dst = tmp_path / "dst"
    dst.mkdir()
    s3cmd(s3cmd_cfg, "sync", url, f"{dst}/")
    helpers.assert_same_tree(expected, helpers.tree_digest(dst), "downloaded")
    out = s3cmd(s3cmd_cfg, "sync", url, f"{dst}/").stdout
    assert "download:" not in out, out

    (src / "small.txt").unlink()
    del expected["small.txt"]
    expected["dir/a.txt"] = helpers.write_random_file(src / "dir/a.txt", 5000)
    s3cmd(s3cmd_cfg, "sync", "--delete-removed", f"{src}/", url)
    helpers.assert_same_tree(expected, helpers.bucket_digest(appliance.boto3_client(), bucket, "tree/"), "bucket")
