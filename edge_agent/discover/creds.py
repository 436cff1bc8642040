"""The credentials file of `campus-sense discover --credentials FILE` (every secret in the one secret
grammar: ``<name>``, ``<name>_file`` (relative to this file's folder) or ``<name>_env``)::

    snmp:
      v2c:
        - community_file: secrets/snmp-ro            # tried in order, first answer wins
      v3:
        - {user: monitor, auth_protocol: SHA-256, auth_key_file: secrets/v3-auth,
           priv_protocol: AES, priv_key_file: secrets/v3-priv}
    onvif:                                           # cameras are proposed only with a user
      - {username: monitor, password_file: secrets/onvif}
    pjlink:                                          # projectors greeting 'PJLINK 1' (password set)
      - {password_file: secrets/pjlink}

The proposed agent.yaml refers to the same files/variables; there is no default community.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from campus_sense.secret import Secret, SecretFields
from campus_sense.yamlconf import load_model


class _S(SecretFields):
    model_config = ConfigDict(extra="forbid")


class V2c(_S):
    community: Secret


class V3(_S):
    user: str = Field(min_length=1)
    auth_protocol: str | None = None
    auth_key: Secret | None = None
    priv_protocol: str | None = None
    priv_key: Secret | None = None
    context: str | None = None


class Snmp(_S):
    v2c: list[V2c] = Field(default_factory=list)
    v3: list[V3] = Field(default_factory=list)


class Onvif(_S):
    username: str = Field(min_length=1)
    password: Secret


class PJLink(_S):
    password: Secret


class Credentials(_S):
    snmp: Snmp = Field(default_factory=Snmp)
    onvif: list[Onvif] = Field(default_factory=list)
    pjlink: list[PJLink] = Field(default_factory=list)


def load(path: str | Path | None, communities: list[str] | None = None) -> Credentials:
    """The credentials file (ConfigError naming file:line) plus ``--community`` values (first)."""
    creds = Credentials() if path is None else load_model(path, Credentials,
                                                          context={"base_dir": Path(path).resolve().parent})
    extra = [V2c(community=Secret(c, name="community")) for c in communities or [] if c]
    creds.snmp.v2c = extra + list(creds.snmp.v2c)
    return creds
