"""Run a store's tests on both backends: ``store_target`` is parametrized ``sqlite`` / ``postgres``
and returns ``new(name) -> target``: a SQLite path in the test's tmp dir, or ``Pg(dsn)`` of a fresh
database on a real PostgreSQL (tests/peers_pg.py, one server per test process). The same ``name``
within one test gives the same database (a restart). Import both fixtures into the test module::

    from tests.pg_fixture import pg_server, store_target  # noqa: F401
"""
from __future__ import annotations

import itertools

import pytest

from collector.store.sqldb import Pg
from tests import peers_pg

_seq = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    if not peers_pg.available():
        pytest.skip("PostgreSQL/psycopg missing")
    p = peers_pg.Postgres().start()
    yield p
    p.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request, tmp_path):
    made: dict[str, object] = {}
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_server")

        def new(name: str = "db"):
            if name not in made:
                made[name] = Pg(pg.create_db(f"t{next(_seq)}"))
            return made[name]
    else:
        def new(name: str = "db"):
            return str(tmp_path / f"{name}.db")
    new.kind = request.param
    return new
