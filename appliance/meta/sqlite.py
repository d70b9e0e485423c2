"""Embedded metadata engine: SQLite in WAL mode with synchronous=FULL and group commit.

Writes: one writer thread owns the write connection. Transactions queue up while the previous
batch is being fsync'd and are then applied together in one SQLite transaction, so N concurrent
writers cost one fsync (DESIGN.md §5: ~0.3 ms per batch). Each transaction inside a batch sees
the effects of the ones before it, exactly as if they had committed one by one.

Reads: point reads and scans run on the trio thread with a read-only connection. In WAL mode a
reader never waits for the writer, and a cached B-tree lookup (~10 us) is cheaper than a hop to
a worker thread (~60 us); a cold page costs one disk read on the event loop, which we accept.

Several processes open the same database (the node's gateway processes, the CLI while the
appliance runs). Their writers queue on an flock of ``<db>.writer-lock`` before BEGIN
IMMEDIATE: the kernel wakes a waiter the moment the lock is free, whereas SQLite's own busy
handler sleeps 1, 2, 5, 10, ... 100 ms between attempts (measured: 4 KiB PUT p99 89 ms with two
gateways on SQLite's handler, see :class:`_WriterLock`).

Full disk: an 8 MiB ballast file beside the database (diskspace.Ballast) is given up when a
commit fails with SQLITE_FULL, and the commit retried once, so that deletes still commit on a
filesystem another process filled to the last byte; it is restored once there is room.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass

import trio

from ..diskspace import Ballast, check_room
from .base import KV, Compare, Delete, LeaseNotFound, MetaError, MetaStore, Op, Put, TxnResult

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    mod_rev INTEGER NOT NULL,
    lease INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expiry REAL NOT NULL);
CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 0), rev INTEGER NOT NULL);
INSERT OR IGNORE INTO revision VALUES (0, 0);
"""

_MAX_BATCH = 256
_LEASE_SWEEP_S = 1.0
BALLAST_CHECK_S = 10.0
"""Seconds between looks (after a commit) at whether a ballast given up can be restored."""


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class _WriterLock:
    """Exclusive right to write the database at ``path``, across threads and processes: an
    flock on ``<path>.writer-lock`` through a descriptor of its own (flock excludes open file
    descriptions, so each thread that writes needs its own instance). Taken around every
    write transaction; blocks until free."""

    def __init__(self, path: str):
        self._fd = os.open(path + ".writer-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class _Pending:
    compare: list[Compare]
    success: list[Op]
    failure: list[Op]
    token: trio.lowlevel.TrioToken
    done: trio.Event
    result: TxnResult | BaseException | None = None


class SqliteMeta(MetaStore):
    """``SqliteMeta(path)``: open (creating if needed) the database file at ``path``."""

    def __init__(self, path: str):
        self.path = path
        self._dir = os.path.dirname(os.path.abspath(path))
        init = _connect(path)
        init.executescript(_SCHEMA)
        init.close()
        self._ballast = Ballast(path + ".ballast")
        self._ballast.restore()
        self._read = _connect(path)
        self._read.execute("PRAGMA query_only=1")
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="meta-writer", daemon=True)
        self._writer.start()

    # -- reads ---------------------------------------------------------------------------
    async def get(self, key: bytes) -> KV | None:
        row = self._read.execute(
            "SELECT key, value, mod_rev, lease FROM kv WHERE key = ?", (key,)
        ).fetchone()
        return KV(bytes(row[0]), bytes(row[1]), row[2], row[3]) if row else None

    async def scan(
        self, start: bytes, end: bytes = b"", *, limit: int = 0, reverse: bool = False
    ) -> list[KV]:
        sql = "SELECT key, value, mod_rev, lease FROM kv WHERE key >= ?"
        args: list = [start]
        if end:
            sql += " AND key < ?"
            args.append(end)
        sql += " ORDER BY key DESC" if reverse else " ORDER BY key"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [KV(bytes(k), bytes(v), r, ls) for k, v, r, ls in self._read.execute(sql, args)]

    async def count_prefix(self, prefix: bytes) -> int:
        from .base import prefix_end

        end = prefix_end(prefix)
        sql = "SELECT count(*) FROM kv WHERE key >= ?" + (" AND key < ?" if end else "")
        return self._read.execute(sql, (prefix, end) if end else (prefix,)).fetchone()[0]

    # -- writes --------------------------------------------------------------------------
    async def txn(
        self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> TxnResult:
        if self._closed:
            raise MetaError("metadata store is closed")
        p = _Pending(list(compare), list(success), list(failure or []),
                     trio.lowlevel.current_trio_token(), trio.Event())
        self._queue.put(p)
        # Shielded: once queued the transaction will commit; a cancelled caller must not
        # believe it did not.
        with trio.CancelScope(shield=True):
            await p.done.wait()
        if isinstance(p.result, BaseException):
            raise p.result
        assert p.result is not None
        return p.result

    def check_room(self) -> None:
        # A ballast given up is not room for new data: it is kept for deletes until restored.
        check_room(self._dir, keep=0 if self._ballast.in_place else self._ballast.size)

    async def lease_grant(self, ttl: float) -> int:
        return await self._run_write(lambda c: self._do_lease_grant(c, ttl))

    async def lease_keepalive(self, lease: int) -> None:
        await self._run_write(lambda c: self._do_lease_keepalive(c, lease))

    async def lease_revoke(self, lease: int) -> None:
        await self._run_write(lambda c: self._do_lease_revoke(c, lease))

    async def _run_write(self, fn):
        # Lease operations are rare: run them in a worker thread with a connection of their own.
        def work():
            conn = _connect(self.path)
            lock = _WriterLock(self.path)
            try:
                with lock:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        out = fn(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                return out
            finally:
                lock.close()
                conn.close()

        return await trio.to_thread.run_sync(work)

    @staticmethod
    def _do_lease_grant(conn: sqlite3.Connection, ttl: float) -> int:
        cur = conn.execute("INSERT INTO lease (ttl, expiry) VALUES (?, ?)", (ttl, time.time() + ttl))
        return cur.lastrowid

    @staticmethod
    def _do_lease_keepalive(conn: sqlite3.Connection, lease: int) -> None:
        cur = conn.execute(
            "UPDATE lease SET expiry = ? + ttl WHERE id = ? AND expiry > ?",
            (time.time(), lease, time.time()),
        )
        if cur.rowcount == 0:
            raise LeaseNotFound(f"lease {lease} not found or expired")

    @staticmethod
    def _do_lease_revoke(conn: sqlite3.Connection, lease: int) -> None:
        SqliteMeta._bump_and_delete_leased(conn, [lease])

    @staticmethod
    def _bump_and_delete_leased(conn: sqlite3.Connection, leases: list[int]) -> None:
        for lease in leases:
            conn.execute("DELETE FROM kv WHERE lease = ?", (lease,))
            conn.execute("DELETE FROM lease WHERE id = ?", (lease,))
        conn.execute("UPDATE revision SET rev = rev + 1 WHERE id = 0")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await trio.to_thread.run_sync(self._writer.join)
        self._read.close()

    # -- the writer thread ---------------------------------------------------------------
    def _write_loop(self) -> None:
        conn = _connect(self.path)
        self._lock = _WriterLock(self.path)
        last_sweep = 0.0
        last_ballast_check = time.monotonic()
        try:
            while True:
                try:
                    first = self._queue.get(timeout=_LEASE_SWEEP_S)
                except queue.Empty:
                    first = ...
                if time.monotonic() - last_sweep >= _LEASE_SWEEP_S:
                    last_sweep = time.monotonic()
                    with self._lock:
                        self._sweep_leases(conn)
                if first is ...:
                    continue
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                with self._lock:
                    self._commit_batch(conn, batch)
                if time.monotonic() - last_ballast_check >= BALLAST_CHECK_S:
                    last_ballast_check = time.monotonic()
                    self._ballast.restore()
                if stop:
                    return
        finally:
            self._lock.close()
            conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        try:
            try:
                results = self._apply_batch(conn, batch)
            except sqlite3.Error as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_FULL or not self._ballast.release():
                    raise
                log.warning("metadata disk full: gave up the %d MiB ballast (%s) so that "
                            "deletes can commit", self._ballast.size >> 20, self._ballast.path)
                results = self._apply_batch(conn, batch)
        except BaseException as e:  # noqa: BLE001 - delivered to every waiting caller
            log.exception("metadata commit failed")
            err = MetaError(f"metadata commit failed: {e}")
            results = [err] * len(batch)
        for p, res in zip(batch, results):
            p.result = res
            p.token.run_sync_soon(p.done.set)

    def _apply_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> list[TxnResult]:
        """Apply ``batch`` in one SQLite transaction; rolled back if anything raises."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            rev = conn.execute("SELECT rev FROM revision WHERE id = 0").fetchone()[0]
            results = []
            for p in batch:
                res, rev = self._apply(conn, p, rev)
                results.append(res)
            conn.execute("UPDATE revision SET rev = ? WHERE id = 0", (rev,))
            conn.execute("COMMIT")
            return results
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    @staticmethod
    def _apply(conn: sqlite3.Connection, p: _Pending, rev: int) -> tuple[TxnResult, int]:
        failed = []
        for c in p.compare:
            row = conn.execute("SELECT mod_rev FROM kv WHERE key = ?", (c.key,)).fetchone()
            if (row[0] if row else 0) != c.mod_rev:
                failed.append(c.key)
        ops = p.failure if failed else p.success
        if ops:
            rev += 1
            for op in ops:
                if isinstance(op, Put):
                    conn.execute(
                        "INSERT OR REPLACE INTO kv (key, value, mod_rev, lease) VALUES (?,?,?,?)",
                        (op.key, op.value, rev, op.lease),
                    )
                elif isinstance(op, Delete):
                    conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                else:  # pragma: no cover - programming error
                    raise TypeError(f"not a metadata op: {op!r}")
        return TxnResult(not failed, rev, failed), rev

    @staticmethod
    def _sweep_leases(conn: sqlite3.Connection) -> None:
        try:
            expired = [r[0] for r in conn.execute(
                "SELECT id FROM lease WHERE expiry < ?", (time.time(),))]
            if expired:
                conn.execute("BEGIN IMMEDIATE")
                SqliteMeta._bump_and_delete_leased(conn, expired)
                conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("lease sweep failed")
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
