"""Notification channels: one module per channel type, registered in ONE table (``CHANNELS``).

Adding a channel: write ``channels/<type>.py`` with ``TYPE``, ``Config`` (a ``base.ChannelConfig``
with ``type: Literal[TYPE]``) and ``Sender`` (``send(notification, delivery_id)``, ``close()``), then
add the module to ``_MODULES`` below. notify.yaml's channel union, the config error locations and
``make_sender`` are all built from this table.
"""
from __future__ import annotations

from types import ModuleType

from . import dingtalk, mqtt, smtp, webhook, wecom, wecom_app
from .base import ChannelConfig, DeliveryError

_MODULES: tuple[ModuleType, ...] = (webhook, smtp, wecom, wecom_app, dingtalk, mqtt)

#: type name -> channel module (``TYPE``, ``Config``, ``Sender``)
CHANNELS: dict[str, ModuleType] = {m.TYPE: m for m in _MODULES}

# compatibility names
WebhookChannel, SMTPChannel, WeComChannel = webhook.Config, smtp.Config, wecom.Config
DingTalkChannel, MQTTChannel = dingtalk.Config, mqtt.Config
WebhookSender, SMTPSender, WeComSender = webhook.Sender, smtp.Sender, wecom.Sender
DingTalkSender, MQTTSender = dingtalk.Sender, mqtt.Sender
dingtalk_sign = dingtalk.dingtalk_sign
mqtt_topic = mqtt.mqtt_topic


def make_sender(name: str, cfg: ChannelConfig):
    return CHANNELS[cfg.type].Sender(name, cfg)


__all__ = ["CHANNELS", "ChannelConfig", "DeliveryError", "make_sender", "dingtalk_sign", "mqtt_topic"]
