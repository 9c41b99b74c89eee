"""Stores: the metadata database (SQLAlchemy) and the artifact store (fsspec)."""

from __future__ import annotations

from mlengine.store._artifacts import ArtifactStore
from mlengine.store._filter import FilterTerm, parse_filter
from mlengine.store._metadata import JobRecord, MetadataStore, get_store
from mlengine.store._registry import ModelRecord, OperationRecord, RegistryStore, VersionRecord

__all__ = [
    "ArtifactStore",
    "FilterTerm",
    "JobRecord",
    "MetadataStore",
    "ModelRecord",
    "OperationRecord",
    "RegistryStore",
    "VersionRecord",
    "get_store",
    "parse_filter",
]
