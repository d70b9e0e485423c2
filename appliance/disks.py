"""The node's disks: the layout chosen on first start, the label on every disk, and the shard
servers of the disks that are attached, kept in step while disks come, go and are replaced.

State::

    DATA_DIR/appliance.json     {"node_id", "disks": [path of d0, d1, ...], "pool"}
    DISK/appliance-disk.json    on every disk (DISK_LABEL): {"node_id", "device", "disk_id"}

A disk is attached only if its label names this node and the device at its place in the
layout, so a disk that is not mounted (its empty mount point), another node's disk, or two
disks mounted at each other's paths are never written to (Ceph's OSDs check their ``whoami``
and ``fsid`` files the same way). ``disk_id`` is new for every physical disk: when a running
process sees it change under a device (``appliance disk replace``), it drops the shard
server it had and attaches the new disk.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import trio

from .durable import write_json
from .store import InProcessClient, PoolSpec, ShardClient, ShardServer, UnavailableClient

log = logging.getLogger(__name__)

DEFAULT_DISKS = 6
DISK_LABEL = "appliance-disk.json"
DISK_CHECK_S = 5.0
"""How often a running process looks at its disks' labels (a disk mounted late, replaced,
or gone from under its mount point)."""
_MKFS_LEFTOVERS = {"lost+found"}


class SetupError(Exception):
    """The data directory or a disk cannot be used as asked (layout mismatch, locked, bad
    path, a disk that belongs elsewhere)."""


@dataclass
class Layout:
    disks: list[str]
    pool: str = "ec:4+2"
    node_id: str = ""

    def save(self, path: Path) -> None:
        write_json(path, {"node_id": self.node_id, "disks": self.disks, "pool": self.pool})

    def index_of(self, device: str) -> int:
        """The position of device ``dN`` in the layout; raises SetupError."""
        if device.startswith("d") and device[1:].isdigit() and int(device[1:]) < len(self.disks):
            return int(device[1:])
        raise SetupError(f"no device {device!r}; this node has d0..d{len(self.disks) - 1}")


def layout_path(data_dir: Path) -> Path:
    return data_dir / "appliance.json"


def load_layout(data_dir: Path) -> Layout:
    """The layout as recorded (no checks, no migration); raises SetupError if there is none."""
    try:
        saved = json.loads(layout_path(data_dir).read_text())
    except FileNotFoundError:
        raise SetupError(f"{data_dir} holds no appliance (run `appliance up` first)") from None
    return Layout(saved["disks"], saved["pool"], saved.get("node_id", ""))


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
    cfg = layout_path(data_dir)
    if cfg.exists():
        layout = load_layout(data_dir)
        if disks and [str(Path(d).resolve()) for d in disks] != layout.disks:
            raise SetupError(f"{data_dir} was set up with disks {layout.disks}; changing the "
                             "disk layout is not supported (a disk given a new path by "
                             "`appliance disk replace --path` is in that list: drop --disks)")
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
        _write_label(Path(layout.disks[i]), layout.node_id, f"d{i}")


def _write_label(disk: Path, node_id: str, device: str) -> None:
    write_json(disk / DISK_LABEL, {"node_id": node_id, "device": device,
                                   "disk_id": uuid.uuid4().hex})


def probe(layout: Layout) -> list[tuple[str | None, str]]:
    """For every device of ``layout``: (why its disk cannot be attached, or None; the disk
    id on its label)."""
    out = []
    for index, disk in enumerate(layout.disks):
        problem = disk_problem(layout, index)
        disk_id = "" if problem else (read_label(Path(disk)) or {}).get("disk_id", "")
        out.append((problem, disk_id))
    return out


def replace_disk(data_dir: Path, device: str, path: str | None = None,
                 check_only: bool = False) -> Layout:
    """Make the empty disk at ``path`` (default: ``device``'s path in the layout, where the new
    disk was mounted in place of the old one) ``device``'s disk: label it with a new disk id
    and record its path in the layout. Running processes attach it within DISK_CHECK_S; the
    caller queues the rebuild of the device's shards (:func:`store.repair.request_rebuild`).

    Raises SetupError, changing nothing, when ``device`` is not in the layout, or the disk
    is not a directory, is another device's path, carries a label (the old disk still in
    place, or a disk of another device or node) or holds files (only ``lost+found`` may be
    there: nothing on it is ever taken as shards). ``check_only``: the checks alone."""
    layout = load_layout(data_dir)
    i = layout.index_of(device)
    disk = Path(path or layout.disks[i]).resolve()
    if not disk.is_dir():
        raise SetupError(f"{disk} is not a directory (mount the new disk there first)")
    if str(disk) in layout.disks and layout.disks.index(str(disk)) != i:
        raise SetupError(f"{disk} is the disk of d{layout.disks.index(str(disk))}")
    label = read_label(disk)
    if label is not None and (label.get("node_id"), label.get("device")) == (layout.node_id,
                                                                              device):
        raise SetupError(f"{disk} is {device}'s disk and is in place: put the new disk "
                         "there first, or name it with --path")
    if label is not None:
        raise SetupError(f"{disk} is labelled {label}: a disk of another device or node; "
                         "wipe it to use it here")
    stray = sorted(p.name for p in disk.iterdir() if p.name not in _MKFS_LEFTOVERS)
    if stray:
        raise SetupError(f"{disk} is not empty ({', '.join(stray[:5])}); a new disk must be")
    if check_only:
        return layout
    _write_label(disk, layout.node_id, device)
    if layout.disks[i] != str(disk):
        layout.disks[i] = str(disk)
        layout.save(layout_path(data_dir))
    return layout


class Devices:
    """This process's shard client for every device of the layout: an InProcessClient over
    the device's ShardServer when its disk can be attached, an UnavailableClient otherwise.
    :meth:`watch` keeps them in step with the disks while the process runs."""

    def __init__(self, data_dir: Path, layout: Layout):
        self.data_dir = data_dir
        self.layout = layout
        self.clients: dict[str, ShardClient] = {}
        self._servers: dict[str, tuple[str, ShardServer]] = {}  # attached: (disk_id, server)
        self._probing = False
        for index, (problem, disk_id) in enumerate(probe(layout)):
            self._apply(index, problem, disk_id)

    def _apply(self, index: int, problem: str | None, disk_id: str) -> ShardClient | None:
        """Bring device ``index`` in line with its disk; returns its new client, if any."""
        device = f"d{index}"
        attached = self._servers.get(device)
        if attached is not None and problem is None and attached[0] == disk_id:
            return None
        starting = device not in self.clients
        if attached is not None:
            self._detach(device)
            log.error("device %s detached: %s", device, problem or "its disk was replaced")
        if problem is not None:
            current = self.clients.get(device)
            if current is not None and not current.available and current.reason == problem:
                return None
            if starting:
                log.error("device %s is unavailable: %s; running without it", device, problem)
            self.clients[device] = UnavailableClient(device, problem)
            return self.clients[device]
        server = ShardServer(self.layout.disks[index], device)
        self._servers[device] = (disk_id, server)
        self.clients[device] = InProcessClient(server)
        if not starting:
            log.warning("device %s attached: %s", device, self.layout.disks[index])
        return self.clients[device]

    def _detach(self, device: str) -> None:
        _, server = self._servers.pop(device)
        client = self.clients[device]
        # After the writes already queued on the device's thread, none later.
        client.submit(server.close)
        client.close()

    async def watch(self, store, period: float = DISK_CHECK_S) -> None:
        """Every ``period`` seconds re-read the layout and the labels, and attach, detach or
        swap devices in ``store`` (:meth:`Store.set_client`). Runs until cancelled."""
        while True:
            await trio.sleep(period)
            if self._probing:  # a hung disk holds the last look; do not pile threads on it
                continue
            self._probing = True

            def look():
                try:
                    layout = load_layout(self.data_dir)
                    return layout, probe(layout)
                finally:
                    self._probing = False

            try:
                with trio.fail_after(period):
                    layout, probes = await trio.to_thread.run_sync(look, cancellable=True)
            except trio.TooSlowError:
                continue
            except (OSError, ValueError, KeyError, SetupError) as e:
                log.error("cannot read the disk layout: %s", e)
                continue
            self.layout = layout
            for index, (problem, disk_id) in enumerate(probes):
                client = self._apply(index, problem, disk_id)
                if client is not None:
                    store.set_client(f"d{index}", client)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        for _, server in self._servers.values():
            server.close()
