"""SNMP topology walks (background tasks of the SNMP driver) stay inside the agent's
``polling.max_concurrent`` slots.

Real peers: snmpsim serves the HP ProCurve 2810 recording (FDB + ARP tables) under one community
per device; a UDP relay on 127.0.0.1 in front of it delays every request a little and records how
many client sockets (source ports) have a request outstanding at once. Each poll cycle and each
topology collection uses its own socket, so that count is the number of SNMP conversations in
flight. net-snmp's snmpbulkwalk is the oracle for the FDB content.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from collections import Counter

import pytest

from drivers import base
from drivers.base import Sample, Slots, install_slots
from drivers.snmp import Options, SnmpDriver, create
from edge_agent import config
from tests.peers_snmp import Snmpsim, bulkwalk
from tests.test_snmp_profiles import HP

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")

COMMUNITIES = [f"slot-hp-{i}" for i in range(5)]
FDB_OID = "1.3.6.1.2.1.17.4.3.1.2"


@pytest.fixture(scope="module")
def sim():
    s = Snmpsim({c: HP for c in COMMUNITIES}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def want_fdb(sim):
    """FDB MACs of the recording, read by net-snmp (every device serves the same recording)."""
    return {":".join("%02x" % int(x) for x in k[len(FDB_OID) + 1:].split("."))
            for k in bulkwalk(sim.port, COMMUNITIES[0], FDB_OID)}


class SlowRelay(asyncio.DatagramProtocol):
    """UDP relay to ``upstream_port`` that delays each request by ``delay_s`` and keeps
    ``max_busy``: the most client source ports with a request outstanding at the same time."""

    def __init__(self, upstream_port: int, delay_s: float):
        self.upstream = ("127.0.0.1", upstream_port)
        self.delay_s = delay_s
        self.pending: dict[tuple, int] = {}
        self.max_busy = 0
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None
        self._up: dict[tuple, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.requests += 1
        self.pending[addr] = self.pending.get(addr, 0) + 1
        self.max_busy = max(self.max_busy, sum(1 for n in self.pending.values() if n))
        t = asyncio.get_running_loop().create_task(self._forward(data, addr))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _forward(self, data: bytes, addr: tuple) -> None:
        await asyncio.sleep(self.delay_s)
        if addr not in self._up:
            relay = self

            class Back(asyncio.DatagramProtocol):
                def datagram_received(self, reply: bytes, _src) -> None:
                    relay.pending[addr] = max(0, relay.pending.get(addr, 0) - 1)
                    if relay.transport is not None:
                        relay.transport.sendto(reply, addr)

            self._up[addr] = asyncio.ensure_future(asyncio.get_running_loop().create_datagram_endpoint(
                Back, remote_addr=self.upstream))
        transport, _ = await self._up[addr]
        transport.sendto(data)

    def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for f in self._up.values():
            if f.done() and not f.cancelled() and f.exception() is None:
                f.result()[0].close()
        if self.transport is not None:
            self.transport.close()


async def start_relay(upstream_port: int, delay_s: float = 0.01) -> tuple[SlowRelay, int]:
    relay = SlowRelay(upstream_port, delay_s)
    t, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
    return relay, t.get_extra_info("sockname")[1]


CONF = """\
agent: {{id: bldg-a, site: north, building: A}}
mqtt: {{host: 127.0.0.1, port: 1883, username: bldg-a, password: s3cret}}
queue: {{path: {queue}}}
polling: {{max_concurrent: {n}}}
devices:
{devices}"""


def _conf(tmp_path, port: int, communities: list[str], max_concurrent: int) -> config.LoadedConfig:
    devs = "".join(
        f"  - {{id: sw{i}, driver: snmp, interval_s: 1, deadline_s: 20, options: {{host: 127.0.0.1, port: {port}, "
        f"community: {c}, timeout_s: 2, retries: 1, topology_interval_s: 1}}}}\n" for i, c in enumerate(communities))
    p = tmp_path / "agent.yaml"
    p.write_text(CONF.format(queue=tmp_path / "q.db", n=max_concurrent, devices=devs))
    return config.load(p)


class _Done(Exception):
    pass


async def run_agent_until_topology(loaded: config.LoadedConfig, rounds: int = 2):
    """Run the agent's device tasks until every device delivered ``rounds`` topology collections
    (fdb samples) and an ok cycle. The timeout guards against a deadlock; it is not a measurement."""
    from edge_agent.main import Agent

    agent = Agent(loaded)
    got: list = []
    agent.batcher.add = got.extend
    ids = {d.id for d in loaded.model.devices}

    def progress():
        ok = {r.device for r in got if getattr(r, "measurement", None) == "agent_poll" and r.fields["ok"]}
        seen = Counter((r.device, r.tags.get("mac")) for r in got if getattr(r, "measurement", None) == "fdb")
        fdb_rounds = {d: max((n for (dev, _), n in seen.items() if dev == d), default=0) for d in ids}
        return ok, fdb_rounds

    try:
        async with asyncio.timeout(120):
            async with asyncio.TaskGroup() as tg:
                agent._start_devices(tg)
                while True:
                    await asyncio.sleep(0.05)
                    ok, fdb_rounds = progress()
                    if ok == ids and min(fdb_rounds.values()) >= rounds:
                        raise _Done   # leave the group: cancels the polling tasks
    except* _Done:
        pass
    finally:
        await agent._close_drivers()
        metrics = agent.self_metrics().fields
        agent.queue.close()
        install_slots(None)
    return agent, metrics, got


def fdb_by_device(got) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in got:
        if isinstance(r, Sample) and r.measurement == "fdb":
            out.setdefault(r.device, set()).add(r.tags["mac"])
    return out


@pytest.fixture
def background_topology(monkeypatch):
    """poll() hardly waits for the collection it starts, so the walks run in the background
    (as on a large switch, where they outlive poll()'s short wait) and only the slots bound them."""
    monkeypatch.setattr(SnmpDriver, "TOPOLOGY_WAIT_S", 0.001)


async def test_two_slots_bound_polls_and_topology_walks(sim, want_fdb, tmp_path, background_topology):
    relay, port = await start_relay(sim.port)
    try:
        agent, metrics, got = await run_agent_until_topology(_conf(tmp_path, port, COMMUNITIES, 2))
    finally:
        relay.close()
    assert relay.max_busy == 2            # the bound held, and was used (the measurement can see 2)
    assert fdb_by_device(got) == {f"sw{i}": want_fdb for i in range(5)}    # every device's topology
    assert {r.device for r in got if getattr(r, "measurement", None) == "system"} == {f"sw{i}" for i in range(5)}
    assert metrics["slot_waits_total"] == agent.slots.waits_total > 0 and metrics["slot_wait_s_total"] > 0


async def test_one_slot_does_not_deadlock(sim, want_fdb, tmp_path, caplog, background_topology):
    caplog.set_level(logging.DEBUG, logger="campus_sense.drivers")
    relay, port = await start_relay(sim.port)
    try:
        agent, metrics, got = await run_agent_until_topology(_conf(tmp_path, port, COMMUNITIES[:3], 1))
    finally:
        relay.close()
    assert relay.max_busy == 1
    assert fdb_by_device(got) == {f"sw{i}": want_fdb for i in range(3)}
    polls = [r for r in got if getattr(r, "measurement", None) == "agent_poll"]
    assert polls and all(r.fields["ok"] for r in polls)
    assert agent.slots.waits_total > 0 and "waiting for one of 1 polling slots" in caplog.text


async def test_poll_does_not_wait_for_a_collection_that_has_no_slot(sim, want_fdb, caplog):
    """Driver level, as the scheduler runs it with max_concurrent: 1: poll() holds the slot, so it
    returns without waiting; the collection runs once the slot is released."""
    caplog.set_level(logging.DEBUG, logger="campus_sense.drivers")
    slots = Slots(1)
    install_slots(slots)
    drv = create("sw-x", Options(host="127.0.0.1", port=sim.port, community=COMMUNITIES[0], timeout_s=2), {})
    try:
        async with slots.hold("cycle"):
            recs = await drv.poll()
            task = drv._topo_task
            assert task is not None and not task.done()
            assert not any(isinstance(r, Sample) and r.measurement == "fdb" for r in recs)
            await asyncio.sleep(0)                                    # let the collection ask for a slot
            assert slots.in_use == 1 and slots.waits_total == 1       # it is queued behind this cycle
            assert "device sw-x topology: waiting for one of 1 polling slots" in caplog.text
        await asyncio.wait({task})
        async with slots.hold("cycle"):
            recs = await drv.poll()
        assert {r.tags["mac"] for r in recs if isinstance(r, Sample) and r.measurement == "fdb"} == want_fdb
        assert slots.in_use == 0
    finally:
        await drv.close()
        install_slots(None)


async def test_close_cancels_a_collection_waiting_for_a_slot(sim):
    slots = Slots(1)
    install_slots(slots)
    drv = create("sw-y", Options(host="127.0.0.1", port=sim.port, community=COMMUNITIES[1], timeout_s=2), {})
    try:
        async with slots.hold("cycle"):
            await drv.poll()
            task = drv._topo_task
            await drv.close()
        assert task.cancelled()
        assert slots.in_use == 0 and slots.free()          # nothing leaked
    finally:
        install_slots(None)


async def test_without_an_agent_topology_is_unlimited(sim, want_fdb):
    """snmp-inventory, tests, tools: no slots installed, the collection starts at once and poll()
    gets its samples in the same call."""
    assert base._slots.get() is None and base.slot_free()
    drv = create("sw-z", Options(host="127.0.0.1", port=sim.port, community=COMMUNITIES[2], timeout_s=2), {})
    try:
        recs = await drv.poll()
    finally:
        await drv.close()
    assert {r.tags["mac"] for r in recs if isinstance(r, Sample) and r.measurement == "fdb"} == want_fdb
