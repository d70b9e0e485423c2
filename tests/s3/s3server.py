"""Run S3App under hypercorn (trio worker) over a real SqliteMeta + Store (ec:4+2 on six
stand-in disks) in a data directory: the test fixture's server process.

    python s3server.py DATA_DIR --fd N [--domain D] [--body-timeout S]
                       [--memory-budget BYTES --admission-wait S]

Listens on the already-bound socket ``N`` (inherited, so the port is known before start and
never raced for). Creates users ``root`` and ``other`` with keys on first start and prints one
JSON line ``{"root": [akid, secret], "other": [akid, secret]}`` once serving. Runs the
store's Repairer (repair and garbage collection) beside it. SIGTERM/SIGINT: graceful shutdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import hypercorn.config  # noqa: E402
import hypercorn.trio  # noqa: E402
import trio  # noqa: E402

from appliance.accounts import Accounts  # noqa: E402
from appliance.meta import SqliteMeta  # noqa: E402
from appliance.namespace import Namespace  # noqa: E402
from appliance.s3.app import S3App  # noqa: E402
from appliance.s3.http_compat import APP_QUEUE_SIZE, install_server_shims  # noqa: E402
from appliance.store import InProcessClient, ShardServer, Store  # noqa: E402
from appliance.store.repair import Repairer  # noqa: E402

USERS = ("root", "other")


async def main(args) -> None:
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    meta = SqliteMeta(str(data / "meta.db"))
    try:
        clients = {f"d{i}": InProcessClient(ShardServer(data / f"disk{i}", f"d{i}"))
                   for i in range(6)}
        store = await Store.open(meta, clients, "ec:4+2")
        await store.recover()
        ns, accounts = Namespace(meta, store), Accounts(meta)
        creds = {}
        for user in USERS:
            if await accounts.get_user(user) is None:
                await accounts.create_user(user)
                await accounts.create_key(user)
            key = (await accounts.list_keys(user))[0]
            creds[user] = [key.access_key_id, key.secret_access_key]
        install_server_shims()  # as appliance.gateway does
        cfg = hypercorn.config.Config()
        cfg.bind = [f"fd://{args.fd}"]
        cfg.accesslog = None
        cfg.graceful_timeout = 2
        cfg.max_app_queue_size = APP_QUEUE_SIZE
        app = S3App(ns, accounts, region="us-east-1", domain=args.domain,
                    body_timeout=args.body_timeout, memory_budget=args.memory_budget,
                    admission_wait=args.admission_wait)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, stop)
            nursery.start_soon(Repairer(store, idle_s=0.1).run)  # repair + garbage collection
            print(json.dumps(creds), flush=True)
            await hypercorn.trio.serve(app, cfg, shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()
    finally:
        await meta.aclose()


async def _signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        async for _ in sigs:
            stop.set()
            return


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--domain")
    p.add_argument("--body-timeout", type=float, default=60.0)
    p.add_argument("--memory-budget", type=int, default=None, help="bytes (default: no limit)")
    p.add_argument("--admission-wait", type=float, default=10.0)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(main, a)
