"""The ``appliance`` command: run a node and administer it.

Human tables by default, ``--json`` for scripts. Administration commands open the node's
metadata directly, so they work whether or not the node is running (SQLite WAL lets the two
processes share it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

import trio
from tabulate import tabulate

from .accounts import AccountError, Accounts
from .meta import SqliteMeta
from .store import PoolSpecError

DEFAULT_DATA_DIR = os.environ.get("APPLIANCE_DATA_DIR", "/var/lib/appliance")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _emit(args, rows: list[dict], headers: list[str]) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(tabulate([[r[h] for h in headers] for r in rows], headers=headers))


def _non_negative(text: str) -> float:
    """A rate (MB/s, 0: unlimited) or an interval (days) (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"not a number >= 0: {text!r}")
    return value


def _mib(text: str) -> int:
    """``--request-memory`` in MiB -> bytes (argparse type)."""
    try:
        mib = float(text)
    except ValueError:
        mib = 0
    if not mib > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of MiB: {text!r}")
    return int(mib * (1 << 20))


@asynccontextmanager
async def _meta(args):
    """The node's metadata (closed on the way out); SystemExit when there is none."""
    db = Path(args.data_dir) / "meta.db"
    if not db.exists():
        raise SystemExit(f"appliance: no appliance data in {args.data_dir} "
                         "(run `appliance up --data-dir ...` first)")
    meta = SqliteMeta(str(db))
    try:
        yield meta
    finally:
        await meta.aclose()


async def _with_accounts(args, fn):
    async with _meta(args) as meta:
        return await fn(Accounts(meta))


# glibc reads these at start-up only. Without them every 1-4 MiB buffer is a fresh mmap and
# page faults dominate: measured 249 vs 407 MB/s on the store write path (DESIGN.md §4).
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824",
                 "MALLOC_TOP_PAD_": "268435456"}


def _reexec_for_node(data_dir: str) -> None:
    """Re-exec ``appliance up`` with the environment its processes need from the start: glibc's
    malloc settings (read at start-up only) and PROMETHEUS_MULTIPROC_DIR (read when
    prometheus_client is imported), this run's :func:`node.metrics_dir`."""
    from .node import metrics_dir as metrics_dir_of

    metrics_dir = str(metrics_dir_of(Path(data_dir), os.getpid()))
    if all(k in os.environ for k in MALLOC_TUNING) \
            and os.environ.get("PROMETHEUS_MULTIPROC_DIR") == metrics_dir:
        return
    os.makedirs(metrics_dir, exist_ok=True)
    env = {**MALLOC_TUNING, **os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    os.execve(sys.executable, [sys.executable, "-m", "appliance.cli", *sys.argv[1:]], env)


def cmd_up(args) -> int:
    from . import node
    from .supervisor import GatewayFailure

    _reexec_for_node(args.data_dir)

    disks = [d for d in args.disks.split(",") if d] if args.disks else None
    try:
        trio.run(lambda: node.run(Path(args.data_dir), args.s3, disks=disks, pool=args.pool,
                                  domain=args.domain, region=args.region,
                                  repair_rate=args.repair_rate * 1e6,
                                  scrub_rate=args.scrub_rate * 1e6,
                                  scrub_interval=args.scrub_interval * 86400,
                                  workers=args.workers,
                                  request_memory=args.request_memory))
    except (node.SetupError, PoolSpecError) as e:
        print(f"appliance: {e}", file=sys.stderr)
        return 2
    except GatewayFailure as e:
        print(f"appliance: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_user(args) -> int:
    async def go(acc: Accounts):
        if args.action == "create":
            u = await acc.create_user(args.name)
            _emit(args, [{"user": u.name, "created": _when(u.created)}], ["user", "created"])
        elif args.action == "list":
            users = await acc.list_users()
            rows = [{"user": u.name, "created": _when(u.created),
                     "keys": len(await acc.list_keys(u.name))} for u in users]
            _emit(args, rows, ["user", "created", "keys"])
        else:
            await acc.delete_user(args.name)
            _emit(args, [{"deleted": args.name}], ["deleted"])

    trio.run(_with_accounts, args, go)
    return 0


def cmd_key(args) -> int:
    async def go(acc: Accounts):
        if args.action == "create":
            k = await acc.create_key(args.user)
            if args.json:
                print(json.dumps({"access_key_id": k.access_key_id,
                                  "secret_access_key": k.secret_access_key, "user": k.user}))
            else:
                print(tabulate([[k.user, k.access_key_id, k.secret_access_key]],
                               headers=["user", "access_key_id", "secret_access_key"]))
        elif args.action == "list":
            keys = await acc.list_keys(args.user)
            rows = [{"access_key_id": k.access_key_id, "user": k.user,
                     "created": _when(k.created)} for k in keys]
            _emit(args, rows, ["access_key_id", "user", "created"])
        else:
            await acc.delete_key(args.access_key_id)
            _emit(args, [{"deleted": args.access_key_id}], ["deleted"])

    trio.run(_with_accounts, args, go)
    return 0


def cmd_fsck(args) -> int:
    from . import node
    from .fsck import fsck

    async def go():
        async with node.open_node(Path(args.data_dir)) as (meta, store, ns, _acc):
            return await fsck(meta, store, ns, verify=args.verify)

    report = trio.run(go)
    if args.json:
        print(json.dumps({**asdict(report), "clean": report.clean}, indent=2))
    else:
        print(tabulate([[report.stripe_sets, report.shards, len(report.orphans),
                         len(report.missing), report.pending, report.garbage]],
                       headers=["stripe sets", "shard files", "orphans", "missing",
                                "pending writes", "awaiting GC"]))
        for o in report.orphans:
            print(f"orphan  {o}")
        for m in report.missing:
            print(f"missing {m}")
        for c in report.corrupt:
            print(f"corrupt {c}")
        for d in report.unavailable:
            print(f"unavailable device {d} (not checked)")
    return 0 if report.clean else 1


def cmd_locate(args) -> int:
    from . import node

    async def go():
        async with node.open_node(Path(args.data_dir)) as (_meta, store, ns, _acc):
            rec = await ns.get_object(args.bucket, args.key)
            if rec is None:
                return None
            rows = []
            for n, e in enumerate(rec.extents):
                if e.inline is not None:
                    rows.append({"extent": n, "size": e.size, "inline": True, "shards": []})
                    continue
                devices = store.pools[e.pool].devices_for(e.sid)
                shards = [{"index": i, "device": d,
                           "path": (str(store.clients[d].server.path(e.sid, i))
                                    if store.clients[d].available else "(unavailable)")}
                          for i, d in enumerate(devices)]
                rows.append({"extent": n, "size": e.size, "sid": e.sid, "pool": e.pool,
                             "inline": False, "shards": shards})
            return rows

    rows = trio.run(go)
    if rows is None:
        print(f"appliance: no object {args.key!r} in bucket {args.bucket!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = [[r["extent"], r["size"], "inline" if r["inline"] else r["pool"],
                  s["index"], s["device"], s["path"]]
                 for r in rows for s in (r["shards"] or [{"index": "", "device": "",
                                                          "path": ""}])]
        print(tabulate(table, headers=["extent", "size", "pool", "shard", "device", "path"]))
    return 0


def cmd_repair(args) -> int:
    from .store import ratelimit, repair

    async def go():
        async with _meta(args) as meta:
            if args.rate is not None:
                await ratelimit.set_rate(meta, repair.RATE_KEY, args.rate * 1e6)
            rate = await ratelimit.get_rate(meta, repair.RATE_KEY)
            return {"backlog": await meta.count_prefix(b"r/"),
                    "awaiting_gc": await meta.count_prefix(b"g/"),
                    "rate_mb_s": None if rate is None else rate / 1e6}

    status = trio.run(go)
    if args.json:
        print(json.dumps(status))
    else:
        rate = status["rate_mb_s"]
        shown = "start-up value (--repair-rate)" if rate is None else (
            "unlimited" if rate == 0 else f"{rate:g} MB/s")
        print(tabulate([[status["backlog"], status["awaiting_gc"], shown]],
                       headers=["shards to repair", "stripe sets awaiting GC", "repair rate"]))
    return 0


def cmd_scrub(args) -> int:
    from .store import ratelimit, scrub

    async def go():
        async with _meta(args) as meta:
            if args.rate is not None:
                await ratelimit.set_rate(meta, scrub.RATE_KEY, args.rate * 1e6)
            state = await scrub.load_state(meta)
            if args.start and state.current is None:
                await scrub.request_pass(meta)
            return (state, await ratelimit.get_rate(meta, scrub.RATE_KEY),
                    await scrub.pass_requested(meta))

    state, rate, requested = trio.run(go)
    last, current = state.last, state.current
    due = last.finished + state.interval if last and state.interval else None
    status = {"running": current is not None, "current": asdict(current) if current else None,
              "last": asdict(last) if last else None, "next_due": due,
              "start_requested": requested, "rate_mb_s": None if rate is None else rate / 1e6}
    if args.json:
        print(json.dumps(status))
        return 0

    def counts(c):
        return [c.checked, f"{c.bytes / 1e9:.2f}", c.damaged, c.skipped]

    rows = []
    if current:
        rows.append([f"running since {_when(current.started)}", *counts(current)])
    if last:
        rows.append([f"last done {_when(last.finished)}", *counts(last)])
    print(tabulate(rows, headers=["pass", "shards checked", "GB", "damaged (queued for repair)",
                                  "skipped"]) if rows else "no scrub pass has run yet")
    if requested and not current:
        print("a pass was asked for: the running node starts it within seconds")
    elif due and not current:
        print(f"next pass due {_when(due)}")
    shown = "start-up value (--scrub-rate)" if rate is None else (
        "unlimited" if rate == 0 else f"{rate / 1e6:g} MB/s")
    print(f"scrub rate: {shown}")
    return 0


def cmd_disk(args) -> int:
    from . import disks, diskspace
    from .store import repair

    data_dir = Path(args.data_dir)

    async def go():
        async with _meta(args) as meta:
            if args.action == "replace":
                # The mark goes first: a crash before the label leaves a rebuild that waits
                # for the disk, never a labelled disk nobody rebuilds.
                disks.replace_disk(data_dir, args.device, args.path, check_only=True)
                await repair.request_rebuild(meta, args.device)
                disks.replace_disk(data_dir, args.device, args.path)
            return await repair.rebuilds_requested(meta), await repair.backlog_by_device(meta)

    try:
        rebuilding, backlog = trio.run(go)
        layout = disks.load_layout(data_dir)
    except disks.SetupError as e:
        print(f"appliance: {e}", file=sys.stderr)
        return 1
    problems = disks.probe(layout)
    rows = []
    for i, path in enumerate(layout.disks):
        if args.action != "list" and f"d{i}" != args.device:
            continue
        row = {"device": f"d{i}", "path": path, "disk": problems[i][0] or "ok",
               "free": "", "free_bytes": None, "size_bytes": None,
               "rebuild": "queued" if f"d{i}" in rebuilding else "",
               "repairs": backlog[f"d{i}"]}
        if not problems[i][0]:
            free, size, reserve = diskspace.space(path)
            row.update(free=f"{free / 2**30:.1f} of {size / 2**30:.1f} GiB",
                       free_bytes=free, size_bytes=size)
            if free <= reserve:
                row["disk"] = "full (new shards refused)"
        rows.append(row)
    _emit(args, rows, ["device", "path", "disk", "free", "rebuild", "repairs"])
    if args.action == "replace" and not args.json:
        print(f"\n{args.device} takes the new disk within {disks.DISK_CHECK_S:g} s in a running "
              "node (or at the next start); its shards are then rebuilt from the other disks "
              "(`appliance disk list` shows how many are left).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def data_dir(sp):
        sp.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="node state directory (default: %(default)s)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    up = sub.add_parser("up", help="run a single-node appliance in the foreground")
    data_dir(up)
    up.add_argument("--disks", help="comma-separated data directories, one per disk "
                                    "(default: six directories under DATA_DIR/disks)")
    up.add_argument("--s3", default="127.0.0.1:9000", help="S3 listen HOST:PORT")
    up.add_argument("--pool", default=None, help="protection policy on first start: "
                                                 "ec:K+M or replicated:N (default ec:4+2)")
    up.add_argument("--domain", help="base domain for virtual-host style bucket addressing")
    up.add_argument("--region", default="us-east-1")
    up.add_argument("--repair-rate", type=_non_negative, default=200.0, help="repair MB/s (0: no cap)")
    up.add_argument("--scrub-rate", type=_non_negative, default=50.0,
                    help="MB/s of stored data the background scrub reads (0: no cap)")
    up.add_argument("--scrub-interval", type=_non_negative, default=7.0, metavar="DAYS",
                    help="days from the end of one scrub pass to the start of the next")
    up.add_argument("--workers", type=int, default=None,
                    help="S3 gateway processes (default: one per core, at most 8)")
    up.add_argument("--request-memory", type=_mib, default=None, metavar="MIB",
                    help="MiB the buffers of the S3 requests in flight may hold, all gateway "
                         "processes together; requests beyond it wait, then get 503 SlowDown "
                         "(default: a quarter of RAM)")
    up.set_defaults(fn=cmd_up)

    user = sub.add_parser("user", help="manage users (accounts)")
    usub = user.add_subparsers(dest="action", required=True)
    for action in ("create", "delete"):
        sp = usub.add_parser(action)
        sp.add_argument("name")
        data_dir(sp)
    data_dir(usub.add_parser("list"))
    user.set_defaults(fn=cmd_user)

    key = sub.add_parser("key", help="manage access keys")
    ksub = key.add_subparsers(dest="action", required=True)
    sp = ksub.add_parser("create")
    sp.add_argument("user")
    data_dir(sp)
    sp = ksub.add_parser("list")
    sp.add_argument("user", nargs="?")
    data_dir(sp)
    sp = ksub.add_parser("delete")
    sp.add_argument("access_key_id")
    data_dir(sp)
    key.set_defaults(fn=cmd_key)

    fs = sub.add_parser("fsck", help="check that every shard is referenced and present")
    data_dir(fs)
    fs.add_argument("--verify", action="store_true", help="also verify every shard's checksums")
    fs.set_defaults(fn=cmd_fsck)

    rep = sub.add_parser("repair", help="show the repair backlog; change the repair rate live")
    data_dir(rep)
    rep.add_argument("--rate", type=_non_negative, help="new repair rate in MB/s for running nodes "
                                                "(0: unlimited)")
    rep.set_defaults(fn=cmd_repair)

    scr = sub.add_parser("scrub", help="show the background scrub's progress; start a pass, "
                                       "change its rate live")
    data_dir(scr)
    scr.add_argument("--start", action="store_true",
                     help="ask the running node for a pass now")
    scr.add_argument("--rate", type=_non_negative, help="new scrub rate in MB/s for the running node "
                                                "(0: unlimited)")
    scr.set_defaults(fn=cmd_scrub)

    disk = sub.add_parser("disk", help="list the node's disks; replace a failed one")
    dsub = disk.add_subparsers(dest="action", required=True)
    data_dir(dsub.add_parser("list"))
    sp = dsub.add_parser("replace", help="take a new, empty disk for DEVICE and rebuild "
                                         "its shards onto it (the node may be running)")
    sp.add_argument("device", help="the device whose disk was replaced (d0, d1, ...)")
    sp.add_argument("--path", help="where the new disk is mounted (default: the old disk's "
                                   "path)")
    data_dir(sp)
    disk.set_defaults(fn=cmd_disk)

    loc = sub.add_parser("locate", help="show where an object's shards are stored")
    loc.add_argument("bucket")
    loc.add_argument("key")
    data_dir(loc)
    loc.set_defaults(fn=cmd_locate)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("APPLIANCE_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except AccountError as e:
        print(f"appliance: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
