"""Notification channels are one module each, registered in ONE table (collector.notify.channels.CHANNELS):
notify.yaml's channel union, error locations and make_sender all come from it."""
from __future__ import annotations

import typing

import pytest

from collector.notify import config as ncfg
from collector.notify.channels import CHANNELS, make_sender
from collector.notify.channels.base import ChannelConfig


def test_every_registered_channel_is_one_module_with_type_config_sender():
    assert set(CHANNELS) == {"webhook", "smtp", "wecom", "wecom_app", "dingtalk", "mqtt"}
    for name, mod in CHANNELS.items():
        assert mod.TYPE == name
        assert issubclass(mod.Config, ChannelConfig)
        assert typing.get_args(mod.Config.model_fields["type"].annotation) == (name,)
        assert callable(getattr(mod.Sender, "send")) and callable(getattr(mod.Sender, "close"))


def test_config_union_and_sender_come_from_the_table():
    union = typing.get_args(typing.get_args(ncfg.Channel)[0])
    assert set(union) == {m.Config for m in CHANNELS.values()}
    assert ncfg._TYPES == tuple(CHANNELS)
    cfg = ncfg.from_dict({"channels": {"h": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
                          "route": {"channels": ["h"]}})
    assert isinstance(make_sender("h", cfg.channels["h"]), CHANNELS["webhook"].Sender)


def test_unknown_type_names_the_registered_ones():
    with pytest.raises(ncfg.ConfigError) as ei:
        ncfg.from_dict({"channels": {"h": {"type": "pager", "url": "http://x"}}, "route": {"channels": ["h"]}})
    msg = str(ei.value)
    assert "channels.h.type" in msg and all(t in msg for t in CHANNELS)
