"""The mlengine API server (FastAPI on uvicorn)."""

from __future__ import annotations

from mlengine.server._app import create_app, create_app_from_environment

__all__ = ["create_app", "create_app_from_environment"]
