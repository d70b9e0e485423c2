"""A single-node appliance: metadata, shard servers, store, repair and the S3 gateway.

State under the data directory::

    appliance.json   layout chosen on first start (node id, disks, pool) - later starts
                     must match
    DISK/appliance-disk.json   on every disk: which node and device it is (DISK_LABEL)
    meta.db          SQLite metadata (WAL)
    credentials      the root access key, AWS shared-credentials format, mode 0600
    disks/disk0..5   stand-in data disks when --disks is not given
    lock             held while the node runs (one node per data directory)
    run/metrics.PID  prometheus-client multiprocess files of the running node
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from .accounts import Accounts
from .durable import write_json
from .gateway import listen_socket, wait_for_signal
from .meta import SqliteMeta
from .namespace import Namespace
from .store import Device, InProcessClient, PoolSpec, ShardServer, Store, UnavailableClient
from .store.repair import Repairer
from .supervisor import GatewayPool

log = logging.getLogger(__name__)

DEFAULT_DISKS = 6
ROOT_USER = "root"


class SetupError(Exception):
    """The data directory cannot be used as asked (layout mismatch, locked, bad path)."""


@dataclass
class Layout:
    disks: list[str]
    pool: str = "ec:4+2"
    node_id: str = ""

    def save(self, path: Path) -> None:
        write_json(path, {"node_id": self.node_id, "disks": self.disks, "pool": self.pool})


DISK_LABEL = "appliance-disk.json"
"""On every disk, written on first start: {"node_id", "device"}. A disk is attached only if
its label names this node and the device at its place in the layout, so that a disk that is
not mounted (its empty mount point), another node's disk, or two disks mounted at each
other's paths are never written to (Ceph's OSDs check their ``whoami`` and ``fsid`` files
the same way)."""


def meta_path(data_dir: Path) -> Path:
    return data_dir / "meta.db"


def read_label(disk: Path) -> dict | None:
    try:
        return json.loads((disk / DISK_LABEL).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SetupError(f"cannot read the label of disk {disk}: {e}") from e


def disk_problem(layout: Layout, index: int) -> str | None:
    """Why disk ``index`` of ``layout`` cannot be attached, or None if it can."""
    disk = Path(layout.disks[index])
    if not disk.is_dir():
        return f"{disk} is not a directory"
    try:
        label = read_label(disk)
    except SetupError as e:
        return str(e)
    if label is None:
        return f"{disk} has no {DISK_LABEL} (is the disk mounted?)"
    want = {"node_id": layout.node_id, "device": f"d{index}"}
    if {k: label.get(k) for k in want} != want:
        return f"{disk} is labelled {label}, not {want}"
    return None


def load_or_create_layout(data_dir: Path, disks: list[str] | None, pool: str | None) -> Layout:
    """The layout recorded on first start; raises SetupError when arguments contradict it.

    On first start every disk is labelled (DISK_LABEL): the stand-in directories are
    created, while ``disks`` must exist and must not belong to another node."""
    cfg = data_dir / "appliance.json"
    if cfg.exists():
        saved = json.loads(cfg.read_text())
        layout = Layout(saved["disks"], saved["pool"], saved.get("node_id", ""))
        if disks and [str(Path(d).resolve()) for d in disks] != layout.disks:
            raise SetupError(f"{data_dir} was set up with disks {layout.disks}; changing the "
                             "disk layout is not supported yet")
        if pool and PoolSpec.parse(pool).name != layout.pool:
            raise SetupError(f"{data_dir} was set up with pool {layout.pool}, not {pool}")
        if not layout.node_id:  # set up before disks had labels: label those that are here
            layout.node_id = uuid.uuid4().hex
            _label_disks(layout, [i for i, d in enumerate(layout.disks)
                                  if (Path(d) / "shards").is_dir()])
            layout.save(cfg)
        return layout
    spec = PoolSpec.parse(pool or "ec:4+2")
    if disks:
        paths = [str(Path(d).resolve()) for d in disks]
        for path in paths:
            if not Path(path).is_dir():
                raise SetupError(f"disk {path} is not a directory")
    else:
        paths = [str((data_dir / "disks" / f"disk{i}").resolve()) for i in range(DEFAULT_DISKS)]
        for path in paths:
            Path(path).mkdir(parents=True, exist_ok=True)
    if len(set(paths)) != len(paths):
        raise SetupError("the same disk is named twice")
    # A first start that crashed after labelling some disks left its node id behind.
    pending = cfg.with_name("appliance.json.node")
    node_id = pending.read_text().strip() if pending.exists() else uuid.uuid4().hex
    pending.write_text(node_id)
    layout = Layout(paths, spec.name, node_id)
    for path in paths:
        label = read_label(Path(path))
        if label is not None and label.get("node_id") != node_id:
            raise SetupError(f"disk {path} belongs to another appliance ({label}); wipe it "
                             "to use it here")
    _label_disks(layout, range(len(paths)))
    layout.save(cfg)
    pending.unlink()
    return layout


def _label_disks(layout: Layout, indices) -> None:
    for i in indices:
        write_json(Path(layout.disks[i]) / DISK_LABEL,
                    {"node_id": layout.node_id, "device": f"d{i}"})


def write_credentials(path: Path, akid: str, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)


@asynccontextmanager
async def open_node(data_dir: Path, disks: list[str] | None = None, pool: str | None = None):
    """Open the node's metadata and store (creating them on first start); yields
    (meta, store, namespace, accounts)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    layout = load_or_create_layout(data_dir, disks, pool)
    meta = SqliteMeta(str(meta_path(data_dir)))
    servers: list[ShardServer] = []
    clients: dict[str, InProcessClient] = {}
    try:
        for i, path in enumerate(layout.disks):
            device = f"d{i}"
            problem = disk_problem(layout, i)
            if problem is None:
                servers.append(ShardServer(path, device))
                clients[device] = InProcessClient(servers[-1])
            else:
                log.error("device %s is unavailable: %s; running without it", device, problem)
                clients[device] = UnavailableClient(device, problem)
        store = await Store.open(meta, clients, layout.pool,
                                 devices=[Device(d) for d in clients])
        yield meta, store, Namespace(meta, store), Accounts(meta)
    finally:
        for client in clients.values():
            client.close()
        for server in servers:
            server.close()
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


def _reset_metrics_dir() -> None:
    """Empty this run's multiprocess metrics directory and remove those of earlier runs (their
    processes are gone: we hold the lock). ``appliance up`` points PROMETHEUS_MULTIPROC_DIR at
    ``DIR/run/metrics.<pid>``."""
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


async def run(data_dir: Path, s3_bind: str, disks: list[str] | None = None,
              pool: str | None = None, domain: str | None = None, region: str = "us-east-1",
              repair_rate: float = 200e6, workers: int | None = None,
              task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the node until SIGTERM/SIGINT: ``workers`` S3 gateway processes (default: one per
    core, see :mod:`appliance.gateway`) and, in this process, crash recovery, repair and
    garbage collection. Clean shutdown: the gateways stop accepting and finish the requests in
    flight, then background work stops and metadata is closed. Raises SetupError,
    GatewayFailure."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = await _lock(data_dir)
    try:
        try:
            listener = listen_socket(s3_bind)
        except OSError as e:
            raise SetupError(f"cannot listen on {s3_bind}: {e.strerror or e}") from None
        _reset_metrics_dir()
        async with open_node(data_dir, disks, pool) as (meta, store, ns, accounts):
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
                 "domain": domain},
                listener, keep_fds=(lock.fileno(),))
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run)
                nursery.start_soon(Repairer(store, rate=repair_rate).run)
                nursery.start_soon(wait_for_signal, stop, "shutting down")
                await gateways.start()
                print(f"S3 endpoint http://{s3_bind} ({gateways.count} gateway processes, "
                      f"data in {data_dir})", flush=True)
                task_status.started()
                await gateways.supervise(store, stop)
                nursery.cancel_scope.cancel()
    finally:
        lock.close()
    print("stopped cleanly", flush=True)
