"""PJLink projectors (class 1 and 2) over TCP 4352: power, lamps, errors, inventory.

A ``PollingDriver``. Each poll opens one TCP connection (many projectors serve a single
PJLink connection at a time and close idle ones after 30 s, so nothing is kept open),
answers the ``PJLINK 0`` / ``PJLINK 1 <random>`` greeting (with authentication the first
command carries ``MD5(random + password)`` as 32 lower-case hex digits), sends queries
one at a time and waits for each ``%<class><CMD>=<answer>`` reply.

Per poll: ``POWR?``, ``ERST?``, ``LAMP?``, ``INPT?``, ``AVMT?`` and, on class 2, ``FILT?``.
On the first poll, then every ``facts_interval_s``: ``CLSS?``, ``INF1?``, ``INF2?``,
``INFO?``, ``NAME?`` and, on class 2, ``SNUM?``, ``SVER?``, ``RLMP?``, ``RFIL?``.

Records:

- ``Sample("projector")``: ``power_state`` (on | standby | cooling | warming; eco_standby,
  see below), ``power_code``, ``lamp_hours`` (the highest of all lamps), ``lamp<N>_hours``,
  ``lamp<N>_on``, ``lamps_on``, ``err_fan`` / ``err_lamp`` / ``err_temp`` / ``err_cover`` /
  ``err_filter`` / ``err_other`` (0 ok, 1 warning, 2 error), ``errors`` (e.g.
  ``"lamp:warning,temp:error"``, "" when none), ``input``, ``input_type``, ``video_mute``,
  ``audio_mute``, ``filter_hours`` (class 2), ``failure`` (True after an ERR4 reply),
  ``query_errors`` (e.g. ``"LAMP=ERR3"``: optional queries the projector refused).
- ``Facts``: ``vendor`` / ``manufacturer``, ``model``, ``info``, ``name``, ``pjlink_class``,
  ``serial``, ``firmware``, ``lamp_model``, ``filter_model`` (whatever the projector answers).
- ``Event("projector_fault")`` when a component's ERST status rises (severity warning for
  1, critical for 2 or an ERR4 "projector failure"); ``projector_fault_cleared`` (info) when
  it returns to 0. Data: ``component``, ``status``, ``previous``.

Failures raise ``DeviceError``: ``auth`` (``PJLINK ERRA``, or a password is needed and none
is configured), ``timeout`` (no reply), ``unreachable`` (connection refused / no route /
no TCP connection in time), ``protocol`` (garbage, a reply for another command, or ERR1..ERR4
to ``POWR?``, named).

Eco standby: many projectors switch their network off in eco standby. With
``eco_standby: true``, a projector last seen in standby (or cooling down) that is now
unreachable is reported as ``power_state: eco_standby`` (``reachable: False``) instead of
a failure, so the collector's staleness rule (``projector`` / ``power_state`` in
eco_standby/standby) does not call it offline. Off by default: it cannot tell eco
standby from a projector that was unplugged while in standby.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Event, Facts, Record, Sample

log = logging.getLogger(__name__)

POWER_STATES = {"0": "standby", "1": "on", "2": "cooling", "3": "warming"}
ERR_NAMES = {"ERR1": "undefined command", "ERR2": "out of parameter", "ERR3": "unavailable time",
             "ERR4": "projector/display failure"}
ERST_COMPONENTS = ("fan", "lamp", "temp", "cover", "filter", "other")
ERST_STATUS = {0: "ok", 1: "warning", 2: "error"}
INPUT_TYPES = {"1": "rgb", "2": "video", "3": "digital", "4": "storage", "5": "network", "6": "internal"}
MAX_LINE = 256  # spec: at most 136 bytes per reply (class 2), leave room for sloppy firmware


class Options(SecretFields):
    """The ``options:`` block of a ``driver: pjlink`` device in agent.yaml."""
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(4352, ge=1, le=65535)
    #: PJLink password (max 32 bytes per spec); only needed when the projector greets with
    #: ``PJLINK 1``. No default. A secret (campus_sense.secret): password / password_file / password_env.
    password: Secret | None = None
    timeout_s: float = Field(5.0, gt=0)  # connect, and each reply
    facts_interval_s: float = Field(3600.0, gt=0)
    eco_standby: bool = False

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if self.password is not None:
            pw = self.password.reveal()
            if len(pw.encode("utf-8")) > 32:
                raise ValueError("password: PJLink passwords are at most 32 bytes")
        return self


class Reply:
    """One parsed ``%<class><CMD>=<param>`` reply."""
    __slots__ = ("cls", "cmd", "param")

    def __init__(self, cls: str, cmd: str, param: str):
        self.cls, self.cmd, self.param = cls, cmd, param

    @property
    def err(self) -> str | None:
        return self.param if self.param in ERR_NAMES else None


def parse_reply(line: bytes, cls: str, cmd: str) -> Reply:
    """Parse a reply line (CR stripped) for query ``%<cls><cmd> ?``; raise protocol errors."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if text == "PJLINK ERRA":
        raise DeviceError("auth", "projector rejected the PJLink password (PJLINK ERRA)")
    if len(text) < 7 or text[0] != "%" or text[6] != "=":
        raise DeviceError("protocol", f"{cmd}?: not a PJLink reply: {text[:60]!r}")
    r = Reply(text[1], text[2:6].upper(), text[7:])
    if r.cmd != cmd or r.cls != cls:
        raise DeviceError("protocol", f"{cmd}?: reply is for %{r.cls}{r.cmd}: {text[:60]!r}")
    return r


def digest(random: str, password: str) -> str:
    return hashlib.md5((random + password).encode("utf-8")).hexdigest()


class PJLinkSession:
    """One TCP connection: greeting, optional authentication, then queries in turn."""

    def __init__(self, host: str, port: int, password: str | None, timeout_s: float):
        self.host, self.port, self.password, self.timeout_s = host, port, password, timeout_s
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None
        self._auth_prefix = ""
        self.authenticated = False

    async def open(self) -> None:
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout_s):
                self._r, self._w = await asyncio.open_connection(self.host, self.port, limit=MAX_LINE)
        except TimeoutError:
            raise DeviceError("unreachable", f"no TCP connection to {where} within {self.timeout_s:g} s") from None
        except OSError as e:
            raise DeviceError("unreachable", f"cannot connect to {where}: {e.strerror or e}") from None
        greeting = (await self._line("greeting")).decode("utf-8", errors="replace")
        if greeting == "PJLINK 0":
            return
        if greeting == "PJLINK ERRA":
            raise DeviceError("auth", f"{where} refused the connection (PJLINK ERRA)")
        parts = greeting.split(" ")
        if len(parts) != 3 or parts[:2] != ["PJLINK", "1"] or not parts[2] or len(parts[2]) > 32:
            raise DeviceError("protocol", f"{where}: not a PJLink greeting: {greeting[:60]!r}")
        if self.password is None:
            raise DeviceError("auth", f"{where} requires PJLink authentication (PJLINK 1) but no password "
                                      "is configured")
        self._auth_prefix = digest(parts[2], self.password)
        self.authenticated = True

    async def _line(self, what: str) -> bytes:
        assert self._r is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self._r.readuntil(b"\r")
        except TimeoutError:
            raise DeviceError("timeout", f"{what}: no reply within {self.timeout_s:g} s") from None
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise DeviceError("protocol", f"{what}: connection closed mid-reply: {e.partial[:60]!r}") from None
            raise DeviceError("unreachable", f"{what}: projector closed the connection") from None
        except asyncio.LimitOverrunError:
            raise DeviceError("protocol", f"{what}: reply longer than {MAX_LINE} bytes without CR") from None
        except OSError as e:
            raise DeviceError("unreachable", f"{what}: {e.strerror or e}") from None
        return data.rstrip(b"\r").lstrip(b"\n")  # tolerate CR LF from sloppy firmware

    async def query(self, cmd: str, cls: str = "1") -> Reply:
        assert self._w is not None
        line = f"{self._auth_prefix}%{cls}{cmd} ?\r".encode("ascii")
        self._auth_prefix = ""  # only the first command after the greeting carries the digest
        try:
            self._w.write(line)
            await self._w.drain()
        except OSError as e:
            raise DeviceError("unreachable", f"{cmd}?: {e.strerror or e}") from None
        return parse_reply(await self._line(f"{cmd}?"), cls, cmd)

    async def close(self) -> None:
        if self._w is not None:
            self._w.close()
            try:
                await self._w.wait_closed()
            except OSError:
                pass
            self._w = None


def parse_lamps(param: str) -> list[tuple[int, bool]]:
    nums = param.split()
    if not nums or len(nums) % 2 or not all(n.isdigit() for n in nums) or any(n not in "01" for n in nums[1::2]):
        raise ValueError(f"LAMP?: bad answer {param[:60]!r}")
    return [(int(nums[i]), nums[i + 1] == "1") for i in range(0, len(nums), 2)]


def parse_erst(param: str) -> dict[str, int]:
    if len(param) != 6 or any(c not in "012" for c in param):
        raise ValueError(f"ERST?: bad answer {param[:60]!r}")
    return {name: int(c) for name, c in zip(ERST_COMPONENTS, param)}


class PJLinkDriver:
    name = "pjlink"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, dict(tags or {})
        self.pj_class: str | None = None
        self._facts: dict[str, Any] | None = None
        self._facts_at = 0.0
        self._faults: dict[str, int] | None = None  # component -> 0/1/2 after the last successful poll
        self._last_power: str | None = None

    def _password(self) -> str | None:
        """Read per connection (campus_sense.secret rotation rule)."""
        try:
            return self.opts.password.reveal() if self.opts.password is not None else None
        except SecretError as e:
            raise DeviceError("config", str(e)) from None

    async def poll(self) -> list[Record]:
        try:
            return await self._poll()
        except DeviceError as e:
            if (self.opts.eco_standby and e.reason in ("unreachable", "timeout")
                    and self._last_power in ("standby", "cooling", "eco_standby")):
                self._last_power = "eco_standby"
                return [Sample("projector", self.device_id, {"power_state": "eco_standby", "reachable": False},
                               dict(self.tags))]
            raise

    async def _poll(self) -> list[Record]:
        s = PJLinkSession(self.opts.host, self.opts.port, self._password(), self.opts.timeout_s)
        out: list[Record] = []
        try:
            await s.open()
            fields: dict[str, Any] = {"reachable": True}
            qerr: list[str] = []
            failure = False
            # POWR? first: it carries the authentication digest and must answer.
            r = await s.query("POWR")
            if r.err in ("ERR3", "ERR4"):
                qerr.append(f"POWR={r.err}")
                failure = r.err == "ERR4"
            elif r.err:
                raise DeviceError("protocol", f"POWR?: {r.err} ({ERR_NAMES[r.err]})")
            elif r.param in POWER_STATES:
                fields["power_state"] = POWER_STATES[r.param]
                fields["power_code"] = int(r.param)
                self._last_power = fields["power_state"]
            else:
                raise DeviceError("protocol", f"POWR?: unknown power status {r.param[:40]!r}")

            due_facts = self._facts is None or time.monotonic() - self._facts_at >= self.opts.facts_interval_s
            if due_facts or self.pj_class is None:
                r = await s.query("CLSS")
                if r.err:
                    raise DeviceError("protocol", f"CLSS?: {r.err} ({ERR_NAMES[r.err]})")
                if not r.param[:1].isdigit():
                    raise DeviceError("protocol", f"CLSS?: bad class {r.param[:40]!r}")
                self.pj_class = r.param[:1]

            async def optional(cmd: str, cls: str = "1") -> str | None:
                nonlocal failure
                rr = await s.query(cmd, cls)
                if rr.err:
                    if rr.err == "ERR4":
                        failure = True
                    if rr.err != "ERR1":  # ERR1: this model lacks the command (e.g. no lamp on laser models)
                        qerr.append(f"{cmd}={rr.err}")
                    return None
                return rr.param

            p = await optional("ERST")
            faults: dict[str, int] | None = None
            if p is not None:
                try:
                    faults = parse_erst(p)
                except ValueError as e:
                    raise DeviceError("protocol", str(e)) from None
                for k, v in faults.items():
                    fields[f"err_{k}"] = v
                fields["errors"] = ",".join(f"{k}:{ERST_STATUS[v]}" for k, v in faults.items() if v)
            p = await optional("LAMP")
            if p is not None:
                try:
                    lamps = parse_lamps(p)
                except ValueError as e:
                    raise DeviceError("protocol", str(e)) from None
                for i, (hours, on) in enumerate(lamps, 1):
                    fields[f"lamp{i}_hours"] = hours
                    fields[f"lamp{i}_on"] = on
                fields["lamp_hours"] = max(h for h, _ in lamps)
                fields["lamps_on"] = sum(1 for _, on in lamps if on)
            p = await optional("INPT")
            if p is not None:
                fields["input"] = p
                fields["input_type"] = INPUT_TYPES.get(p[:1], "unknown")
            p = await optional("AVMT")
            if p is not None and len(p) == 2 and p[0] in "123" and p[1] in "01":
                on = p[1] == "1"
                fields["video_mute"] = on if p[0] in "13" else False
                fields["audio_mute"] = on if p[0] in "23" else False
            class2 = self.pj_class is not None and self.pj_class >= "2"
            if class2:
                p = await optional("FILT", "2")
                if p is not None and p.isdigit():
                    fields["filter_hours"] = int(p)

            if due_facts:
                facts: dict[str, Any] = {"pjlink_class": self.pj_class}
                queries = [("INF1", "1", "manufacturer"), ("INF2", "1", "model"), ("INFO", "1", "info"),
                           ("NAME", "1", "name")]
                if class2:
                    queries += [("SNUM", "2", "serial"), ("SVER", "2", "firmware"), ("RLMP", "2", "lamp_model"),
                                ("RFIL", "2", "filter_model")]
                for cmd, cls, key in queries:
                    p = await optional(cmd, cls)
                    if p:
                        facts[key] = p.strip()
                if "manufacturer" in facts:
                    facts["vendor"] = facts["manufacturer"]
                self._facts_at = time.monotonic()
                if facts != self._facts:
                    out.append(Facts(self.device_id, facts))
                self._facts = facts
        finally:
            await s.close()

        fields["failure"] = failure
        if qerr:
            fields["query_errors"] = ",".join(qerr)
        out.append(Sample("projector", self.device_id, fields, dict(self.tags)))
        out.extend(self._fault_events(faults, failure))
        return out

    def _fault_events(self, faults: dict[str, int] | None, failure: bool) -> list[Event]:
        now = dict(faults) if faults is not None else dict(self._faults or {})
        now["projector"] = 2 if failure else 0
        before = self._faults or {}
        events: list[Event] = []
        for comp, level in now.items():
            prev = before.get(comp, 0)
            if level == prev:
                continue
            data = {"component": comp, "status": ERST_STATUS[level], "previous": ERST_STATUS[prev]}
            if level == 0:
                events.append(Event(self.device_id, "projector_fault_cleared", "info", data, dict(self.tags)))
            elif level > prev:
                events.append(Event(self.device_id, "projector_fault", "critical" if level == 2 else "warning",
                                    data, dict(self.tags)))
            else:  # error -> warning: still a fault, say so at the lower severity
                events.append(Event(self.device_id, "projector_fault", "warning", data, dict(self.tags)))
        self._faults = now
        return events

    async def close(self) -> None:
        return None


def create(device_id: str, options: Options, tags: dict[str, str] | None = None) -> PJLinkDriver:
    if isinstance(options, dict):
        options = Options.model_validate(options)
    return PJLinkDriver(device_id, options, tags or {})
