"""Syslog line parser: RFC 5424, RFC 3164 and the real formats of campus network gear.

``parse(line) -> Parsed`` never fails: whatever cannot be recognised stays in ``msg``. Recognised:

- RFC 5424 ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`` (Ruijie's RFC 5424 form puts
  MODULE / LEVEL / MNEMONIC into APP / PROCID / MSGID: mnemonic ``%SYS-5-CONFIG``);
- RFC 3164 ``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`` and its variants: sequence numbers
  (``<189>226: ``), ``*``/``.`` before a Cisco timestamp, milliseconds, a year before or after the
  time (Huawei ``Mar 26 2020 13:31:37-08:00``, H3C ``Sep 14 16:23:24 2026``, Comware 5
  ``%Jan 16 15:35:33:484 2007``), ISO dates, ``UTC``/zone suffixes, no hostname at all;
- vendor mnemonics at the start of the message: Cisco IOS / NX-OS / Ruijie ``%LINK-3-UPDOWN:``
  (also ``%FACILITY-SUB-SEV-MNEMONIC``), Huawei VRP ``%%01IFNET/4/LINK_STATE(l)[0]:``, H3C Comware
  ``%%10IFNET/3/PHY_UPDOWN:`` and Comware 5 ``IFNET/4/UPDOWN:``, ArubaOS ``<522008> <NOTI>``,
  Aruba AOS-S (ProCurve) ``00076 ports:``.

Severity: the level inside a vendor mnemonic wins over the PRI's (H3C/Huawei devices stamp every
line with the info-center's PRI; the real level is the ``/N/`` in the message).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3",
              "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
SEVERITY_CODES = {n: i for i, n in enumerate(SEVERITIES)}
SEVERITY_CODES.update({"emergency": 0, "critical": 2, "error": 3, "errors": 3, "warn": 4, "notification": 5,
                       "informational": 6, "debugging": 7})
#: campus event severity of a syslog severity
EVENT_SEVERITY = ("critical", "critical", "critical", "warning", "warning", "info", "info", "info")
_ARUBA_LEVELS = {"EMERG": 0, "ALERT": 1, "CRIT": 2, "ERRS": 3, "ERR": 3, "WARN": 4, "NOTI": 5, "INFO": 6,
                 "DBUG": 7, "DEBUG": 7}
MAX_LINE = 65536


@dataclass(slots=True)
class Parsed:
    facility: int
    severity: int
    pri: int | None
    version: int | None          # 1 for RFC 5424, None otherwise
    timestamp: str | None        # the device's timestamp as sent
    host: str | None
    program: str | None
    pid: str | None
    msgid: str | None
    mnemonic: str | None
    vendor: str | None           # cisco (also Ruijie), huawei, h3c, comware, aruba, aruba-aoss, ruijie
    msg: str
    sd: str | None = None        # RFC 5424 structured data, as sent
    seq: str | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"\d{1,2}:\d{2}:\d{2}(?:[.:]\d{1,6})?"
_ZONE = r"(?:\s?(?:[+-]\d{2}:?\d{2}|Z))?(?:\s(?:UTC|GMT|DST|[A-Z]{3,4}(?=[:\s])))?"
_TS = re.compile(
    r"(?:[*.%]?)(?:"
    rf"{_MON}\s+\d{{1,2}}\s+\d{{4}}\s+{_TIME}{_ZONE}"            # Huawei: Mar 26 2020 13:31:37-08:00
    rf"|{_MON}\s+\d{{1,2}}\s+{_TIME}(?:\s\d{{4}}(?=\s))?{_ZONE}"  # BSD; H3C with the year after the time
    rf"|\d{{4}}\s+{_MON}\s+\d{{1,2}}\s+{_TIME}{_ZONE}"           # NX-OS / ZTE: 2023 Mar 10 12:01:02
    r"|\d{4}-\d{2}-\d{2}[T ,]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?=:\s)"                # Cisco uptime stamps: 00:04:32:
    r"|\d{1,3}[ywd]\d{1,2}[wdh](?=:\s)"                          # 1d02h: 2w3d: 1y2w:
    r")")
_SEQ = re.compile(r"\s*(\d{1,10}):\s?")
_TAG = re.compile(r"([^\s\[\]:%<>|]{1,64})(?:\[([^\]\s]{1,32})\])?:(?:\s|$)")
_CISCO = re.compile(r"%((?:[A-Z][A-Z0-9_]*-)+[0-7]-[A-Z0-9_]+)(?::\s*|\s*$)")
_CISCO_SLOT = re.compile(r"%[A-Z0-9_]+-[A-Z0-9_]+:[A-Z0-9_]+\s+(?=%)")       # %STKUNIT0-M:CP %IFMGR-5-...
_VRP = re.compile(r"(%%(\d{2}))?([A-Za-z][A-Za-z0-9_\-]*)/([0-7])/([A-Za-z][A-Za-z0-9_\-]*)(?:\([a-z]\))?"
                  r"(?:\[\d+\])?:\s?")
_ARUBA = re.compile(r"<(\d{5,7})>\s+(?:<\d+>\s+)?<(EMERG|ALERT|CRIT|ERRS|ERR|WARN|NOTI|INFO|DBUG|DEBUG)>\s*"
                    r"(?:<[^>]{1,80}>\s*)?")
_AOSS = re.compile(r"(\d{5})\s+([A-Za-z][A-Za-z0-9_\-]{0,31}):\s+")
_HOSTISH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,254}")


def decode(raw: bytes) -> str:
    """UTF-8, else GBK (Chinese-language devices), else Latin-1; NULs and line ends removed."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            s = raw.decode("gb18030")
        except UnicodeDecodeError:
            s = raw.decode("latin-1")
    if "\x00" in s:
        s = s.replace("\x00", "")
    return s.strip("\r\n \ufeff")


def parse(line: str | bytes) -> Parsed:
    if isinstance(line, (bytes, bytearray)):
        line = decode(bytes(line[:MAX_LINE]))
    elif len(line) > MAX_LINE:
        line = line[:MAX_LINE]
    s = line.strip("\r\n\x00 ")
    pri = None
    p = 0
    if s.startswith("<"):
        end = s.find(">", 1, 5)
        if end > 1 and s[1:end].isdigit():
            v = int(s[1:end])
            if v <= 191:
                pri, p = v, end + 1
    fac, sev = (pri >> 3, pri & 7) if pri is not None else (1, 5)
    if s.startswith("1 ", p):
        return _rfc5424(s, p + 2, pri, fac, sev)
    return _rfc3164(s, p, pri, fac, sev)


def _rfc5424(s: str, p: int, pri, fac, sev) -> Parsed:
    parts = s[p:].split(" ", 5)
    while len(parts) < 6:
        parts.append("-")
    ts, host, app, procid, msgid, rest = parts
    nil = lambda x: None if x == "-" else x      # noqa: E731
    sd = None
    msg = rest
    if rest.startswith("["):
        i, n, depth, q = 0, len(rest), 0, False
        while i < n:
            c = rest[i]
            if q:
                if c == "\\":
                    i += 1
                elif c == '"':
                    q = False
            elif c == '"':
                q = True
            elif c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
                if depth == 0 and (i + 1 >= n or rest[i + 1] != "["):
                    i += 1
                    break
            i += 1
        sd, msg = rest[:i], rest[i:].lstrip(" ")
    elif rest.startswith("- ") or rest == "-":
        msg = rest[2:]
    msg = msg.lstrip("\ufeff")
    out = Parsed(fac, sev, pri, 1, nil(ts), nil(host), nil(app), nil(procid), nil(msgid), None, None, msg, sd)
    # Ruijie RFC 5424: APP = MODULE, PROCID = level digit, MSGID = MNEMONIC
    if (out.program and out.pid and out.msgid and len(out.pid) == 1 and out.pid.isdigit()
            and out.program.isupper() and out.msgid.replace("_", "").isalnum() and out.msgid.isupper()):
        out.mnemonic = f"%{out.program}-{out.pid}-{out.msgid}"
        out.severity = int(out.pid)
        out.vendor = "ruijie"
        return out
    _vendor(out)
    return out


def _rfc3164(s: str, p: int, pri, fac, sev) -> Parsed:
    n = len(s)
    while p < n and s[p] == " ":
        p += 1
    seq = host = ts = None
    m = _TS.match(s, p)
    if m is None and p < n and s[p].isdigit():
        ms = _SEQ.match(s, p)
        if ms is not None:
            seq, p = ms.group(1), ms.end()
            m = _TS.match(s, p)
    if m is None:
        # Cisco "logging origin-id": "sw1: *Mar  1 00:01:23: %LINK..."
        sp = s.find(": ", p, p + 256)
        if sp > p and " " not in s[p:sp]:
            m2 = _TS.match(s, sp + 2)
            if m2 is not None:
                host, m = s[p:sp], m2
    if m is not None:
        ts = m.group(0).lstrip("*.%")
        p = m.end()
        if p < n and s[p] == ":":
            p += 1
        while p < n and s[p] == " ":
            p += 1
        if host is None and p < n and s[p] not in "%<|":
            sp = s.find(" ", p)
            tok = s[p:] if sp < 0 else s[p:sp]
            if not _TAG.fullmatch(tok + " ") and not tok.endswith(":") and _HOSTISH.fullmatch(tok):
                host = tok
                p = len(s) if sp < 0 else sp + 1
                while p < n and s[p] == " ":
                    p += 1
            elif tok.endswith(":") and sp > 0 and s.startswith("%", sp + 1) and "[" not in tok:
                host = tok[:-1]           # "host: %MNEMONIC" (Cisco with hostname and colon)
                p = sp + 1
    out = Parsed(fac, sev, pri, None, ts, host, None, None, None, None, None, s[p:], None, seq)
    # program[pid]: (Linux, ArubaOS daemons, Arista agents); never a vendor mnemonic
    if p < n and s[p] != "%":
        m = _TAG.match(s, p)
        if m is not None and not _VRP.match(s, p):
            out.program, out.pid = m.group(1), m.group(2)
            out.msg = s[m.end():].lstrip(" ")
    _vendor(out)
    return out


def _vendor(out: Parsed) -> None:
    msg = out.msg
    if not msg:
        return
    if msg[0] == " " or msg.startswith(": "):   # re-framed by a relay ("app:  %%10IFNET/3/...") or an
        msg = out.msg = msg.lstrip(": ")           # empty tag ("host : %LINK-3-UPDOWN: ...")
        if not msg:
            return
    c = msg[0]
    if c == "%":
        m = _VRP.match(msg)
        if m is not None and m.group(1):
            vid = m.group(2)
            out.vendor = {"01": "huawei", "10": "h3c"}.get(vid, "vrp")
            out.mnemonic = f"%%{vid}{m.group(3)}/{m.group(4)}/{m.group(5)}"
            out.severity = int(m.group(4))
            out.msg = msg[m.end():]
            return
        s = _CISCO_SLOT.match(msg)
        q = s.end() if s else 0
        m = _CISCO.match(msg, q)
        if m is not None:
            out.vendor = "cisco"
            out.mnemonic = "%" + m.group(1)
            out.severity = int(m.group(1).rsplit("-", 2)[-2])
            out.msg = msg[m.end():]
            return
        return
    if c == "<":
        m = _ARUBA.match(msg)
        if m is not None:
            out.vendor = "aruba"
            out.mnemonic = m.group(1)
            out.severity = _ARUBA_LEVELS[m.group(2)]
            out.msg = msg[m.end():]
        return
    if c.isdigit():
        m = _AOSS.match(msg)
        if m is not None:
            out.vendor = "aruba-aoss"
            out.mnemonic = m.group(1)
            if out.program is None:
                out.program = m.group(2)
            out.msg = msg[m.end():]
        return
    if c.isupper():
        m = _VRP.match(msg)
        if m is not None:                      # Comware 5 / VRP without the %%vendor prefix
            out.vendor = out.vendor or "comware"
            out.mnemonic = f"{m.group(3)}/{m.group(4)}/{m.group(5)}"
            out.severity = int(m.group(4))
            out.msg = msg[m.end():]
