"""Scheduler: how each kind of driver failure becomes an agent_poll sample."""
import asyncio

import pytest

from drivers.base import DeviceError, Sample
from edge_agent.scheduler import poll_once, run_polling, run_streaming


class Driver:
    def __init__(self, behaviour):
        self.behaviour = behaviour

    async def poll(self):
        return await self.behaviour()


async def ok():
    return [Sample("x", "d1", {"v": 1})]


async def auth():
    raise DeviceError("auth", "wrong community")


async def hang():
    await asyncio.sleep(3600)


async def bug():
    raise KeyError("ifDescr")


@pytest.mark.parametrize("behaviour,reason", [(auth, "auth"), (hang, "timeout"), (bug, "error")])
async def test_failures_become_reasons(behaviour, reason, caplog):
    got = []
    s = await poll_once("dev-7", "fake", Driver(behaviour), 0.2, got.extend)
    assert s.measurement == "agent_poll" and s.device == "dev-7" and s.tags == {"driver": "fake"}
    assert s.fields["ok"] is False and s.fields["reason"] == reason and s.fields["error"]
    assert got == []
    if reason == "error":  # unexpected exceptions are logged with the device and a traceback
        assert "dev-7" in caplog.text and "KeyError" in caplog.text


async def test_ok_poll_passes_records_on():
    got = []
    s = await poll_once("d1", "fake", Driver(ok), 1, got.extend)
    assert s.fields == {"ok": True, "duration_s": s.fields["duration_s"]} and got[0].fields == {"v": 1}


async def test_loop_survives_failures():
    got = []
    calls = 0

    async def flaky():
        nonlocal calls
        calls += 1
        if calls % 2:
            raise RuntimeError("boom")
        return []

    task = asyncio.create_task(run_polling("d1", "fake", Driver(flaky), 0.01, 1, got.extend, jitter_s=0))
    while len(got) < 6:
        await asyncio.sleep(0.01)
    task.cancel()
    assert [s.fields["ok"] for s in got[:6]] == [False, True] * 3


async def test_streaming_driver_restarts_and_reports():
    got = []

    class Stream:
        runs = 0

        async def run(self, emit):
            Stream.runs += 1
            emit(Sample("door", "d2", {"open": True}))
            raise DeviceError("unreachable", "controller gone")

    task = asyncio.create_task(run_streaming("d2", "fake", Stream(), got.extend, max_backoff_s=0.01))
    while Stream.runs < 2 or len(got) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    assert got[0].measurement == "door"
    assert got[1].measurement == "agent_poll" and got[1].fields["reason"] == "unreachable"
