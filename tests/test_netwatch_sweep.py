"""Active ARP sweep: off by default, only configured subnets, rate-limited, /22 cap."""
from __future__ import annotations

import pytest

from drivers.netwatch import Options
from drivers.netwatch.sweep import arp_sweep, targets, validate_subnets


def test_sweep_is_off_by_default():
    o = Options.model_validate({"interface": "eth0"})
    assert o.arp_sweep.enabled is False and o.arp_sweep.subnets == []


def test_subnet_size_cap_and_explicit_allow():
    assert [str(n) for n in validate_subnets(["10.1.0.0/22", "10.2.3.4/24"])] == ["10.1.0.0/22", "10.2.3.0/24"]
    with pytest.raises(ValueError, match=r"'10.0.0.0/21' is larger than /22 \(2048 addresses\).*allow_large"):
        validate_subnets(["10.0.0.0/21"])
    assert validate_subnets(["10.0.0.0/21"], allow_large=True)[0].num_addresses == 2048
    with pytest.raises(ValueError, match="IPv4 only"):
        validate_subnets(["2001:db8::/120"])
    with pytest.raises(ValueError, match="not a network"):
        validate_subnets(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="allow_large"):
        Options.model_validate({"interface": "eth0", "arp_sweep": {"enabled": True, "subnets": ["10.0.0.0/16"]}})
    with pytest.raises(ValueError, match="needs arp_sweep.subnets"):
        Options.model_validate({"interface": "eth0", "arp_sweep": {"enabled": True}})
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        Options.model_validate({"interface": "eth0", "arp_sweep": {"rate_pps": 5000}})


def test_targets_only_hosts_of_configured_subnets():
    assert list(targets(validate_subnets(["192.168.5.0/29", "192.168.5.4/30", "10.9.9.8/31"]))) == [
        "192.168.5.1", "192.168.5.2", "192.168.5.3", "192.168.5.4", "192.168.5.5", "192.168.5.6",
        "10.9.9.8", "10.9.9.9"]


async def test_sweep_paces_requests_at_rate():
    sent: list[str] = []
    pauses: list[float] = []

    async def fake_sleep(s: float) -> None:
        pauses.append(s)

    n = await arp_sweep(sent.append, ["10.7.0.0/29"], rate_pps=4, sleep=fake_sleep)
    assert n == 6 and sent == [f"10.7.0.{i}" for i in range(1, 7)]
    assert pauses == [0.25] * 5  # one gap between consecutive requests: <= rate_pps per second


async def test_sweep_validates_before_sending():
    sent: list[str] = []
    with pytest.raises(ValueError):
        await arp_sweep(sent.append, ["10.7.0.0/24", "10.0.0.0/8"], rate_pps=10)
    with pytest.raises(ValueError, match="rate_pps"):
        await arp_sweep(sent.append, ["10.7.0.0/24"], rate_pps=0)
    assert sent == []


def test_readme_sample_config_is_valid(tmp_path):
    """The agent.yaml sample in drivers/netwatch/README.md validates (docs do not drift)."""
    import re
    from pathlib import Path

    import yaml
    readme = (Path(__file__).resolve().parents[1] / "drivers" / "netwatch" / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    dev = yaml.safe_load(block)["devices"][0]
    assert dev["driver"] == "netwatch"
    pa = dev["options"].get("protected_arp_from") or {}
    if "community_file" in pa:     # the sample's secret file exists on a real agent, not here
        (tmp_path / "core.community").write_text("public\n")
        pa["community_file"] = str(tmp_path / "core.community")
    o = Options.model_validate(dev["options"])
    assert o.ssid_allow["校园网"] == ["00:1a:2b:00:01:01"]
    assert o.arp_sweep.enabled is False and o.wifi_scan.via == "iw"
