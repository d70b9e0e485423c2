"""Admission by memory, seen from S3 clients: a gateway whose request buffers would go past its
budget makes new data requests wait, answers 503 SlowDown (an error the SDKs retry) when no
room frees in time, lets them in as soon as room is given back, and never stores anything for
a request it refused. The server here has a 40 MiB budget and waits 1 s (the node's defaults
are a quarter of RAM and 10 s)."""

from __future__ import annotations

import os
import socket
import threading

import botocore.exceptions
import pytest

from helpers import metric_total
from s3kit import RawClient, S3Server, wait_until

MiB = 1 << 20
BUDGET = 40 * MiB


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("tight"),
                      extra_args=["--memory-budget", str(BUDGET), "--admission-wait", "1"]).start()
    yield server
    alive = server.alive()
    server.stop()
    assert alive, f"the server died:\n{server.log_tail()}"


@pytest.fixture(scope="module")
def big(tight):
    """A 40 MiB object in bucket ``adm``: reading it takes the 32 MiB read window."""
    c = tight.client()
    c.create_bucket(Bucket="adm")
    data = os.urandom(40 * MiB)
    c.put_object(Bucket="adm", Key="big", Body=data)
    return data


def hold_get(server: S3Server, key: str) -> socket.socket:
    """Start a GET of ``adm/key`` and stop reading after the status line: the gateway keeps
    the request, and the read window it reserved, until the socket is closed."""
    headers = RawClient(server).sign("GET", f"/adm/{key}")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", server.port))
    s.sendall((f"GET /adm/{key} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
    assert s.recv(12) == b"HTTP/1.1 200"
    return s


def error_code(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_data_requests_past_the_budget_get_slowdown_and_change_nothing(tight, big):
    c = tight.client()  # no retries: the first answer is what the test sees
    held = hold_get(tight, "big")
    try:
        assert metric_total(tight, "appliance_s3_memory_reserved_bytes") == 32 * MiB
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_object(Bucket="adm", Key="refused", Body=os.urandom(8 * MiB))
        assert error_code(e) == ("SlowDown", 503)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.get_object(Bucket="adm", Key="big")
        assert error_code(e) == ("SlowDown", 503)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.copy_object(Bucket="adm", Key="copy", CopySource={"Bucket": "adm", "Key": "big"})
        assert error_code(e) == ("SlowDown", 503)
        # Requests that hold no data buffers are not held back.
        c.put_object(Bucket="adm", Key="small", Body=b"x" * 1000)
        assert c.get_object(Bucket="adm", Key="small")["Body"].read() == b"x" * 1000
        assert [o["Key"] for o in c.list_objects_v2(Bucket="adm")["Contents"]] == \
            ["big", "small"]
        assert metric_total(tight, "appliance_s3_slowdown_total") >= 3
        # Refused requests are over, not hanging: only the held GET and /metrics are served.
        assert wait_until(lambda: metric_total(tight, "appliance_s3_requests_in_flight") == 2)
    finally:
        held.close()
    # The room is given back when the client goes away.
    assert wait_until(lambda: metric_total(tight, "appliance_s3_memory_reserved_bytes") == 0)
    data = os.urandom(8 * MiB)
    c.put_object(Bucket="adm", Key="refused", Body=data)
    assert c.get_object(Bucket="adm", Key="refused")["Body"].read() == data
    assert c.get_object(Bucket="adm", Key="big")["Body"].read() == big
    c.delete_objects(Bucket="adm", Delete={"Objects": [{"Key": "refused"}, {"Key": "small"}]})


def test_a_waiting_request_goes_in_as_soon_as_room_is_given_back(tight, big):
    held = hold_get(tight, "big")
    data = os.urandom(8 * MiB)
    outcome = []

    def put():
        try:
            tight.client().put_object(Bucket="adm", Key="waited", Body=data)
            outcome.append("stored")
        except botocore.exceptions.ClientError as e:
            outcome.append(e.response["Error"]["Code"])

    t = threading.Thread(target=put)
    t.start()
    try:
        assert wait_until(
            lambda: metric_total(tight, "appliance_s3_requests_waiting_for_memory") == 1)
    finally:
        held.close()
    t.join(30)
    assert outcome == ["stored"]
    assert tight.client().get_object(Bucket="adm", Key="waited")["Body"].read() == data
    assert metric_total(tight, "appliance_s3_requests_waiting_for_memory") == 0
