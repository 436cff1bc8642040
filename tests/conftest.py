import secrets

import pytest

from tests.peers import Mosquitto


@pytest.fixture
def mqtt_users():
    return {"agent-a": secrets.token_hex(8), "collector": secrets.token_hex(8)}


@pytest.fixture
def mosquitto(tmp_path, mqtt_users):
    d = tmp_path / "mosquitto"
    d.mkdir()
    m = Mosquitto(mqtt_users, d).start()
    yield m
    m.stop()
