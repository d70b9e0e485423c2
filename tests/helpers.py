"""Test harness: run the real appliance as a subprocess and drive real S3 clients against it.

Used by tests/conftest.py (fixtures) and the test modules (plain functions). Nothing here
imports the appliance package: the appliance is exercised only through its CLI and its S3 port,
as a user would.
"""

from __future__ import annotations

import configparser
import contextlib
import ctypes
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LEGACY_BOTO3_DIR = REPO_ROOT / ".venv-boto3-legacy"
REGION = "us-east-1"

MiB = 1024 * 1024


# --------------------------------------------------------------------------------- processes


class CommandFailed(AssertionError):
    pass


def _tail(text: str | bytes | None, limit: int = 6000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else "...[cut]...\n" + text[-limit:]


def run(
    cmd,
    *,
    env=None,
    cwd=None,
    timeout: float = 300,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a command, capture text output; on failure raise with the command and its output."""
    cmd = [str(c) for c in cmd]
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
        )
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(
            f"timed out after {timeout}s: {cmd}\n--- stdout\n{_tail(e.stdout)}\n"
            f"--- stderr\n{_tail(e.stderr)}"
        ) from None
    if check and proc.returncode != 0:
        raise CommandFailed(describe(proc))
    return proc


def describe(proc: subprocess.CompletedProcess) -> str:
    return (
        f"command {proc.args} exited {proc.returncode}\n"
        f"--- stdout\n{_tail(proc.stdout)}\n--- stderr\n{_tail(proc.stderr)}"
    )


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the test process dies (no orphaned appliances)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def find_tool(name: str, *candidates: str, env_var: str | None = None) -> str | None:
    """Locate a client binary: $env_var, then the given absolute candidates, then PATH.

    Absolute candidates come first on purpose: on these machines PATH starts with pyenv shims
    (a pyenv `aws` is aws-cli v1 on another Python), while the tests mean Debian's packages.
    """
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    return shutil.which(name)


# ----------------------------------------------------------------------------- environment

# Variables that would make a client talk to somewhere else or behave differently from the
# configuration a test gives it.
_SCRUB_PREFIXES = ("AWS_", "BOTO_", "RCLONE_", "S3CMD_", "AWSACCESSKEYID", "AWSSECRETACCESSKEY")
_LOOPBACK = "127.0.0.1,localhost,::1"


def clean_env(base: dict | None = None) -> dict:
    """A copy of the environment without AWS/rclone settings and with loopback never proxied."""
    env = dict(os.environ if base is None else base)
    for k in list(env):
        if k.upper().startswith(_SCRUB_PREFIXES):
            del env[k]
    env["NO_PROXY"] = env["no_proxy"] = _LOOPBACK
    return env


def isolate_process_env(tmpdir: Path) -> None:
    """Make boto3 inside the test process ignore the user's ~/.aws and AWS_* variables."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    cfg = tmpdir / "config"
    creds = tmpdir / "credentials"
    cfg.write_text("")
    creds.write_text("")
    clean = clean_env()
    os.environ.clear()
    os.environ.update(clean)
    os.environ["AWS_CONFIG_FILE"] = str(cfg)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


# ----------------------------------------------------------------------------- credentials


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def parse_credentials(path: Path, profile: str = "default") -> tuple[str, str]:
    """Read an AWS shared-credentials file; returns (access_key_id, secret_access_key)."""
    text = Path(path).read_text()
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read_string(text, source=str(path))
    except configparser.Error as e:
        raise ValueError(f"{path}: not an AWS credentials file: {e}") from None
    if not cp.has_section(profile):
        raise ValueError(f"{path}: no [{profile}] section (has {cp.sections()})")
    sec = cp[profile]
    try:
        ak = sec["aws_access_key_id"].strip()
        sk = sec["aws_secret_access_key"].strip()
    except KeyError as e:
        raise ValueError(f"{path}: [{profile}] lacks {e.args[0]}") from None
    if not ak or not sk:
        raise ValueError(f"{path}: empty key in [{profile}]")
    return ak, sk


def write_aws_files(directory: Path, access_key: str, secret_key: str) -> tuple[Path, Path]:
    """An aws-cli config + credentials pair for this appliance only (never the user's)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config"
    creds = directory / "credentials"
    config.write_text(
        "[default]\n"
        f"region = {REGION}\n"
        "output = json\n"
        "s3 =\n"
        "    addressing_style = path\n"
    )
    creds.write_text(
        f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
    )
    creds.chmod(0o600)
    return config, creds


# ------------------------------------------------------------------------------- appliance


class ApplianceError(RuntimeError):
    pass


def appliance_bin() -> Path:
    if os.environ.get("APPLIANCE_BIN"):
        return Path(os.environ["APPLIANCE_BIN"])
    return REPO_ROOT / ".venv" / "bin" / "appliance"


def http_get(url_host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def flip_byte(path, at: float = 0.5) -> None:
    """Corrupt the file at ``path`` in place: flip a bit of the byte at fraction ``at`` of
    its length (silent damage, as a disk or a stray write does it)."""
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(int(size * at))
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x20]))


def metric_total(app, name: str, **labels) -> float:
    """Sum of the samples of metric ``name`` at ``app``'s /metrics whose labels include
    ``labels`` (0 when there are none)."""
    status, body = http_get(app.host, app.port, "/metrics")
    assert status == 200, (status, body[-2000:])
    total = 0.0
    for line in body.decode().splitlines():
        m = re.match(r"^%s(?:\{([^}]*)\})? ([0-9.e+-]+)$" % re.escape(name), line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


class Appliance:
    """A single-node appliance (`appliance up`) run as a subprocess on a loopback port.

    root/           everything of this instance
      data/         --data-dir (holds `credentials`)
      logs/         stdout.log, stderr.log of every run (appended across restarts)
      aws/          aws-cli config and credentials files for .env()
    """

    host = "127.0.0.1"

    def __init__(self, root: Path, port: int | None = None, extra_args=(), start_timeout=30.0):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.log_dir = self.root / "logs"
        self.aws_dir = self.root / "aws"
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.access_key: str | None = None
        self.secret_key: str | None = None
        self.starts = 0

    # ---- addresses
    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials"

    def command(self) -> list[str]:
        return [
            str(appliance_bin()),
            "up",
            "--data-dir",
            str(self.data_dir),
            "--s3",
            self.hostport,
            *self.extra_args,
        ]

    # ---- lifecycle
    def start(self, timeout: float | None = None) -> "Appliance":
        """Start (or restart) on the same data dir and port; wait for /health == 200."""
        if self.proc is not None and self.proc.poll() is None:
            raise ApplianceError("already running")
        exe = appliance_bin()
        if not os.access(exe, os.X_OK):
            raise ApplianceError(f"{exe} not found: run dev/setup first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        banner = f"\n===== start #{self.starts} {time.strftime('%H:%M:%S')}: {self.command()}\n"
        out = open(self.log_dir / "stdout.log", "ab")
        err = open(self.log_dir / "stderr.log", "ab")
        self._stderr_offset = err.tell() + len(banner.encode())
        self._stdout_offset = out.tell() + len(banner.encode())
        for f in (out, err):
            f.write(banner.encode())
            f.flush()
        env = clean_env()
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.root,
                env=env,
                preexec_fn=_die_with_parent,
            )
        finally:
            out.close()
            err.close()
        self._wait_ready(self.start_timeout if timeout is None else timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ApplianceError(
                    f"appliance exited with code {rc} before becoming healthy\n{self.logs()}"
                )
            try:
                status, body = http_get(self.host, self.port, "/health", timeout=1.0)
                if status == 200:
                    break
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as e:
                last = repr(e)
            if time.monotonic() > deadline:
                self._abort()
                raise ApplianceError(
                    f"GET {self.endpoint}/health did not return 200 within {timeout}s "
                    f"(last: {last})\n{self.logs()}"
                )
            time.sleep(0.1)
        # The credentials file is written before (or as) the S3 port opens; allow a moment.
        while not self.credentials_file.exists():
            if time.monotonic() > deadline:
                self._abort()
                raise ApplianceError(f"{self.credentials_file} missing\n{self.logs()}")
            time.sleep(0.05)
        for _ in range(50):
            try:
                self.access_key, self.secret_key = parse_credentials(self.credentials_file)
                break
            except ValueError:  # being written
                time.sleep(0.1)
        else:
            self.access_key, self.secret_key = parse_credentials(self.credentials_file)
        write_aws_files(self.aws_dir, self.access_key, self.secret_key)

    def _abort(self):
        with contextlib.suppress(Exception):
            self.kill()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise ApplianceError(
                    f"appliance ignored SIGTERM for {timeout}s; killed\n{self.logs()}"
                )
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (a crash) and reap."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return self.proc.returncode

    def restart(self, timeout: float | None = None) -> "Appliance":
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self, limit: int = 6000, current_run_only: bool = True) -> str:
        parts = []
        for name in ("stderr", "stdout"):
            p = self.log_dir / f"{name}.log"
            if not p.exists():
                continue
            data = p.read_bytes()
            if current_run_only:
                data = data[getattr(self, f"_{name}_offset", 0) :]
            parts.append(f"--- appliance {name} ({p})\n{_tail(data, limit)}")
        return "\n".join(parts)

    # ---- clients
    def boto3_client(self, *, trailer_checksums: bool = False, **config_kwargs):
        """A boto3 S3 client: path-style, us-east-1, SigV4, no retries by default.

        trailer_checksums=True makes botocore send the flexible checksum as an aws-chunked
        trailer (Content-Encoding: aws-chunked, x-amz-content-sha256:
        STREAMING-UNSIGNED-PAYLOAD-TRAILER) as it does over HTTPS; over plain HTTP current
        botocore otherwise sends x-amz-checksum-crc32 as a header with a signed payload.
        """
        return make_boto3_client(
            self.endpoint,
            self.access_key,
            self.secret_key,
            trailer_checksums=trailer_checksums,
            **config_kwargs,
        )

    def env(self, extra: dict | None = None) -> dict:
        """Environment for aws-cli (and other AWS-SDK tools) talking to this appliance."""
        config, creds = write_aws_files(self.aws_dir, self.access_key, self.secret_key)
        env = clean_env()
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION=REGION,
            AWS_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=str(config),
            AWS_SHARED_CREDENTIALS_FILE=str(creds),
            AWS_PAGER="",  # aws-cli v2 pipes output through `less` otherwise
            AWS_CLI_AUTO_PROMPT="off",
            AWS_RETRY_MODE="standard",
            AWS_MAX_ATTEMPTS="1",  # make gateway errors visible, not retried away
        )
        if extra:
            env.update(extra)
        return env

    def cli(self, *args, json_output: bool = False, timeout: float = 60):
        """Run `appliance ARGS --data-dir DATA [--json]`; returns parsed JSON or the process."""
        cmd = [str(appliance_bin()), *args, "--data-dir", str(self.data_dir)]
        if json_output:
            cmd.append("--json")
        proc = run(cmd, env=clean_env(), timeout=timeout)
        return json.loads(proc.stdout) if json_output else proc

    def fsck(self, *extra: str) -> dict:
        """The `appliance fsck --json` report (its exit status 1 only says it is not clean)."""
        proc = run([str(appliance_bin()), "fsck", *extra, "--data-dir", str(self.data_dir),
                    "--json"], env=clean_env(), timeout=120, check=False)
        if proc.returncode not in (0, 1):
            raise CommandFailed(describe(proc))
        return json.loads(proc.stdout)

    def create_key(self, user: str | None = None) -> tuple[str, str]:
        """A new user (unless given) and an access key for it: (access_key_id, secret)."""
        if user is None:
            user = "u" + uuid.uuid4().hex[:10]
            self.cli("user", "create", user)
        out = self.cli("key", "create", user, json_output=True)
        return out["access_key_id"], out["secret_access_key"]


def make_boto3_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    trailer_checksums: bool = False,
    **config_kwargs,
):
    import boto3
    from botocore.config import Config

    cfg = dict(
        region_name=REGION,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=10,
        read_timeout=120,
    )
    cfg.update(config_kwargs)
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
    )
    client = session.client("s3", endpoint_url=endpoint, config=Config(**cfg))
    if trailer_checksums:
        client.meta.events.register("before-call.s3", _force_trailer_checksum)
    return client


def _force_trailer_checksum(params, **kwargs):
    algo = params.get("context", {}).get("checksum", {}).get("request_algorithm")
    if isinstance(algo, dict) and algo.get("in") == "header":
        algo["in"] = "trailer"


# ------------------------------------------------------------------------------- buckets


def unique_bucket_name(prefix: str = "t") -> str:
    """A valid, unique S3 bucket name (3-63 chars of a-z 0-9 -)."""
    prefix = "".join(c if c.isalnum() else "-" for c in prefix.lower()).strip("-") or "t"
    return f"{prefix[:40]}-{uuid.uuid4().hex[:16]}"


def empty_bucket(client, bucket: str) -> None:
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for u in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def delete_bucket(client, bucket: str) -> None:
    empty_bucket(client, bucket)
    client.delete_bucket(Bucket=bucket)


# --------------------------------------------------------------------------------- content


def write_random_file(path: Path, size: int, seed: int | None = None) -> str:
    """Write `size` random bytes; returns their sha256 hex."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    rnd = random.Random(seed) if seed is not None else None
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            chunk = rnd.randbytes(n) if rnd else os.urandom(n)
            f.write(chunk)
            h.update(chunk)
            left -= n
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_same_file(a: Path, b: Path) -> None:
    sa, sb = Path(a).stat().st_size, Path(b).stat().st_size
    assert sa == sb, f"{b}: {sb} bytes, expected {sa} (as {a})"
    assert sha256_file(a) == sha256_file(b), f"{b} differs from {a}"


# File names every client must carry through unchanged.
TREE_SPEC: list[tuple[str, int]] = [
    ("empty.txt", 0),
    ("one-byte", 1),
    ("small.txt", 100),
    ("page-4095.bin", 4095),
    ("page-4096.bin", 4096),
    ("odd-65537.bin", 65537),
    ("mib-plus-3.bin", MiB + 3),
    ("dir/a.txt", 10),
    ("dir/sub/b.txt", 2000),
    ("dir/sub/deeper/c.bin", 300_000),
    ("with space/name with space.txt", 33),
    ("unicode/ü-ñ-日本.txt", 44),
    ("chars/plus+sign.txt", 55),
    ("chars/tilde~.txt", 66),
    ("chars/eq=and&amp.txt", 77),
    ("chars/paren(1).txt", 88),
]


def make_tree(root: Path, spec=TREE_SPEC, seed: int = 1234, extra=()) -> dict[str, str]:
    """Create files under root (spec: (relative path, size)); returns {relpath: sha256}."""
    root = Path(root)
    out = {}
    for i, (rel, size) in enumerate(list(spec) + list(extra)):
        out[rel] = write_random_file(root / rel, size, seed=seed + i)
    return out


def tree_digest(root: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every regular file under root."""
    root = Path(root)
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def assert_same_tree(expected: dict[str, str], actual: dict[str, str], what: str = "") -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differ = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    assert not (missing or extra or differ), (
        f"{what} trees differ: missing={missing} extra={extra} content differs={differ}"
    )


def set_mtimes(root: Path, when: float) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.utime(Path(dirpath) / name, (when, when))


def bucket_digest(client, bucket: str, prefix: str = "", skip_dir_markers=True) -> dict[str, str]:
    """{key minus prefix: sha256} of every object under prefix, read back with boto3."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            key = o["Key"]
            if skip_dir_markers and key.endswith("/"):
                continue
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert len(body) == o["Size"], f"{key}: listed {o['Size']} bytes, read {len(body)}"
            out[key[len(prefix) :]] = sha256_bytes(body)
    return out


# ------------------------------------------------------------------- recording fake endpoint


@dataclass
class RecordedRequest:
    method: str
    path: str  # raw request target, as sent
    headers: dict  # lower-case names
    body: bytes = b""  # as sent (HTTP chunked transfer coding removed, aws-chunked kept)


@dataclass
class RecordingServer:
    """A tiny HTTP server that records requests and answers every one with an S3 error.

    Used to check how a client is configured (address style, host, signature version, region)
    without a working gateway.
    """

    status: int = 403
    code: str = "AccessDenied"
    requests: list = field(default_factory=list)

    def __enter__(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    body = self._read_chunked()
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    RecordedRequest(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                payload = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{outer.code}</Code><Message>recording server</Message>"
                    "<RequestId>0</RequestId></Error>"
                ).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-amz-request-id", "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _read_chunked(self) -> bytes:
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # HTTP trailer fields
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"


def assert_sigv4(req: RecordedRequest, access_key: str, region: str = REGION) -> None:
    auth = req.headers.get("authorization", "")
    assert auth.startswith("AWS4-HMAC-SHA256 "), f"not SigV4: {auth!r}"
    assert f"Credential={access_key}/" in auth, auth
    assert f"/{region}/s3/aws4_request" in auth, auth
    assert "x-amz-date" in req.headers
    assert "x-amz-content-sha256" in req.headers


# ------------------------------------------------------------------------ client configs


def s3cmd_config(hostport: str, access_key: str, secret_key: str) -> str:
    """An s3cmd config for a path-style, plain-HTTP, SigV4 endpoint."""
    return (
        "[default]\n"
        f"access_key = {access_key}\n"
        f"secret_key = {secret_key}\n"
        f"host_base = {hostport}\n"
        f"host_bucket = {hostport}\n"  # no %(bucket)s: path-style requests
        "use_https = False\n"
        "signature_v2 = False\n"
        f"bucket_location = {REGION}\n"
        "check_ssl_certificate = False\n"
        "check_ssl_hostname = False\n"
        "guess_mime_type = True\n"
        "proxy_host =\n"
        "proxy_port = 0\n"
        "progress_meter = False\n"
        "socket_timeout = 60\n"
        "multipart_chunk_size_mb = 15\n"
    )


def rclone_env(
    endpoint: str, access_key: str, secret_key: str, config_file: Path, remote: str = "appl"
) -> dict:
    """Environment defining an rclone S3 remote `remote:` (and an empty config file)."""
    Path(config_file).parent.mkdir(parents=True, exist_ok=True)
    Path(config_file).write_text("")
    p = f"RCLONE_CONFIG_{remote.upper()}_"
    env = clean_env()
    env.update(
        {
            "RCLONE_CONFIG": str(config_file),
            p + "TYPE": "s3",
            p + "PROVIDER": "Other",
            p + "ENV_AUTH": "false",
            p + "ACCESS_KEY_ID": access_key,
            p + "SECRET_ACCESS_KEY": secret_key,
            p + "ENDPOINT": endpoint,
            p + "REGION": REGION,
            p + "FORCE_PATH_STYLE": "true",
        }
    )
    return env


def write_s3fs_passwd(path: Path, access_key: str, secret_key: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{access_key}:{secret_key}\n")
    path.chmod(0o600)  # s3fs refuses a passwd file others can read
    return path


def s3fs_command(s3fs: str, endpoint: str, bucket: str, mountpoint: Path, passwd: Path) -> list[str]:
    """The s3fs command line the tests use: foreground, path-style, SigV4 only, few retries."""
    return [
        s3fs, bucket, str(mountpoint),
        "-f",  # foreground: the test owns the process and its log
        "-o", f"url={endpoint}",
        "-o", "use_path_request_style",
        "-o", f"passwd_file={passwd}",
        "-o", "sigv4",  # no silent fallback to SigV2
        "-o", "endpoint=us-east-1",  # the SigV4 region
        "-o", "retries=1",  # gateway errors surface instead of being retried away
        "-o", "dbglevel=info",
    ]


def fuse_usable() -> tuple[bool, str]:
    """Whether this process can open /dev/fuse (mounting needs it)."""
    if not os.path.exists("/dev/fuse"):
        return False, "/dev/fuse does not exist (no FUSE in this kernel/container)"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as e:
        return False, f"/dev/fuse cannot be opened: {e}"
    os.close(fd)
    return True, ""


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

