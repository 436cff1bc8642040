"""access: access-control and fire-panel inputs as campus events (JSON over TCP or HTTP).

A ``StreamingDriver``: listens on a configured address (loopback or the agent's LAN
address) for JSON objects pushed by a panel gateway, either as JSON lines over TCP or as
HTTP ``POST`` webhooks, and emits one ``Event`` per message whose panel code maps to a
campus event type: ``door_forced``, ``door_held_open``, ``door_closed``, ``access_granted``,
``access_denied``, ``fire_alarm``, ``fire_alarm_reset``, ``tamper`` (severity per type,
overridable). Every ``sample_interval_s`` a ``Sample("access_listener")`` counts what came in.

Authentication (required, no default): a shared token. TCP: the first line of a connection
must be ``{"auth": "<token>"}`` (answered ``{"ok": true}``); HTTP: ``Authorization: Bearer
<token>`` (or ``X-Campus-Token``). Anything else is rejected, counted and logged with the
peer address; nothing from it is parsed.

PRIVACY. Personal data is minimised at the edge, before anything is queued or sent:

- Only fields listed in ``pass_fields`` (door, reader, zone, ...) are copied into the event.
  Everything else in a message is dropped, so an unexpected field cannot leak.
- Fields listed in ``identifier_fields`` (card number, badge id, employee/student id) are
  replaced by ``<field>_pseudonym`` = HMAC-SHA256(per-site key, value), truncated hex. The same
  identifier always gives the same pseudonym (on every agent sharing the key file); without
  the key it cannot be reversed or recomputed. The raw value never leaves this module, nor
  does it appear in logs.
- Names (``name_fields``) are dropped entirely and may not be passed or pseudonymised.
- Malformed input is logged as peer + reason + size, never with its content.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from datetime import datetime
from hashlib import sha256
from typing import Any, Callable, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Event, Record, Sample, WarnBudget

log = logging.getLogger(__name__)

CampusType = Literal["door_forced", "door_held_open", "door_closed", "access_granted", "access_denied",
                     "fire_alarm", "fire_alarm_reset", "tamper"]
CAMPUS_TYPES: tuple[str, ...] = CampusType.__args__  # type: ignore[attr-defined]
Severity = Literal["info", "warning", "critical"]
DEFAULT_SEVERITY: dict[str, str] = {
    "door_forced": "critical", "door_held_open": "warning", "door_closed": "info",
    "access_granted": "info", "access_denied": "info", "fire_alarm": "critical",
    "fire_alarm_reset": "info", "tamper": "critical",
}
DEFAULT_PASS = ["door", "reader", "zone", "area", "direction", "panel", "point", "input", "partition", "loop",
                "detector", "state"]
DEFAULT_NAMES = ["name", "first_name", "last_name", "full_name", "given_name", "family_name", "surname",
                 "person", "person_name", "holder", "holder_name", "cardholder", "cardholder_name",
                 "user", "user_name", "username", "display_name", "email"]
MAX_STR = 256  # passed string values are truncated to this many characters


class Options(SecretFields):
    """The ``options:`` block of a ``driver: access`` device in agent.yaml."""
    model_config = ConfigDict(extra="forbid")
    listen_host: str = Field("127.0.0.1", min_length=1)
    listen_port: int = Field(ge=0, le=65535)  # 0: any free port (tests)
    protocol: Literal["tcp", "http"] = "tcp"
    http_path: str = Field("/events", pattern=r"^/")
    #: shared secret the panel gateway must present; no default. A secret (campus_sense.secret):
    #: token / token_file / token_env; read again for every connection/request it checks.
    token: Secret
    codes: dict[str, CampusType] = Field(default_factory=dict)  # panel event code -> campus type
    accept_campus_types: bool = True  # a code that already is a campus type name maps to itself
    code_field: str = "code"
    door_field: str = "door"
    time_field: str = "time"
    use_panel_time: bool = True
    doors: dict[str, str] = Field(default_factory=dict)  # panel door id -> campus device id
    pass_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_PASS))
    identifier_fields: list[str] = Field(default_factory=list)
    name_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_NAMES))
    #: per-site HMAC key (secret: pseudonym_key / pseudonym_key_file / pseudonym_key_env), read once
    #: per driver start: pseudonyms must stay stable while it runs
    pseudonym_key: Secret | None = None
    pseudonym_hex_chars: int = Field(16, ge=8, le=64)
    severity: dict[CampusType, Severity] = Field(default_factory=dict)
    sample_interval_s: float = Field(60.0, gt=0)
    max_line_bytes: int = Field(65536, ge=256)
    max_body_bytes: int = Field(1 << 20, ge=256)
    max_connections: int = Field(64, ge=1)
    auth_timeout_s: float = Field(10.0, gt=0)  # TCP auth line / whole HTTP request head

    _key: bytes | None = PrivateAttr(None)


    @field_validator("codes", "doors", mode="before")
    @classmethod
    def _str_keys(cls, v: Any) -> Any:
        # YAML turns `120: access_granted` into an int key; panel codes and door ids are text.
        if isinstance(v, dict):
            return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: x for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if len(self.token.reveal()) < 16:
            raise ValueError("token must be at least 16 characters (e.g. `openssl rand -hex 16`)")
        names = set(self.name_fields)
        ids = set(self.identifier_fields)
        if bad := sorted(names & set(self.pass_fields)):
            raise ValueError(f"pass_fields {bad}: names are always dropped, they cannot be passed on")
        if bad := sorted(names & ids):
            raise ValueError(f"identifier_fields {bad}: names are dropped entirely, not pseudonymised")
        if bad := sorted(ids & set(self.pass_fields)):
            raise ValueError(f"pass_fields {bad}: identifier fields are pseudonymised, never passed raw")
        if ids:
            if self.pseudonym_key is None:
                raise ValueError("identifier_fields needs pseudonym_key_file (or pseudonym_key_env; "
                                 "per-site HMAC key)")
            key = self.pseudonym_key.reveal().encode("utf-8")
            if len(key) < 16:
                raise ValueError(f"{self.pseudonym_key.key} {str(self.pseudonym_key)!r}: key shorter than "
                                 "16 bytes (e.g. `openssl rand -hex 32 > file`)")
            self._key = key
        return self


def pseudonym(key: bytes, value: str, hex_chars: int = 16) -> str:
    return hmac.new(key, value.encode("utf-8"), sha256).hexdigest()[:hex_chars]


def _peer(writer: asyncio.StreamWriter) -> str:
    p = writer.get_extra_info("peername")
    if isinstance(p, tuple) and len(p) >= 2:
        return f"{p[0]}:{p[1]}"
    return str(p)


class Malformed(ValueError):
    pass


class AccessDriver:
    name = "access"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, dict(tags or {})
        self._key = options._key
        self._ids = list(options.identifier_fields)
        self._names = set(options.name_fields)
        self._sev = {**DEFAULT_SEVERITY, **options.severity}
        self.counters = {"received_total": 0, "events_total": 0, "malformed_total": 0, "rejected_total": 0,
                         "unmapped_total": 0, "connections_total": 0}
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self._emit: Callable[[Record], None] | None = None
        self._warn = WarnBudget(log, f"access {device_id}")  # bounded log volume
        self._unmapped_logged: set[str] = set()
        self.ready = asyncio.Event()
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self, emit: Callable[[Record], None]) -> None:
        o = self.opts
        self._emit = emit
        self.ready.clear()
        handler = self._tcp_client if o.protocol == "tcp" else self._http_client
        try:
            self._server = await asyncio.start_server(handler, o.listen_host, o.listen_port,
                                                      limit=o.max_line_bytes, reuse_address=True)
        except OSError as e:
            raise DeviceError("config", f"access {self.device_id}: cannot listen on {o.listen_host}:"
                                        f"{o.listen_port} ({e.strerror or e})") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("access %s: listening on %s:%d (%s)", self.device_id, o.listen_host, self.port, o.protocol)
        self.ready.set()
        try:
            while True:
                await asyncio.sleep(o.sample_interval_s)
                self._emit_sample()
        finally:
            await self.close()

    def _emit_sample(self) -> None:
        assert self._emit is not None
        self._emit(Sample("access_listener", self.device_id,
                          {**self.counters, "connections": len(self._open)}, dict(self.tags)))

    async def close(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.close()
        for w in list(self._open):
            w.close()
        if srv is not None:
            try:
                async with asyncio.timeout(2.0):
                    await srv.wait_closed()
            except (TimeoutError, OSError):
                pass

    # ------------------------------------------------------------------ logging / counting
    def _malformed(self, peer: str, why: str, size: int) -> None:
        self.counters["malformed_total"] += 1
        self._warn("malformed input from %s: %s (%d bytes)", peer, why, size)  # content never logged

    def _reject(self, peer: str, why: str) -> None:
        self.counters["rejected_total"] += 1
        self._warn("rejected input from %s: %s", peer, why)

    # ------------------------------------------------------------------ messages -> events
    def handle_message(self, msg: Any, peer: str, received_ms: int | None = None) -> Event | None:
        """Turn one decoded JSON message into an Event (or None when unmapped); Malformed on bad input."""
        o = self.opts
        if not isinstance(msg, dict):
            raise Malformed("not a JSON object")
        code = msg.get(o.code_field)
        if isinstance(code, bool) or not isinstance(code, (str, int)) or code == "":
            raise Malformed(f"missing or bad {o.code_field!r}")
        code = str(code)
        typ = o.codes.get(code) or (code if o.accept_campus_types and code in CAMPUS_TYPES else None)
        if typ is None:
            self.counters["unmapped_total"] += 1
            if code not in self._unmapped_logged and len(self._unmapped_logged) < 1000:
                self._unmapped_logged.add(code)
                log.warning("access %s: unmapped panel code %r from %s (add it to options.codes)",
                            self.device_id, code[:64], peer)
            return None
        data: dict[str, Any] = {"code": code[:MAX_STR]}
        for f in o.pass_fields:
            v = msg.get(f)
            if isinstance(v, str):
                data[f] = v[:MAX_STR]
            elif isinstance(v, (bool, int, float)):
                data[f] = v
        for f in self._ids:
            v = msg.get(f)
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, (str, int)) and str(v).strip():
                assert self._key is not None
                data[f"{f}_pseudonym"] = pseudonym(self._key, str(v).strip(), o.pseudonym_hex_chars)
            # anything else (lists, objects): dropped, never passed raw
        door = msg.get(o.door_field)
        door = str(door)[:MAX_STR] if isinstance(door, (str, int)) and not isinstance(door, bool) else None
        tags = dict(self.tags)
        device = self.device_id
        if door:
            tags["door"] = door
            if door in o.doors:
                device = o.doors[door]
                tags["panel"] = self.device_id
        t = received_ms if received_ms is not None else int(time.time() * 1000)
        if o.use_panel_time:
            pt = _panel_time(msg.get(o.time_field))
            if pt is not None:
                t = pt
        return Event(device, typ, self._sev[typ], data, tags, t)

    def _handle_text(self, raw: bytes, peer: str) -> None:
        if not raw.strip():
            return
        self.counters["received_total"] += 1
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            self._malformed(peer, f"not JSON ({type(e).__name__})", len(raw))
            return
        self._handle_obj(msg, peer, len(raw))

    def _handle_obj(self, msg: Any, peer: str, size: int) -> bool:
        try:
            ev = self.handle_message(msg, peer)
        except Malformed as e:
            self._malformed(peer, str(e), size)
            return False
        if ev is not None:
            self.counters["events_total"] += 1
            assert self._emit is not None
            try:
                self._emit(ev)
            except Exception:
                log.exception("access %s: emit failed", self.device_id)
        return True

    def _token_ok(self, presented: str | bytes | None) -> bool:
        if isinstance(presented, str):
            presented = presented.encode("utf-8")
        try:  # read per check (campus_sense.secret rotation rule)
            token = self.opts.token.reveal().encode("utf-8")
        except SecretError as e:
            log.error("%s: cannot read the token: %s", self.device_id, e)
            return False
        return isinstance(presented, bytes) and hmac.compare_digest(presented, token)

    # ------------------------------------------------------------------ TCP JSON lines
    async def _tcp_client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer = _peer(w)
        if len(self._open) >= self.opts.max_connections:
            self._reject(peer, f"too many connections ({self.opts.max_connections})")
            w.close()
            return
        self._open.add(w)
        self.counters["connections_total"] += 1
        try:
            try:
                async with asyncio.timeout(self.opts.auth_timeout_s):
                    line = await r.readuntil(b"\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                self._reject(peer, "no auth line")
                return
            try:
                auth = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                auth = None
            if not isinstance(auth, dict) or not self._token_ok(auth.get("auth")):
                self._reject(peer, "bad or missing token")
                w.write(b'{"error": "unauthorized"}\n')
                await w.drain()
                return
            w.write(b'{"ok": true}\n')
            await w.drain()
            while True:
                try:
                    line = await r.readuntil(b"\n")
                except asyncio.IncompleteReadError as e:
                    if e.partial.strip():
                        self._handle_text(e.partial, peer)
                    return
                except asyncio.LimitOverrunError:
                    self.counters["received_total"] += 1
                    self._malformed(peer, f"line longer than {self.opts.max_line_bytes} bytes; connection closed",
                                    self.opts.max_line_bytes)
                    return
                self._handle_text(line, peer)
        except ConnectionError:
            return
        except Exception:
            log.exception("access %s: connection from %s failed", self.device_id, peer)
        finally:
            self._open.discard(w)
            w.close()

    # ------------------------------------------------------------------ HTTP webhook
    async def _http_client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer = _peer(w)
        if len(self._open) >= self.opts.max_connections:
            self._reject(peer, f"too many connections ({self.opts.max_connections})")
            w.close()
            return
        self._open.add(w)
        self.counters["connections_total"] += 1
        try:
            status, body = await self._http_request(r, peer)
            payload = json.dumps(body).encode()
            reason = {202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                      405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large"}.get(status, "")
            head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n")
            if status == 401:
                head += 'WWW-Authenticate: Bearer realm="campus-sense"\r\n'
            w.write(head.encode() + b"\r\n" + payload)
            await w.drain()
        except _Drop:
            pass
        except ConnectionError:
            pass
        except Exception:
            log.exception("access %s: HTTP request from %s failed", self.device_id, peer)
        finally:
            self._open.discard(w)
            w.close()

    async def _http_request(self, r: asyncio.StreamReader, peer: str) -> tuple[int, dict]:
        o = self.opts
        try:
            async with asyncio.timeout(o.auth_timeout_s):
                request_line = await r.readuntil(b"\n")
                headers: dict[str, str] = {}
                while True:
                    h = await r.readuntil(b"\n")
                    if h in (b"\r\n", b"\n"):
                        break
                    if len(headers) >= 100:
                        raise ValueError("too many headers")
                    k, sep, v = h.decode("latin-1").partition(":")
                    if not sep:
                        raise ValueError("bad header line")
                    headers[k.strip().lower()] = v.strip()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.counters["received_total"] += 1
            self._malformed(peer, f"bad HTTP request head ({type(e).__name__})", 0)
            raise _Drop from None
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.counters["received_total"] += 1
            self._malformed(peer, "bad HTTP request line", len(request_line))
            return 400, {"error": "bad request line"}
        method, target = parts[0], parts[1].split("?", 1)[0]
        # Authentication first: nothing from an unauthenticated peer is read or parsed.
        authz = headers.get("authorization", "")
        token = authz[7:].strip() if authz[:7].lower() == "bearer " else headers.get("x-campus-token")
        if not self._token_ok(token):
            self._reject(peer, f"bad or missing token ({method} {target[:64]})")
            return 401, {"error": "unauthorized"}
        if target != o.http_path:
            return 404, {"error": f"POST events to {o.http_path}"}
        if method != "POST":
            return 405, {"error": "use POST"}
        if "chunked" in headers.get("transfer-encoding", "").lower() or "content-length" not in headers:
            return 411, {"error": "Content-Length required"}
        try:
            n = int(headers["content-length"])
        except ValueError:
            return 400, {"error": "bad Content-Length"}
        self.counters["received_total"] += 1
        if n < 0 or n > o.max_body_bytes:
            self._malformed(peer, f"body of {n} bytes exceeds max_body_bytes {o.max_body_bytes}", max(n, 0))
            return 413, {"error": f"body larger than {o.max_body_bytes} bytes"}
        try:
            async with asyncio.timeout(o.auth_timeout_s):
                raw = await r.readexactly(n)
        except (TimeoutError, asyncio.IncompleteReadError):
            self._malformed(peer, "body shorter than Content-Length", n)
            raise _Drop from None
        try:
            doc = json.loads(raw)
            items = doc if isinstance(doc, list) else [doc]
        except (ValueError, UnicodeDecodeError):
            try:  # JSON lines
                items = [json.loads(x) for x in raw.splitlines() if x.strip()]
            except (ValueError, UnicodeDecodeError) as e:
                self._malformed(peer, f"body is not JSON or JSON lines ({type(e).__name__})", n)
                return 400, {"error": "body is not JSON"}
        before = dict(self.counters)
        for i, it in enumerate(items):
            if i:
                self.counters["received_total"] += 1
            self._handle_obj(it, peer, n)
        res = {k: self.counters[k] - before[k] for k in ("events_total", "malformed_total", "unmapped_total")}
        return 202, {"events": res["events_total"], "malformed": res["malformed_total"],
                     "unmapped": res["unmapped_total"]}


class _Drop(Exception):
    """Close the connection without an answer."""


def _panel_time(v: Any) -> int | None:
    """Epoch seconds / milliseconds or ISO 8601 (naive = the agent's local time) -> epoch ms."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        if v <= 0:
            return None
        return int(v if v > 1e11 else v * 1000)
    if isinstance(v, str) and v:
        try:
            return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return None


def create(device_id: str, options: Options, tags: dict[str, str] | None = None) -> AccessDriver:
    if isinstance(options, dict):
        options = Options.model_validate(options)
    return AccessDriver(device_id, options, tags or {})
