"""The pass-through receive buffer makes h11 parse exactly as its own buffer does: the same
events from the same bytes however the socket splits them (pipelined requests, fixed-length
and chunked bodies), and whole-read bodies come back as the very bytes object read."""

import h11
import h11._connection
import hypothesis.strategies as st
from h11._receivebuffer import ReceiveBuffer
from hypothesis import given, settings

from appliance.s3.h11_buffer import PassThroughReceiveBuffer


def request_bytes(body: bytes, chunked: bool, n: int) -> bytes:
    head = f"PUT /b/k{n} HTTP/1.1\r\nHost: x\r\n"
    if not chunked:
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    out = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
    for i in range(0, len(body), 7000):
        piece = body[i:i + 7000]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def server_connection(buffer_class) -> h11.Connection:
    """A server-side h11 connection whose receive buffer is a ``buffer_class``."""
    saved = h11._connection.ReceiveBuffer
    h11._connection.ReceiveBuffer = buffer_class
    try:
        return h11.Connection(h11.SERVER)
    finally:
        h11._connection.ReceiveBuffer = saved


def parse(buffer_class, pieces: list[bytes]) -> list:
    conn = server_connection(buffer_class)
    events = []
    for piece in pieces + [b""]:
        conn.receive_data(piece)
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                break
            if isinstance(ev, h11.Request):
                events.append(("req", ev.target, tuple(ev.headers)))
            elif isinstance(ev, h11.Data):
                events.append(("data", bytes(ev.data)))
            elif isinstance(ev, h11.EndOfMessage):
                events.append(("end",))
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif isinstance(ev, h11.ConnectionClosed):
                events.append(("closed",))
                return merge_data(events)
    return merge_data(events)


def merge_data(events: list) -> list:
    """Data events joined per message: how a body is split into events may differ."""
    out = []
    for ev in events:
        if ev[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + ev[1])
        else:
            out.append(ev)
    return out


@settings(max_examples=80, deadline=None)
@given(bodies=st.lists(st.tuples(st.binary(min_size=0, max_size=30000), st.booleans()),
                       min_size=1, max_size=4),
       cuts=st.lists(st.integers(1, 40000), min_size=0, max_size=12))
def test_same_events_as_h11s_own_buffer(bodies, cuts):
    stream = b"".join(request_bytes(b, c, n) for n, (b, c) in enumerate(bodies))
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    pieces = [stream[a:b] for a, b in zip(points, points[1:]) if b > a]
    assert parse(PassThroughReceiveBuffer, pieces) == parse(ReceiveBuffer, pieces)


def test_whole_read_body_is_passed_through_uncopied():
    conn = server_connection(PassThroughReceiveBuffer)
    body = bytes(range(256)) * 4096
    conn.receive_data(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % (2 * len(body)))
    assert isinstance(conn.next_event(), h11.Request)
    assert conn.next_event() is h11.NEED_DATA
    conn.receive_data(body)
    ev = conn.next_event()
    assert isinstance(ev, h11.Data) and ev.data is body
