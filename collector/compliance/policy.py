"""Campus policy: thresholds of the coverage and compliance checks.

The pydantic defaults ARE the seed values (campus rules); the file
firmware_configs/policy/campus-policy.yaml repeats them for editing.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from campus_sense import configs_dir
from campus_sense.yamlconf import load_model

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY_FILE = configs_dir() / "policy" / "campus-policy.yaml"
DEFAULT_FIRMWARE_DIR = configs_dir() / "firmware"


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WirelessPolicy(_P):
    ssids: list[str] = Field(default_factory=lambda: ["Campus"], min_length=1)
    room_types: list[str] = Field(default_factory=lambda: ["teaching", "office", "activity"])
    min_signal_dbm: float = Field(-67.0, le=0, ge=-120)
    min_snr_db: float = Field(25.0, ge=0, le=100)
    max_age_hours: float = Field(24 * 30, gt=0)        # older survey readings are ignored
    use_ap_client_rssi: bool = True


class WiredPolicy(_P):
    desk_min_mbps: float = Field(1000, gt=0)
    uplink_min_mbps: float = Field(10000, gt=0)
    backbone_min_mbps: float = Field(10000, gt=0)
    interbuilding_min_mbps: float = Field(10000, gt=0)
    min_uplinks_per_access_switch: int = Field(2, ge=1)
    uplink_peer_roles: list[str] = Field(default_factory=lambda: ["distribution", "core", "gateway", "border"])


class CapacityPolicy(_P):
    """"The network supports peak concurrent use": the campus rules give no number; these are
    starting values (vendor high-density guidance, a classroom of ~40 on one AP; links that
    run hotter than this at busy hours queue and drop). Set them from your own design."""
    enabled: bool = True
    max_clients_per_ap: int = Field(50, ge=1)
    max_link_util_pct: float = Field(80.0, gt=0, le=100)
    link_roles: list[str] = Field(default_factory=lambda: ["uplink", "backbone", "interbuilding"])


class Ipv6Policy(_P):
    required: bool = True          # a global IPv6 address on every gateway / L3 device


class AgentPolicy(_P):
    required_per_building: bool = True
    max_silence_minutes: float = Field(10, gt=0)


class InventoryPolicy(_P):
    missing_after_days: float = Field(7, gt=0)
    unknown_window_days: float = Field(7, gt=0)    # only devices seen this recently can be 'unknown'
    max_macs_per_edge_port: int = Field(4, ge=1)    # more MACs behind a port: trunk/hub, not a location
    ignore_mac_prefixes: list[str] = Field(default_factory=lambda: ["00:00:5e:00:01", "01:00:5e", "33:33",
                                                                    "ff:ff:ff:ff:ff:ff"])


class FirmwarePolicy(_P):
    expiry_warning_days: int = Field(90, ge=0)
    flag_not_preferred: bool = False


class HardeningPolicy(_P):
    weak_snmp_communities: list[str] = Field(default_factory=lambda: ["public", "private"])
    max_clock_offset_s: float = Field(5.0, gt=0)
    telnet_allowed: bool = False
    http_mgmt_allowed: bool = False


class Policy(_P):
    wireless: WirelessPolicy = Field(default_factory=WirelessPolicy)
    wired: WiredPolicy = Field(default_factory=WiredPolicy)
    capacity: CapacityPolicy = Field(default_factory=CapacityPolicy)
    ipv6: Ipv6Policy = Field(default_factory=Ipv6Policy)
    agents: AgentPolicy = Field(default_factory=AgentPolicy)
    inventory: InventoryPolicy = Field(default_factory=InventoryPolicy)
    firmware: FirmwarePolicy = Field(default_factory=FirmwarePolicy)
    hardening: HardeningPolicy = Field(default_factory=HardeningPolicy)


def load_policy(path: str | Path | None = None) -> Policy:
    """Load a policy file (ConfigError names file:line: field). ``None``: the repo's
    campus-policy.yaml when present, else the built-in seed values."""
    if path is None:
        if DEFAULT_POLICY_FILE.exists():
            return load_model(DEFAULT_POLICY_FILE, Policy)
        return Policy()
    return load_model(path, Policy)
