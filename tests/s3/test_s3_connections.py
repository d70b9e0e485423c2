"""Connection-level behaviour of the gateway's HTTP/1.1 server, seen from a raw TCP client:
keep-alive connections reused and closed when idle, small responses sent in one piece, and
large ones queued a send buffer at a time."""

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


def server_side_queue(server_port: int, client_port: int) -> int | None:
    """Bytes the server's end of a loopback connection has queued and the client has not
    acknowledged (``tx_queue`` in /proc/net/tcp: write_seq - snd_una), or None if not found."""
    want = f"0100007F:{server_port:04X} 0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if " ".join(fields[1:3]) == want:
                return int(fields[4].split(":")[0], 16)
    return None


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


def test_large_response_fills_the_send_buffer(s3c, bucket, raw):
    """While a client is not reading, the server queues a send buffer's worth of a large
    body, not 16 KiB of it (trio's default TCP_NOTSENT_LOWAT, which woke the gateway every few
    hundred KiB of a GET), and the body still arrives whole and exact."""
    body = hashlib.sha256(b"fill").digest() * (256 << 10)  # 8 MiB
    s3c.put_object(Bucket=bucket, Key="fill", Body=body)
    sock = socket.socket()
    # A small receive buffer: the client's window closes quickly, so what the server holds
    # beyond it is what its socket lets it queue unsent.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.connect(("127.0.0.1", raw.server.port))
    try:
        path = f"/{bucket}/fill"
        head = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{raw.server.port}"]
        head += [f"{k}: {v}" for k, v in raw.sign("GET", path).items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        client_port = sock.getsockname()[1]
        queued, deadline = 0, time.monotonic() + 10
        while queued < (1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
            queued = server_side_queue(raw.server.port, client_port) or 0
        assert queued >= 1 << 20, f"server queued only {queued} bytes"
        sock.settimeout(30)
        r = http.client.HTTPResponse(sock)
        r.begin()
        assert (r.status, r.read()) == (200, body)
    finally:
        sock.close()
