"""Connection-level behaviour of the gateway's HTTP/1.1 server, seen from a raw TCP client:
keep-alive connections reused and closed when idle, and small responses sent in one piece."""

from __future__ import annotations

import hashlib
import http.client
import socket
import struct
import time

TCPI_DATA_SEGS_IN = 152
"""Offset of ``tcpi_data_segs_in`` (u32) in Linux's ``struct tcp_info`` (linux/tcp.h, since
4.6): segments received that carried data."""
KEEP_ALIVE_S = 5
"""hypercorn's default keep-alive timeout, which the test server (s3server.py) keeps."""


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0]


class KeepAliveConnection:
    """One client connection over which signed requests are sent one after another."""

    def __init__(self, raw):
        self.raw = raw
        self.conn = http.client.HTTPConnection("127.0.0.1", raw.server.port, timeout=30)
        self.conn.connect()
        self.sock = self.conn.sock

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        self.conn.putheader("Host", f"127.0.0.1:{self.raw.server.port}")
        for k, v in self.raw.sign("GET", path).items():
            self.conn.putheader(k, v)
        self.conn.endheaders()
        r = self.conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self.conn.close()


def test_small_responses_arrive_as_one_segment(s3c, bucket, raw):
    """Head and body of a small response go out in one write: one TCP segment on loopback,
    so a client is woken once per response, not once for the head and once for the body."""
    small = hashlib.sha256(b"x").digest() * 128  # 4 KiB
    large = bytes(range(256)) * 8192  # 2 MiB: its head is written before it, not copied
    s3c.put_object(Bucket=bucket, Key="small", Body=small)
    s3c.put_object(Bucket=bucket, Key="large", Body=large)
    c = KeepAliveConnection(raw)
    try:
        assert c.get(f"/{bucket}/small") == (200, small)  # warm the connection up
        per_response = []
        for path, want_status in [(f"/{bucket}/small", 200), (f"/{bucket}/absent", 404),
                                  (f"/{bucket}/small", 200), ("/no-such-bucket-x/k", 404)] * 5:
            before = data_segments_in(c.sock)
            status, body = c.get(path)
            assert status == want_status
            if status == 200:
                assert body == small
            per_response.append(data_segments_in(c.sock) - before)
        assert per_response == [1] * len(per_response)
        assert c.get(f"/{bucket}/large") == (200, large)
        assert c.get(f"/{bucket}/small") == (200, small)  # the connection is still in step
    finally:
        c.close()


def test_keep_alive_connection_is_reused_then_closed_when_idle(s3c, bucket, raw):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"v")
    c = KeepAliveConnection(raw)
    try:
        # Busy for longer than the keep-alive timeout: each request restarts the idle clock.
        started = time.monotonic()
        while True:
            assert c.get(f"/{bucket}/k") == (200, b"v")
            idle_from = time.monotonic()
            if idle_from - started > KEEP_ALIVE_S + 2:
                break
            time.sleep(KEEP_ALIVE_S / 4)
        # Idle: the server closes its end once the timeout has passed, not before.
        c.sock.settimeout(KEEP_ALIVE_S * 4)
        assert c.sock.recv(1) == b""
        assert KEEP_ALIVE_S - 0.5 < time.monotonic() - idle_from < KEEP_ALIVE_S * 3
    finally:
        c.close()
