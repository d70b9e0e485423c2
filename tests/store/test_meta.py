"""The SQLite metadata engine: ordering, compare-and-swap, group commit, leases, two processes."""

import subprocess
import sys

import trio

from appliance.meta import Compare, Delete, Put, SqliteMeta


async def test_scan_is_byte_ordered_and_bounded(tmp_path):
    m = SqliteMeta(str(tmp_path / "m.db"))
    keys = [b"o/b/a", b"o/b/a/", b"o/b/a/b", b"o/b/\xc3\xbc", b"o/b/Z", b"o/c/x"]
    for k in keys:
        await m.put(k, b"v")
    got = [kv.key for kv in await m.scan_prefix(b"o/b/")]
    assert got == sorted(k for k in keys if k.startswith(b"o/b/"))
    assert [kv.key for kv in await m.scan_prefix(b"o/b/", after=b"o/b/a/", limit=1)] == [b"o/b/a/b"]
    assert await m.count_prefix(b"o/") == 6
    await m.aclose()


async def test_compare_and_swap(tmp_path):
    m = SqliteMeta(str(tmp_path / "m.db"))
    res = await m.txn([Compare(b"k", 0)], [Put(b"k", b"1")])
    assert res.succeeded
    rev = (await m.get(b"k")).mod_rev
    assert not (await m.txn([Compare(b"k", 0)], [Put(b"k", b"2")])).succeeded
    res = await m.txn([Compare(b"k", rev)], [Put(b"k", b"3"), Delete(b"x")], [Put(b"f", b"")])
    assert res.succeeded and (await m.get(b"k")).value == b"3"
    res = await m.txn([Compare(b"k", rev)], [Put(b"k", b"4")], [Put(b"f", b"failed")])
    assert not res.succeeded and res.failed_keys == [b"k"]
    assert (await m.get(b"f")).value == b"failed" and (await m.get(b"k")).value == b"3"
    await m.aclose()


async def test_concurrent_increments_are_serialisable(tmp_path):
    """100 tasks doing read-CAS-retry increments: group commit must not lose any."""
    m = SqliteMeta(str(tmp_path / "m.db"))
    await m.put(b"n", b"0")

    async def incr():
        while True:
            kv = await m.get(b"n")
            if (await m.txn([Compare(b"n", kv.mod_rev)],
                            [Put(b"n", b"%d" % (int(kv.value) + 1))])).succeeded:
                return

    async with trio.open_nursery() as n:
        for _ in range(100):
            n.start_soon(incr)
    assert (await m.get(b"n")).value == b"100"
    await m.aclose()


async def test_lease_expiry_deletes_keys(tmp_path):
    m = SqliteMeta(str(tmp_path / "m.db"))
    lease = await m.lease_grant(0.5)
    await m.put(b"lock", b"me", lease=lease)
    await m.lease_keepalive(lease)
    assert await m.get(b"lock") is not None
    await trio.sleep(2.5)
    assert await m.get(b"lock") is None
    await m.aclose()


async def test_committed_data_survives_a_killed_process(tmp_path):
    """A transaction acknowledged in a process that is then SIGKILLed is still there."""
    db = tmp_path / "m.db"
    code = (
        "import trio, sys, os, signal\n"
        "from appliance.meta import SqliteMeta\n"
        "async def main():\n"
        f"    m = SqliteMeta({str(db)!r})\n"
        "    for i in range(50):\n"
        "        await m.put(b'k%03d' % i, b'v')\n"
        "    print('acked', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "trio.run(main)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "acked" in out.stdout and out.returncode == -9
    m = SqliteMeta(str(db))
    assert await m.count_prefix(b"k") == 50
    await m.aclose()


async def test_writers_in_several_processes_are_serialisable(tmp_path):
    """Three processes (as a node's gateways) doing read-CAS-retry increments on one key and
    plain puts of their own keys: no increment is lost, every put lands, revisions stay
    unique."""
    db = tmp_path / "m.db"
    m = SqliteMeta(str(db))
    await m.put(b"n", b"0")
    code = (
        "import sys, trio\n"
        "from appliance.meta import Compare, Put, SqliteMeta\n"
        "async def main():\n"
        f"    m = SqliteMeta({str(db)!r})\n"
        "    async def incr(i):\n"
        "        while True:\n"
        "            kv = await m.get(b'n')\n"
        "            res = await m.txn([Compare(b'n', kv.mod_rev)],\n"
        "                              [Put(b'n', b'%d' % (int(kv.value) + 1))])\n"
        "            if res.succeeded:\n"
        "                break\n"
        "        await m.put(b'p/%s/%d' % (sys.argv[1].encode(), i), b'x')\n"
        "    async with trio.open_nursery() as n:\n"
        "        for i in range(40):\n"
        "            n.start_soon(incr, i)\n"
        "    await m.aclose()\n"
        "trio.run(main)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p)]) for p in range(3)]
    for p in procs:
        assert await trio.to_thread.run_sync(p.wait) == 0
    assert (await m.get(b"n")).value == b"120"
    puts = await m.scan_prefix(b"p/")
    assert len(puts) == 120
    assert len({kv.mod_rev for kv in puts}) == 120
    await m.aclose()
