"""A small simulated ONVIF device (SOAP 1.2 over HTTP on 127.0.0.1) for the onvif driver tests and the demo.

No real camera can run in CI, so this server answers the operations the driver uses,
with the message shapes of the published ONVIF specifications and WSDLs
(ONVIF Core Specification, devicemgmt.wsdl ver10, event.wsdl ver10, OASIS WS-BaseNotification
b-2.xsd, WS-Addressing 2005/08), and nothing more:

* Device service (``/onvif/device_service``): GetServices, GetCapabilities, GetDeviceInformation,
  GetNetworkInterfaces, GetSystemDateAndTime.
* Event service (``/onvif/event_service``): CreatePullPointSubscription; per subscription
  (``/onvif/subscription/<n>``): PullMessages (long poll up to its Timeout, at most MessageLimit
  messages), Renew, Unsubscribe, SetSynchronizationPoint.

Authentication is WS-Security UsernameToken (ONVIF Core 5.9.4, OASIS UsernameToken Profile 1.0):
``PasswordDigest = Base64(SHA-1(nonce + created + password))`` with the decoded nonce bytes;
a wrong digest, an unknown user, a missing token or a reused nonce gets a SOAP 1.2
``env:Sender / ter:NotAuthorized`` fault with HTTP 400, as the Core spec's error handling
section prescribes. GetSystemDateAndTime is answered without a token (PRE_AUTH class in the
spec: clients need the device time to build the token). Unknown operations get
``env:Receiver / ter:ActionNotSupported``; an unknown or expired subscription gets
``env:Sender / ter:InvalidArgVal / ter:ResourceUnknown`` (event.wsdl ``ResourceUnknownFault``).

Test knobs: ``clock_skew_s`` (device clock offset), ``max_created_skew_s`` (reject tokens whose
``Created`` is too far from the device clock, as many cameras do), ``delay_s`` (answer late), ``garbage``
(answer with non-SOAP bytes), ``push(topic, source, data)`` (queue an event for every live
subscription), ``expire_subscriptions()``, ``ops`` (operations seen, in order).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tns1": "http://www.onvif.org/ver10/topics",
    "ter": "http://www.onvif.org/ver10/error",
}
DIGEST_TYPE = ("http://docs.oasis-open.org/wss/2004/01/"
               "oasis-200401-wss-username-token-profile-1.0#PasswordDigest")
TOPIC_DIALECT = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
PRE_AUTH = {"GetSystemDateAndTime"}


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken Profile 1.0 section 3.1: Base64(SHA-1(nonce + created + password))."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration_s(text: str | None, default: float) -> float:
    """xs:duration subset used by clients: PT#H#M#S (fractions allowed)."""
    if not text:
        return default
    t = text.strip()
    if not t.startswith("PT"):
        try:  # absolute xs:dateTime
            end = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
            return max(0.0, (end - dt.datetime.now(dt.timezone.utc)).total_seconds())
        except ValueError:
            return default
    total, num = 0.0, ""
    for ch in t[2:]:
        if ch.isdigit() or ch == ".":
            num += ch
        else:
            total += float(num or 0) * {"H": 3600, "M": 60, "S": 1}.get(ch, 0)
            num = ""
    return total


class _Sub:
    def __init__(self, sid: int, expires: float):
        self.id, self.expires, self.queue = sid, expires, []


class OnvifSim:
    def __init__(self, username: str, password: str, *, manufacturer: str = "SimCam", model: str = "SC-200",
                 firmware: str = "2.4.1", serial: str = "SC200-0042", hardware_id: str = "HW-7",
                 mac: str = "00:11:22:33:44:55", clock_skew_s: float = 0.0):
        self.username, self.password = username, password
        self.info = dict(Manufacturer=manufacturer, Model=model, FirmwareVersion=firmware, SerialNumber=serial,
                         HardwareId=hardware_id)
        self.mac, self.clock_skew_s = mac, clock_skew_s
        self.delay_s = 0.0
        self.garbage = False
        #: reject tokens whose Created is further than this from the device clock (None: accept any)
        self.max_created_skew_s: float | None = None
        self.ops: list[str] = []
        self.auth_failures = 0
        self._nonces: set[bytes] = set()
        self._subs: dict[int, _Sub] = {}
        self._next_sub = 1
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "OnvifSim":
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload, ctype = sim._handle(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout, shutdown): nothing to answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            with self._cond:
                self._cond.notify_all()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---------------------------------------------------------------- test knobs
    def push(self, topic: str, source: dict[str, str], data: dict[str, str], operation: str = "Changed",
             utc: dt.datetime | None = None) -> None:
        msg = (topic, source, data, operation, utc or dt.datetime.now(dt.timezone.utc))
        with self._cond:
            for s in self._subs.values():
                s.queue.append(msg)
            self._cond.notify_all()

    def expire_subscriptions(self) -> None:
        with self._cond:
            self._subs.clear()

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    # ---------------------------------------------------------------- SOAP
    def _now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.clock_skew_s)

    def _handle(self, path: str, body: bytes) -> tuple[int, bytes, str]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.garbage:
            return 200, b"<html><body>Welcome to nginx</body></html>", "text/html"
        try:
            env = ET.fromstring(body)
            op_el = next(iter(env.find("env:Body", NS)))
        except (ET.ParseError, StopIteration, TypeError):
            return self._fault("env:Sender", "ter:WellFormed", "malformed SOAP envelope")
        op = op_el.tag.rsplit("}", 1)[-1]
        self.ops.append(op)
        if op not in PRE_AUTH and not self._authorized(env):
            self.auth_failures += 1
            return self._fault("env:Sender", "ter:NotAuthorized", "Sender not Authorized")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return self._fault("env:Receiver", "ter:ActionNotSupported", f"{op} not supported")
        return handler(path, op_el)

    def _authorized(self, env: ET.Element) -> bool:
        tok = env.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
        if tok is None:
            return False
        user = tok.findtext("wsse:Username", "", NS)
        pw = tok.find("wsse:Password", NS)
        nonce_b64 = tok.findtext("wsse:Nonce", "", NS)
        created = tok.findtext("wsu:Created", "", NS)
        if pw is None or pw.get("Type") != DIGEST_TYPE or not nonce_b64 or not created:
            return False  # ONVIF requires the digest form
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
        except ValueError:
            return False
        if self.max_created_skew_s is not None:
            try:
                c = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
            except ValueError:
                return False
            if c.tzinfo is None or abs((c - self._now()).total_seconds()) > self.max_created_skew_s:
                return False
        with self._cond:
            if nonce in self._nonces:
                return False  # replay
            self._nonces.add(nonce)
        return user == self.username and (pw.text or "").strip() == password_digest(nonce, created, self.password)

    def _envelope(self, body: str, status: int = 200) -> tuple[int, bytes, str]:
        decl = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items() if k not in ("wsse", "wsu"))
        xml = f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {decl}><env:Body>{body}</env:Body></env:Envelope>'
        return status, xml.encode(), "application/soap+xml; charset=utf-8"

    def _fault(self, code: str, subcode: str, reason: str, subsub: str | None = None) -> tuple[int, bytes, str]:
        inner = f"<env:Subcode><env:Value>{subsub}</env:Value></env:Subcode>" if subsub else ""
        body = (f"<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode><env:Value>{subcode}</env:Value>"
                f"{inner}</env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">{html.escape(reason)}"
                f"</env:Text></env:Reason></env:Fault>")
        return self._envelope(body, 400 if code == "env:Sender" else 500)

    # device service ----------------------------------------------------------
    def _op_GetServices(self, path, el):
        svc = [("http://www.onvif.org/ver10/device/wsdl", "/onvif/device_service"),
               ("http://www.onvif.org/ver10/events/wsdl", "/onvif/event_service")]
        body = "".join(f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{self.base}{p}</tds:XAddr>"
                       "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
                       for ns, p in svc)
        return self._envelope(f"<tds:GetServicesResponse>{body}</tds:GetServicesResponse>")

    def _op_GetCapabilities(self, path, el):
        return self._envelope(
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self.base}/onvif/device_service</tt:XAddr></tt:Device>"
            f"<tt:Events><tt:XAddr>{self.base}/onvif/event_service</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport>"
            "</tt:Events></tds:Capabilities></tds:GetCapabilitiesResponse>")

    def _op_GetDeviceInformation(self, path, el):
        body = "".join(f"<tds:{k}>{html.escape(v)}</tds:{k}>" for k, v in self.info.items())
        return self._envelope(f"<tds:GetDeviceInformationResponse>{body}</tds:GetDeviceInformationResponse>")

    def _op_GetNetworkInterfaces(self, path, el):
        return self._envelope(
            "<tds:GetNetworkInterfacesResponse><tds:NetworkInterfaces token=\"eth0\">"
            "<tt:Enabled>true</tt:Enabled><tt:Info><tt:Name>eth0</tt:Name>"
            f"<tt:HwAddress>{self.mac}</tt:HwAddress><tt:MTU>1500</tt:MTU></tt:Info>"
            "<tt:IPv4><tt:Enabled>true</tt:Enabled><tt:Config><tt:Manual><tt:Address>127.0.0.1</tt:Address>"
            "<tt:PrefixLength>8</tt:PrefixLength></tt:Manual><tt:DHCP>false</tt:DHCP></tt:Config></tt:IPv4>"
            "</tds:NetworkInterfaces></tds:GetNetworkInterfacesResponse>")

    def _op_GetSystemDateAndTime(self, path, el):
        n = self._now()
        return self._envelope(
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime><tt:Time><tt:Hour>{n.hour}</tt:Hour><tt:Minute>{n.minute}</tt:Minute>"
            f"<tt:Second>{n.second}</tt:Second></tt:Time><tt:Date><tt:Year>{n.year}</tt:Year>"
            f"<tt:Month>{n.month}</tt:Month><tt:Day>{n.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>")

    # event service -------------------------------------------------------------
    def _op_CreatePullPointSubscription(self, path, el):
        span = _duration_s(el.findtext("tev:InitialTerminationTime", None, NS), 60.0)
        with self._cond:
            sid = self._next_sub
            self._next_sub += 1
            self._subs[sid] = _Sub(sid, time.monotonic() + span)
        now = self._now()
        return self._envelope(
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa:Address>{self.base}/onvif/subscription/{sid}</wsa:Address></tev:SubscriptionReference>"
            f"<wsnt:CurrentTime>{_iso(now)}</wsnt:CurrentTime>"
            f"<wsnt:TerminationTime>{_iso(now + dt.timedelta(seconds=span))}</wsnt:TerminationTime>"
            "</tev:CreatePullPointSubscriptionResponse>")

    def _sub_for(self, path: str) -> _Sub | None:
        try:
            sid = int(path.rstrip("/").rsplit("/", 1)[-1])
        except ValueError:
            return None
        with self._cond:
            s = self._subs.get(sid)
            if s is not None and time.monotonic() > s.expires:
                del self._subs[sid]
                return None
            return s

    def _unknown_sub(self):
        return self._fault("env:Sender", "ter:InvalidArgVal", "subscription unknown or expired", "ter:ResourceUnknown")

    def _op_PullMessages(self, path, el):
        s = self._sub_for(path)
        if s is None:
            return self._unknown_sub()
        wait = min(_duration_s(el.findtext("tev:Timeout", None, NS), 1.0), 10.0)
        limit = int(el.findtext("tev:MessageLimit", "100", NS) or 100)
        deadline = time.monotonic() + wait
        with self._cond:
            while not s.queue and self._server is not None and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            msgs, s.queue[:] = s.queue[:limit], s.queue[limit:]
        now = self._now()
        parts = []
        for topic, source, data, operation, utc in msgs:
            src = "".join(f'<tt:SimpleItem Name="{html.escape(k)}" Value="{html.escape(v)}"/>' for k, v in source.items())
            dat = "".join(f'<tt:SimpleItem Name="{html.escape(k)}" Value="{html.escape(v)}"/>' for k, v in data.items())
            parts.append(
                f'<wsnt:NotificationMessage><wsnt:Topic Dialect="{TOPIC_DIALECT}">{html.escape(topic)}</wsnt:Topic>'
                f'<wsnt:Message><tt:Message UtcTime="{_iso(utc)}" PropertyOperation="{operation}">'
                f"<tt:Source>{src}</tt:Source><tt:Data>{dat}</tt:Data></tt:Message></wsnt:Message>"
                "</wsnt:NotificationMessage>")
        term = now + dt.timedelta(seconds=max(0.0, s.expires - time.monotonic()))
        return self._envelope(f"<tev:PullMessagesResponse><tev:CurrentTime>{_iso(now)}</tev:CurrentTime>"
                              f"<tev:TerminationTime>{_iso(term)}</tev:TerminationTime>{''.join(parts)}"
                              "</tev:PullMessagesResponse>")

    def _op_Renew(self, path, el):
        s = self._sub_for(path)
        if s is None:
            return self._unknown_sub()
        span = _duration_s(el.findtext("wsnt:TerminationTime", None, NS), 60.0)
        s.expires = time.monotonic() + span
        now = self._now()
        return self._envelope(f"<wsnt:RenewResponse><wsnt:TerminationTime>{_iso(now + dt.timedelta(seconds=span))}"
                              f"</wsnt:TerminationTime><wsnt:CurrentTime>{_iso(now)}</wsnt:CurrentTime>"
                              "</wsnt:RenewResponse>")

    def _op_Unsubscribe(self, path, el):
        s = self._sub_for(path)
        if s is None:
            return self._unknown_sub()
        with self._cond:
            self._subs.pop(s.id, None)
        return self._envelope("<wsnt:UnsubscribeResponse/>")

    def _op_SetSynchronizationPoint(self, path, el):
        return self._envelope("<tev:SetSynchronizationPointResponse/>")
