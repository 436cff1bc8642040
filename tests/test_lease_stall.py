"""A collector paused in the middle of a fenced commit (found by bench/district.py): its open
transaction holds the partition's lease row FOR SHARE. The others must not hang behind that lock
(their lease connection also renews their own leases), and once the lease has expired the taker
ends that stalled commit's session, so the partition moves instead of waiting for the pause to end."""
from __future__ import annotations

import time

import pytest

from tests import peers_pg

pytestmark = pytest.mark.skipif(not peers_pg.available(), reason="PostgreSQL/psycopg missing")


def test_takeover_does_not_hang_behind_a_paused_commit(pg):
    import psycopg

    from collector.store.leases import Leases
    from collector.store.postgres import PostgresStore
    dsn = pg.create_db("t_lease_stall")
    PostgresStore(dsn, node="init").close()            # schema
    a = Leases(dsn, "paused:1:aa", ttl_s=1)
    b = Leases(dsn, "other:2:bb", ttl_s=1)
    w = psycopg.connect(dsn)
    try:
        assert a.acquire("partition/p00") == 1
        assert b.acquire("partition/p01") == 1
        # the paused collector's commit: the fence checked (FOR SHARE), then the process stops
        w.execute("SELECT 1 FROM leases WHERE name='partition/p00' AND holder='paused:1:aa' AND epoch=1 FOR SHARE")
        time.sleep(1.05)                                 # its lease expires meanwhile
        t = time.monotonic()
        assert b.acquire("partition/p00") is None        # held by a running commit: not taken, and no hang
        assert time.monotonic() - t < 1.0                # lock_timeout = ttl / 4
        assert b.renew(["partition/p01"]) == []          # the same connection still renews our own leases
        # expired for longer than ttl / 3: the taker ends the stalled commit's session and takes the lease
        deadline = time.monotonic() + 10
        epoch = None
        while epoch is None and time.monotonic() < deadline:
            time.sleep(0.2)
            epoch = b.acquire("partition/p00")
        assert epoch == 2
        with pytest.raises(psycopg.Error) as e:          # the paused process wakes up: its session is gone
            w.execute("SELECT 1")
        assert PostgresStore._unavailable(e.value)      # -> StorageUnavailable: held, retried, then LeaseLost
    finally:
        w.close()
        a.close()
        b.close()
