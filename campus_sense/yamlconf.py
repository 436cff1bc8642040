"""Load YAML into pydantic models with errors that name the file, line and field.

Used for every config-like file (agent and collector config, rules, profiles,
campus model). Kept tiny: PyYAML's node tree gives line numbers, pydantic gives
the field path; this joins them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """Bad configuration: the message names file, line and field."""


#: pydantic error type raised by ``campus_sense.secret``; its ``ctx["key"]`` is the YAML key
#: actually used (``password_file``), which replaces the field name in the error location.
SECRET_ERROR = "secret"


def error_loc(e: dict) -> tuple:
    """A pydantic error's location as YAML keys: validator wrappers dropped, secret errors
    pointing at the key the secret came from (``mqtt.password_file``)."""
    loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    if e.get("type") == SECRET_ERROR and (e.get("ctx") or {}).get("key"):
        loc = loc[:-1] + (e["ctx"]["key"],)
    return loc


def _check_duplicates(path: Path, node: yaml.Node) -> None:
    """Every mapping's duplicate key is an error (PyYAML silently keeps the last one)."""
    seen_nodes: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen_nodes:
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[Any, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    ident = (k.tag, k.value)
                    line = k.start_mark.line + 1
                    if ident in first:
                        raise ConfigError(f"{path}:{line}: duplicate key {k.value!r} (first at line {first[ident]})")
                    first[ident] = line
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_index(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_index(v, path + (i,), out)
    return out


def _line_for(lines: dict[tuple, int], loc: tuple) -> int | None:
    loc = tuple(str(x) if not isinstance(x, int) else x for x in loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if node is not None:
        _check_duplicates(path, node)
    return data, (_line_index(node) if node is not None else {})


def format_validation(path: str | Path, err: ValidationError, lines: dict[tuple, int]) -> str:
    msgs = []
    for e in err.errors():
        loc = error_loc(e)
        line = _line_for(lines, loc)
        field = ".".join(str(x) for x in loc) or "(top level)"
        msgs.append(f"{path}:{line if line else '?'}: {field}: {e['msg']}")
    return "\n".join(msgs)


def load_model(path: str | Path, model: type[M], context: dict | None = None) -> M:
    """Parse ``path`` as ``model``; raise ConfigError naming file:line and field.
    ``context`` goes to pydantic validators (e.g. ``{"base_dir": ...}`` for secret files)."""
    data, lines = load_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: file is empty")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise ConfigError(format_validation(path, e, lines)) from None

