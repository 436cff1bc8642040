"""Wi-Fi controller / fat-AP profiles against recordings of real devices.

snmpsim serves verbatim excerpts of public recordings (tests/fixtures/snmprec_vendors/, see
NOTICE): a Cisco AireOS controller walk (centreon-plugins), LibreNMS' UniFi AP, Ruckus
ZoneDirector ZD1200 and Ruckus Unleashed T300 recordings. net-snmp's snmpbulkwalk is the
oracle: every column a profile parses must agree with what it prints, row by row. Spot values
are read off the recordings by hand.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from drivers.snmp.tables import to_records
from tests.peers_snmp import Snmpsim, bulkwalk, collect_from_sim

FIX = Path(__file__).parent / "fixtures" / "snmprec_vendors"
WLC = FIX / "cisco_wlc_aireos.snmpwalk"      # snmpwalk text format (snmpsim reads *.snmpwalk)
UNIFI = FIX / "unifi_uap_radio_vap.snmprec"
ZD = FIX / "ruckus_zd1200.snmprec"
UNLEASHED = FIX / "ruckus_unleashed_t300.snmprec"
AIRESPACE = "1.3.6.1.4.1.14179"

pytestmark = pytest.mark.skipif(not shutil.which("snmpsimd") or not shutil.which("snmpbulkwalk"),
                                reason="needs snmpsim and net-snmp tools")


def _serve(recs: dict[str, Path]) -> Snmpsim:
    s = Snmpsim(recs)
    for community, path in recs.items():     # the helper names every copy .snmprec
        if path.suffix == ".snmpwalk":
            (s.data / f"{community}.snmprec").rename(s.data / f"{community}.snmpwalk")
    return s.start()


@pytest.fixture(scope="module")
def sim():
    s = _serve({"wlc": WLC, "unifi": UNIFI, "zd": ZD, "unl": UNLEASHED})
    yield s
    s.stop()


def oracle(sim, community: str, oid: str) -> dict[str, object]:
    """{index suffix: value} as snmpbulkwalk prints it: int, bytes (octet strings, via -Ox), or
    a dotted-quad str (IpAddress)."""
    out = {}
    for k, (t, text) in bulkwalk(sim.port, community, oid, "-Ox").items():
        if not k.startswith(oid + "."):
            continue
        if t in ("INTEGER", "Gauge32", "Counter32", "Unsigned32"):
            v: object = int(text)
        elif t == "Hex-STRING":
            v = bytes.fromhex(text.replace(" ", "").replace("\n", ""))
        elif t == "STRING":
            v = text.strip('"').encode()
        elif t == "" and text == '""':
            v = b""
        elif t == "IpAddress":
            v = text
        else:
            raise AssertionError(f"unexpected type {t} at {k}")
        out[k[len(oid) + 1:]] = v
    assert out, f"oracle: nothing under {oid}"
    return out


def mac(suffix: str) -> str:
    """Six decimal sub-identifiers -> aa:bb:cc:dd:ee:ff."""
    return ":".join("%02x" % int(x) for x in suffix.split("."))


# ------------------------------------------------------------------------- Cisco AireOS

async def test_cisco_wlc_ap_table_agrees_with_net_snmp(sim):
    # the walk has no system group: pass a 5500-series WLC sysObjectID
    r = await collect_from_sim(sim.port, "wlc", soid="1.3.6.1.4.1.9.1.1069", sections=["wifi"])
    assert r["_profile"] == "cisco_wlc"
    assert not [k for k in r.get("_errors", {}) if "wifi" in k or "values" in k], r.get("_errors")
    aps = {a["ap_mac"]: a for a in r["wifi"]["aps"]}
    assert len(aps) == 10
    for field, col in (("name", 3), ("location", 4), ("firmware", 8), ("model", 16), ("serial", 17)):
        want = {mac(k): v.decode() for k, v in oracle(sim, "wlc", f"{AIRESPACE}.2.2.1.1.{col}").items()}
        assert {m: a[field] for m, a in aps.items()} == want, field
    assert {m: a["ip"] for m, a in aps.items()} == \
        {mac(k): v for k, v in oracle(sim, "wlc", f"{AIRESPACE}.2.2.1.1.19").items()}
    assert {m: a["eth_mac"] for m, a in aps.items()} == \
        {mac(k): ":".join("%02x" % b for b in v) for k, v in oracle(sim, "wlc", f"{AIRESPACE}.2.2.1.1.33").items()}
    status = oracle(sim, "wlc", f"{AIRESPACE}.2.2.1.1.6")
    assert {m: a["up"] for m, a in aps.items()} == {mac(k): v == 1 for k, v in status.items()}
    admin = oracle(sim, "wlc", f"{AIRESPACE}.2.2.1.1.37")
    assert {m: a["admin_status"] for m, a in aps.items()} == \
        {mac(k): {1: "enabled", 2: "disabled"}[v] for k, v in admin.items()}
    # read off the recording
    a = aps["00:3a:99:db:eb:b0"]
    assert (a["name"], a["model"], a["firmware"], a["serial"], a["ip"], a["up"], a["eth_mac"]) == \
        ("Anonymized 015", "Anonymized 139", "Anonymized 010", "Anonymized 167", "192.168.42.140", True,
         "00:07:7d:11:70:cc")
    assert aps["78:72:5d:78:f9:b0"]["location"] == "Speckworld in Säule"     # Hex-STRING, UTF-8
    assert aps["00:3a:99:f7:57:e0"]["ip"] == "192.168.42.6"                 # walk prints 192.168.42.006
    recs = [x for x in to_records("wlc1", r) if getattr(x, "measurement", "") == "wifi_ap"]
    assert len(recs) == 10 and all(x.fields == {"up": True} for x in recs)
    assert {x.tags["ap"] for x in recs} == {a["name"] for a in aps.values()}


async def test_cisco_wlc_radios_wlans_clients_agree_with_net_snmp(sim):
    r = await collect_from_sim(sim.port, "wlc", soid="1.3.6.1.4.1.9.1.1069", sections=["wifi"])
    w = r["wifi"]
    radios = {f"{'.'.join(str(int(x, 16)) for x in x_['ap_mac'].split(':'))}.{x_['radio']}": x_ for x_ in w["radios"]}
    assert len(radios) == 12
    for field, oid, conv in (("util_pct", "2.2.13.1.3", int), ("clients", "2.2.13.1.4", int),
                             ("status", "2.2.2.1.12", {1: "down", 2: "up"}.get),
                             ("admin_status", "2.2.2.1.34", {1: "enabled", 2: "disabled"}.get)):
        want = {k: conv(v) for k, v in oracle(sim, "wlc", f"{AIRESPACE}.{oid}").items()}
        assert {k: x[field] for k, x in radios.items()} == want, field
    names = {a["ap_mac"]: a["name"] for a in w["aps"]}
    assert all(x["ap_name"] == names[x["ap_mac"]] for x in radios.values())
    # AP 78:72:5d:69:e0:80 has two radios: slot 0 at 29 % utilisation with 2 clients, slot 1 idle with 1
    assert (radios["120.114.93.105.224.128.0"]["util_pct"], radios["120.114.93.105.224.128.0"]["clients"]) == (29, 2)
    assert (radios["120.114.93.105.224.128.1"]["util_pct"], radios["120.114.93.105.224.128.1"]["clients"]) == (0, 1)
    assert "channel" not in radios["120.114.93.105.224.128.0"]        # bsnAPIfPhyChannelNumber not in the walk
    # station table: only SSID and status were recorded; per-AP counts come from the radios
    ssid = oracle(sim, "wlc", f"{AIRESPACE}.2.1.4.1.7")
    st = oracle(sim, "wlc", f"{AIRESPACE}.2.1.4.1.9")
    assert {c["mac"]: (c["ssid"], c["status"]) for c in w["clients"]} == \
        {mac(k): (v.decode(), {3: "associated"}[st[k]]) for k, v in ssid.items()}
    assert len(w["clients"]) == 17
    per_ap_want: dict[str, int] = {}
    for k, v in oracle(sim, "wlc", f"{AIRESPACE}.2.2.13.1.4").items():
        m = mac(k.rsplit(".", 1)[0])
        per_ap_want[m] = per_ap_want.get(m, 0) + v
    assert {c["ap_mac"]: c["clients"] for c in w["clients_per_ap"]} == per_ap_want
    assert {c["ap_name"] for c in w["clients_per_ap"]} == set(names.values())
    assert sum(per_ap_want.values()) == 20
    ess = oracle(sim, "wlc", f"{AIRESPACE}.2.1.1.1.2")
    assert {v["wlan"]: v["ssid"] for v in w["vaps"]} == {int(k): v.decode() for k, v in ess.items()}
    samples = [x for x in to_records("wlc1", r) if getattr(x, "measurement", "") == "wifi_radio"]
    assert len(samples) == 12 and {x.fields["util_pct"] for x in samples} == {4, 1, 3, 5, 2, 29, 0, 7}


# ------------------------------------------------------------------------- Ubiquiti UniFi

UNIFI_RADIO = "1.3.6.1.4.1.41112.1.6.1.1.1"
UNIFI_VAP = "1.3.6.1.4.1.41112.1.6.1.2.1"


async def test_unifi_radio_and_vap_tables_agree_with_net_snmp(sim):
    r = await collect_from_sim(sim.port, "unifi")
    assert r["_profile"] == "ubiquiti" and r["_vendor"] == "Ubiquiti"
    assert not [k for k in r.get("_errors", {}) if "wifi" in k or "values" in k], r.get("_errors")
    w = r["wifi"]
    vaps = {v["vap"]: v for v in w["vaps"]}
    for field, col, conv in (("ssid", 6, bytes.decode), ("clients", 8, int), ("channel", 4, int),
                             ("tx_power_dbm", 21, int), ("ccq_pct", 3, lambda v: round(v * 0.1, 6))):
        want = {int(k): conv(v) for k, v in oracle(sim, "unifi", f"{UNIFI_VAP}.{col}").items()}
        assert {k: v[field] for k, v in vaps.items()} == want, field
    bands = oracle(sim, "unifi", f"{UNIFI_VAP}.9")
    assert {k: v["band"] for k, v in vaps.items()} == {int(k): {b"ng": "2.4GHz"}[v] for k, v in bands.items()}
    (radio,) = w["radios"]
    for field, col in (("util_pct", 6), ("util_rx_pct", 7), ("util_tx_pct", 8), ("interference_pct", 9)):
        assert {radio["radio"]: radio[field]} == {int(k): v for k, v in oracle(sim, "unifi", f"{UNIFI_RADIO}.{col}").items()}
    assert oracle(sim, "unifi", f"{UNIFI_RADIO}.3") == {"1": b"ng"}
    # the radio takes its clients (sum over its SSIDs), channel and power from the VAP rows
    assert radio["clients"] == sum(oracle(sim, "unifi", f"{UNIFI_VAP}.8").values()) == 4
    assert (radio["band"], radio["channel"], radio["tx_power_dbm"], radio["util_pct"]) == ("2.4GHz", 11, 5, 9)
    assert vaps[2]["ssid"] == "Main SSID" and vaps[3]["clients"] == 3 and vaps[2]["ccq_pct"] == 99.1
    assert w["clients_per_ap"] == [{"ap_mac": None, "ap_name": None, "band": "2.4GHz", "clients": 4}]
    s = [x for x in to_records("uap1", r) if getattr(x, "measurement", "") == "wifi_radio"]
    assert len(s) == 1 and s[0].tags["band"] == "2.4GHz"
    assert s[0].fields == {"channel": 11, "util_pct": 9, "interference_pct": 0, "tx_power_dbm": 5, "clients": 4}


def test_unifi_snmp_inventory_json_wifi_section(sim, capsys):
    from campus_sense import cli
    assert cli.main(["snmp-inventory", "--target", f"127.0.0.1:{sim.port}", "--community", "unifi", "--json",
                     "--timeout", "1", "--retries", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["profile"] == "ubiquiti" and doc["device"]["sysObjectID"] == "1.3.6.1.4.1.10002.1"
    (radio,) = doc["wifi"]["radios"]
    assert (radio["band"], radio["channel"], radio["clients"]) == ("2.4GHz", 11, 4)
    assert sorted(v["ssid"] for v in doc["wifi"]["vaps"]) == ["", "Main SSID", "Maintenance", "guest"]


async def test_garbage_value_is_skipped_and_counted(tmp_path):
    """A wrong-type row (OCTET STRING where unifiVapNumStations is an integer) in a copy of the
    UniFi excerpt: that value is dropped and counted, every other row and table survives."""
    bad = tmp_path / "unifi_bad.snmprec"
    text = UNIFI.read_text()
    row = f"{UNIFI_VAP}.8.3|2|3\n"
    assert row in text
    bad.write_text(text.replace(row, f"{UNIFI_VAP}.8.3|4|many\n"))
    s = _serve({"bad": bad})
    try:
        assert oracle(s, "bad", f"{UNIFI_VAP}.8")["3"] == b"many"
        r = await collect_from_sim(s.port, "bad")
    finally:
        s.stop()
    assert r["_errors"]["vaps.values"] == "1 value(s) could not be decoded and were skipped"
    vaps = {v["vap"]: v for v in r["wifi"]["vaps"]}
    assert set(vaps) == {1, 2, 3, 4} and "clients" not in vaps[3] and vaps[3]["ssid"] == "guest"
    assert {k: v.get("clients") for k, v in vaps.items()} == {1: 0, 2: 1, 3: None, 4: 0}
    assert r["wifi"]["radios"][0]["clients"] == 1 and r["wifi"]["radios"][0]["util_pct"] == 9


# ------------------------------------------------------------------------- Ruckus

async def test_ruckus_zonedirector_recording(sim):
    r = await collect_from_sim(sim.port, "zd")
    assert r["_profile"] == "ruckus_zonedirector"
    zd_sys = "1.3.6.1.4.1.25053.1.2.1.1.1"
    o = {k: v for k, v in oracle(sim, "zd", zd_sys).items()}
    assert r["wifi"]["summary"] == {"aps": o["15.1.0"], "clients": o["15.2.0"], "ap_licences": o["1.12.0"]} \
        == {"aps": 36, "clients": 11, "ap_licences": 36}
    ch = r["entity"]["chassis"]
    assert (ch["model"], ch["serial"], ch["firmware"]) == \
        (o["1.9.0"].decode(), o["1.15.0"].decode(), o["1.18.0"].decode()) == ("ZD1200", "971738000872", "9.13.3.0 build 145")
    assert (r["health"]["cpu_pct"], r["health"]["mem_pct"]) == (o["5.58.0"], o["5.59.0"]) == (0, 4)
    wlan = "1.3.6.1.4.1.25053.1.2.2.1.1.1.1.1"
    n = oracle(sim, "zd", f"{wlan}.12")
    ssid = oracle(sim, "zd", f"{wlan}.1")
    assert {v["wlan"]: (v["ssid"], v["clients"]) for v in r["wifi"]["vaps"]} == \
        {int(k): (ssid[k].decode(), n[k]) for k in n}
    assert sum(v["clients"] for v in r["wifi"]["vaps"]) == 5          # per-WLAN counts: 2 + 3
    rec = [x for x in to_records("zd", r) if getattr(x, "measurement", "") == "wifi_controller"]
    assert rec[0].fields == {"aps": 36, "clients": 11, "ap_licences": 36}


async def test_ruckus_unleashed_recording(sim):
    r = await collect_from_sim(sim.port, "unl")
    assert r["_profile"] == "ruckus_unleashed"
    base = "1.3.6.1.4.1.25053.1.15.1.1.1"
    o = oracle(sim, "unl", base)
    assert r["wifi"]["summary"] == {"aps": o["15.1.0"], "clients": o["15.2.0"]} == {"aps": 1, "clients": 0}
    ch = r["entity"]["chassis"]
    assert (ch["model"], ch["serial"], ch["firmware"]) == ("T300", "231603507471", "200.15.6.112 build 54") == \
        (o["1.9.0"].decode(), o["1.15.0"].decode(), o["1.18.0"].decode())
    assert (r["health"]["cpu_pct"], r["health"]["mem_pct"]) == (o["15.13.0"], o["15.14.0"]) == (0, 59)
    assert "aps" not in r["wifi"] and "radios" not in r["wifi"]      # no per-AP table in the recording
