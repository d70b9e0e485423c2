"""aws-cli (Debian's awscli 2.9, /usr/bin/aws, with its own bundled botocore) against the gateway.

Not the PATH `aws`: on these machines that is a pyenv shim (aws-cli v1 on another Python).
aws-cli 2.9 predates default request checksums; it signs payloads over plain HTTP and switches
to multipart above 8 MiB (8 MiB parts).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import pytest

import helpers
from helpers import MiB

pytestmark = pytest.mark.clients

AWS = helpers.find_tool("aws", "/usr/bin/aws", env_var="APPLIANCE_TEST_AWS")
CURL = helpers.find_tool("curl", "/usr/bin/curl")
ODD_KEY = "a b+c%d~e/../f ü.txt"
LEADING_SLASH_KEY = "/leading/slash.txt"


@pytest.fixture(scope="module", autouse=True)
def _tools():
    assert AWS, "aws-cli not found (Debian package awscli): run dev/setup"
    assert CURL, "curl not found: run dev/setup"


def aws(app, *args, check=True, timeout=600):
    return helpers.run([AWS, "--endpoint-url", app.endpoint, *args], env=app.env(), check=check, timeout=timeout)


def aws_json(app, *args):
    return json.loads(aws(app, *args, "--output", "json").stdout or "{}")


def curl(*args, check=True):
    # --path-as-is: curl would otherwise squash "/../" in the URL (S3 keys are literal).
    return helpers.run([CURL, "-sS", "--path-as-is", "--noproxy", "*", *args], check=check, timeout=300)


def ls_recursive(app, url) -> dict[str, int]:
    """{key: size} from `aws s3 ls --recursive` (lines: DATE TIME SIZE KEY)."""
    out = aws(app, "s3", "ls", "--recursive", url).stdout
    got = {}
    for line in out.splitlines():
        m = re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +(\d+) (.*)$", line)
        assert m, f"unexpected ls line: {line!r}"
        got[m.group(2)] = int(m.group(1))
    return got


def test_mb_ls_rb(appliance):
    name = helpers.unique_bucket_name("awscli-mb")
    out = aws(appliance, "s3", "mb", f"s3://{name}").stdout
    assert f"make_bucket: {name}" in out
    assert re.search(rf"^\S+ \S+ {re.escape(name)}$", aws(appliance, "s3", "ls").stdout, re.M)
    assert aws(appliance, "s3", "ls", f"s3://{name}").stdout == ""
    out = aws(appliance, "s3", "rb", f"s3://{name}").stdout
    assert f"remove_bucket: {name}" in out
    proc = aws(appliance, "s3", "ls", f"s3://{name}", check=False)
    assert proc.returncode != 0 and "NoSuchBucket" in proc.stderr, helpers.describe(proc)


def test_rb_non_empty_and_force(appliance, tmp_path):
    name = helpers.unique_bucket_name("awscli-rb")
    aws(appliance, "s3", "mb", f"s3://{name}")
    f = tmp_path / "f.txt"
    f.write_text("content")
    aws(appliance, "s3", "cp", f, f"s3://{name}/a/f.txt")
    proc = aws(appliance, "s3", "rb", f"s3://{name}", check=False)
    assert proc.returncode != 0 and "BucketNotEmpty" in proc.stderr, helpers.describe(proc)
    out = aws(appliance, "s3", "rb", "--force", f"s3://{name}").stdout
    assert f"delete: s3://{name}/a/f.txt" in out and f"remove_bucket: {name}" in out
    assert name not in aws(appliance, "s3", "ls").stdout


def test_cp_100mib_multipart_round_trip(appliance, bucket, big_file, tmp_path):
    path, digest = big_file
    aws(appliance, "s3", "cp", "--only-show-errors", path, f"s3://{bucket}/big/file.bin")
    head = aws_json(appliance, "s3api", "head-object", "--bucket", bucket, "--key", "big/file.bin")
    assert head["ContentLength"] == path.stat().st_size
    # aws-cli 2.9: 8 MiB parts -> 13 parts for 100 MiB; multipart ETags end in -<parts>.
    assert head["ETag"].endswith('-13"'), head["ETag"]
    out = tmp_path / "down.bin"
    aws(appliance, "s3", "cp", "--only-show-errors", f"s3://{bucket}/big/file.bin", out)
    assert helpers.sha256_file(out) == digest
    # And through stdout ("-"), a single streamed GET.
    proc = helpers.run(
        ["bash", "-c", 'set -o pipefail; "$0" --endpoint-url "$1" s3 cp "s3://$2/big/file.bin" - | sha256sum', AWS, appliance.endpoint, bucket],
        env=appliance.env(),
    )
    assert proc.stdout.split()[0] == digest


def test_sync_both_ways(appliance, bucket, tmp_path):
    src = tmp_path / "src"
    # A 9 MiB file goes multipart in aws-cli (threshold 8 MiB).
    expected = helpers.make_tree(src, extra=[("big/nine-mib.bin", 9 * MiB + 1)])
    # Files older than their upload: a second sync must then find nothing to do (aws-cli
    # compares size and mtime against LastModified, which S3 reports to the second).
    helpers.set_mtimes(src, time.time() - 3600)
    url = f"s3://{bucket}/tree/"
    out = aws(appliance, "s3", "sync", "--no-progress", src, url).stdout
    assert out.count("upload: ") == len(expected), out
    helpers.assert_same_tree(expected, helpers.bucket_digest(appliance.boto3_client(), bucket, "tree/"), "bucket")
    assert aws(appliance, "s3", "sync", "--no-progress", src, url).stdout == ""

    dst = tmp_path / "dst"
    out = aws(appliance, "s3", "sync", "--no-progress", url, dst).stdout
    assert out.count("download: ") == len(expected), out
    helpers.assert_same_tree(expected, helpers.tree_digest(dst), "downloaded")
    assert aws(appliance, "s3", "sync", "--no-progress", url, dst).stdout == ""

    # Changes: one file removed, one grown; sync --delete mirrors them.
    (src / "small.txt").unlink()
    del expected["small.txt"]
    expected["dir/a.txt"] = helpers.write_random_file(src / "dir/a.txt", 5000)
    out = aws(appliance, "s3", "sync", "--no-progress", "--delete", src, url).stdout
    assert f"delete: {url}small.txt" in out, out
    assert re.search(rf"^upload: \S*dir/a\.txt to {re.escape(url)}dir/a\.txt$", out, re.M), out
    assert len(out.splitlines()) == 2, out
    helpers.assert_same_tree(expected, helpers.bucket_digest(appliance.boto3_client(), bucket, "tree/"), "bucket")


def test_ls(appliance, bucket):
    s3 = appliance.boto3_client()
    for key, size in {"ls/a.txt": 3, "ls/sub/b.txt": 30, "ls/sub/deeper/c.txt": 300, "other": 1}.items():
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)
    assert ls_recursive(appliance, f"s3://{bucket}/ls/") == {"ls/a.txt": 3, "ls/sub/b.txt": 30, "ls/sub/deeper/c.txt": 300}
    assert ls_recursive(appliance, f"s3://{bucket}")["other"] == 1
    out = aws(appliance, "s3", "ls", f"s3://{bucket}/ls/").stdout.splitlines()
    assert any(re.match(r"^\s+PRE sub/$", line) for line in out), out
    assert any(line.endswith(" 3 a.txt") for line in out), out
    out = aws(appliance, "s3", "ls", "--recursive", "--summarize", f"s3://{bucket}/ls/").stdout
    assert "Total Objects: 3" in out and "Total Size: 333" in out, out


def test_s3api_put_get_range(appliance, bucket, tmp_path):
    data = os.urandom(4096)
    body = tmp_path / "body.bin"
    body.write_bytes(data)
    put = aws_json(
        appliance, "s3api", "put-object", "--bucket", bucket, "--key", "api/obj",
        "--body", body, "--content-type", "application/x-api", "--metadata", "owner=tests,n=1",
    )
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    out = tmp_path / "range.bin"
    got = aws_json(appliance, "s3api", "get-object", "--bucket", bucket, "--key", "api/obj", "--range", "bytes=100-199", out)
    assert got["ContentRange"] == "bytes 100-199/4096"
    assert got["ContentLength"] == 100
    assert out.read_bytes() == data[100:200]
    got = aws_json(appliance, "s3api", "get-object", "--bucket", bucket, "--key", "api/obj", "--range", "bytes=-96", out)
    assert got["ContentRange"] == "bytes 4000-4095/4096" and out.read_bytes() == data[-96:]
    head = aws_json(appliance, "s3api", "head-object", "--bucket", bucket, "--key", "api/obj")
    assert head["Metadata"] == {"owner": "tests", "n": "1"} and head["ContentType"] == "application/x-api"
    listed = aws_json(appliance, "s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "api/")
    assert [o["Key"] for o in listed["Contents"]] == ["api/obj"]
    proc = aws(appliance, "s3api", "get-object", "--bucket", bucket, "--key", "api/obj", "--range", "bytes=5000-6000", out, check=False)
    assert proc.returncode != 0 and "InvalidRange" in proc.stderr, helpers.describe(proc)


def test_presign_get_with_curl(appliance, bucket, tmp_path):
    data = os.urandom(3 * MiB + 11)
    s3 = appliance.boto3_client()
    for key in ("pre/plain.bin", ODD_KEY):
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        url = aws(appliance, "s3", "presign", f"s3://{bucket}/{key}", "--expires-in", "300").stdout.strip()
        assert url.startswith(f"{appliance.endpoint}/{bucket}/") and "X-Amz-Signature=" in url, url
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url, url
        out = tmp_path / "got.bin"
        curl("-f", "-o", out, url)
        assert out.read_bytes() == data, key
    # Tampering with the signature or the path is refused.
    proc = curl("-o", "/dev/null", "-w", "%{http_code}", url.replace("X-Amz-Signature=", "X-Amz-Signature=00"), check=False)
    assert proc.stdout == "403", helpers.describe(proc)
    other = url.replace(f"/{bucket}/", f"/{bucket}/x", 1)
    proc = curl("-o", "/dev/null", "-w", "%{http_code}", other, check=False)
    assert proc.stdout == "403", helpers.describe(proc)


def test_presign_expired(appliance, bucket):
    appliance.boto3_client().put_object(Bucket=bucket, Key="exp", Body=b"x")
    url = aws(appliance, "s3", "presign", f"s3://{bucket}/exp", "--expires-in", "1").stdout.strip()
    time.sleep(2.5)
    proc = curl("-w", "\n%{http_code}", url, check=False)
    assert proc.stdout.rstrip().endswith("403"), helpers.describe(proc)
    assert "AccessDenied" in proc.stdout, proc.stdout


def test_presigned_put_with_curl(appliance, bucket, tmp_path):
    s3 = appliance.boto3_client()
    src = tmp_path / "upload.bin"
    digest = helpers.write_random_file(src, 2 * MiB + 5)  # large enough for Expect: 100-continue
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pput/a b.bin"}, ExpiresIn=300)
    curl("-f", "-T", src, url)
    got = s3.get_object(Bucket=bucket, Key="pput/a b.bin")["Body"].read()
    assert helpers.sha256_bytes(got) == digest
    # A signed Content-Type must be sent as signed.
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "pput/typed", "ContentType": "application/x-typed"}, ExpiresIn=300
    )
    curl("-f", "-T", src, "-H", "Content-Type: application/x-typed", url)
    assert s3.head_object(Bucket=bucket, Key="pput/typed")["ContentType"] == "application/x-typed"
    proc = curl("-o", "/dev/null", "-w", "%{http_code}", "-T", src, "-H", "Content-Type: text/other", url, check=False)
    assert proc.stdout == "403", helpers.describe(proc)


def test_unusual_keys(appliance, bucket, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("unusual key\n")
    for key in (ODD_KEY, LEADING_SLASH_KEY):
        aws(appliance, "s3", "cp", src, f"s3://{bucket}/{key}")  # s3://bucket//leading/...
    s3 = appliance.boto3_client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == sorted([ODD_KEY, LEADING_SLASH_KEY])
    listed = ls_recursive(appliance, f"s3://{bucket}")
    assert set(listed) == {ODD_KEY, LEADING_SLASH_KEY}, listed
    for i, key in enumerate((ODD_KEY, LEADING_SLASH_KEY)):
        out = tmp_path / f"out{i}"
        aws(appliance, "s3", "cp", f"s3://{bucket}/{key}", out)
        assert out.read_text() == "unusual key\n"
        head = aws_json(appliance, "s3api", "head-object", "--bucket", bucket, "--key", key)
        assert head["ContentLength"] == len("unusual key\n")
    aws(appliance, "s3", "rm", f"s3://{bucket}/{ODD_KEY}")
    aws(appliance, "s3", "rm", f"s3://{bucket}/{LEADING_SLASH_KEY}")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
