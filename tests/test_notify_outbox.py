"""Durable outbox: dead and hanging channels retry with backoff and never hold up other
channels or the caller; failures are visible; a restart resumes pending deliveries."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from collector.notify import Notifier as _Notifier
from collector.notify.api import router as notify_router
from collector.notify.config import from_dict
from collector.notify.outbox import backoff
from tests.peers import free_port
from tests.pg_fixture import pg_server, store_target  # noqa: F401 - both backends
from tests.test_notify_support import RobotServer, port_is_closed, wait_until, alert_change

# ------------------------------------------------------------------ both backends (SQLite, PostgreSQL)
_BACKEND: dict = {}


@pytest.fixture(autouse=True)
def backend(store_target):
    _BACKEND["new"] = store_target
    yield store_target
    _BACKEND.clear()


def Notifier(config, db, **kw):
    """The outbox on the test's backend: a SQLite path, or the PostgreSQL database named after it."""
    new = _BACKEND["new"]
    return _Notifier(config, db if new.kind == "sqlite" else new(Path(str(db)).stem), **kw)


T0 = 1_795_000_000.0


def change(aid="a1", state="firing"):
    return alert_change(aid, "link_down", "critical", state,
                        labels={"building": "A", "device": "sw1", "room": "A-1"}, summary="uplink down",
                       started_at=T0)


@pytest.fixture
def robots():
    r = RobotServer().start()
    yield r
    r.stop()


def cfg(channels: dict, retry: dict | None = None) -> object:
    return from_dict({"channels": channels, "route": {"channels": list(channels), "group_wait": 0},
                      "outbox": {"retry": retry or {"max_attempts": 4, "initial_backoff": 0.2, "max_backoff": 5}}})


def test_backoff_is_exponential_with_bounded_jitter():
    for k in range(1, 10):
        d = min(60.0, 1.0 * 2 ** (k - 1))
        assert backoff(k, 1.0, 60.0, rnd=lambda: 0.0) == d / 2
        assert backoff(k, 1.0, 60.0, rnd=lambda: 1.0) == d
    assert backoff(20, 1.0, 60.0, rnd=lambda: 1.0) == 60.0


async def test_dead_channel_retries_then_fails_while_others_deliver(tmp_path, robots):
    dead = free_port()
    assert port_is_closed(dead)
    n = Notifier(cfg({"good": {"type": "webhook", "url": robots.url("/hook/good")},
                      "dead": {"type": "webhook", "url": f"http://127.0.0.1:{dead}/hook"}}),
                 tmp_path / "n.db", clock=lambda: T0)
    await n.start()
    try:
        n.on_alert_change(change())
        # the listener only inserted rows: nothing was delivered inline
        rows = n.deliveries()
        assert {(d["channel"], d["state"], d["attempts"]) for d in rows} == {("good", "pending", 0),
                                                                              ("dead", "pending", 0)}
        snapshots = {}

        def dead_row():
            d = n.deliveries(channel="dead")[0]
            if d["state"] == "pending" and d["attempts"]:
                snapshots[d["attempts"]] = (d["last_attempt_at"], d["next_attempt_at"])
            return d if d["state"] == "failed" else None

        final = await wait_until(dead_row, what="dead channel failed")
    finally:
        await n.stop()
    good = n.deliveries(channel="good")[0]
    assert good["state"] == "sent" and good["attempts"] == 1
    assert good["sent_at"] < final["last_attempt_at"]           # not held up by the dead channel
    assert len(robots.accepted_on("/hook/good")) == 1
    assert final["attempts"] == 4
    assert "127.0.0.1" in final["last_error"] and "gave up after 4 attempts" in final["last_error"]
    # exponential backoff with jitter: retry k waits within [d/2, d], d = 0.2 * 2**(k-1)
    assert snapshots, "no retry was observed"
    for k, (last, nxt) in snapshots.items():
        d = 0.2 * 2 ** (k - 1)
        assert d / 2 - 1e-6 <= nxt - last <= d + 1e-6, (k, nxt - last)
    st = n.status()
    assert st["channels"]["dead"]["failed"] == 1 and st["channels"]["good"]["sent"] == 1
    assert st["channels"]["dead"]["ok"] is False and st["channels"]["good"]["ok"] is True
    assert st["channels"]["dead"]["last_error"] == final["last_error"]
    assert [f["id"] for f in st["recent_failures"]] == [final["id"]]
    n.close()


async def test_hanging_channel_does_not_block_others(tmp_path, robots):
    n = Notifier(cfg({"slow": {"type": "webhook", "url": robots.url("/hang"), "timeout": 60},
                      "good": {"type": "webhook", "url": robots.url("/hook/good")}}),
                 tmp_path / "n.db", clock=lambda: T0)
    await n.start()
    try:
        n.on_alert_change(change("h1"))
        await wait_until(lambda: robots.requests_on("/hang"), what="slow peer reached")
        await wait_until(lambda: n.status()["channels"]["good"]["sent"] == 1, what="good sent")
        # the slow request is still outstanding; meanwhile more alerts flow to the good channel
        n.on_alert_change(change("h2"))
        await wait_until(lambda: n.status()["channels"]["good"]["sent"] == 2, what="second good")
        slow = n.deliveries(channel="slow")
        assert [(d["state"], d["attempts"]) for d in slow] == [("pending", 0), ("pending", 0)]
    finally:
        await n.stop()          # in-flight attempt is abandoned; the row stays pending
    assert {d["state"] for d in n.deliveries(channel="slow")} == {"pending"}
    n.close()


async def test_transient_failure_backs_off_the_whole_channel(tmp_path, robots):
    """A 503 / rate limit on one delivery postpones the channel's other due deliveries to the
    same retry time instead of trying each of them against a peer that is known to be failing."""
    robots.hook_status = 503
    n = Notifier(cfg({"hook": {"type": "webhook", "url": robots.url("/hook/busy")}},
                     retry={"max_attempts": 3, "initial_backoff": 0.3, "max_backoff": 1}),
                 tmp_path / "n.db", clock=lambda: T0)
    for i in range(4):
        n.on_alert_change(change(f"b{i}"))
    await n.start()
    try:
        first = await wait_until(lambda: (lambda rows: rows if any(r["attempts"] for r in rows) else None)(
            n.deliveries()), what="first failure")
        tried = [r for r in first if r["attempts"]]
        assert len(tried) == 1 and tried[0]["state"] == "pending" and "HTTP 503" in tried[0]["last_error"]
        others = [r for r in first if not r["attempts"]]
        assert len(others) == 3
        assert all(r["next_attempt_at"] == tried[0]["next_attempt_at"] for r in others)
        robots.hook_status = 200                                # peer recovers: everything drains
        await wait_until(lambda: n.status()["channels"]["hook"]["sent"] == 4, what="drained")
    finally:
        await n.stop()
    assert len(robots.accepted_on("/hook/busy")) == 4
    n.close()


async def test_slow_peer_times_out(tmp_path, robots):
    n = Notifier(cfg({"slow": {"type": "webhook", "url": robots.url("/hang"), "timeout": 0.3}},
                     retry={"max_attempts": 2, "initial_backoff": 0.05}),
                 tmp_path / "n.db", clock=lambda: T0)
    await n.start()
    try:
        n.on_alert_change(change("s1"))
        d = await wait_until(lambda: n.deliveries(state="failed"), what="timed out")
    finally:
        await n.stop()
    assert d[0]["attempts"] == 2 and "timeout" in d[0]["last_error"]
    n.close()


async def test_restart_resumes_pending_deliveries(tmp_path):
    port = free_port()
    db = tmp_path / "n.db"
    c = cfg({"hook": {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook/r"}},
            retry={"max_attempts": 100, "initial_backoff": 0.05, "max_backoff": 0.2})
    # process 1: peer is down, attempts fail and stay pending
    n1 = Notifier(c, db, clock=lambda: T0)
    await n1.start()
    n1.on_alert_change(change("r1"))
    await wait_until(lambda: n1.deliveries()[0]["attempts"] >= 2, what="failed attempts")
    await n1.stop()
    assert n1.deliveries()[0]["state"] == "pending"
    n1.close()
    # process 2 never started its dispatchers: enqueued only
    n2 = Notifier(c, db, clock=lambda: T0 + 10)
    n2.on_alert_change(change("r2"))
    n2.close()

    peer = RobotServer(port=port).start()
    try:
        n3 = Notifier(c, db, clock=lambda: T0 + 20)
        await n3.start()
        try:
            await wait_until(lambda: n3.status()["channels"]["hook"]["sent"] == 2, what="resumed")
        finally:
            await n3.stop()
        got = sorted(r["body"]["alerts"][0]["id"] for r in peer.accepted_on("/hook/r"))
        assert got == ["r1", "r2"]
        ids = {r["body"]["delivery_id"] for r in peer.accepted_on("/hook/r")}
        assert ids == {d["id"] for d in n3.deliveries(state="sent")}
        n3.close()
    finally:
        peer.stop()


async def test_failed_delivery_visible_in_api_and_retry(tmp_path, robots):
    robots.hook_status = 400                                    # permanent: no retries
    n = Notifier(cfg({"hook": {"type": "webhook", "url": robots.url("/hook/api")}}), tmp_path / "n.db",
                 clock=lambda: T0)
    app = FastAPI()
    app.include_router(notify_router(n), prefix="/api/notify")
    await n.start()
    try:
        n.on_alert_change(change())
        await wait_until(lambda: n.deliveries(state="failed"), what="failed")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as cl:
            st = (await cl.get("/api/notify/status")).json()
            assert st["channels"]["hook"]["failed"] == 1
            assert "HTTP 400" in st["channels"]["hook"]["last_error"]
            failed = (await cl.get("/api/notify/deliveries", params={"state": "failed"})).json()
            assert len(failed) == 1 and failed[0]["attempts"] == 1 and failed[0]["title"].startswith("[FIRING:1]")
            assert (await cl.get("/api/notify/deliveries", params={"state": "bogus"})).status_code == 422
            robots.hook_status = 200
            r = await cl.post(f"/api/notify/deliveries/{failed[0]['id']}/retry")
            assert r.status_code == 200
            await wait_until(lambda: n.deliveries(state="sent"), what="re-sent")
            assert (await cl.post(f"/api/notify/deliveries/{failed[0]['id']}/retry")).status_code == 404
    finally:
        await n.stop()
    assert len(robots.accepted_on("/hook/api")) == 1
    n.close()


async def test_pending_for_removed_channel_is_failed_on_start(tmp_path, robots):
    db = tmp_path / "n.db"
    n1 = Notifier(cfg({"old": {"type": "webhook", "url": robots.url("/hook/old")}}), db, clock=lambda: T0)
    n1.on_alert_change(change())
    n1.close()
    n2 = Notifier(cfg({"new": {"type": "webhook", "url": robots.url("/hook/new")}}), db, clock=lambda: T0)
    await n2.start()
    await n2.stop()
    d = n2.deliveries(channel="old")[0]
    assert d["state"] == "failed" and d["last_error"] == "channel no longer configured"
    n2.close()


async def test_listener_from_another_thread(tmp_path, robots):
    n = Notifier(cfg({"hook": {"type": "webhook", "url": robots.url("/hook/t")}}), tmp_path / "n.db",
                 clock=lambda: T0)
    await n.start()
    try:
        await asyncio.to_thread(n.on_alert_change, change("t1"))
        await wait_until(lambda: robots.accepted_on("/hook/t"), what="delivered")
    finally:
        await n.stop()
    n.close()
