"""`campus-sense agent --config agent.yaml`: wire config, drivers, queue and publisher together.

Data path: driver -> scheduler (agent_poll per cycle) -> Batcher (memory, ~1 s)
-> DurableQueue (SQLite, committed) -> Publisher (MQTT QoS 1) -> collector, which commits and
publishes a commit watermark -> the queue deletes what it covers.
Only the last in-memory batch can be lost in a crash; a clean stop (SIGTERM,
SIGINT) flushes it to disk and closes the drivers.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys

from campus_sense import __version__
from campus_sense.sdnotify import Notifier
from campus_sense.yamlconf import ConfigError
from drivers.base import Sample, Slots, install_slots
from edge_agent import config as cfgmod
from edge_agent.batcher import Batcher
from edge_agent.publisher import Publisher
from edge_agent.queue import DurableQueue, QueueBusy
from edge_agent.scheduler import poll_sample, run_polling, run_streaming

log = logging.getLogger("edge_agent")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="agent.yaml (required to run or --check)")
    parser.add_argument("--check", action="store_true", help="validate the config (and driver options) and exit")
    sub = parser.add_subparsers(dest="agent_cmd", metavar="{enrol}")
    from edge_agent import enrol
    enrol.configure(sub.add_parser("enrol", help="install an enrolment bundle from `campus-sense enrol`"))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "agent_cmd", None) == "enrol":
        from edge_agent import enrol
        return enrol.run(args)
    if not args.config:
        print("campus-sense agent: --config agent.yaml is required", file=sys.stderr)
        return 2
    try:
        loaded = cfgmod.load(args.config)
    except ConfigError as e:
        print(f"campus-sense agent: invalid config:\n{e}", file=sys.stderr)
        return 2
    if args.check:
        m = loaded.model
        print(f"{loaded.path}: ok (agent {m.agent.id}, {len(m.devices)} devices, sha256 {loaded.sha256[:12]})")
        return 0
    try:
        agent = Agent(loaded)
    except (OSError, sqlite3.Error, QueueBusy) as e:
        print(f"campus-sense agent: cannot open the queue {loaded.model.queue.path}: {e}", file=sys.stderr)
        return 2
    return asyncio.run(agent.run())


class Agent:
    def __init__(self, loaded: cfgmod.LoadedConfig):
        self.loaded = loaded
        self.cfg = cfg = loaded.model
        self.queue = DurableQueue(cfg.queue.path, cfg.queue.max_messages, cfg.queue.max_bytes,
                                  min_free_bytes=cfg.queue.min_free_bytes)
        self.publisher = Publisher(
            queue=self.queue, site=cfg.agent.site, building=cfg.agent.building, agent_id=cfg.agent.id,
            host=cfg.mqtt.host, port=cfg.mqtt.port, username=cfg.mqtt.username, password=cfg.mqtt.password.reveal,
            tls=cfg.mqtt.tls, protocol=cfg.mqtt.protocol, client_id=cfg.mqtt.client_id,
            keepalive_s=cfg.mqtt.keepalive_s, inflight=cfg.publish.inflight, heartbeat_s=cfg.publish.heartbeat_s,
            reconnect_max_s=cfg.publish.reconnect_max_s, publish_timeout_s=cfg.publish.publish_timeout_s,
            birth_body=self.birth_body, delete_on=cfg.publish.delete_on,
            confirm_timeout_s=cfg.publish.confirm_timeout_s)
        self.batcher = Batcher(self.queue, cfg.agent.id, cfg.publish.max_message_bytes, cfg.publish.batch_max_items,
                               on_flushed=self.publisher.wake, overflow_max_items=cfg.queue.overflow_max_items)
        self.publisher.on_reads = self.batcher.collector_reads
        self.drivers: dict[str, object] = {}
        #: polling slots shared by every device's cycles and its driver's background device work
        self.slots = Slots(cfg.polling.max_concurrent)

    def birth_body(self) -> dict:
        devs = self.cfg.devices
        return {"version": __version__, "config_hash": self.loaded.sha256,
                "drivers": sorted({d.driver for d in devs}),
                "devices": [{"id": d.id, "driver": d.driver, "interval_s": d.interval_s, "room": d.room,
                             "type": d.type, **({"tags": dict(d.tags)} if d.tags else {})} for d in devs]}

    def self_metrics(self) -> Sample:
        q = self.queue
        return Sample("agent", self.cfg.agent.id, {
            "queue_depth": q.depth, "queue_bytes": q.bytes, "oldest_age_s": round(q.oldest_age_s(), 3),
            "dropped_total": q.dropped_total, "produced_total": q.produced_total,
            "published_total": self.publisher.published_total, "refused_total": self.publisher.refused_total,
            "resent_total": self.publisher.resent_total, "confirmed_seq": self.publisher.confirmed_seq,
            "last_seq": q.last_seq, "connected": self.publisher.connected,
            "slot_waits_total": self.slots.waits_total, "slot_wait_s_total": round(self.slots.wait_s_total, 3)})

    async def _self_metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.publish.selfmetrics_s)
            self.batcher.add([self.self_metrics()])

    def _start_devices(self, tg: asyncio.TaskGroup) -> None:
        install_slots(self.slots)   # inherited by the device tasks below and the tasks their drivers start
        for dev, opts in zip(self.cfg.devices, self.loaded.options):
            try:
                drv = cfgmod.driver_module(dev.driver).create(dev.id, opts, dev.driver_tags())
            except Exception as e:
                # One misconfigured device must not keep the building unmonitored.
                log.exception("device %s: cannot create driver %s", dev.id, dev.driver)
                self.batcher.add([poll_sample(dev.id, dev.driver, False, 0.0, getattr(e, "reason", "config"),
                                              f"{type(e).__name__}: {e}")])
                continue
            self.drivers[dev.id] = drv
            if hasattr(drv, "poll"):
                tg.create_task(run_polling(dev.id, dev.driver, drv, dev.interval_s, dev.deadline, self.batcher.add,
                                           limit=self.slots))
            else:
                tg.create_task(run_streaming(dev.id, dev.driver, drv, self.batcher.add))

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        q = self.queue
        log.info("agent %s starting: %d devices, queue %s (epoch %s, %d queued, next seq %d)",
                 self.cfg.agent.id, len(self.cfg.devices), q.path, q.epoch, q.depth, q.next_seq)
        pub = asyncio.create_task(self.publisher.run())
        sd = Notifier.from_env()   # systemd Type=notify + WatchdogSec (packaging/systemd)
        try:
            async with asyncio.TaskGroup() as tg:
                self._start_devices(tg)
                tg.create_task(self.batcher.run(self.cfg.publish.batch_interval_s))
                tg.create_task(self._self_metrics_loop())
                if sd.watchdog_interval_s:
                    tg.create_task(self._watchdog_loop(sd))
                sd.ready(f"agent {self.cfg.agent.id}: {len(self.drivers)} of {len(self.cfg.devices)} devices running")
                await stop.wait()
                log.info("shutting down")
                sd.stopping()
                raise _Stop
        except* _Stop:
            pass
        finally:
            await self._close_drivers()
            try:
                self.batcher.add([self.self_metrics()])
                self.batcher.flush()
            except Exception as e:
                # full disk: the items still in memory are lost, count them (saved if the queue can be)
                log.error("could not flush the last batch to the queue: %s: %s; %d items lost",
                          type(e).__name__, e, self.batcher.count)
                self.queue.count_drops(self.batcher.count)
            if self.publisher.connected:
                await self.publisher.drain(self.cfg.publish.shutdown_drain_s)
                await self.publisher.say_goodbye()
            pub.cancel()
            try:
                await pub
            except (asyncio.CancelledError, Exception):
                pass
            log.info("stopped: %d messages left in the queue (last seq %d)", q.depth, q.last_seq)
            q.close()
        return 0

    async def _watchdog_loop(self, sd: Notifier) -> None:
        """WATCHDOG=1 while the event loop runs (a blocked loop starves it: systemd restarts the agent)."""
        while True:
            sd.watchdog()
            await asyncio.sleep(sd.watchdog_interval_s)

    async def _close_drivers(self, timeout_s: float = 5.0) -> None:
        """Close all drivers concurrently, bounded: a hung device must not block the shutdown."""
        async def close(dev_id: str, drv) -> None:
            try:
                await drv.close()
            except Exception:
                log.exception("device %s: close failed", dev_id)

        tasks = [asyncio.create_task(close(i, d)) for i, d in self.drivers.items() if hasattr(d, "close")]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            for t in late:
                t.cancel()
            if late:
                log.warning("%d drivers did not close within %g s", len(late), timeout_s)


class _Stop(Exception):
    """Raised inside the TaskGroup to cancel every device task at once."""
