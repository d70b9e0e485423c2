import pytest

from appliance.meta import SqliteMeta
from appliance.namespace import Namespace
from appliance.store import InProcessClient, ShardServer, Store


class Node:
    """A store over six real directories and a real SQLite file, as `appliance up` builds it."""

    def __init__(self, tmp_path, pool="ec:4+2", disks=6):
        self.tmp = tmp_path
        self.pool = pool
        self.disks = disks

    async def __aenter__(self):
        self.meta = SqliteMeta(str(self.tmp / "meta.db"))
        self.servers = {f"d{i}": ShardServer(self.tmp / f"disk{i}", f"d{i}")
                        for i in range(self.disks)}
        self.clients = {d: InProcessClient(s) for d, s in self.servers.items()}
        self.store = await Store.open(self.meta, self.clients, self.pool)
        self.ns = Namespace(self.meta, self.store)
        return self

    async def __aexit__(self, *exc):
        for client in self.clients.values():
            client.close()
        for server in self.servers.values():
            server.close()
        await self.meta.aclose()

    def shard_path(self, extent, index):
        dev = self.store.pools[extent.pool].devices_for(extent.sid)[index]
        return self.servers[dev].path(extent.sid, index)


@pytest.fixture
def node_factory(tmp_path):
    return lambda **kw: Node(tmp_path, **kw)
