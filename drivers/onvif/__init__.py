"""ONVIF cameras and encoders (Profile S/T device and event services), polled.

Per poll: ``GetSystemDateAndTime`` (clock offset against the agent, pre-auth as the
ONVIF Core spec allows, authenticated as a fallback), device facts
(``GetDeviceInformation``, ``GetNetworkInterfaces``) on the first poll / when they
change / every ``facts_interval_s``, and the events queued since the last poll
through a PullPoint subscription (``CreatePullPointSubscription``, ``PullMessages``,
``Renew`` before it terminates, re-created when the camera forgot it).
Event topics are mapped by :mod:`drivers.onvif.parsers`.

Built on onvif-zeep-async (``ONVIFCamera``, WS-UsernameToken PasswordDigest, the
WSDL files the package ships; nothing is fetched from the network). Subscription
handling follows Home Assistant's onvif integration, but renewal happens inside
``poll()`` instead of on timers, so a dead camera costs nothing between polls.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import os
import time
from typing import Any, Awaitable

from pydantic import ConfigDict, Field, model_validator

from campus_sense.secret import Secret, SecretError, SecretFields
from drivers.base import DeviceError, Event, Facts, Record, Sample
from drivers.onvif import parsers

log = logging.getLogger(__name__)

PULLPOINT_NS = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"
EVENTS_NS = "http://www.onvif.org/ver10/events/wsdl"
REDACTED = "**REDACTED**"
CLOCK_AUTH_HINT_S = 30.0  # clock offset beyond which an auth failure gets the clock hint


class Options(SecretFields):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(80, ge=1, le=65535)
    # No default credentials: ONVIF requires a user for everything but GetSystemDateAndTime.
    username: str = Field(min_length=1)
    #: a secret (campus_sense.secret): password / password_file / password_env; read per session
    password: Secret | None = None
    timeout_s: float = Field(10.0, gt=0)  # per SOAP request
    events: bool = True  # PullPoint subscription
    pull_timeout_s: float = Field(1.0, ge=0, le=60)  # PullMessages long-poll wait
    message_limit: int = Field(100, ge=1, le=1000)
    subscription_s: float = Field(600.0, ge=1)  # InitialTerminationTime / Renew
    resubscribe_s: float = Field(300.0, ge=0)  # retry a failed CreatePullPointSubscription after this
    facts_interval_s: float = Field(3600.0, gt=0)
    adjust_time: bool = False  # sign requests with the camera's clock (cameras with a wrong clock)

    @model_validator(mode="after")
    def _one_password(self) -> "Options":
        if self.password is None:
            raise ValueError("set exactly one of password or password_file or password_env")
        return self


def classify(e: BaseException) -> DeviceError:
    """Map onvif/zeep/aiohttp exceptions to DeviceError(reason, message)."""
    import aiohttp
    from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError
    from onvif.util import is_auth_error, stringify_onvif_error
    from zeep.exceptions import Fault, TransportError, XMLParseError, XMLSyntaxError, ValidationError

    if isinstance(e, DeviceError):
        return e
    if isinstance(e, (TimeoutError, asyncio.TimeoutError, ONVIFTimeoutError, aiohttp.ServerTimeoutError)):
        return DeviceError("timeout", f"no answer within the timeout ({type(e).__name__})")
    if isinstance(e, Fault):
        msg = stringify_onvif_error(e)
        if is_auth_error(e):
            return DeviceError("auth", f"camera refused the credentials: {msg}")
        return DeviceError("protocol", f"SOAP fault: {msg}")
    if isinstance(e, ONVIFAuthError):
        return DeviceError("auth", str(e))
    if isinstance(e, TransportError):
        if e.status_code in (401, 403):
            return DeviceError("auth", f"HTTP {e.status_code} (credentials refused)")
        return DeviceError("protocol", f"HTTP {e.status_code}: not a SOAP answer")
    if isinstance(e, (XMLParseError, XMLSyntaxError, ValidationError)):
        return DeviceError("protocol", f"invalid SOAP answer: {e}")
    if isinstance(e, aiohttp.ClientResponseError):
        return DeviceError("protocol", f"bad HTTP answer: {e.status} {e.message}")
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return DeviceError("protocol", "camera closed the connection without an answer")
    if isinstance(e, (aiohttp.ClientConnectionError, ConnectionError, OSError)):
        return DeviceError("unreachable", f"cannot connect: {e}")
    if isinstance(e, ONVIFError):
        if e.__cause__ is not None and e.__cause__ is not e:
            return classify(e.__cause__)
        return DeviceError("protocol", str(e))
    try:
        from lxml.etree import XMLSyntaxError as LxmlSyntaxError
        if isinstance(e, LxmlSyntaxError):
            return DeviceError("protocol", f"invalid XML: {e}")
    except ImportError:  # pragma: no cover
        pass
    return DeviceError("protocol", f"{type(e).__name__}: {e}")


def _camera_utc(sdt: Any) -> tuple[dt.datetime | None, str | None]:
    """tt:SystemDateTime -> (camera UTC time, DateTimeType)."""
    if sdt is None:
        return None, None
    kind = getattr(sdt, "DateTimeType", None)
    c, tz = getattr(sdt, "UTCDateTime", None), dt.timezone.utc
    if c is None:
        # Only local time: ONVIF says UTCDateTime is mandatory when the device knows it;
        # without a usable TZ we cannot convert, so no offset.
        return None, kind
    try:
        d = dt.datetime(c.Date.Year, c.Date.Month, c.Date.Day, c.Time.Hour, c.Time.Minute, c.Time.Second,
                        tzinfo=tz)
    except (AttributeError, TypeError, ValueError):
        return None, kind
    return d, kind


def _nic_ipv4(nic: Any) -> list[str]:
    """IPv4 addresses of a tt:NetworkInterface: the DHCP lease when DHCP is on, else the manual ones."""
    cfg = getattr(getattr(nic, "IPv4", None), "Config", None)
    if cfg is None:
        return []
    out = []
    if getattr(cfg, "DHCP", False):
        a = getattr(getattr(cfg, "FromDHCP", None), "Address", None)
        if a:
            out.append(str(a))
    for m in getattr(cfg, "Manual", None) or []:
        a = getattr(m, "Address", None)
        if a and str(a) not in out:
            out.append(str(a))
    return out


class OnvifDriver:
    name = "onvif"

    def __init__(self, device_id: str, options: Options, tags: dict[str, str]):
        self.device_id, self.opts, self.tags = device_id, options, tags
        self._cam: Any = None
        self._dm: Any = None
        self._pull: Any = None  # PullPointSubscription binding
        self._sub: Any = None  # SubscriptionManager binding
        self._sub_renew_at = 0.0
        self._sub_retry_at = 0.0
        self._last_facts: dict[str, Any] | None = None
        self._facts_at = 0.0
        self.clock_offset_s: float | None = None
        self.events_total = 0
        self.unhandled_topics: dict[str, int] = {}
        self.subscription_error: str | None = None
        self.last_error: str | None = None
        self.renewals = 0
        self.subscriptions_created = 0

    # ------------------------------------------------------------------ plumbing
    def _password(self) -> str:
        try:  # read now (campus_sense.secret rotation rule)
            return self.opts.password.reveal()  # type: ignore[union-attr]
        except SecretError as e:
            raise DeviceError("config", str(e)) from None

    async def _call(self, aw: Awaitable[Any], what: str) -> Any:
        try:
            async with asyncio.timeout(self.opts.timeout_s):
                return await aw
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a DeviceError
            err = classify(e)
            raise DeviceError(err.reason, f"{self.opts.host}:{self.opts.port}: {what}: {err}") from e

    async def _connect(self) -> None:
        from onvif import ONVIFCamera

        password = self._password()
        saved = {k: os.environ[k] for k in ("http_proxy", "https_proxy") if k in os.environ}
        cam = ONVIFCamera(self.opts.host, self.opts.port, self.opts.username, password, no_cache=True,
                          adjust_time=self.opts.adjust_time)
        os.environ.update(saved)  # ONVIFCamera() drops them process-wide; other drivers may need them
        try:
            # Clock first (pre-auth): a camera whose clock is far off rejects our WS-Security
            # timestamps, and the offset is what explains the 'auth' error then.
            self._dm = await self._call(cam.create_devicemgmt_service(), "device service")
            try:
                await self._clock()
            except DeviceError as e:
                if e.reason in ("unreachable", "timeout"):
                    raise
            try:
                await self._call(cam.update_xaddrs(), "GetServices/GetCapabilities")
            except DeviceError as e:
                off = self.clock_offset_s
                if (e.reason == "auth" and off is not None and abs(off) > CLOCK_AUTH_HINT_S
                        and not self.opts.adjust_time):
                    raise DeviceError("auth", f"{e} (camera clock is {off:+.0f} s off the agent's; cameras reject "
                                              "WS-Security timestamps that far off: fix NTP on the camera or set "
                                              "adjust_time: true)") from e
                raise
            self._dm = await self._call(cam.create_devicemgmt_service(), "device service")
        except BaseException:
            self._dm = None
            await self._close_cam(cam)
            raise
        self._cam = cam

    @staticmethod
    async def _close_cam(cam: Any) -> None:
        try:
            async with asyncio.timeout(5):
                await cam.close()
        except Exception:  # noqa: BLE001
            log.debug("closing ONVIF client failed", exc_info=True)

    # ------------------------------------------------------------------ poll
    async def poll(self) -> list[Record]:
        try:
            return await self._poll()
        except DeviceError as e:
            self.last_error = f"{e.reason}: {e}"
            raise

    async def _poll(self) -> list[Record]:
        if self._cam is None:
            await self._connect()
        out: list[Record] = []
        offset, time_kind = await self._clock()
        now = time.monotonic()
        if self._last_facts is None or now - self._facts_at >= self.opts.facts_interval_s or (
                offset is not None and abs(offset - (self._last_facts.get("clock_offset_s") or 0)) >= 1.0):
            facts = await self._facts()
            facts["clock_offset_s"] = offset
            if time_kind:
                facts["time_source"] = str(time_kind)
            facts = {k: v for k, v in facts.items() if v is not None}
            if facts != self._last_facts or now - self._facts_at >= self.opts.facts_interval_s:
                out.append(Facts(self.device_id, facts))
                self._facts_at = now
            self._last_facts = facts
        pulled = 0
        if self.opts.events:
            pulled = await self._pull_events(out)
        fields: dict[str, Any] = {"events": pulled, "subscribed": self._pull is not None}
        if offset is not None:
            fields["clock_offset_s"] = offset
        out.append(Sample("onvif", self.device_id, fields, dict(self.tags)))
        self.last_error = None
        return out

    async def _clock(self) -> tuple[float | None, str | None]:
        from zeep.exceptions import Fault

        t0 = time.time()
        try:
            sdt = await self._call(self._dm.authless_GetSystemDateAndTime(), "GetSystemDateAndTime")
        except DeviceError as e:
            if not isinstance(e.__cause__, Fault):
                raise
            t0 = time.time()
            sdt = await self._call(self._dm.GetSystemDateAndTime(), "GetSystemDateAndTime")
        t1 = time.time()
        cam, kind = _camera_utc(sdt)
        if cam is None:
            return None, kind
        # The camera answers in whole (truncated) seconds: its clock was somewhere in [s, s+1), so
        # take s + 0.5 and compare with the middle of the round trip.
        self.clock_offset_s = round(cam.timestamp() + 0.5 - (t0 + t1) / 2, 1)
        return self.clock_offset_s, kind

    async def _facts(self) -> dict[str, Any]:
        from zeep.exceptions import Fault

        info = await self._call(self._dm.GetDeviceInformation(), "GetDeviceInformation")
        f: dict[str, Any] = {
            "vendor": getattr(info, "Manufacturer", None),
            "manufacturer": getattr(info, "Manufacturer", None),
            "model": getattr(info, "Model", None),
            "firmware": getattr(info, "FirmwareVersion", None),
            "serial": getattr(info, "SerialNumber", None),
            "hardware_id": getattr(info, "HardwareId", None),
        }
        try:
            f["ip"] = str(ipaddress.ip_address(self.opts.host))
        except ValueError:
            f["hostname"] = self.opts.host
        try:
            nics = await self._call(self._dm.GetNetworkInterfaces(), "GetNetworkInterfaces")
        except DeviceError as e:
            if e.reason != "protocol" or not isinstance(e.__cause__, Fault):
                raise
            nics = []  # optional on some encoders ("not implemented")
        macs, ips = [], []
        for nic in nics or []:
            if not getattr(nic, "Enabled", True):
                continue
            hw = getattr(getattr(nic, "Info", None), "HwAddress", None)
            if hw:
                macs.append(str(hw).lower().replace("-", ":"))
            ips.extend(_nic_ipv4(nic))
        if ips:
            f["device_ip"] = ips[0]  # what the camera says it has (differs from ip behind NAT)
            f.setdefault("ip", ips[0])
        if macs:
            f["mac"] = macs[0]
            if len(macs) > 1:
                f["macs"] = macs
        return f

    # ------------------------------------------------------------------ events
    async def _subscribe(self) -> None:
        from onvif.util import normalize_url

        cam = self._cam
        ev = await self._call(cam.create_events_service(), "events service")
        res = await self._call(ev.CreatePullPointSubscription(
            {"InitialTerminationTime": cam.get_next_termination_time(dt.timedelta(seconds=self.opts.subscription_s))}),
            "CreatePullPointSubscription")
        addr = res.SubscriptionReference.Address._value_1
        cam.xaddrs[PULLPOINT_NS] = normalize_url(addr)
        self._sub = await self._call(cam.create_subscription_service("PullPointSubscription"), "subscription")
        self._pull = await self._call(cam.create_pullpoint_service(), "pullpoint")
        self._schedule_renew(res)
        self.subscriptions_created += 1
        self.subscription_error = None

    def _schedule_renew(self, res: Any) -> None:
        span = self.opts.subscription_s
        cur, term = getattr(res, "CurrentTime", None), getattr(res, "TerminationTime", None)
        if isinstance(cur, dt.datetime) and isinstance(term, dt.datetime) and cur.tzinfo and term.tzinfo:
            span = max(1.0, (term - cur).total_seconds())
        self._sub_renew_at = time.monotonic() + span * 0.5

    def _drop_subscription(self, why: str) -> None:
        self._pull = self._sub = None
        self.subscription_error = why

    async def _pull_events(self, out: list[Record]) -> int:
        now = time.monotonic()
        if self._pull is None:
            if now < self._sub_retry_at:
                return 0
            try:
                await self._subscribe()
            except DeviceError as e:
                if e.reason in ("auth", "unreachable", "timeout", "config"):
                    raise
                # PullPoint not supported or too many subscriptions: facts keep flowing.
                self._drop_subscription(str(e))
                self._sub_retry_at = now + self.opts.resubscribe_s
                log.info("%s: no PullPoint subscription: %s", self.device_id, e)
                return 0
        elif now >= self._sub_renew_at:
            try:
                res = await self._call(self._sub.Renew(self._cam.get_next_termination_time(
                    dt.timedelta(seconds=self.opts.subscription_s))), "Renew")
                self.renewals += 1
                self._schedule_renew(res)
            except DeviceError as e:
                if e.reason in ("auth", "unreachable", "timeout"):
                    raise
                log.info("%s: Renew failed (%s), re-subscribing", self.device_id, e)
                self._drop_subscription(str(e))
                await self._subscribe()
        try:
            res = await self._call(self._pull.PullMessages(
                {"Timeout": dt.timedelta(seconds=self.opts.pull_timeout_s), "MessageLimit": self.opts.message_limit}),
                "PullMessages")
        except DeviceError as e:
            if e.reason != "protocol":
                raise
            # Camera rebooted or the subscription expired: start a new one, pull next poll.
            log.info("%s: PullMessages failed (%s), re-subscribing", self.device_id, e)
            self._drop_subscription(str(e))
            await self._subscribe()
            return 0
        n = 0
        for nm in getattr(res, "NotificationMessage", None) or []:
            msg = parsers.normalize(nm)
            if msg is None:
                continue
            n += 1
            fn = parsers.lookup(msg.topic)
            if fn is None:
                if msg.topic not in self.unhandled_topics:
                    log.debug("%s: no parser for ONVIF topic %s", self.device_id, msg.topic)
                self.unhandled_topics[msg.topic] = self.unhandled_topics.get(msg.topic, 0) + 1
                continue
            p = fn(msg)
            if p is None:
                continue
            ev = Event(self.device_id, p.type, p.severity, {k: v for k, v in p.data.items() if v is not None},
                       dict(self.tags))
            if msg.utc_ms is not None:
                ev.time_ms = msg.utc_ms
            out.append(ev)
        self.events_total += n
        return n

    # ------------------------------------------------------------------ diagnostics / close
    def diagnostics(self) -> dict[str, Any]:
        """Support dump (like Home Assistant's): config with credentials redacted, device
        facts, service addresses, subscription state. Safe to paste into a ticket."""
        cfg = self.opts.model_dump(mode="json")
        for k in ("password", "username"):
            if cfg.get(k) is not None:
                cfg[k] = REDACTED
        services = {}
        if self._cam is not None:
            services = {"/".join(str(p) for p in k if p): str(s.xaddr) for k, s in self._cam.services.items()}
        return {
            "config": cfg,
            "device": {"facts": dict(self._last_facts or {}), "clock_offset_s": self.clock_offset_s,
                       "xaddrs": dict(self._cam.xaddrs) if self._cam is not None else {}, "services": services},
            "events": {"subscribed": self._pull is not None, "subscriptions_created": self.subscriptions_created,
                       "renewals": self.renewals, "subscription_error": self.subscription_error,
                       "received_total": self.events_total, "unhandled_topics": dict(self.unhandled_topics)},
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        cam, sub = self._cam, self._sub
        self._cam = self._dm = None
        self._drop_subscription("closed")
        if cam is None:
            return
        if sub is not None:
            try:
                async with asyncio.timeout(min(self.opts.timeout_s, 5)):
                    await sub.Unsubscribe()
            except Exception:  # noqa: BLE001 - best effort; it expires on its own
                log.debug("%s: Unsubscribe failed", self.device_id, exc_info=True)
        await self._close_cam(cam)


def create(device_id: str, options: Options, tags: dict[str, str]) -> OnvifDriver:
    return OnvifDriver(device_id, options, tags)
