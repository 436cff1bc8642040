"""Collector HTTP API (FastAPI) under /api/v1; see ``app.create_app``."""
from .app import Principal, create_app, require_role  # noqa: F401
