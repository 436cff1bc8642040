"""agent.yaml validation: every error names the file, line and field, before anything starts."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from campus_sense.yamlconf import ConfigError
from edge_agent import config

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
agent: {id: bldg-a, site: north, building: A}
mqtt:
  host: 127.0.0.1
  port: 1883
  username: bldg-a
  password: s3cret
queue:
  path: QUEUE
  max_messages: 1000
devices:
  - id: sw1
    driver: synthetic
    interval_s: 1
    options: {interfaces: 2}
  - id: sw2
    driver: synthetic
    interval_s: 5
    options:
      interfaces: 8
      delay_s: 0.5
"""


def write(tmp_path, text):
    p = tmp_path / "agent.yaml"
    p.write_text(text.replace("QUEUE", str(tmp_path / "q.db")))
    return p


def error_of(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    return str(e.value)


def test_good_config_loads(tmp_path):
    p = write(tmp_path, GOOD)
    c = config.load(p)
    assert [d.id for d in c.model.devices] == ["sw1", "sw2"]
    assert c.options[1].interfaces == 8 and c.options[1].delay_s == 0.5
    assert c.model.devices[0].deadline == pytest.approx(0.8)  # default: 0.8 * interval
    assert c.password == "s3cret"
    assert c.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_bad_field_type_names_field_and_line(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("max_messages: 1000", "max_messages: lots"))
    assert "agent.yaml:9: queue.max_messages:" in msg


def test_misspelt_key_is_an_error(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("    interval_s: 5", "    intervall_s: 5"))
    assert "agent.yaml:17: devices.1.intervall_s: Extra inputs are not permitted" in msg


def test_unknown_driver(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("driver: synthetic\n    interval_s: 5", "driver: modbus-x\n    interval_s: 5"))
    assert "agent.yaml:16: devices.1.driver:" in msg and "unknown driver 'modbus-x'" in msg


def test_bad_driver_option_has_path_and_line(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("interfaces: 8", "interfaces: eight"))
    assert "agent.yaml:19: devices.1.options.interfaces:" in msg and "integer" in msg
    msg = error_of(tmp_path, GOOD.replace("delay_s: 0.5", "dealy_s: 0.5"))
    assert "agent.yaml:20: devices.1.options.dealy_s: Extra inputs are not permitted" in msg


@pytest.mark.parametrize("drop,needle", [
    ("  password: s3cret\n", "mqtt: Value error, set exactly one of password or password_file"),
    ("  username: bldg-a\n", "mqtt.username: Field required"),
])
def test_missing_credentials_rejected(tmp_path, drop, needle):
    assert needle in error_of(tmp_path, GOOD.replace(drop, ""))


def test_password_file(tmp_path):
    (tmp_path / "pw").write_text("from-file\n")
    c = config.load(write(tmp_path, GOOD.replace("password: s3cret", f"password_file: {tmp_path / 'pw'}")))
    assert c.password == "from-file"
    msg = error_of(tmp_path, GOOD.replace("password: s3cret", f"password_file: {tmp_path / 'nope'}"))
    assert "agent.yaml:6: mqtt.password_file: cannot read" in msg


def test_duplicate_device_ids(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("id: sw2", "id: sw1"))
    assert "agent.yaml:15: devices.1.id: duplicate device id 'sw1'" in msg


def test_cli_exit_status_and_stderr(tmp_path):
    def check(text):
        return subprocess.run([sys.executable, "-m", "campus_sense", "agent", "--config",
                               str(write(tmp_path, text)), "--check"], cwd=ROOT, capture_output=True, text=True)
    ok = check(GOOD)
    assert ok.returncode == 0, ok.stderr
    bad = check(GOOD.replace("interfaces: 8", "interfaces: eight"))
    assert bad.returncode == 2
    assert "devices.1.options.interfaces" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "q.db").exists()  # nothing was started
