"""Prometheus metrics of the S3 gateway (default registry, exported at GET /metrics).

- ``appliance_s3_requests_total{op,status}``: requests answered, by AWS operation name and
  HTTP status (``op`` is ``Unknown`` when the request never got past routing).
- ``appliance_s3_request_seconds{op}``: latency histogram, seconds from the first byte of the
  request to the last byte of the response.
- ``appliance_s3_received_bytes_total{op}`` / ``appliance_s3_sent_bytes_total{op}``: body
  bytes read from clients and sent to them.
- ``appliance_s3_requests_in_flight``: requests being served (summed over gateway processes).
- ``appliance_s3_memory_reserved_bytes`` / ``appliance_s3_memory_budget_bytes``: buffer memory
  reserved by the requests being served, and how much they may reserve (appliance.membudget);
  ``appliance_s3_requests_waiting_for_memory``: requests waiting for room.
- ``appliance_s3_slowdown_total``: requests refused with 503 SlowDown because the budget had
  no room for them in time.

A node runs several gateway processes; with PROMETHEUS_MULTIPROC_DIR set (``appliance up``
sets it) each writes its samples there and :func:`exposition` merges them, so any process
answers /metrics for the whole node (prometheus-client's multiprocess mode).
"""

import glob
import os

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

REQUESTS = Counter("appliance_s3_requests_total", "S3 requests by operation and HTTP status",
                   ["op", "status"])
LATENCY = Histogram("appliance_s3_request_seconds", "S3 request latency by operation",
                    ["op"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1, 2.5, 5, 10, 30, 60, 120, 300))
BYTES_IN = Counter("appliance_s3_received_bytes_total", "Request body bytes received", ["op"])
BYTES_OUT = Counter("appliance_s3_sent_bytes_total", "Response body bytes sent", ["op"])
IN_FLIGHT = Gauge("appliance_s3_requests_in_flight", "S3 requests being served",
                  multiprocess_mode="livesum")
MEMORY_RESERVED = Gauge("appliance_s3_memory_reserved_bytes",
                        "Buffer memory reserved by the requests being served",
                        multiprocess_mode="livesum")
MEMORY_BUDGET = Gauge("appliance_s3_memory_budget_bytes",
                      "Buffer memory the requests being served may reserve",
                      multiprocess_mode="livesum")
MEMORY_WAITING = Gauge("appliance_s3_requests_waiting_for_memory",
                       "Requests waiting for room in the memory budget",
                       multiprocess_mode="livesum")
SLOWDOWN = Counter("appliance_s3_slowdown_total",
                   "Requests refused with 503 SlowDown: no room in the memory budget in time")


class _NodeCollector(multiprocess.MultiProcessCollector):
    """The multiprocess collector without the files other processes are creating right now.

    prometheus-client 0.16 creates a process's file empty and sizes it a moment later
    (``MmapedDict.__init__``); reading it in between raises struct.error, which turned a
    /metrics request racing a gateway's first samples into a 500. A file under 8 bytes holds
    no samples yet, so leaving it out loses nothing.
    """

    def collect(self):
        files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _has_header(f)]
        return self.merge(files, accumulate=True)


def _has_header(path: str) -> bool:
    try:
        return os.path.getsize(path) >= 8
    except FileNotFoundError:  # a dead process's live gauge, removed after the glob
        return False


def exposition() -> bytes:
    """Every metric of this node in the Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _NodeCollector(registry)
        return prometheus_client.generate_latest(registry)
    return prometheus_client.generate_latest()
