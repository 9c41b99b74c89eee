"""Models, versions and the operations that change them."""

from __future__ import annotations

from mlengine.models._resource import batching_labels
from mlengine.models._service import CodeUpdate, ModelService, Verifier

__all__ = ["CodeUpdate", "ModelService", "Verifier", "batching_labels"]
