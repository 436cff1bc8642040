"""Poll every device on its own interval, each in its own asyncio task.

Why one task per device: a dead switch that times out after 20 s must not
delay the 200 healthy ones polled in the same second. Each cycle runs under
the device's deadline (``asyncio.timeout``); whatever happens, an
``agent_poll`` sample records it (ok, duration_s, reason, error) and the loop
carries on. Starts are jittered so a building's devices are not all polled at
the same instant after a restart.

A driver that blocks the event loop (synchronous I/O) would still stall
everyone; drivers must be async all the way down.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable

from drivers.base import DeviceError, Record, Sample, Slots

log = logging.getLogger(__name__)

Sink = Callable[[list[Record]], None]


def poll_sample(device_id: str, driver: str, ok: bool, duration_s: float, reason: str | None = None,
                error: str | None = None) -> Sample:
    fields: dict[str, Any] = {"ok": ok, "duration_s": round(duration_s, 6)}
    if not ok:
        fields["reason"] = reason or "error"
        fields["error"] = (error or "")[:500]
    return Sample("agent_poll", device_id, fields, {"driver": driver})


async def poll_once(device_id: str, driver_name: str, driver: Any, deadline_s: float, sink: Sink,
                    limit: Slots | None = None) -> Sample:
    """One cycle: poll under the deadline, hand records to ``sink``, return the agent_poll sample.

    ``limit`` (shared by all devices and their drivers' background work) bounds how many cycles
    run at once; the deadline and duration_s start when the cycle got its slot."""
    if limit is not None:
        async with limit.hold(f"device {device_id}"):
            return await poll_once(device_id, driver_name, driver, deadline_s, sink)
    t0 = time.monotonic()
    ok, reason, error = False, None, None
    try:
        async with asyncio.timeout(deadline_s):
            records = await driver.poll()
        sink(records)
        ok = True
    except DeviceError as e:
        reason, error = e.reason, str(e)
    except TimeoutError as e:
        reason, error = "timeout", str(e) or f"no answer within the {deadline_s:g} s deadline"
    except Exception as e:
        log.exception("device %s: driver %s failed", device_id, driver_name)
        reason, error = "error", f"{type(e).__name__}: {e}"
    return poll_sample(device_id, driver_name, ok, time.monotonic() - t0, reason, error)


async def run_polling(device_id: str, driver_name: str, driver: Any, interval_s: float, deadline_s: float,
                      sink: Sink, jitter_s: float | None = None, limit: Slots | None = None) -> None:
    """Poll forever on a fixed grid; cycles missed by a slow poll are skipped, not bunched."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(random.uniform(0, min(interval_s, 5.0) if jitter_s is None else jitter_s))
    due = loop.time()
    last_reason: str | None = None  # log state changes, not every failed cycle of a dead device
    while True:
        sample = await poll_once(device_id, driver_name, driver, deadline_s, sink, limit)
        sink([sample])
        if asyncio.current_task().cancelling():
            # A stop request swallowed inside the driver (Python 3.11's asyncio.wait_for returns the
            # result when the awaited reply lands in the same loop step as the cancel): honour it
            # here, or the agent's TaskGroup would wait for this task forever on shutdown.
            raise asyncio.CancelledError
        reason = sample.fields.get("reason")
        if reason != last_reason:
            if reason:
                log.warning("device %s: poll failed (%s): %s", device_id, reason, sample.fields["error"])
            else:
                log.info("device %s: polling ok again", device_id)
            last_reason = reason
        else:
            log.debug("device %s: ok=%s %s", device_id, sample.fields["ok"], reason or "")
        due += interval_s
        now = loop.time()
        if due < now:
            due = now + (due - now) % interval_s
        await asyncio.sleep(due - now)


async def run_streaming(device_id: str, driver_name: str, driver: Any, sink: Sink,
                        max_backoff_s: float = 60.0) -> None:
    """Keep a streaming driver running, restarting it with backoff when it fails."""
    backoff = 1.0
    while True:
        t0 = time.monotonic()
        try:
            await driver.run(lambda rec: sink([rec]))
            reason, error = "error", "stream ended"
        except DeviceError as e:
            reason, error = e.reason, str(e)
        except Exception as e:
            log.exception("device %s: streaming driver %s failed", device_id, driver_name)
            reason, error = "error", f"{type(e).__name__}: {e}"
        sink([poll_sample(device_id, driver_name, False, time.monotonic() - t0, reason, error)])
        backoff = 1.0 if time.monotonic() - t0 > 60 else min(backoff * 2, max_backoff_s)
        await asyncio.sleep(backoff)
