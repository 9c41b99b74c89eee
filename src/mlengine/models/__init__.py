"""Models, versions and the operations that change them."""

from __future__ import annotations

from mlengine.models._resource import batching_labels
from mlengine.models._service import ModelService, Verifier

__all__ = ["ModelService", "Verifier", "batching_labels"]
