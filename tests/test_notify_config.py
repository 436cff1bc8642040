"""notify.yaml: the example loads; every kind of mistake names file:line and key."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.notify import ConfigError, load_config
from collector.alertcore.labels import parse_matcher as Matcher
from collector.alertcore.timeinterval import TimeInterval, compile_intervals
from collector.notify.config import parse_duration

EXAMPLE = Path(__file__).resolve().parent.parent / "firmware_configs/notify/notify.example.yaml"

GOOD = """\
channels:
  hook: {type: webhook, url: "http://127.0.0.1:9/x"}
  ding:
    type: dingtalk
    access_token_env: T_DT_TOKEN
    secret_file: dt.secret
route:
  channels: [hook]
  routes:
    - severity: critical
      channels: [ding]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "notify.yaml"
    p.write_text(text)
    return p


def err(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    return str(e.value)


def test_example_config_loads_with_its_secrets(tmp_path, monkeypatch):
    sec = tmp_path / "secrets"
    sec.mkdir()
    for f in ("ops-webhook.token", "smtp.pass", "wecom-bldg-a.key", "notify-mqtt.pass"):
        (sec / f).write_text("s3cret-" + f)
    monkeypatch.setenv("CAMPUS_DINGTALK_TOKEN", "tok")
    monkeypatch.setenv("CAMPUS_DINGTALK_SECRET", "SECxyz")
    cfg = load_config(write(tmp_path, EXAMPLE.read_text()))
    assert set(cfg.channels) == {"ops-webhook", "noc-mail", "bldg-a-wecom", "noc-dingtalk", "alert-bus"}
    assert cfg.channels["noc-mail"].secret("password") == "s3cret-smtp.pass"
    assert cfg.channels["noc-dingtalk"].secret("secret") == "SECxyz"
    assert cfg.route.routes[0].repeat_interval == 3600
    assert cfg.retry_for("alert-bus").max_attempts == 20
    assert cfg.route.routes[1].routes[0].matches({"type": "camera"})


def test_example_without_secrets_names_each_missing_one(tmp_path, monkeypatch):
    monkeypatch.delenv("CAMPUS_DINGTALK_TOKEN", raising=False)
    monkeypatch.delenv("CAMPUS_DINGTALK_SECRET", raising=False)
    msg = err(tmp_path, EXAMPLE.read_text())
    text = EXAMPLE.read_text().splitlines()

    def line_of(s):
        return next(i + 1 for i, l in enumerate(text) if s in l)
    assert f"notify.yaml:{line_of('password_file: secrets/smtp.pass')}: channels.noc-mail.password_file: " in msg
    assert f"notify.yaml:{line_of('key_file: secrets/wecom')}: channels.bldg-a-wecom.key_file: " in msg
    assert f":{line_of('access_token_env:')}: channels.noc-dingtalk.access_token_env: " in msg
    assert "CAMPUS_DINGTALK_TOKEN is not set" in msg


def test_good_config(tmp_path, monkeypatch):
    monkeypatch.setenv("T_DT_TOKEN", "x")
    (tmp_path / "dt.secret").write_text("SEC1")
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.channels["ding"].secret("secret") == "SEC1"


@pytest.mark.parametrize("text, line, key, words", [
    # unknown channel in a route
    (GOOD.replace("channels: [ding]", "channels: [dingg]"), 11, "route.routes.0.channels.0", "unknown channel 'dingg'"),
    # unknown channel type
    (GOOD.replace("type: dingtalk", "type: slack"), 4, "channels.ding.type", "'slack'"),
    # one secret given twice (campus_sense.secret grammar: exactly one of secret / secret_file / secret_env)
    (GOOD.replace("secret_file: dt.secret", "secret: SECinline\n    secret_env: T_DT_TOKEN"), 4,
     "channels.ding", "set exactly one of secret or secret_env, not both"),
    # bad duration
    (GOOD + "      repeat_interval: 5 minutes\n", 12, "route.routes.0.repeat_interval", "invalid duration"),
    # bad severity
    (GOOD.replace("severity: critical", "severity: fatal"), 10, "route.routes.0.severity", "invalid severity"),
    # bad matcher regex
    (GOOD.replace("severity: critical", "matchers: ['room=~A-(']"), 10, "route.routes.0.matchers", "invalid regex"),
    # unknown time window
    (GOOD + "      active_time_windows: [office]\n", 12, "route.routes.0.active_time_windows.0", "unknown time window"),
    # bad timezone / hours
    (GOOD + "time_windows:\n  w:\n    - {days: [mon], hours: ['08:00-18:00'], timezone: Mars/Olympus}\n",
     14, "time_windows.w.0.timezone", "unknown timezone"),
    (GOOD + "time_windows:\n  w:\n    - {days: [mon], hours: ['8-18'], timezone: UTC}\n",
     14, "time_windows.w.0.hours", "hours '8-18': expected HH:MM-HH:MM"),
    (GOOD + "time_windows:\n  w:\n    - {days: [monday-funday], timezone: UTC}\n",
     14, "time_windows.w.0.days", "unknown day"),
    # secret file missing
    (GOOD.replace("dt.secret", "missing.secret"), 6, "channels.ding.secret_file", "cannot read"),
    # SMTP auth without TLS
    (GOOD.replace("  hook: {type: webhook, url: \"http://127.0.0.1:9/x\"}",
                  "  hook: {type: smtp, host: h, port: 25, security: none, username: u, password_env: T_DT_TOKEN,"
                  " from: a@b.c, to: x@y.z}"), 2, "channels.hook", "refusing SMTP AUTH without TLS"),
    # missing required secret
    (GOOD.replace("    access_token_env: T_DT_TOKEN\n", ""), 4, "channels.ding",
     "access_token_file or access_token_env is required"),
])
def test_errors_name_file_line_key(tmp_path, monkeypatch, text, line, key, words):
    monkeypatch.setenv("T_DT_TOKEN", "x")
    (tmp_path / "dt.secret").write_text("SEC1")
    msg = err(tmp_path, text)
    assert re.search(rf"notify\.yaml:{line}: {re.escape(key)}[.:]", msg), msg
    assert words in msg, msg


def test_invalid_yaml_and_empty(tmp_path):
    assert re.search(r"notify\.yaml:3: invalid YAML", err(tmp_path, "channels:\n  a: {type: webhook\nroute: [\n"))
    assert "file is empty" in err(tmp_path, "")


def test_durations():
    # the one duration grammar (alertcore.timeinterval) returns ms; notify.yaml fields hold seconds
    assert parse_duration("30s") == 30_000 and parse_duration("5m") == 300_000 and parse_duration("1h30m") == 5_400_000
    assert parse_duration(15) == 15_000 and parse_duration("2d") == 172_800_000 and parse_duration("250ms") == 250
    assert parse_duration("30") == 30_000
    for bad in ("5 minutes", "-1", "1x", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


class TimeRange:
    """One notify.yaml window range, compiled (the alertcore.timeinterval grammar); contains(epoch s)."""

    def __init__(self, **spec):
        self._i = compile_intervals({"w": TimeInterval(**spec)})["w"]

    def contains(self, ts: float) -> bool:
        return self._i.contains(int(ts * 1000))


def test_time_ranges():
    sh = ZoneInfo("Asia/Shanghai")
    office = TimeRange(days=["mon-fri"], hours=["08:00-18:00"], timezone="Asia/Shanghai")
    ts = lambda *a: datetime(*a, tzinfo=sh).timestamp()  # noqa: E731
    assert office.contains(ts(2026, 11, 23, 8, 0))          # Monday
    assert not office.contains(ts(2026, 11, 23, 18, 0))     # end exclusive
    assert not office.contains(ts(2026, 11, 22, 10, 0))     # Sunday
    # 01:00 UTC Monday is 09:00 in Shanghai
    assert office.contains(datetime(2026, 11, 23, 1, 0, tzinfo=ZoneInfo("UTC")).timestamp())
    night = TimeRange(days=["fri"], hours=["22:00-06:00"], timezone="Asia/Shanghai")
    assert night.contains(ts(2026, 11, 27, 23, 0))          # Friday night
    assert night.contains(ts(2026, 11, 28, 5, 59))          # ... into Saturday morning
    assert not night.contains(ts(2026, 11, 28, 23, 0))      # Saturday night
    weekend = TimeRange(days=["sat-sun"], timezone="UTC")
    assert weekend.contains(datetime(2026, 11, 29, 12, tzinfo=ZoneInfo("UTC")).timestamp())
    wrap = TimeRange(days=["sun-mon"], timezone="UTC")
    assert wrap.contains(datetime(2026, 11, 23, 12, tzinfo=ZoneInfo("UTC")).timestamp())


def test_matchers():
    assert Matcher('room=~"A-1.*"').matches({"room": "A-101"})
    assert not Matcher("room=~A-1").matches({"room": "A-101"})      # fully anchored
    assert Matcher("type!=camera").matches({})                       # missing label = ""
    assert Matcher("building!~B|C").matches({"building": "A"})
    with pytest.raises(ValueError):
        Matcher("no operator")


def test_cli_check_route_and_test_send(tmp_path, monkeypatch, capsys):
    from campus_sense.cli import main as campus_sense
    main = lambda argv: campus_sense(["notify", *argv])  # noqa: E731
    from tests.test_notify_support import RobotServer
    monkeypatch.setenv("T_DT_TOKEN", "tok")
    (tmp_path / "dt.secret").write_text("SEC1")
    peer = RobotServer(dingtalk_token="tok", dingtalk_secret="SEC1").start()
    try:
        p = write(tmp_path, GOOD.replace("type: dingtalk", f"type: dingtalk\n    base_url: {peer.url()}"))
        assert main(["check", str(p)]) == 0
        assert main(["route", str(p), "severity=critical", "building=A"]) == 0
        assert "route.0: channels=ding" in capsys.readouterr().out
        assert main(["test", str(p), "ding", "--severity", "critical"]) == 0
        assert peer.accepted_on("/robot/send")[0]["body"]["markdown"]["title"].startswith("[FIRING:1]")
        assert main(["test", str(p), "hook"]) == 1                      # nothing listens on :9
        assert "hook: FAILED" in capsys.readouterr().err
        assert main(["check", str(write(tmp_path, "channels: {}\nroute: {}\n"))]) == 2
    finally:
        peer.stop()
