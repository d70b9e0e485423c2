"""Prometheus metrics of the shard store (exported by whichever process runs it).

Gauges name how a node with several processes combines them (``multiprocess_mode``, used
when PROMETHEUS_MULTIPROC_DIR is set): the backlogs and the rate are set by the one process
that runs repair, so the live maximum is its value."""

from prometheus_client import Counter, Gauge

SHARD_OPS = Counter("appliance_shard_ops_total", "Shard operations by device and kind",
                    ["device", "op"])
SHARD_BYTES = Counter("appliance_shard_bytes_total", "Shard bytes moved by device and direction",
                      ["device", "op"])
SHARD_FAILURES = Counter("appliance_shard_failures_total",
                         "Failed shard operations (missing, corrupt, I/O error)",
                         ["device", "op", "reason"])
DEVICE_UP = Gauge("appliance_device_up", "1 if the device is attached, 0 if its disk is "
                  "missing or not this node's", ["device"], multiprocess_mode="livemin")
SKIPPED_READS = Counter("appliance_shard_reads_skipped_total",
                        "Shard reads not sent to a device whose earlier reads hang (read "
                        "around it from parity)", ["device"])
DEGRADED_READS = Counter("appliance_degraded_reads_total",
                         "Segment batches that needed parity shards")
REPAIR_BACKLOG = Gauge("appliance_repair_backlog", "Shards queued for repair",
                       multiprocess_mode="livemax")
REPAIRED_SHARDS = Counter("appliance_repaired_shards_total", "Shards rewritten by repair")
REPAIRED_BYTES = Counter("appliance_repair_bytes_total", "Bytes written by repair")
GC_BACKLOG = Gauge("appliance_gc_backlog", "Stripe sets waiting for garbage collection",
                   multiprocess_mode="livemax")
REPAIR_RATE = Gauge("appliance_repair_rate_bytes", "Repair rate limit in bytes/s (0: none)",
                    multiprocess_mode="livemax")
SCRUBBED_SHARDS = Counter("appliance_scrub_shards_total", "Shards verified by the scrub")
SCRUBBED_BYTES = Counter("appliance_scrub_bytes_total",
                         "Bytes of data held by the shards the scrub verified")
SCRUB_DAMAGED = Counter("appliance_scrub_damaged_shards_total",
                        "Shards the scrub found missing, corrupt or unreadable (queued for "
                        "repair)", ["device", "reason"])
SCRUB_LAST_PASS = Gauge("appliance_scrub_last_pass_timestamp_seconds",
                        "Unix time the last complete scrub pass ended",
                        multiprocess_mode="livemax")
SCRUB_RATE = Gauge("appliance_scrub_rate_bytes", "Scrub rate limit in bytes/s (0: none)",
                   multiprocess_mode="livemax")
