"""A WS-Discovery Target Service (the ONVIF camera side of discovery), the test peer for
`campus-sense discover`'s ONVIF probe. Written from the specifications, not from the client:

* WS-Discovery, April 2005 (namespace http://schemas.xmlsoap.org/ws/2005/04/discovery, the version
  ONVIF Core, section "Device discovery", mandates), SOAP 1.2 envelope, WS-Addressing 2004/08.
* SOAP-over-UDP: one message per datagram; a receiver MUST ignore a message whose MessageID it has
  already seen (senders repeat UDP messages), and replies to the sender's address and port when
  ReplyTo is the anonymous address.
* Probe matching (WS-Discovery 5.1/5.2): a Probe without Types/Scopes matches every target;
  otherwise every QName in the Probe's Types must equal one of the target's Types (namespace URI +
  local name, prefixes resolved in each message's own context), and every Scope must be matched by
  one of the target's Scopes. MatchBy default (RFC 3986 rule): scheme and authority compared
  case-insensitively, the probe's path segments a prefix of the target's; ``.../strcmp0`` exact
  string comparison. An unknown MatchBy matches nothing.
* A match is answered with ProbeMatches: RelatesTo = the Probe's MessageID, To = anonymous,
  AppSequence (InstanceId, MessageNumber incrementing per message), one ProbeMatch with the target's
  EndpointReference, Types, Scopes, XAddrs and MetadataVersion. No match: no answer.
* A multicast Probe is answered after a random delay up to APP_MAX_DELAY (500 ms); a directed
  (unicast) Probe at once.

Counters: ``probes`` (datagrams that were Probes), ``answered``, ``duplicates``, ``garbage``.
"""
from __future__ import annotations

import io
import random
import socket
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
ANON = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
PROBE = f"{WSD}/Probe"
MATCHES = f"{WSD}/ProbeMatches"
RFC3986 = f"{WSD}/rfc3986"
STRCMP0 = f"{WSD}/strcmp0"
APP_MAX_DELAY = 0.5
DN = "http://www.onvif.org/ver10/network/wsdl"
TDS = "http://www.onvif.org/ver10/device/wsdl"


def _parse(data: bytes) -> tuple[ET.Element, dict[ET.Element, dict[str, str]]]:
    """Element tree plus, per element, the in-scope prefix -> namespace map (for QName values)."""
    scopes: dict[ET.Element, dict[str, str]] = {}
    stack: list[dict[str, str]] = [{}]
    pending: dict[str, str] = {}
    root = None
    for ev, obj in ET.iterparse(io.BytesIO(data), events=("start-ns", "start", "end")):
        if ev == "start-ns":
            pending[obj[0]] = obj[1]
        elif ev == "start":
            ns = dict(stack[-1])
            ns.update(pending)
            pending = {}
            stack.append(ns)
            scopes[obj] = ns
            if root is None:
                root = obj
        else:
            stack.pop()
    return root, scopes


def _qnames(text: str, ns: dict[str, str]) -> set[tuple[str, str]]:
    out = set()
    for q in text.split():
        prefix, _, local = q.rpartition(":")
        out.add((ns.get(prefix, ""), local))
    return out


def scope_matches(probe_scope: str, target_scope: str, match_by: str) -> bool:
    if match_by == STRCMP0:
        return probe_scope == target_scope
    if match_by != RFC3986:
        return False
    p, t = urllib.parse.urlsplit(probe_scope), urllib.parse.urlsplit(target_scope)
    if p.scheme.lower() != t.scheme.lower() or p.netloc.lower() != t.netloc.lower():
        return False
    ps = [s for s in p.path.split("/") if s]
    ts = [s for s in t.path.split("/") if s]
    return ts[:len(ps)] == ps


class WsdResponder:
    def __init__(self, host: str, xaddrs: list[str], scopes: list[str], port: int = 3702,
                 types: tuple[tuple[str, str], ...] = ((DN, "NetworkVideoTransmitter"), (TDS, "Device"))):
        self.host, self.port, self.xaddrs, self.scopes, self.types = host, port, xaddrs, scopes, types
        self.address = f"urn:uuid:{uuid.uuid4()}"
        self.instance = int(time.time())
        self.number = 0
        self.seen: set[str] = set()
        self.probes = self.answered = self.duplicates = self.garbage = 0
        self.sock: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> "WsdResponder":
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, self.port))
        self.sock.settimeout(0.2)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.sock is not None:
            self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            try:
                self._handle(data, src)
            except Exception:  # noqa: BLE001 - a test peer answers nothing to garbage
                self.garbage += 1

    def _handle(self, data: bytes, src) -> None:
        root, nsmap = _parse(data)
        if root is None or root.tag != f"{{{SOAP}}}Envelope":
            self.garbage += 1
            return
        header = root.find(f"{{{SOAP}}}Header")
        body = root.find(f"{{{SOAP}}}Body")
        action = (header.findtext(f"{{{WSA}}}Action") or "").strip() if header is not None else ""
        mid = (header.findtext(f"{{{WSA}}}MessageID") or "").strip() if header is not None else ""
        if action != PROBE or not mid or body is None:
            self.garbage += 1
            return
        self.probes += 1
        if mid in self.seen:
            self.duplicates += 1
            return
        self.seen.add(mid)
        probe = body.find(f"{{{WSD}}}Probe")
        if probe is None:
            self.garbage += 1
            return
        types_el = probe.find(f"{{{WSD}}}Types")
        want = _qnames(types_el.text or "", nsmap[types_el]) if types_el is not None else set()
        if not want <= set(self.types):
            return
        scopes_el = probe.find(f"{{{WSD}}}Scopes")
        if scopes_el is not None and (scopes_el.text or "").split():
            by = scopes_el.get("MatchBy", RFC3986)
            for ps in scopes_el.text.split():
                if not any(scope_matches(ps, ts, by) for ts in self.scopes):
                    return
        multicast = False   # this responder only listens on a unicast address
        if multicast:
            time.sleep(random.uniform(0, APP_MAX_DELAY))
        self.number += 1
        prefixes = {DN: "dn", TDS: "tds"}
        types = " ".join(f"{prefixes.get(ns, 'x')}:{local}" for ns, local in self.types)
        reply = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<env:Envelope xmlns:env="{SOAP}" xmlns:wsa="{WSA}" xmlns:wsd="{WSD}" xmlns:dn="{DN}" '
            f'xmlns:tds="{TDS}">'
            "<env:Header>"
            f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
            f"<wsa:RelatesTo>{mid}</wsa:RelatesTo>"
            f"<wsa:To>{ANON}</wsa:To>"
            f"<wsa:Action>{MATCHES}</wsa:Action>"
            f'<wsd:AppSequence InstanceId="{self.instance}" MessageNumber="{self.number}"/>'
            "</env:Header><env:Body><wsd:ProbeMatches><wsd:ProbeMatch>"
            f"<wsa:EndpointReference><wsa:Address>{self.address}</wsa:Address></wsa:EndpointReference>"
            f"<wsd:Types>{types}</wsd:Types>"
            f"<wsd:Scopes>{' '.join(self.scopes)}</wsd:Scopes>"
            f"<wsd:XAddrs>{' '.join(self.xaddrs)}</wsd:XAddrs>"
            "<wsd:MetadataVersion>1</wsd:MetadataVersion>"
            "</wsd:ProbeMatch></wsd:ProbeMatches></env:Body></env:Envelope>")
        self.sock.sendto(reply.encode(), src)
        self.answered += 1
