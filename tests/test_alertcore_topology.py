"""alertcore.topology: device metadata and topology inference use Store methods only (a stand-in
with just those methods is enough), and the hub fans changes out to asyncio subscribers."""
from __future__ import annotations

import asyncio
import json

from collector.alertcore.hub import ChangeHub
from collector.alertcore.topology import DeviceMeta, Topology, build_topology


class FakeStore:
    """Only the Store methods alertcore.topology may use."""

    def __init__(self):
        self.info = {"ag": {"devices": [{"id": "core1", "type": "core"}, {"id": "sw1", "type": "switch"},
                                        {"id": "cam1", "type": "camera", "room": "A-1", "tags": {"z": 1}}]}}
        self.devs = {"core1": {"id": "core1", "agent": "ag", "facts": {}},
                     "sw1": {"id": "sw1", "agent": "ag", "facts": {"sysName": "SW1.x"}},
                     "cam1": {"id": "cam1", "agent": "ag", "building": "A", "site": "n",
                              "facts": {"mac": "00:1a:2b:3c:4d:5e"}}}
        self.topo = {"lldp": [{"device": "core1", "tags": {"ifIndex": "1", "remote_name": "sw1.X"}}],
                     "fdb": [{"device": "sw1", "tags": {"ifIndex": "5", "mac": "001a.2b3c.4d5e"}}], "arp": []}
        self.calls = 0

    def device(self, d):
        return self.devs.get(d)

    def agent_info(self, a):
        return self.info.get(a)

    def devices(self):
        return list(self.devs.values())

    def agents(self, now_ms, stale_ms):
        return [{"id": a, "info": i} for a, i in self.info.items()]

    def topology_current(self, kind, **kw):
        self.calls += 1
        return self.topo.get(kind, [])


def test_device_meta_from_store():
    st = FakeStore()
    dm = DeviceMeta(st)
    assert dm("cam1") == {"site": "n", "building": "A", "agent": "ag", "tags": {"z": "1"},
                          "room": "A-1", "type": "camera"}
    assert dm("nope") is None and "nope" in dm.missing


def test_topology_lldp_then_fdb_and_refresh():
    st = FakeStore()
    assert build_topology(st) == {"sw1": "core1", "cam1": "sw1"}
    t = {"now": 0.0}
    topo = Topology(st, refresh_s=60, clock=lambda: t["now"])
    assert topo("cam1") == "sw1" and topo("sw1") == "core1" and topo("core1") is None
    n = st.calls
    t["now"] = 30
    topo("cam1")
    assert st.calls == n                      # cached within refresh_s
    topo.invalidate()
    topo("cam1")
    assert st.calls > n


def test_hub_fans_out_and_resyncs_slow_clients():
    hub = ChangeHub(max_queue=2)

    async def main():
        loop = asyncio.get_running_loop()
        sid, q = hub.subscribe(loop)
        for i in range(3):
            hub.publish({"kind": "firing", "n": i})
        await asyncio.sleep(0.05)
        got = [json.loads(q.get_nowait()) for _ in range(q.qsize())]
        hub.unsubscribe(sid)
        return got
    got = asyncio.run(main())
    assert got[-1] == {"kind": "resync"} and hub.clients == 0
