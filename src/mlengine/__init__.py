"""mlengine: a self-hosted Google Cloud ML Engine / AI Platform.

``import mlengine`` stays light: it never imports Beam, Ray, torch or TensorFlow. The SDK
entry point is `mlengine.Client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mlengine.client import Client, Job
    from mlengine.data import sql

__all__ = ["Client", "Job", "__version__", "sql"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "Job"):
        from mlengine import client

        return getattr(client, name)
    if name == "sql":
        from mlengine import data

        return data.sql
    raise AttributeError(f"module 'mlengine' has no attribute {name!r}")
