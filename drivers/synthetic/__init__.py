"""Synthetic device: interface-like samples with moving counters, no network.

For tests, demos and benchmarks of everything downstream of a driver. ``fail``
and ``delay_s`` reproduce the two ways real devices misbehave (unreachable,
slow beyond the poll deadline) so the scheduler can be tested without one.
"""
from __future__ import annotations

import asyncio
import random
import time

from pydantic import BaseModel, ConfigDict, Field

from drivers.base import DeviceError, Facts, Record, Sample


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interfaces: int = Field(4, ge=1, le=4096)
    speed_mbps: int = Field(1000, ge=1)
    fail: bool = False  # every poll raises DeviceError("unreachable")
    delay_s: float = Field(0.0, ge=0)  # sleep this long in each poll


class SyntheticDriver:
    name = "synthetic"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, tags
        self._octets = [[0, 0] for _ in range(options.interfaces)]
        self._last: float | None = None
        self._rng = random.Random(device_id)

    async def poll(self) -> list[Record]:
        if self.opts.delay_s:
            await asyncio.sleep(self.opts.delay_s)
        if self.opts.fail:
            raise DeviceError("unreachable", f"{self.device_id}: synthetic device configured to fail")
        now = time.monotonic()
        dt = None if self._last is None else max(now - self._last, 1e-3)
        self._last = now
        out: list[Record] = []
        if dt is None:
            out.append(Facts(self.device_id, {"model": "synthetic", "serial": f"SYN-{self.device_id}",
                                              "firmware": "1.0", "vendor": "campus-sense"}))
        bps_max = self.opts.speed_mbps * 1e6
        for i, c in enumerate(self._octets):
            rates = [self._rng.uniform(0, 0.3) * bps_max for _ in range(2)]
            step = dt or 0.0
            for j in (0, 1):
                c[j] += int(rates[j] * step / 8)
            fields = {"in_octets": c[0], "out_octets": c[1], "speed_mbps": self.opts.speed_mbps,
                      "admin_up": True, "oper_up": True}
            if dt is not None:
                fields.update(in_bps=rates[0], out_bps=rates[1],
                              util_in_pct=100 * rates[0] / bps_max, util_out_pct=100 * rates[1] / bps_max)
            out.append(Sample("interface", self.device_id, fields,
                              {**self.tags, "ifIndex": str(i + 1), "ifName": f"eth{i}"}))
        return out

    async def close(self) -> None:
        return None


def create(device_id: str, options: Options, tags: dict[str, str]) -> SyntheticDriver:
    return SyntheticDriver(device_id, options, tags)
