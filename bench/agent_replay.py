"""Backlog replay throughput of the edge agent's publisher against a local Mosquitto.

    .venv/bin/python bench/agent_replay.py [messages] [inflight]

Fills a fresh durable queue with ``messages`` metrics messages (50 samples each,
like a busy building after an outage) and times how long the publisher takes to
get every PUBACK and empty the queue.
"""
from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campus_sense import wire  # noqa: E402
from edge_agent.publisher import Publisher  # noqa: E402
from edge_agent.queue import DurableQueue  # noqa: E402
from tests.peers import Mosquitto  # noqa: E402


async def main(n: int, inflight: int) -> None:
    pw = secrets.token_hex(8)
    broker = Mosquitto({"bench": pw}).start()
    try:
        q = DurableQueue(Path(tempfile.mkdtemp()) / "q.db", max_messages=n + 1)
        items = [wire.encode_item(wire.sample("interface", f"sw{i}", 1_700_000_000_000, {"in_octets": i, "out_octets": i},
                                              {"ifIndex": str(i)})) for i in range(50)]
        t0 = time.perf_counter()
        q.append("metrics", "bench", [items] * n)
        fill = time.perf_counter() - t0
        pub = Publisher(queue=q, site="s", building="b", agent_id="bench", host="127.0.0.1", port=broker.port,
                        username="bench", password=pw, inflight=inflight, heartbeat_s=3600)
        t0 = time.perf_counter()
        task = asyncio.create_task(pub.run())
        while q.depth:
            await asyncio.sleep(0.01)
        dt = time.perf_counter() - t0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        size = sum(len(i) + 1 for i in items)
        print(f"{n} messages (~{size} B each): queued in {fill:.2f} s, replayed in {dt:.2f} s "
              f"= {n / dt:.0f} msg/s, {50 * n / dt:.0f} samples/s (inflight {inflight})")
    finally:
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 32))
