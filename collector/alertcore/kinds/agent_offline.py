"""kind: agent_offline — an edge agent silent (or dead, Last Will) for ``after``; the alert's
subject is the agent, and while it fires every alert of the agent's devices is inhibited."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from ..timeinterval import Duration
from .base import Kind, OptStrList, RuleBase


class Config(RuleBase):
    kind: Literal["agent_offline"]
    after: Duration = 300_000
    agents: OptStrList = None


class AgentOffline(Kind):
    name = "agent_offline"
    Config = Config
    input = "agents"
    subject = "agent"
    by_default: list[str] | None = []

    def on_tick(self, eng, r, now, changes) -> None:
        for name, ag in eng._agents.items():
            key = (r.idx, name, ())
            st = eng._states.get(key)
            if st is not None and st.state == "firing":
                continue
            if r.m.agents and not any(fnmatchcase(name, p) for p in r.m.agents):
                continue
            if not eng.may_judge(name, now, agent=True):
                continue
            ref = ag.dead_since if ag.dead_since is not None else ag.last_seen
            # a collect: false maintenance window: the gap is expected, staleness counts from its end
            dl = max(ref, eng.expected_gap(r, key, name, now)) + r.m.after
            if dl > now or (r.cal is not None and not r.cal.contains(now)):
                continue
            if st is None:
                st = eng._new_state(r, key, name)
            eng._open(st, "firing", dl, r.m.after / 1000.0, r.m.severity, changes,
                      detail={"last_seen_ms": ag.last_seen, "death_ms": ag.dead_since})

    def seen(self, eng, r, agent: str, t: int, changes) -> None:
        """The agent is alive again at ``t``."""
        st = eng._states.get((r.idx, agent, ()))
        if st is not None and st.state == "firing" and t >= (st.alert.fired_ms or 0):
            eng._resolve(st, t, changes, detail={"seen_ms": t})

    def restore(self, eng, st, alert) -> bool:
        from ..engine import _Agent
        sid = st.subject["id"]
        if sid not in eng._agents:
            eng._agents[sid] = _Agent(alert.fired_ms or alert.started_ms)
            eng._agents[sid].site = alert.labels.get("site")
        return alert.state == "pending"


KIND = AgentOffline()
