"""Parse ``iw dev IFACE scan`` output into survey records (the managed-mode survey path).

``iw`` prints one ``BSS <bssid>(on <iface>)`` block per network. SSIDs are printed
with non-printable bytes escaped as ``\\xNN`` (so UTF-8 and GBK names arrive as
escapes); they are turned back into bytes and decoded like beacon SSIDs (UTF-8,
GBK fallback). Only what the survey needs is read: BSSID, SSID, frequency /
channel, signal, capability Privacy, the RSN and WPA elements.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any

from drivers.netwatch.detectors import decode_ssid, freq_to_channel, norm_mac, security_from_akms

_BSS = re.compile(r"^BSS ([0-9a-fA-F:]{17})(?:\(on [^)]*\))?")

# iw's names for AKM suites (scan.c print_auth) -> the names used by detectors
_IW_AKM = {
    "IEEE 802.1X": "802.1X", "PSK": "PSK", "FT/IEEE 802.1X": "FT-802.1X", "FT/PSK": "FT-PSK",
    "IEEE 802.1X/SHA-256": "802.1X-SHA256", "PSK/SHA-256": "PSK-SHA256", "TDLS/TPK": "TDLS",
    "SAE": "SAE", "FT/SAE": "FT-SAE", "IEEE 802.1X/SUITE-B": "802.1X-SUITE-B",
    "IEEE 802.1X/SUITE-B-192": "802.1X-SUITE-B-192", "FT/IEEE 802.1X/SHA-384": "FT-802.1X-SHA384",
    "FILS/SHA-256": "FILS-SHA256", "FILS/SHA-384": "FILS-SHA384", "FT/FILS/SHA-256": "FT-FILS-SHA256",
    "FT/FILS/SHA-384": "FT-FILS-SHA384", "OWE": "OWE", "SAE-EXT-KEY": "SAE-EXT-KEY",
    "FT/SAE-EXT-KEY": "FT-SAE-EXT-KEY", "OSEN": "OSEN", "DPP": "DPP",
}


def unescape_iw(s: str) -> bytes:
    """Undo iw's print_ssid_escaped: ``\\xNN`` -> byte, other characters as-is."""
    out = bytearray()
    i = 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 2] == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", s[i + 2:i + 4]):
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            out += s[i].encode("utf-8", "surrogateescape")
            i += 1
    return bytes(out)


def parse_akms(text: str) -> list[str]:
    text = text.strip()
    out = []
    # longest names first so "IEEE 802.1X/SHA-256" wins over "IEEE 802.1X"
    names = sorted(_IW_AKM, key=len, reverse=True)
    while text:
        for n in names:
            if text.startswith(n) and (len(text) == len(n) or text[len(n)] == " "):
                out.append(_IW_AKM[n])
                text = text[len(n):].lstrip()
                break
        else:
            tok, _, text = text.partition(" ")
            out.append(tok)  # unknown suite, e.g. "00-0f-ac:20"
            text = text.lstrip()
    return out


def parse_iw_scan(text: str) -> list[dict[str, Any]]:
    """Return one dict per BSS: bssid, ssid, ssid_encoding, freq, channel, signal_dbm,
    security, akm. Unparseable lines are ignored; a BSS block without a BSSID is skipped."""
    results: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    section = None

    def finish():
        if cur is None:
            return
        ssid, enc = decode_ssid(cur.pop("_ssid_raw", None))
        channel = cur.get("channel") or freq_to_channel(cur.get("freq"))
        cur.update(ssid=ssid, ssid_encoding=enc, channel=channel,
                   security=security_from_akms(cur["akm"], cur.pop("_rsn"), cur.pop("_wpa"), cur.pop("_privacy")))
        results.append(cur)

    for line in text.splitlines():
        m = _BSS.match(line)
        if m:
            finish()
            cur = {"bssid": norm_mac(m.group(1)), "freq": None, "channel": None, "signal_dbm": None,
                   "akm": [], "_rsn": False, "_wpa": False, "_privacy": False}
            section = None
            continue
        if cur is None:
            continue
        s = line.strip()
        if not line.startswith("\t\t") and not line.startswith("        "):
            section = None  # a top-level attribute line ends RSN/WPA sub-blocks
        if s.startswith("freq:"):
            try:
                cur["freq"] = float(s.split(":", 1)[1].split()[0])
            except (ValueError, IndexError):
                pass
        elif s.startswith("signal:"):
            try:
                cur["signal_dbm"] = int(round(float(s.split(":", 1)[1].split()[0])))
            except (ValueError, IndexError):
                pass
        elif s.startswith("capability:"):
            cur["_privacy"] = "Privacy" in s.split(":", 1)[1].split()
        elif s.startswith("SSID:"):
            raw = line.split("SSID:", 1)[1]
            cur["_ssid_raw"] = unescape_iw(raw[1:] if raw.startswith(" ") else raw)
        elif s.startswith("DS Parameter set:"):
            mm = re.search(r"channel (\d+)", s)
            if mm:
                cur["channel"] = int(mm.group(1))
        elif s.startswith("* primary channel:") and cur.get("channel") is None:
            try:
                cur["channel"] = int(s.split(":", 1)[1])
            except ValueError:
                pass
        elif s.startswith("RSN:"):
            cur["_rsn"], section = True, "rsn"
            rest = s[4:].strip()
            if "Authentication suites:" in rest:
                cur["akm"] = parse_akms(rest.split("Authentication suites:", 1)[1])
        elif s.startswith("WPA:"):
            cur["_wpa"], section = True, "wpa"
        elif "Authentication suites:" in s and section == "rsn":
            cur["akm"] = parse_akms(s.split("Authentication suites:", 1)[1])
    finish()
    return results


def parse_iw_survey(text: str) -> dict[float, int]:
    """``iw dev IFACE survey dump`` -> ``{frequency MHz: noise dBm}`` for the channels whose
    block reports a noise figure (most drivers: every channel visited by the last scan;
    some only the one ``[in use]``). Other lines are ignored."""
    out: dict[float, int] = {}
    freq: float | None = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Survey data from"):
            freq = None
        elif s.startswith("frequency:"):
            try:
                freq = float(s.split(":", 1)[1].split()[0])
            except (ValueError, IndexError):
                freq = None
        elif s.startswith("noise:") and freq is not None:
            try:
                out[freq] = int(round(float(s.split(":", 1)[1].split()[0])))
            except (ValueError, IndexError):
                pass
    return out


async def _run_iw(iw_path: str, args: list[str], timeout_s: float) -> str:
    proc = await asyncio.create_subprocess_exec(iw_path, *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{iw_path} {' '.join(args)}: no answer within {timeout_s:g}s") from None
    if proc.returncode != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"{iw_path} {' '.join(args)} failed (exit {proc.returncode}): "
                           f"{msg[-1] if msg else 'no message'}")
    return out.decode("utf-8", "surrogateescape")


async def iw_noise(interface: str, iw_path: str = "iw", timeout_s: float = 10.0) -> dict[float, int]:
    """Noise floor per frequency from ``iw dev IFACE survey dump`` (read-only). Raises
    RuntimeError like ``iw_scan``; callers treat that as "noise not known"."""
    return parse_iw_survey(await _run_iw(iw_path, ["dev", interface, "survey", "dump"], timeout_s))


async def iw_scan(interface: str, iw_path: str = "iw", timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Run ``iw dev IFACE scan`` and parse it. Raises RuntimeError with iw's message on failure."""
    return parse_iw_scan(await _run_iw(iw_path, ["dev", interface, "scan"], timeout_s))
