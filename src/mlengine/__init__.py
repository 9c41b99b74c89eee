"""mlengine: a self-hosted Google Cloud ML Engine / AI Platform.

``import mlengine`` stays light: it never imports Beam, Ray, torch or TensorFlow. The SDK
entry point is `mlengine.Client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mlengine.client import Client, Job

__all__ = ["Client", "Job", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "Job"):
        from mlengine import client

        return getattr(client, name)
    raise AttributeError(f"module 'mlengine' has no attribute {name!r}")
