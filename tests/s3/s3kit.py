"""Fixtures for the S3 gateway protocol tests: a real hypercorn server process running S3App
over a real metadata store and shard store, driven by boto3 and by raw HTTP.

    s3                session-scoped server (S3Server): .endpoint, .creds, .client(user)
    s3c               boto3 client of user root (path style)
    bucket            a fresh bucket owned by root (emptied and removed afterwards)
    raw               RawClient: botocore-signed requests sent with http.client, so a test
                      can tamper with anything after signing
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824",
              "MALLOC_TOP_PAD_": "268435456"}


class S3Server:
    """One server process; ``creds[user] = (akid, secret)`` for users root and other."""

    def __init__(self, data_dir: Path, domain: str | None = None, body_timeout: float = 60,
                 extra_args: list[str] = ()):
        self.data_dir = data_dir
        self.host = "127.0.0.1"
        self.domain = domain
        self.body_timeout = body_timeout
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "server.log"

    def start(self) -> S3Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        cmd = [PYTHON, str(HERE / "s3server.py"), str(self.data_dir / "data"),
               "--fd", str(sock.fileno()), "--body-timeout", str(self.body_timeout)]
        if self.domain:
            cmd += ["--domain", self.domain]
        cmd += self.extra_args
        env = {**os.environ, **MALLOC_ENV, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     pass_fds=[sock.fileno()], env=env, cwd=str(ROOT))
        sock.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"server did not start:\n{self.log_tail()}")
        self.creds = {u: tuple(v) for u, v in json.loads(line).items()}
        return self

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, user: str = "root", *, retries: int = 1, **cfg):
        akid, secret = self.creds[user]
        endpoint = cfg.pop("endpoint_url", self.endpoint)
        config = botocore.config.Config(
            s3={"addressing_style": cfg.pop("addressing_style", "path")},
            retries={"max_attempts": retries, "mode": "standard"},
            connect_timeout=5, read_timeout=cfg.pop("read_timeout", 60), **cfg)
        return boto3.session.Session().client(
            "s3", endpoint_url=endpoint,
            aws_access_key_id=akid, aws_secret_access_key=secret,
            region_name="us-east-1", config=config)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3gw")).start()
    yield server
    alive = server.alive()
    server.stop()
    assert alive, f"the server died:\n{server.log_tail()}"


@pytest.fixture
def s3c(s3):
    return s3.client()


def empty_bucket(client, name: str) -> None:
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for o in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=o["Key"])
        for u in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        client.delete_bucket(Bucket=name)
    except client.exceptions.NoSuchBucket:
        pass


@pytest.fixture
def make_s3_bucket(s3):
    made = []

    def make(user: str = "root") -> str:
        name = "t-" + uuid.uuid4().hex[:20]
        s3.client(user).create_bucket(Bucket=name)
        made.append((user, name))
        return name

    yield make
    for user, name in made:
        if s3.alive():
            empty_bucket(s3.client(user), name)


@pytest.fixture
def bucket(make_s3_bucket) -> str:
    return make_s3_bucket()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> str | None:
        import xml.etree.ElementTree as ET
        if not self.body:
            return None
        return ET.fromstring(self.body).findtext("Code")


class _FixedPayloadAuth(botocore.auth.S3SigV4Auth):
    """botocore's signer, signing a given x-amz-content-sha256 value (e.g. STREAMING-*)."""

    def __init__(self, credentials, service, region, payload_hash):
        super().__init__(credentials, service, region)
        self._payload_hash = payload_hash

    def payload(self, request):
        return self._payload_hash


class RawClient:
    """Sign with botocore's SigV4 signer, send with http.client (exact bytes control)."""

    def __init__(self, server: S3Server, user: str = "root"):
        self.server = server
        akid, secret = server.creds[user]
        self.credentials = botocore.credentials.Credentials(akid, secret)

    def sign(self, method: str, path: str, *, query: str = "", headers: dict | None = None,
             body: bytes = b"", payload_hash: str | None = None) -> dict[str, str]:
        """Headers (incl. Authorization) for the request; ``path`` is the raw wire path."""
        url = self.server.endpoint + path + ("?" + query if query else "")
        req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body,
                                             headers=dict(headers or {}))
        payload = payload_hash or hashlib.sha256(body).hexdigest()
        _FixedPayloadAuth(self.credentials, "s3", "us-east-1", payload).add_auth(req)
        return dict(req.headers.items())

    def request(self, method: str, path: str, *, query: str = "", headers: dict | None = None,
                body: bytes = b"", sign: bool = True, payload_hash: str | None = None,
                send_body: bytes | None = None, timeout: float = 30) -> RawResponse:
        """Send a (signed) request. ``send_body``: bytes actually sent (to tamper with the
        body after signing); headers are sent exactly as returned by :meth:`sign`."""
        hdrs = self.sign(method, path, query=query, headers=headers, body=body,
                         payload_hash=payload_hash) if sign else dict(headers or {})
        data = body if send_body is None else send_body
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        try:
            conn.putrequest(method, path + ("?" + query if query else ""), skip_host=True,
                            skip_accept_encoding=True)
            if not any(k.lower() == "host" for k in hdrs):
                conn.putheader("Host", f"127.0.0.1:{self.server.port}")
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs) \
                    and (data or method in ("PUT", "POST")):
                conn.putheader("Content-Length", str(len(data)))
            conn.endheaders()
            if data:
                conn.send(data)
            r = conn.getresponse()
            return RawResponse(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()


@pytest.fixture
def raw(s3) -> RawClient:
    return RawClient(s3)


def stored_sids(server: S3Server) -> set[str]:
    """Stripe-set ids that have committed shard files on the server's disks."""
    out = set()
    for f in (server.data_dir / "data").glob("disk*/shards/*/*"):
        out.add(f.name.rsplit(".", 1)[0])
    return out


def meta_keys(server: S3Server, prefix: bytes) -> list[tuple[bytes, bytes]]:
    import sqlite3
    db = sqlite3.connect(f"file:{server.data_dir / 'data' / 'meta.db'}?mode=ro", uri=True)
    try:
        hi = prefix[:-1] + bytes([prefix[-1] + 1])
        return db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ?",
                          (prefix, hi)).fetchall()
    finally:
        db.close()


def referenced_sids(server: S3Server) -> set[str]:
    """Stripe-set ids referenced by object records and uploaded parts."""
    out = set()
    for _, v in meta_keys(server, b"o/"):
        out |= {e["sid"] for e in json.loads(v)["extents"] if "sid" in e}
    for _, v in meta_keys(server, b"p/"):
        e = json.loads(v)["extent"]
        if "sid" in e:
            out.add(e["sid"])
    return out


def assert_no_leaks(server: S3Server, timeout: float = 10) -> None:
    """Once garbage collection caught up: no pending writes, and exactly the referenced stripe
    sets have shards on disk (a failed request left nothing behind)."""
    def clean():
        return (not meta_keys(server, b"w/") and not meta_keys(server, b"g/")
                and stored_sids(server) == referenced_sids(server))
    assert wait_until(clean, timeout), (
        f"pending={len(meta_keys(server, b'w/'))} gc={len(meta_keys(server, b'g/'))} "
        f"unreferenced={stored_sids(server) - referenced_sids(server)} "
        f"missing={referenced_sids(server) - stored_sids(server)}")


def quote_key(key: str) -> str:
    return urllib.parse.quote(key, safe="/~")


def wait_until(pred, timeout: float = 5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


sys.path.insert(0, str(HERE))
