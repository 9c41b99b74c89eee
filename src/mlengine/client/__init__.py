"""Clients of the API server: the Python SDK (`Client`, `Job`) and the HTTP layer."""

from __future__ import annotations

from mlengine.client._http import APIClient
from mlengine.client._local_server import health, start_local_server, stop_local_server
from mlengine.client._models_sdk import ModelsAPI, OperationsAPI, VersionsAPI
from mlengine.client._sdk import Client, Job, JobsAPI

__all__ = [
    "APIClient",
    "Client",
    "Job",
    "JobsAPI",
    "ModelsAPI",
    "OperationsAPI",
    "VersionsAPI",
    "health",
    "start_local_server",
    "stop_local_server",
]
