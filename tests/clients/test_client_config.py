"""How each real client is configured by the harness, checked without a gateway: the clients talk
to a recording HTTP server that answers everything with an S3 error, and we look at what they
sent (path-style address, Host, SigV4 for us-east-1, checksum behaviour). Also unit tests of the
harness's own parsing. None of this starts the appliance.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.parse
import zlib
import base64

import pytest

import helpers

AK, SK = "AKTESTCONFIG00000000", "secret/with+chars-and_more0123456789abcd"


class FakeApp(helpers.Appliance):
    """An Appliance object pointed at a recording server (never started)."""

    def __init__(self, root, rec):
        super().__init__(root, port=rec.port)
        self.access_key, self.secret_key = AK, SK


# ------------------------------------------------------------------------ harness unit tests


def test_parse_credentials(tmp_path):
    p = tmp_path / "credentials"
    p.write_text("[default]\naws_access_key_id = AKX\naws_secret_access_key = s/e+c=r%et\n")
    assert helpers.parse_credentials(p) == ("AKX", "s/e+c=r%et")
    p.write_text("# comment\n[other]\naws_access_key_id=A\naws_secret_access_key=B\n[default]\naws_access_key_id=C\naws_secret_access_key=D\n")
    assert helpers.parse_credentials(p) == ("C", "D")
    for bad in ("", "[default]\naws_access_key_id = A\n", "[other]\naws_access_key_id=A\naws_secret_access_key=B\n", "garbage"):
        p.write_text(bad)
        with pytest.raises(ValueError):
            helpers.parse_credentials(p)


def test_unique_bucket_names():
    names = {helpers.unique_bucket_name("Test_Some::Thing[param-1]" * 3) for _ in range(100)}
    assert len(names) == 100
    for n in names:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", n), n


def test_env_isolation(tmp_path):
    with helpers.RecordingServer() as rec:
        app = FakeApp(tmp_path, rec)
        env = app.env()
    assert env["AWS_ACCESS_KEY_ID"] == AK and env["AWS_SECRET_ACCESS_KEY"] == SK
    assert env["AWS_DEFAULT_REGION"] == "us-east-1" and env["AWS_EC2_METADATA_DISABLED"] == "true"
    home_aws = os.path.expanduser("~/.aws")
    for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        assert env[var].startswith(str(tmp_path)) and not env[var].startswith(home_aws)
        assert os.path.exists(env[var])
    assert "AWS_PROFILE" not in env and "AWS_CA_BUNDLE" not in env
    assert "127.0.0.1" in env["NO_PROXY"]
    assert helpers.parse_credentials(env["AWS_SHARED_CREDENTIALS_FILE"]) == (AK, SK)
    # The test process itself does not see the user's AWS configuration either.
    assert os.environ["AWS_CONFIG_FILE"] != os.path.join(home_aws, "config")
    assert "AWS_PROFILE" not in os.environ


def test_appliance_start_failure_reports_stderr(tmp_path, monkeypatch):
    fake = tmp_path / "fake-appliance"
    fake.write_text("#!/bin/sh\necho 'boom: cannot open data dir' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("APPLIANCE_BIN", str(fake))
    app = helpers.Appliance(tmp_path / "a")
    with pytest.raises(helpers.ApplianceError) as ei:
        app.start(timeout=10)
    assert "exited with code 3" in str(ei.value) and "boom: cannot open data dir" in str(ei.value)


def test_appliance_lifecycle_with_stand_in(tmp_path, monkeypatch):
    """start/stop/kill/start against a stand-in that behaves like `appliance up`."""
    fake = tmp_path / "fake-appliance"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import http.server, os, signal, sys\n"
        "a = sys.argv[1:]\n"
        "assert a[0] == 'up', a\n"
        "d = a[a.index('--data-dir') + 1]; host, port = a[a.index('--s3') + 1].rsplit(':', 1)\n"
        "c = os.path.join(d, 'credentials')\n"
        "if not os.path.exists(c):\n"
        "    fd = os.open(c, os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "    os.write(fd, b'[default]\\naws_access_key_id = AKSTANDIN\\naws_secret_access_key = sek/ret\\n')\n"
        "    print('credentials printed once', flush=True)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if self.path == '/health' else 404); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "http.server.HTTPServer((host, int(port)), H).serve_forever()\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("APPLIANCE_BIN", str(fake))
    app = helpers.Appliance(tmp_path / "a").start()
    try:
        assert (app.access_key, app.secret_key) == ("AKSTANDIN", "sek/ret")
        assert app.endpoint == f"http://127.0.0.1:{app.port}"
        assert helpers.http_get("127.0.0.1", app.port, "/health")[0] == 200
        port = app.port
        assert app.stop() == 0 and not app.running
        app.start()
        assert app.port == port and app.starts == 2
        assert app.kill() == -9
        app.start()
        assert helpers.http_get("127.0.0.1", app.port, "/health")[0] == 200
        assert (app.log_dir / "stdout.log").read_text().count("credentials printed once") == 1
    finally:
        app.stop()


# ----------------------------------------------------------------- clients vs recording server


def assert_path_style(req, bucket, rec):
    assert req.path.startswith(f"/{bucket}"), f"not path-style: {req.method} {req.path}"
    assert req.headers["host"] == rec.hostport, req.headers["host"]


@pytest.mark.clients
def test_boto3_modern_sends_checksums(tmp_path):
    with helpers.RecordingServer() as rec:
        for trailer in (False, True):
            c = helpers.make_boto3_client(rec.endpoint, AK, SK, trailer_checksums=trailer)
            with pytest.raises(Exception):
                c.put_object(Bucket="bkt", Key="k", Body=b"hello world")
        header_req, trailer_req = rec.requests
    for r in (header_req, trailer_req):
        assert r.method == "PUT"
        assert_path_style(r, "bkt", rec)
        helpers.assert_sigv4(r, AK)
    crc = base64.b64encode(zlib.crc32(b"hello world").to_bytes(4, "big")).decode()
    # Plain HTTP: checksum header, signed payload.
    assert header_req.headers["x-amz-checksum-crc32"] == crc
    assert re.fullmatch(r"[0-9a-f]{64}", header_req.headers["x-amz-content-sha256"])
    assert header_req.body == b"hello world"
    # As over HTTPS: aws-chunked body with the checksum in a trailer.
    h = trailer_req.headers
    assert h["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert h["content-encoding"] == "aws-chunked"
    assert h["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert h["x-amz-decoded-content-length"] == "11"
    assert h.get("transfer-encoding") == "chunked"
    assert trailer_req.body == b"b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:" + crc.encode() + b"\r\n\r\n"


@pytest.mark.clients
def test_boto3_legacy_sends_no_checksums(tmp_path):
    assert (helpers.LEGACY_BOTO3_DIR / "boto3").is_dir(), "run dev/setup"
    script = (
        "import sys, boto3, botocore.config as bc\n"
        "assert boto3.__version__ < '1.36', boto3.__version__\n"
        "c = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],"
        " region_name='us-east-1', config=bc.Config(signature_version='s3v4', s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))\n"
        "for call in (lambda: c.put_object(Bucket='bkt', Key='k', Body=b'hello'),"
        " lambda: c.delete_objects(Bucket='bkt', Delete={'Objects': [{'Key': 'k'}]})):\n"
        "    try: call()\n"
        "    except c.exceptions.ClientError: pass\n"
        "print(boto3.__version__)\n"
    )
    with helpers.RecordingServer() as rec:
        env = helpers.clean_env()
        env.update(PYTHONPATH=str(helpers.LEGACY_BOTO3_DIR), AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        proc = helpers.run([sys.executable, "-c", script, rec.endpoint, AK, SK], env=env)
    assert proc.stdout.strip().startswith("1.35.")
    put, post = rec.requests
    for r in (put, post):
        helpers.assert_sigv4(r, AK)
        assert not [h for h in r.headers if h.startswith("x-amz-checksum") or h == "x-amz-sdk-checksum-algorithm"], r.headers
    assert put.body == b"hello"
    assert "content-md5" in put.headers  # pre-1.36 botocore adds Content-MD5 to PutObject itself
    assert post.path.startswith("/bkt?delete") and "content-md5" in post.headers


@pytest.mark.clients
def test_awscli_configuration(tmp_path):
    aws = helpers.find_tool("aws", "/usr/bin/aws", env_var="APPLIANCE_TEST_AWS")
    assert aws, "aws-cli not found: run dev/setup"
    assert helpers.run([aws, "--version"]).stdout.startswith("aws-cli/2."), "expected Debian's aws-cli v2"
    with helpers.RecordingServer() as rec:
        app = FakeApp(tmp_path, rec)
        proc = helpers.run([aws, "--endpoint-url", rec.endpoint, "s3", "ls", "s3://bkt/pre/"], env=app.env(), check=False)
        assert proc.returncode != 0 and "AccessDenied" in proc.stderr, helpers.describe(proc)
        url = helpers.run([aws, "--endpoint-url", rec.endpoint, "s3", "presign", "s3://bkt/a b", "--expires-in", "60"], env=app.env()).stdout.strip()
    (req,) = rec.requests  # no retries
    assert req.method == "GET"
    assert_path_style(req, "bkt", rec)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
    assert q.get("list-type") == ["2"] and q.get("prefix") == ["pre/"], req.path
    helpers.assert_sigv4(req, AK)
    assert req.headers["user-agent"].startswith("aws-cli/2.")
    assert url.startswith(f"{rec.endpoint}/bkt/a%20b?"), url
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert q["X-Amz-Credential"][0].startswith(f"{AK}/") and q["X-Amz-Credential"][0].endswith("/us-east-1/s3/aws4_request")


@pytest.mark.clients
def test_boto3_presigned_urls_are_path_style_sigv4(tmp_path):
    c = helpers.make_boto3_client("http://127.0.0.1:9", AK, SK)
    url = c.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "a b/c"}, ExpiresIn=60)
    parts = urllib.parse.urlsplit(url)
    assert parts.netloc == "127.0.0.1:9" and parts.path == "/bkt/a%20b/c"
    q = urllib.parse.parse_qs(parts.query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-SignedHeaders"] == ["host"]
    assert not [k for k in q if "checksum" in k.lower()], "presigned PUT must not require a checksum"


@pytest.mark.clients
def test_s3cmd_configuration(tmp_path):
    s3cmd = helpers.find_tool("s3cmd", "/usr/bin/s3cmd")
    assert s3cmd, "s3cmd not found: run dev/setup"
    with helpers.RecordingServer() as rec:
        cfg = tmp_path / "s3cfg"
        cfg.write_text(helpers.s3cmd_config(rec.hostport, AK, SK))
        proc = helpers.run([s3cmd, "-c", cfg, "ls", "s3://bkt/pre/"], env=helpers.clean_env(), check=False)
    assert proc.returncode != 0, helpers.describe(proc)
    assert rec.requests, helpers.describe(proc)
    for req in rec.requests:
        assert_path_style(req, "bkt", rec)
        helpers.assert_sigv4(req, AK)


@pytest.mark.clients
def test_rclone_configuration(tmp_path):
    rclone = helpers.find_tool("rclone", "/usr/bin/rclone")
    assert rclone, "rclone not found: run dev/setup"
    with helpers.RecordingServer() as rec:
        env = helpers.rclone_env(rec.endpoint, AK, SK, tmp_path / "rclone.conf")
        proc = helpers.run([rclone, "lsf", "appl:bkt/pre", "--retries", "1", "--low-level-retries", "1"], env=env, check=False)
    assert proc.returncode != 0, helpers.describe(proc)
    assert rec.requests, helpers.describe(proc)
    for req in rec.requests:
        assert_path_style(req, "bkt", rec)
        helpers.assert_sigv4(req, AK)
    assert (tmp_path / "rclone.conf").read_text() == ""  # the remote lives in the environment


@pytest.mark.clients
def test_s3fs_configuration(tmp_path):
    s3fs = helpers.find_tool("s3fs", "/usr/bin/s3fs")
    assert s3fs, "s3fs not found: run dev/setup"
    ok, why = helpers.fuse_usable()
    if not ok:
        pytest.skip(why)
    pw = helpers.write_s3fs_passwd(tmp_path / "passwd", AK, SK)
    assert oct(pw.stat().st_mode & 0o777) == "0o600"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with helpers.RecordingServer() as rec:
        app = FakeApp(tmp_path, rec)
        proc = subprocess.Popen(helpers.s3fs_command(s3fs, app.endpoint, "bkt", mnt, pw), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=helpers.clean_env())
        try:
            helpers.wait_for(lambda: rec.requests, 30, what="s3fs's first request")
            time.sleep(0.5)
        finally:
            if os.path.ismount(mnt):
                subprocess.run(["umount", str(mnt)], capture_output=True)
            proc.kill()
            proc.communicate()
    for req in rec.requests:  # all SigV4 (no fallback to V2 after the 403), all path-style
        assert_path_style(req, "bkt", rec)
        helpers.assert_sigv4(req, AK)
