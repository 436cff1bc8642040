"""ONVIF event topics -> campus-sense events, one small parser per topic.

A PullMessages answer carries ``wsnt:NotificationMessage`` elements: a topic
(``tns1:VideoSource/SignalLoss``) and a ``tt:Message`` with ``Source`` and ``Data``
``SimpleItem`` name/value pairs and a ``PropertyOperation`` (Initialized, Changed,
Deleted). :func:`normalize` turns the zeep object (or a raw lxml element, for
vendor messages zeep could not bind) into a plain :class:`OnvifMessage`; the parsers
below only see that, so they are pure functions and easy to test.

Parsers register with :func:`parser` (decorator, like Home Assistant's
``PARSERS.register``). :func:`lookup` tries the exact topic and then its parents, so
``tns1:VideoSource/ImageTooDark/ImagingService`` (vendors add the service that
raised it) finds the ``tns1:VideoSource/ImageTooDark`` parser. A parser returns
``None`` to drop a message (e.g. an "Initialized, not active" state dump).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

TRUE_VALUES = {"true", "1", "active", "on"}


@dataclass(slots=True)
class OnvifMessage:
    topic: str  # normalized: "tns1:..." without trailing "/" or "//."
    operation: str = ""  # Initialized | Changed | Deleted | ""
    utc_ms: int | None = None
    source: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    def first_data(self, *names: str) -> str | None:
        for n in names:
            if n in self.data:
                return self.data[n]
        return next(iter(self.data.values()), None)

    def source_token(self) -> str | None:
        for n in ("VideoSourceToken", "VideoSourceConfigurationToken", "InputToken", "Source", "Token"):
            if n in self.source:
                return self.source[n]
        return next(iter(self.source.values()), None)


@dataclass(slots=True)
class Parsed:
    type: str
    severity: str
    data: dict[str, Any]


Parser = Callable[[OnvifMessage], "Parsed | None"]
PARSERS: dict[str, Parser] = {}


def parser(*topics: str) -> Callable[[Parser], Parser]:
    """Register ``fn`` for each topic (normalized ``tns1:`` form)."""
    def deco(fn: Parser) -> Parser:
        for t in topics:
            if t in PARSERS:
                raise ValueError(f"topic {t} already has a parser ({PARSERS[t].__name__})")
            PARSERS[t] = fn
        return fn
    return deco


def normalize_topic(topic: str) -> str:
    """``tns1:RuleEngine/CellMotionDetector/Motion//.`` -> ``tns1:RuleEngine/CellMotionDetector/Motion``.

    Any namespace prefix is rewritten to ``tns1`` (cameras bind the ONVIF topic namespace
    to ``tns1``, ``tns`` or ``ns2``; the prefix itself carries no meaning)."""
    t = (topic or "").strip().rstrip("/.")
    if ":" in t.split("/", 1)[0]:
        t = "tns1:" + t.split(":", 1)[1]
    return t


def lookup(topic: str) -> Parser | None:
    t = normalize_topic(topic)
    while t:
        fn = PARSERS.get(t)
        if fn is not None:
            return fn
        t = t.rsplit("/", 1)[0] if "/" in t else ""
    return None


def _active(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def _state_event(msg: OnvifMessage, on_type: str, off_type: str, severity: str, extra: dict[str, Any],
                 *names: str) -> Parsed | None:
    active = _active(msg.first_data(*names))
    if not active and msg.operation == "Initialized":
        return None  # state dump after subscribing: "not active" is not news
    data = {"source": msg.source_token(), "topic": msg.topic, "active": active, "origin": "onvif", **extra}
    return Parsed(on_type, severity, data) if active else Parsed(off_type, "info", data)


# ------------------------------------------------------------------ tamper and video loss
@parser("tns1:VideoSource/ImageTooDark")
def _too_dark(msg: OnvifMessage) -> Parsed | None:
    return _state_event(msg, "camera_tamper", "camera_tamper_cleared", "warning", {"reason": "too_dark"}, "State")


@parser("tns1:VideoSource/ImageTooBlurry")
def _too_blurry(msg: OnvifMessage) -> Parsed | None:
    return _state_event(msg, "camera_tamper", "camera_tamper_cleared", "warning", {"reason": "too_blurry"}, "State")


@parser("tns1:VideoSource/GlobalSceneChange")
def _scene_change(msg: OnvifMessage) -> Parsed | None:
    return _state_event(msg, "camera_tamper", "camera_tamper_cleared", "warning", {"reason": "scene_change"},
                        "State")


@parser("tns1:RuleEngine/TamperDetector/Tamper")
def _tamper_rule(msg: OnvifMessage) -> Parsed | None:
    return _state_event(msg, "camera_tamper", "camera_tamper_cleared", "warning", {"reason": "tamper"},
                        "IsTamper", "State")


@parser("tns1:VideoSource/SignalLoss")
def _signal_loss(msg: OnvifMessage) -> Parsed | None:
    return _state_event(msg, "video_loss", "video_restored", "warning", {"reason": "signal_loss"}, "State")


# ------------------------------------------------------------------ inputs and motion
@parser("tns1:Device/Trigger/DigitalInput")
def _digital_input(msg: OnvifMessage) -> Parsed | None:
    state = _active(msg.first_data("LogicalState", "State"))
    if msg.operation == "Initialized" and not state:
        return None
    return Parsed("digital_input", "info", {"input": msg.source_token(), "state": state, "topic": msg.topic,
                                            "origin": "onvif"})


@parser("tns1:VideoSource/MotionAlarm")
def _motion_alarm(msg: OnvifMessage) -> Parsed | None:
    return _state_event(msg, "motion", "motion_end", "info", {}, "State")


@parser("tns1:RuleEngine/CellMotionDetector/Motion")
def _cell_motion(msg: OnvifMessage) -> Parsed | None:
    p = _state_event(msg, "motion", "motion_end", "info", {}, "IsMotion")
    if p is not None and "Rule" in msg.source:
        p.data["rule"] = msg.source["Rule"]
    return p


# ------------------------------------------------------------------ zeep / lxml -> OnvifMessage
def _items(node: Any) -> dict[str, str]:
    """SimpleItem Name/Value pairs of a tt:ItemList (zeep object or lxml element)."""
    out: dict[str, str] = {}
    if node is None:
        return out
    simple = getattr(node, "SimpleItem", None)
    if simple is not None and not callable(simple):
        for it in simple or []:
            name, value = getattr(it, "Name", None), getattr(it, "Value", None)
            if name is not None:
                out[str(name)] = "" if value is None else str(value)
        return out
    if hasattr(node, "iter"):  # lxml element
        for el in node.iter():
            if isinstance(el.tag, str) and el.tag.endswith("}SimpleItem") and el.get("Name") is not None:
                out[el.get("Name")] = el.get("Value", "")
    return out


def _child(node: Any, name: str) -> Any:
    if node is None:
        return None
    if hasattr(node, "find") and hasattr(node, "tag"):  # lxml
        for el in node:
            if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == name:
                return el
        return None
    return getattr(node, name, None)


def _utc_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        d = value
    else:
        try:
            d = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None  # e.g. Hikvision's 0000-00-00T00:00:00Z
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    if d.year < 2000:
        return None
    return int(d.timestamp() * 1000)


def normalize(notification: Any) -> OnvifMessage | None:
    """One wsnt:NotificationMessage (zeep object) -> OnvifMessage, None when it has no topic."""
    topic_node = getattr(notification, "Topic", None)
    topic = getattr(topic_node, "_value_1", None) if topic_node is not None else None
    if not topic:
        return None
    wrapper = getattr(notification, "Message", None)
    msg = getattr(wrapper, "_value_1", None) if wrapper is not None else None
    if msg is None:
        return OnvifMessage(normalize_topic(str(topic)))
    if hasattr(msg, "tag"):  # lxml element
        op, utc = msg.get("PropertyOperation", ""), msg.get("UtcTime")
    else:
        op, utc = getattr(msg, "PropertyOperation", "") or "", getattr(msg, "UtcTime", None)
    return OnvifMessage(normalize_topic(str(topic)), str(op), _utc_ms(utc),
                        _items(_child(msg, "Source")), _items(_child(msg, "Data")))
