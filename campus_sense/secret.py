"""One secret type for every config (agent, collector, notify, driver options).

YAML grammar (the only one): a secret field ``<name>`` (``password``, ``token``,
``community``, ``auth_key``, ...) is given by exactly one of three sibling keys::

    password: s3cret                                  # inline
    password_file: /etc/campus-sense/mqtt.pass        # file contents
    password_env: CAMPUS_MQTT_PASSWORD                # environment variable

* A file's contents are the secret with ONE trailing newline (``\\n`` or ``\\r\\n``) removed;
  nothing else is stripped. An unreadable or empty file, an unset or empty variable, an
  empty inline value, or two of the three keys at once are config errors naming the key
  (``agent.yaml:6: mqtt.password_file: cannot read /x: file does not exist``).
* Relative ``*_file`` paths are relative to the folder of the config that names them (agent.yaml
  and its driver options, collector.yaml, notify.yaml, discover credentials): pass
  ``context={"base_dir": dir}`` to ``model_validate`` / ``yamlconf.load_model``.
* The value never shows up in ``repr()``, ``str()``, ``model_dump()``,
  ``model_dump_json()`` or log lines of a config: they show ``**********``,
  ``file:/etc/x`` or ``env:NAME``. ``reveal()`` (alias ``get_secret_value()``) returns it.

Rotation rule: file and env secrets are read when the config is loaded (to fail early) and
then re-read on EVERY ``reveal()``; nothing is cached. Code therefore calls ``reveal()`` at
the moment it needs the secret, i.e. on every (re)connect / login / send, never once at
start-up; a rotated file is picked up by the next reconnect without a restart. A secret
that became unreadable raises ``SecretError`` (a ``ConfigError``) from ``reveal()``.

Models get the sibling-key grammar by deriving from :class:`SecretFields` and declaring
the field as ``Secret`` (or ``Secret | None``).
"""
from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError, core_schema

from campus_sense.yamlconf import SECRET_ERROR, ConfigError

__all__ = ["Secret", "SecretError", "SecretFields", "MASK"]

MASK = "**********"


class SecretError(ConfigError):
    """A secret cannot be read; ``key`` is the YAML key (``password_file``), ``reason`` the rest."""

    def __init__(self, key: str, reason: str):
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")


class Secret:
    """A credential from an inline value, a file or an environment variable."""

    __slots__ = ("_value", "file", "env", "name")

    def __init__(self, value: str | None = None, *, file: str | Path | None = None,
                 env: str | None = None, name: str | None = None):
        if sum(x is not None for x in (value, file, env)) != 1:
            raise ValueError("Secret needs exactly one of value, file, env")
        self._value = value
        self.file = Path(file) if file is not None else None
        self.env = env
        self.name = name

    # ------------------------------------------------------------------ reading
    @property
    def key(self) -> str:
        """The YAML key this secret came from: ``password``, ``password_file``, ``password_env``."""
        return (self.name or "secret") + ("_file" if self.file is not None else
                                          "_env" if self.env is not None else "")

    def reveal(self) -> str:
        """The secret, read now (files and variables are re-read on every call)."""
        if self._value is not None:
            if not self._value:
                raise SecretError(self.key, "must not be empty")
            return self._value
        if self.file is not None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise SecretError(self.key, f"cannot read {self.file}: file does not exist") from None
            except OSError as e:
                raise SecretError(self.key, f"cannot read {self.file} ({e.strerror})") from None
            except UnicodeDecodeError:
                raise SecretError(self.key, f"cannot read {self.file}: not UTF-8 text") from None
            if text.endswith("\n"):
                text = text[:-2] if text.endswith("\r\n") else text[:-1]
            if not text:
                raise SecretError(self.key, f"{self.file} is empty")
            return text
        val = os.environ.get(self.env)  # type: ignore[arg-type]
        if val is None:
            raise SecretError(self.key, f"environment variable {self.env} is not set")
        if not val:
            raise SecretError(self.key, f"environment variable {self.env} is empty")
        return val

    get_secret_value = reveal

    def rebased(self, base: str | Path | None) -> "Secret":
        """Same secret with a relative file path made relative to ``base``."""
        if self.file is None or base is None or self.file.is_absolute():
            return self
        return Secret(file=Path(base) / self.file, name=self.name)

    def __reduce__(self):  # copy/deepcopy/pickle keep the source, never resolve it
        return (_restore, (self._value, self.file, self.env, self.name))

    # ------------------------------------------------------------------ display
    def __str__(self) -> str:
        if self.file is not None:
            return f"file:{self.file}"
        if self.env is not None:
            return f"env:{self.env}"
        return MASK

    def __repr__(self) -> str:
        if self.file is not None:
            return f"Secret(file={str(self.file)!r})"
        if self.env is not None:
            return f"Secret(env={self.env!r})"
        return f"Secret({MASK!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self._value, self.file, self.env) == (other._value, other.file, other.env)

    def __hash__(self) -> int:
        return hash((self._value, self.file, self.env))

    # ------------------------------------------------------------------ pydantic
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            _validate, serialization=core_schema.plain_serializer_function_ser_schema(str))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict:
        return {"type": "string", "format": "password", "writeOnly": True}


def _restore(value, file, env, name) -> Secret:
    return Secret(value, file=file, env=env, name=name)


def _error(key: str, reason: str) -> PydanticCustomError:
    # yamlconf.error_loc() moves the error to ``key`` (password_file / password_env) so file:line
    # point at the line used; an empty key (inline value) keeps pydantic's location
    return PydanticCustomError(SECRET_ERROR, "{reason}", {"key": key, "reason": reason})


def _validate(v: Any, info: core_schema.ValidationInfo) -> Secret:
    ctx = info.context if isinstance(info.context, dict) else {}
    if isinstance(v, Secret):
        # folded from <name>_file / <name>_env (named by its YAML key), or built in code
        s = v if v.name else Secret(v._value, file=v.file, env=v.env, name=info.field_name)
    elif isinstance(v, str):
        s = Secret(v, name=info.field_name)
    else:
        raise _error("", f"expected a string (or a <name>_file / <name>_env key), got {type(v).__name__}")
    s = s.rebased(ctx.get("base_dir"))
    if s._value is not None or ctx.get("read_secrets", True):
        try:
            s.reveal()
        except SecretError as e:
            raise _error(e.key if s._value is None else "", e.reason) from None
    return s


def _is_secret(annotation: Any) -> bool:
    return annotation is Secret or Secret in typing.get_args(annotation)


_NAMES: dict[type, tuple[str, ...]] = {}


def secret_names(model: type[BaseModel]) -> tuple[str, ...]:
    """YAML names (alias, else field name) of ``model``'s ``Secret`` / ``Secret | None`` fields."""
    names = _NAMES.get(model)
    if names is None:
        names = _NAMES[model] = tuple(f.alias or n for n, f in model.model_fields.items()
                                      if _is_secret(f.annotation))
    return names


def fold_secret_keys(model: type[BaseModel], data: Any) -> Any:
    """Raw mapping -> mapping with ``<name>_file`` / ``<name>_env`` turned into ``<name>: Secret``."""
    names = secret_names(model)
    if not names or not isinstance(data, dict):
        return data
    out = None
    for name in names:
        present = [k for k in (name, name + "_file", name + "_env") if k in data and data[k] is not None]
        if len(present) > 1:
            raise ValueError(f"set exactly one of {' or '.join(present)}, not both")
        if not present or present[0] == name:
            continue
        k = present[0]
        v = data[k]
        if not isinstance(v, (str, Path)) or not str(v):
            raise ValueError(f"{k}: expected a {'path' if k.endswith('_file') else 'variable name'}")
        out = dict(data) if out is None else out
        del out[k]
        out[name] = Secret(file=v, name=name) if k.endswith("_file") else Secret(env=str(v), name=name)
    return data if out is None else out


class SecretFields(BaseModel):
    """Base for config models with ``Secret`` fields: accepts ``<name>``, ``<name>_file``,
    ``<name>_env`` (exactly one) for each of them."""

    @model_validator(mode="before")
    @classmethod
    def _fold_secret_keys(cls, data: Any) -> Any:
        return fold_secret_keys(cls, data)
