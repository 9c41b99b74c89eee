"""Models, versions and operations in the metadata store (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest

from mlengine.errors import AlreadyExists, FailedPrecondition, NotFound
from mlengine.store import (
    MetadataStore,
    ModelRecord,
    OperationRecord,
    RegistryStore,
    VersionRecord,
)
from tests.store.test_metadata import postgres_url, store  # noqa: F401 - fixtures

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def version(name: str, state: str = "CREATING") -> tuple[VersionRecord, OperationRecord]:
    return (
        VersionRecord("p", "m", name, state, {"deploymentUri": "/x"}, NOW, "e"),
        OperationRecord("p", f"create_m_{name}", "CREATE_VERSION", "m", NOW, version=name,
                        owner="host:1"),
    )  # fmt: skip


def test_models_versions_operations(store: MetadataStore) -> None:  # noqa: F811
    registry = RegistryStore(store)
    registry.insert_model(ModelRecord("p", "m", NOW, "e", labels={"a": "b"}))
    with pytest.raises(AlreadyExists):
        registry.insert_model(ModelRecord("p", "m", NOW, "e"))
    assert registry.get_model("p", "m").labels == {"a": "b"}
    for name in ("v1", "v2", "v3"):
        registry.insert_version(*version(name))
    with pytest.raises(AlreadyExists):
        registry.insert_version(*version("v1"))
    with pytest.raises(NotFound):
        registry.insert_version(
            VersionRecord("p", "nope", "v1", "CREATING", {}, NOW, "e"), version("x")[1]
        )
    page, token = registry.list_versions("p", "m", page_size=2)
    rest, last = registry.list_versions("p", "m", page_size=2, page_token=token)
    assert [v.name for v in page + rest] == ["v1", "v2", "v3"] and last is None
    assert registry.update_version("p", "m", "v1", from_states={"CREATING"}, state="READY")
    assert not registry.update_version("p", "m", "v1", from_states={"CREATING"}, state="FAILED")
    assert registry.set_default_if_none("p", "m", "v1")
    assert not registry.set_default_if_none("p", "m", "v2")
    assert registry.get_model("p", "m").default_version == "v1"
    assert [o.version for o in registry.pending_operations()] == ["v1", "v2", "v3"]
    registry.finish_operation("p", "create_m_v1", end_time=NOW, response={"state": "READY"})
    done = registry.get_operation("p", "create_m_v1")
    assert done.done and done.response == {"state": "READY"}
    with pytest.raises(FailedPrecondition):
        registry.delete_model("p", "m")
    registry.delete_version("p", "m", "v1")
    assert registry.get_model("p", "m").default_version is None
    for name in ("v2", "v3"):
        registry.delete_version("p", "m", name)
    registry.delete_model("p", "m")
    with pytest.raises(NotFound):
        registry.get_model("p", "m")
