"""A single-node appliance: metadata, shard servers, store, repair and the S3 gateway.

State under the data directory::

    appliance.json   layout chosen on first start (node id, disks, pool) - later starts
                     must match
    DISK/appliance-disk.json   on every disk: which node and device it is (appliance.disks)
    meta.db          SQLite metadata (WAL)
    credentials      the root access key, AWS shared-credentials format, mode 0600
    disks/disk0..5   stand-in data disks when --disks is not given
    lock             held while the node runs (one node per data directory)

and, in memory, /dev/shm/appliance-KEY/metrics.PID: the running node's prometheus-client
multiprocess files (see metrics_dir).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import resource
import shutil
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import trio

from .accounts import Accounts
from .disks import Devices, SetupError, load_or_create_layout
from .gateway import listen_socket, wait_for_signal
from .meta import SqliteMeta
from .namespace import Namespace
from .store import Device, Store
from .store.repair import Repairer
from .store.scrub import Scrubber
from .supervisor import GatewayPool

log = logging.getLogger(__name__)

ROOT_USER = "root"


def meta_path(data_dir: Path) -> Path:
    return data_dir / "meta.db"


def write_credentials(path: Path, akid: str, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)


@asynccontextmanager
async def open_node(data_dir: Path, disks: list[str] | None = None, pool: str | None = None,
                    watch_disks: bool = False):
    """Open the node's metadata and store (creating them on first start); yields
    (meta, store, namespace, accounts). ``watch_disks``: for a process that serves, keep the
    store's devices in step with the disks (:meth:`Devices.watch`) until the block exits."""
    data_dir.mkdir(parents=True, exist_ok=True)
    layout = load_or_create_layout(data_dir, disks, pool)
    meta = SqliteMeta(str(meta_path(data_dir)))
    devices = None
    try:
        devices = Devices(data_dir, layout)
        store = await Store.open(meta, devices.clients, layout.pool,
                                 devices=[Device(d) for d in devices.clients])
        async with trio.open_nursery() as nursery:
            if watch_disks:
                nursery.start_soon(devices.watch, store)
            try:
                yield meta, store, Namespace(meta, store), Accounts(meta)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if devices is not None:
            devices.close()
        await meta.aclose()


async def ensure_root_credentials(accounts: Accounts, data_dir: Path) -> tuple[str, str] | None:
    """On first start create the root user and key, write them to DIR/credentials and return
    them (so the caller prints them once); None when they already exist."""
    if await accounts.get_user(ROOT_USER) is not None:
        return None
    await accounts.create_user(ROOT_USER)
    key = await accounts.create_key(ROOT_USER)
    write_credentials(data_dir / "credentials", key.access_key_id, key.secret_access_key)
    return key.access_key_id, key.secret_access_key


LOCK_WAIT_S = 15.0
"""How long a starting node waits for the previous one (its last gateway) to let go of the lock."""


async def _lock(data_dir: Path):
    f = open(data_dir / "lock", "w")
    deadline = trio.current_time() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if trio.current_time() > deadline:
                f.close()
                raise SetupError(f"another appliance is running on {data_dir}") from None
            await trio.sleep(0.1)


RUNTIME_ROOT = Path("/dev/shm")


def metrics_dir(data_dir: Path, pid: int) -> Path:
    """The multiprocess metrics directory of the node on ``data_dir`` whose first process is
    ``pid``: ``/dev/shm/appliance-<hash of data_dir>/metrics.<pid>`` (``DATA_DIR/run/`` where
    /dev/shm is missing).

    Not on the data dir's filesystem: prometheus-client writes its files through mmap, into
    sparse pages, and on a filesystem with no space left the first write to a new page kills
    the process with SIGBUS. A data dir filled by another process took a node down that way
    (every gateway, and each replacement at start)."""
    data_dir = Path(data_dir).resolve()
    if os.access(RUNTIME_ROOT, os.W_OK):
        key = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
        return RUNTIME_ROOT / f"appliance-{key}" / f"metrics.{pid}"
    return data_dir / "run" / f"metrics.{pid}"


def _reset_metrics_dir() -> None:
    """Empty this run's multiprocess metrics directory and remove those of earlier runs (their
    processes are gone: we hold the lock). ``appliance up`` points PROMETHEUS_MULTIPROC_DIR at
    :func:`metrics_dir`."""
    mine = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not mine:
        return
    mine_path = Path(mine)
    for old in mine_path.parent.glob("metrics.*"):
        if old != mine_path:
            shutil.rmtree(old, ignore_errors=True)
    mine_path.mkdir(parents=True, exist_ok=True)


def default_workers() -> int:
    """One gateway process per core (at least 1, at most 8)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def raise_open_files_limit() -> None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the gateways inherit it).
    Every connection and every shard file being written or read
    is a descriptor: under Debian's default soft limit of 1024, 1,800 idle connections made
    PUTs fail with 503 ("6 of 6 shard writes failed: Too many open files"), counted as
    failures of healthy disks. Go raises its soft limit the same way since Go 1.19."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:  # Linux caps the hard limit at fs.nr_open: never RLIM_INFINITY
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit from %d: %s", soft, e)


def default_request_memory() -> int:
    """A quarter of the machine's RAM, in bytes: what the buffers of the S3 requests in flight
    may hold, all gateway processes together (appliance.membudget)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


async def run(data_dir: Path, s3_bind: str, disks: list[str] | None = None,
              pool: str | None = None, domain: str | None = None, region: str = "us-east-1",
              repair_rate: float = 200e6, scrub_rate: float = 50e6,
              scrub_interval: float = 7 * 86400.0, workers: int | None = None,
              request_memory: int | None = None,
              task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the node until SIGTERM/SIGINT: ``workers`` S3 gateway processes (default: one per
    core, see :mod:`appliance.gateway`) and, in this process, crash recovery, repair,
    garbage collection and scrubbing (``scrub_rate`` bytes/s, a pass every
    ``scrub_interval`` seconds). ``request_memory``: bytes the gateways' request buffers may
    hold in all (default :func:`default_request_memory`), split evenly between them. Clean
    shutdown: the gateways stop accepting and finish the requests in flight, then background
    work stops and metadata is closed. Raises SetupError, GatewayFailure."""
    raise_open_files_limit()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = await _lock(data_dir)
    try:
        try:
            listener = listen_socket(s3_bind)
        except OSError as e:
            raise SetupError(f"cannot listen on {s3_bind}: {e.strerror or e}") from None
        _reset_metrics_dir()
        async with open_node(data_dir, disks, pool, watch_disks=True) as (meta, store, ns,
                                                                          accounts):
            created = await ensure_root_credentials(accounts, data_dir)
            if created:
                print(f"root access key created (also in {data_dir / 'credentials'}):\n"
                      f"  aws_access_key_id     = {created[0]}\n"
                      f"  aws_secret_access_key = {created[1]}", flush=True)
            # No gateway runs yet: every pending write is from a crash.
            recovered = await store.recover()
            if recovered:
                log.warning("found %d writes interrupted by a crash; their shards will be "
                            "removed", recovered)
            gateways = GatewayPool(
                workers or default_workers(),
                {"data_dir": str(data_dir.resolve()), "bind": s3_bind, "region": region,
                 "domain": domain,
                 "request_memory": request_memory or default_request_memory()},
                listener, keep_fds=(lock.fileno(),))
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run)
                nursery.start_soon(Repairer(store, rate=repair_rate,
                                            referenced=ns.referenced_extents).run)
                nursery.start_soon(Scrubber(store, ns.references, rate=scrub_rate,
                                            interval=scrub_interval).run)
                nursery.start_soon(wait_for_signal, stop, "shutting down")
                await gateways.start()
                print(f"S3 endpoint http://{s3_bind} ({gateways.count} gateway processes, "
                      f"data in {data_dir})", flush=True)
                task_status.started()
                await gateways.supervise(store, stop)
                nursery.cancel_scope.cancel()
    finally:
        mine = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if mine:  # in memory: give it back (files of a crashed run go at the next start)
            shutil.rmtree(mine, ignore_errors=True)
            with suppress(OSError):  # unless another run's files are there
                os.rmdir(Path(mine).parent)
        lock.close()
    print("stopped cleanly", flush=True)
