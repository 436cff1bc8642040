"""Bounds for integer API parameters (issue 9: a 2**64 in a query gave a 500 from SQLite).

Every integer (and float) parameter of the API — query, path and body — is bounded so that any
input is answered, out-of-range with 422 naming the parameter (FastAPI/pydantic validation):

- epoch-ms times and ms durations: 0 .. ``MAX_MS`` (2**53: exact in JSON/JavaScript, far
  beyond year 2200, and sums of two still fit SQLite's 64-bit INTEGER);
- row ids (alerts, silences, deliveries): 1 .. ``MAX_ID`` (2**63 - 1, SQLite's INTEGER);
- epoch seconds (floats): 0 .. ``MAX_S``.
"""
from __future__ import annotations

from typing import Any

from fastapi import Path, Query
from pydantic import Field

MAX_MS = 2**53
MAX_S = MAX_MS / 1000
MAX_ID = 2**63 - 1


def ms_query(default: Any = None, description: str = "epoch ms") -> Any:
    return Query(default, ge=0, le=MAX_MS, description=f"{description} (0..2**53)")


def s_query(default: Any = None, description: str = "epoch seconds") -> Any:
    return Query(default, ge=0, le=MAX_S, description=f"{description} (0..2**53/1000)")


def id_query(default: Any = None, description: str = "id") -> Any:
    return Query(default, ge=1, le=MAX_ID, description=f"{description} (1..2**63-1)")


def id_path(description: str = "id") -> Any:
    return Path(ge=1, le=MAX_ID, description=f"{description} (1..2**63-1)")


def ms_field(default: Any = None, description: str = "epoch ms", gt_zero: bool = False) -> Any:
    if gt_zero:
        return Field(default, gt=0, le=MAX_MS, description=f"{description} (1..2**53)")
    return Field(default, ge=0, le=MAX_MS, description=f"{description} (0..2**53)")
