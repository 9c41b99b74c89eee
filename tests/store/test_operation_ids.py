"""Operation ids stay unique when two operations on one model fall in one millisecond."""

from __future__ import annotations

import datetime as dt

import pytest

from mlengine.config import Settings
from mlengine.models import ModelService
from mlengine.models import _service as service_module
from mlengine.store import RegistryStore, get_store


def test_two_updates_of_a_model_in_one_millisecond_get_two_operations(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = get_store(settings.database_url)
    try:
        models = ModelService(RegistryStore(store), settings)
        models.create_model("p", {"name": "m"})
        instant = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
        monkeypatch.setattr(service_module, "now_utc", lambda: instant)
        first = models.patch_model("p", "m", {"description": "one"}, "description")
        second = models.patch_model("p", "m", {"description": "two"}, "description")
        assert first["name"] != second["name"]
        assert first["name"].startswith("projects/p/operations/update_m-1796644800000")
        assert models.get_operation("p", second["name"].rsplit("/", 1)[-1])["done"] is True
        assert models.get_model("p", "m")["description"] == "two"
    finally:
        store.dispose()
