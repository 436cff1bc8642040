"""Bounded concurrency across devices: the agent polls its SNMP devices with at most
``polling.max_concurrent`` cycles at once (real simulated v2c agents on loopback)."""
from __future__ import annotations

import asyncio
import secrets

import pytest

from campus_sense.sim.snmp_agent import start_simulated_device
from campus_sense.yamlconf import ConfigError
from drivers.snmp import SnmpDriver
from edge_agent import config

CONF = """\
agent: {{id: bldg-a, site: north, building: A}}
mqtt: {{host: 127.0.0.1, port: 1883, username: bldg-a, password: s3cret}}
queue: {{path: {queue}}}
{polling}devices:
{devices}"""


def _conf(tmp_path, ports: list[int], community: str, polling: str) -> config.LoadedConfig:
    devs = "".join(
        f"  - {{id: sw{i}, driver: snmp, interval_s: 1, deadline_s: 5, options: {{host: 127.0.0.1, port: {p}, "
        f"community: {community}, timeout_s: 1, topology_interval_s: 0}}}}\n" for i, p in enumerate(ports))
    p = tmp_path / "agent.yaml"
    p.write_text(CONF.format(queue=tmp_path / "q.db", polling=polling, devices=devs))
    return config.load(p)


class _Done(Exception):
    pass


def test_polling_section_defaults_and_validation(tmp_path):
    c = _conf(tmp_path, [1161], "c-x", "")
    assert c.model.polling.max_concurrent == 32
    c = _conf(tmp_path, [1161], "c-x", "polling: {max_concurrent: 3}\n")
    assert c.model.polling.max_concurrent == 3
    with pytest.raises(ConfigError) as e:
        _conf(tmp_path, [1161], "c-x", "polling: {max_concurrent: 0}\n")
    assert "polling.max_concurrent" in str(e.value) and "agent.yaml:4" in str(e.value)


async def test_agent_bounds_concurrent_snmp_polls(tmp_path, monkeypatch):
    from edge_agent.main import Agent

    community = "c-" + secrets.token_hex(6)
    devs = [await start_simulated_device("access", community) for _ in range(6)]
    loaded = _conf(tmp_path, [d.port for d in devs], community, "polling: {max_concurrent: 2}\n")
    running = {"now": 0, "max": 0}
    orig_poll = SnmpDriver.poll

    async def tracked_poll(self):
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        try:
            await asyncio.sleep(0.2)          # make the cycles overlap
            return await orig_poll(self)
        finally:
            running["now"] -= 1

    monkeypatch.setattr(SnmpDriver, "poll", tracked_poll)
    agent = Agent(loaded)
    got: list = []
    agent.batcher.add = got.extend
    ok: set[str] = set()
    try:
        async with asyncio.timeout(20):
            async with asyncio.TaskGroup() as tg:
                agent._start_devices(tg)
                while len(ok) < 6:
                    await asyncio.sleep(0.05)
                    ok = {r.device for r in got if getattr(r, "measurement", None) == "agent_poll" and r.fields["ok"]}
                raise _Done  # leave the group: cancels the polling tasks
    except* _Done:
        pass
    finally:
        await agent._close_drivers()
        agent.queue.close()
        for d in devs:
            d.close()
    assert ok == {f"sw{i}" for i in range(6)}
    assert running["max"] == 2
    assert {r.device for r in got if getattr(r, "measurement", None) == "interface"} == ok    # real data from every device


async def test_polling_task_stops_even_if_the_driver_swallows_the_cancel():
    """Python 3.11's asyncio.wait_for (used by the SNMP clients) returns the reply instead of
    raising when a cancel arrives in the same loop step as the reply. The agent stops its device
    tasks by cancelling them (TaskGroup); a swallowed cancel must not keep a task running forever."""
    from edge_agent.scheduler import run_polling

    started = asyncio.Event()

    class Swallowing:
        swallowed = 0

        async def poll(self):
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1           # once: what wait_for does when the reply won the race
            return []

    got: list = []
    task = asyncio.create_task(run_polling("d1", "fake", Swallowing(), 0.01, 3600, got.extend, jitter_s=0))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)    # a guard against hanging, not a measurement
    assert task in done and task.cancelled()
    assert [s.fields["ok"] for s in got] == [True]     # the interrupted cycle still reported
