"""The ``campus:`` block of collector.yaml (coverage / compliance on live data).

    campus:
      model: [campus.yaml, rooms.csv, ports.csv]   # campus model files (YAML / CSV), imported on start
      registry: [assets.csv]                       # asset registry files
      policy: campus-policy.yaml                   # default firmware_configs/policy/campus-policy.yaml
      firmware_dir: firmware/                      # default firmware_configs/firmware
      strict: false                                # true: a file with any bad row is not imported
      prune: false                                 # true: delete stored rows the files no longer have
      snapshot_interval_s: 3600                    # record coverage+compliance history; 0 = only on demand
      topology_fresh_s: 900                        # FDB/ARP/LLDP/IP samples older than this are ignored
      cache_s: 10                                  # reuse an observation snapshot this long
      declared_sync_s: 30                          # merge the agents' rooms/device types this often
      model_check_s: 5                             # notice a model/registry imported elsewhere this soon

Relative paths are relative to collector.yaml. Everything is optional: without files the
model and registry already in the collector DB (``campus-sense report import --db``) are used.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CampusSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: list[str] = Field(default_factory=list)
    registry: list[str] = Field(default_factory=list)
    policy: str | None = None
    firmware_dir: str | None = None
    strict: bool = False
    prune: bool = False
    snapshot_interval_s: float = Field(3600, ge=0)
    topology_fresh_s: float = Field(900, gt=0)
    cache_s: float = Field(10, ge=0)
    #: how often the agents' declarations (agent.yaml room/type, from birth messages) are merged into
    #: the stored campus model (collector.campus.declared); campus.yaml entries waiting for them re-import
    declared_sync_s: float = Field(30, gt=0)
    #: how soon a model or registry saved by another process (a second collector on the shared
    #: PostgreSQL, ``campus-sense report import``) replaces the cached one
    model_check_s: float = Field(5, ge=0)

    @field_validator("model", "registry", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    def resolve(self, base: Path) -> "CampusSettings":
        """Make relative paths relative to ``base`` (the config file's directory)."""
        def fix(p: str) -> str:
            return p if Path(p).is_absolute() else str(base / p)
        self.model = [fix(p) for p in self.model]
        self.registry = [fix(p) for p in self.registry]
        if self.policy:
            self.policy = fix(self.policy)
        if self.firmware_dir:
            self.firmware_dir = fix(self.firmware_dir)
        return self
