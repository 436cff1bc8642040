"""`campus-sense rules` — check rule files and test them against recorded samples.

    campus-sense rules check RULES.yaml [...]
    campus-sense rules test RULES.yaml [...] --samples SAMPLES.jsonl|csv [--devices D.yaml] [--until +1h]
                                             [--strict] [--json]

``test`` replays the recorded samples/events through a fresh engine (in-memory
store) using the sample timestamps as the clock, and prints every alert
transition in time order (like ``promtool test rules``). Deterministic: the
same input always prints the same output.

Exit status: 0 ok; 1 some sample lines were bad (each reported as FILE:LINE:
message on stderr; the others were evaluated unless --strict); 2 the rule or
device files are invalid or the samples cannot be read.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from campus_sense import wire
from campus_sense.yamlconf import ConfigError, load_yaml

from collector.store.alerts import AlertStore

from .config import load_rules
from .engine import RuleEngine
from .model import AlertChange
from .timeinterval import parse_duration

STATE_KINDS = ("birth", "death", "heartbeat")
_META = ("site", "building", "room", "type", "agent")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_action", metavar="ACTION")
    c = sub.add_parser("check", help="validate rule files", description="Validate rule files.")
    c.add_argument("rules", nargs="+", help="rule files (YAML) or directories")
    t = sub.add_parser("test", help="evaluate rules against recorded samples",
                       description="Evaluate rules against recorded samples and print what fires and clears when.")
    t.add_argument("rules", nargs="+", help="rule files (YAML) or directories")
    t.add_argument("--samples", required=True, metavar="FILE",
                   help="recorded data: .jsonl (wire samples/events, agent birth/death lines) or .csv "
                        "(time,device,measurement,field,value[,tag columns])")
    t.add_argument("--devices", metavar="FILE",
                   help="device metadata (YAML/JSON): {device_id: {site, building, room, type, tags, agent, "
                        "upstream}}; without it, tags named site/building/room/type/agent on the samples are used")
    t.add_argument("--until", metavar="WHEN",
                   help="keep the clock running until this time (ISO 8601, epoch, or +DURATION after the last "
                        "sample) so staleness and durations after the data can fire")
    t.add_argument("--step", default="10s", metavar="DURATION",
                   help="tick interval of the simulated clock between samples (default 10s)")
    t.add_argument("--format", default=None, choices=("jsonl", "csv"), help="force the samples format")
    t.add_argument("--strict", action="store_true", help="stop at the first bad sample line")
    t.add_argument("--json", action="store_true", help="print one JSON object per transition")
    parser.set_defaults(rules_action=None)


def run(args: argparse.Namespace) -> int:
    if args.rules_action == "check":
        return _check(args)
    if args.rules_action == "test":
        return _test(args)
    print("campus-sense rules: choose an action: check, test (see --help)", file=sys.stderr)
    return 2


def _check(args) -> int:
    try:
        rs = load_rules(*args.rules)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    print(f"OK: {len(rs)} rules, {len(rs.calendars)} calendars, {len(rs.inhibits)} inhibit rules")
    return 0


# ---------------------------------------------------------------- input parsing
class BadLine(Exception):
    pass


def parse_time(v: Any) -> int:
    """ISO 8601 (naive = UTC), or epoch seconds / milliseconds -> epoch ms."""
    if isinstance(v, bool):
        raise ValueError(f"bad time {v!r}")
    if isinstance(v, (int, float)):
        return int(v) if abs(v) >= 1e11 else int(round(v * 1000))
    s = str(v).strip()
    try:
        return parse_time(float(s)) if s.replace(".", "", 1).lstrip("-").isdigit() else _iso_ms(s)
    except ValueError:
        raise ValueError(f"bad time {v!r} (use ISO 8601 like 2026-11-23T05:00:00Z, or epoch s/ms)") from None


def _iso_ms(s: str) -> int:
    d = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return int(round(d.timestamp() * 1000))


def _value(s: str) -> Any:
    s = s.strip()
    if s == "":
        raise ValueError("empty value")
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        f = float(s)
    except ValueError:
        return s
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError(f"value {s!r} is not a finite number")
    return int(f) if f.is_integer() and "." not in s and "e" not in low else f


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Yield (line number, kind, payload): kind sample/event -> (item, agent), state -> (agent, online, t)."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            try:
                obj = json.loads(s)
            except ValueError as e:
                yield n, "bad", f"not JSON ({e})"
                continue
            if not isinstance(obj, dict):
                yield n, "bad", "expected a JSON object (a sample, an event, or an agent state line)"
                continue
            yield from _classify(n, obj)


def _classify(n: int, obj: dict) -> Iterator[tuple[int, str, Any]]:
    kind = obj.get("kind")
    if kind in STATE_KINDS:
        agent = obj.get("agent")
        t = obj.get("t", obj.get("sent_ms"))
        if not isinstance(agent, str) or not agent or type(t) is not int:
            yield n, "bad", f"{kind} line needs 'agent' (string) and 't' (epoch ms)"
        else:
            yield n, "state", (agent, kind != "death", t)
        return
    if kind in wire.DURABLE_KINDS:
        key = {"metrics": "samples", "events": "events", "facts": "facts"}[kind]
        items = obj.get(key)
        if not isinstance(items, list):
            yield n, "bad", f"message of kind {kind!r} needs a list {key!r}"
            return
        if kind == "facts":
            return
        for i, it in enumerate(items):
            for _, k, p in _classify(n, it if isinstance(it, dict) else {"_bad": it}):
                if k == "bad":
                    yield n, "bad", f"{key}[{i}]: {p}"
                else:
                    yield n, k, (p[0], p[1] or obj.get("agent"))
        return
    if "m" in obj:
        err = wire.check_item("metrics", obj)
        kind2 = "sample"
    elif "type" in obj:
        err = wire.check_item("events", obj)
        kind2 = "event"
    else:
        yield n, "bad", "not a sample ('m','d','t','f'), an event ('d','type','t') or an agent state line"
        return
    if err:
        yield n, "bad", err
        return
    yield n, kind2, (obj, obj.get("agent") if isinstance(obj.get("agent"), str) else None)


def read_csv(path: Path) -> Iterator[tuple[int, str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        r = csv.reader(fh)
        header = None
        for row in r:
            if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
                continue
            header = [h.strip() for h in row]
            break
        if header is None:
            return
        need = ["time", "device", "measurement", "field", "value"]
        missing = [c for c in need if c not in header]
        if missing:
            yield r.line_num, "bad", (f"header must start with time,device,measurement,field,value "
                                      f"(missing: {', '.join(missing)})")
            yield r.line_num, "fatal", None
            return
        idx = {c: header.index(c) for c in need}
        tag_cols = [(i, h) for i, h in enumerate(header) if h not in need and h]
        for row in r:
            n = r.line_num
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if len(row) != len(header):
                yield n, "bad", f"expected {len(header)} columns ({','.join(header)}), got {len(row)}"
                continue
            try:
                t = parse_time(row[idx["time"]])
            except ValueError as e:
                yield n, "bad", f"time: {e}"
                continue
            d, m, f = (row[idx[c]].strip() for c in ("device", "measurement", "field"))
            if not d or not m or not f:
                yield n, "bad", "device, measurement and field must not be empty"
                continue
            try:
                v = _value(row[idx["value"]])
            except ValueError as e:
                yield n, "bad", f"value: {e}"
                continue
            tags = {h: row[i].strip() for i, h in tag_cols if row[i].strip()}
            yield n, "sample", (wire.sample(m, d, t, {f: v}, tags), tags.get("agent"))


def _load_devices(path: str) -> dict[str, dict]:
    data, _lines = load_yaml(path)  # JSON is YAML
    if data is None:
        return {}
    if isinstance(data, dict) and "devices" in data and isinstance(data["devices"], (list, dict)):
        data = data["devices"]
    if isinstance(data, list):
        out = {}
        for i, d in enumerate(data):
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                raise ConfigError(f"{path}: devices[{i}]: expected a mapping with an 'id'")
            out[d["id"]] = d
        return out
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    raise ConfigError(f"{path}: expected {{device_id: {{site, building, room, type, tags, agent, upstream}}}} "
                      f"or a list of devices with 'id'")


# ---------------------------------------------------------------- output
def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


_SHOWN = ("pending", "firing", "resolved", "cancelled", "severity", "escalated", "flapping", "suppressed",
          "unsuppressed", "ack_expired")


def _subject(c: AlertChange) -> str:
    a = c.alert
    parts = [f"{k}={v}" for k, v in (("agent", a.subject["id"]) if a.kind == "agent_offline" else
                                     ("device", a.subject["id"]),)]
    parts += [f"{k}={v}" for k, v in sorted((a.subject.get("tags") or {}).items())]
    return " ".join(parts)


def _fmt_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"value={v:g}"
    return f"value={v}"


def format_change(c: AlertChange) -> str:
    a = c.alert
    bits = [_iso(c.t_ms), f"{c.kind.upper():<12}", a.rule, f"alert={a.id}", a.severity, _subject(c)]
    v = c.alert.value if c.kind != "suppressed" else None
    if v is not None and c.kind in ("pending", "firing", "resolved", "cancelled", "severity"):
        bits.append(_fmt_value(v))
    if c.kind in ("suppressed", "unsuppressed"):
        bits.append(f"({c.detail.get('reason')})")
    elif c.kind == "firing" and a.suppressed:
        bits.append(f"({a.suppressed})")
    if c.kind == "firing" and a.summary:
        bits.append(json.dumps(a.summary, ensure_ascii=False))
    return "  ".join(b for b in bits if b)


def change_json(c: AlertChange) -> dict:
    a = c.alert
    return {"t": _iso(c.t_ms), "t_ms": c.t_ms, "change": c.kind, "rule": a.rule, "alert": a.id,
            "severity": a.severity, "state": a.state, "subject": a.subject, "value": a.value,
            "suppressed": a.suppressed, "labels": a.labels, "summary": a.summary}


# ---------------------------------------------------------------- test
def _test(args) -> int:
    try:
        rs = load_rules(*args.rules)
        devices = _load_devices(args.devices) if args.devices else {}
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    path = Path(args.samples)
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if not path.is_file():
        print(f"{path}: cannot read (no such file)", file=sys.stderr)
        return 2

    meta: dict[str, dict] = {k: dict(v) for k, v in devices.items()}
    topology = {k: v["upstream"] for k, v in devices.items() if v.get("upstream")}
    clock = {"now": 0}
    store = AlertStore(":memory:")
    engine = RuleEngine(rs, store, device_meta=meta.get, clock=lambda: clock["now"], topology=topology)
    changes: list[tuple[int, int, AlertChange]] = []
    seq = [0]

    def collect(cs):
        for c in cs:
            seq[0] += 1
            changes.append((c.t_ms, seq[0], c))

    step = parse_duration(args.step) or 1000

    def advance(t: int):
        now = clock["now"]
        if t <= now:
            return
        if now:  # tick on a fixed grid in between, as a running collector would
            st = step
            while (t - now) // st > 100_000:
                st *= 2
            nxt = (now // st + 1) * st
            while nxt < t:
                clock["now"] = nxt
                collect(engine.tick(nxt))
                nxt += st
        clock["now"] = t
        collect(engine.tick(t))

    def learn(item: dict, agent: str | None):
        d = item["d"]
        m = meta.get(d)
        if m is None:
            m = meta[d] = {}
        if m.get("_learned"):
            return
        tags = item.get("tags") or {}
        for k in _META:
            if k in tags and not m.get(k):
                m[k] = tags[k]
        if agent and not m.get("agent"):
            m["agent"] = agent
        m["_learned"] = True

    def strip(item: dict) -> dict:
        tags = item.get("tags")
        if tags and any(k in tags for k in _META):  # metadata columns, not series tags
            item = {**item, "tags": {k: v for k, v in tags.items() if k not in _META}}
        return item

    n_samples = n_events = n_states = 0
    bad = 0
    reader = read_csv(path) if fmt == "csv" else read_jsonl(path)
    try:
        for line, kind, payload in reader:
            if kind == "fatal":
                break
            if kind == "bad":
                bad += 1
                print(f"{path}:{line}: {payload}", file=sys.stderr)
                if args.strict:
                    print(f"{path}:{line}: stopping (--strict)", file=sys.stderr)
                    break
                continue
            if kind == "state":
                agent, online, t = payload
                advance(t)
                collect(engine.on_agent_state(agent, online, t))
                n_states += 1
                continue
            item, agent = payload
            learn(item, agent)
            agent = agent or meta[item["d"]].get("agent")
            advance(item["t"])
            item = strip(item)
            if kind == "sample":
                collect(engine.on_samples([item], agent))
                n_samples += 1
            else:
                collect(engine.on_events([item], agent))
                n_events += 1
    except (OSError, UnicodeDecodeError) as e:
        print(f"{path}: cannot read ({e})", file=sys.stderr)
        return 2
    if args.until:
        try:
            u = args.until.strip()
            until = clock["now"] + parse_duration(u[1:]) if u.startswith("+") else parse_time(u)
        except ValueError as e:
            print(f"--until: {e}", file=sys.stderr)
            return 2
        advance(until)

    changes.sort(key=lambda x: (x[0], x[1]))
    out = sys.stdout
    for _, _, c in changes:
        if c.kind not in _SHOWN:
            continue
        out.write((json.dumps(change_json(c), ensure_ascii=False) if args.json else format_change(c)) + "\n")
    active = store.active()
    firing = [a for a in active if a.state == "firing"]
    summary = {"samples": n_samples, "events": n_events, "agent_states": n_states, "bad_lines": bad,
               "fired": sum(1 for _, _, c in changes if c.kind == "firing"),
               "resolved": sum(1 for _, _, c in changes if c.kind == "resolved"),
               "still_firing": len(firing), "still_pending": len(active) - len(firing),
               "clock_end": _iso(clock["now"]) if clock["now"] else None}
    if args.json:
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        out.write(f"# {n_samples} samples, {n_events} events, {n_states} agent states, {bad} bad lines; "
                  f"{summary['fired']} fired, {summary['resolved']} resolved; still firing: {len(firing)}"
                  + (f" ({', '.join(sorted({a.rule for a in firing}))})" if firing else "")
                  + (f"; clock ended at {summary['clock_end']}" if summary["clock_end"] else "") + "\n")
    store.close()
    if bad:
        print(f"{path}: {bad} bad line(s) {'(stopped at the first, --strict)' if args.strict else 'skipped'}",
              file=sys.stderr)
        return 1
    return 0
