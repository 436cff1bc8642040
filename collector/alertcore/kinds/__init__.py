"""The rule kinds, registered in ONE table. A new kind: one module here with ``Config`` (its YAML
model, ``kind: Literal[...]``), a ``Kind`` subclass (evaluator and state hooks, see base.py) and
``KIND``; add it to the import below. The rule file union and the engine dispatch come from here."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from . import absence, agent_offline, event, event_count, exposure, rate, threshold
from .base import Kind

#: kind name -> Kind, in the order the kinds are documented
KINDS: dict[str, Kind] = {m.KIND.name: m.KIND for m in (threshold, rate, absence, agent_offline, event,
                                                          event_count, exposure)}

#: the ``rules:`` entry of rules.yaml: one of the kinds' Config models, chosen by ``kind``
AnyRule = Annotated[Union[tuple(k.Config for k in KINDS.values())], Field(discriminator="kind")]  # type: ignore[misc]

__all__ = ["KINDS", "AnyRule", "Kind"]
