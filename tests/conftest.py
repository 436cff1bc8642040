import secrets

import pytest

from tests import peers_pg
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


@pytest.fixture
def shipped_users():
    """The collector and two agents (user name = agent id, as the shipped ACL wants)."""
    return {u: secrets.token_hex(8) for u in ("collector", "agent-a", "agent-b")}


@pytest.fixture
def shipped_broker(tmp_path, shipped_users):
    """Mosquitto configured like docker/mosquitto: ACL, client id = user name, same durability."""
    d = tmp_path / "mosquitto"
    d.mkdir()
    m = Mosquitto(shipped_users, d, shipped=True).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def pg():
    """A throwaway PostgreSQL server (initdb in a temp dir) for one test module (tests/peers_pg.py)."""
    if not peers_pg.available():
        pytest.skip("PostgreSQL/psycopg missing")
    p = peers_pg.Postgres().start()
    yield p
    p.cleanup()
