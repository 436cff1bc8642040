"""A PJLink projector simulator: the test peer for drivers/pjlink (no real projector here) and the demo's projector.

Written strictly from the published JBMIA PJLink specification (Class 1, version 1.04,
and Class 2, version 2.00), not from the driver, so the driver is tested against the
protocol as specified:

- TCP (default port 4352). On connect the projector sends ``PJLINK 0<CR>`` (no security)
  or ``PJLINK 1 <random><CR>`` where <random> is a 4-byte random number as 8 hex digits.
- With security on, the first command of the connection is prefixed with the 32-digit
  lower-case hex MD5 digest of ``<random><password>``. A wrong or missing digest is
  answered with ``PJLINK ERRA<CR>`` and the connection is closed.
- Commands: ``%`` + class (``1``/``2``) + 4-letter command + space + parameter + CR,
  at most 136 bytes. Replies: ``%`` + class + command + ``=`` + answer + CR.
  A query's parameter is ``?``.
- Error answers: ``ERR1`` undefined command, ``ERR2`` out of parameter, ``ERR3``
  unavailable time, ``ERR4`` projector/display failure. A set command succeeds with ``OK``.
- Class 1 commands: POWR (0 standby, 1 on, 2 cooling, 3 warm-up), INPT (11..59), AVMT
  (11/21/31 mute on, 10/20/30 off), ERST (6 digits fan, lamp, temperature, cover open,
  filter, other; 0 OK, 1 warning, 2 error), LAMP (pairs "<hours> <0|1>", ERR1 if the
  projector has no lamp), INST, NAME, INF1, INF2, INFO, CLSS.
- Class 2 (only on a class 2 projector, with header ``%2``): SNUM, SVER, FILT, RLMP,
  RFIL, INNM, IRES, RRES, FREZ, SVOL, MVOL; INPT/INST also with ``%2``. Class 1 commands
  keep the ``%1`` header on a class 2 projector. A class 1 projector answers ``%2...``
  commands with ERR1.
- The projector closes a connection that stays idle for 30 s.

Test knobs: ``state`` (power, errors, lamps, ...), ``force`` (command -> forced answer, e.g.
``{"LAMP": "ERR3"}``), ``garbage`` (send bytes instead of a proper reply),
``greeting`` override, ``stats`` (connections, commands, auth failures).
"""
from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, field

CR = b"\r"
MAX_CMD = 136
CLASS1 = {"POWR", "INPT", "AVMT", "ERST", "LAMP", "INST", "NAME", "INF1", "INF2", "INFO", "CLSS"}
# Commands defined with header %2 (class 2 spec); class 1 commands keep %1 on a class 2 projector.
CLASS2 = {"INPT", "INST", "SNUM", "SVER", "INNM", "IRES", "RRES", "FILT", "RLMP", "RFIL", "SVOL", "MVOL", "FREZ"}


@dataclass
class ProjectorState:
    pj_class: int = 1
    power: str = "0"  # 0 standby, 1 on, 2 cooling, 3 warm-up
    inputs: list[str] = field(default_factory=lambda: ["11", "31", "32"])
    input: str = "31"
    avmt: str = "30"
    erst: str = "000000"
    lamps: list[tuple[int, int]] | None = field(default_factory=lambda: [(1234, 0)])
    name: str = "Room A-101"
    inf1: str = "ACME"
    inf2: str = "PJ-4000"
    info: str = "fw-base"
    serial: str = "SN0123456"
    sver: str = "2.3.1"
    filter_hours: int = 321
    lamp_model: str = "LMP-99"
    filter_model: str = "FLT-7"
    freeze: str = "0"


class PJLinkSim:
    def __init__(self, password: str | None = None, state: ProjectorState | None = None,
                 idle_timeout_s: float = 30.0):
        self.password = password
        self.state = state or ProjectorState()
        self.idle_timeout_s = idle_timeout_s
        self.force: dict[str, str] = {}
        self.garbage: bytes | None = None
        self.greeting: bytes | None = None
        self.stats = {"connections": 0, "commands": 0, "auth_failures": 0}
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "PJLinkSim":
        self.server = await asyncio.start_server(self._client, host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def __aenter__(self) -> "PJLinkSim":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # ------------------------------------------------------------------ protocol
    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        try:
            rnd = None
            if self.greeting is not None:
                w.write(self.greeting)
            elif self.password is None:
                w.write(b"PJLINK 0" + CR)
            else:
                rnd = secrets.token_hex(4)
                w.write(b"PJLINK 1 " + rnd.encode() + CR)
            await w.drain()
            first = True
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        line = await r.readuntil(CR)
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                text = line[:-1].decode("utf-8", errors="replace")
                if first and rnd is not None:
                    expect = hashlib.md5((rnd + self.password).encode()).hexdigest()
                    if text[:32] != expect:
                        self.stats["auth_failures"] += 1
                        w.write(b"PJLINK ERRA" + CR)
                        await w.drain()
                        return
                    text = text[32:]
                first = False
                if self.garbage is not None:
                    w.write(self.garbage)
                    await w.drain()
                    continue
                reply = self._command(text)
                if reply is None:
                    continue  # not a PJLink command at all: no answer defined
                w.write(reply.encode("utf-8") + CR)
                await w.drain()
        finally:
            w.close()

    def _command(self, text: str) -> str | None:
        if len(text) + 1 > MAX_CMD or len(text) < 7 or text[0] != "%" or text[1] not in "12":
            return None
        self.stats["commands"] += 1
        cls, cmd, sep, param = text[1], text[2:6].upper(), text[6], text[7:]
        head = f"%{cls}{cmd}="
        if sep != " ":
            return head + "ERR2"
        known = CLASS1 if cls == "1" else (CLASS2 if self.state.pj_class >= 2 else set())
        if cmd not in known:
            return head + "ERR1"
        if cmd in self.force:
            return head + self.force[cmd]
        s = self.state
        if param != "?":
            return head + self._set(cmd, param)
        if cmd == "POWR":
            return head + s.power
        if cmd == "INPT":
            return head + (s.input if s.power == "1" else "ERR3")
        if cmd == "AVMT":
            return head + s.avmt
        if cmd == "ERST":
            return head + s.erst
        if cmd == "LAMP":
            if not s.lamps:
                return head + "ERR1"
            return head + " ".join(f"{h} {on}" for h, on in s.lamps)
        if cmd == "INST":
            return head + " ".join(s.inputs)
        if cmd == "NAME":
            return head + s.name
        if cmd == "INF1":
            return head + s.inf1
        if cmd == "INF2":
            return head + s.inf2
        if cmd == "INFO":
            return head + s.info
        if cmd == "CLSS":
            return head + str(s.pj_class)
        if cmd == "SNUM":
            return head + s.serial
        if cmd == "SVER":
            return head + s.sver
        if cmd == "FILT":
            return head + str(s.filter_hours)
        if cmd == "RLMP":
            return head + s.lamp_model
        if cmd == "RFIL":
            return head + s.filter_model
        if cmd == "FREZ":
            return head + s.freeze
        if cmd in ("INNM", "IRES", "RRES", "SVOL", "MVOL"):
            return head + "ERR2"  # INNM needs an input parameter; the others are not modelled
        return head + "ERR1"

    def _set(self, cmd: str, param: str) -> str:
        s = self.state
        if cmd == "POWR":
            if param not in ("0", "1"):
                return "ERR2"
            if s.power in ("2", "3"):
                return "ERR3"  # cooling down / warming up
            s.power = "3" if param == "1" and s.power == "0" else ("2" if param == "0" and s.power == "1" else s.power)
            return "OK"
        if cmd == "INPT":
            if param not in s.inputs:
                return "ERR2"
            if s.power != "1":
                return "ERR3"
            s.input = param
            return "OK"
        if cmd == "AVMT":
            if param not in ("10", "11", "20", "21", "30", "31"):
                return "ERR2"
            s.avmt = param
            return "OK"
        return "ERR2"  # read-only commands
