"""A 5 GiB object (S3's single-PUT maximum) through a running appliance, streamed both ways:
the server's memory stays bounded, the bytes come back exact, and a small ranged GET reads only
the segment it needs."""

import http.client
import os
import re
import urllib.parse

import helpers

MiB = 1 << 20
SIZE = 5 << 30
RSS_LIMIT = 768 * MiB
"""Peak resident memory allowed to the appliance with two gateway processes, all processes
together: ~7x smaller than the object. Each further gateway may add an idle process's worth
(GATEWAY_IDLE_RSS); no single process may come near the object's size either."""
GATEWAY_IDLE_RSS = 64 * MiB
PROCESS_RSS_LIMIT = 512 * MiB


def piece(block: bytes, i: int) -> bytes:
    # Every MiB differs (its index up front), so a misplaced segment cannot go unnoticed.
    return i.to_bytes(8, "big") + block[8:]


def peak_rss(pid: int) -> list[int]:
    """Peak RSS of ``pid`` and of each of its children (the node and its gateway processes)."""
    with open(f"/proc/{pid}/status") as f:
        own = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [own] + [rss for child in f.read().split() for rss in peak_rss(int(child))]


def shard_reads(app) -> float:
    _, body = helpers.http_get(app.host, app.port, "/metrics")
    return sum(float(v) for v in re.findall(
        rb'^appliance_shard_ops_total\{[^}]*op="read"[^}]*\} ([0-9.e+]+)$', body, re.M))


def test_5gib_object_streams_in_bounded_memory(appliance, bucket):
    s3 = appliance.boto3_client()
    block = os.urandom(MiB)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "huge"},
                                    ExpiresIn=3600)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.putrequest("PUT", f"{u.path}?{u.query}", skip_accept_encoding=True)
    conn.putheader("Content-Length", str(SIZE))
    conn.endheaders()
    for i in range(SIZE // MiB):
        conn.send(piece(block, i))
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    conn.close()

    head = s3.head_object(Bucket=bucket, Key="huge")
    assert head["ContentLength"] == SIZE

    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "huge"},
                                    ExpiresIn=3600)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.request("GET", f"{u.path}?{u.query}")
    resp = conn.getresponse()
    assert resp.status == 200
    buf = bytearray(MiB)
    view = memoryview(buf)
    for i in range(SIZE // MiB):
        got = 0
        while got < MiB:
            n = resp.readinto(view[got:])
            assert n, f"body ended early in MiB {i}"
            got += n
        assert buf == piece(block, i), f"MiB {i} differs"
    assert resp.read() == b""
    conn.close()

    peaks = peak_rss(appliance.proc.pid)
    gateways = len(peaks) - 1
    assert max(peaks) < PROCESS_RSS_LIMIT, [p // MiB for p in peaks]
    assert sum(peaks) < RSS_LIMIT + max(0, gateways - 2) * GATEWAY_IDLE_RSS, \
        [p // MiB for p in peaks]

    # 100 bytes from the middle of the last segments: one segment, K=4 data-shard reads.
    before = shard_reads(appliance)
    start = SIZE - 3 * MiB + 12345
    got = s3.get_object(Bucket=bucket, Key="huge", Range=f"bytes={start}-{start + 99}")
    i, off = divmod(start, MiB)
    assert got["Body"].read() == piece(block, i)[off:off + 100]
    assert shard_reads(appliance) - before == 4
    s3.delete_object(Bucket=bucket, Key="huge")
