"""A partition's new holder (or a restarted collector) must not read a heartbeat that waited in the
broker as the agent's clock being behind (found by bench/district.py: after a SIGSTOP past the lease,
25 of 200 agents got a 5-8 s "offset" and their samples and events were stored shifted). It starts
from the offset last stored in PostgreSQL; a genuinely skewed agent is still measured and corrected."""
from __future__ import annotations

import time

import pytest

from campus_sense import wire
from collector.config import MQTT
from collector.ingest import Ingest
from tests import peers_pg

pytestmark = pytest.mark.skipif(not peers_pg.available(), reason="PostgreSQL/psycopg missing")


def _msg(kind, agent, sent_ms, seq=None, items=()):
    topic = wire.topic("north", "A", agent, kind)
    if seq is None:
        payload = wire.encode_state(kind, agent, sent_ms, epoch="e1")
    else:
        payload = wire.encode_durable(kind, agent, "e1", seq, sent_ms, [wire.encode_item(i) for i in items])
    return wire.decode(topic, payload)


def test_new_holder_starts_from_the_stored_clock_offset(pg):
    from collector.store.postgres import PostgresStore
    st = PostgresStore(pg.create_db("t_clock_takeover"), node="c1")
    try:
        now = int(time.time() * 1000)
        # the first holder measured both agents live and stored their offsets
        first = Ingest(MQTT(host="127.0.0.1", port=1, username="collector", password="x"), st)
        batch = [_msg("heartbeat", "ok", now - 20), _msg("heartbeat", "ahead", now + 60_000 - 20)]
        st.apply(batch, [], first._clock(batch, now))
        assert st.clock_offsets()["ok"][0] == -20 and st.clock_offsets()["ahead"][0] == 60_000 - 20
        # the new holder gets heartbeats that waited 8 s in the broker, then data
        later = now + 10_000
        new = Ingest(MQTT(host="127.0.0.1", port=1, username="collector", password="x"), st)
        sample = wire.sample("interface", "sw", later - 5, {"in_octets": 1}, {"ifIndex": "1"})
        skewed = wire.sample("interface", "sw2", later + 60_000, {"in_octets": 1}, {"ifIndex": "1"})
        batch = [_msg("heartbeat", "ok", later - 8_000), _msg("metrics", "ok", later, 1, [dict(sample)]),
                 _msg("heartbeat", "ahead", later + 60_000 - 8_000),
                 _msg("metrics", "ahead", later + 60_000, 1, [dict(skewed)])]
        new._clock(batch, later)
        assert abs(new.offsets["ok"]) <= 20                 # not "8 s behind"
        assert batch[1].items[0]["t"] == later - 5          # stored at its own time
        assert abs(new.offsets["ahead"] - 60_000) <= 20     # a real skew is still corrected
        assert abs(batch[3].items[0]["t"] - later) <= 20
        # without a stored offset (a new agent), the first heartbeat is all there is
        batch = [_msg("heartbeat", "new-agent", later - 8_000)]
        new._clock(batch, later)
        assert new.offsets["new-agent"] == -8_000
    finally:
        st.close()
