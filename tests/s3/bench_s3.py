"""Rough single-stream PUT/GET throughput of the gateway (not a test; run by hand):

    .venv/bin/python tests/s3/bench_s3.py [SIZE_MIB]

Starts the same server as the tests (hypercorn + S3App over SqliteMeta and an ec:4+2 store on
six directories of one disk) and times: boto3 put_object/get_object (boto3 signs the payload
SHA-256 over http and adds a CRC32, so the client burns CPU too), and a raw http.client PUT with
UNSIGNED-PAYLOAD and a GET (the gateway's own cost: MD5 + erasure coding + disk writes).
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3kit import RawClient, S3Server  # noqa: E402

MiB = 1 << 20


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    if os.environ.get("BENCH_USER_ONLY"):
        return int(fields[11]) / os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, size: int, put: float, get: float, put_cpu: float, get_cpu: float):
    mib = size / MiB
    print(f"{name:6} PUT {size / put / 1e6:5.0f} MB/s ({put_cpu * 1000 / mib:4.2f} server CPU "
          f"ms/MiB)   GET {size / get / 1e6:5.0f} MB/s ({get_cpu * 1000 / mib:4.2f} ms/MiB)")


def main() -> None:
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 else 1024 * MiB
    data = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="s3bench-", dir=os.environ.get("BENCH_DIR")) as d:
        server = S3Server(Path(d)).start()
        try:
            c = server.client(read_timeout=600)
            c.create_bucket(Bucket="bench")
            pid = server.proc.pid
            c0, t = cpu_seconds(pid), time.perf_counter()
            c.put_object(Bucket="bench", Key="boto3", Body=data)
            put, put_cpu = time.perf_counter() - t, cpu_seconds(pid) - c0
            c0, t = cpu_seconds(pid), time.perf_counter()
            body = c.get_object(Bucket="bench", Key="boto3")["Body"]
            n = 0
            while chunk := body.read(8 * MiB):
                n += len(chunk)
            get, get_cpu = time.perf_counter() - t, cpu_seconds(pid) - c0
            assert n == size
            report("boto3", size, put, get, put_cpu, get_cpu)

            raw = RawClient(server)
            hdrs = raw.sign("PUT", "/bench/raw", payload_hash="UNSIGNED-PAYLOAD")
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
            c0, t = cpu_seconds(pid), time.perf_counter()
            conn.putrequest("PUT", "/bench/raw", skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            view = memoryview(data)
            for i in range(0, size, 4 * MiB):
                conn.send(view[i:i + 4 * MiB])
            r = conn.getresponse()
            r.read()
            put, put_cpu = time.perf_counter() - t, cpu_seconds(pid) - c0
            assert r.status == 200, r.status
            hdrs = raw.sign("GET", "/bench/raw")
            c0, t = cpu_seconds(pid), time.perf_counter()
            conn.putrequest("GET", "/bench/raw", skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            r = conn.getresponse()
            buf = bytearray(8 * MiB)
            n = 0
            while k := r.readinto(buf):
                n += k
            get, get_cpu = time.perf_counter() - t, cpu_seconds(pid) - c0
            assert n == size
            report("raw", size, put, get, put_cpu, get_cpu)
            c.delete_object(Bucket="bench", Key="boto3")
            c.delete_object(Bucket="bench", Key="raw")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
