"""campus_sense.secret: one secret type (inline / <name>_file / <name>_env) for every config,
never shown by repr/str/model_dump/logging; and duplicate YAML keys are config errors."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from campus_sense.secret import Secret, SecretError
from campus_sense.yamlconf import ConfigError, load_yaml

ROOT = Path(__file__).resolve().parent.parent
VALUE = "Xy-s3cret-Value-42"


def assert_hidden(obj, value=VALUE, caplog=None):
    """repr, str, model_dump, model_dump_json and a log record of ``obj`` never hold ``value``."""
    texts = [repr(obj), str(obj), f"{obj}", f"{obj!r}"]
    if hasattr(obj, "model_dump"):
        texts += [repr(obj.model_dump()), repr(obj.model_dump(mode="json")), obj.model_dump_json(),
                  repr(obj.model_dump(mode="python", round_trip=True))]
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, "config %s %r", (obj, obj), None)
    texts.append(logging.Formatter("%(message)s").format(rec))
    if caplog is not None:
        with caplog.at_level(logging.INFO, logger="campus_sense.test"):
            logging.getLogger("campus_sense.test").info("config: %s / %r", obj, obj)
        texts.append(caplog.text)
    for t in texts:
        assert value not in t, t


def sources(tmp_path, monkeypatch, name="password", value=VALUE):
    """The three spellings of one secret: ({key: ...}, description)."""
    f = tmp_path / f"{name}.secret"
    f.write_text(value + "\n")
    monkeypatch.setenv(f"CS_TEST_{name.upper()}", value)
    return [{name: value}, {f"{name}_file": str(f)}, {f"{name}_env": f"CS_TEST_{name.upper()}"}]


# --------------------------------------------------------------------------- the type

def test_secret_type_sources_display_and_errors(tmp_path, monkeypatch):
    f = tmp_path / "s"
    f.write_text(VALUE + "\n\n")  # only ONE trailing newline is stripped
    assert Secret(file=f).reveal() == VALUE + "\n"
    f.write_text(" " + VALUE + " \r\n")
    assert Secret(file=f).reveal() == " " + VALUE + " "
    f.write_text(VALUE)
    assert Secret(file=f).reveal() == VALUE == Secret(file=f).get_secret_value()
    monkeypatch.setenv("CS_T", VALUE)
    assert Secret(env="CS_T").reveal() == VALUE and Secret(VALUE).reveal() == VALUE
    for s in (Secret(VALUE), Secret(file=f), Secret(env="CS_T")):
        assert VALUE not in repr(s) and VALUE not in str(s)
    assert repr(Secret(VALUE)) == "Secret('**********')" and str(Secret(VALUE)) == "**********"
    assert repr(Secret(file="/etc/x")) == "Secret(file='/etc/x')" and str(Secret(env="E")) == "env:E"
    f.write_text("\n")
    with pytest.raises(SecretError, match="is empty") as ei:
        Secret(file=f, name="token").reveal()
    assert ei.value.key == "token_file" and isinstance(ei.value, ConfigError)
    with pytest.raises(SecretError, match="does not exist"):
        Secret(file=tmp_path / "nope").reveal()
    monkeypatch.delenv("CS_T")
    with pytest.raises(SecretError, match="CS_T is not set"):
        Secret(env="CS_T", name="password").reveal()
    monkeypatch.setenv("CS_T", "")
    with pytest.raises(SecretError, match="CS_T is empty"):
        Secret(env="CS_T").reveal()


def test_rotation_file_and_env_are_reread_on_every_reveal(tmp_path, monkeypatch):
    from edge_agent.config import MqttSection
    f = tmp_path / "pw"
    f.write_text("one\n")
    m = MqttSection(host="h", username="u", password_file=str(f))
    assert m.password.reveal() == "one"
    f.write_text("two\n")
    assert m.password.reveal() == "two"
    monkeypatch.setenv("CS_ROT", "a")
    m = MqttSection(host="h", username="u", password_env="CS_ROT")
    monkeypatch.setenv("CS_ROT", "b")
    assert m.password.reveal() == "b"


# --------------------------------------------------------------------------- agent

AGENT = """\
agent: {id: bldg-a, site: north, building: A}
mqtt:
  host: 127.0.0.1
  username: bldg-a
  SECRET
queue: {path: QUEUE}
"""


def write_agent(tmp_path, secret_line, extra=""):
    p = tmp_path / "agent.yaml"
    p.write_text(AGENT.replace("SECRET", secret_line).replace("QUEUE", str(tmp_path / "q.db")) + extra)
    return p


@pytest.mark.parametrize("i", [0, 1, 2])
def test_agent_config_secret_sources_and_hidden(tmp_path, monkeypatch, caplog, i):
    from edge_agent import config
    (k, v), = sources(tmp_path, monkeypatch)[i].items()
    c = config.load(write_agent(tmp_path, f"{k}: {v}"))
    assert c.password == VALUE and c.model.mqtt.password.reveal() == VALUE
    assert_hidden(c.model, caplog=caplog)
    assert_hidden(c.model.mqtt)


def test_agent_config_missing_secret_names_key_and_line(tmp_path, monkeypatch):
    from edge_agent import config
    monkeypatch.delenv("CS_NOPE", raising=False)
    with pytest.raises(ConfigError) as ei:
        config.load(write_agent(tmp_path, f"password_file: {tmp_path / 'nope'}"))
    assert "agent.yaml:5: mqtt.password_file: cannot read" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        config.load(write_agent(tmp_path, "password_env: CS_NOPE"))
    assert "agent.yaml:5: mqtt.password_env: environment variable CS_NOPE is not set" in str(ei.value)
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError) as ei:
        config.load(write_agent(tmp_path, f"password_file: {tmp_path / 'empty'}"))
    assert "agent.yaml:5: mqtt.password_file: " in str(ei.value) and "is empty" in str(ei.value)
    with pytest.raises(ConfigError, match="set exactly one of password or password_env, not both"):
        config.load(write_agent(tmp_path, "password: x\n  password_env: CS_NOPE"))


# --------------------------------------------------------------------------- duplicate keys

def check_cli(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "campus_sense", "agent", "--config", str(path), "--check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_duplicate_keys_fail_agent_check_naming_both_lines(tmp_path):
    ok = write_agent(tmp_path, "password: x")
    r = check_cli(ok)
    assert r.returncode == 0, r.stderr
    # top level: a second mqtt block used to silently replace the first
    p = write_agent(tmp_path, "password: x", "mqtt: {host: 10.0.0.9, username: evil, password: y}\n")
    r = check_cli(p)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{p}:7: duplicate key 'mqtt' (first at line 2)" in r.stderr
    # nested
    p = write_agent(tmp_path, "password: x\n  host: 10.0.0.9")
    r = check_cli(p)
    assert r.returncode == 2 and f"{p}:6: duplicate key 'host' (first at line 3)" in r.stderr
    # in a flow mapping inside a list, too
    p = write_agent(tmp_path, "password: x", "devices:\n  - {id: a, driver: synthetic, id: b}\n")
    r = check_cli(p)
    assert r.returncode == 2 and f"{p}:8: duplicate key 'id' (first at line 8)" in r.stderr


def test_duplicate_key_error_from_loader_and_same_key_in_different_maps_is_fine(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: {k: 1}\nb: {k: 2}\nc: &x {k: 3}\nd: *x\n")
    data, _ = load_yaml(p)
    assert data["a"]["k"] == 1 and data["d"] == {"k": 3}
    p.write_text("a: 1\nb:\n  - c: 1\n    d: 2\n    c: 3\n")
    with pytest.raises(ConfigError, match=r"x.yaml:5: duplicate key 'c' \(first at line 3\)"):
        load_yaml(p)


# --------------------------------------------------------------------------- collector

COLLECTOR = """\
mqtt:
  host: 127.0.0.1
  username: collector
  SECRET
store:
  kind: influxdb
  url: http://127.0.0.1:8086
  TOKEN
"""


@pytest.mark.parametrize("i", [0, 1, 2])
def test_collector_config_secret_sources_and_hidden(tmp_path, monkeypatch, caplog, i):
    from collector import config
    (k, v), = sources(tmp_path, monkeypatch)[i].items()
    (tk, tv), = sources(tmp_path, monkeypatch, "token", VALUE + "-tok")[i].items()
    p = tmp_path / "collector.yaml"
    p.write_text(COLLECTOR.replace("SECRET", f"{k}: {v}").replace("TOKEN", f"{tk}: {tv}"))
    cfg = config.load(p)
    assert cfg.mqtt.read_password() == VALUE and cfg.store.read_token() == VALUE + "-tok"
    assert_hidden(cfg, caplog=caplog)
    assert_hidden(cfg, VALUE + "-tok")


def test_collector_relative_secret_files_are_relative_to_the_config(tmp_path, monkeypatch):
    from collector import config
    d = tmp_path / "etc"
    (d / "secrets").mkdir(parents=True)
    (d / "secrets" / "mqtt.pass").write_text("rel-pass\n")
    (d / "secrets" / "influx.token").write_text("rel-token\n")
    p = d / "collector.yaml"
    p.write_text(COLLECTOR.replace("SECRET", "password_file: secrets/mqtt.pass")
                 .replace("TOKEN", "token_file: secrets/influx.token"))
    monkeypatch.chdir(tmp_path)
    cfg = config.load(p)
    assert cfg.mqtt.read_password() == "rel-pass" and cfg.store.read_token() == "rel-token"
    assert cfg.mqtt.password.file == d / "secrets" / "mqtt.pass"
    # rotation: re-read on every read_password() (the collector calls it per connect)
    (d / "secrets" / "mqtt.pass").write_text("rotated\n")
    assert cfg.mqtt.read_password() == "rotated"
    (d / "secrets" / "mqtt.pass").unlink()
    with pytest.raises(SecretError, match="password_file: cannot read"):
        cfg.mqtt.read_password()
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert f"{p}:4: mqtt.password_file: cannot read {d / 'secrets' / 'mqtt.pass'}" in str(ei.value)
    monkeypatch.delenv("CS_NOPE", raising=False)
    p.write_text(COLLECTOR.replace("SECRET", "password: x").replace("TOKEN", "token_env: CS_NOPE"))
    with pytest.raises(ConfigError, match=r"collector.yaml:8: store.token_env: environment variable CS_NOPE"):
        config.load(p)


# --------------------------------------------------------------------------- notify

NOTIFY = """\
channels:
  mail:
    type: smtp
    host: 127.0.0.1
    port: 587
    security: starttls
    username: u
    PWLINE
    from: a@b.c
    to: x@y.z
  ding:
    type: dingtalk
    access_token: ding-inline-token
    secret_env: CS_DING_SECRET
route:
  channels: [mail]
"""


@pytest.mark.parametrize("i", [0, 1, 2])
def test_notify_config_secret_sources_and_hidden(tmp_path, monkeypatch, caplog, i):
    from collector.notify import config
    monkeypatch.setenv("CS_DING_SECRET", "SEC-" + VALUE)
    (k, v), = sources(tmp_path, monkeypatch)[i].items()
    p = tmp_path / "notify.yaml"
    p.write_text(NOTIFY.replace("PWLINE", f"{k}: {v}"))
    cfg = config.load(p)
    assert cfg.channels["mail"].secret("password") == VALUE
    assert cfg.channels["ding"].secret("secret") == "SEC-" + VALUE
    assert cfg.channels["ding"].secret("access_token") == "ding-inline-token"
    assert_hidden(cfg, caplog=caplog)
    assert_hidden(cfg, "SEC-" + VALUE)
    assert_hidden(cfg.channels["ding"], "ding-inline-token")


def test_notify_secret_errors_and_rotation(tmp_path, monkeypatch):
    from collector.notify import config
    monkeypatch.setenv("CS_DING_SECRET", "s1")
    p = tmp_path / "notify.yaml"
    p.write_text(NOTIFY.replace("PWLINE", "password_file: smtp.pass"))
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert f"{p}:8: channels.mail.password_file: cannot read {tmp_path / 'smtp.pass'}" in str(ei.value)
    assert config.load(p, read_secrets=False).channels["mail"].password.file == tmp_path / "smtp.pass"
    (tmp_path / "smtp.pass").write_text("one\n")      # relative to notify.yaml
    cfg = config.load(p)
    (tmp_path / "smtp.pass").write_text("two\n")
    monkeypatch.setenv("CS_DING_SECRET", "s2")
    assert cfg.channels["mail"].secret("password") == "two" and cfg.channels["ding"].secret("secret") == "s2"
    monkeypatch.delenv("CS_DING_SECRET")
    with pytest.raises(SecretError, match="secret_env: environment variable CS_DING_SECRET is not set"):
        cfg.channels["ding"].secret("secret")
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert f"{p}:14: channels.ding.secret_env: environment variable CS_DING_SECRET is not set" in str(ei.value)


# --------------------------------------------------------------------------- driver options

TOKEN16 = "t0ken-0123456789abcdef"


def _snmp_v2(s):
    return {"host": "10.0.0.1", **s}


def _snmp_v3(s):  # the secret is the auth key; a second, inline priv key must stay hidden too
    return {"host": "10.0.0.1", "version": "3", "user": "mon", "auth_protocol": "SHA-256",
            "priv_protocol": "AES", "priv_key": VALUE + "-priv", **s}


DRIVER_CASES = {
    # driver: (options module, secret name, options builder, how the driver reads it)
    "snmp-community": ("drivers.snmp", "community", _snmp_v2, lambda o: o.target().community),
    "snmp-v3-auth": ("drivers.snmp", "auth_key", _snmp_v3, lambda o: o.target().auth_key),
    "onvif": ("drivers.onvif", "password", lambda s: {"host": "cam", "username": "u", **s},
              lambda o: o.password.reveal()),
    "pjlink": ("drivers.pjlink", "password", lambda s: {"host": "pj", **s}, lambda o: o.password.reveal()),
    "access-token": ("drivers.access", "token", lambda s: {"listen_port": 0, **s}, lambda o: o.token.reveal()),
    "access-pseudonym-key": ("drivers.access", "pseudonym_key",
                             lambda s: {"listen_port": 0, "token": TOKEN16, "identifier_fields": ["card"], **s},
                             lambda o: o._key.decode()),
    "mqtt_sensors": ("drivers.mqtt_sensors", "password",
                     lambda s: {"host": "h", "username": "u", "topics": [{"topic": "a/+", "device": "{1}"}], **s},
                     lambda o: o.secret()),
    "camera_health": ("drivers.camera_health", "password",
                      lambda s: {"url": "rtsp://10.0.0.5/s", "username": "u", **s}, lambda o: o.password.reveal()),
    "audit": ("drivers.audit", "community", lambda s: {"host": "h", **s}, lambda o: o.community.reveal()),
}


def _options(case):
    import importlib
    mod, name, build, read = DRIVER_CASES[case]
    return importlib.import_module(mod).Options, name, build, read


@pytest.mark.parametrize("i", [0, 1, 2], ids=["inline", "file", "env"])
@pytest.mark.parametrize("case", sorted(DRIVER_CASES))
def test_driver_options_secret_sources_and_hidden(tmp_path, monkeypatch, caplog, case, i):
    Options, name, build, read = _options(case)
    o = Options.model_validate(build(sources(tmp_path, monkeypatch, name)[i]))
    assert read(o) == VALUE
    assert_hidden(o, caplog=caplog)
    if case == "snmp-v3-auth":
        assert o.target().priv_key == VALUE + "-priv"
        assert_hidden(o, VALUE + "-priv")
        assert VALUE not in repr(o.target()) and VALUE not in str(o.target())


@pytest.mark.parametrize("case", sorted(DRIVER_CASES))
def test_driver_options_missing_file_or_env_names_the_key(tmp_path, monkeypatch, case):
    Options, name, build, read = _options(case)
    monkeypatch.delenv("CS_NOPE", raising=False)
    for key, val, words in ((f"{name}_file", str(tmp_path / "nope"), "cannot read"),
                            (f"{name}_env", "CS_NOPE", "CS_NOPE is not set")):
        with pytest.raises(ValidationError) as ei:
            Options.model_validate(build({key: val}))
        errs = [e for e in ei.value.errors() if e["type"] == "secret"]
        assert errs and errs[0]["ctx"]["key"] == key and words in errs[0]["msg"], ei.value.errors()
    with pytest.raises(ValidationError, match="not both"):
        Options.model_validate(build({name: VALUE, f"{name}_env": "CS_NOPE"}))


@pytest.mark.parametrize("case", ["snmp-community", "onvif", "pjlink", "access-token", "mqtt_sensors",
                                  "camera_health", "audit"])
def test_driver_options_rotation_rereads_on_every_use(tmp_path, monkeypatch, case):
    Options, name, build, read = _options(case)
    f = tmp_path / "s"
    f.write_text(VALUE + "\n")
    o = Options.model_validate(build({f"{name}_file": str(f)}))
    f.write_text(VALUE + "-rotated\n")
    assert read(o) == VALUE + "-rotated"
    monkeypatch.setenv("CS_ROT", VALUE)
    o = Options.model_validate(build({f"{name}_env": "CS_ROT"}))
    monkeypatch.setenv("CS_ROT", VALUE + "-2")
    assert read(o) == VALUE + "-2"


def test_driver_option_errors_in_agent_yaml_name_key_and_line(tmp_path, monkeypatch):
    from edge_agent import config
    monkeypatch.delenv("CS_NOPE", raising=False)
    p = write_agent(tmp_path, "password: x", "devices:\n  - id: sw\n    driver: snmp\n    options:\n"
                    "      host: 10.0.0.1\n      community_env: CS_NOPE\n")
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert "agent.yaml:12: devices.0.options.community_env: environment variable CS_NOPE is not set" \
        in str(ei.value)
